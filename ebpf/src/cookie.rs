//! SYN cookies in XDP: while the worker of an RX queue says its SYN queue is under pressure
//! (`SYN_PRESSURE[rx_queue]`, `sluice_ebpf::PRESSURE_SYNS`), a SYN to an active listener is
//! answered here with a SYN-ACK built in place over it (XDP_TX) whose sequence number is the
//! kernel's SYN cookie (`bpf_tcp_raw_gen_syncookie_ipv4/ipv6`, Linux 6.0+), and a bare ACK to an
//! active listener is checked with the kernel (`bpf_tcp_raw_check_syncookie_ipv4/ipv6`); one that
//! passes gets a mark in its metadata (`bpf_xdp_adjust_meta`, `sluice_ebpf::COOKIE_META_LEN`
//! bytes: the per-boot secret mark user space wrote in `COOKIE_CONFIG`), which user space trusts
//! instead of checking the cookie itself (it cannot: the secret is the kernel's).
//!
//! The SYN-ACK follows the kernel's selftest `xdp_synproxy_kern.c`: MACs, addresses and ports
//! swapped, our MSS, and when the peer sent timestamps a TSval whose low bits carry its window
//! shift, SACK-permitted and the cookie's MSS index (`sluice_ebpf::ts_cookie_options`, as Linux's
//! `cookie_init_timestamp`), with window scale and SACK-permitted offered. Without timestamps
//! the SYN-ACK offers neither (nothing would remember them). Full IPv4 and TCP checksums.
//!
//! What it is not: a validator of the SYN (its checksum is not checked: a corrupt SYN gets a
//! SYN-ACK the peer ignores) or of anything but the cookie. IPv4 with options and IPv6 with
//! extension headers are left to user space (its own cookies).

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action::XDP_TX},
    helpers::generated as h,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use sluice_ebpf::{
    COOKIE_CONFIG_LEN, COOKIE_FLAG_SACK, COOKIE_FLAG_TIMESTAMPS, COOKIE_FLAGS, COOKIE_FLOWS_INCOMPLETE, COOKIE_MARK_HI,
    COOKIE_MARK_LO, COOKIE_META_LEN, COOKIE_MSS_V4, COOKIE_MSS_V6, COOKIE_NO_WSCALE, COOKIE_WINDOW, COOKIE_WSCALE,
    FAMILY_IPV6, KERNEL_COOKIE_MSS_V4, KERNEL_COOKIE_MSS_V6, PRESSURE_OFF, XSKS_MAX, ts_cookie_options,
    ts_cookie_tsval,
};

use crate::xdp::{ETH_HLEN, at, bytes};

/// What our SYN-ACKs offer and the mark (`sluice_ebpf::MAP_COOKIE_CONFIG`).
#[map]
static COOKIE_CONFIG: Array<u32> = Array::with_max_entries(COOKIE_CONFIG_LEN, 0);

/// SYN-queue pressure per RX queue (`sluice_ebpf::MAP_SYN_PRESSURE`).
#[map]
static SYN_PRESSURE: Array<u32> = Array::with_max_entries(XSKS_MAX, 0);

/// Buffers of `answer`, which would not fit in the 512-byte BPF stack.
#[repr(C)]
struct Scratch {
    /// The SYN's TCP header.
    th: [u8; 64],
    /// Our TCP header.
    out: [u8; SYNACK_HLEN_TS],
    /// Our address, then the peer's (4 or 16 bytes each).
    addrs: [u8; 32],
    /// Our IP header.
    iph: [u8; 40],
    /// The peer's MAC, then ours.
    macs: [u8; 12],
    /// The SYN's options, as found: window shift (0xff: none), SACK-permitted (0/1), timestamps
    /// (0/1) and its TSval. In map memory, not registers: the verifier then follows one path per
    /// option, not one per combination.
    peer_ws: u8,
    peer_sack: u8,
    peer_ts: u8,
    peer_tsval: [u8; 4],
    /// Where the next option starts (0: the options ended).
    next: u16,
}

/// Reads a value of the scratch map as the verifier must: unknown (volatile, so LLVM keeps no
/// copy in a register that the verifier would follow path by path).
#[inline(always)]
fn vget<T: Copy>(v: &T) -> T {
    // SAFETY: `v` is a valid reference.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn vset<T: Copy>(v: &mut T, x: T) {
    // SAFETY: `v` is a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(v, x) }
}

/// One [`Scratch`] per CPU (XDP does not nest on a CPU).
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The longest TCP header (data offset 15).
const TCP_MAX_HLEN: usize = 60;
/// Our SYN-ACK's TCP header: 20 bytes, MSS (4), then with timestamps SACK-permitted or two NOPs
/// and the timestamp option (12) and window scale or four NOPs (4).
const SYNACK_HLEN_TS: usize = 40;
const SYNACK_HLEN: usize = 24;

#[inline(always)]
fn config(i: u32) -> u32 {
    COOKIE_CONFIG.get(i).copied().unwrap_or(0)
}

/// Whether the map of sluice's flows may miss one (it was full): then ACKs whose cookie fails
/// go to user space rather than being dropped.
#[inline(always)]
pub(crate) fn flows_incomplete() -> bool {
    config(COOKIE_FLOWS_INCOMPLETE) != 0
}

/// The pressure level of this RX queue's worker.
#[inline(always)]
pub(crate) fn pressure(ctx: &XdpContext) -> u32 {
    SYN_PRESSURE.get(ctx.rx_queue_index()).copied().unwrap_or(PRESSURE_OFF)
}

/// Answers the SYN (IPv4 without options, or IPv6 without extension headers) with a cookie
/// SYN-ACK written over it: `Some(XDP_TX)`, or `None` when it cannot (the frame then goes to
/// user space as it is).
#[inline(always)]
pub(crate) fn answer_syn(ctx: &XdpContext, v6: bool) -> Option<u32> {
    if v6 { answer::<true>(ctx, ETH_HLEN + 40) } else { answer::<false>(ctx, ETH_HLEN + 20) }
}

/// Whether the kernel validates the cookie of the bare ACK at `tcp_offset`; if so, the frame
/// carries the mark in its metadata.
#[inline(always)]
pub(crate) fn check_ack(ctx: &XdpContext, family: u8, tcp_offset: usize) -> bool {
    if family == FAMILY_IPV6 { check::<true>(ctx, tcp_offset) } else { check::<false>(ctx, tcp_offset) }
}

/// Writes `v` at byte `i` of a range returned by `bytes`.
#[inline(always)]
fn put(p: *const u8, i: usize, v: u8) {
    // SAFETY: every call site writes below the length `bytes` checked against `data_end`; the
    // verifier rejects the program otherwise. Packet data is writable in XDP.
    unsafe { *(p as *mut u8).add(i) = v };
}

/// The frame's length, as a number: computed from the two packet pointers first (the verifier
/// allows `data_end - data`, not arithmetic on `data_end` that LLVM would otherwise fold it into).
#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    core::hint::black_box(ctx.data_end() - ctx.data())
}

#[inline(always)]
fn sum16(b: &[u8], mut sum: u32) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

// A BPF subprogram of its own: its buffers would not fit in the caller's 512-byte stack frame.
#[inline(never)]
fn answer<const V6: bool>(ctx: &XdpContext, tcp_offset: usize) -> Option<u32> {
    let ip_len: usize = if V6 { 40 } else { 20 };
    let toff = ETH_HLEN + ip_len;
    // IPv4 options and IPv6 extension headers: user space.
    if tcp_offset != toff {
        return None;
    }
    // The helper reads the whole TCP header (data offset * 4 bytes), which the verifier can only
    // bound by 60: copy what the frame has of those 60 bytes to the map (growing the frame
    // instead fails where it has little tailroom, as on veth).
    let p = bytes(ctx, 0, toff + 20)?;
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program's run; XDP does not nest
    // on a CPU, so nothing else uses it meanwhile.
    let sc = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    sc.th = [0; 64];
    sc.out = [0; SYNACK_HLEN_TS];
    sc.iph = [0; 40];
    let mut i = 0;
    while i < TCP_MAX_HLEN {
        if let Some(b) = bytes(ctx, toff + i, 1) {
            sc.th[i] = at(b, 0);
        }
        i += 1;
    }
    let th = &mut sc.th;
    let doff = usize::from(th[12] >> 4) * 4;
    if doff < 20 {
        return None;
    }
    // SAFETY: the IP header lies inside the frame (`bytes` above) and the TCP header is a stack
    // copy of `doff` <= 60 bytes; the helpers only read them.
    let value = unsafe {
        if V6 {
            h::bpf_tcp_raw_gen_syncookie_ipv6(
                p.add(ETH_HLEN) as *mut ipv6hdr,
                th.as_mut_ptr() as *mut tcphdr,
                doff as u32,
            )
        } else {
            h::bpf_tcp_raw_gen_syncookie_ipv4(
                p.add(ETH_HLEN) as *mut iphdr,
                th.as_mut_ptr() as *mut tcphdr,
                doff as u32,
            )
        }
    };
    if value < 0 {
        return None;
    }
    let cookie = value as u32;
    let cookie_mss = (value >> 32) as u16;
    let table = if V6 { KERNEL_COOKIE_MSS_V6 } else { KERNEL_COOKIE_MSS_V4 };
    let mut mss_index = 0u32;
    let mut k = 0;
    while k < 4 {
        if table[k] == cookie_mss {
            mss_index = k as u32;
        }
        k += 1;
    }

    // The SYN's options (RFC 9293 3.1): window scale, SACK-permitted, timestamps.
    // One pass over the option bytes with the position of the next option in map memory: each
    // byte position is one state for the verifier, however the options are laid out.
    vset(&mut sc.peer_ws, 0xff);
    vset(&mut sc.peer_sack, 0);
    vset(&mut sc.peer_ts, 0);
    vset(&mut sc.next, 20);
    let mut i = 20usize;
    while i < TCP_MAX_HLEN {
        if i < doff && usize::from(vget(&sc.next)) == i {
            let kind = sc.th[i];
            let olen = usize::from(sc.th[(i + 1) & 63]);
            if kind == 0 || (kind != 1 && olen < 2) {
                vset(&mut sc.next, 0);
            } else if kind == 1 {
                vset(&mut sc.next, (i + 1) as u16);
            } else {
                if kind == 3 && olen == 3 {
                    vset(&mut sc.peer_ws, sc.th[(i + 2) & 63]);
                } else if kind == 4 && olen == 2 {
                    vset(&mut sc.peer_sack, 1);
                } else if kind == 8 && olen == 10 {
                    vset(&mut sc.peer_ts, 1);
                    let tsval = [sc.th[(i + 2) & 63], sc.th[(i + 3) & 63], sc.th[(i + 4) & 63], sc.th[(i + 5) & 63]];
                    vset(&mut sc.peer_tsval, tsval);
                }
                vset(&mut sc.next, (i + olen) as u16);
            }
        }
        i += 1;
    }
    let peer_ws = match vget(&sc.peer_ws) {
        0xff => None,
        ws => Some(ws),
    };
    let peer_sack = vget(&sc.peer_sack) == 1;
    let peer_ts = if vget(&sc.peer_ts) == 1 { Some(vget(&sc.peer_tsval)) } else { None };
    let Scratch { th, out, addrs, iph, macs, .. } = sc;

    let flags = config(COOKIE_FLAGS);
    let our_ws = config(COOKIE_WSCALE);
    let our_mss = config(if V6 { COOKIE_MSS_V6 } else { COOKIE_MSS_V4 }) as u16;
    let window = config(COOKIE_WINDOW).min(65_535) as u16;
    let ts_on = flags & COOKIE_FLAG_TIMESTAMPS != 0 && peer_ts.is_some();
    let ws_on = ts_on && our_ws != COOKIE_NO_WSCALE && peer_ws.is_some();
    let sack_on = ts_on && flags & COOKIE_FLAG_SACK != 0 && peer_sack;
    let hlen = if ts_on { SYNACK_HLEN_TS } else { SYNACK_HLEN };

    // Our TCP header (RFC 9293 3.1), in the stack first.
    out[0] = th[2];
    out[1] = th[3];
    out[2] = th[0];
    out[3] = th[1];
    out[4..8].copy_from_slice(&cookie.to_be_bytes());
    let ack = u32::from_be_bytes([th[4], th[5], th[6], th[7]]).wrapping_add(1);
    out[8..12].copy_from_slice(&ack.to_be_bytes());
    out[12] = ((hlen / 4) as u8) << 4;
    out[13] = 0x12; // SYN, ACK
    out[14..16].copy_from_slice(&window.to_be_bytes());
    out[20] = 2; // MSS
    out[21] = 4;
    out[22..24].copy_from_slice(&our_mss.to_be_bytes());
    if let Some(tsecr) = peer_ts.filter(|_| ts_on) {
        let options = ts_cookie_options(if ws_on { peer_ws } else { None }, sack_on, mss_index);
        // SAFETY: a helper without arguments.
        let now_ms = (unsafe { h::bpf_ktime_get_ns() } / 1_000_000) as u32;
        let tsval = ts_cookie_tsval(now_ms, options);
        let sack_or_nops: [u8; 4] = if sack_on { [4, 2, 8, 10] } else { [1, 1, 8, 10] };
        out[24..28].copy_from_slice(&sack_or_nops);
        out[28..32].copy_from_slice(&tsval.to_be_bytes());
        out[32..36].copy_from_slice(&tsecr);
        let ws_or_nops: [u8; 4] = if ws_on { [1, 3, 3, our_ws as u8] } else { [1, 1, 1, 1] };
        out[36..40].copy_from_slice(&ws_or_nops);
    }

    // Addresses swapped; the pseudo-header sum does not care about their order.
    let addr_len = if V6 { 16 } else { 4 };
    let src_at = ETH_HLEN + if V6 { 8 } else { 12 };
    let mut j = 0;
    while j < addr_len {
        addrs[j] = at(p, src_at + addr_len + j); // our address: the SYN's destination
        addrs[addr_len + j] = at(p, src_at + j);
        j += 1;
    }
    let mut sum = sum16(&addrs[..2 * addr_len], 6 + hlen as u32);
    sum = sum16(&out[..], sum);
    out[16..18].copy_from_slice(&fold(sum).to_be_bytes());
    if V6 {
        iph[0] = 0x60;
        iph[4..6].copy_from_slice(&(hlen as u16).to_be_bytes());
        iph[6] = 6;
        iph[7] = 64;
        iph[8..40].copy_from_slice(&addrs[..]);
    } else {
        iph[0] = 0x45;
        iph[2..4].copy_from_slice(&((20 + hlen) as u16).to_be_bytes());
        iph[6] = 0x40; // DF
        iph[8] = 64;
        iph[9] = 6;
        iph[12..20].copy_from_slice(&addrs[..8]);
        let c = fold(sum16(&iph[..20], 0));
        iph[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let mut m = 0;
    while m < 6 {
        macs[m] = at(p, 6 + m);
        macs[6 + m] = at(p, m);
        m += 1;
    }

    // The frame becomes the SYN-ACK.
    let total = toff + hlen;
    let cur = frame_len(ctx);
    // SAFETY: as above; shrinking only moves data_end.
    if unsafe { h::bpf_xdp_adjust_tail(ctx.ctx, total as i32 - cur as i32) } != 0 {
        return None;
    }
    let q = bytes(ctx, 0, toff + SYNACK_HLEN)?;
    let mut b = 0;
    while b < 12 {
        put(q, b, macs[b]);
        b += 1;
    }
    let mut b = 0;
    while b < ip_len {
        put(q, ETH_HLEN + b, iph[b]);
        b += 1;
    }
    let mut b = 0;
    while b < SYNACK_HLEN {
        put(q, toff + b, out[b]);
        b += 1;
    }
    if ts_on {
        let q = bytes(ctx, 0, toff + SYNACK_HLEN_TS)?;
        let mut b = SYNACK_HLEN;
        while b < SYNACK_HLEN_TS {
            put(q, toff + b, out[b]);
            b += 1;
        }
    }
    Some(XDP_TX)
}

#[inline(never)]
fn check<const V6: bool>(ctx: &XdpContext, tcp_offset: usize) -> bool {
    let toff = ETH_HLEN + if V6 { 40 } else { 20 };
    if tcp_offset != toff {
        return false;
    }
    let Some(p) = bytes(ctx, 0, toff + 20) else {
        return false;
    };
    // SAFETY: both headers lie inside the frame (`bytes` above); the helpers only read them.
    let r = unsafe {
        if V6 {
            h::bpf_tcp_raw_check_syncookie_ipv6(p.add(ETH_HLEN) as *mut ipv6hdr, p.add(toff) as *mut tcphdr)
        } else {
            h::bpf_tcp_raw_check_syncookie_ipv4(p.add(ETH_HLEN) as *mut iphdr, p.add(toff) as *mut tcphdr)
        }
    };
    if r != 0 {
        return false;
    }
    // SAFETY: the helper takes the program's own context; it moves data_meta only.
    if unsafe { h::bpf_xdp_adjust_meta(ctx.ctx, -(COOKIE_META_LEN as i32)) } != 0 {
        return false;
    }
    let meta = ctx.metadata();
    if meta + COOKIE_META_LEN > ctx.data() {
        return false;
    }
    let mark = (u64::from(config(COOKIE_MARK_HI)) << 32) | u64::from(config(COOKIE_MARK_LO));
    // SAFETY: the metadata area [meta, meta + 8) was just reserved and checked against data.
    unsafe { core::ptr::write_unaligned(meta as *mut u64, mark.to_le()) };
    true
}
