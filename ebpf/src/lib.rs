//! Definitions shared by sluice's XDP program (`src/main.rs`, built for
//! `bpfel-unknown-none`) and user space (`sluice::loader`).
//!
//! What it is: map names and sizes, the key encoding of the endpoint and flow maps, and the
//! indices of the per-CPU outcome counters. Keys are byte arrays and values plain integers, so
//! user space needs no custom `aya::Pod` impl (and no `unsafe`): aya already treats `[u8; N]`
//! as plain data.
//!
//! What it is not: a packet parser for user space (that is `sluice-wire`).
//!
//! Keys hold both address families in one fixed layout: a family byte ([`FAMILY_IPV4`] or
//! [`FAMILY_IPV6`]), ports in network byte order, and a 16-byte address, an IPv4 address as its
//! IPv4-mapped IPv6 form (`::ffff:a.b.c.d`, RFC 4291 section 2.5.5.2). The family byte keeps an
//! IPv4 endpoint and an IPv6 packet to `::ffff:a.b.c.d` apart. The XDP program builds the same
//! keys from a frame's header bytes ([`endpoint_key`], [`flow_key`]); user space from
//! `core::net` addresses ([`endpoint_key_of`], [`flow_key_of`]), the same functions underneath.
#![no_std]
#![forbid(unsafe_code)]

use core::net::{IpAddr, SocketAddr};

/// Name of the XDP program (the `#[xdp]` function) in the object file.
pub const PROGRAM_NAME: &str = "sluice_xdp";
/// The same program plus SYN cookies in XDP (`bpf_tcp_raw_gen_syncookie_*`, Linux 6.0+): loaded
/// instead of [`PROGRAM_NAME`] when enabled and the kernel accepts it.
pub const PROGRAM_NAME_COOKIES: &str = "sluice_xdp_cookies";

/// Family byte of a key holding an IPv4 address.
pub const FAMILY_IPV4: u8 = 4;
/// Family byte of a key holding an IPv6 address.
pub const FAMILY_IPV6: u8 = 6;

/// Length of an [`EndpointKey`].
pub const ENDPOINT_KEY_LEN: usize = 20;
/// Key of [`MAP_LISTENERS`] and [`MAP_BACKEND_FLOWS`]: one local (address, port).
///
/// Layout: `[family, 0, port (2, big-endian), address (16)]`.
pub type EndpointKey = [u8; ENDPOINT_KEY_LEN];

/// Length of a [`FlowKey`].
pub const FLOW_KEY_LEN: usize = 24;
/// Key of [`MAP_DRAIN_FLOWS`]: the remote (address, port) of a flow and its local port.
///
/// Layout: `[family, 0, remote port (2), local port (2), 0, 0, remote address (16)]`, ports
/// big-endian. (The local address is left out: two draining listeners on one port but
/// different addresses share keys, which at worst steers a flow to sluice that it then resets.)
pub type FlowKey = [u8; FLOW_KEY_LEN];

/// `HashMap<EndpointKey, u32>`: listener endpoints. Key: [`endpoint_key`] of a local
/// (address, port) sluice accepts connections on; the unspecified address of a family
/// (`0.0.0.0`, `::`) matches every destination address of that family whose exact key is not
/// in the map. Value: [`ENTRY_ACTIVE`] or [`ENTRY_DRAINING`].
pub const MAP_LISTENERS: &str = "LISTENERS";
/// Capacity of [`MAP_LISTENERS`]: the most listeners sluice can steer (both families together).
pub const LISTENERS_MAX: u32 = 1024;

/// `HashMap<EndpointKey, u32>`: return traffic of sluice's own outgoing (backend)
/// connections. Key: [`endpoint_key`] of the local (address, port) of such a
/// connection; a TCP segment whose destination matches is redirected like a
/// listener's. Empty until the backend TCP path exists (issue 4 fills it).
pub const MAP_BACKEND_FLOWS: &str = "BACKEND_FLOWS";
/// Capacity of [`MAP_BACKEND_FLOWS`] (one per local port of outgoing flows).
pub const BACKEND_FLOWS_MAX: u32 = 16384;

/// `HashMap<FlowKey, u32>`: sluice's own connections on listeners being drained. Key:
/// [`flow_key`] of the remote end and the local port. A segment to an [`ENTRY_DRAINING`]
/// listener goes to sluice only if its flow is here; all others (new connections and everything
/// after their SYN) go to the kernel.
pub const MAP_DRAIN_FLOWS: &str = "DRAIN_FLOWS";
/// Capacity of [`MAP_DRAIN_FLOWS`].
pub const DRAIN_FLOWS_MAX: u32 = 262_144;

/// `HashMap<FlowKey, u32>`, kept only while the program answers SYN cookies: every flow sluice
/// has a TCB for (from the SYN it took, or the cookie ACK it accepted, until the TCB is freed or
/// enters TIME-WAIT), written by the workers. Under SYN-queue pressure a bare ACK to a listener
/// whose flow is not here and whose cookie the kernel refuses is dropped in XDP
/// ([`Counter::SynCookieDropped`]): user space sees only its own flows' ACKs and valid cookies.
/// Entries are allocated as added (no preallocation).
pub const MAP_OPEN_FLOWS: &str = "OPEN_FLOWS";
/// Capacity of [`MAP_OPEN_FLOWS`]; past it user space sets [`COOKIE_FLOWS_INCOMPLETE`].
pub const OPEN_FLOWS_MAX: u32 = 1 << 20;

/// The 16 address bytes of a key for an IPv4 address: its IPv4-mapped IPv6 form.
#[inline(always)]
pub const fn mapped_ipv4(addr: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3]]
}

/// [`EndpointKey`] of `addr` (16 bytes: IPv6, or [`mapped_ipv4`] with [`FAMILY_IPV4`]) and
/// `port` (host order).
#[inline(always)]
pub const fn endpoint_key(family: u8, addr: &[u8; 16], port: u16) -> EndpointKey {
    let p = port.to_be_bytes();
    let a = addr;
    [
        family, 0, p[0], p[1], a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
        a[14], a[15],
    ]
}

/// [`FlowKey`] of a flow from `remote_addr` (as in [`endpoint_key`]) and `remote_port` to
/// `local_port`.
#[inline(always)]
pub const fn flow_key(family: u8, remote_addr: &[u8; 16], remote_port: u16, local_port: u16) -> FlowKey {
    let r = remote_port.to_be_bytes();
    let l = local_port.to_be_bytes();
    let a = remote_addr;
    [
        family, 0, r[0], r[1], l[0], l[1], 0, 0, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
        a[11], a[12], a[13], a[14], a[15],
    ]
}

/// [`EndpointKey`] of the unspecified address of `family` (`0.0.0.0` or `::`) and `port`: the
/// listener that matches every destination address of that family.
#[inline(always)]
pub const fn wildcard_key(family: u8, port: u16) -> EndpointKey {
    let addr = if family == FAMILY_IPV4 { mapped_ipv4([0; 4]) } else { [0; 16] };
    endpoint_key(family, &addr, port)
}

/// The family byte and the 16 key address bytes of `addr`.
pub const fn key_address(addr: IpAddr) -> (u8, [u8; 16]) {
    match addr {
        IpAddr::V4(v4) => (FAMILY_IPV4, mapped_ipv4(v4.octets())),
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets()),
    }
}

/// [`EndpointKey`] of a local socket address (user space's side of [`endpoint_key`]).
pub const fn endpoint_key_of(local: SocketAddr) -> EndpointKey {
    let (family, addr) = key_address(local.ip());
    endpoint_key(family, &addr, local.port())
}

/// [`FlowKey`] of a flow from `remote` to `local_port` (user space's side of [`flow_key`]).
pub const fn flow_key_of(remote: SocketAddr, local_port: u16) -> FlowKey {
    let (family, addr) = key_address(remote.ip());
    flow_key(family, &addr, remote.port(), local_port)
}

/// `XskMap`: AF_XDP socket per RX queue, indexed by `rx_queue_index`.
pub const MAP_XSKS: &str = "XSKS";
/// Capacity of [`MAP_XSKS`]: the highest queue index sluice can serve, plus one.
pub const XSKS_MAX: u32 = 256;

/// `PerCpuArray<u64>`: one slot per [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// `Array<u32>` of [`COOKIE_CONFIG_LEN`] slots: what the XDP program's SYN-ACKs offer, written
/// by user space before any listener is added: [`COOKIE_MSS_V4`], [`COOKIE_MSS_V6`],
/// [`COOKIE_WSCALE`], [`COOKIE_WINDOW`], [`COOKIE_FLAGS`] and the 8-byte mark
/// ([`COOKIE_MARK_LO`], [`COOKIE_MARK_HI`]) written into the metadata of a frame whose cookie
/// the kernel validated.
pub const MAP_COOKIE_CONFIG: &str = "COOKIE_CONFIG";
/// Slots of [`MAP_COOKIE_CONFIG`].
pub const COOKIE_CONFIG_LEN: u32 = 8;
/// Our MSS over IPv4 (the SYN-ACK's MSS option).
pub const COOKIE_MSS_V4: u32 = 0;
/// Our MSS over IPv6.
pub const COOKIE_MSS_V6: u32 = 1;
/// Our window shift (RFC 7323 2.2), or [`COOKIE_NO_WSCALE`] when we offer none.
pub const COOKIE_WSCALE: u32 = 2;
/// The SYN-ACK's window (never scaled, RFC 7323 2.2).
pub const COOKIE_WINDOW: u32 = 3;
/// [`COOKIE_FLAG_SACK`] | [`COOKIE_FLAG_TIMESTAMPS`]: what we offer.
pub const COOKIE_FLAGS: u32 = 4;
/// Low 32 bits of the validated-cookie mark.
pub const COOKIE_MARK_LO: u32 = 5;
/// High 32 bits of the validated-cookie mark.
pub const COOKIE_MARK_HI: u32 = 6;
/// Non-zero while [`MAP_OPEN_FLOWS`] may miss one of sluice's flows (it was full): ACKs whose
/// cookie fails are then redirected unmarked ([`Counter::SynCookieFailed`]), not dropped.
pub const COOKIE_FLOWS_INCOMPLETE: u32 = 7;
/// [`COOKIE_WSCALE`] when window scaling is off.
pub const COOKIE_NO_WSCALE: u32 = 0xff;
pub const COOKIE_FLAG_SACK: u32 = 1;
pub const COOKIE_FLAG_TIMESTAMPS: u32 = 2;
/// Bytes of metadata (`bpf_xdp_adjust_meta`) in front of a frame whose cookie ACK the kernel
/// validated: the mark, little-endian (`COOKIE_MARK_HI << 32 | COOKIE_MARK_LO`). User space
/// reads them just before the received data and wipes them.
pub const COOKIE_META_LEN: usize = 8;

/// `Array<u32>` indexed by RX queue ([`XSKS_MAX`] slots): the SYN-queue pressure of that queue's
/// worker, written by the worker: [`PRESSURE_OFF`], [`PRESSURE_SYNS`] or [`PRESSURE_ACKS`].
pub const MAP_SYN_PRESSURE: &str = "SYN_PRESSURE";
/// SYNs and ACKs go to user space unchecked.
pub const PRESSURE_OFF: u32 = 0;
/// The XDP program answers SYNs to active listeners with the kernel's SYN cookies and checks
/// bare ACKs to them with the kernel.
pub const PRESSURE_SYNS: u32 = 1;
/// Cookies went out lately: SYNs go to user space again, bare ACKs are still checked.
pub const PRESSURE_ACKS: u32 = 2;

/// The kernel's cookie MSS tables (`msstab` of net/ipv4/syncookies.c and net/ipv6/syncookies.c):
/// `bpf_tcp_raw_gen_syncookie_*` picks one of these.
pub const KERNEL_COOKIE_MSS_V4: [u16; 4] = [536, 1300, 1440, 1460];
pub const KERNEL_COOKIE_MSS_V6: [u16; 4] = [1220, 1420, 1440, 8940];
/// Low bits of the XDP SYN-ACK's TSval that carry the options, as Linux's
/// `cookie_init_timestamp` (bits 0-3 the peer's window shift or 0xf for none, bit 4
/// SACK-permitted, bit 5 unused (ECN in Linux)) plus bits 6-7: the index of the cookie's MSS in
/// [`KERNEL_COOKIE_MSS_V4`] / [`KERNEL_COOKIE_MSS_V6`].
pub const TS_COOKIE_BITS: u32 = 8;

/// The option bits of a cookie TSval (see [`TS_COOKIE_BITS`]).
#[inline(always)]
pub const fn ts_cookie_options(peer_wscale: Option<u8>, sack: bool, mss_index: u32) -> u32 {
    let ws = match peer_wscale {
        Some(w) if w <= 14 => w as u32,
        _ => 0xf,
    };
    ws | ((sack as u32) << 4) | ((mss_index & 3) << 6)
}

/// What a cookie TSval carries: the peer's MSS (from the kernel's table of the family), its
/// window shift (0xf: none; every other 4-bit value is a shift of at most 14) and
/// SACK-permitted.
pub const fn ts_cookie_decode(tsecr: u32, ipv6: bool) -> (u16, Option<u8>, bool) {
    let ws = tsecr & 0xf;
    let idx = ((tsecr >> 6) & 3) as usize;
    let mss = if ipv6 { KERNEL_COOKIE_MSS_V6[idx] } else { KERNEL_COOKIE_MSS_V4[idx] };
    (mss, if ws == 0xf { None } else { Some(ws as u8) }, tsecr & 0x10 != 0)
}

/// The TSval of a cookie SYN-ACK at `now_ms`: the clock with its low [`TS_COOKIE_BITS`] replaced
/// by `options`, never ahead of the clock (Linux's `cookie_init_timestamp`).
#[inline(always)]
pub const fn ts_cookie_tsval(now_ms: u32, options: u32) -> u32 {
    let mask = (1u32 << TS_COOKIE_BITS) - 1;
    let ts = (now_ms & !mask) | (options & mask);
    if ts > now_ms { ts.wrapping_sub(1 << TS_COOKIE_BITS) } else { ts }
}

/// Value stored in [`MAP_LISTENERS`] and [`MAP_BACKEND_FLOWS`] for a live entry.
pub const ENTRY_ACTIVE: u32 = 1;
/// Value of a [`MAP_LISTENERS`] entry being drained: segments of the flows in
/// [`MAP_DRAIN_FLOWS`] still go to sluice, so its connections finish; all others go to the kernel.
pub const ENTRY_DRAINING: u32 = 2;

/// Outcome of the XDP program for one frame; the index of its counter in
/// [`MAP_COUNTERS`]. Every frame increments exactly one counter.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// TCP to a listener (either family), handed to `XSKS[rx_queue]` (XDP_REDIRECT).
    Redirected = 0,
    /// TCP or a path-MTU ICMP message for sluice, but no socket in `XSKS[rx_queue]`: passed to
    /// the kernel.
    RedirectFailed = 1,
    /// TCP to a backend flow's local endpoint, handed to `XSKS[rx_queue]`.
    RedirectedBackend = 2,
    /// ICMPv4 fragmentation needed (type 3 code 4, RFC 1191) or ICMPv6 Packet Too Big (type 2,
    /// RFC 8201) quoting a TCP segment sent from a listener or a backend flow's local endpoint:
    /// handed to `XSKS[rx_queue]` (user space validates it, RFC 5927).
    RedirectedIcmpPtb = 3,
    /// ARP: passed.
    PassArp = 4,
    /// Any other EtherType (VLAN tags, LLDP, ...): passed.
    PassOtherEthertype = 5,
    /// ICMPv4 that is not a path-MTU message for sluice: passed.
    PassIcmp = 6,
    /// ICMPv6 that is not a Packet Too Big for sluice (NDP, echo, other errors): passed.
    PassIcmpv6 = 7,
    /// UDP (either family): passed.
    PassUdp = 8,
    /// Another protocol, or an IPv6 extension header other than Hop-by-Hop, Routing,
    /// Destination Options and Fragment (ESP, AH, No Next Header, ...): passed.
    PassOtherProtocol = 9,
    /// A fragment: IPv4 with MF set or offset != 0, or IPv6 with a Fragment header (RFC 8200
    /// section 4.5): passed for the kernel to reassemble.
    PassFragment = 10,
    /// TCP whose destination is neither a listener nor a backend flow: passed.
    PassNoListener = 11,
    /// A segment (or a path-MTU message) of a listener being drained ([`ENTRY_DRAINING`]) of a
    /// flow that is not one of sluice's ([`MAP_DRAIN_FLOWS`]): passed to the kernel.
    PassDraining = 12,
    /// IPv6 with more than [`IPV6_EXTENSION_HEADERS_MAX`] Hop-by-Hop / Routing / Destination
    /// Options headers before the upper-layer header: passed.
    PassIpv6ExtensionLimit = 13,
    /// Frame shorter than an Ethernet header: passed.
    PassTruncatedEthernet = 14,
    /// Frame ends inside the IPv4 header (20 bytes, or IHL * 4 with options): passed.
    PassTruncatedIpv4 = 15,
    /// IPv4 version != 4, IHL < 5 or total length < IHL * 4: passed.
    PassMalformedIpv4 = 16,
    /// Frame ends inside the IPv6 fixed header (40 bytes) or an extension header: passed.
    PassTruncatedIpv6 = 17,
    /// IPv6 version != 6, or a payload length shorter than the extension headers: passed.
    PassMalformedIpv6 = 18,
    /// TCP header shorter than 20 bytes or than data offset * 4: passed.
    PassTruncatedTcp = 19,
    /// TCP data offset < 5: passed.
    PassMalformedTcp = 20,
    /// A SYN to an active listener under SYN-queue pressure ([`PRESSURE_SYNS`]) answered by the
    /// program itself with a SYN-ACK carrying the kernel's SYN cookie (XDP_TX).
    SynCookieSent = 21,
    /// A bare ACK to an active listener ([`PRESSURE_SYNS`] or [`PRESSURE_ACKS`]) whose cookie the
    /// kernel validated: marked ([`COOKIE_META_LEN`]) and redirected.
    SynCookieValidated = 22,
    /// A bare ACK to an active listener under pressure, of no flow in [`MAP_OPEN_FLOWS`], whose
    /// cookie the kernel refused, while that map may be incomplete
    /// ([`COOKIE_FLOWS_INCOMPLETE`]): redirected unmarked; user space answers it as its own
    /// stack would (a RST if no flow has it).
    SynCookieFailed = 23,
    /// A SYN under pressure the program could not answer (IPv4 options, IPv6 extension headers,
    /// the helper or the frame refused): redirected to user space, which answers it itself.
    SynCookieSkipped = 24,
    /// A bare ACK to an active listener under pressure, of no flow in [`MAP_OPEN_FLOWS`], whose
    /// cookie the kernel refused: dropped (a spoofed ACK never costs user space anything).
    SynCookieDropped = 25,
}

impl Counter {
    /// Number of counters (slots of [`MAP_COUNTERS`]).
    pub const COUNT: u32 = 26;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Redirected,
        Counter::RedirectFailed,
        Counter::RedirectedBackend,
        Counter::RedirectedIcmpPtb,
        Counter::PassArp,
        Counter::PassOtherEthertype,
        Counter::PassIcmp,
        Counter::PassIcmpv6,
        Counter::PassUdp,
        Counter::PassOtherProtocol,
        Counter::PassFragment,
        Counter::PassNoListener,
        Counter::PassDraining,
        Counter::PassIpv6ExtensionLimit,
        Counter::PassTruncatedEthernet,
        Counter::PassTruncatedIpv4,
        Counter::PassMalformedIpv4,
        Counter::PassTruncatedIpv6,
        Counter::PassMalformedIpv6,
        Counter::PassTruncatedTcp,
        Counter::PassMalformedTcp,
        Counter::SynCookieSent,
        Counter::SynCookieValidated,
        Counter::SynCookieFailed,
        Counter::SynCookieSkipped,
        Counter::SynCookieDropped,
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
            Counter::RedirectedIcmpPtb => "redirected_icmp_ptb",
            Counter::PassArp => "pass_arp",
            Counter::PassOtherEthertype => "pass_other_ethertype",
            Counter::PassIcmp => "pass_icmp",
            Counter::PassIcmpv6 => "pass_icmpv6",
            Counter::PassUdp => "pass_udp",
            Counter::PassOtherProtocol => "pass_other_protocol",
            Counter::PassFragment => "pass_fragment",
            Counter::PassNoListener => "pass_no_listener",
            Counter::PassDraining => "pass_draining",
            Counter::PassIpv6ExtensionLimit => "pass_ipv6_extension_limit",
            Counter::PassTruncatedEthernet => "pass_truncated_ethernet",
            Counter::PassTruncatedIpv4 => "pass_truncated_ipv4",
            Counter::PassMalformedIpv4 => "pass_malformed_ipv4",
            Counter::PassTruncatedIpv6 => "pass_truncated_ipv6",
            Counter::PassMalformedIpv6 => "pass_malformed_ipv6",
            Counter::PassTruncatedTcp => "pass_truncated_tcp",
            Counter::PassMalformedTcp => "pass_malformed_tcp",
            Counter::SynCookieSent => "syn_cookies_sent",
            Counter::SynCookieValidated => "syn_cookies_validated",
            Counter::SynCookieFailed => "syn_cookies_failed",
            Counter::SynCookieSkipped => "syn_cookies_skipped",
            Counter::SynCookieDropped => "syn_cookies_dropped",
        }
    }

    /// Whether this outcome is a frame passed because a header was truncated or malformed.
    pub const fn is_malformed(self) -> bool {
        matches!(
            self,
            Counter::PassTruncatedEthernet
                | Counter::PassTruncatedIpv4
                | Counter::PassMalformedIpv4
                | Counter::PassTruncatedIpv6
                | Counter::PassMalformedIpv6
                | Counter::PassTruncatedTcp
                | Counter::PassMalformedTcp
        )
    }
}

/// The most Hop-by-Hop, Routing and Destination Options headers the XDP program skips before
/// the upper-layer header (RFC 8200 section 4.1 recommends at most one of each, Destination
/// Options twice); a longer chain is passed to the kernel ([`Counter::PassIpv6ExtensionLimit`]).
pub const IPV6_EXTENSION_HEADERS_MAX: usize = 4;

/// EtherType of IPv4 (RFC 894).
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP (RFC 826).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6 (RFC 8200).
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IP protocol numbers and IPv6 Next Header values (IANA "Assigned Internet Protocol Numbers").
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers (RFC 8200 section 4).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_DESTINATION_OPTIONS: u8 = 60;
/// ICMPv4 Destination Unreachable, code Fragmentation Needed and DF Set (RFC 792, RFC 1191).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 Packet Too Big (RFC 4443 section 3.2).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

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
    fn ts_cookie_roundtrip() {
        for (ws, sack, idx) in [(Some(7), true, 3), (None, false, 0), (Some(0), true, 1), (Some(14), false, 2)] {
            let o = ts_cookie_options(ws, sack, idx);
            for now in [0u32, 1000, 0x1234_5678, u32::MAX] {
                let ts = ts_cookie_tsval(now, o);
                assert!(ts <= now || now < 256, "{ts} {now}");
                assert!(now.wrapping_sub(ts) < 256);
                let (mss, w, s) = ts_cookie_decode(ts, false);
                assert_eq!((mss, w, s), (KERNEL_COOKIE_MSS_V4[idx as usize], ws, sack));
                assert_eq!(ts_cookie_decode(ts, true).0, KERNEL_COOKIE_MSS_V6[idx as usize]);
            }
        }
        assert_eq!(ts_cookie_decode(0xf, false), (536, None, false));
    }

    #[test]
    fn endpoint_key_layout_ipv4_is_mapped() {
        let key = endpoint_key_of(SocketAddr::from(([198, 51, 100, 2], 443)));
        let want: EndpointKey = [4, 0, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 2];
        assert_eq!(key, want);
        // What the XDP program builds from the header bytes is the same key.
        assert_eq!(endpoint_key(FAMILY_IPV4, &mapped_ipv4([198, 51, 100, 2]), 443), want);
        assert_ne!(key, endpoint_key_of(SocketAddr::from(([198, 51, 100, 2], 444))));
        assert_ne!(key, endpoint_key_of(SocketAddr::from(([198, 51, 100, 3], 443))));
    }

    #[test]
    fn endpoint_key_layout_ipv6() {
        let addr: Ipv6Addr = "2001:db8:100::2".parse().unwrap();
        let key = endpoint_key_of(SocketAddr::from((addr, 443)));
        let mut want = [0u8; ENDPOINT_KEY_LEN];
        want[..4].copy_from_slice(&[6, 0, 0x01, 0xbb]);
        want[4..].copy_from_slice(&addr.octets());
        assert_eq!(key, want);
        assert_eq!(endpoint_key(FAMILY_IPV6, &addr.octets(), 443), want);
    }

    #[test]
    fn families_never_share_a_key() {
        // An IPv6 packet to ::ffff:198.51.100.2 is not the IPv4 listener 198.51.100.2.
        let v4 = SocketAddr::from(([198, 51, 100, 2], 443));
        let mapped = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 2).to_ipv6_mapped(), 443));
        assert_ne!(endpoint_key_of(v4), endpoint_key_of(mapped));
        assert_eq!(endpoint_key_of(v4)[4..], endpoint_key_of(mapped)[4..], "only the family differs");
        assert_ne!(flow_key_of(v4, 443), flow_key_of(mapped, 443));
        // The wildcards of the two families differ too, and match what user space inserts.
        assert_eq!(wildcard_key(FAMILY_IPV4, 443), endpoint_key_of(SocketAddr::from(([0, 0, 0, 0], 443))));
        assert_eq!(wildcard_key(FAMILY_IPV6, 443), endpoint_key_of(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 443))));
        assert_ne!(wildcard_key(FAMILY_IPV4, 443), wildcard_key(FAMILY_IPV6, 443));
    }

    #[test]
    fn flow_key_layout() {
        let key = flow_key_of(SocketAddr::from(([198, 51, 100, 1], 40000)), 443);
        let want: FlowKey =
            [4, 0, 0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 1];
        assert_eq!(key, want);
        assert_eq!(flow_key(FAMILY_IPV4, &mapped_ipv4([198, 51, 100, 1]), 40000, 443), want);
        // Remote and local ports are not interchangeable.
        assert_ne!(key, flow_key_of(SocketAddr::from(([198, 51, 100, 1], 443)), 40000));
        let v6: Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        let key6 = flow_key_of(SocketAddr::from((v6, 40000)), 443);
        assert_eq!(key6[..8], [6, 0, 0x9c, 0x40, 0x01, 0xbb, 0, 0]);
        assert_eq!(key6[8..], v6.octets());
    }

    #[test]
    fn malformed_counters_are_the_truncated_and_malformed_ones() {
        for c in Counter::ALL {
            let by_name = c.name().starts_with("pass_truncated_") || c.name().starts_with("pass_malformed_");
            assert_eq!(c.is_malformed(), by_name, "{}", c.name());
        }
    }
}
