//! Bodies of the fuzz targets (`proxy/fuzz/fuzz_targets/*.rs`), public so that the proptests
//! of this crate run exactly the same code on stable.
//!
//! Each function parses arbitrary bytes (checksums ignored, to reach deeper), and when that
//! succeeds re-emits the result, re-parses it with checksums verified and asserts that the
//! meaning survived (modulo what emit normalizes: IPv4 options, IPv6 extension headers and
//! unknown TCP options dropped, SACK blocks that do not fit, window scale clamped). A panic is
//! a bug: either a parser panicked on input, or parse/emit disagree. Each returns whether the
//! input parsed.

use crate::ip::{self, Protocol};
use crate::{Checksum, Error, ethernet, icmp, ipv4, ipv6, tcp};
use crate::{
    ParsedSegment, emit_frame, emit_icmp_frame, emit_ip_tcp_in_place, parse_frame, parse_icmp_frame, rst_reply,
};

/// Big enough for any IPv4 or IPv6 packet plus an Ethernet header.
const BUF_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + 65536;

/// The addresses the standalone TCP and ICMP targets use for the pseudo-header.
const SRC: ipv4::Ipv4Addr = ipv4::Ipv4Addr::new(198, 51, 100, 1);
const DST: ipv4::Ipv4Addr = ipv4::Ipv4Addr::new(198, 51, 100, 2);
const SRC6: ipv6::Ipv6Addr = ipv6::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const DST6: ipv6::Ipv6Addr = ipv6::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

/// `parse_frame` on arbitrary bytes, then emit/re-parse of the result, of its `rst_reply`,
/// and of the in-place emitter; `parse_icmp_frame` likewise.
pub fn parse_any(data: &[u8]) -> bool {
    let icmp = icmp_frame(data);
    let verified = parse_frame(data, Checksum::Verify);
    let Ok(seg) = parse_frame(data, Checksum::Ignore) else {
        assert!(verified.is_err(), "verifying checksums made a frame parse");
        return icmp;
    };
    assert!(!icmp, "a frame parsed as TCP and as ICMP");
    if let Ok(v) = verified {
        assert_eq!(v, seg);
    }
    assert_eq!(seg.ip.payload_len(), seg.tcp.payload.len() + tcp_header_len_in(data, &seg.ip));

    let mut buf = [0u8; BUF_LEN];
    roundtrip_frame(&seg, &mut buf);
    if let Some(rst) = rst_reply(&seg) {
        assert!(rst.tcp.flags.rst());
        assert_eq!(rst.ip.payload_len(), rst.tcp.buffer_len());
        assert_eq!(rst.ip.version(), seg.ip.version());
        roundtrip_frame(&rst, &mut buf);
    } else {
        assert!(seg.tcp.flags.rst());
    }

    // The in-place emitter: payload first, headers after.
    let tcp_repr = seg.tcp.normalized();
    let at = seg.ip.header_len() + tcp_repr.header_len();
    let n = tcp_repr.payload.len();
    if let Some(dst) = buf.get_mut(at..at + n) {
        dst.copy_from_slice(tcp_repr.payload);
        match emit_ip_tcp_in_place(&mut buf, &seg.ip, &tcp_repr, n) {
            Ok(len) => {
                let ethertype = seg.ip.version().ethertype();
                let (ip, upper) = ip::Repr::parse(ethertype, &buf[..len], Checksum::Verify).expect("emitted ip");
                assert_eq!(ip, seg.ip.with_payload(Protocol::Tcp, len - seg.ip.header_len()));
                let t = tcp::Packet::new_checked(upper).expect("emitted tcp");
                let t = tcp::Repr::parse(&t, ip.src_addr(), ip.dst_addr(), Checksum::Verify).expect("emitted tcp repr");
                assert_eq!(t, tcp_repr);
            }
            Err(e) => assert_eq!(e, Error::Malformed, "only oversize may fail"),
        }
    }
    true
}

/// The TCP header length as received (the frame parsed, so the offsets are valid).
fn tcp_header_len_in(frame: &[u8], ip: &ip::Repr) -> usize {
    let ip_header_len = match ip {
        ip::Repr::V4(_) => usize::from(frame[ethernet::HEADER_LEN] & 0x0f) * 4,
        ip::Repr::V6(r) => r.payload_offset,
    };
    usize::from(frame[ethernet::HEADER_LEN + ip_header_len + 12] >> 4) * 4
}

fn roundtrip_frame(seg: &ParsedSegment<'_>, buf: &mut [u8]) {
    match emit_frame(buf, &seg.eth, &seg.ip, &seg.tcp) {
        Ok(len) => {
            let again = parse_frame(&buf[..len], Checksum::Verify).expect("emitted frame parses");
            let tcp = seg.tcp.normalized();
            assert_eq!(again.eth, seg.eth);
            assert_eq!(again.ip, seg.ip.with_payload(Protocol::Tcp, tcp.buffer_len()));
            assert_eq!(again.tcp, tcp);
            assert_eq!(len, ethernet::HEADER_LEN + seg.ip.header_len() + tcp.buffer_len());
        }
        // Re-encoding options may grow the header past what the IP header can describe.
        Err(e) => assert_eq!(e, Error::Malformed, "only oversize may fail"),
    }
}

/// `parse_icmp_frame` on arbitrary bytes, then emit/re-parse (the quote re-emitted minimal).
fn icmp_frame(data: &[u8]) -> bool {
    let verified = parse_icmp_frame(data, Checksum::Verify);
    let Ok(m) = parse_icmp_frame(data, Checksum::Ignore) else {
        assert!(verified.is_err(), "verifying checksums made an ICMP frame parse");
        return false;
    };
    let mut buf = [0u8; 256];
    match emit_icmp_frame(&mut buf, &m.eth, &m.ip, &m.icmp) {
        Ok(len) => {
            let again = parse_icmp_frame(&buf[..len], Checksum::Verify).expect("emitted ICMP frame parses");
            assert_eq!(again.icmp, m.icmp);
            assert_eq!(again.ip, m.ip.with_payload(m.icmp.protocol(), m.icmp.buffer_len()));
        }
        // The quoted addresses may be of the other family than the message's.
        Err(e) => assert_eq!(e, Error::Malformed),
    }
    true
}

/// Ethernet header parse, emit, re-parse.
pub fn ethernet(data: &[u8]) -> bool {
    let Ok(frame) = ethernet::Frame::new_checked(data) else {
        assert!(data.len() < ethernet::HEADER_LEN);
        return false;
    };
    let repr = ethernet::Repr::parse(&frame).expect("checked frame parses");
    let mut buf = [0u8; ethernet::HEADER_LEN];
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]));
    assert_eq!(&buf[..], &data[..ethernet::HEADER_LEN]);
    assert_eq!(frame.payload(), &data[ethernet::HEADER_LEN..]);
    true
}

/// IPv4 packet parse, emit, re-parse (checksum verified after emit).
pub fn ipv4(data: &[u8]) -> bool {
    let Ok(packet) = ipv4::Packet::new_checked(data) else {
        return false;
    };
    // Every accessor is safe on a checked packet.
    let _ = (packet.options(), packet.payload(), packet.verify_checksum(), packet.dscp());
    let verified = ipv4::Repr::parse(&packet, Checksum::Verify);
    let Ok(repr) = ipv4::Repr::parse(&packet, Checksum::Ignore) else {
        assert!(verified.is_err());
        return false;
    };
    assert_eq!(repr.payload_len, packet.payload().len());
    let mut buf = [0u8; BUF_LEN];
    let len = repr.buffer_len();
    let out = &mut buf[..len];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut *out), Checksum::Verify);
    out[ipv4::HEADER_LEN..].copy_from_slice(packet.payload());
    let again = ipv4::Packet::new_checked(&buf[..len]).expect("emitted ipv4");
    assert_eq!(ipv4::Repr::parse(&again, Checksum::Verify), Ok(repr));
    assert_eq!(again.payload(), packet.payload());
    true
}

/// TCP segment parse (addresses 198.51.100.1 -> .2), emit, re-parse (checksum verified).
pub fn tcp(data: &[u8]) -> bool {
    // The option walker alone, over whatever the bytes are.
    let mut opts = data.get(tcp::HEADER_LEN..).unwrap_or(&[]);
    while let Ok((opt, rest)) = tcp::TcpOption::parse(opts) {
        if rest.len() >= opts.len() || opt == tcp::TcpOption::EndOfList {
            break;
        }
        opts = rest;
    }

    let Ok(packet) = tcp::Packet::new_checked(data) else {
        return false;
    };
    let _ = (packet.options(), packet.payload(), packet.urgent_at(), packet.checksum());
    let verified = tcp::Repr::parse(&packet, SRC.into(), DST.into(), Checksum::Verify);
    let Ok(repr) = tcp::Repr::parse(&packet, SRC.into(), DST.into(), Checksum::Ignore) else {
        assert!(verified.is_err());
        return false;
    };
    assert!(repr.window_scale.is_none_or(|s| s <= tcp::MAX_WINDOW_SCALE));
    let mut buf = [0u8; BUF_LEN];
    let len = repr.buffer_len();
    assert!(repr.header_len() % 4 == 0 && repr.header_len() <= tcp::MAX_HEADER_LEN);
    let Some(out) = buf.get_mut(..len) else {
        return true;
    };
    repr.emit(&mut tcp::Packet::new_unchecked(&mut *out), SRC.into(), DST.into(), Checksum::Verify)
        .expect("one family");
    let again = tcp::Packet::new_checked(&buf[..len]).expect("emitted tcp");
    assert_eq!(tcp::Repr::parse(&again, SRC.into(), DST.into(), Checksum::Verify), Ok(repr.normalized()));
    true
}

/// IPv6 packet parse (extension headers walked), emit, re-parse; and the extension-header
/// walker alone over the bytes.
pub fn ipv6(data: &[u8]) -> bool {
    if let Some((&next, rest)) = data.split_first()
        && let Ok((_, off)) = ipv6::upper_layer(next, rest)
    {
        assert!(off <= rest.len());
    }
    let Ok(packet) = ipv6::Packet::new_checked(data) else {
        return false;
    };
    let _ = (packet.payload(), packet.traffic_class(), packet.flow_label(), packet.hop_limit());
    let Ok(repr) = ipv6::Repr::parse(&packet) else {
        return false;
    };
    let ext_len = repr.payload_offset - ipv6::HEADER_LEN;
    assert_eq!(ext_len + repr.payload_len, packet.payload().len());
    assert!(matches!(repr.next_header, Protocol::Tcp | Protocol::Icmpv6));
    let upper = &packet.payload()[ext_len..];
    let (agnostic, upper_again) =
        ip::Repr::parse(ethernet::EtherType::Ipv6, data, Checksum::Verify).expect("the ip layer agrees");
    assert_eq!((agnostic, upper_again), (ip::Repr::V6(repr), upper));
    let mut buf = [0u8; BUF_LEN];
    let len = repr.buffer_len();
    let out = &mut buf[..len];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut *out));
    out[ipv6::HEADER_LEN..].copy_from_slice(upper);
    let again = ipv6::Packet::new_checked(&buf[..len]).expect("emitted ipv6");
    assert_eq!(ipv6::Repr::parse(&again), Ok(ipv6::Repr { payload_offset: ipv6::HEADER_LEN, ..repr }));
    true
}

/// ICMP path-MTU message parse (as ICMPv4, and as ICMPv6 between 2001:db8:100::1 and ::2),
/// emit, re-parse (checksum verified).
pub fn icmp(data: &[u8]) -> bool {
    let v4 = icmp::Repr::parse_v4(data, Checksum::Ignore);
    let v6 = icmp::Repr::parse_v6(data, SRC6, DST6, Checksum::Ignore);
    let mut parsed = false;
    for (r, src, dst) in [(v4, SRC.into(), DST.into()), (v6, SRC6.into(), DST6.into())] {
        let Ok(r) = r else { continue };
        parsed = true;
        let mut buf = [0u8; 128];
        match r.emit(&mut buf, src, dst) {
            Ok(len) => {
                assert_eq!(len, r.buffer_len());
                let again = match r.version() {
                    ip::Version::V4 => icmp::Repr::parse_v4(&buf[..len], Checksum::Verify),
                    ip::Version::V6 => icmp::Repr::parse_v6(&buf[..len], SRC6, DST6, Checksum::Verify),
                };
                assert_eq!(again, Ok(r));
            }
            // A quote of the other family than the message's.
            Err(e) => assert_eq!(e, Error::Malformed),
        }
    }
    parsed
}

/// A Linux-style SYN frame (198.51.100.1:40000 -> 198.51.100.2:443, MSS 1460, SACK-permitted,
/// timestamps, window scale 7), valid checksums: a seed for fuzzing and a doc example.
pub fn example_syn() -> [u8; 74] {
    let mut buf = [0u8; 74];
    let tcp = tcp::Repr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 0x1234_5678,
        ack_number: 0,
        flags: tcp::Flags::SYN,
        window_len: 64240,
        max_seg_size: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        sack_blocks: [None; 4],
        timestamp: Some(tcp::Timestamp { tsval: 0x0a0b_0c0d, tsecr: 0 }),
        payload: &[],
    };
    let eth = ethernet::Repr {
        src_addr: ethernet::Address([2, 0, 0, 0, 0, 1]),
        dst_addr: ethernet::Address([2, 0, 0, 0, 0, 2]),
        ethertype: ethernet::EtherType::Ipv4,
    };
    let ip = ip::Repr::V4(ipv4::Repr {
        src_addr: SRC,
        dst_addr: DST,
        protocol: Protocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    });
    let n = emit_frame(&mut buf, &eth, &ip, &tcp);
    debug_assert_eq!(n, Ok(buf.len()));
    buf
}
