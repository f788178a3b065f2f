//! The XDP program proper; compiled for the BPF target only (see main.rs).
//!
//! `unsafe` here is unavoidable in an XDP program: reading packet bytes through
//! raw pointers (each read is inside a range checked against `data_end` just
//! before, which the kernel verifier also proves), bumping a per-CPU counter
//! through the map's pointer, and the license section attribute.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use sluice_ebpf::{
    BACKEND_FLOWS_MAX, Counter, DRAIN_FLOWS_MAX, ENTRY_DRAINING, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
    IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, LISTENERS_MAX, XSKS_MAX, endpoint_key, flow_key,
};

/// Listener endpoints (`sluice_ebpf::MAP_LISTENERS`).
#[map]
static LISTENERS: HashMap<u64, u32> = HashMap::with_max_entries(LISTENERS_MAX, 0);

/// Local endpoints of sluice's own outgoing (backend) flows
/// (`sluice_ebpf::MAP_BACKEND_FLOWS`). This is the rule that steers the return
/// traffic of backend connections made by sluice's own TCP stack: user space
/// inserts the local (address, port) when it opens such a connection and
/// removes it when the connection is gone. Empty until issue 4 uses it.
#[map]
static BACKEND_FLOWS: HashMap<u64, u32> = HashMap::with_max_entries(BACKEND_FLOWS_MAX, 0);

/// sluice's own flows on draining listeners (`sluice_ebpf::MAP_DRAIN_FLOWS`).
#[map]
static DRAIN_FLOWS: HashMap<u64, u32> = HashMap::with_max_entries(DRAIN_FLOWS_MAX, 0);

/// AF_XDP socket per RX queue (`sluice_ebpf::MAP_XSKS`).
#[map]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_MAX, 0);

/// One per-CPU slot per `Counter` (`sluice_ebpf::MAP_COUNTERS`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

const ETH_HLEN: usize = 14;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
/// IPv4 flags + fragment offset: MF bit and the 13-bit offset (RFC 791 section 3.1).
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;

#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    let (action, counter) = classify(&ctx);
    count(counter);
    action
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU array, valid for
        // the program's run; no other CPU writes it and XDP does not nest.
        unsafe { *slot += 1 };
    }
}

/// Start of `len` bytes at `offset` from the frame start, if they lie inside the frame.
#[inline(always)]
fn bytes(ctx: &XdpContext, offset: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    if start + offset + len > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *const u8)
}

/// Byte `i` of a range returned by `bytes`. The caller keeps `i` below that range's length.
#[inline(always)]
fn at(p: *const u8, i: usize) -> u8 {
    // SAFETY: every call site reads below the length that `bytes` checked
    // against `data_end`; the verifier rejects the program otherwise.
    unsafe { *p.add(i) }
}

#[inline(always)]
fn be16(p: *const u8, i: usize) -> u16 {
    u16::from_be_bytes([at(p, i), at(p, i + 1)])
}

/// Decide what to do with the frame and which counter records it.
#[inline(always)]
fn classify(ctx: &XdpContext) -> (u32, Counter) {
    // Ethernet II: dst(6) src(6) ethertype(2).
    let Some(eth) = bytes(ctx, 0, ETH_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedEthernet);
    };
    match be16(eth, 12) {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_ARP => return (XDP_PASS, Counter::PassArp),
        ETHERTYPE_IPV6 => return (XDP_PASS, Counter::PassIpv6),
        _ => return (XDP_PASS, Counter::PassOtherEthertype),
    }

    // IPv4 (RFC 791 section 3.1): fixed 20 bytes first.
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
        IPPROTO_ICMP => return (XDP_PASS, Counter::PassIcmp),
        IPPROTO_UDP => return (XDP_PASS, Counter::PassUdp),
        _ => return (XDP_PASS, Counter::PassOtherProtocol),
    }
    let dst_addr = u32::from_be_bytes([at(ip, 16), at(ip, 17), at(ip, 18), at(ip, 19)]);

    // TCP (RFC 9293 section 3.1): fixed 20 bytes, then data offset >= 5 and
    // the header (with options) inside both the datagram and the frame.
    if ihl + TCP_MIN_HLEN > total_len {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    }
    let Some(tcp) = bytes(ctx, ETH_HLEN + ihl, TCP_MIN_HLEN) else {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    };
    let data_offset = usize::from(at(tcp, 12) >> 4) * 4;
    if data_offset < TCP_MIN_HLEN {
        return (XDP_PASS, Counter::PassMalformedTcp);
    }
    if ihl + data_offset > total_len || bytes(ctx, ETH_HLEN + ihl, data_offset).is_none() {
        return (XDP_PASS, Counter::PassTruncatedTcp);
    }
    let key = endpoint_key(dst_addr, be16(tcp, 2));

    if let Some(entry) = LISTENERS.get_ptr(key) {
        // SAFETY: a pointer to a map value returned by the kernel for this key, valid for the
        // program's run; a u32 is read whole.
        let draining = unsafe { *entry } == ENTRY_DRAINING;
        if draining {
            let src_addr = u32::from_be_bytes([at(ip, 12), at(ip, 13), at(ip, 14), at(ip, 15)]);
            let flow = flow_key(src_addr, be16(tcp, 0), be16(tcp, 2));
            if DRAIN_FLOWS.get_ptr(flow).is_none() {
                return (XDP_PASS, Counter::PassDraining);
            }
        }
        return redirect(ctx, Counter::Redirected);
    }
    // Return traffic of sluice's own backend connections (issue 4).
    if BACKEND_FLOWS.get_ptr(key).is_some() {
        return redirect(ctx, Counter::RedirectedBackend);
    }
    (XDP_PASS, Counter::PassNoListener)
}

/// Redirect to this queue's AF_XDP socket; without one, pass to the kernel.
#[inline(always)]
fn redirect(ctx: &XdpContext, ok: Counter) -> (u32, Counter) {
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
