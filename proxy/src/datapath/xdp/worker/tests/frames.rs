//! Frames in and answers out on one worker: refusals answered in place, drops counted by reason,
//! the echo listener through frames, a SYN past a connection limit.

use super::*;
use crate::datapath::xdp::worker::dispatch::REFUSAL_RSTS_PER_SECOND;

#[test]
fn syn_to_refusing_listener_gets_rst_ack() {
    let mut d = dispatch();
    let out = reply(&mut d, &syn(443)).expect("a RST");
    let seg = parse_frame(&out, Checksum::Verify).unwrap();
    assert_eq!(seg.tcp.flags, Flags::RST | Flags::ACK);
    assert_eq!((seg.tcp.seq_number, seg.tcp.ack_number), (0, 1001));
    assert_eq!((seg.ip.src_addr(), seg.ip.dst_addr()), (PROXY.into(), CLIENT.into()));
    assert_eq!((seg.tcp.src_port, seg.tcp.dst_port), (443, 40000));
    assert_eq!(seg.eth.dst_addr, CLIENT_MAC);
    assert_eq!(d.counters.rst_sent, 1);
}

#[test]
fn a_refusing_listener_answers_at_most_its_rst_budget_a_second() {
    let mut d = dispatch();
    let answered = |d: &mut Dispatch, now: Instant, n: u16| {
        let mut answered = 0;
        for i in 0..n {
            let f = frame(Seg { src_port: 1024 + i, dst_port: 443, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] });
            let mut buf = vec![0u8; 2048];
            buf[..f.len()].copy_from_slice(&f);
            answered += u32::from(matches!(d.on_frame(now, &mut buf, f.len(), Source::Rx), Verdict::Reply(_)));
        }
        answered
    };
    assert_eq!(answered(&mut d, T0, 1500), REFUSAL_RSTS_PER_SECOND);
    assert_eq!(d.counters.rst_refusal_limited, 1500 - u64::from(REFUSAL_RSTS_PER_SECOND));
    // A second later the budget is whole again.
    assert_eq!(answered(&mut d, T0 + Duration::from_secs(1), 10), 10);
    assert_eq!(d.counters.rst_sent, u64::from(REFUSAL_RSTS_PER_SECOND) + 10);
}

#[test]
fn rst_to_refusing_listener_is_never_answered() {
    let mut d = dispatch();
    let rst = frame(Seg { src_port: 40000, dst_port: 443, flags: Flags::RST, seq: 5, ack: 0, payload: &[] });
    assert!(reply(&mut d, &rst).is_none());
    assert_eq!((d.counters.dropped_rst, d.counters.rst_sent), (1, 0));
}

#[test]
fn drops_are_counted_by_reason() {
    let mut d = dispatch();
    assert!(reply(&mut d, &syn(80)).is_none());
    assert_eq!(d.counters.dropped_no_listener, 1);
    let mut f = frame(Seg { src_port: 40000, dst_port: 443, flags: Flags::ACK, seq: 1, ack: 1, payload: b"hello" });
    let last = f.len() - 1;
    f[last] ^= 1;
    assert!(reply(&mut d, &f).is_none());
    assert_eq!(d.counters.dropped_checksum, 1);
    let f = syn(443);
    for len in 0..f.len() {
        assert!(reply(&mut d, &f[..len]).is_none(), "truncated to {len}");
    }
    let c = d.counters;
    assert_eq!(c.dropped_malformed + c.dropped_unsupported + c.dropped_checksum, 1 + f.len() as u64);
}

#[test]
fn echo_listener_handshakes_and_echoes_through_frames() {
    let mut d = dispatch();
    assert_eq!(on(&mut d, &syn(7)).0, Verdict::Consumed);
    let out = transmit(&mut d, T0);
    assert_eq!(out.len(), 1);
    let synack = parse_frame(&out[0], Checksum::Verify).unwrap();
    assert_eq!(synack.tcp.flags, Flags::SYN | Flags::ACK);
    assert_eq!(synack.tcp.ack_number, 1001);
    assert_eq!((synack.eth.src_addr, synack.eth.dst_addr), (PROXY_MAC, CLIENT_MAC));
    let iss = synack.tcp.seq_number;
    let data = first_data(7, iss, b"ping");
    let _ = on(&mut d, &data);
    let out = transmit(&mut d, T0);
    let echoed: Vec<u8> =
        out.iter().map(|f| parse_frame(f, Checksum::Verify).unwrap()).flat_map(|s| s.tcp.payload.to_vec()).collect();
    assert_eq!(echoed, b"ping");
    assert_eq!(d.counters.connections_established, 1);
    assert_eq!(d.counters.echo_bytes, 4);
}

#[test]
fn a_syn_past_the_per_client_limit_gets_a_rst_in_place_and_is_counted() {
    let mut d = dispatch();
    let mut s = services(&d, &[(7, ListenerMode::Echo)]);
    s.limits = crate::config::Limits { max_connections_per_client: 1, ..Default::default() };
    d.reload(s);
    establish(&mut d, 40000, 7, T0);
    assert_eq!(d.conn_counts.total(), 1);
    let out =
        reply(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }))
            .expect("a RST written in place");
    assert_eq!(parse_frame(&out, Checksum::Verify).unwrap().tcp.flags, Flags::RST | Flags::ACK);
    assert_eq!(d.counters.refused_limit_client, 1);
    assert_eq!(d.tcp().connection_count(), 1, "no state for the refused SYN");
}

/// An ICMP fragmentation-needed message from a router quoting sluice's segment with `seq`.
fn frag_needed(seq: u32, mtu: u32) -> Vec<u8> {
    use sluice_wire::icmp;
    let router = Ipv4Addr::new(198, 51, 100, 254);
    let quoted =
        icmp::Quoted { src_addr: PROXY.into(), dst_addr: CLIENT.into(), src_port: 7, dst_port: 40000, seq_number: seq };
    let message = icmp::Repr { mtu, quoted };
    let ip = sluice_wire::ip::Repr::new(router.into(), PROXY.into(), Protocol::Icmp, 0, 64).unwrap();
    let eth = ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: PROXY_MAC, ethertype: EtherType::Ipv4 };
    let mut buf = vec![0u8; 256];
    let len = sluice_wire::emit_icmp_frame(&mut buf, &eth, &ip, &message).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn a_path_mtu_message_lowers_the_segment_size_only_for_a_sequence_number_in_flight() {
    let mut d = dispatch();
    let iss = establish(&mut d, 40000, 7, T0);
    // The echo's 4 bytes (seq iss + 1) are in flight, unacknowledged.
    let _ = on(&mut d, &first_data(7, iss, b"ping"));
    assert_eq!(payload(&transmit(&mut d, T0)), b"ping");
    // A quote of a sequence number never sent, or of another port: ignored (RFC 5927 4.1).
    assert_eq!(on(&mut d, &frag_needed(iss.wrapping_add(100_000), 1280)).0, Verdict::Consumed);
    assert_eq!((d.counters.path_mtu_lowered, d.counters.path_mtu_ignored), (0, 1));
    // The real one lowers the MSS; its segment is sent again.
    assert_eq!(on(&mut d, &frag_needed(iss.wrapping_add(1), 1280)).0, Verdict::Consumed);
    assert_eq!((d.counters.path_mtu_lowered, d.counters.path_mtu_ignored), (1, 1));
    assert_eq!(payload(&transmit(&mut d, T0)), b"ping", "resent from SND.UNA at the new size");
    // A corrupted message is dropped as a bad checksum, not applied.
    let mut bad = frag_needed(iss.wrapping_add(1), 600);
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let _ = on(&mut d, &bad);
    assert_eq!((d.counters.path_mtu_lowered, d.counters.dropped_checksum), (1, 1));
}

/// The SYN-ACK of `d` to a SYN on the echo listener, if one goes out now.
fn syn_ack_frames(d: &mut Dispatch, now: Instant) -> Vec<Vec<u8>> {
    transmit(d, now).into_iter().filter(|f| parse_frame(f, Checksum::Verify).is_ok_and(|s| s.tcp.flags.syn())).collect()
}

#[test]
fn replies_go_to_the_next_hop_of_the_kernels_tables_not_to_the_mac_a_frame_came_from() {
    let mut d = dispatch();
    let mut spoofed = syn(7);
    spoofed[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x99]);
    let _ = on(&mut d, &spoofed);
    let out = syn_ack_frames(&mut d, T0);
    assert_eq!(out.len(), 1);
    assert_eq!(parse_frame(&out[0], Checksum::Verify).unwrap().eth.dst_addr, CLIENT_MAC);
}

#[test]
fn a_segment_waits_for_its_next_hop_then_goes_and_gives_up_after_the_hold_time() {
    use crate::datapath::xdp::worker::dispatch::next_hop::HOLD_TIME;
    let mut d = dispatch();
    d.next_hops().set_neighbour(IpAddr::V4(CLIENT), NudState::Incomplete, None);
    let _ = on(&mut d, &syn(7));
    assert!(syn_ack_frames(&mut d, T0).is_empty(), "no MAC address yet: held");
    assert_eq!((d.held(), d.counters.nexthop_held), (1, 1));
    assert_eq!(d.take_triggers(), [IpAddr::V4(CLIENT)], "the loop is asked to trigger resolution");
    // The kernel resolved it (the reader applied an RTM_NEWNEIGH): the held SYN-ACK goes.
    d.next_hops().set_neighbour(IpAddr::V4(CLIENT), NudState::Reachable, Some(CLIENT_MAC));
    let out = syn_ack_frames(&mut d, T0 + Duration::from_millis(5));
    assert_eq!(out.len(), 1);
    assert_eq!(parse_frame(&out[0], Checksum::Verify).unwrap().eth.dst_addr, CLIENT_MAC);
    assert_eq!((d.held(), d.counters.nexthop_released), (0, 1));

    // Never resolved: dropped after the hold time, counted.
    let mut d = dispatch();
    d.next_hops().set_neighbour(IpAddr::V4(CLIENT), NudState::Failed, None);
    let _ = on(&mut d, &syn(7));
    assert!(syn_ack_frames(&mut d, T0).is_empty());
    assert_eq!(d.held(), 1);
    let _ = transmit(&mut d, T0 + HOLD_TIME);
    // The first is dropped; the stack's retransmission of it waits in its place.
    assert_eq!(d.counters.dropped_no_neighbor, 1);
    assert_eq!((d.held(), d.counters.nexthop_held), (1, 2));
}

#[test]
fn a_destination_without_a_route_through_the_interface_is_dropped_and_counted() {
    let mut d = dispatch();
    d.next_hops().remove_route(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24, 0);
    let _ = on(&mut d, &syn(7));
    assert!(syn_ack_frames(&mut d, T0).is_empty());
    assert_eq!((d.held(), d.counters.dropped_no_route), (0, 1));
    assert!(d.take_triggers().is_empty());
}

#[test]
fn segments_from_sources_no_peer_can_have_are_never_answered() {
    let mut d = dispatch();
    let bad = [Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1), Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, PROXY];
    for (i, src) in bad.into_iter().enumerate() {
        for port in [7, 443] {
            let syn = frame_from(
                src,
                Seg { src_port: 40000, dst_port: port, flags: Flags::SYN, seq: 1, ack: 0, payload: &[] },
            );
            assert!(reply(&mut d, &syn).is_none(), "{src}:{port} was answered in place");
        }
        assert_eq!(d.counters.dropped_bad_source, 2 * (i as u64 + 1), "{src}");
    }
    assert!(transmit(&mut d, T0).is_empty(), "nothing for the stack to send either");
    assert_eq!(d.tcp().connection_count(), 0);
    // A real client still gets its SYN-ACK.
    let _ = on(&mut d, &syn(7));
    assert_eq!(transmit(&mut d, T0).len(), 1);
}

#[test]
fn a_connection_in_time_wait_gives_back_its_place_under_the_limits() {
    let mut d = dispatch();
    let mut s = services(&d, &[(7, ListenerMode::Echo)]);
    s.limits = crate::config::Limits { max_connections_per_client: 1, ..Default::default() };
    d.reload(s);
    let iss = establish(&mut d, 40000, 7, T0);
    assert_eq!(d.conn_counts.total(), 1);
    // sluice closes first (as when a backend ends a relay), the client answers with its FIN:
    // sluice's side is in TIME-WAIT, which guards the 4-tuple but is no client's connection.
    let tuple = FourTuple { local: SocketAddr::from((PROXY, 7)), remote: SocketAddr::from((CLIENT, 40000)) };
    let h = d.tcp.lookup(&tuple).unwrap();
    d.tcp.close(h);
    let fin = transmit(&mut d, T0);
    assert!(parse_frame(&fin[0], Checksum::Verify).unwrap().tcp.flags.fin());
    let seg = Seg {
        src_port: 40000,
        dst_port: 7,
        flags: Flags::FIN | Flags::ACK,
        seq: 1001,
        ack: iss.wrapping_add(2),
        payload: &[],
    };
    let _ = on(&mut d, &frame(seg));
    d.process(T0);
    let last_ack = transmit(&mut d, T0);
    assert_eq!(parse_frame(&last_ack[0], Checksum::Verify).unwrap().tcp.flags, Flags::ACK);
    assert_eq!(d.tcp().state(h), Some(TcpState::TimeWait));
    assert_eq!(d.conn_counts.total(), 0, "the place is free at TIME-WAIT, not 2 MSL later");
    // The same client connects again at once.
    establish(&mut d, 40001, 7, T0);
    assert_eq!(d.counters.refused_limit_client, 0);
    assert_eq!(d.conn_counts.total(), 1);
}

/// A frame the XDP program marked (its cookie validated by the kernel) opens a connection
/// without any SYN seen here, with the conservative options (no timestamps: MSS 536); the same
/// frame unmarked is a bare ACK to a listener that sent no cookie lately: a RST, nothing opened.
#[test]
fn a_marked_cookie_ack_opens_a_connection_an_unmarked_one_does_not() {
    let mut d = dispatch();
    let data = first_data(7, 0x4000_0000, b"ping");
    let mut buf = vec![0u8; 2048];
    buf[..data.len()].copy_from_slice(&data);
    assert_eq!(d.on_frame(T0, &mut buf, data.len(), Source::Rx), Verdict::Consumed);
    let out = transmit(&mut d, T0);
    assert_eq!(out.len(), 1);
    assert_eq!(parse_frame(&out[0], Checksum::Verify).unwrap().tcp.flags, Flags::RST);
    assert_eq!(d.tcp.stats().drops_for(sluice_tcp::DropReason::CookieNotRecent), 1);
    assert_eq!(d.tcp.connection_count(), 0);

    buf[..data.len()].copy_from_slice(&data);
    assert_eq!(d.on_frame(T0, &mut buf, data.len(), Source::RxCookie), Verdict::Consumed);
    assert_eq!(d.tcp.stats().xdp_cookie_acks, 1);
    let out = transmit(&mut d, T0);
    let segs: Vec<_> = out.iter().map(|f| parse_frame(f, Checksum::Verify).unwrap()).collect();
    let echoed: Vec<u8> = segs.iter().flat_map(|s| s.tcp.payload.to_vec()).collect();
    assert_eq!(echoed, b"ping");
    assert!(segs.iter().all(|s| s.tcp.seq_number.wrapping_sub(0x4000_0001) < 10 && s.tcp.timestamp.is_none()));
    assert_eq!(d.counters.connections_established, 1);
}
