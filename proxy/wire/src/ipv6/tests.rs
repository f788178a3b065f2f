//! Tests for the IPv6 header, its extension headers, and IPv6 frames end to end.
use proptest::prelude::*;

use super::*;
use crate::ip::{self, IpAddr};
use crate::testdata::IPV6_SYN;
use crate::{Checksum, ParsedSegment, emit_frame, ethernet, parse_frame, rst_reply, strategies, tcp};

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

/// The IPv6 packet of the hand-built SYN (after the Ethernet header).
fn syn_packet() -> Vec<u8> {
    IPV6_SYN[14..].to_vec()
}

/// `syn_packet` with extension headers `exts` (each `(next header of this one, bytes)`)
/// inserted after the fixed header; the fixed header's Next Header is `first`.
fn with_extensions(first: u8, exts: &[Vec<u8>]) -> Vec<u8> {
    let mut p = syn_packet();
    let tcp = p.split_off(HEADER_LEN);
    for e in exts {
        p.extend_from_slice(e);
    }
    p.extend_from_slice(&tcp);
    let len = (p.len() - HEADER_LEN) as u16;
    let mut v = Packet::new_unchecked(&mut p[..]);
    v.set_payload_len(len);
    v.set_next_header(first);
    p
}

/// An empty extension header (8 bytes: Next Header, Hdr Ext Len 0, PadN).
fn ext(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

#[test]
fn parse_hand_built_syn() {
    let buf = syn_packet();
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0, 0));
    assert_eq!((p.payload_len(), p.next_header(), p.hop_limit()), (40, 6, 64));
    assert_eq!((p.src_addr(), p.dst_addr()), (CLIENT, SERVER));
    let r = Repr::parse(&p).unwrap();
    assert_eq!(
        r,
        Repr {
            src_addr: CLIENT,
            dst_addr: SERVER,
            next_header: Protocol::Tcp,
            payload_len: 40,
            hop_limit: 64,
            payload_offset: HEADER_LEN,
        }
    );
    // The TCP checksum (computed by the python script) verifies over the RFC 8200 8.1
    // pseudo-header, and only with the right addresses (every 16-bit word counts).
    let t = tcp::Packet::new_checked(p.payload()).unwrap();
    assert_eq!(t.checksum(), 0xd0be);
    assert!(t.verify_checksum(CLIENT.into(), SERVER.into()));
    for word in 0..8 {
        let mut other = SERVER.segments();
        other[word] ^= 0x0100;
        assert!(!t.verify_checksum(CLIENT.into(), Ipv6Addr::from(other).into()), "word {word}");
    }
    let v4 = IpAddr::V4(core::net::Ipv4Addr::new(198, 51, 100, 1));
    assert!(!t.verify_checksum(v4, SERVER.into()));
    assert_eq!(tcp::Repr::parse(&t, v4, SERVER.into(), Checksum::Ignore), Err(crate::Error::Malformed));
}

#[test]
fn hand_built_syn_frame_parses_and_emits_byte_for_byte() {
    let s = parse_frame(&IPV6_SYN, Checksum::Verify).unwrap();
    assert_eq!(s.eth.ethertype, ethernet::EtherType::Ipv6);
    assert_eq!((s.ip.src_addr(), s.ip.dst_addr()), (IpAddr::V6(CLIENT), IpAddr::V6(SERVER)));
    assert_eq!((s.ip.payload_len(), s.ip.header_len(), s.ip.version()), (40, 40, ip::Version::V6));
    assert_eq!((s.tcp.src_port, s.tcp.dst_port, s.tcp.seq_number), (40000, 443, 0x1234_5678));
    assert!(s.tcp.flags.syn() && !s.tcp.flags.ack());
    assert_eq!((s.tcp.max_seg_size, s.tcp.window_scale, s.tcp.window_len), (Some(1440), Some(7), 64800));
    assert!(s.tcp.sack_permitted);
    let mut buf = [0u8; 200];
    assert_eq!(s.frame_len(), IPV6_SYN.len());
    assert_eq!(s.emit(&mut buf), Ok(IPV6_SYN.len()));
    assert_eq!(&buf[..IPV6_SYN.len()], &IPV6_SYN[..]);
    assert!(crate::fuzz::parse_any(&IPV6_SYN));
}

#[test]
fn rst_for_an_ipv6_syn() {
    let seg = parse_frame(&IPV6_SYN, Checksum::Verify).unwrap();
    let rst = rst_reply(&seg).unwrap();
    assert_eq!(rst.eth.ethertype, ethernet::EtherType::Ipv6);
    assert_eq!((rst.ip.src_addr(), rst.ip.dst_addr()), (IpAddr::V6(SERVER), IpAddr::V6(CLIENT)));
    assert_eq!(rst.ip.hop_limit(), 64);
    assert_eq!((rst.tcp.seq_number, rst.tcp.ack_number), (0, 0x1234_5679));
    let mut buf = [0u8; 100];
    let n = rst.emit(&mut buf).unwrap();
    assert_eq!(n, 14 + 40 + 20);
    assert_eq!(parse_frame(&buf[..n], Checksum::Verify), Ok(rst));
}

#[test]
fn flipped_bit_in_addresses_length_next_header_or_tcp_fails() {
    // Version/traffic class/flow label (bytes 0..4) and hop limit (7) are not covered by the
    // TCP checksum; everything else is (RFC 8200 8.1) or is checked.
    for bit in 4 * 8..IPV6_SYN.len() * 8 - 14 * 8 {
        if bit / 8 == 7 {
            continue;
        }
        let mut f = IPV6_SYN;
        f[14 + bit / 8] ^= 1 << (bit % 8);
        assert!(parse_frame(&f, Checksum::Verify).is_err(), "bit {bit}");
    }
    let mut f = IPV6_SYN;
    f[14 + 1] ^= 0x0f; // flow label
    f[14 + 7] = 1; // hop limit
    assert!(parse_frame(&f, Checksum::Verify).is_ok());
}

#[test]
fn length_checks() {
    let buf = syn_packet();
    for len in 0..HEADER_LEN + 40 {
        assert_eq!(Packet::new_checked(&buf[..len]), Err(crate::Error::Truncated), "{len}");
        assert_eq!(parse_frame(&IPV6_SYN[..14 + len], Checksum::Ignore), Err(crate::Error::Truncated));
    }
    // Padding after the payload is not part of it.
    let mut padded = buf.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 40);
    // A Payload Length longer than the buffer.
    let mut b = buf.clone();
    Packet::new_unchecked(&mut b[..]).set_payload_len(41);
    assert_eq!(Packet::new_checked(&b[..]), Err(crate::Error::Truncated));
    // Payload Length 0: a jumbogram (RFC 2675) or nothing at all.
    let mut b = buf.clone();
    Packet::new_unchecked(&mut b[..]).set_payload_len(0);
    assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(crate::Error::Unsupported));
    // Version 4 in an IPv6 header.
    let mut b = buf.clone();
    Packet::new_unchecked(&mut b[..]).set_version(4);
    assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), Err(crate::Error::Malformed));
}

#[test]
fn known_extension_headers_are_skipped() {
    // Hop-by-Hop, Destination Options, Routing (24 bytes: Hdr Ext Len 2), then TCP.
    let mut routing = vec![ext::DESTINATION_OPTIONS, 2];
    routing.resize(24, 0);
    let exts = [ext(ext::ROUTING), routing, ext(6)];
    let p = with_extensions(ext::HOP_BY_HOP, &exts);
    let r = Repr::parse(&Packet::new_checked(&p[..]).unwrap()).unwrap();
    assert_eq!((r.next_header, r.payload_offset, r.payload_len), (Protocol::Tcp, 40 + 40, 40));
    // The frame parses to the same segment as without them; it re-emits without them.
    let mut frame = IPV6_SYN[..14].to_vec();
    frame.extend_from_slice(&p);
    let s = parse_frame(&frame, Checksum::Verify).unwrap();
    assert_eq!(s.tcp, parse_frame(&IPV6_SYN, Checksum::Verify).unwrap().tcp);
    assert!(crate::fuzz::parse_any(&frame));
    assert!(crate::fuzz::ipv6(&p));
    // ICMPv6 after a Destination Options header is an upper layer too.
    let p = with_extensions(ext::DESTINATION_OPTIONS, &[ext(58)]);
    let r = Repr::parse(&Packet::new_checked(&p[..]).unwrap()).unwrap();
    assert_eq!((r.next_header, r.payload_offset), (Protocol::Icmpv6, 48));
}

#[test]
fn extension_header_limits() {
    let parse = |p: &[u8]| Repr::parse(&Packet::new_checked(p).unwrap()).map(|r| r.payload_offset);
    // Eight Destination Options headers are skipped, nine are Malformed.
    let eight: Vec<Vec<u8>> = (0..8).map(|i| ext(if i == 7 { 6 } else { ext::DESTINATION_OPTIONS })).collect();
    assert_eq!(parse(&with_extensions(ext::DESTINATION_OPTIONS, &eight)), Ok(40 + 64));
    let nine: Vec<Vec<u8>> = (0..9).map(|i| ext(if i == 8 { 6 } else { ext::DESTINATION_OPTIONS })).collect();
    assert_eq!(parse(&with_extensions(ext::DESTINATION_OPTIONS, &nine)), Err(crate::Error::Malformed));
    // Hop-by-Hop anywhere but first (RFC 8200 4.1).
    let p = with_extensions(ext::DESTINATION_OPTIONS, &[ext(ext::HOP_BY_HOP), ext(6)]);
    assert_eq!(parse(&p), Err(crate::Error::Malformed));
    // A header whose length runs past the payload.
    let mut long = ext(6);
    long[1] = 200;
    assert_eq!(parse(&with_extensions(ext::ROUTING, &[long])), Err(crate::Error::Malformed));
    // A chain that ends inside the payload with no room for the header's first two bytes.
    let p = with_extensions(ext::ROUTING, &[]);
    let mut p = p[..HEADER_LEN + 1].to_vec();
    Packet::new_unchecked(&mut p[..]).set_payload_len(1);
    assert_eq!(parse(&p), Err(crate::Error::Malformed));
    // Fragments and other upper layers.
    assert_eq!(parse(&with_extensions(ext::FRAGMENT, &[ext(6)])), Err(crate::Error::Fragmented));
    let p = with_extensions(ext::HOP_BY_HOP, &[ext(ext::FRAGMENT), ext(6)]);
    assert_eq!(parse(&p), Err(crate::Error::Fragmented));
    for other in [17u8, 50, 51, 59, 135, 255] {
        assert_eq!(parse(&with_extensions(other, &[])), Err(crate::Error::Unsupported), "{other}");
    }
    // parse_frame does not take ICMPv6 for TCP.
    let mut frame = IPV6_SYN[..14].to_vec();
    frame.extend_from_slice(&with_extensions(58, &[]));
    assert_eq!(parse_frame(&frame, Checksum::Ignore), Err(crate::Error::Unsupported));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_ipv6_emit_parse_roundtrip(r in strategies::ipv6_repr(), payload_len in 1usize..2000) {
        let r = Repr { payload_len, ..r };
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf[HEADER_LEN] = 0x45; // anything: the upper layer is not parsed here
        let p = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!((p.traffic_class(), p.flow_label()), (0, 0));
        prop_assert_eq!(Repr::parse(&p), Ok(r));
        prop_assert!(crate::fuzz::ipv6(&buf));
    }

    #[test]
    fn prop_ipv6_frame_roundtrip(
        eth in strategies::eth_repr(),
        ip in strategies::ipv6_repr(),
        t in strategies::tcp_repr(1400),
    ) {
        let tcp = t.repr();
        let ip = ip::Repr::V6(ip);
        let mut buf = vec![0u8; 1600];
        let n = emit_frame(&mut buf, &eth, &ip, &tcp).unwrap();
        let s = parse_frame(&buf[..n], Checksum::Verify).unwrap();
        let expect = ParsedSegment {
            eth: ethernet::Repr { ethertype: ethernet::EtherType::Ipv6, ..eth },
            ip: ip.with_payload(Protocol::Tcp, tcp.buffer_len()),
            tcp: tcp.normalized(),
        };
        prop_assert_eq!(s, expect);
        prop_assert!(crate::fuzz::parse_any(&buf[..n]));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        crate::fuzz::ipv6(&data);
        let mut frame = IPV6_SYN[..14].to_vec();
        frame.extend_from_slice(&data);
        crate::fuzz::parse_any(&frame);
    }

    #[test]
    fn prop_mutated_extension_chains_never_panic(
        first in prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(6), any::<u8>()],
        exts in proptest::collection::vec((prop_oneof![Just(0u8), Just(43), Just(60), Just(6), any::<u8>()], 0u8..4), 0..12),
        payload_len in any::<u16>(),
        cut in 0usize..300,
    ) {
        let chain: Vec<Vec<u8>> = exts.iter().map(|&(next, units)| {
            let mut e = ext(next);
            e[1] = units;
            e
        }).collect();
        let mut p = with_extensions(first, &chain);
        if payload_len % 3 == 0 {
            Packet::new_unchecked(&mut p[..]).set_payload_len(payload_len);
        }
        p.truncate(cut.max(HEADER_LEN));
        crate::fuzz::ipv6(&p);
        let mut frame = IPV6_SYN[..14].to_vec();
        frame.extend_from_slice(&p);
        crate::fuzz::parse_any(&frame);
    }
}
