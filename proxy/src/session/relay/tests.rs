//! Tests of the relay on its own: a TLS client in memory, a backend on a loopback kernel
//! socket.

use std::io::ErrorKind;

use super::*;
use crate::session::memory::MemoryClient as Memory;
use sluice_tls::rustls::{ClientConfig, ClientConnection, RootCertStore};

/// A TLS client sends 16 MiB and close_notify at once while the backend does not read: the
/// relay's queue to the backend fills with rustls still holding plaintext when it reads the
/// close_notify. The backend must get every byte before its EOF. (Before the fix it got its
/// FIN about 13 KiB early.)
#[test]
fn close_notify_behind_a_full_queue_ends_the_backend_stream_after_the_last_byte() {
    use std::io::Write as _;
    let ca = sluice_tls::testcerts::Ca::new().unwrap();
    let leaf = ca.server(&["a.test"], sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
    let server = ServerConfig::builder().with_no_client_auth().with_single_cert(leaf.chain, leaf.key_der).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let client_config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let mut tls = ClientConnection::new(Arc::new(client_config), "a.test".try_into().unwrap()).unwrap();
    tls.set_buffer_limit(None);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tls_timeout = Duration::from_secs(60);
    let mut relay =
        Relay::new(Instant::ZERO, Duration::from_secs(5), 4096, Some((Arc::new(server), tls_timeout))).unwrap();
    relay.start_connect(connect_kernel(addr).unwrap(), Instant::ZERO, Vec::new());
    let (mut backend, _) = listener.accept().unwrap();
    let mut mem = Memory::default();
    let pump = |relay: &mut Relay, mem: &mut Memory, tls: &mut ClientConnection| {
        while tls.wants_write() {
            tls.write_tls(&mut mem.inbox).unwrap();
        }
        // As far as the relay knows the backend socket is always ready: an operation that
        // would block clears the flag, an edge-triggered epoll would set it again.
        (relay.readable, relay.writable) = (true, true);
        relay.pump(mem, Instant::from_millis(1));
        let out = std::mem::take(&mut mem.out);
        let mut slice = &out[..];
        while !slice.is_empty() {
            tls.read_tls(&mut slice).unwrap();
        }
        tls.process_new_packets().unwrap();
    };
    while tls.is_handshaking() {
        pump(&mut relay, &mut mem, &mut tls);
    }
    const LEN: usize = 16 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    tls.writer().write_all(&data).unwrap();
    tls.send_close_notify();
    // The backend reads nothing yet: everything queues up in the kernel and the relay.
    for _ in 0..50 {
        pump(&mut relay, &mut mem, &mut tls);
    }
    backend.set_nonblocking(true).unwrap();
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
    for _ in 0..100_000 {
        match std::io::Read::read(&mut backend, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => pump(&mut relay, &mut mem, &mut tls),
            Err(e) => panic!("backend read: {e}"),
        }
    }
    assert_eq!(got.len(), LEN, "the backend's EOF came before the last byte");
    assert!(got == data, "bytes differ");
}

/// A relay with TLS (an ECDSA a.test) and no backend yet, on `buffer`-byte queues.
fn tls_relay(buffer: usize) -> Relay {
    let ca = sluice_tls::testcerts::Ca::new().unwrap();
    let leaf = ca.server(&["a.test"], sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
    let server = ServerConfig::builder().with_no_client_auth().with_single_cert(leaf.chain, leaf.key_der).unwrap();
    Relay::new(Instant::ZERO, Duration::from_secs(5), buffer, Some((Arc::new(server), Duration::from_secs(10))))
        .unwrap()
}

/// Feeds `wire` to the relay as TCP would deliver it (segments of 1448 bytes), pumping after each.
fn deliver(relay: &mut Relay, mem: &mut Memory, wire: &[u8]) {
    for segment in wire.chunks(1448) {
        mem.inbox.extend_from_slice(segment);
        relay.pump(mem, Instant::from_millis(1));
    }
}

/// ClientHellos of 11 KB to 61 KB, in records of 16 KiB, answered by a ServerHello whatever the
/// relay's queue size (its queue before rustls is smaller than the hello with 4 KiB).
#[test]
fn large_client_hellos_are_answered_through_the_relay() {
    use sluice_tls::testhello::{MAX_RECORD_PAYLOAD, client_hello, starts_with_server_hello};
    for buffer in [4096, 65536] {
        for size in [11_000, 40_000, 61_000] {
            let mut relay = tls_relay(buffer);
            let mut mem = Memory::default();
            deliver(&mut relay, &mut mem, &client_hello("a.test", size, MAX_RECORD_PAYLOAD));
            assert!(mem.inbox.is_empty(), "{size}/{buffer}: {} bytes not taken", mem.inbox.len());
            assert!(starts_with_server_hello(&mem.out), "{size}/{buffer}: {:02x?}", &mem.out[..mem.out.len().min(16)]);
            assert_eq!(relay.end, None);
        }
    }
}

/// Past `relay.tls_max_handshake_bytes` (and past rustls's own bound) the client gets a fatal
/// decode_error alert, then the connection is closed; counted `tls_handshake_too_large`.
#[test]
fn a_handshake_past_the_bound_gets_an_alert_and_is_closed_and_counted() {
    use sluice_tls::testhello::{MAX_RECORD_PAYLOAD, client_hello, first_alert};
    for (limit, size) in [(16_384, 20_000), (sluice_tls::DEFAULT_MAX_HANDSHAKE_IN, 0xffff + 4)] {
        let mut relay = tls_relay(65536);
        relay.set_tls_max_handshake_in(limit);
        let mut mem = Memory::default();
        deliver(&mut relay, &mut mem, &client_hello("a.test", size, MAX_RECORD_PAYLOAD));
        assert_eq!(first_alert(&mem.out), Some(50), "{size}: {:02x?}", mem.out);
        assert_eq!(mem.out.len(), 7, "the alert only");
        assert!(mem.closed && !mem.aborted, "closed after the alert, not reset");
        assert_eq!(relay.end, Some(RelayEnd::TlsFailed));
        let mut counters = crate::observe::counters::QueueCounters::default();
        counters.relay_ended(&relay, false, Instant::from_millis(2));
        assert_eq!((counters.tls_failed, counters.tls_handshake_too_large), (1, 1));
    }
}

/// The ClientHello gate (a fleet's store): a client offering a TLS 1.2 session ID is held
/// before rustls sees a byte, the ID is handed out once, and the handshake goes on (resumed)
/// when the gate opens; a parked handshake whose deadline passes goes on by itself.
#[test]
fn a_gated_hello_waits_for_the_lookup_and_resumes_after_it() {
    let ca = sluice_tls::testcerts::Ca::new().unwrap();
    let leaf = ca.server(&["a.test"], sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
    let server = Arc::new(
        ServerConfig::builder_with_protocol_versions(&[&sluice_tls::rustls::version::TLS12])
            .with_no_client_auth()
            .with_single_cert(leaf.chain, leaf.key_der)
            .unwrap(),
    );
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let mut client_config = ClientConfig::builder_with_protocol_versions(&[&sluice_tls::rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.resumption = sluice_tls::rustls::client::Resumption::in_memory_sessions(4)
        .tls12_resumption(sluice_tls::rustls::client::Tls12Resumption::SessionIdOnly);
    let client_config = Arc::new(client_config);
    let t = Instant::from_millis(1);
    // Moves bytes both ways once; returns how many the relay sent.
    let exchange = |relay: &mut Relay, mem: &mut Memory, tls: &mut ClientConnection, now: Instant| -> usize {
        while tls.wants_write() {
            tls.write_tls(&mut mem.inbox).unwrap();
        }
        relay.pump(mem, now);
        let out = std::mem::take(&mut mem.out);
        let mut slice = &out[..];
        while !slice.is_empty() {
            tls.read_tls(&mut slice).unwrap();
        }
        tls.process_new_packets().unwrap();
        out.len()
    };
    let relay = |gated: bool| {
        let mut r: Relay = Relay::new(
            Instant::ZERO,
            Duration::from_secs(5),
            65536,
            Some((Arc::clone(&server), Duration::from_secs(10))),
        )
        .unwrap();
        if gated {
            r.gate_hello(true);
        }
        r
    };
    // A full handshake (a client that offers no session is never held) gives the client a session.
    let mut first = relay(true);
    let (mut mem, mut tls) =
        (Memory::default(), ClientConnection::new(Arc::clone(&client_config), "a.test".try_into().unwrap()).unwrap());
    for _ in 0..10 {
        exchange(&mut first, &mut mem, &mut tls, t);
    }
    assert!(!tls.is_handshaking() && first.take_lookup().is_none());
    // Nothing queued either way: the relay holds no storage (an idle connection costs none).
    assert_eq!(first.storage(), 0);

    for deadline_passes in [false, true] {
        let mut r = relay(true);
        let (mut mem, mut tls) = (
            Memory::default(),
            ClientConnection::new(Arc::clone(&client_config), "a.test".try_into().unwrap()).unwrap(),
        );
        assert_eq!(exchange(&mut r, &mut mem, &mut tls, t), 0, "rustls answered a held ClientHello");
        let lookup = r.take_lookup().expect("the session ID to look up");
        assert_eq!(lookup.id.len(), 32);
        assert!(!lookup.single_use);
        assert!(r.take_lookup().is_none(), "handed out once");
        r.park(t + Duration::from_millis(5));
        assert!(r.is_parked());
        assert_eq!(r.deadline(), Some(t + Duration::from_millis(5)));
        assert_eq!(exchange(&mut r, &mut mem, &mut tls, t + Duration::from_millis(1)), 0, "parked, yet answered");
        let later = if deadline_passes {
            t + Duration::from_millis(5)
        } else {
            r.open_gate();
            t + Duration::from_millis(1)
        };
        for _ in 0..10 {
            exchange(&mut r, &mut mem, &mut tls, later);
        }
        assert!(!r.is_parked());
        let info = r.tls_session().and_then(|s| s.handshake_info()).expect("handshake done");
        assert!(info.resumed, "the session (in rustls's own cache here) resumed");
    }
}
