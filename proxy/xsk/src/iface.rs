//! Interface look-ups and network-namespace entry: small syscalls the rest of sluice needs and,
//! having no `unsafe` of its own, cannot make.
//!
//! Everything here acts in the calling thread's network namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The index of interface `name` (`if_nametoindex`).
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 { Err(io::Error::last_os_error()) } else { Ok(idx) }
}

/// `struct ethtool_channels` (include/uapi/linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// The number of RX queues of interface `name`: `rx + combined` channels from
/// `ETHTOOL_GCHANNELS` (what a NIC and a veth report), or, for a driver without channel
/// support, the count of `/sys/class/net/NAME/queues/rx-*` (only meaningful when /sys belongs to
/// the calling thread's namespace). An AF_XDP socket is needed on each of them.
pub fn queue_count(name: &str) -> io::Result<u32> {
    match channels(name) {
        Ok(ch) => Ok((ch.rx_count + ch.combined_count).max(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            let dir = Path::new("/sys/class/net").join(name).join("queues");
            let n = std::fs::read_dir(dir)?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count();
            Ok((n as u32).max(1))
        }
        Err(e) => Err(e),
    }
}

fn channels(name: &str) -> io::Result<EthtoolChannels> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: plain socket(2); checked before being wrapped.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    // SAFETY: `ifreq` is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with a NUL-terminated name (length checked, rest zero) and `ifru_data`
    // pointing to an `ethtool_channels` that outlives the call; the kernel writes only into it.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(ch) }
}

/// Moves the calling thread (only it) into the network namespace at `path` (for example
/// `/run/netns/NAME`). Sockets it opens afterwards belong to that namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: `f` is an open namespace file for the duration of the call; CLONE_NEWNET only
    // changes the calling thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// [`enter_netns`] for a namespace made by `ip netns add NAME`.
pub fn enter_named_netns(name: &str) -> io::Result<()> {
    enter_netns(&Path::new("/run/netns").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_lookups() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert!(ifindex("sluice-hx-none").is_err());
        assert!(ifindex("bad\0name").is_err());
        assert!(queue_count("lo").unwrap() >= 1);
        assert!(queue_count("a-name-far-too-long-for-linux").is_err());
    }
}
