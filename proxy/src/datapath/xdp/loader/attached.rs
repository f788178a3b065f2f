//! [`Attached`]: the attached XDP program and its maps: the listeners it steers (and drains),
//! the flows kept while draining, sluice's backend flows, the XSKMAP of AF_XDP sockets and the
//! counters. Dropping it detaches the program (its bpf_link closes).

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, XskMap},
    programs::links::FdLink,
};
use sluice_ebpf::{Counter, ENTRY_ACTIVE, endpoint_key};

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
}

pub(super) struct Maps {
    listeners: HashMap<MapData, u64, u32>,
    backend_flows: HashMap<MapData, u64, u32>,
    drain_flows: HashMap<MapData, u64, u32>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
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
            backend_flows: take(ebpf, sluice_ebpf::MAP_BACKEND_FLOWS)?,
            drain_flows: take(ebpf, sluice_ebpf::MAP_DRAIN_FLOWS)?,
            xsks: take(ebpf, sluice_ebpf::MAP_XSKS)?,
            counters: take(ebpf, sluice_ebpf::MAP_COUNTERS)?,
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

    /// Steers TCP segments to `addr:port` into the AF_XDP sockets.
    pub fn add_listener(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        let key = endpoint_key(u32::from(addr), port);
        self.maps
            .listeners
            .insert(key, ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_LISTENERS, reason: e.to_string() })
    }

    /// Keeps steering one of sluice's flows (`remote` to local port `local_port`) to sluice while
    /// its listener drains. Add them before [`Attached::drain_listener`].
    pub fn add_drain_flow(&mut self, remote: std::net::SocketAddrV4, local_port: u16) -> Result<(), LoadError> {
        let key = sluice_ebpf::flow_key(u32::from(*remote.ip()), remote.port(), local_port);
        self.maps
            .drain_flows
            .insert(key, ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_DRAIN_FLOWS, reason: e.to_string() })
    }

    /// Forgets a flow added with [`Attached::add_drain_flow`].
    pub fn remove_drain_flow(&mut self, remote: std::net::SocketAddrV4, local_port: u16) -> Result<(), LoadError> {
        let key = sluice_ebpf::flow_key(u32::from(*remote.ip()), remote.port(), local_port);
        remove_key(&mut self.maps.drain_flows, sluice_ebpf::MAP_DRAIN_FLOWS, key)
    }

    /// Drains `addr:port`: from now on only the flows added with [`Attached::add_drain_flow`]
    /// still go to sluice (so its connections finish); everything else goes to the kernel.
    pub fn drain_listener(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        let key = endpoint_key(u32::from(addr), port);
        self.maps
            .listeners
            .insert(key, sluice_ebpf::ENTRY_DRAINING, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_LISTENERS, reason: e.to_string() })
    }

    /// Stops steering `addr:port`. Removing an absent listener is not an error.
    pub fn remove_listener(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        remove_key(&mut self.maps.listeners, sluice_ebpf::MAP_LISTENERS, endpoint_key(u32::from(addr), port))
    }

    /// Steers the return traffic of one of sluice's own outgoing connections, whose local end is
    /// `addr:port` (the `BACKEND_FLOWS` rule; for the backend TCP path).
    pub fn add_backend_flow(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        let key = endpoint_key(u32::from(addr), port);
        self.maps
            .backend_flows
            .insert(key, ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map { map: sluice_ebpf::MAP_BACKEND_FLOWS, reason: e.to_string() })
    }

    /// Removes a backend flow added by [`Attached::add_backend_flow`].
    pub fn remove_backend_flow(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        remove_key(&mut self.maps.backend_flows, sluice_ebpf::MAP_BACKEND_FLOWS, endpoint_key(u32::from(addr), port))
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

fn remove_key(map: &mut HashMap<MapData, u64, u32>, name: &'static str, key: u64) -> Result<(), LoadError> {
    match map.remove(&key) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(LoadError::Map { map: name, reason: e.to_string() }),
    }
}
