//! Hand-made frames from sluice-hl-b (an AF_PACKET socket, python3): the helpers that build
//! and send them; the malformed, truncated and fragmented IPv4 frames the program must pass and
//! count; and ICMPv4 fragmentation-needed messages, steered only when they quote a segment sent
//! from one of sluice's endpoints.

use std::net::Ipv4Addr;

use sluice::datapath::xdp::loader::XdpMode;
use sluice_testbed::in_ns;

use super::{
    ADDR_A, ADDR_B, BACKEND_PORT, IF_A, IF_B, LISTENER_PORT, NS_A, NS_B, OTHER_PORT, Pair, attach, bind_xsks, on_a,
    wait_detached,
};

/// The client port of the hand-made segments (and of the flows the ICMP messages quote).
pub(super) const CLIENT_PORT: u16 = 40000;

/// Sends raw Ethernet frames from hlb0 (sluice-hl-b) with an AF_PACKET socket (python3).
pub(super) fn send_raw_from_b(frames: &[Vec<u8>]) {
    const SCRIPT: &str = "import socket,sys\n\
        s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
        s.bind((sys.argv[1],0))\n\
        [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]\n";
    let hex: Vec<String> = frames.iter().map(|f| f.iter().map(|b| format!("{b:02x}")).collect()).collect();
    let mut args = vec!["-c", SCRIPT, IF_B];
    args.extend(hex.iter().map(String::as_str));
    in_ns(NS_B, "python3", &args).expect("python3 AF_PACKET sender in sluice-hl-b");
}

pub(super) fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = in_ns(ns, "ip", &["-j", "link", "show", "dev", dev]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = json[0]["address"].as_str().expect("MAC address").to_owned();
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(text.split(':')) {
        *b = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// An Ethernet frame a(hlb0) -> b(hla0) carrying `ethertype` and `payload`.
pub(super) fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header B -> A (checksum left 0: the program does not verify it, the kernel drops it).
pub(super) fn ipv4(version_ihl: u8, total_len: u16, frag: u16, protocol: u8, options: &[u8]) -> Vec<u8> {
    ipv4_between(ADDR_B, ADDR_A, version_ihl, total_len, frag, protocol, options)
}

/// An IPv4 header `src` -> `dst`, checksum 0.
fn ipv4_between(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    version_ihl: u8,
    total_len: u16,
    frag: u16,
    protocol: u8,
    options: &[u8],
) -> Vec<u8> {
    let mut h = vec![version_ihl, 0];
    h.extend_from_slice(&total_len.to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, protocol, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    h
}

/// A TCP SYN header (20 bytes) from [`CLIENT_PORT`] to `port` with the given data offset nibble.
pub(super) fn tcp(port: u16, data_offset: u8) -> Vec<u8> {
    tcp_between(CLIENT_PORT, port, data_offset)
}

/// A TCP SYN header (20 bytes) from `src_port` to `dst_port`.
pub(super) fn tcp_between(src_port: u16, dst_port: u16, data_offset: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src_port.to_be_bytes());
    t.extend_from_slice(&dst_port.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    t.extend_from_slice(&[data_offset << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// Malformed, truncated, fragmented and unusual frames are passed and each lands in its own
/// counter; a well-formed SYN with IPv4 options to the listener is still classified.
fn malformed_frames_are_passed_and_counted(mode: XdpMode) {
    let _pair = Pair::up();
    let mut attached = attach(IF_A, mode, false).unwrap();
    attached.add_listener(on_a(LISTENER_PORT)).unwrap();
    let (mac_a, mac_b) = (mac_of(NS_A, IF_A), mac_of(NS_B, IF_B));
    let eth = |ethertype: u16, payload: &[u8]| frame(mac_a, mac_b, ethertype, payload);
    let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();

    let frames = vec![
        // IHL 4 (< 5): malformed IPv4.
        eth(0x0800, &cat(ipv4(0x44, 40, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // Version 6 in an IPv4 EtherType: malformed IPv4.
        eth(0x0800, &cat(ipv4(0x65, 40, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // Total length below the header length: malformed IPv4.
        eth(0x0800, &cat(ipv4(0x45, 19, 0, 6, &[]), tcp(LISTENER_PORT, 5))),
        // The frame ends 10 bytes into the IPv4 header: truncated IPv4.
        eth(0x0800, &ipv4(0x45, 40, 0, 6, &[])[..10]),
        // IHL 15 (60 bytes), total length 80, but only 20 bytes of header in the frame:
        // truncated IPv4.
        eth(0x0800, &ipv4(0x4f, 80, 0, 6, &[])),
        // TCP data offset 4 (< 5): malformed TCP.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 6, &[]), tcp(LISTENER_PORT, 4))),
        // TCP data offset 15 (60 bytes) past the datagram and the frame: truncated TCP.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 6, &[]), tcp(LISTENER_PORT, 15))),
        // Only 10 bytes of TCP header: truncated TCP.
        eth(0x0800, &cat(ipv4(0x45, 30, 0, 6, &[]), tcp(LISTENER_PORT, 5)[..10].to_vec())),
        // First fragment (MF) of a TCP segment to the listener: passed as a fragment.
        eth(0x0800, &cat(ipv4(0x45, 40, 0x2000, 6, &[]), tcp(LISTENER_PORT, 5))),
        // A later fragment (offset 8 bytes): passed as a fragment.
        eth(0x0800, &cat(ipv4(0x45, 40, 0x0001, 6, &[]), tcp(LISTENER_PORT, 5))),
        // GRE (47): another protocol.
        eth(0x0800, &cat(ipv4(0x45, 40, 0, 47, &[]), vec![0; 20])),
        // An unknown EtherType, and a VLAN tag: other EtherTypes.
        eth(0x88b5, &[0; 46]),
        eth(0x8100, &[0; 46]),
        // A SYN with 4 bytes of IPv4 options (IHL 6) to the listener: classified, no socket.
        eth(0x0800, &cat(ipv4(0x46, 44, 0, 6, &[1, 1, 1, 0]), tcp(LISTENER_PORT, 5))),
    ];
    let c0 = attached.counters().unwrap();
    send_raw_from_b(&frames);
    let d = attached.counters().unwrap().since(&c0);
    let got = (
        d.pass_malformed_ipv4,
        d.pass_truncated_ipv4,
        d.pass_malformed_tcp,
        d.pass_truncated_tcp,
        d.pass_fragment,
        d.pass_other_protocol,
        d.pass_other_ethertype,
        d.redirect_failed,
    );
    assert_eq!(got, (3, 2, 1, 2, 2, 1, 2, 1), "{mode} mode: {d:?}");
    assert_eq!(d.redirected + d.pass_no_listener + d.pass_udp, 0, "{d:?}");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn malformed_frames_are_passed_and_counted_native() {
    malformed_frames_are_passed_and_counted(XdpMode::Native);
}

#[test]
fn malformed_frames_are_passed_and_counted_skb() {
    malformed_frames_are_passed_and_counted(XdpMode::Skb);
}

/// An ICMPv4 Destination Unreachable (`code`) B -> A quoting a TCP segment A:`from_port` ->
/// B:[`CLIENT_PORT`] (quoted header with `quoted_ihl`, protocol `quoted_protocol`, 8 bytes of
/// TCP as RFC 792 asks), next-hop MTU 1280 (RFC 1191 section 4).
fn dest_unreachable(code: u8, from_port: u16, quoted_ihl: u8, quoted_protocol: u8) -> Vec<u8> {
    let options = vec![1; usize::from(quoted_ihl - 5) * 4];
    let quoted = ipv4_between(ADDR_A, ADDR_B, 0x40 | quoted_ihl, 1500, 0x4000, quoted_protocol, &options);
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted);
    icmp.extend_from_slice(&tcp_between(from_port, CLIENT_PORT, 5)[..8]);
    let total_len = u16::try_from(20 + icmp.len()).unwrap();
    [ipv4(0x45, total_len, 0, 1, &[]), icmp].concat()
}

/// ICMPv4 fragmentation needed (type 3 code 4) quoting a segment sluice sent from a listener or
/// a backend flow's local end goes to the AF_XDP socket; quoting any other port, another code,
/// or a quoted datagram that is not TCP, it passes to the kernel.
fn icmp_frag_needed_is_steered(mode: XdpMode) {
    let _pair = Pair::up();
    let mut attached = attach(IF_A, mode, false).unwrap();
    attached.add_listener(on_a(LISTENER_PORT)).unwrap();
    attached.add_backend_flow(on_a(BACKEND_PORT)).unwrap();
    let _xsks = bind_xsks(&mut attached);
    let (mac_a, mac_b) = (mac_of(NS_A, IF_A), mac_of(NS_B, IF_B));
    let eth = |payload: Vec<u8>| frame(mac_a, mac_b, 0x0800, &payload);

    let c0 = attached.counters().unwrap();
    send_raw_from_b(&[
        // Quoting the listener's segment, and the backend flow's, and one with IPv4 options.
        eth(dest_unreachable(4, LISTENER_PORT, 5, 6)),
        eth(dest_unreachable(4, BACKEND_PORT, 5, 6)),
        eth(dest_unreachable(4, LISTENER_PORT, 7, 6)),
    ]);
    let d = attached.counters().unwrap().since(&c0);
    assert_eq!((d.redirected_icmp_ptb, d.pass_icmp), (3, 0), "{mode} mode: {d:?}");

    let c1 = attached.counters().unwrap();
    send_raw_from_b(&[
        // Another port's segment: the kernel's.
        eth(dest_unreachable(4, OTHER_PORT, 5, 6)),
        // Port unreachable (code 3) about the listener: not a path-MTU message.
        eth(dest_unreachable(3, LISTENER_PORT, 5, 6)),
        // The quoted datagram is UDP.
        eth(dest_unreachable(4, LISTENER_PORT, 5, 17)),
        // Cut short inside the quoted TCP ports.
        eth(dest_unreachable(4, LISTENER_PORT, 5, 6)[..20 + 8 + 20 + 2].to_vec()),
    ]);
    let d = attached.counters().unwrap().since(&c1);
    assert_eq!((d.redirected_icmp_ptb, d.pass_icmp), (0, 4), "{mode} mode: {d:?}");
    assert_eq!(d.redirected + d.redirect_failed + d.pass_malformed(), 0, "{d:?}");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn icmp_frag_needed_is_steered_native() {
    icmp_frag_needed_is_steered(XdpMode::Native);
}

#[test]
fn icmp_frag_needed_is_steered_skb() {
    icmp_frag_needed_is_steered(XdpMode::Skb);
}
