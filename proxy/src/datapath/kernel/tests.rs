//! Tests of the kernel transport: [`KernelClient`] on a loopback socket, then workers running
//! in this process on loopback listeners (echo over `SO_REUSEPORT`, plain and TLS relays to an
//! echo backend, refusals, resets, a stalled TLS handshake).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::observe::counters::Published;
use crate::observe::stats::SharedCounters;
use crate::session::relay::Client;
use sha2::{Digest, Sha256};
use sluice_tcp::StreamError;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// A port free on 127.0.0.1 just now (every worker then binds it with SO_REUSEPORT).
fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` different ports free on 127.0.0.1 just now.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<_> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A fresh directory for a test's files, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch_dir(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("kt-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Kernel-transport workers serving `listeners` (TOML) on loopback, in this process.
struct Running {
    shared: Vec<SharedCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    fn start(workers: usize, listeners: &str, dir: &Path) -> Self {
        let text = format!("[datapath]\ntransport = \"kernel\"\nworkers = {workers}\n\n{listeners}");
        let config = Config::parse(Path::new("test.toml"), &text).unwrap();
        let caches = Default::default();
        let (services, health_checks) = crate::run::services(&config, dir, &sluice_tls::Disk, &caches).unwrap();
        health_checks.start().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clock = std::time::Instant::now();
        let (mut shared, mut threads) = (Vec::new(), Vec::new());
        for i in 0..workers {
            let worker = Worker::new(i, services.clone(), Arc::default(), 128).unwrap();
            let counters = SharedCounters::default();
            shared.push(Arc::clone(&counters));
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || worker.run(counters, crossbeam_channel::never(), clock, stop)));
        }
        Self { shared, stop, threads }
    }

    /// Waits (up to 10 s) until the workers published `n` connections, none open.
    fn wait_closed(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let p: Vec<Published> = self.shared.iter().map(|s| s.snapshot()).collect();
            if total(&p, |c| c.connections_closed) == n && total(&p, |c| c.connections_open) == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "not closed: {p:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the workers (each publishes once more) and returns what they published and
    /// every latency they handed over.
    fn stop(self) -> (Vec<Published>, crate::observe::latency::Latencies) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let mut l = crate::observe::latency::Latencies::default();
        for s in &self.shared {
            while let Some(i) = s.take_interval() {
                l.merge(&i);
            }
        }
        (self.shared.iter().map(|s| s.snapshot()).collect(), l)
    }
}

fn total(p: &[Published], f: impl Fn(&QueueCounters) -> u64) -> u64 {
    p.iter().map(|p| f(&p.queue)).sum()
}

/// An echo server on 127.0.0.1 (one thread per connection; half-close passed through).
fn echo_backend() -> SocketAddrV4 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// Sends `len` pseudo-random bytes to `addr`, reads the echo concurrently, half-closes;
/// returns the sha256 of what went and what came back.
fn echo_stream(addr: SocketAddrV4, len: usize) -> ([u8; 32], [u8; 32]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = s.try_clone().unwrap();
    let read = std::thread::spawn(move || {
        let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 16]);
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => return <[u8; 32]>::from(h.finalize()),
                n => h.update(&buf[..n]),
            }
        }
    });
    let (mut h, mut rng, mut sent) = (Sha256::new(), 0x5eed_u64, 0);
    let mut chunk = vec![0u8; 1 << 16];
    while sent < len {
        let n = chunk.len().min(len - sent);
        for b in chunk[..n].chunks_mut(8) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
        }
        s.write_all(&chunk[..n]).unwrap();
        h.update(&chunk[..n]);
        sent += n;
    }
    s.shutdown(Shutdown::Write).unwrap();
    (h.finalize().into(), read.join().unwrap())
}

#[test]
fn kernel_client_would_block_eof_close_and_abort() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut c = KernelClient::new(listener.accept().unwrap().0).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&mut buf), Ok(0), "nothing there: would block");
    assert!(!c.readable);
    assert_eq!(c.recv(&mut buf), Ok(0), "not readable: not even tried");
    peer.write_all(b"hello").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.readable = true;
    assert_eq!(c.recv(&mut buf), Ok(5));
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(c.recv(&mut buf), Err(StreamError::Finished));
    assert_eq!(c.recv(&mut buf), Err(StreamError::Finished), "and again");
    assert_eq!(c.send(b"bye"), Ok(3));
    c.close();
    assert_eq!(c.send(b"more"), Err(StreamError::Closed));
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye", "FIN after the bytes");

    let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut c = KernelClient::new(listener.accept().unwrap().0).unwrap();
    c.abort();
    drop(c);
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let e = peer.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "abort resets");
}

#[test]
fn echo_spreads_over_workers_with_reuseport() {
    let port = free_port();
    let listeners = format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\necho = true\n");
    let running = Running::start(2, &listeners, &scratch_dir("echo"));
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    let mut bytes = 0;
    for i in 0..32 {
        let len = 1000 + i * 997;
        let (sent, back) = echo_stream(addr, len);
        assert_eq!(sent, back, "connection {i}");
        bytes += len as u64;
    }
    let (p, _) = running.stop();
    assert_eq!(total(&p, |c| c.connections_established), 32);
    assert_eq!(total(&p, |c| c.connections_closed), 32);
    assert_eq!(total(&p, |c| c.connections_open), 0);
    assert_eq!(total(&p, |c| c.echo_bytes), bytes);
    for (i, w) in p.iter().enumerate() {
        assert_eq!(w.queue.queue, i as u32);
        // 32 connections hashed over 2 sockets: all on one has odds 2^-31.
        assert!(w.queue.connections_established > 0, "worker {i} accepted nothing: {p:?}");
        assert!(w.queue.idle_sleeps > 0);
    }
}

#[test]
fn plain_relay_moves_bytes_intact_refuses_and_resets() {
    let backend = echo_backend();
    let [closed, relay, refuse, dead] = free_ports(); // nothing listens on `closed`
    let listeners = format!(
        "[[listener]]\naddress = \"127.0.0.1:{relay}\"\nbackend = \"{backend}\"\n\n\
         [[listener]]\naddress = \"127.0.0.1:{refuse}\"\nrefuse = true\n\n\
         [[listener]]\naddress = \"127.0.0.1:{dead}\"\nbackend = \"127.0.0.1:{closed}\"\n"
    );
    let running = Running::start(2, &listeners, &scratch_dir("relay"));
    let ip = std::net::Ipv4Addr::LOCALHOST;
    const LEN: usize = 8 << 20;
    let (sent, back) = echo_stream(SocketAddrV4::new(ip, relay), LEN);
    assert_eq!(sent, back, "sha256 differs");
    // A refusing listener is not listened on: the kernel answers the SYN with a RST.
    let e = TcpStream::connect(SocketAddrV4::new(ip, refuse)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // A backend that refuses: the client is reset. (Nothing is written first: a write that
    // meets the RST would take the error, and the read after it would see an EOF.)
    let mut s = TcpStream::connect(SocketAddrV4::new(ip, dead)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let e = s.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset);
    let (p, l) = running.stop();
    assert_eq!(total(&p, |c| c.relays_opened), 2);
    assert_eq!(total(&p, |c| c.relays_clean), 1);
    assert_eq!(total(&p, |c| c.relays_backend_failed), 1);
    assert_eq!(total(&p, |c| c.relays_open), 0);
    assert_eq!(total(&p, |c| c.connections_open), 0);
    assert_eq!(total(&p, |c| c.relay_bytes_to_backend), LEN as u64);
    assert_eq!(total(&p, |c| c.relay_bytes_to_client), LEN as u64);
    assert_eq!((l.backend_connect.len(), l.first_backend_byte.len()), (1, 1));
    assert_eq!(l.tcp_handshake.len(), 0, "not visible on kernel sockets");
}

#[test]
fn tls_relay_full_then_resumed_and_garbage_gets_an_alert() {
    use sluice_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
    use sluice_tls::testcerts::{Ca, KeyKind};
    let dir = scratch_dir("tls");
    let ca = Ca::new().unwrap();
    let leaf = ca.server(&["a.test"], KeyKind::EcdsaP256).unwrap();
    std::fs::write(dir.join("a.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("a.key"), &leaf.key_pem).unwrap();
    let backend = echo_backend();
    let port = free_port();
    let listeners = format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n\
         [listener.tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}]\n"
    );
    let running = Running::start(2, &listeners, &dir);
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let mut kinds = Vec::new();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut config = ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let config = Arc::new(config);
        for _ in 0..2 {
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = ClientConnection::new(config.clone(), "a.test".try_into().unwrap()).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            tls.write_all(b"ping through TLS").unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut back = Vec::new();
            tls.read_to_end(&mut back).unwrap(); // the backend's EOF arrives as close_notify
            assert_eq!(back, b"ping through TLS");
            kinds.push(tls.conn.handshake_kind());
        }
    }
    use rustls::HandshakeKind::{Full, Resumed};
    assert_eq!(kinds, [Some(Full), Some(Resumed), Some(Full), Some(Resumed)]);
    // Plain HTTP instead of a ClientHello: an alert record (type 21), then the FIN.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(answer.first(), Some(&21), "{answer:02x?}");
    drop(s);
    // The draining connections see the clients' FINs and close.
    running.wait_closed(5);
    let (p, l) = running.stop();
    assert_eq!(total(&p, |c| c.tls_handshakes_full), 2);
    assert_eq!(total(&p, |c| c.tls_handshakes_resumed), 2);
    assert_eq!(total(&p, |c| c.tls_failed), 1);
    assert_eq!(total(&p, |c| c.relays_clean), 4);
    assert_eq!(total(&p, |c| c.connections_open), 0);
    let counts = [l.tls12_full.len(), l.tls12_resumed.len(), l.tls13_full.len(), l.tls13_resumed.len()];
    assert_eq!(counts, [1, 1, 1, 1]);
}

#[test]
fn hundred_concurrent_relays_over_two_workers() {
    let backend = echo_backend();
    let port = free_port();
    let listeners = format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n");
    let running = Running::start(2, &listeners, &scratch_dir("many"));
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    let clients: Vec<_> = (0..100).map(|i| std::thread::spawn(move || echo_stream(addr, 100_000 + i * 1013))).collect();
    for (i, c) in clients.into_iter().enumerate() {
        let (sent, back) = c.join().unwrap();
        assert_eq!(sent, back, "connection {i}");
    }
    let (p, _) = running.stop();
    assert_eq!(total(&p, |c| c.relays_clean), 100);
    assert_eq!(total(&p, |c| c.connections_open), 0);
    let bytes: u64 = (0..100).map(|i| 100_000 + i * 1013).sum();
    assert_eq!(total(&p, |c| c.relay_bytes_to_client), bytes);
}

#[test]
fn stalled_tls_handshake_is_closed_after_the_timeout() {
    let dir = scratch_dir("stall");
    let ca = sluice_tls::testcerts::Ca::new().unwrap();
    let leaf = ca.server(&["a.test"], sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
    std::fs::write(dir.join("a.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("a.key"), &leaf.key_pem).unwrap();
    let backend = echo_backend();
    let port = free_port();
    let listeners = format!(
        "[relay]\ntls_handshake_timeout_ms = 300\n\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n\
         [listener.tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}]\n"
    );
    let running = Running::start(1, &listeners, &dir);
    let mut s = TcpStream::connect(SocketAddrV4::new([127, 0, 0, 1].into(), port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A TLS record header promising a 512-byte handshake message, then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed without an answer: {rest:02x?}");
    drop(s);
    running.wait_closed(1);
    let (p, _) = running.stop();
    assert_eq!(total(&p, |c| c.tls_handshake_timeouts), 1);
    assert_eq!(total(&p, |c| c.relays_open), 0);
}
