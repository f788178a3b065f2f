//! [`Attached`]: the attached XDP program and its maps: the listeners it steers (and drains),
//! the flows kept while draining, sluice's backend flows, the XSKMAP of AF_XDP sockets and the
//! counters. Dropping it detaches the program (its bpf_link closes).
//!
//! Addresses of both families go into the same maps: the keys carry the family
//! (`sluice_ebpf::endpoint_key_of`, `sluice_ebpf::flow_key_of`).

use std::{
    collections::HashSet,
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, XskMap},
    programs::links::FdLink,
};
use sluice_ebpf::{Counter, ENTRY_ACTIVE, ENTRY_DRAINING, EndpointKey, FlowKey, endpoint_key_of, flow_key_of};

use super::counters::XdpCounters;
use super::error::LoadError;
use super::mode::XdpMode;

/// An attached XDP program. Dropping it detaches the program (the bpf_link closes).
pub struct Attached {
    // Fields drop in this order: the maps, then the link (the kernel detaches the program as
    // the link's fd closes), then the program.
    pub(super) maps: Maps,
    pub(super) _link: FdLink,
    pub(super) _ebpf: Ebpf,
    pub(super) mode: XdpMode,
    pub(super) ifname: String,
    pub(super) prog_id: u32,
    pub(super) load_time: std::time::Duration,
    /// The program with SYN cookies in XDP was loaded.
    pub(super) syn_cookies: bool,
}

/// What the XDP program's cookie SYN-ACKs offer (see [`Attached::configure_syn_cookies`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieOffer {
    /// Our MSS over IPv4 and IPv6.
    pub mss_v4: u16,
    pub mss_v6: u16,
    /// Our window shift, None when window scaling is off.
    pub window_scale: Option<u8>,
    /// The SYN-ACK's window.
    pub window: u16,
    pub sack: bool,
    pub timestamps: bool,
    /// The mark the program puts in the metadata of a frame whose cookie the kernel validated:
    /// random, never sent anywhere.
    pub mark: u64,
}

/// One RX queue's slot of the SYN-pressure map, held by that queue's worker: tells the XDP
/// program whether to answer SYNs and check ACKs itself (`sluice_ebpf::PRESSURE_*`).
pub struct PressureFlag {
    map: Array<MapData, u32>,
    queue: u32,
    level: u32,
}

impl PressureFlag {
    /// Sets the level (one map write, only when it changes).
    pub fn set(&mut self, level: u32) -> Result<(), LoadError> {
        if level == self.level {
            return Ok(());
        }
        self.map
            .set(self.queue, level, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_SYN_PRESSURE, reason: e.to_string() })?;
        self.level = level;
        Ok(())
    }

    /// The level last set.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The RX queue whose slot this is.
    pub fn queue(&self) -> u32 {
        self.queue
    }
}

/// The most listeners (of both families together) the XDP program can steer: the capacity of
/// its listener map. Check a configuration with [`check_listener_count`] before starting or
/// reloading.
pub const LISTENERS_MAX: usize = sluice_ebpf::LISTENERS_MAX as usize;

/// Refuses `count` listeners when the XDP program cannot steer that many.
pub fn check_listener_count(count: usize) -> Result<(), LoadError> {
    if count > LISTENERS_MAX { Err(LoadError::TooManyListeners { count, max: LISTENERS_MAX }) } else { Ok(()) }
}

pub(super) struct Maps {
    listeners: HashMap<MapData, EndpointKey, u32>,
    /// The keys in `listeners` (active or draining), to refuse one too many with a clear reason.
    listener_keys: HashSet<EndpointKey>,
    backend_flows: HashMap<MapData, EndpointKey, u32>,
    drain_flows: HashMap<MapData, FlowKey, u32>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    cookie_config: Array<MapData, u32>,
    syn_pressure: Array<MapData, u32>,
    open_flows: HashMap<MapData, FlowKey, u32>,
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            map: &'static str,
        ) -> Result<T, LoadError> {
            let m = ebpf.take_map(map).ok_or(LoadError::Map { map, reason: "missing from the object".into() })?;
            T::try_from(m).map_err(|e| LoadError::Map { map, reason: e.to_string() })
        }
        Ok(Maps {
            listeners: take(ebpf, sluice_ebpf::MAP_LISTENERS)?,
            listener_keys: HashSet::new(),
            backend_flows: take(ebpf, sluice_ebpf::MAP_BACKEND_FLOWS)?,
            drain_flows: take(ebpf, sluice_ebpf::MAP_DRAIN_FLOWS)?,
            xsks: take(ebpf, sluice_ebpf::MAP_XSKS)?,
            counters: take(ebpf, sluice_ebpf::MAP_COUNTERS)?,
            cookie_config: take(ebpf, sluice_ebpf::MAP_COOKIE_CONFIG)?,
            syn_pressure: take(ebpf, sluice_ebpf::MAP_SYN_PRESSURE)?,
            open_flows: take(ebpf, sluice_ebpf::MAP_OPEN_FLOWS)?,
        })
    }
}

impl Attached {
    /// The mode the program got attached in: [`XdpMode::Native`] or [`XdpMode::Skb`].
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The interface it is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The kernel's id of the loaded program (as `ip -d link` and `bpftool` show it).
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    /// How long checking, loading and attaching took.
    pub fn load_time(&self) -> std::time::Duration {
        self.load_time
    }

    /// Steers TCP segments to `local` (either family; the unspecified address `0.0.0.0` or `::`
    /// takes every address of its family) into the AF_XDP sockets, and the path-MTU ICMP
    /// messages about them. Refused with [`LoadError::TooManyListeners`] beyond
    /// [`LISTENERS_MAX`].
    pub fn add_listener(&mut self, local: SocketAddr) -> Result<(), LoadError> {
        self.set_listener(local, ENTRY_ACTIVE)
    }

    /// Keeps steering one of sluice's flows (`remote` to local port `local_port`) to sluice while
    /// its listener drains. Add them before [`Attached::drain_listener`].
    pub fn add_drain_flow(&mut self, remote: SocketAddr, local_port: u16) -> Result<(), LoadError> {
        self.maps
            .drain_flows
            .insert(flow_key_of(remote, local_port), ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_DRAIN_FLOWS, reason: e.to_string() })
    }

    /// Forgets a flow added with [`Attached::add_drain_flow`].
    pub fn remove_drain_flow(&mut self, remote: SocketAddr, local_port: u16) -> Result<(), LoadError> {
        remove_key(&mut self.maps.drain_flows, sluice_ebpf::MAP_DRAIN_FLOWS, flow_key_of(remote, local_port))
    }

    /// Drains `local`: from now on only the flows added with [`Attached::add_drain_flow`]
    /// still go to sluice (so its connections finish); everything else goes to the kernel.
    pub fn drain_listener(&mut self, local: SocketAddr) -> Result<(), LoadError> {
        self.set_listener(local, ENTRY_DRAINING)
    }

    /// Stops steering `local`. Removing an absent listener is not an error.
    pub fn remove_listener(&mut self, local: SocketAddr) -> Result<(), LoadError> {
        let key = endpoint_key_of(local);
        remove_key(&mut self.maps.listeners, sluice_ebpf::MAP_LISTENERS, key)?;
        self.maps.listener_keys.remove(&key);
        Ok(())
    }

    /// The listeners in the program's map now (active and draining).
    pub fn listener_count(&self) -> usize {
        self.maps.listener_keys.len()
    }

    fn set_listener(&mut self, local: SocketAddr, value: u32) -> Result<(), LoadError> {
        let key = endpoint_key_of(local);
        if !self.maps.listener_keys.contains(&key) {
            check_listener_count(self.maps.listener_keys.len() + 1)?;
        }
        self.maps
            .listeners
            .insert(key, value, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_LISTENERS, reason: format!("{local}: {e}") })?;
        self.maps.listener_keys.insert(key);
        Ok(())
    }

    /// Steers the return traffic of one of sluice's own outgoing connections, whose local end is
    /// `local` (the `BACKEND_FLOWS` rule; for the backend TCP path), and the path-MTU ICMP
    /// messages about it.
    pub fn add_backend_flow(&mut self, local: SocketAddr) -> Result<(), LoadError> {
        self.maps
            .backend_flows
            .insert(endpoint_key_of(local), ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_BACKEND_FLOWS, reason: e.to_string() })
    }

    /// Removes a backend flow added by [`Attached::add_backend_flow`].
    pub fn remove_backend_flow(&mut self, local: SocketAddr) -> Result<(), LoadError> {
        remove_key(&mut self.maps.backend_flows, sluice_ebpf::MAP_BACKEND_FLOWS, endpoint_key_of(local))
    }

    /// Puts the AF_XDP socket `fd`, bound to RX queue `queue` of this interface, in the XSKMAP.
    pub fn register_xsk(&mut self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), LoadError> {
        self.maps
            .xsks
            .set(queue, fd.as_raw_fd(), 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_XSKS, reason: format!("queue {queue}: {e}") })
    }

    /// Removes the socket of `queue` from the XSKMAP (its segments then go to the kernel).
    pub fn unregister_xsk(&mut self, queue: u32) -> Result<(), LoadError> {
        self.maps
            .xsks
            .unset(queue)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_XSKS, reason: format!("queue {queue}: {e}") })
    }

    /// Whether the program answers SYNs with cookies in XDP under pressure (the kernel took the
    /// variant with the helpers).
    pub fn xdp_syn_cookies(&self) -> bool {
        self.syn_cookies
    }

    /// Writes what the cookie SYN-ACKs offer and the mark of validated ACKs. Call before adding
    /// listeners.
    pub fn configure_syn_cookies(&mut self, offer: &CookieOffer) -> Result<(), LoadError> {
        use sluice_ebpf as e;
        let flags = if offer.sack { e::COOKIE_FLAG_SACK } else { 0 }
            | if offer.timestamps { e::COOKIE_FLAG_TIMESTAMPS } else { 0 };
        let values = [
            (e::COOKIE_MSS_V4, u32::from(offer.mss_v4)),
            (e::COOKIE_MSS_V6, u32::from(offer.mss_v6)),
            (e::COOKIE_WSCALE, offer.window_scale.map_or(e::COOKIE_NO_WSCALE, u32::from)),
            (e::COOKIE_WINDOW, u32::from(offer.window)),
            (e::COOKIE_FLAGS, flags),
            (e::COOKIE_MARK_LO, offer.mark as u32),
            (e::COOKIE_MARK_HI, (offer.mark >> 32) as u32),
        ];
        for (slot, value) in values {
            self.maps
                .cookie_config
                .set(slot, value, 0)
                .map_err(|err| LoadError::Map { map: e::MAP_COOKIE_CONFIG, reason: err.to_string() })?;
        }
        Ok(())
    }

    /// A handle on RX queue `queue`'s slot of the SYN-pressure map, for its worker (a
    /// descriptor of its own: no lock between workers).
    pub fn pressure_flag(&self, queue: u32) -> Result<PressureFlag, LoadError> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let map_err = |reason: String| LoadError::Map { map: sluice_ebpf::MAP_SYN_PRESSURE, reason };
        let fd = self.maps.syn_pressure.map().fd().as_fd().try_clone_to_owned().map_err(|e| map_err(e.to_string()))?;
        let data = MapData::from_fd(fd).map_err(|e| map_err(e.to_string()))?;
        let map = Array::try_from(aya::maps::Map::Array(data)).map_err(|e| map_err(e.to_string()))?;
        let mut flag = PressureFlag { map, queue, level: u32::MAX };
        flag.set(sluice_ebpf::PRESSURE_OFF)?;
        Ok(flag)
    }

    /// The program's map of sluice's flows, for the flow index to keep (descriptors of its
    /// own). Only needed while the program answers SYN cookies.
    pub fn open_flows(&self) -> Result<super::OpenFlows, LoadError> {
        use aya::maps::IterableMap;
        use std::os::fd::AsFd;
        let map_err = |map: &'static str| move |reason: String| LoadError::Map { map, reason };
        let reopen = |data: &MapData, map: &'static str| -> Result<MapData, LoadError> {
            let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| map_err(map)(e.to_string()))?;
            MapData::from_fd(fd).map_err(|e| map_err(map)(e.to_string()))
        };
        let flows = reopen(self.maps.open_flows.map(), super::open_flows::NAME)?;
        let flows = HashMap::try_from(aya::maps::Map::HashMap(flows))
            .map_err(|e| map_err(super::open_flows::NAME)(e.to_string()))?;
        let config = reopen(self.maps.cookie_config.map(), sluice_ebpf::MAP_COOKIE_CONFIG)?;
        let config = Array::try_from(aya::maps::Map::Array(config))
            .map_err(|e| map_err(sluice_ebpf::MAP_COOKIE_CONFIG)(e.to_string()))?;
        super::OpenFlows::new(flows, config)
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, LoadError> {
        let mut out = XdpCounters::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .maps
                .counters
                .get(&counter.index(), 0)
                .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_COUNTERS, reason: e.to_string() })?;
            *out.slot(counter) = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(out)
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // The bpf_link is owned by `self.ebpf`'s program; dropping it closes the link fd and the
        // kernel detaches the program. Logged so an operator sees it happen.
        tracing::debug!(ifname = %self.ifname, prog_id = self.prog_id, "detaching XDP program");
    }
}

fn remove_key<K: aya::Pod>(map: &mut HashMap<MapData, K, u32>, name: &'static str, key: K) -> Result<(), LoadError> {
    match map.remove(&key) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(LoadError::Map { map: name, reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_count_is_checked_against_the_map() {
        assert!(check_listener_count(0).is_ok());
        assert!(check_listener_count(LISTENERS_MAX).is_ok());
        let err = check_listener_count(LISTENERS_MAX + 1).unwrap_err();
        assert!(
            matches!(err, LoadError::TooManyListeners { count, max } if count == LISTENERS_MAX + 1 && max == LISTENERS_MAX)
        );
        let msg = err.to_string();
        assert!(msg.contains(&LISTENERS_MAX.to_string()) && !msg.contains('\n'), "{msg}");
    }
}
