//! Relay listeners whose backends are kernel sockets on loopback: bytes both ways, the
//! backend's EOF, a refusing backend, the retry on the next backend.

use super::*;

/// A relay listener whose backend is a kernel socket on loopback: bytes go both ways and the
/// backend's EOF becomes sluice's FIN.
#[test]
fn relay_listener_moves_bytes_to_a_kernel_backend_and_back() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let mut d = dispatch_with(0, Arc::default(), &[(80, ListenerMode::Relay(backend_addr))]);
    let t = |ms| Instant::from_millis(ms);
    let _ = on(&mut d, &syn(80));
    let iss = parse_frame(&transmit(&mut d, t(1))[0], Checksum::Verify).unwrap().tcp.seq_number;
    let ack = |seq: u32, flags: Flags, data: &[u8]| {
        frame(Seg { src_port: 40000, dst_port: 80, flags, seq, ack: iss.wrapping_add(1), payload: data })
    };
    let _ = on(&mut d, &ack(1001, Flags::ACK | Flags::PSH, b"GET / HTTP/1.1\r\n\r\n"));
    d.process(t(2));
    let (mut conn, _) = backend.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Let the worker see the connect complete and flush the queued request.
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..100 {
        let _ = backend_events(&mut d, Duration::from_millis(10), || t(3 + i));
        d.process(t(3 + i));
        conn.set_nonblocking(true).unwrap();
        if let Ok(n) = conn.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= 18 {
            break;
        }
    }
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
    conn.set_nonblocking(false).unwrap();
    conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    for i in 0..100 {
        let _ = backend_events(&mut d, Duration::from_millis(10), || t(200 + i));
        out.extend(transmit(&mut d, t(200 + i)));
        if out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.fin()) {
            break;
        }
    }
    assert_eq!(payload(&out), b"HTTP/1.1 200 OK\r\n\r\n");
    assert!(out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.fin()), "backend EOF -> FIN");
    assert_eq!(d.counters.relays_opened, 1);
    // The client ACKs sluice's FIN and sends its own: both directions are done. The relay
    // and its backend socket end now, while the client's TCB lingers in TIME-WAIT (the
    // relay used to live, holding a descriptor, until TIME-WAIT was over).
    let fin_seq = out.iter().map(|f| parse_frame(f, Checksum::Verify).unwrap().tcp).find(|t| t.flags.fin()).unwrap();
    let sluice_fin_end = fin_seq.seq_number.wrapping_add(fin_seq.segment_len() as u32);
    let fin = frame(Seg {
        src_port: 40000,
        dst_port: 80,
        flags: Flags::FIN | Flags::ACK,
        seq: 1019,
        ack: sluice_fin_end,
        payload: &[],
    });
    let _ = on(&mut d, &fin);
    let _ = transmit(&mut d, t(400));
    assert_eq!(d.tcp().connection_count(), 1, "the TCB is in TIME-WAIT");
    assert_eq!(d.tcp().active_count(), 0);
    assert_eq!((d.counters.relays_open, d.counters.relays_clean), (0, 1), "the relay ended with its work");
    assert!(d.relay_tokens.is_empty() && d.sessions.is_empty());
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "the backend saw its EOF");
}

/// A backend that refuses: the client is reset and the relay counted as failed.
#[test]
fn refusing_backend_resets_the_client() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut d = dispatch_with(0, Arc::default(), &[(80, ListenerMode::Relay(addr))]);
    let _ = on(&mut d, &syn(80));
    let iss = parse_frame(&transmit(&mut d, T0)[0], Checksum::Verify).unwrap().tcp.seq_number;
    let f = frame(Seg {
        src_port: 40000,
        dst_port: 80,
        flags: Flags::ACK,
        seq: 1001,
        ack: iss.wrapping_add(1),
        payload: &[],
    });
    let _ = on(&mut d, &f);
    let mut out = transmit(&mut d, T0);
    for i in 0..100 {
        let _ = backend_events(&mut d, Duration::from_millis(10), || Instant::from_millis(2 + i));
        out.extend(transmit(&mut d, Instant::from_millis(2 + i)));
        if out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst()) {
            break;
        }
    }
    assert!(out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst()), "client reset");
    // The TCB is gone: the relay is closed and counted.
    d.process(Instant::from_millis(200));
    assert_eq!(d.counters.relays_open, 0);
    assert_eq!(d.counters.relays_backend_failed, 1);
}

/// Two backends, the first refusing: the client's request is not lost, the relay connects
/// the second, which gets the PROXY header first, then the request; the refusing backend
/// is counted as failed and cools down.
#[test]
fn a_refused_connect_is_retried_on_the_next_backend_with_the_proxy_header_first() {
    use std::io::Read;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live = backend.local_addr().unwrap();
    let listener = SocketAddr::from((PROXY, 80));
    let pool = Arc::new(crate::session::backend::Pool::new(
        &[dead, live],
        crate::session::backend::Balance::RoundRobin,
        Duration::from_secs(60),
        std::time::Instant::now(),
    ));
    let backends = ListenerBackends { default: Arc::clone(&pool), routes: vec![], proxy_protocol: true };
    let mut services = Services::default();
    services.listeners.insert(listener, ListenerMode::Relay(dead));
    services.backends.insert(listener, Arc::new(backends));
    let tcp = Endpoint::new(sluice_tcp::Config::default(), Instant::ZERO);
    let mut d = Dispatch::new(0, Arc::default(), services, Arc::default(), true, tcp, link()).unwrap();
    let t = |ms| Instant::from_millis(ms);
    let _ = on(&mut d, &syn(80));
    let iss = parse_frame(&transmit(&mut d, t(1))[0], Checksum::Verify).unwrap().tcp.seq_number;
    let f = first_data(80, iss, b"hello");
    let _ = on(&mut d, &f);
    backend.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut conn: Option<std::net::TcpStream> = None;
    for i in 0..200 {
        let _ = backend_events(&mut d, Duration::from_millis(10), || t(2 + i));
        d.process(t(2 + i));
        if conn.is_none() {
            conn = backend.accept().ok().map(|(c, _)| c);
        }
        if let Some(c) = conn.as_mut() {
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            if let Ok(n) = c.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        if got.ends_with(b"hello") {
            break;
        }
    }
    let header = crate::session::proxy_protocol::encode(SocketAddr::from((CLIENT, 40000)), listener, None);
    assert_eq!(got, [&header[..], b"hello"].concat(), "the header, then the client's bytes");
    let stats = pool.stats();
    assert_eq!((stats[0].failures, stats[0].active), (1, 0), "{stats:?}");
    assert_eq!((stats[1].connects, stats[1].active), (1, 1), "{stats:?}");
    assert_eq!(d.counters.backend_retries, 1);
    assert_eq!(d.counters.relays_backend_failed, 0);
    // The next connection goes straight to the live backend: the dead one cools down.
    assert_eq!(pool.pick(std::time::Instant::now(), 0), Some(1));
    assert_eq!(pool.pick(std::time::Instant::now(), 0), Some(1));
}
