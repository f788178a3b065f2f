//! Tests for the TCP header, its options and the repr.
use proptest::prelude::*;

use super::*;
use crate::strategies;
use crate::testdata::{DATA_SACK, LINUX_SYN, SYN_ACK};
use core::net::Ipv4Addr;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
/// Ethernet (14) + IPv4 (20).
const TCP_AT: usize = 34;

fn seg(frame: &[u8]) -> &[u8] {
    &frame[TCP_AT..]
}

const TEMPL: Repr<'static> = Repr {
    src_port: 40000,
    dst_port: 443,
    seq_number: 0,
    ack_number: 0,
    flags: Flags::empty(),
    window_len: 0,
    max_seg_size: None,
    window_scale: None,
    sack_permitted: false,
    sack_blocks: [None; 4],
    timestamp: None,
    payload: &[],
};

fn emit_vec(repr: &Repr<'_>, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst, Checksum::Verify).unwrap();
    buf
}

fn parse_vec(buf: &[u8], src: IpAddr, dst: IpAddr) -> Result<Repr<'_>, Error> {
    Repr::parse(&Packet::new_checked(buf)?, src, dst, Checksum::Verify)
}

/// A header with the given options bytes (padded by the caller), checksum filled.
fn with_options(opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0, "test bug: options not padded");
    let mut buf = vec![0u8; HEADER_LEN + opts.len()];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_src_port(1);
    p.set_dst_port(2);
    p.set_header_len((HEADER_LEN + opts.len()) as u8);
    p.options_mut().copy_from_slice(opts);
    p.fill_checksum(CLIENT, SERVER).unwrap();
    buf
}

// Tests on captured segments.

#[test]
fn linux_syn_fields() {
    let p = Packet::new_checked(seg(&LINUX_SYN)).unwrap();
    assert_eq!(p.src_port(), 40000);
    assert_eq!(p.dst_port(), 443);
    assert_eq!(p.seq_number(), 0x1234_5678);
    assert_eq!(p.ack_number(), 0);
    assert_eq!(p.header_len(), 40);
    assert_eq!(p.flags(), Flags::SYN);
    assert_eq!(p.window_len(), 64240);
    assert_eq!(p.checksum(), 0xdbe4);
    assert_eq!(p.urgent_at(), 0);
    assert_eq!(p.options().len(), 20);
    assert!(p.payload().is_empty());
    assert!(p.verify_checksum(CLIENT, SERVER));
    assert!(!p.verify_checksum(SERVER, Ipv4Addr::new(198, 51, 100, 3).into()));
}

#[test]
fn linux_syn_repr_and_reemit() {
    let r = parse_vec(seg(&LINUX_SYN), CLIENT, SERVER).unwrap();
    let expect = Repr {
        seq_number: 0x1234_5678,
        flags: Flags::SYN,
        window_len: 64240,
        max_seg_size: Some(1460),
        window_scale: Some(7),
        sack_permitted: true,
        timestamp: Some(Timestamp { tsval: 0x0a0b_0c0d, tsecr: 0 }),
        ..TEMPL
    };
    assert_eq!(r, expect);
    assert_eq!(r.header_len(), 40);
    assert_eq!(r.segment_len(), 1);
    // Emit lays the options out as Linux does: byte for byte the same segment.
    assert_eq!(emit_vec(&r, CLIENT, SERVER), seg(&LINUX_SYN));
}

#[test]
fn syn_ack_repr_and_reemit() {
    let r = parse_vec(seg(&SYN_ACK), SERVER, CLIENT).unwrap();
    assert_eq!(r.flags, Flags::SYN | Flags::ACK);
    assert_eq!((r.src_port, r.dst_port), (443, 40000));
    assert_eq!((r.seq_number, r.ack_number), (0xdead_beef, 0x1234_5679));
    assert_eq!(r.window_scale, Some(9));
    assert_eq!(r.timestamp, Some(Timestamp { tsval: 0x1122_3344, tsecr: 0x0a0b_0c0d }));
    assert_eq!(emit_vec(&r, SERVER, CLIENT), seg(&SYN_ACK));
}

#[test]
fn data_with_sack_repr_and_reemit() {
    let r = parse_vec(seg(&DATA_SACK), CLIENT, SERVER).unwrap();
    let base = 0x1234_5679u32;
    assert_eq!(r.flags, Flags::PSH | Flags::ACK);
    assert_eq!(r.payload, b"hello, sluice\n");
    assert_eq!(r.segment_len(), 14);
    assert_eq!(r.window_len, 501);
    assert_eq!(r.max_seg_size, None);
    assert!(!r.sack_permitted);
    assert_eq!(
        r.sack_blocks,
        [
            Some(SackBlock { left: base + 3000, right: base + 4000 }),
            Some(SackBlock { left: base + 5000, right: base + 6000 }),
            None,
            None
        ]
    );
    assert_eq!(r.timestamp, Some(Timestamp { tsval: 0x0a0b_0d00, tsecr: 0x1122_3400 }));
    assert_eq!(r.header_len(), 20 + 12 + 20);
    assert_eq!(emit_vec(&r, CLIENT, SERVER), seg(&DATA_SACK));
}

#[test]
fn flipped_bit_fails_checksum() {
    for frame in [&LINUX_SYN[..], &SYN_ACK, &DATA_SACK] {
        let s = seg(frame);
        let (src, dst) = if s[0] == 0x01 { (SERVER, CLIENT) } else { (CLIENT, SERVER) };
        assert!(Packet::new_checked(s).unwrap().verify_checksum(src, dst));
        for bit in 0..s.len() * 8 {
            let mut b = s.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            let Ok(p) = Packet::new_checked(&b[..]) else {
                continue;
            };
            assert!(!p.verify_checksum(src, dst), "bit {bit}");
            assert!(Repr::parse(&p, src, dst, Checksum::Verify).is_err(), "bit {bit}");
        }
    }
}

#[test]
fn ignore_skips_checksum() {
    let mut b = seg(&DATA_SACK).to_vec();
    b[16] ^= 0xff;
    let p = Packet::new_checked(&b[..]).unwrap();
    assert_eq!(Repr::parse(&p, CLIENT, SERVER, Checksum::Verify), Err(Error::Checksum));
    assert!(Repr::parse(&p, CLIENT, SERVER, Checksum::Ignore).is_ok());
}

// Tests for length checks.

#[test]
fn length_checks() {
    let s = seg(&LINUX_SYN);
    for len in 0..HEADER_LEN {
        assert_eq!(Packet::new_checked(&s[..len]), Err(Error::Truncated), "len {len}");
    }
    // Data offset 10 (40 bytes) but fewer bytes.
    for len in HEADER_LEN..40 {
        assert_eq!(Packet::new_checked(&s[..len]), Err(Error::Truncated), "len {len}");
    }
    for off in 0..5u8 {
        let mut b = s.to_vec();
        b[12] = off << 4;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::Malformed), "offset {off}");
    }
    let mut b = s.to_vec();
    b[12] = 0xf0; // 60 bytes of header in 40
    assert_eq!(Packet::new_checked(&b[..]), Err(Error::Truncated));
}

#[test]
fn port_zero_is_malformed() {
    for (sp, dp) in [(0, 443), (40000, 0), (0, 0)] {
        let r = Repr { src_port: 1, dst_port: 1, ..TEMPL };
        let mut b = emit_vec(&r, CLIENT, SERVER);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(sp);
        p.set_dst_port(dp);
        p.fill_checksum(CLIENT, SERVER).unwrap();
        assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed));
    }
}

// Tests for option parsing.

#[test]
fn option_length_below_two_is_malformed() {
    for len in [0u8, 1] {
        let b = with_options(&[kind::MSS, len, 0, 0]);
        assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed), "len {len}");
        let b = with_options(&[99, len, 0, 0]);
        assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed), "unknown, len {len}");
    }
}

#[test]
fn option_past_header_is_malformed() {
    // MSS claims 4 bytes, 2 remain.
    let b = with_options(&[kind::NOP, kind::NOP, kind::MSS, 4]);
    assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed));
    // Length byte missing.
    let b = with_options(&[kind::NOP, kind::NOP, kind::NOP, kind::TIMESTAMP]);
    assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed));
    // Unknown kind running past the header into the payload.
    let mut b = with_options(&[kind::NOP, 30, 8, 0]);
    b.extend_from_slice(&[0; 8]);
    let mut p = Packet::new_unchecked(&mut b[..]);
    p.fill_checksum(CLIENT, SERVER).unwrap();
    assert_eq!(parse_vec(&b, CLIENT, SERVER), Err(Error::Malformed));
}

#[test]
fn eol_ends_the_list() {
    // Garbage (a length-0 option) after EOL is not looked at.
    let b = with_options(&[kind::MSS, 4, 0x05, 0xb4, kind::EOL, kind::SACK, 0, 0]);
    let r = parse_vec(&b, CLIENT, SERVER).unwrap();
    assert_eq!(r.max_seg_size, Some(1460));
}

#[test]
fn unknown_and_odd_length_options_are_skipped() {
    let b = with_options(&[
        // Unknown kind 30 (MPTCP), 6 bytes.
        30,
        6,
        1,
        2,
        3,
        4, //
        // MSS with length 3: skipped, as Linux does.
        kind::MSS,
        3,
        9, //
        // SACK with length 12 (not 2 + 8n): skipped.
        kind::SACK,
        12,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
        0,
        0, //
        // SACK-permitted with length 3: skipped.
        kind::SACK_PERMITTED,
        3,
        0, //
        // Window scale 15 is clamped to 14 (RFC 7323 2.3).
        kind::WINDOW_SCALE,
        3,
        15, //
        kind::NOP,
        kind::NOP,
        kind::NOP,
        kind::NOP,
        kind::EOL,
    ]);
    let r = parse_vec(&b, CLIENT, SERVER).unwrap();
    assert_eq!(r.max_seg_size, None);
    assert_eq!(r.sack_blocks, [None; 4]);
    assert!(!r.sack_permitted);
    assert_eq!(r.window_scale, Some(14));
}

#[test]
fn four_sack_blocks() {
    let mut opts = vec![kind::NOP, kind::NOP, kind::SACK, 34];
    for i in 0..8u32 {
        opts.extend_from_slice(&(i * 100).to_be_bytes());
    }
    let b = with_options(&opts);
    let r = parse_vec(&b, CLIENT, SERVER).unwrap();
    for (i, blk) in r.sack_blocks.iter().enumerate() {
        let i = i as u32;
        assert_eq!(*blk, Some(SackBlock { left: 2 * i * 100, right: (2 * i + 1) * 100 }));
    }
    assert_eq!(r.sack_capacity(), 4);
    assert_eq!(r.header_len(), 20 + 36);
    assert_eq!(emit_vec(&r, CLIENT, SERVER), b);
}

#[test]
fn tcp_option_emit_parse() {
    let opts = [
        TcpOption::NoOperation,
        TcpOption::MaxSegmentSize(1400),
        TcpOption::WindowScale(3),
        TcpOption::SackPermitted,
        TcpOption::Timestamp(Timestamp { tsval: 1, tsecr: 2 }),
        TcpOption::Sack([Some(SackBlock { left: 1, right: 2 }), None, None, None]),
        TcpOption::Unknown { kind: 253, data: &[1, 2, 3] },
    ];
    let mut buf = [0u8; 64];
    for o in opts {
        let len = o.buffer_len();
        let rest_len = o.emit(&mut buf).len();
        assert_eq!(rest_len, buf.len() - len);
        let (back, rest) = TcpOption::parse(&buf[..len]).unwrap();
        assert_eq!(back, o);
        assert!(rest.is_empty());
    }
    assert_eq!(TcpOption::parse(&[0, 1, 2]), Ok((TcpOption::EndOfList, &[][..])));
    assert_eq!(TcpOption::parse(&[]), Err(Error::Malformed));
}

// Tests for header_len, SACK capacity and emit layout.

#[test]
fn header_len_by_option_combination() {
    let ts = Some(Timestamp { tsval: 1, tsecr: 2 });
    let blk = Some(SackBlock { left: 10, right: 20 });
    let cases = [
        (TEMPL, 20),
        (Repr { max_seg_size: Some(1460), ..TEMPL }, 24),
        (Repr { sack_permitted: true, ..TEMPL }, 24),
        (Repr { timestamp: ts, ..TEMPL }, 32),
        (Repr { sack_permitted: true, timestamp: ts, ..TEMPL }, 32),
        (Repr { window_scale: Some(7), ..TEMPL }, 24),
        (Repr { max_seg_size: Some(1460), sack_permitted: true, timestamp: ts, window_scale: Some(7), ..TEMPL }, 40),
        // RFC 2018 3: 4 blocks without timestamps, 3 with.
        (Repr { sack_blocks: [blk; 4], ..TEMPL }, 56),
        (Repr { sack_blocks: [blk; 4], timestamp: ts, ..TEMPL }, 60),
        (Repr { sack_blocks: [blk, None, None, None], timestamp: ts, ..TEMPL }, 44),
        // Everything at once: 20 bytes of other options leave room for 2 blocks.
        (
            Repr {
                max_seg_size: Some(1460),
                sack_permitted: true,
                timestamp: ts,
                window_scale: Some(7),
                sack_blocks: [blk; 4],
                ..TEMPL
            },
            60,
        ),
    ];
    for (r, len) in cases {
        assert_eq!(r.header_len(), len, "{r:?}");
        let b = emit_vec(&r, CLIENT, SERVER);
        assert_eq!(b.len(), len);
        assert_eq!(parse_vec(&b, CLIENT, SERVER), Ok(r.normalized()));
    }
    let all = cases[10].0;
    assert_eq!(all.sack_capacity(), 2);
    assert_eq!(all.normalized().sack_blocks, [blk, blk, None, None]);
}

#[test]
fn sack_holes_are_compacted() {
    let a = Some(SackBlock { left: 1, right: 2 });
    let b = Some(SackBlock { left: 3, right: 4 });
    let r = Repr { sack_blocks: [None, a, None, b], ..TEMPL };
    let buf = emit_vec(&r, CLIENT, SERVER);
    assert_eq!(parse_vec(&buf, CLIENT, SERVER).unwrap().sack_blocks, [a, b, None, None]);
}

#[test]
fn window_scale_clamped_on_emit() {
    let r = Repr { window_scale: Some(200), ..TEMPL };
    let b = emit_vec(&r, CLIENT, SERVER);
    assert_eq!(b[20..24], [kind::NOP, kind::WINDOW_SCALE, 3, 14]);
    assert_eq!(parse_vec(&b, CLIENT, SERVER).unwrap().window_scale, Some(14));
}

#[test]
fn emit_leaves_bytes_past_the_segment() {
    let r = Repr { payload: b"abc", flags: Flags::ACK | Flags::PSH, ..TEMPL };
    let mut buf = vec![0xeeu8; r.buffer_len() + 5];
    r.emit(&mut Packet::new_unchecked(&mut buf[..]), CLIENT, SERVER, Checksum::Verify).unwrap();
    assert_eq!(&buf[r.buffer_len()..], &[0xee; 5]);
    assert_eq!(parse_vec(&buf[..r.buffer_len()], CLIENT, SERVER), Ok(r));
}

#[test]
fn segment_len_counts_syn_and_fin() {
    assert_eq!(Repr { flags: Flags::SYN, ..TEMPL }.segment_len(), 1);
    assert_eq!(Repr { flags: Flags::FIN | Flags::ACK, payload: b"xy", ..TEMPL }.segment_len(), 3);
    assert_eq!(Repr { flags: Flags::SYN | Flags::FIN, payload: b"xy", ..TEMPL }.segment_len(), 4);
    assert_eq!(Repr { flags: Flags::RST | Flags::ACK, ..TEMPL }.segment_len(), 0);
}

#[test]
fn flags_ops_and_display() {
    let f = Flags::SYN | Flags::ACK;
    assert!(f.syn() && f.ack() && !f.fin() && !f.rst() && !f.psh() && !f.urg());
    assert!(f.contains(Flags::SYN) && !f.contains(Flags::SYN | Flags::FIN));
    assert!(f.intersects(Flags::SYN | Flags::FIN));
    assert_eq!(f & Flags::ACK, Flags::ACK);
    let mut g = Flags::empty();
    g |= Flags::FIN;
    g.insert(Flags::ECE | Flags::CWR);
    assert!(g.fin() && g.ece() && g.cwr());
    g.remove(Flags::FIN);
    assert!(!g.fin());
    assert_eq!(f.to_string(), "S.");
    assert_eq!((Flags::FIN | Flags::ACK).to_string(), "F.");
    assert_eq!(Flags::RST.to_string(), "R");
    assert_eq!(Flags::empty().to_string(), "none");
    assert_eq!(Flags(0xff).bits(), 0xff);
}

#[test]
fn setters_roundtrip() {
    let mut buf = [0u8; 24];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    p.set_src_port(1);
    p.set_dst_port(2);
    p.set_seq_number(3);
    p.set_ack_number(4);
    p.set_header_len(24);
    p.set_flags(Flags::URG | Flags::ACK);
    p.set_window_len(5);
    p.set_urgent_at(6);
    p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
    p.payload_mut().fill(9);
    p.fill_checksum(CLIENT, SERVER).unwrap();
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert_eq!((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len()), (1, 2, 3, 4, 24));
    assert_eq!((p.flags(), p.window_len(), p.urgent_at()), (Flags::URG | Flags::ACK, 5, 6));
    assert_eq!(p.options(), &[1, 1, 1, 0]);
    assert!(p.payload().is_empty());
    assert!(p.verify_checksum(CLIENT, SERVER));
}

// Property tests.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn prop_parse_emit_roundtrip(t in strategies::tcp_repr(300), (src, dst) in strategies::ip_addr_pair()) {
        let r = t.repr();
        let b = emit_vec(&r, src, dst);
        prop_assert_eq!(b.len(), r.buffer_len());
        prop_assert!(r.header_len() % 4 == 0 && r.header_len() <= MAX_HEADER_LEN);
        let back = parse_vec(&b, src, dst);
        prop_assert_eq!(back, Ok(r.normalized()));
        // Every SACK block that fits is kept: at most as RFC 2018 3 allows.
        let n = r.sack_blocks.iter().flatten().count();
        let cap = if r.timestamp.is_some() { 3 } else { 4 };
        if r.max_seg_size.is_none() && r.window_scale.is_none() && !r.sack_permitted {
            prop_assert_eq!(r.sack_capacity(), n.min(cap));
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        crate::fuzz::tcp(&data);
    }

    #[test]
    fn prop_mutated_options_never_panic(
        t in strategies::tcp_repr(16),
        off in 0u8..16,
        pos in 0usize..60,
        val in any::<u8>(),
        cut in 0usize..100,
    ) {
        let r = t.repr();
        let mut b = emit_vec(&r, CLIENT, SERVER);
        // Random data offset, a random byte in the options (often a length), a truncation.
        b[12] = off << 4;
        if let Some(x) = b.get_mut(HEADER_LEN + pos) { *x = val; }
        b.truncate(cut);
        crate::fuzz::tcp(&b);
    }
}
