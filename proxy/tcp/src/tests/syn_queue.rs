//! Tests for the SYN queue and SYN cookies: cookies when the queue is full (the options they
//! carry), forged cookies, SYN floods in bounded memory, the connection limit, the queue slot
//! freed on establishment.

use super::*;

fn syn_from(t: &mut T, port: u16, seq: u32, ws: Option<u8>, sack: bool) {
    t.send(&tcp::Repr {
        src_port: port,
        seq_number: seq,
        flags: Flags::SYN,
        max_seg_size: Some(1460),
        window_scale: ws,
        sack_permitted: sack,
        ..TEMPL
    });
}

#[test]
fn syn_cookies_when_queue_full() {
    let mut t = listening_with(Config { syn_queue_len: 1, window_scale: true, ..config() });
    syn_from(&mut t, 1000, 500, Some(7), true);
    recv!(t, flags: Flags::SYN | Flags::ACK);
    assert_eq!(t.ep.connection_count(), 1);
    // Queue full: a cookie, no state.
    syn_from(&mut t, 1001, 700, Some(7), true);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: 701);
    assert_eq!(o.wscale, Some(1)); // 64 KiB needs a shift of 1
    assert!(o.sack_permitted);
    assert_eq!(t.ep.connection_count(), 1);
    assert_eq!(t.ep.stats().syn_cookies_sent, 1);
    // The final ACK recreates the connection with what the cookie carried.
    t.send(&tcp::Repr {
        src_port: 1001,
        seq_number: 701,
        ack_number: o.seq.wrapping_add(1),
        window_len: 100,
        payload: b"GET",
        ..TEMPL
    });
    assert_eq!(t.ep.stats().syn_cookies_validated, 1);
    let tup = FourTuple { local: SocketAddr::new(LOCAL_IP, LOCAL_PORT), remote: SocketAddr::new(REMOTE_IP, 1001) };
    let h = t.ep.lookup(&tup).unwrap();
    assert_eq!(t.ep.state(h), Some(State::Established));
    let evs: Vec<_> = std::iter::from_fn(|| t.ep.poll_event()).collect();
    assert!(evs.contains(&(h, Event::Established)));
    let mut b = [0u8; 8];
    assert_eq!(t.ep.recv(h, &mut b), Ok(3));
    // The peer's window scale (7) from the cookie applies: 100 << 7 = 12800 bytes may be sent,
    // as 8 full segments of the cookie's MSS (1460); the 1120-byte tail waits (sender SWS
    // avoidance, RFC 9293 3.8.6.2.1).
    t.ep.send(h, &vec![0u8; 20_000]).unwrap();
    let segs: Vec<usize> = t.recv_all().iter().filter(|o| o.dst_port == 1001).map(|o| o.payload.len()).collect();
    assert_eq!(segs, vec![1460; 8]);
}

#[test]
fn syn_cookie_forged_ack_is_reset() {
    let mut t = listening_with(Config { syn_queue_len: 0, ..config() });
    syn_from(&mut t, 1001, 700, None, false);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK);
    t.send(&tcp::Repr { src_port: 1001, seq_number: 701, ack_number: o.seq.wrapping_add(2), ..TEMPL });
    recv!(t, flags: Flags::RST);
    assert_eq!(t.drops(DropReason::BadCookie), 1);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn syn_flood_does_not_grow_memory() {
    let mut t = listening_with(Config { syn_queue_len: 16, ..config() });
    for i in 0..5000u32 {
        let src = Ipv4Addr::from(0xC633_6400u32 | (i & 0xff)).into();
        t.send_from(src, &tcp::Repr { src_port: 1024 + (i >> 8) as u16, seq_number: i, flags: Flags::SYN, ..TEMPL });
        while t.ep.poll_transmit(t.now, &mut [0u8; 1600]).is_some() {}
    }
    assert_eq!(t.ep.connection_count(), 16);
    assert_eq!(t.ep.stats().syn_cookies_sent, 5000 - 16);
    let mut t2 = listening_with(Config { syn_queue_len: 16, syn_cookies: false, ..config() });
    for i in 0..100u32 {
        t2.send(&tcp::Repr { src_port: 1024 + i as u16, seq_number: i, flags: Flags::SYN, ..TEMPL });
    }
    assert_eq!(t2.ep.connection_count(), 16);
    assert_eq!(t2.drops(DropReason::SynQueueFull), 84);
}

#[test]
fn max_connections_bounds_the_table() {
    let mut t = listening_with(Config { max_connections: 3, ..config() });
    for i in 0..10u16 {
        syn_from(&mut t, 3000 + i, 1, None, false);
    }
    assert_eq!(t.ep.connection_count(), 3);
    assert_eq!(t.drops(DropReason::SynQueueFull), 7);
    assert_eq!(
        t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, 5000), SocketAddr::new(REMOTE_IP, 80)),
        Err(crate::ConnectError::TooManyConnections)
    );
}

#[test]
fn a_full_table_recycles_the_oldest_time_wait() {
    let config = Config { max_connections: 1, ..config() };
    let mut t = time_wait_in(fin_wait_2_in(fin_wait_1_in(established_with(config))));
    let old = t.h();
    let _ = t.events();
    // The table is full of TIME-WAIT: a new client gets in, the old 4-tuple is let go.
    syn_from(&mut t, 4000, 1, None, false);
    recv!(t, flags: Flags::SYN | Flags::ACK, dst_port: 4000);
    assert_eq!(t.ep.stats().time_wait_recycled, 1);
    assert_eq!(t.ep.state(old), None);
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 1);
    // A table full of live connections still refuses.
    syn_from(&mut t, 4001, 1, None, false);
    recv_nothing!(t);
    assert_eq!(t.drops(DropReason::SynQueueFull), 1);
    assert_eq!(t.ep.stats().time_wait_recycled, 1);
}

#[test]
fn syn_queue_frees_on_establishment() {
    let mut t = listening_with(Config { syn_queue_len: 1, syn_cookies: false, ..config() });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    let o = recv!(t);
    send!(t, ack_number: o.seq.wrapping_add(1));
    // Established: the queue slot is free again.
    syn_from(&mut t, 2000, 1, None, false);
    recv!(t, flags: Flags::SYN | Flags::ACK, dst_port: 2000);
    assert_eq!(t.ep.connection_count(), 2);
}
