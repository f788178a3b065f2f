//! Tests for the SYN queue and SYN cookies: cookies when the queue is full (the options they
//! carry), forged cookies, SYN floods in bounded memory, the connection limit, the queue slot
//! freed on establishment.

use super::*;
use crate::syncookie::CookieOptions;

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

#[test]
fn bare_ack_without_recent_cookies_is_not_checked() {
    let mut t = listening_with(Config { syn_queue_len: 1, ..config() });
    // No cookie was ever sent: an ACK is not checked as one; LISTEN answers it with a RST.
    t.send(&tcp::Repr { src_port: 1001, seq_number: 701, ack_number: 12345, ..TEMPL });
    recv!(t, flags: Flags::RST, seq: 12345);
    assert_eq!(t.drops(DropReason::CookieNotRecent), 1);
    assert_eq!(t.drops(DropReason::BadCookie), 0);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn cookies_are_checked_for_two_periods_after_the_last_one() {
    let mut t = listening_with(Config { syn_queue_len: 0, ..config() });
    syn_from(&mut t, 1001, 700, None, false);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK);
    // Within the two periods: a wrong cookie is checked (and fails) ...
    t.send(&tcp::Repr { src_port: 1002, seq_number: 901, ack_number: 5, ..TEMPL });
    recv!(t, flags: Flags::RST);
    assert_eq!(t.drops(DropReason::BadCookie), 1);
    // ... and a right one opens the connection.
    t.advance(Duration::from_secs(60));
    t.send(&tcp::Repr { src_port: 1001, seq_number: 701, ack_number: o.seq.wrapping_add(1), ..TEMPL });
    assert_eq!(t.ep.stats().syn_cookies_validated, 1);
    assert_eq!(t.ep.connection_count(), 1);
    // Two periods after the last cookie, ACKs are no longer checked.
    t.advance(Duration::from_secs(70));
    t.recv_all();
    t.send(&tcp::Repr { src_port: 1003, seq_number: 901, ack_number: 5, ..TEMPL });
    recv!(t, flags: Flags::RST, dst_port: 1003);
    assert_eq!(t.drops(DropReason::CookieNotRecent), 1);
    assert_eq!(t.drops(DropReason::BadCookie), 1);
}

#[test]
fn spoofed_ack_flood_opens_nothing() {
    let mut t = listening_with(Config { syn_queue_len: 4, rst_limit: 10, ..config() });
    for i in 0..100_000u32 {
        let seg = tcp::Repr {
            src_port: 1024 + (i % 60_000) as u16,
            seq_number: i.wrapping_mul(2_654_435_761),
            ack_number: i.wrapping_mul(40_503),
            ..TEMPL
        };
        t.send(&seg);
        while t.ep.poll_transmit(t.now, &mut [0u8; 1600]).is_some() {}
    }
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.drops(DropReason::CookieNotRecent), 100_000);
    assert_eq!(t.ep.stats().syn_cookies_validated, 0);
    // The RSTs are rate-limited.
    assert!(t.ep.stats().rsts_rate_limited >= 100_000 - 10);
}

/// An ACK validated elsewhere (the XDP program) with what its SYN-ACK encoded, timestamps on.
#[test]
fn accepted_cookie_ack_opens_established_with_its_options() {
    let cfg = Config { window_scale: true, timestamps: true, ..config() };
    let mut t = listening_with(cfg);
    let iss = 0x1234_5678u32;
    let tsecr = 0xdead_be00u32;
    let seg = tcp::Repr {
        src_port: 1001,
        seq_number: 701,
        ack_number: iss.wrapping_add(1),
        window_len: 100,
        timestamp: Some(Timestamp { tsval: 5000, tsecr }),
        payload: b"hello",
        ..TEMPL
    };
    let ip = ip::Repr::new(REMOTE_IP, LOCAL_IP, ip::Protocol::Tcp, seg.buffer_len(), 64).unwrap();
    let opts = CookieOptions { mss: 1300, window_scale: Some(7), sack_permitted: true };
    t.ep.accept_cookie_ack(t.now, &ip, &seg, opts);
    t.ep.check_invariants().unwrap();
    assert_eq!(t.ep.stats().xdp_cookie_acks, 1);
    assert_eq!(t.ep.stats().syn_cookies_validated, 0);
    let tup = FourTuple { local: SocketAddr::new(LOCAL_IP, LOCAL_PORT), remote: SocketAddr::new(REMOTE_IP, 1001) };
    let h = t.ep.lookup(&tup).unwrap();
    assert_eq!(t.ep.state(h), Some(State::Established));
    let evs: Vec<_> = std::iter::from_fn(|| t.ep.poll_event()).collect();
    assert!(evs.contains(&(h, Event::Established)));
    let mut b = [0u8; 8];
    assert_eq!(t.ep.recv(h, &mut b), Ok(5));
    // The peer's window scale (7) applies, segments are of the cookie's MSS (1300 less the
    // 12-byte timestamp option), and our TSval continues from the SYN-ACK's (TSecr).
    t.ep.send(h, &vec![0u8; 20_000]).unwrap();
    let segs: Vec<Out> = t.recv_all().into_iter().filter(|o| o.dst_port == 1001).collect();
    assert!(
        segs.iter().any(|o| o.payload.len() == 1288),
        "{:?}",
        segs.iter().map(|o| o.payload.len()).collect::<Vec<_>>()
    );
    assert!(segs.iter().map(|o| o.payload.len()).sum::<usize>() > 10_000);
    for o in &segs {
        let ts = o.ts.expect("timestamps in use");
        assert_eq!(ts.tsecr, 5000);
        assert!(ts.tsval.wrapping_sub(tsecr) as i32 >= 0 && ts.tsval.wrapping_sub(tsecr) < 10);
        assert!(o.seq.wrapping_sub(iss) >= 1);
    }
    // The same ACK again is a segment of the connection now, not a second one.
    t.ep.accept_cookie_ack(t.now, &ip, &seg, opts);
    assert_eq!(t.ep.stats().xdp_cookie_acks, 1);
    assert_eq!(t.ep.connection_count(), 1);
}

/// Without timestamps the XDP cookie carries nothing: the caller passes the defaults.
#[test]
fn accepted_cookie_ack_without_timestamps_and_outside_listen() {
    let mut t = listening_with(Config { window_scale: true, timestamps: true, ..config() });
    let seg = tcp::Repr { src_port: 1001, seq_number: 701, ack_number: 99, window_len: 10_000, ..TEMPL };
    let ip = ip::Repr::new(REMOTE_IP, LOCAL_IP, ip::Protocol::Tcp, seg.buffer_len(), 64).unwrap();
    let opts = CookieOptions { mss: 536, window_scale: None, sack_permitted: false };
    t.ep.accept_cookie_ack(t.now, &ip, &seg, opts);
    let tup = FourTuple { local: SocketAddr::new(LOCAL_IP, LOCAL_PORT), remote: SocketAddr::new(REMOTE_IP, 1001) };
    let h = t.ep.lookup(&tup).unwrap();
    t.ep.send(h, &[0u8; 2000]).unwrap();
    let segs: Vec<Out> = t.recv_all().into_iter().filter(|o| o.dst_port == 1001).collect();
    assert_eq!(segs[0].payload.len(), 536);
    assert!(segs.iter().all(|o| o.ts.is_none() && o.sack.is_empty()));
    // A SYN or a segment to no listener gets the ordinary treatment.
    let syn = tcp::Repr { src_port: 1002, seq_number: 5, flags: Flags::SYN, ..TEMPL };
    let ip = ip::Repr::new(REMOTE_IP, LOCAL_IP, ip::Protocol::Tcp, syn.buffer_len(), 64).unwrap();
    t.ep.accept_cookie_ack(t.now, &ip, &syn, opts);
    recv!(t, flags: Flags::SYN | Flags::ACK, dst_port: 1002);
    let other = tcp::Repr { dst_port: 444, ..seg };
    t.ep.accept_cookie_ack(t.now, &ip, &other, opts);
    recv!(t, flags: Flags::RST);
    assert_eq!(t.ep.stats().xdp_cookie_acks, 1);
}

#[test]
fn syn_queue_pressure_follows_the_queue() {
    let mut t = listening_with(Config { syn_queue_len: 4, ..config() });
    let window = Duration::from_secs(1);
    assert!(!t.ep.syn_queue_pressure(t.now, 75, window));
    for i in 0..3u16 {
        syn_from(&mut t, 2000 + i, 1, None, false);
    }
    assert!(t.ep.syn_queue_pressure(t.now, 75, window));
    assert!(!t.ep.syn_queue_pressure(t.now, 100, window));
    syn_from(&mut t, 2003, 1, None, false);
    syn_from(&mut t, 2004, 1, None, false); // overflows: a cookie
    t.recv_all();
    // The handshakes time out; the overflow is remembered for `window`.
    t.advance(Duration::from_millis(500));
    assert!(t.ep.syn_queue_pressure(t.now, 100, window));
    t.advance(Duration::from_secs(80));
    assert_eq!(t.ep.connection_count(), 0);
    assert!(!t.ep.syn_queue_pressure(t.now, 75, window));
}
