//! IPv6 through the XDP program (RFC 8200): kernel-made traffic (TCP to listeners and to other
//! ports, UDP, ping with its neighbour discovery) and hand-made frames (extension headers,
//! fragments, malformed and truncated headers, ICMPv6 Packet Too Big, the draining rule).

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

use sluice::datapath::xdp::loader::XdpMode;
use sluice_testbed::{in_netns, in_ns};

use super::frames::{CLIENT_PORT, frame, mac_of, send_raw_from_b, tcp, tcp_between};
use super::{
    ADDR6_A, ADDR6_B, BACKEND_PORT, IF_A, IF_B, LISTENER_PORT, NS_A, NS_B, OTHER_PORT, Pair, UDP_PORT, attach,
    bind_xsks, connect_from_b_to, on_a, wait_detached,
};

/// A port with only an IPv4 listener (198.51.100.201): IPv6 to it is not sluice's.
const V4_ONLY_PORT: u16 = 4437;
/// A port with a listener on `[::]`: every IPv6 address of hla0, and no IPv4 one.
const WILDCARD_PORT: u16 = 4438;

/// `[2001:db8:100::2]:port`, an IPv6 endpoint of sluice-hl-a.
fn on_a6(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ADDR6_A, port, 0, 0))
}

/// Kernel-made IPv6 traffic from sluice-hl-b: SYNs to a listener are classified for redirection
/// (no socket here, so `redirect_failed`, and the kernel refuses them), to other ports and to a
/// port whose listener is IPv4 only they pass; `[::]` takes the port on every IPv6 address but
/// not IPv4; UDP passes; ping -6 works, neighbour discovery included, through the kernel.
fn ipv6_traffic_is_classified(mode: XdpMode) {
    let _pair = Pair::up();
    let mut attached = attach(IF_A, mode, false).unwrap_or_else(|e| panic!("attach in {mode} mode: {e}"));
    attached.add_listener(on_a6(LISTENER_PORT)).unwrap();
    attached.add_listener(on_a(V4_ONLY_PORT)).unwrap();
    attached.add_listener(SocketAddr::from((Ipv6Addr::UNSPECIFIED, WILDCARD_PORT))).unwrap();
    assert_eq!(attached.listener_count(), 3);
    let c0 = attached.counters().unwrap();

    let refused = std::io::ErrorKind::ConnectionRefused;
    for _ in 0..5 {
        assert_eq!(connect_from_b_to(on_a6(LISTENER_PORT)), refused);
    }
    for _ in 0..2 {
        assert_eq!(connect_from_b_to(on_a6(WILDCARD_PORT)), refused);
    }
    for port in [OTHER_PORT, OTHER_PORT, V4_ONLY_PORT] {
        assert_eq!(connect_from_b_to(on_a6(port)), refused);
    }
    // The IPv6 wildcard does not take IPv4.
    assert_eq!(connect_from_b_to(on_a(WILDCARD_PORT)), refused);
    in_netns(NS_B, || {
        let s = UdpSocket::bind((super::ADDR6_B, 0)).unwrap();
        for _ in 0..3 {
            s.send_to(b"sluice", (ADDR6_A, UDP_PORT)).unwrap();
        }
    })
    .unwrap();
    let ping = in_ns(NS_B, "ping", &["-6", "-c", "3", "-i", "0.2", "-W", "2", &ADDR6_A.to_string()]);
    assert!(ping.is_ok(), "ping -6 through the kernel failed: {ping:?}");

    let d = attached.counters().unwrap().since(&c0);
    assert_eq!(d.redirect_failed, 7, "SYNs to the IPv6 listener and the wildcard: {d:?}");
    assert_eq!(d.redirected, 0, "nothing can be redirected without a socket: {d:?}");
    assert_eq!(d.pass_no_listener, 4, "other ports, the IPv4-only listener, IPv4 to [::]: {d:?}");
    assert_eq!(d.pass_udp, 3, "UDP: {d:?}");
    assert!(d.pass_icmpv6 >= 3, "echo requests and neighbour discovery: {d:?}");
    assert_eq!(d.pass_malformed() + d.pass_fragment + d.pass_other_protocol, 0, "{d:?}");

    // Removed: its SYNs pass.
    attached.remove_listener(on_a6(LISTENER_PORT)).unwrap();
    assert_eq!(attached.listener_count(), 2);
    let c1 = attached.counters().unwrap();
    assert_eq!(connect_from_b_to(on_a6(LISTENER_PORT)), refused);
    let d = attached.counters().unwrap().since(&c1);
    assert_eq!((d.pass_no_listener, d.redirect_failed), (1, 0), "{d:?}");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn ipv6_traffic_is_classified_native() {
    ipv6_traffic_is_classified(XdpMode::Native);
}

#[test]
fn ipv6_traffic_is_classified_skb() {
    ipv6_traffic_is_classified(XdpMode::Skb);
}

/// An IPv6 header `src` -> `dst` with `next_header` and the given Payload Length.
fn ipv6_between(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload_len: u16) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.extend_from_slice(&[next_header, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// An IPv6 packet B -> A: the fixed header (Payload Length from `payload`) and `payload`.
fn ipv6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap();
    [ipv6_between(ADDR6_B, ADDR6_A, next_header, len), payload.to_vec()].concat()
}

/// A Hop-by-Hop, Routing or Destination Options header of `(units + 1) * 8` bytes whose Next
/// Header is `next` (filled with a PadN option; the program reads only the first two bytes).
fn ext(next: u8, units: u8) -> Vec<u8> {
    let len = (usize::from(units) + 1) * 8;
    let mut h = vec![next, units, 1, u8::try_from(len - 4).unwrap()];
    h.resize(len, 0);
    h
}

/// A Fragment header (RFC 8200 section 4.5) whose Next Header is `next`: the first fragment.
fn fragment(next: u8) -> Vec<u8> {
    vec![next, 0, 0, 1, 0, 0, 0, 7]
}

/// An ICMPv6 Packet Too Big (MTU 1280) B -> A quoting a TCP segment A:`from_port` ->
/// B:`to_port`, as much of it as `quoted_len` bytes (the IPv6 header and 8 bytes of TCP when
/// `None`).
fn packet_too_big(from_port: u16, to_port: u16, quoted_len: Option<usize>) -> Vec<u8> {
    let mut quoted = ipv6_between(ADDR6_A, ADDR6_B, 6, 1440);
    quoted.extend_from_slice(&tcp_between(from_port, to_port, 5)[..8]);
    quoted.truncate(quoted_len.unwrap_or(quoted.len()));
    let icmp = [vec![2, 0, 0, 0, 0, 0, 0x05, 0x00], quoted].concat();
    ipv6(58, &icmp)
}

/// Hand-made IPv6 frames with AF_XDP sockets bound: each lands in its own counter. Extension
/// headers up to the limit are skipped and the segment steered; a longer chain, a Fragment
/// header, a misplaced Hop-by-Hop header, malformed and truncated headers pass. A Packet Too Big
/// quoting a listener's or a backend flow's segment is redirected, others pass. While the
/// listener drains, only the flow kept in the drain map (and path-MTU messages about it) still
/// reaches sluice.
fn ipv6_frames_are_steered_and_counted(mode: XdpMode) {
    const HOP: u8 = 0;
    const TCP: u8 = 6;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const ESP: u8 = 50;
    const DEST: u8 = 60;
    let _pair = Pair::up();
    let mut attached = attach(IF_A, mode, false).unwrap();
    attached.add_listener(on_a6(LISTENER_PORT)).unwrap();
    attached.add_listener(on_a(V4_ONLY_PORT)).unwrap();
    attached.add_backend_flow(on_a6(BACKEND_PORT)).unwrap();
    let _xsks = bind_xsks(&mut attached);
    let (mac_a, mac_b) = (mac_of(NS_A, IF_A), mac_of(NS_B, IF_B));
    let eth = |payload: Vec<u8>| frame(mac_a, mac_b, 0x86dd, &payload);
    let syn = || tcp(LISTENER_PORT, 5);
    let cat = |parts: &[Vec<u8>]| parts.concat();

    let frames = vec![
        // Redirected (5): a plain SYN; behind Hop-by-Hop, Routing and Destination Options; behind
        // four extension headers (the limit); and a Packet Too Big about the listener's flow
        // and about the backend flow's.
        eth(ipv6(TCP, &syn())),
        eth(ipv6(HOP, &cat(&[ext(ROUTING, 0), ext(DEST, 1), ext(TCP, 0), syn()]))),
        eth(ipv6(HOP, &cat(&[ext(DEST, 0), ext(ROUTING, 0), ext(DEST, 0), ext(TCP, 0), syn()]))),
        eth(packet_too_big(LISTENER_PORT, CLIENT_PORT, None)),
        eth(packet_too_big(BACKEND_PORT, CLIENT_PORT, None)),
        // Redirected as a backend flow's return traffic (1).
        eth(ipv6(TCP, &tcp(BACKEND_PORT, 5))),
        // Five extension headers: over the limit.
        eth(ipv6(DEST, &cat(&[ext(DEST, 0), ext(DEST, 0), ext(DEST, 0), ext(DEST, 0), ext(TCP, 0), syn()]))),
        // Fragments (2): the first of a SYN, and one behind a Destination Options header.
        eth(ipv6(FRAGMENT, &cat(&[fragment(TCP), syn()]))),
        eth(ipv6(DEST, &cat(&[ext(FRAGMENT, 0), fragment(TCP), syn()]))),
        // Malformed IPv6 (3): Hop-by-Hop after another header; version 4; a Payload Length
        // shorter than the extension headers.
        eth(ipv6(DEST, &cat(&[ext(HOP, 0), ext(TCP, 0), syn()]))),
        eth([vec![0x40], ipv6(TCP, &syn())[1..].to_vec()].concat()),
        eth([ipv6_between(ADDR6_B, ADDR6_A, HOP, 8), ext(TCP, 1), syn()].concat()),
        // Truncated IPv6 (2): the frame ends inside the fixed header; inside the second
        // extension header.
        eth(ipv6(TCP, &syn())[..30].to_vec()),
        eth(ipv6(HOP, &cat(&[ext(DEST, 0), vec![TCP]]))),
        // Truncated TCP (1): 10 bytes of it.
        eth(ipv6(TCP, &syn()[..10])),
        // Other protocols (1): ESP.
        eth(ipv6(ESP, &[0; 24])),
        // No listener (2): another port; the port of an IPv4-only listener, on its IPv4-mapped
        // address.
        eth(ipv6(TCP, &tcp(OTHER_PORT, 5))),
        eth([ipv6_between(ADDR6_B, super::ADDR_A.to_ipv6_mapped(), TCP, 20), tcp(V4_ONLY_PORT, 5)].concat()),
        // ICMPv6 passed (3): a Packet Too Big about another port's segment; one cut short
        // inside the quoted TCP ports; an echo request.
        eth(packet_too_big(OTHER_PORT, CLIENT_PORT, None)),
        eth(packet_too_big(LISTENER_PORT, CLIENT_PORT, Some(42))),
        eth(ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1])),
    ];
    let c0 = attached.counters().unwrap();
    send_raw_from_b(&frames);
    let d = attached.counters().unwrap().since(&c0);
    let got = (
        d.redirected,
        d.redirected_icmp_ptb,
        d.redirected_backend,
        d.pass_ipv6_extension_limit,
        d.pass_fragment,
        d.pass_malformed_ipv6,
        d.pass_truncated_ipv6,
        d.pass_truncated_tcp,
        d.pass_other_protocol,
        d.pass_no_listener,
    );
    assert_eq!(got, (3, 2, 1, 1, 2, 3, 2, 1, 1, 2), "{mode} mode: {d:?}");
    // At least: sluice-hl-b's own router solicitations and MLD reports may come on top.
    assert!(d.pass_icmpv6 >= 3, "{mode} mode: {d:?}");
    assert_eq!(d.redirect_failed, 0, "every queue has a socket: {d:?}");

    // Draining: only the kept flow (from CLIENT_PORT) and messages about it reach sluice.
    attached.add_drain_flow(SocketAddr::from((ADDR6_B, CLIENT_PORT)), LISTENER_PORT).unwrap();
    attached.drain_listener(on_a6(LISTENER_PORT)).unwrap();
    let c1 = attached.counters().unwrap();
    send_raw_from_b(&[
        eth(ipv6(TCP, &syn())),
        eth(packet_too_big(LISTENER_PORT, CLIENT_PORT, None)),
        eth(ipv6(TCP, &tcp_between(CLIENT_PORT + 1, LISTENER_PORT, 5))),
        eth(packet_too_big(LISTENER_PORT, CLIENT_PORT + 1, None)),
    ]);
    let d = attached.counters().unwrap().since(&c1);
    assert_eq!((d.redirected, d.redirected_icmp_ptb, d.pass_draining), (1, 1, 2), "{mode} mode: {d:?}");
    attached.remove_drain_flow(SocketAddr::from((ADDR6_B, CLIENT_PORT)), LISTENER_PORT).unwrap();
    let c2 = attached.counters().unwrap();
    send_raw_from_b(&[eth(ipv6(TCP, &syn()))]);
    let d = attached.counters().unwrap().since(&c2);
    assert_eq!((d.redirected, d.pass_draining), (0, 1), "{mode} mode: {d:?}");
    drop(attached);
    assert!(wait_detached());
}

#[test]
fn ipv6_frames_are_steered_and_counted_native() {
    ipv6_frames_are_steered_and_counted(XdpMode::Native);
}

#[test]
fn ipv6_frames_are_steered_and_counted_skb() {
    ipv6_frames_are_steered_and_counted(XdpMode::Skb);
}
