//! The XDP program proper; compiled for the BPF target only (see main.rs).
//!
//! `unsafe` here is unavoidable in an XDP program: reading packet bytes through
//! raw pointers (each read is inside a range checked against `data_end` just
//! before, which the kernel verifier also proves), bumping a per-CPU counter
//! through the map's pointer, and the license section attribute.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use sluice_ebpf::{
    BACKEND_FLOWS_MAX, Counter, DRAIN_FLOWS_MAX, ENTRY_ACTIVE, ENTRY_DRAINING, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, EndpointKey, FAMILY_IPV4, FAMILY_IPV6, FlowKey, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
    ICMPV6_PACKET_TOO_BIG, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_DESTINATION_OPTIONS,
    IPV6_EXTENSION_HEADERS_MAX, IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_ROUTING, LISTENERS_MAX, OPEN_FLOWS_MAX,
    PRESSURE_OFF, PRESSURE_SYNS, XSKS_MAX, endpoint_key, flow_key, mapped_ipv4, wildcard_key,
};

/// Listener endpoints (`sluice_ebpf::MAP_LISTENERS`).
#[map]
static LISTENERS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(LISTENERS_MAX, 0);

/// Local endpoints of sluice's own outgoing (backend) flows
/// (`sluice_ebpf::MAP_BACKEND_FLOWS`). This is the rule that steers the return
/// traffic of backend connections made by sluice's own TCP stack: user space
/// inserts the local (address, port) when it opens such a connection and
/// removes it when the connection is gone. Empty until issue 4 uses it.
#[map]
static BACKEND_FLOWS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(BACKEND_FLOWS_MAX, 0);

/// sluice's own flows on draining listeners (`sluice_ebpf::MAP_DRAIN_FLOWS`).
#[map]
static DRAIN_FLOWS: HashMap<FlowKey, u32> = HashMap::with_max_entries(DRAIN_FLOWS_MAX, 0);

/// sluice's flows while SYN cookies are answered here (`sluice_ebpf::MAP_OPEN_FLOWS`); entries
/// allocated as added (BPF_F_NO_PREALLOC).
#[map]
static OPEN_FLOWS: HashMap<FlowKey, u32> = HashMap::with_max_entries(OPEN_FLOWS_MAX, 1);

/// AF_XDP socket per RX queue (`sluice_ebpf::MAP_XSKS`).
#[map]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_MAX, 0);

/// One per-CPU slot per `Counter` (`sluice_ebpf::MAP_COUNTERS`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

pub(crate) const ETH_HLEN: usize = 14;
const IPV4_MIN_HLEN: usize = 20;
/// The IPv6 fixed header (RFC 8200 section 3).
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
/// The ICMP and ICMPv6 error header before the quoted packet: type, code, checksum and four
/// bytes (unused / next-hop MTU, RFC 1191; MTU, RFC 4443 section 3.2).
const ICMP_ERROR_HLEN: usize = 8;
/// The part of the quoted TCP header steering reads: the ports (RFC 792 quotes at least 64 bits).
const QUOTED_TCP_LEN: usize = 8;
/// IPv4 flags + fragment offset: MF bit and the 13-bit offset (RFC 791 section 3.1).
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
/// The 13-bit fragment offset alone.
const IPV4_OFFSET: u16 = 0x1fff;

#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    let (action, counter) = classify::<false>(&ctx);
    count(counter);
    action
}

/// The same program with SYN cookies in XDP (`crate::cookie`): loaded instead of `sluice_xdp`
/// when enabled and the kernel has the helpers.
#[xdp]
pub fn sluice_xdp_cookies(ctx: XdpContext) -> u32 {
    let packed = classify_cookies(&ctx);
    let (action, counter) = ((packed >> 32) as u32, packed as u32);
    // The SYN-ACK is built here, not inside `classify`: the two stack frames would not fit in
    // the 512 bytes a call chain may use.
    let (action, counter) = match action {
        ANSWER_SYN_V4 | ANSWER_SYN_V6 => match crate::cookie::answer_syn(&ctx, action == ANSWER_SYN_V6) {
            Some(action) => (action, counter),
            None => {
                let (action, counter) = redirect(&ctx, Counter::SynCookieSkipped);
                (action, counter.index())
            }
        },
        _ => (action, counter),
    };
    count_index(counter);
    action
}

/// `classify::<true>` in a BPF subprogram of its own, its outcome packed as
/// `action << 32 | counter index` (one register).
#[inline(never)]
fn classify_cookies(ctx: &XdpContext) -> u64 {
    let (action, counter) = classify::<true>(ctx);
    (u64::from(action) << 32) | u64::from(counter.index())
}

/// Actions `classify::<true>` returns for a SYN the program is to answer (never XDP actions).
const ANSWER_SYN_V4: u32 = 0x5100_0004;
const ANSWER_SYN_V6: u32 = 0x5100_0006;

#[inline(always)]
fn count(counter: Counter) {
    count_index(counter.index());
}

#[inline(always)]
fn count_index(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for the
        // program's run; no other CPU writes it and XDP does not nest.
        unsafe { *slot += 1 };
    }
}

/// Start of `len` bytes at `offset` from the frame start, if they lie inside the frame.
#[inline(always)]
pub(crate) fn bytes(ctx: &XdpContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + offset + len > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const u8)
}

/// Byte `i` of a range returned by `bytes`. The caller keeps `i` below that range's length.
#[inline(always)]
pub(crate) fn at(p: *const u8, i: usize) -> u8 {
    // SAFETY: every call site reads below the length that `bytes` checked
    // against `data_end`; the verifier rejects the program otherwise.
    unsafe { *p.add(i) }
}

#[inline(always)]
pub(crate) fn be16(p: *const u8, i: usize) -> u16 {
    u16::from_be_bytes([at(p, i), at(p, i + 1)])
}

/// The IPv4 address at `i` as the 16 key bytes (IPv4-mapped).
#[inline(always)]
fn ipv4_addr(p: *const u8, i: usize) -> [u8; 16] {
    mapped_ipv4([at(p, i), at(p, i + 1), at(p, i + 2), at(p, i + 3)])
}

/// The IPv6 address at `i`.
#[inline(always)]
fn ipv6_addr(p: *const u8, i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    let mut j = 0;
    while j < 16 {
        a[j] = at(p, i + j);
        j += 1;
    }
    a
}

/// Decide what to do with the frame and which counter records it.
#[inline(always)]
fn classify<const COOKIES: bool>(ctx: &XdpContext) -> (u32, Counter) {
    // Ethernet II: dst(6) src(6) ethertype(2).
    let Some(eth) = bytes(ctx, 0, ETH_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedEthernet);
    };
    match be16(eth, 12) {
        ETHERTYPE_IPV4 => classify_ipv4::<COOKIES>(ctx),
        ETHERTYPE_IPV6 => classify_ipv6::<COOKIES>(ctx),
        ETHERTYPE_ARP => (XDP_PASS, Counter::PassArp),
        _ => (XDP_PASS, Counter::PassOtherEthertype),
    }
}

/// IPv4 (RFC 791 section 3.1): TCP to steer, path-MTU ICMP to look at, everything else passes.
#[inline(always)]
fn classify_ipv4<const COOKIES: bool>(ctx: &XdpContext) -> (u32, Counter) {
    // The fixed 20 bytes first.
    let Some(ip) = bytes(ctx, ETH_HLEN, IPV4_MIN_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedIpv4);
    };
    let version_ihl = at(ip, 0);
    if version_ihl >> 4 != 4 {
        return (XDP_PASS, Counter::PassMalformedIpv4);
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < IPV4_MIN_HLEN {
        return (XDP_PASS, Counter::PassMalformedIpv4);
    }
    let total_len = usize::from(be16(ip, 2));
    if total_len < ihl {
        return (XDP_PASS, Counter::PassMalformedIpv4);
    }
    // The IPv4 header with its options must be in the frame. (A payload cut
    // short of total_len is not checked here: user space's parser drops it.
    // Checking it against data_end here would let LLVM drop the TCP header's
    // own bounds check as redundant, which the verifier cannot follow.)
    if bytes(ctx, ETH_HLEN, ihl).is_none() {
        return (XDP_PASS, Counter::PassTruncatedIpv4);
    }
    if be16(ip, 6) & IPV4_MF_OR_OFFSET != 0 {
        return (XDP_PASS, Counter::PassFragment);
    }
    match at(ip, 9) {
        IPPROTO_TCP => {}
        IPPROTO_ICMP => return icmpv4(ctx, ETH_HLEN + ihl),
        IPPROTO_UDP => return (XDP_PASS, Counter::PassUdp),
        _ => return (XDP_PASS, Counter::PassOtherProtocol),
    }
    let src = ipv4_addr(ip, 12);
    let dst = ipv4_addr(ip, 16);
    tcp::<COOKIES>(ctx, ETH_HLEN + ihl, total_len - ihl, FAMILY_IPV4, &src, &dst)
}

/// IPv6 (RFC 8200): the fixed header, then at most [`IPV6_EXTENSION_HEADERS_MAX`] Hop-by-Hop
/// (first only, section 4.3), Routing and Destination Options headers skipped by their Hdr Ext
/// Len; a Fragment header passes (section 4.5), and so does any other extension header or
/// upper layer but TCP and ICMPv6 (NDP and every other ICMPv6 message but a Packet Too Big for
/// sluice go to the kernel).
#[inline(always)]
fn classify_ipv6<const COOKIES: bool>(ctx: &XdpContext) -> (u32, Counter) {
    let Some(ip) = bytes(ctx, ETH_HLEN, IPV6_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedIpv6);
    };
    if at(ip, 0) >> 4 != 6 {
        return (XDP_PASS, Counter::PassMalformedIpv6);
    }
    let payload_len = usize::from(be16(ip, 4));
    let mut next_header = at(ip, 6);
    // Offset of the header `next_header` names, from the frame start.
    let mut offset = ETH_HLEN + IPV6_HLEN;
    for i in 0..IPV6_EXTENSION_HEADERS_MAX {
        match next_header {
            IPV6_HOP_BY_HOP if i > 0 => return (XDP_PASS, Counter::PassMalformedIpv6),
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {}
            _ => break,
        }
        // Next Header (1), Hdr Ext Len (1): the header is (Hdr Ext Len + 1) * 8 bytes.
        let Some(ext) = bytes(ctx, offset, 2) else {
            return (XDP_PASS, Counter::PassTruncatedIpv6);
        };
        next_header = at(ext, 0);
        offset += (usize::from(at(ext, 1)) + 1) * 8;
    }
    let ext_len = offset - (ETH_HLEN + IPV6_HLEN);
    match next_header {
        IPPROTO_TCP => {}
        IPPROTO_ICMPV6 => return icmpv6(ctx, offset),
        IPPROTO_UDP => return (XDP_PASS, Counter::PassUdp),
        IPV6_FRAGMENT => return (XDP_PASS, Counter::PassFragment),
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DESTINATION_OPTIONS => {
            return (XDP_PASS, Counter::PassIpv6ExtensionLimit);
        }
        _ => return (XDP_PASS, Counter::PassOtherProtocol),
    }
    if ext_len > payload_len {
        return (XDP_PASS, Counter::PassMalformedIpv6);
    }
    let src = ipv6_addr(ip, 8);
    let dst = ipv6_addr(ip, 24);
    tcp::<COOKIES>(ctx, offset, payload_len - ext_len, FAMILY_IPV6, &src, &dst)
}

/// TCP (RFC 9293 section 3.1) at `offset`, `len` bytes long by the IP header: the fixed 20
/// bytes, then data offset >= 5 and the header (with options) inside both the datagram and the
/// frame; steered by its destination (a listener or a backend flow).
#[inline(always)]
fn tcp<const COOKIES: bool>(
    ctx: &XdpContext,
    offset: usize,
    len: usize,
    family: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
) -> (u32, Counter) {
    if TCP_MIN_HLEN > len {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    }
    let Some(tcp) = bytes(ctx, offset, TCP_MIN_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    };
    let data_offset = usize::from(at(tcp, 12) >> 4) * 4;
    if data_offset < TCP_MIN_HLEN {
        return (XDP_PASS, Counter::PassMalformedTcp);
    }
    if data_offset > len || bytes(ctx, offset, data_offset).is_none() {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    }
    let local = Endpoint { addr: dst, port: be16(tcp, 2) };
    let remote = Endpoint { addr: src, port: be16(tcp, 0) };
    if COOKIES {
        let flags = at(tcp, 13) & (TCP_SYN | TCP_ACK | TCP_RST);
        if (flags == TCP_SYN || flags == TCP_ACK) && active_listener(family, &local) {
            let level = crate::cookie::pressure(ctx);
            if flags == TCP_SYN && level == PRESSURE_SYNS {
                // IPv4 options and IPv6 extension headers: user space answers.
                return match (family, offset) {
                    (FAMILY_IPV4, 34) => (ANSWER_SYN_V4, Counter::SynCookieSent),
                    (FAMILY_IPV6, 54) => (ANSWER_SYN_V6, Counter::SynCookieSent),
                    _ => redirect(ctx, Counter::SynCookieSkipped),
                };
            }
            // A bare ACK of one of sluice's flows goes on as usual; any other must carry a
            // cookie the kernel validates, or it is dropped here.
            if flags == TCP_ACK
                && level != PRESSURE_OFF
                && OPEN_FLOWS.get_ptr(flow_key(family, remote.addr, remote.port, local.port)).is_none()
            {
                return if crate::cookie::check_ack(ctx, family, offset) {
                    redirect(ctx, Counter::SynCookieValidated)
                } else if crate::cookie::flows_incomplete() {
                    redirect(ctx, Counter::SynCookieFailed)
                } else {
                    (XDP_DROP, Counter::SynCookieDropped)
                };
            }
        }
    }
    steer(ctx, family, &local, &remote, Counter::Redirected, Counter::RedirectedBackend)
        .unwrap_or((XDP_PASS, Counter::PassNoListener))
}

/// ICMPv4 at `offset`: a Destination Unreachable / Fragmentation Needed (RFC 1191 section 4)
/// quoting a TCP segment that sluice sent (its source is a listener or a backend flow's local
/// end) goes to sluice; every other ICMP message to the kernel.
#[inline(always)]
fn icmpv4(ctx: &XdpContext, offset: usize) -> (u32, Counter) {
    let pass = (XDP_PASS, Counter::PassIcmp);
    let Some(icmp) = bytes(ctx, offset, ICMP_ERROR_HLEN + IPV4_MIN_HLEN) else {
        return pass;
    };
    if at(icmp, 0) != ICMP_DEST_UNREACH || at(icmp, 1) != ICMP_FRAG_NEEDED {
        return pass;
    }
    // The quoted IPv4 header: a TCP segment, the first (or only) fragment.
    let version_ihl = at(icmp, ICMP_ERROR_HLEN);
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4
        || ihl < IPV4_MIN_HLEN
        || at(icmp, ICMP_ERROR_HLEN + 9) != IPPROTO_TCP
        || be16(icmp, ICMP_ERROR_HLEN + 6) & IPV4_OFFSET != 0
    {
        return pass;
    }
    let Some(quoted_tcp) = bytes(ctx, offset + ICMP_ERROR_HLEN + ihl, QUOTED_TCP_LEN) else {
        return pass;
    };
    // sluice sent it: its source is the local end, its destination the remote one.
    let local = Endpoint { addr: &ipv4_addr(icmp, ICMP_ERROR_HLEN + 12), port: be16(quoted_tcp, 0) };
    let remote = Endpoint { addr: &ipv4_addr(icmp, ICMP_ERROR_HLEN + 16), port: be16(quoted_tcp, 2) };
    steer(ctx, FAMILY_IPV4, &local, &remote, Counter::RedirectedIcmpPtb, Counter::RedirectedIcmpPtb).unwrap_or(pass)
}

/// ICMPv6 at `offset`: a Packet Too Big (RFC 4443 section 3.2, RFC 8201) quoting a TCP segment
/// that sluice sent goes to sluice; every other message (NDP included) to the kernel. sluice
/// sends no extension headers, so the quoted IPv6 header must be followed by TCP directly.
#[inline(always)]
fn icmpv6(ctx: &XdpContext, offset: usize) -> (u32, Counter) {
    let pass = (XDP_PASS, Counter::PassIcmpv6);
    let Some(icmp) = bytes(ctx, offset, ICMP_ERROR_HLEN) else {
        return pass;
    };
    if at(icmp, 0) != ICMPV6_PACKET_TOO_BIG {
        return pass;
    }
    let Some(quoted) = bytes(ctx, offset + ICMP_ERROR_HLEN, IPV6_HLEN + QUOTED_TCP_LEN) else {
        return pass;
    };
    if at(quoted, 0) >> 4 != 6 || at(quoted, 6) != IPPROTO_TCP {
        return pass;
    }
    let local = Endpoint { addr: &ipv6_addr(quoted, 8), port: be16(quoted, IPV6_HLEN) };
    let remote = Endpoint { addr: &ipv6_addr(quoted, 24), port: be16(quoted, IPV6_HLEN + 2) };
    steer(ctx, FAMILY_IPV6, &local, &remote, Counter::RedirectedIcmpPtb, Counter::RedirectedIcmpPtb).unwrap_or(pass)
}

/// TCP flags (RFC 9293 3.1).
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Whether `local` is an active (not draining) listener, by its address or the wildcard.
#[inline(always)]
fn active_listener(family: u8, local: &Endpoint<'_>) -> bool {
    let entry = match LISTENERS.get_ptr(endpoint_key(family, local.addr, local.port)) {
        Some(entry) => Some(entry),
        None => LISTENERS.get_ptr(wildcard_key(family, local.port)),
    };
    // SAFETY: a pointer to a map value returned by the kernel, valid for the program's run.
    entry.is_some_and(|e| unsafe { *e } == ENTRY_ACTIVE)
}

/// One end of a flow: the 16 key address bytes and the port.
struct Endpoint<'a> {
    addr: &'a [u8; 16],
    port: u16,
}

/// The steering rules, for a segment to `local` from `remote` or an ICMP message about one:
/// a listener (exact address, else the family's unspecified address) takes it, unless the
/// listener drains and the flow is not one of sluice's (passed, counted `PassDraining`);
/// else a backend flow's local end takes it. `None`: not sluice's.
#[inline(always)]
fn steer(
    ctx: &XdpContext,
    family: u8,
    local: &Endpoint<'_>,
    remote: &Endpoint<'_>,
    listener: Counter,
    backend: Counter,
) -> Option<(u32, Counter)> {
    let key = endpoint_key(family, local.addr, local.port);
    let entry = match LISTENERS.get_ptr(key) {
        Some(entry) => Some(entry),
        None => LISTENERS.get_ptr(wildcard_key(family, local.port)),
    };
    if let Some(entry) = entry {
        // SAFETY: a pointer to a map value returned by the kernel for this key, valid for the
        // program's run; a u32 is read whole.
        let draining = unsafe { *entry } == ENTRY_DRAINING;
        if draining && DRAIN_FLOWS.get_ptr(flow_key(family, remote.addr, remote.port, local.port)).is_none() {
            return Some((XDP_PASS, Counter::PassDraining));
        }
        return Some(redirect(ctx, listener));
    }
    // Return traffic of sluice's own backend connections (issue 4).
    if BACKEND_FLOWS.get_ptr(key).is_some() {
        return Some(redirect(ctx, backend));
    }
    None
}

/// Redirect to this queue's AF_XDP socket; without one, pass to the kernel.
#[inline(always)]
pub(crate) fn redirect(ctx: &XdpContext, ok: Counter) -> (u32, Counter) {
    match XSKS.redirect(ctx.rx_queue_index(), u64::from(XDP_PASS)) {
        Ok(action) => (action, ok),
        Err(_) => (XDP_PASS, Counter::RedirectFailed),
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
