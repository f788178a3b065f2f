//! Tests for whole-frame parse/emit, in-place emission and RST generation.
use proptest::prelude::*;

use super::*;
use crate::ethernet::Address;
use crate::ipv4::{self, Ipv4Addr};
use crate::strategies;
use crate::tcp::{Flags, SackBlock, Timestamp};
use crate::testdata::{DATA_SACK, LINUX_SYN, SYN_ACK};

const CLIENT_MAC: Address = Address([2, 0, 0, 0, 0, 1]);
const SERVER_MAC: Address = Address([2, 0, 0, 0, 0, 2]);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

const TEMPL: tcp::Repr<'static> = tcp::Repr {
    src_port: 40000,
    dst_port: 443,
    seq_number: 1000,
    ack_number: 0,
    flags: Flags::empty(),
    window_len: 1024,
    max_seg_size: None,
    window_scale: None,
    sack_permitted: false,
    sack_blocks: [None; 4],
    timestamp: None,
    payload: &[],
};

fn segment<'a>(flags: Flags, seq: u32, ack: u32, payload: &'a [u8]) -> ParsedSegment<'a> {
    let tcp = tcp::Repr { flags, seq_number: seq, ack_number: ack, payload, ..TEMPL };
    ParsedSegment {
        eth: ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: ethernet::EtherType::Ipv4 },
        ip: ip::Repr::V4(ipv4::Repr {
            src_addr: CLIENT,
            dst_addr: SERVER,
            protocol: Protocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        }),
        tcp,
    }
}

fn emit_vec(seg: &ParsedSegment<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 2000];
    let n = emit_frame(&mut buf, &seg.eth, &seg.ip, &seg.tcp).unwrap();
    buf.truncate(n);
    buf
}

/// `frame` with the IPv4 ident cleared and the header checksum recomputed (emit writes 0).
fn with_ident_zero(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let mut p = ipv4::Packet::new_unchecked(&mut f[14..34]);
    p.set_ident(0);
    p.fill_checksum();
    f
}

// Tests on captured frames.

#[test]
fn parse_linux_syn() {
    let s = parse_frame(&LINUX_SYN, Checksum::Verify).unwrap();
    assert_eq!(
        s.eth,
        ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: ethernet::EtherType::Ipv4 }
    );
    assert_eq!(
        s.ip,
        ip::Repr::V4(ipv4::Repr {
            src_addr: CLIENT,
            dst_addr: SERVER,
            protocol: Protocol::Tcp,
            payload_len: 40,
            hop_limit: 64
        })
    );
    assert_eq!(
        s.tcp,
        tcp::Repr {
            seq_number: 0x1234_5678,
            flags: Flags::SYN,
            window_len: 64240,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some(Timestamp { tsval: 0x0a0b_0c0d, tsecr: 0 }),
            ..TEMPL
        }
    );
    assert_eq!(emit_vec(&s), with_ident_zero(&LINUX_SYN));
}

#[test]
fn example_syn_is_the_capture() {
    assert_eq!(crate::fuzz::example_syn().to_vec(), with_ident_zero(&LINUX_SYN));
}

#[test]
fn syn_ack_emits_byte_for_byte() {
    // The capture has ident 0, DF, TTL 64: exactly what emit writes.
    let s = parse_frame(&SYN_ACK, Checksum::Verify).unwrap();
    assert_eq!(emit_vec(&s), SYN_ACK);
}

#[test]
fn data_segment_and_in_place_emit() {
    let s = parse_frame(&DATA_SACK, Checksum::Verify).unwrap();
    assert_eq!(s.tcp.payload, b"hello, sluice\n");
    assert_eq!(s.ip.payload_len(), 52 + 14);
    assert_eq!(s.tcp.sack_blocks.iter().flatten().count(), 2);
    let expect = with_ident_zero(&DATA_SACK);
    assert_eq!(emit_vec(&s), expect);

    // In place: the payload is written first (as from a send ring), then the headers.
    let mut buf = [0x55u8; 200];
    let at = ipv4::HEADER_LEN + s.tcp.header_len();
    buf[at..at + 14].copy_from_slice(b"hello, sluice\n");
    let tcp_no_payload = tcp::Repr { payload: b"ignored", ..s.tcp };
    let ip_wrong_len = s.ip.with_payload(Protocol::Udp, 9999);
    let n = emit_ip_tcp_in_place(&mut buf, &ip_wrong_len, &tcp_no_payload, 14).unwrap();
    assert_eq!(n, expect.len() - 14);
    assert_eq!(&buf[..n], &expect[14..]);
    assert_eq!(buf[n], 0x55, "nothing written past the packet");
}

#[test]
fn ethernet_padding_is_ignored() {
    let s = parse_frame(&SYN_ACK, Checksum::Verify).unwrap();
    let mut padded = SYN_ACK.to_vec();
    padded.extend_from_slice(&[0; 10]);
    assert_eq!(parse_frame(&padded, Checksum::Verify), Ok(s));
}

#[test]
fn truncation_at_every_length() {
    for frame in [&LINUX_SYN[..], &SYN_ACK, &DATA_SACK] {
        for len in 0..frame.len() {
            assert_eq!(parse_frame(&frame[..len], Checksum::Verify), Err(Error::Truncated), "{len}");
            assert_eq!(parse_frame(&frame[..len], Checksum::Ignore), Err(Error::Truncated), "{len}");
        }
    }
}

#[test]
fn flipped_bit_anywhere_in_ip_or_tcp_fails() {
    for bit in 14 * 8..DATA_SACK.len() * 8 {
        let mut f = DATA_SACK;
        f[bit / 8] ^= 1 << (bit % 8);
        assert!(parse_frame(&f, Checksum::Verify).is_err(), "bit {bit}");
    }
}

#[test]
fn unsupported_and_fragments() {
    let mut arp = SYN_ACK;
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(parse_frame(&arp, Checksum::Verify), Err(Error::Unsupported));
    // An IPv4 packet under the IPv6 EtherType: version 4 in an IPv6 header.
    let mut v6 = SYN_ACK;
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(parse_frame(&v6, Checksum::Verify), Err(Error::Malformed));
    let mut udp = SYN_ACK;
    ipv4::Packet::new_unchecked(&mut udp[14..34]).set_next_header(ipv4::Protocol::Udp);
    ipv4::Packet::new_unchecked(&mut udp[14..34]).fill_checksum();
    assert_eq!(parse_frame(&udp, Checksum::Verify), Err(Error::Unsupported));
    let mut frag = SYN_ACK;
    ipv4::Packet::new_unchecked(&mut frag[14..34]).set_more_frags(true);
    ipv4::Packet::new_unchecked(&mut frag[14..34]).fill_checksum();
    assert_eq!(parse_frame(&frag, Checksum::Verify), Err(Error::Fragmented));
}

#[test]
fn emit_into_short_buffers_is_truncated() {
    let s = parse_frame(&DATA_SACK, Checksum::Verify).unwrap();
    let mut buf = [0u8; 100];
    assert_eq!(emit_frame(&mut buf, &s.eth, &s.ip, &s.tcp), Ok(100));
    for len in 0..DATA_SACK.len() {
        assert_eq!(emit_frame(&mut buf[..len], &s.eth, &s.ip, &s.tcp), Err(Error::Truncated));
    }
    for len in 0..DATA_SACK.len() - 14 {
        let r = emit_ip_tcp_in_place(&mut buf[..len], &s.ip, &s.tcp, 14);
        assert_eq!(r, Err(Error::Truncated), "{len}");
    }
}

#[test]
fn emit_oversize_is_malformed() {
    let big = vec![0u8; 65536];
    let s = segment(Flags::ACK, 1, 1, &big);
    let mut buf = vec![0u8; 70000];
    assert_eq!(emit_frame(&mut buf, &s.eth, &s.ip, &s.tcp), Err(Error::Malformed));
    assert_eq!(emit_ip_tcp_in_place(&mut buf, &s.ip, &s.tcp, 65496), Err(Error::Malformed));
    assert_eq!(emit_ip_tcp_in_place(&mut buf, &s.ip, &s.tcp, usize::MAX), Err(Error::Malformed));
    // The largest packet that fits: 65535 bytes.
    assert_eq!(emit_ip_tcp_in_place(&mut buf, &s.ip, &s.tcp, 65495), Ok(65535));
    let p = ipv4::Packet::new_checked(&buf[..65535]).unwrap();
    assert_eq!(ipv4::Repr::parse(&p, Checksum::Verify).unwrap().payload_len, 65515);
    // IPv6's Payload Length does not count the fixed header: 65535 bytes of TCP fit.
    let s6 =
        ip::Repr::new("2001:db8:100::1".parse().unwrap(), "2001:db8:100::2".parse().unwrap(), Protocol::Tcp, 0, 64)
            .unwrap();
    assert_eq!(emit_ip_tcp_in_place(&mut buf, &s6, &s.tcp, 65516), Err(Error::Malformed));
    assert_eq!(emit_ip_tcp_in_place(&mut buf, &s6, &s.tcp, 65515), Ok(65575));
}

// Tests for rst_reply (RFC 9293 3.10.7.1).

fn check_swapped(seg: &ParsedSegment<'_>, rst: &ParsedSegment<'_>) {
    assert_eq!((rst.eth.src_addr, rst.eth.dst_addr), (seg.eth.dst_addr, seg.eth.src_addr));
    assert_eq!((rst.ip.src_addr(), rst.ip.dst_addr()), (seg.ip.dst_addr(), seg.ip.src_addr()));
    assert_eq!((rst.tcp.src_port, rst.tcp.dst_port), (seg.tcp.dst_port, seg.tcp.src_port));
    assert_eq!(rst.ip.hop_limit(), 64);
    assert!(rst.tcp.payload.is_empty());
    assert_eq!(rst.tcp.header_len(), 20);
    assert_eq!(rst.tcp.window_len, 0);
    // It emits and parses back to itself.
    let bytes = emit_vec(rst);
    let len = 14 + seg.ip.header_len() + 20;
    let mut buf = vec![0u8; len];
    assert_eq!((rst.frame_len(), rst.emit(&mut buf)), (len, Ok(len)));
    assert_eq!(&buf[..], &bytes[..]);
    assert_eq!(parse_frame(&bytes, Checksum::Verify).as_ref(), Ok(rst));
}

#[test]
fn rst_for_syn() {
    // No ACK: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SYN counts one.
    let seg = parse_frame(&LINUX_SYN, Checksum::Verify).unwrap();
    let rst = rst_reply(&seg).unwrap();
    assert_eq!(rst.tcp.flags, Flags::RST | Flags::ACK);
    assert_eq!(rst.tcp.seq_number, 0);
    assert_eq!(rst.tcp.ack_number, 0x1234_5679);
    check_swapped(&seg, &rst);
}

#[test]
fn rst_for_ack() {
    // ACK: <SEQ=SEG.ACK><CTL=RST>.
    let seg = segment(Flags::ACK, 5000, 7777, &[]);
    let rst = rst_reply(&seg).unwrap();
    assert_eq!(rst.tcp.flags, Flags::RST);
    assert_eq!(rst.tcp.seq_number, 7777);
    assert_eq!(rst.tcp.ack_number, 0);
    check_swapped(&seg, &rst);
}

#[test]
fn rst_for_fin() {
    let seg = segment(Flags::FIN | Flags::ACK, 5000, 7777, &[]);
    let rst = rst_reply(&seg).unwrap();
    assert_eq!((rst.tcp.flags, rst.tcp.seq_number), (Flags::RST, 7777));
    check_swapped(&seg, &rst);
    // A bare FIN (no ACK) counts one in SEG.LEN.
    let seg = segment(Flags::FIN, 5000, 0, &[]);
    let rst = rst_reply(&seg).unwrap();
    assert_eq!(rst.tcp.flags, Flags::RST | Flags::ACK);
    assert_eq!((rst.tcp.seq_number, rst.tcp.ack_number), (0, 5001));
}

#[test]
fn rst_for_data() {
    let seg = parse_frame(&DATA_SACK, Checksum::Verify).unwrap();
    let rst = rst_reply(&seg).unwrap();
    assert_eq!((rst.tcp.flags, rst.tcp.seq_number), (Flags::RST, seg.tcp.ack_number));
    check_swapped(&seg, &rst);
    // Data without ACK, SYN+FIN, wrapping sequence space: SEG.LEN = 10 + 2.
    let seg = segment(Flags::SYN | Flags::FIN | Flags::PSH, u32::MAX - 3, 0, &[7; 10]);
    let rst = rst_reply(&seg).unwrap();
    assert_eq!(rst.tcp.flags, Flags::RST | Flags::ACK);
    assert_eq!(rst.tcp.ack_number, 8);
    check_swapped(&seg, &rst);
}

#[test]
fn never_answer_a_rst() {
    for flags in [Flags::RST, Flags::RST | Flags::ACK, Flags::RST | Flags::SYN | Flags::FIN] {
        assert_eq!(rst_reply(&segment(flags, 1, 2, b"x")), None);
    }
}

// Property tests.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn prop_frame_roundtrip(
        eth in strategies::eth_repr(),
        ip in strategies::ip_repr(),
        t in strategies::tcp_repr(1500),
    ) {
        let tcp = t.repr();
        let mut buf = vec![0u8; 1700];
        let n = emit_frame(&mut buf, &eth, &ip, &tcp).unwrap();
        let s = parse_frame(&buf[..n], Checksum::Verify).unwrap();
        prop_assert_eq!(s.eth, ethernet::Repr { ethertype: ip.version().ethertype(), ..eth });
        prop_assert_eq!(s.ip, ip.with_payload(Protocol::Tcp, tcp.buffer_len()));
        prop_assert_eq!(n, s.frame_len());
        prop_assert_eq!(s.tcp, tcp.normalized());
        prop_assert!(crate::fuzz::parse_any(&buf[..n]));
    }

    #[test]
    fn prop_in_place_matches_emit_frame(
        ip in strategies::ip_repr(),
        t in strategies::tcp_repr(1500),
        junk in any::<u8>(),
    ) {
        let tcp = t.repr();
        let eth = ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: ethernet::EtherType::Ipv4 };
        let mut framed = vec![0u8; 1700];
        let n = emit_frame(&mut framed, &eth, &ip, &tcp).unwrap();
        let mut buf = vec![junk; 1700];
        let at = ip.header_len() + tcp.header_len();
        buf[at..at + tcp.payload.len()].copy_from_slice(tcp.payload);
        let m = emit_ip_tcp_in_place(&mut buf, &ip, &tcp::Repr { payload: &[], ..tcp }, tcp.payload.len()).unwrap();
        prop_assert_eq!(m, n - ethernet::HEADER_LEN);
        prop_assert_eq!(&buf[..m], &framed[ethernet::HEADER_LEN..n]);
    }

    #[test]
    fn prop_rst_reply_follows_rfc(
        ip in strategies::ip_repr(),
        t in strategies::tcp_repr(64),
    ) {
        let tcp = t.repr();
        let eth = ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: SERVER_MAC, ethertype: ip.version().ethertype() };
        let seg = ParsedSegment { eth, ip: ip.with_payload(Protocol::Tcp, tcp.buffer_len()), tcp };
        match rst_reply(&seg) {
            None => prop_assert!(tcp.flags.rst()),
            Some(rst) => {
                prop_assert!(!tcp.flags.rst());
                if tcp.flags.ack() {
                    prop_assert_eq!((rst.tcp.flags, rst.tcp.seq_number), (Flags::RST, tcp.ack_number));
                } else {
                    prop_assert_eq!(rst.tcp.flags, Flags::RST | Flags::ACK);
                    prop_assert_eq!(rst.tcp.seq_number, 0);
                    prop_assert_eq!(rst.tcp.ack_number, tcp.seq_number.wrapping_add(tcp.segment_len() as u32));
                }
                check_swapped(&seg, &rst);
            }
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        crate::fuzz::parse_any(&data);
        crate::fuzz::ethernet(&data);
        crate::fuzz::ipv4(&data);
        crate::fuzz::ipv6(&data);
        crate::fuzz::icmp(&data);
        crate::fuzz::tcp(&data);
    }

    #[test]
    fn prop_mutated_frames_never_panic(
        which in 0usize..3,
        ihl in 0u8..16,
        data_off in 0u8..16,
        opt_pos in 0usize..40,
        opt_val in any::<u8>(),
        total_len in any::<u16>(),
        pokes in proptest::collection::vec((0usize..100, any::<u8>()), 0..4),
        cut in 0usize..100,
        mutate in any::<[bool; 4]>(),
    ) {
        let mut f = [&LINUX_SYN[..], &SYN_ACK, &DATA_SACK][which].to_vec();
        if mutate[0] { f[14] = 0x40 | ihl; }
        if mutate[1] { f[14 + 20 + 12] = data_off << 4; }
        if mutate[2] { f[2 + 14..4 + 14].copy_from_slice(&total_len.to_be_bytes()); }
        if mutate[3] {
            // Often an option length or kind.
            let at = 14 + 20 + 20 + opt_pos;
            if let Some(x) = f.get_mut(at) { *x = opt_val; }
        }
        for (pos, val) in pokes {
            if let Some(x) = f.get_mut(pos) { *x = val; }
        }
        let full = f.clone();
        f.truncate(cut);
        crate::fuzz::parse_any(&f);
        crate::fuzz::parse_any(&full);
        if full.len() > 14 {
            crate::fuzz::ipv4(&full[14..]);
        }
        if full.len() > 34 {
            crate::fuzz::tcp(&full[34..]);
        }
    }
}

#[test]
fn sack_blocks_survive_frame_roundtrip() {
    let blocks = [Some(SackBlock { left: 1, right: 9 }), Some(SackBlock { left: 20, right: 30 }), None, None];
    let mut s = segment(Flags::ACK, 10, 20, b"payload");
    s.tcp.sack_blocks = blocks;
    s.tcp.timestamp = Some(Timestamp { tsval: 5, tsecr: 6 });
    s.ip = s.ip.with_payload(Protocol::Tcp, s.tcp.buffer_len());
    let bytes = emit_vec(&s);
    assert_eq!(parse_frame(&bytes, Checksum::Verify), Ok(s));
    assert!(crate::fuzz::parse_any(&bytes));
}

// Tests against frames the Linux kernel sent on loopback.

mod kernel {
    use super::*;
    use crate::checksum;
    use crate::testdata::{
        KERNEL_ACK, KERNEL_DATA, KERNEL_FIN, KERNEL_RST, KERNEL_SYN, KERNEL_SYN_ACK, KERNEL_SYN_TO_CLOSED,
    };

    const ALL: [&[u8]; 7] =
        [&KERNEL_SYN_TO_CLOSED, &KERNEL_RST, &KERNEL_SYN, &KERNEL_SYN_ACK, &KERNEL_ACK, &KERNEL_DATA, &KERNEL_FIN];

    /// `frame` as emit writes it: IPv4 ident 0, both checksums complete.
    fn completed(frame: &[u8]) -> Vec<u8> {
        let mut f = with_ident_zero(frame);
        let (src, dst) = {
            let p = ipv4::Packet::new_checked(&f[14..]).unwrap();
            (p.src_addr(), p.dst_addr())
        };
        tcp::Packet::new_unchecked(&mut f[34..]).fill_checksum(src.into(), dst.into()).unwrap();
        f
    }

    #[test]
    fn partial_checksums_are_the_pseudo_header_sum() {
        // CHECKSUM_PARTIAL: the kernel left the folded pseudo-header sum in the field.
        // ALL[1] is the RST, which carries a complete checksum.
        for (_, f) in ALL.iter().enumerate().filter(|(i, _)| *i != 1) {
            let s = parse_frame(f, Checksum::Ignore).unwrap();
            assert_eq!(parse_frame(f, Checksum::Verify), Err(Error::Checksum));
            let field = tcp::Packet::new_checked(&f[34..]).unwrap().checksum();
            let len = s.ip.payload_len() as u32;
            let ph = checksum::pseudo_header(s.ip.src_addr(), s.ip.dst_addr(), Protocol::Tcp, len);
            assert_eq!(Ok(field), ph.map(checksum::fold));
        }
        assert!(parse_frame(&KERNEL_RST, Checksum::Verify).is_ok());
    }

    #[test]
    fn kernel_frames_reemit_byte_for_byte() {
        for f in ALL {
            let s = parse_frame(f, Checksum::Ignore).unwrap();
            assert_eq!(emit_vec(&s), completed(f), "{s:?}");
        }
    }

    #[test]
    fn kernel_syn_options() {
        let s = parse_frame(&KERNEL_SYN, Checksum::Ignore).unwrap();
        assert_eq!(s.tcp.flags, Flags::SYN);
        assert_eq!(s.tcp.max_seg_size, Some(65495)); // lo's MTU 65536 - 40 - 1
        assert_eq!(s.tcp.window_scale, Some(10));
        assert!(s.tcp.sack_permitted);
        assert_eq!(s.tcp.timestamp.map(|t| t.tsecr), Some(0));
        let sa = parse_frame(&KERNEL_SYN_ACK, Checksum::Ignore).unwrap();
        assert_eq!(sa.tcp.flags, Flags::SYN | Flags::ACK);
        assert_eq!(sa.tcp.ack_number, s.tcp.seq_number.wrapping_add(1));
        assert_eq!(sa.tcp.timestamp.map(|t| t.tsecr), s.tcp.timestamp.map(|t| t.tsval));
        let d = parse_frame(&KERNEL_DATA, Checksum::Ignore).unwrap();
        assert_eq!(d.tcp.payload, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(d.tcp.header_len(), 32);
        let fin = parse_frame(&KERNEL_FIN, Checksum::Ignore).unwrap();
        assert_eq!(fin.tcp.flags, Flags::FIN | Flags::ACK);
        assert_eq!(fin.tcp.seq_number, d.tcp.seq_number.wrapping_add(18));
    }

    #[test]
    fn rst_reply_matches_the_kernel() {
        // Linux's answer to a SYN on a closed port, byte for byte (ident 0, DF, TTL 64,
        // <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>, window 0, no options).
        let syn = parse_frame(&KERNEL_SYN_TO_CLOSED, Checksum::Ignore).unwrap();
        let rst = rst_reply(&syn).unwrap();
        assert_eq!(emit_vec(&rst), KERNEL_RST);
        assert_eq!(parse_frame(&KERNEL_RST, Checksum::Verify), Ok(rst));
    }
}
