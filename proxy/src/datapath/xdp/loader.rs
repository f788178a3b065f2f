//! Loads sluice's XDP program (crate `sluice-ebpf`, embedded at build time) with aya, attaches
//! it to an interface as a bpf_link, and fills its maps.
//!
//! What it is: the one place that talks to the kernel's BPF side. [`Loader::attach`] checks the
//! preconditions first and refuses with a one-line reason ([`LoadError`]): not privileged, the
//! interface missing or down, another XDP program already attached (unless `force`). The
//! attachment is a bpf_link (`BPF_LINK_CREATE`), never the legacy netlink attach: the kernel
//! detaches a link when its last file descriptor closes, so the program goes away when
//! [`Attached`] is dropped and also when the process dies by any means, SIGKILL included.
//!
//! What it is not: the AF_XDP sockets (`sluice_xsk`) or the signal handling (`run`); callers hand
//! socket fds to [`Attached::register_xsk`].
//!
//! Interface state (exists, IFF_UP, number of RX queues, attached XDP program and its mode) is
//! read over rtnetlink (`RTM_GETLINK`, crates netlink-packet-route + netlink-sys: safe, sync, and
//! correct in the calling thread's network namespace, unlike /sys/class/net). With `force`, a
//! program attached the legacy way (netlink, `ip link set dev X xdp ...`) is removed over
//! rtnetlink (`RTM_SETLINK` with `IFLA_XDP_FD = -1`) before attaching; a program held by another
//! bpf_link cannot be removed from here (its owner must close it) and is refused even with
//! `force`.

use std::{
    fmt,
    net::Ipv4Addr,
    os::fd::{AsRawFd, BorrowedFd},
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, XskMap},
    programs::{ProgramError, Xdp, links::FdLink, links::LinkType, loaded_links},
};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use sluice_ebpf::{Counter, ENTRY_ACTIVE, endpoint_key};

/// The XDP program object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-xdp"));

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Generic XDP in the kernel's network stack (`XDP_FLAGS_SKB_MODE`).
    Skb,
    /// Native, falling back to SKB if the driver refuses; [`Attached::mode`] tells which.
    Auto,
}

impl XdpMode {
    /// `"native"`, `"skb"` or `"auto"`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Auto => "auto",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`Loader::attach`] or a map operation failed. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "not privileged: attaching XDP needs CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN (effective capabilities {0:#x})"
    )]
    NotPrivileged(u64),
    #[error("cannot read the effective capabilities from /proc/self/status: {0}")]
    Capabilities(String),
    #[error("interface {0} does not exist (in this network namespace)")]
    NoSuchInterface(String),
    #[error("interface {0} is down: bring it up first (ip link set {0} up)")]
    InterfaceDown(String),
    #[error(
        "interface {ifname} already has an XDP program attached (id {prog_id}, {mode} mode); use --force to replace it"
    )]
    AlreadyAttached {
        ifname: String,
        prog_id: u32,
        mode: &'static str,
    },
    #[error(
        "interface {ifname} already has an XDP program attached (id {prog_id}) held by a bpf_link{} of another process or a pin; --force cannot remove it: stop its owner first",
        link_id.map(|id| format!(" (id {id})")).unwrap_or_default()
    )]
    HeldByLink {
        ifname: String,
        prog_id: u32,
        link_id: Option<u32>,
    },
    #[error(
        "the XDP program was not built (AYA_BUILD_SKIP was set at build time); rebuild without it"
    )]
    ProgramNotBuilt,
    #[error("loading the XDP program object: {0}")]
    Load(String),
    #[error("loading the XDP program into the kernel: {0}")]
    Verify(String),
    #[error("attaching XDP on {ifname} in {mode} mode failed: {reason}")]
    Attach {
        ifname: String,
        mode: XdpMode,
        reason: String,
    },
    #[error(
        "the kernel attached XDP on {0} without a bpf_link (legacy netlink path); refused because it would outlive the process"
    )]
    NotALink(String),
    #[error("map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    #[error("rtnetlink: {0}")]
    Netlink(String),
}

/// Outcome counters of the XDP program, summed over CPUs (see [`sluice_ebpf::Counter`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct XdpCounters {
    pub redirected: u64,
    pub redirect_failed: u64,
    pub redirected_backend: u64,
    pub pass_arp: u64,
    pub pass_ipv6: u64,
    pub pass_other_ethertype: u64,
    pub pass_icmp: u64,
    pub pass_udp: u64,
    pub pass_other_protocol: u64,
    pub pass_fragment: u64,
    pub pass_no_listener: u64,
    pub pass_truncated_ethernet: u64,
    pub pass_truncated_ipv4: u64,
    pub pass_malformed_ipv4: u64,
    pub pass_truncated_tcp: u64,
    pub pass_malformed_tcp: u64,
    pub pass_draining: u64,
}

impl XdpCounters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Redirected => self.redirected,
            Counter::RedirectFailed => self.redirect_failed,
            Counter::RedirectedBackend => self.redirected_backend,
            Counter::PassArp => self.pass_arp,
            Counter::PassIpv6 => self.pass_ipv6,
            Counter::PassOtherEthertype => self.pass_other_ethertype,
            Counter::PassIcmp => self.pass_icmp,
            Counter::PassUdp => self.pass_udp,
            Counter::PassOtherProtocol => self.pass_other_protocol,
            Counter::PassFragment => self.pass_fragment,
            Counter::PassNoListener => self.pass_no_listener,
            Counter::PassTruncatedEthernet => self.pass_truncated_ethernet,
            Counter::PassTruncatedIpv4 => self.pass_truncated_ipv4,
            Counter::PassMalformedIpv4 => self.pass_malformed_ipv4,
            Counter::PassTruncatedTcp => self.pass_truncated_tcp,
            Counter::PassMalformedTcp => self.pass_malformed_tcp,
            Counter::PassDraining => self.pass_draining,
        }
    }

    fn slot(&mut self, counter: Counter) -> &mut u64 {
        match counter {
            Counter::Redirected => &mut self.redirected,
            Counter::RedirectFailed => &mut self.redirect_failed,
            Counter::RedirectedBackend => &mut self.redirected_backend,
            Counter::PassArp => &mut self.pass_arp,
            Counter::PassIpv6 => &mut self.pass_ipv6,
            Counter::PassOtherEthertype => &mut self.pass_other_ethertype,
            Counter::PassIcmp => &mut self.pass_icmp,
            Counter::PassUdp => &mut self.pass_udp,
            Counter::PassOtherProtocol => &mut self.pass_other_protocol,
            Counter::PassFragment => &mut self.pass_fragment,
            Counter::PassNoListener => &mut self.pass_no_listener,
            Counter::PassTruncatedEthernet => &mut self.pass_truncated_ethernet,
            Counter::PassTruncatedIpv4 => &mut self.pass_truncated_ipv4,
            Counter::PassMalformedIpv4 => &mut self.pass_malformed_ipv4,
            Counter::PassTruncatedTcp => &mut self.pass_truncated_tcp,
            Counter::PassMalformedTcp => &mut self.pass_malformed_tcp,
            Counter::PassDraining => &mut self.pass_draining,
        }
    }

    /// Every counter with its stable name, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|&c| (c.name(), self.get(c)))
    }

    /// Frames passed because a header was truncated or malformed (the four `pass_truncated_*`
    /// and `pass_malformed_*` counters together).
    pub fn pass_malformed(&self) -> u64 {
        self.pass_truncated_ethernet
            + self.pass_truncated_ipv4
            + self.pass_malformed_ipv4
            + self.pass_truncated_tcp
            + self.pass_malformed_tcp
    }

    /// The counts since `earlier` (a snapshot of the same program), counter by counter.
    pub fn since(&self, earlier: &XdpCounters) -> XdpCounters {
        let mut d = XdpCounters::default();
        for c in Counter::ALL {
            *d.slot(c) = self.get(c).wrapping_sub(earlier.get(c));
        }
        d
    }

    /// All frames the program saw.
    pub fn total(&self) -> u64 {
        self.iter().map(|(_, v)| v).sum()
    }
}

/// Number of RX queues of `ifname` in the calling thread's network namespace
/// (`IFLA_NUM_RX_QUEUES`; the same number as `/sys/class/net/<if>/queues/rx-*` shows in the
/// namespace /sys was mounted in).
pub fn queue_count(ifname: &str) -> Result<usize, LoadError> {
    let link = get_link(ifname)?.ok_or_else(|| LoadError::NoSuchInterface(ifname.to_owned()))?;
    Ok(link.num_rx_queues.unwrap_or(1).max(1) as usize)
}

/// Entry point: see [`Loader::attach`].
pub struct Loader;

impl Loader {
    /// Loads the XDP program and attaches it to `ifname` (in the calling thread's network
    /// namespace) as a bpf_link. Refuses, before loading anything, when the process lacks the
    /// capabilities, when the interface is missing or down, or when an XDP program is already
    /// attached there (with `force`, a legacy-attached one is removed first).
    pub fn attach(ifname: &str, mode: XdpMode, force: bool) -> Result<Attached, LoadError> {
        let started = Instant::now();
        check_privileges()?;
        let link =
            get_link(ifname)?.ok_or_else(|| LoadError::NoSuchInterface(ifname.to_owned()))?;
        if !link.up {
            return Err(LoadError::InterfaceDown(ifname.to_owned()));
        }
        if let Some(existing) = link.xdp {
            // Which bpf_link holds it (needs CAP_SYS_ADMIN to look up; None when unknown).
            let held_by = |link_id| LoadError::HeldByLink {
                ifname: ifname.to_owned(),
                prog_id: existing.prog_id,
                link_id,
            };
            if let Some(link_id) = xdp_link_of_program(existing.prog_id) {
                return Err(held_by(Some(link_id)));
            }
            if !force {
                return Err(LoadError::AlreadyAttached {
                    ifname: ifname.to_owned(),
                    prog_id: existing.prog_id,
                    mode: existing.mode_name(),
                });
            }
            tracing::warn!(
                ifname,
                prog_id = existing.prog_id,
                mode = existing.mode_name(),
                "--force: removing the XDP program already attached"
            );
            match detach_legacy(link.index, existing.flags) {
                Ok(()) => {}
                // The kernel refuses to remove a program held by a bpf_link.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(held_by(None)),
                Err(e) => {
                    return Err(LoadError::Netlink(format!(
                        "removing the attached XDP program: {e}"
                    )));
                }
            }
        }
        if XDP_OBJECT.is_empty() {
            return Err(LoadError::ProgramNotBuilt);
        }

        let mut ebpf = Ebpf::load(XDP_OBJECT).map_err(|e| LoadError::Load(e.to_string()))?;
        let program: &mut Xdp = ebpf
            .program_mut(sluice_ebpf::PROGRAM_NAME)
            .ok_or_else(|| {
                LoadError::Load(format!(
                    "no program {} in the object",
                    sluice_ebpf::PROGRAM_NAME
                ))
            })?
            .try_into()
            .map_err(|e: ProgramError| LoadError::Load(e.to_string()))?;
        program
            .load()
            .map_err(|e| LoadError::Verify(error_chain(&e)))?;
        let loaded = started.elapsed();

        let (attached_mode, xdp_link) = match mode {
            XdpMode::Native => attach_link(program, ifname, link.index, XdpMode::Native)?,
            XdpMode::Skb => attach_link(program, ifname, link.index, XdpMode::Skb)?,
            XdpMode::Auto => match attach_link(program, ifname, link.index, XdpMode::Native) {
                Ok(attached) => attached,
                Err(e) => {
                    tracing::info!(ifname, error = %e, "native XDP refused; falling back to skb mode");
                    attach_link(program, ifname, link.index, XdpMode::Skb)?
                }
            },
        };
        let prog_id = program
            .info()
            .map_err(|e| LoadError::Load(e.to_string()))?
            .id();

        let maps = Maps::take(&mut ebpf)?;
        tracing::debug!(
            ifname,
            mode = %attached_mode,
            prog_id,
            load_us = loaded.as_micros() as u64,
            load_and_attach_us = started.elapsed().as_micros() as u64,
            "XDP program attached"
        );
        Ok(Attached {
            maps,
            _link: xdp_link,
            _ebpf: ebpf,
            mode: attached_mode,
            ifname: ifname.to_owned(),
            prog_id,
            load_time: started.elapsed(),
        })
    }
}

/// An attached XDP program. Dropping it detaches the program (the bpf_link closes).
pub struct Attached {
    // Fields drop in this order: the maps, then the link (the kernel detaches the program as
    // the link's fd closes), then the program.
    maps: Maps,
    _link: FdLink,
    _ebpf: Ebpf,
    mode: XdpMode,
    ifname: String,
    prog_id: u32,
    load_time: std::time::Duration,
}

struct Maps {
    listeners: HashMap<MapData, u64, u32>,
    backend_flows: HashMap<MapData, u64, u32>,
    drain_flows: HashMap<MapData, u64, u32>,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            map: &'static str,
        ) -> Result<T, LoadError> {
            let m = ebpf.take_map(map).ok_or(LoadError::Map {
                map,
                reason: "missing from the object".into(),
            })?;
            T::try_from(m).map_err(|e| LoadError::Map {
                map,
                reason: e.to_string(),
            })
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
            .map_err(|e| LoadError::Map {
                map: sluice_ebpf::MAP_LISTENERS,
                reason: e.to_string(),
            })
    }

    /// Keeps steering one of sluice's flows (`remote` to local port `local_port`) to sluice while
    /// its listener drains. Add them before [`Attached::drain_listener`].
    pub fn add_drain_flow(&mut self, remote: std::net::SocketAddrV4, local_port: u16) -> Result<(), LoadError> {
        let key = sluice_ebpf::flow_key(u32::from(*remote.ip()), remote.port(), local_port);
        self.maps.drain_flows.insert(key, ENTRY_ACTIVE, 0).map_err(|e| LoadError::Map {
            map: sluice_ebpf::MAP_DRAIN_FLOWS,
            reason: e.to_string(),
        })
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
            .map_err(|e| LoadError::Map {
                map: sluice_ebpf::MAP_LISTENERS,
                reason: e.to_string(),
            })
    }

    /// Stops steering `addr:port`. Removing an absent listener is not an error.
    pub fn remove_listener(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        remove_key(
            &mut self.maps.listeners,
            sluice_ebpf::MAP_LISTENERS,
            endpoint_key(u32::from(addr), port),
        )
    }

    /// Steers the return traffic of one of sluice's own outgoing connections, whose local end is
    /// `addr:port` (the `BACKEND_FLOWS` rule; for the backend TCP path).
    pub fn add_backend_flow(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        let key = endpoint_key(u32::from(addr), port);
        self.maps
            .backend_flows
            .insert(key, ENTRY_ACTIVE, 0)
            .map_err(|e| LoadError::Map {
                map: sluice_ebpf::MAP_BACKEND_FLOWS,
                reason: e.to_string(),
            })
    }

    /// Removes a backend flow added by [`Attached::add_backend_flow`].
    pub fn remove_backend_flow(&mut self, addr: Ipv4Addr, port: u16) -> Result<(), LoadError> {
        remove_key(
            &mut self.maps.backend_flows,
            sluice_ebpf::MAP_BACKEND_FLOWS,
            endpoint_key(u32::from(addr), port),
        )
    }

    /// Puts the AF_XDP socket `fd`, bound to RX queue `queue` of this interface, in the XSKMAP.
    pub fn register_xsk(&mut self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), LoadError> {
        self.maps
            .xsks
            .set(queue, fd.as_raw_fd(), 0)
            .map_err(|e| LoadError::Map {
                map: sluice_ebpf::MAP_XSKS,
                reason: format!("queue {queue}: {e}"),
            })
    }

    /// Removes the socket of `queue` from the XSKMAP (its segments then go to the kernel).
    pub fn unregister_xsk(&mut self, queue: u32) -> Result<(), LoadError> {
        self.maps.xsks.unset(queue).map_err(|e| LoadError::Map {
            map: sluice_ebpf::MAP_XSKS,
            reason: format!("queue {queue}: {e}"),
        })
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, LoadError> {
        let mut out = XdpCounters::default();
        for counter in Counter::ALL {
            let per_cpu =
                self.maps
                    .counters
                    .get(&counter.index(), 0)
                    .map_err(|e| LoadError::Map {
                        map: sluice_ebpf::MAP_COUNTERS,
                        reason: e.to_string(),
                    })?;
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

fn remove_key(
    map: &mut HashMap<MapData, u64, u32>,
    name: &'static str,
    key: u64,
) -> Result<(), LoadError> {
    match map.remove(&key) {
        Ok(()) => Ok(()),
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(LoadError::Map {
            map: name,
            reason: e.to_string(),
        }),
    }
}

/// Attaches `program` as a bpf_link and takes the link out of aya's keeping, so that it is
/// ours to drop. aya falls back to the legacy netlink attach when `BPF_LINK_CREATE` says
/// EINVAL; such an attachment would outlive the process, so it is removed again and refused.
fn attach_link(
    program: &mut Xdp,
    ifname: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpMode, FdLink), LoadError> {
    let (aya_mode, flags) = match mode {
        XdpMode::Native => (aya::programs::xdp::XdpMode::Driver, XDP_FLAGS_DRV_MODE),
        XdpMode::Skb | XdpMode::Auto => (aya::programs::xdp::XdpMode::Skb, XDP_FLAGS_SKB_MODE),
    };
    let attach_error = |reason: String| LoadError::Attach {
        ifname: ifname.to_owned(),
        mode,
        reason,
    };
    let link_id = program
        .attach(ifname, aya_mode)
        .map_err(|e| attach_error(error_chain(&e)))?;
    let link = program
        .take_link(link_id)
        .map_err(|e| attach_error(error_chain(&e)))?;
    match FdLink::try_from(link) {
        Ok(fd_link) => Ok((mode, fd_link)),
        Err(_) => {
            // The conversion dropped a netlink "link" without detaching it: detach it here.
            if let Err(e) = detach_legacy(ifindex, flags) {
                tracing::warn!(ifname, error = %e, "removing a legacy XDP attachment failed");
            }
            Err(LoadError::NotALink(ifname.to_owned()))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    // Verifier logs are multi-line; keep the reason on one line.
    s.replace('\n', " | ")
}

/// The id of the XDP bpf_link holding program `prog_id`, if any.
fn xdp_link_of_program(prog_id: u32) -> Option<u32> {
    loaded_links()
        .filter_map(Result::ok)
        .find(|info| info.program_id() == prog_id && matches!(info.link_type(), Ok(LinkType::Xdp)))
        .map(|info| info.id())
}

// --- Privileges ---------------------------------------------------------------------------

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

fn check_privileges() -> Result<(), LoadError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| LoadError::Capabilities(e.to_string()))?;
    let caps =
        parse_cap_eff(&status).ok_or_else(|| LoadError::Capabilities("no CapEff line".into()))?;
    if caps_allow_xdp(caps) {
        Ok(())
    } else {
        Err(LoadError::NotPrivileged(caps))
    }
}

/// The `CapEff:` bit mask of a `/proc/<pid>/status` text.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Loading a networking BPF program and attaching it needs CAP_BPF + CAP_NET_ADMIN, or
/// CAP_SYS_ADMIN (which implies both for BPF since Linux 5.8).
fn caps_allow_xdp(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN))
}

// --- rtnetlink ----------------------------------------------------------------------------

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

struct LinkState {
    index: u32,
    up: bool,
    num_rx_queues: Option<u32>,
    xdp: Option<AttachedXdp>,
}

struct AttachedXdp {
    prog_id: u32,
    /// The mode flag to use when removing it.
    flags: u32,
}

impl AttachedXdp {
    fn mode_name(&self) -> &'static str {
        match self.flags {
            XDP_FLAGS_DRV_MODE => "native",
            XDP_FLAGS_SKB_MODE => "skb",
            XDP_FLAGS_HW_MODE => "offload",
            _ => "several",
        }
    }
}

fn netlink_socket() -> Result<Socket, LoadError> {
    let nl = |e: std::io::Error| LoadError::Netlink(e.to_string());
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl)?;
    socket.bind_auto().map_err(nl)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(nl)?;
    Ok(socket)
}

/// Sends one request and returns the replies up to and including the final one
/// (the answer for a GET, the ACK or error for a SET).
fn request(
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, LoadError> {
    let socket = netlink_socket()?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| LoadError::Netlink(e.to_string()))?;

    let mut replies = Vec::new();
    loop {
        let (data, _) = socket
            .recv_from_full()
            .map_err(|e| LoadError::Netlink(e.to_string()))?;
        if data.is_empty() {
            return Err(LoadError::Netlink("empty reply".into()));
        }
        let mut offset = 0;
        while offset < data.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| LoadError::Netlink(e.to_string()))?;
            let len = msg.header.length as usize;
            let last = matches!(
                msg.payload,
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_)
            ) || flags & NLM_F_ACK == 0;
            replies.push(msg);
            if last {
                return Ok(replies);
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn get_link(ifname: &str) -> Result<Option<LinkState>, LoadError> {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(ifname.to_owned()));
    let replies = request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)?;
    for reply in replies {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                return Ok(Some(link_state(&link)));
            }
            NetlinkPayload::Error(e) if e.raw_code() == -libc::ENODEV => return Ok(None),
            NetlinkPayload::Error(e) if e.code.is_some() => {
                return Err(LoadError::Netlink(format!(
                    "RTM_GETLINK {ifname}: {}",
                    e.to_io()
                )));
            }
            _ => {}
        }
    }
    Err(LoadError::Netlink(format!(
        "RTM_GETLINK {ifname}: no answer"
    )))
}

fn link_state(link: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: link.header.index,
        up: link.header.flags.contains(LinkFlags::Up),
        num_rx_queues: None,
        xdp: None,
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::NumRxQueues(n) => state.num_rx_queues = Some(*n),
            LinkAttribute::Xdp(xdp) => state.xdp = attached_xdp(xdp),
            _ => {}
        }
    }
    state
}

fn attached_xdp(attrs: &[LinkXdp]) -> Option<AttachedXdp> {
    let mut attached = None;
    let mut prog_id = 0;
    for a in attrs {
        match a {
            LinkXdp::Attached(mode) => attached = Some(*mode),
            LinkXdp::ProgId(id) => prog_id = *id,
            LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) if prog_id == 0 => prog_id = *id,
            _ => {}
        }
    }
    let flags = match attached? {
        XdpAttached::None => return None,
        XdpAttached::Driver => XDP_FLAGS_DRV_MODE,
        XdpAttached::SocketBuffer => XDP_FLAGS_SKB_MODE,
        XdpAttached::Hardware => XDP_FLAGS_HW_MODE,
        _ => 0,
    };
    Some(AttachedXdp { prog_id, flags })
}

/// Removes a program attached with the legacy netlink interface (`IFLA_XDP_FD = -1`).
/// The kernel answers EBUSY when a bpf_link holds the program.
fn detach_legacy(index: u32, mode_flags: u32) -> Result<(), std::io::Error> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let mut xdp = vec![LinkXdp::Fd(-1)];
    if mode_flags != 0 {
        xdp.push(LinkXdp::Flags(mode_flags));
    }
    msg.attributes.push(LinkAttribute::Xdp(xdp));
    let replies = request(RouteNetlinkMessage::SetLink(msg), NLM_F_REQUEST | NLM_F_ACK)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    for reply in replies {
        if let NetlinkPayload::Error(e) = reply.payload {
            return match e.code {
                None => Ok(()),
                Some(_) => Err(e.to_io()),
            };
        }
    }
    Err(std::io::Error::other("RTM_SETLINK: no acknowledgement"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_and_judged() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        let caps = parse_cap_eff(status).unwrap();
        assert_eq!(caps, 0x1ff_ffff_ffff);
        assert!(caps_allow_xdp(caps));
        assert!(!caps_allow_xdp(0));
        assert!(
            !caps_allow_xdp(1 << CAP_BPF),
            "CAP_BPF alone cannot attach to a netdev"
        );
        assert!(!caps_allow_xdp(1 << CAP_NET_ADMIN));
        assert!(caps_allow_xdp((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)));
        assert!(caps_allow_xdp(1 << CAP_SYS_ADMIN));
        assert_eq!(parse_cap_eff("CapPrm:\t1\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn counters_map_names_to_fields() {
        let mut c = XdpCounters::default();
        for (i, counter) in Counter::ALL.iter().enumerate() {
            *c.slot(*counter) = i as u64 + 1;
        }
        for (i, (name, value)) in c.iter().enumerate() {
            assert_eq!(value, i as u64 + 1, "{name}");
            assert_eq!(name, Counter::ALL[i].name());
        }
        // serde field names are the counter names.
        let json = serde_json::to_value(c).unwrap();
        for (name, value) in c.iter() {
            assert_eq!(json[name].as_u64(), Some(value), "{name}");
        }
        assert_eq!(c.total(), (1..=Counter::COUNT as u64).sum::<u64>());
        assert_eq!(c.pass_malformed(), 12 + 13 + 14 + 15 + 16);
    }

    #[test]
    fn xdp_attributes_give_mode_and_id() {
        assert!(attached_xdp(&[LinkXdp::Attached(XdpAttached::None)]).is_none());
        let a = attached_xdp(&[
            LinkXdp::Attached(XdpAttached::SocketBuffer),
            LinkXdp::ProgId(7),
        ])
        .unwrap();
        assert_eq!((a.prog_id, a.mode_name()), (7, "skb"));
        let a = attached_xdp(&[
            LinkXdp::Attached(XdpAttached::Driver),
            LinkXdp::DrvProgId(9),
        ])
        .unwrap();
        assert_eq!((a.prog_id, a.mode_name()), (9, "native"));
    }
}
