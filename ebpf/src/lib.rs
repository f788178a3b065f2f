//! Definitions shared by sluice's XDP program (`src/main.rs`, built for
//! `bpfel-unknown-none`) and user space (`sluice::loader`).
//!
//! What it is: map names and sizes, the key encoding of the endpoint maps, and
//! the indices of the per-CPU outcome counters. Keys and values are plain
//! integers, so user space needs no custom `aya::Pod` impl (and no `unsafe`).
//!
//! What it is not: a packet parser for user space (that is `sluice-wire`).
//!
//! Endpoint key: `(IPv4 address as a big-endian u32) << 16 | port`, both in
//! host order inside the `u64` (see [`endpoint_key`]). The XDP program builds
//! the same key from a frame's destination address and destination port.
#![no_std]
#![forbid(unsafe_code)]

/// Name of the XDP program (the `#[xdp]` function) in the object file.
pub const PROGRAM_NAME: &str = "sluice_xdp";

/// `HashMap<u64, u32>`: listener endpoints. Key: [`endpoint_key`] of a local
/// (address, port) sluice accepts connections on. Value: [`ENTRY_ACTIVE`].
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Capacity of [`MAP_LISTENERS`].
pub const LISTENERS_MAX: u32 = 1024;

/// `HashMap<u64, u32>`: return traffic of sluice's own outgoing (backend)
/// connections. Key: [`endpoint_key`] of the local (address, port) of such a
/// connection; a TCP segment whose destination matches is redirected like a
/// listener's. Empty until the backend TCP path exists (issue 4 fills it).
pub const MAP_BACKEND_FLOWS: &str = "BACKEND_FLOWS";
/// Capacity of [`MAP_BACKEND_FLOWS`] (one per local port of outgoing flows).
pub const BACKEND_FLOWS_MAX: u32 = 16384;

/// `HashMap<u64, u32>`: sluice's own connections on listeners being drained. Key:
/// [`flow_key`] of the remote end and the local port. A segment to an [`ENTRY_DRAINING`]
/// listener goes to sluice only if its flow is here; all others (new connections and everything
/// after their SYN) go to the kernel.
pub const MAP_DRAIN_FLOWS: &str = "DRAIN_FLOWS";
/// Capacity of [`MAP_DRAIN_FLOWS`].
pub const DRAIN_FLOWS_MAX: u32 = 262_144;

/// Key of [`MAP_DRAIN_FLOWS`]: remote IPv4 address (host order) << 32 | remote port << 16 |
/// local port. (The local address is left out: two draining listeners on one port but different
/// addresses share keys, which at worst steers a flow to sluice that it then resets.)
#[inline(always)]
pub const fn flow_key(remote_addr: u32, remote_port: u16, local_port: u16) -> u64 {
    ((remote_addr as u64) << 32) | ((remote_port as u64) << 16) | local_port as u64
}

/// `XskMap`: AF_XDP socket per RX queue, indexed by `rx_queue_index`.
pub const MAP_XSKS: &str = "XSKS";
/// Capacity of [`MAP_XSKS`]: the highest queue index sluice can serve, plus one.
pub const XSKS_MAX: u32 = 256;

/// `PerCpuArray<u64>`: one slot per [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Value stored in [`MAP_LISTENERS`] and [`MAP_BACKEND_FLOWS`] for a live entry.
pub const ENTRY_ACTIVE: u32 = 1;
/// Value of a [`MAP_LISTENERS`] entry being drained: segments of the flows in
/// [`MAP_DRAIN_FLOWS`] still go to sluice, so its connections finish; all others go to the kernel.
pub const ENTRY_DRAINING: u32 = 2;

/// Key of [`MAP_LISTENERS`] and [`MAP_BACKEND_FLOWS`]: the IPv4 address in
/// host order (`u32::from(Ipv4Addr)`, i.e. big-endian interpretation of the
/// four octets) shifted left by 16, or-ed with the port in host order.
#[inline(always)]
pub const fn endpoint_key(addr: u32, port: u16) -> u64 {
    ((addr as u64) << 16) | port as u64
}

/// Outcome of the XDP program for one frame; the index of its counter in
/// [`MAP_COUNTERS`]. Every frame increments exactly one counter.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// TCP to a listener, handed to `XSKS[rx_queue]` (XDP_REDIRECT).
    Redirected = 0,
    /// TCP to a listener, but no socket in `XSKS[rx_queue]`: passed to the kernel.
    RedirectFailed = 1,
    /// TCP to a backend flow's local endpoint, handed to `XSKS[rx_queue]`.
    RedirectedBackend = 2,
    /// ARP: passed.
    PassArp = 3,
    /// IPv6 (not steered yet): passed.
    PassIpv6 = 4,
    /// Any other EtherType (VLAN tags, LLDP, ...): passed.
    PassOtherEthertype = 5,
    /// IPv4 ICMP: passed.
    PassIcmp = 6,
    /// IPv4 UDP: passed.
    PassUdp = 7,
    /// IPv4, another protocol: passed.
    PassOtherProtocol = 8,
    /// IPv4 fragment (MF set or offset != 0): passed for the kernel to reassemble.
    PassFragment = 9,
    /// TCP whose destination is neither a listener nor a backend flow: passed.
    PassNoListener = 10,
    /// Frame shorter than an Ethernet header: passed.
    PassTruncatedEthernet = 11,
    /// Frame ends inside the IPv4 header (20 bytes, or IHL * 4 with options): passed.
    PassTruncatedIpv4 = 12,
    /// IPv4 version != 4, IHL < 5 or total length < IHL * 4: passed.
    PassMalformedIpv4 = 13,
    /// TCP header shorter than 20 bytes or than data offset * 4: passed.
    PassTruncatedTcp = 14,
    /// TCP data offset < 5: passed.
    PassMalformedTcp = 15,
    /// A segment to a listener being drained ([`ENTRY_DRAINING`]) of a flow that is not one of
    /// sluice's ([`MAP_DRAIN_FLOWS`]): passed to the kernel.
    PassDraining = 16,
}

impl Counter {
    /// Number of counters (slots of [`MAP_COUNTERS`]).
    pub const COUNT: u32 = 17;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Redirected,
        Counter::RedirectFailed,
        Counter::RedirectedBackend,
        Counter::PassArp,
        Counter::PassIpv6,
        Counter::PassOtherEthertype,
        Counter::PassIcmp,
        Counter::PassUdp,
        Counter::PassOtherProtocol,
        Counter::PassFragment,
        Counter::PassNoListener,
        Counter::PassTruncatedEthernet,
        Counter::PassTruncatedIpv4,
        Counter::PassMalformedIpv4,
        Counter::PassTruncatedTcp,
        Counter::PassMalformedTcp,
        Counter::PassDraining,
    ];

    /// Index of this counter in [`MAP_COUNTERS`].
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name (for logs and metrics).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Redirected => "redirected",
            Counter::RedirectFailed => "redirect_failed",
            Counter::RedirectedBackend => "redirected_backend",
            Counter::PassArp => "pass_arp",
            Counter::PassIpv6 => "pass_ipv6",
            Counter::PassOtherEthertype => "pass_other_ethertype",
            Counter::PassIcmp => "pass_icmp",
            Counter::PassUdp => "pass_udp",
            Counter::PassOtherProtocol => "pass_other_protocol",
            Counter::PassFragment => "pass_fragment",
            Counter::PassNoListener => "pass_no_listener",
            Counter::PassTruncatedEthernet => "pass_truncated_ethernet",
            Counter::PassTruncatedIpv4 => "pass_truncated_ipv4",
            Counter::PassMalformedIpv4 => "pass_malformed_ipv4",
            Counter::PassTruncatedTcp => "pass_truncated_tcp",
            Counter::PassMalformedTcp => "pass_malformed_tcp",
            Counter::PassDraining => "pass_draining",
        }
    }
}

/// EtherType of IPv4 (RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP (RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6 (RFC 8200).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IP protocol numbers (IANA).
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            for d in &Counter::ALL[..i] {
                assert_ne!(c.name(), d.name());
            }
        }
    }

    #[test]
    fn endpoint_key_layout() {
        // 198.51.100.2:443
        let addr = u32::from_be_bytes([198, 51, 100, 2]);
        assert_eq!(endpoint_key(addr, 443), 0x0000_c633_6402_01bb);
        assert_ne!(endpoint_key(addr, 443), endpoint_key(addr, 444));
        assert_ne!(endpoint_key(addr, 443), endpoint_key(addr + 1, 443));
    }
}
