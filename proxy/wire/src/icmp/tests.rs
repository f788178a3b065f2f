//! Tests for the path-MTU messages, against messages built by an independent script.
use proptest::prelude::*;

use super::*;
use crate::ethernet::{self, Address};
use crate::ipv4::Ipv4Addr;
use crate::ipv6::Ipv6Addr;
use crate::testdata::{ICMPV4_FRAG_NEEDED, ICMPV6_PTB};
use crate::{emit_icmp_frame, parse_frame, parse_icmp_frame, strategies};

const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xfe);
const US6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const US4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

fn v6() -> Repr {
    Repr {
        mtu: 1280,
        quoted: Quoted {
            src_addr: US6.into(),
            dst_addr: PEER6.into(),
            src_port: 443,
            dst_port: 40000,
            seq_number: 0xdead_beef,
        },
    }
}

fn v4() -> Repr {
    Repr {
        mtu: 1400,
        quoted: Quoted {
            src_addr: US4.into(),
            dst_addr: PEER4.into(),
            src_port: 443,
            dst_port: 40000,
            seq_number: 0xdead_beef,
        },
    }
}

#[test]
fn packet_too_big_parses_and_emits_byte_for_byte() {
    assert_eq!(Repr::parse_v6(&ICMPV6_PTB, ROUTER6, US6, Checksum::Verify), Ok(v6()));
    // The checksum covers the pseudo-header: another destination fails it.
    assert_eq!(Repr::parse_v6(&ICMPV6_PTB, ROUTER6, PEER6, Checksum::Verify), Err(Error::Checksum));
    let mut buf = [0u8; 100];
    assert_eq!(v6().emit(&mut buf, ROUTER6.into(), US6.into()), Ok(ICMPV6_PTB.len()));
    assert_eq!(&buf[..ICMPV6_PTB.len()], &ICMPV6_PTB[..]);
    assert_eq!(v6().version(), Version::V6);
}

#[test]
fn fragmentation_needed_parses_and_emits_byte_for_byte() {
    assert_eq!(Repr::parse_v4(&ICMPV4_FRAG_NEEDED, Checksum::Verify), Ok(v4()));
    let mut buf = [0u8; 100];
    assert_eq!(v4().emit(&mut buf, ROUTER4.into(), US4.into()), Ok(ICMPV4_FRAG_NEEDED.len()));
    assert_eq!(&buf[..ICMPV4_FRAG_NEEDED.len()], &ICMPV4_FRAG_NEEDED[..]);
    // An ICMPv4 MTU is 16 bits.
    let big = Repr { mtu: 70_000, ..v4() };
    assert_eq!(big.emit(&mut buf, ROUTER4.into(), US4.into()), Err(Error::Malformed));
    // Mixed families.
    assert_eq!(v4().emit(&mut buf, ROUTER6.into(), US6.into()), Err(Error::Malformed));
}

#[test]
fn flipped_bits_fail_the_checksum() {
    for (msg, v6_msg) in [(&ICMPV4_FRAG_NEEDED[..], false), (&ICMPV6_PTB[..], true)] {
        for bit in 0..msg.len() * 8 {
            let mut m = msg.to_vec();
            m[bit / 8] ^= 1 << (bit % 8);
            let r = if v6_msg {
                Repr::parse_v6(&m, ROUTER6, US6, Checksum::Verify)
            } else {
                Repr::parse_v4(&m, Checksum::Verify)
            };
            assert!(r.is_err(), "bit {bit}");
        }
    }
}

#[test]
fn other_messages_and_short_quotes() {
    // Destination Unreachable, port unreachable (code 3): not a path-MTU message.
    let mut m = ICMPV4_FRAG_NEEDED;
    m[1] = 3;
    assert_eq!(Repr::parse_v4(&m, Checksum::Ignore), Err(Error::Unsupported));
    // ICMPv6 Destination Unreachable (type 1), Echo Request (128), NDP (135).
    for t in [1u8, 128, 135] {
        let mut m = ICMPV6_PTB;
        m[0] = t;
        assert_eq!(Repr::parse_v6(&m, ROUTER6, US6, Checksum::Ignore), Err(Error::Unsupported));
    }
    // A Packet Too Big Code other than 0 is ignored (RFC 4443 3.2).
    let mut m = ICMPV6_PTB;
    m[1] = 7;
    assert_eq!(Repr::parse_v6(&m, ROUTER6, US6, Checksum::Ignore), Ok(v6()));
    // Quotes shorter than the IP header plus 8 bytes of TCP.
    for len in 0..ICMPV4_FRAG_NEEDED.len() {
        assert_eq!(Repr::parse_v4(&ICMPV4_FRAG_NEEDED[..len], Checksum::Ignore), Err(Error::Truncated), "{len}");
    }
    for len in 0..ICMPV6_PTB.len() {
        assert_eq!(Repr::parse_v6(&ICMPV6_PTB[..len], ROUTER6, US6, Checksum::Ignore), Err(Error::Truncated));
    }
    // A quoted UDP packet, a quoted non-first fragment.
    let mut m = ICMPV4_FRAG_NEEDED;
    m[8 + 9] = 17;
    assert_eq!(Repr::parse_v4(&m, Checksum::Ignore), Err(Error::Unsupported));
    let mut m = ICMPV4_FRAG_NEEDED;
    m[8 + 7] = 1;
    assert_eq!(Repr::parse_v4(&m, Checksum::Ignore), Err(Error::Unsupported));
    let mut m = ICMPV6_PTB;
    m[8 + 6] = 17;
    assert_eq!(Repr::parse_v6(&m, ROUTER6, US6, Checksum::Ignore), Err(Error::Unsupported));
}

#[test]
fn frames_carry_either_family() {
    let eth = ethernet::Repr {
        src_addr: Address([2, 0, 0, 0, 0, 0xfe]),
        dst_addr: Address([2, 0, 0, 0, 0, 2]),
        ethertype: ethernet::EtherType::Arp,
    };
    for (r, src, dst) in [(v4(), ROUTER4.into(), US4.into()), (v6(), ROUTER6.into(), US6.into())] {
        let ip = ip::Repr::new(src, dst, Protocol::Udp, 0, 63).unwrap();
        let mut buf = [0u8; 200];
        let n = emit_icmp_frame(&mut buf, &eth, &ip, &r).unwrap();
        assert_eq!(n, 14 + ip.header_len() + r.buffer_len());
        let m = parse_icmp_frame(&buf[..n], Checksum::Verify).unwrap();
        assert_eq!(m.icmp, r);
        assert_eq!(m.eth.ethertype, r.version().ethertype());
        assert_eq!((m.ip.src_addr(), m.ip.dst_addr(), m.ip.hop_limit()), (src, dst, 63));
        // Not a TCP segment; and a TCP segment is not an ICMP message.
        assert_eq!(parse_frame(&buf[..n], Checksum::Verify), Err(Error::Unsupported));
        assert!(crate::fuzz::parse_any(&buf[..n]));
    }
    assert_eq!(parse_icmp_frame(&crate::testdata::IPV6_SYN, Checksum::Verify).map(|m| m.icmp), Err(Error::Unsupported));
    assert_eq!(parse_icmp_frame(&crate::testdata::LINUX_SYN, Checksum::Verify), Err(Error::Unsupported));
}

proptest! {
    #[test]
    fn prop_emit_parse_roundtrip(
        (src_addr, dst_addr) in strategies::ip_addr_pair(),
        src_port in any::<u16>(),
        dst_port in any::<u16>(),
        seq_number in any::<u32>(),
        mtu in any::<u32>(),
    ) {
        let v6 = src_addr.is_ipv6();
        let mtu = if v6 { mtu } else { mtu & 0xffff };
        let r = Repr { mtu, quoted: Quoted { src_addr, dst_addr, src_port, dst_port, seq_number } };
        let (from, to): (IpAddr, IpAddr) = if v6 { (ROUTER6.into(), US6.into()) } else { (ROUTER4.into(), US4.into()) };
        let mut buf = [0u8; 100];
        let n = r.emit(&mut buf, from, to).unwrap();
        let back = if v6 {
            Repr::parse_v6(&buf[..n], ROUTER6, US6, Checksum::Verify)
        } else {
            Repr::parse_v4(&buf[..n], Checksum::Verify)
        };
        prop_assert_eq!(back, Ok(r));
        prop_assert!(crate::fuzz::icmp(&buf[..n]));
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..120)) {
        crate::fuzz::icmp(&data);
    }

    #[test]
    fn prop_mutated_messages_never_panic(
        which in any::<bool>(),
        pokes in proptest::collection::vec((0usize..56, any::<u8>()), 1..4),
        cut in 0usize..60,
    ) {
        let mut m = if which { ICMPV6_PTB.to_vec() } else { ICMPV4_FRAG_NEEDED.to_vec() };
        for (pos, val) in pokes {
            if let Some(x) = m.get_mut(pos) { *x = val; }
        }
        m.truncate(cut);
        crate::fuzz::icmp(&m);
    }
}
