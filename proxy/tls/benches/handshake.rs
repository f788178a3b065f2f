//! In-memory handshakes, one thread: full TLS 1.3 ECDSA handshakes and TLS 1.2 session-ID
//! resumptions through `TlsSession` versus a plain rustls `ServerConnection` on the same
//! `ServerConfig`. A rustls client runs in the same loop; the server's own time is measured
//! around the server calls only, so "server-side handshakes/s" is what one core could serve.
//!
//! Usage: `cargo bench -p sluice-tls --bench handshake [-- SECONDS_PER_ROUND ROUNDS]`

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::client::{Resumption, Tls12Resumption};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use sluice_tls::{CertSettings, ManualClock, SessionCache, SessionCacheConfig, TlsSession, TlsSettings};

fn certs(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = CertificateParams::new(vec!["bench.example".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("leaf.pem"), format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(dir.join("leaf.key"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

trait Server {
    fn feed(&mut self, data: &[u8]);
    fn drain(&mut self, out: &mut Vec<u8>);
    fn handshaking(&self) -> bool;
    fn resumed(&self) -> bool;
}

struct Ours(TlsSession<u64>, Vec<u8>);
impl Server for Ours {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = self.0.feed(0, data).expect("server handshake");
            data = &data[n..];
        }
    }
    fn drain(&mut self, out: &mut Vec<u8>) {
        loop {
            let n = self.0.write_ciphertext(&mut self.1);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&self.1[..n]);
        }
    }
    fn handshaking(&self) -> bool {
        self.0.is_handshaking()
    }
    fn resumed(&self) -> bool {
        self.0.handshake_info().is_some_and(|i| i.resumed)
    }
}

struct Plain(ServerConnection);
impl Server for Plain {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            self.0.read_tls(&mut data).unwrap();
            self.0.process_new_packets().expect("server handshake");
        }
    }
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.0.wants_write() {
            self.0.write_tls(out).unwrap();
        }
    }
    fn handshaking(&self) -> bool {
        self.0.is_handshaking()
    }
    fn resumed(&self) -> bool {
        self.0.handshake_kind() == Some(HandshakeKind::Resumed)
    }
}

/// One handshake; returns the time spent inside server calls.
fn handshake(cc: &Arc<ClientConfig>, server: &mut dyn Server) -> Duration {
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from("bench.example").unwrap()).unwrap();
    let mut spent = Duration::ZERO;
    let mut wire = Vec::with_capacity(8192);
    loop {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let t = Instant::now();
        if !wire.is_empty() {
            server.feed(&wire);
        }
        wire.clear();
        server.drain(&mut wire);
        spent += t.elapsed();
        if !wire.is_empty() {
            let mut d = &wire[..];
            while !d.is_empty() {
                client.read_tls(&mut d).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        if !client.is_handshaking() && !server.handshaking() && !client.wants_write() {
            // Let the client take the tickets of this flight; then one byte each way.
            let _ = client.writer().write(b"x");
            let _ = client.reader().read(&mut [0u8; 1]);
            return spent;
        }
    }
}

/// Handshakes for `secs`; returns (server-side handshakes/s, client+server loop handshakes/s).
fn measure(secs: f64, cc: &Arc<ClientConfig>, make: &dyn Fn() -> Box<dyn Server>, expect_resumed: bool) -> (f64, f64) {
    // Warm-up (and, for resumption, the session the client will resume).
    let mut s = make();
    handshake(cc, s.as_mut());
    let (mut n, mut server_time) = (0u64, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let mut s = make();
        server_time += handshake(cc, s.as_mut());
        assert_eq!(s.resumed(), expect_resumed);
        n += 1;
    }
    (n as f64 / server_time.as_secs_f64(), n as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved rounds of TlsSession and plain rustls; prints medians.
fn case(
    name: &str,
    secs: f64,
    rounds: usize,
    cc: &Arc<ClientConfig>,
    ours: &dyn Fn() -> Box<dyn Server>,
    plain: &dyn Fn() -> Box<dyn Server>,
    expect_resumed: bool,
) {
    let (mut a, mut b, mut la, mut lb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which goes first.
        let (x, y) = if r % 2 == 0 {
            let x = measure(secs, cc, ours, expect_resumed);
            (x, measure(secs, cc, plain, expect_resumed))
        } else {
            let y = measure(secs, cc, plain, expect_resumed);
            (measure(secs, cc, ours, expect_resumed), y)
        };
        a.push(x.0);
        la.push(x.1);
        b.push(y.0);
        lb.push(y.1);
    }
    let (a, b) = (median(a), median(b));
    println!(
        "{name:<32} TlsSession {a:>7.0}/s ({:>6.1} us)  plain rustls {b:>7.0}/s ({:>6.1} us)  server-side; \
         client+server loop {:>6.0}/s vs {:>6.0}/s",
        1e6 / a,
        1e6 / b,
        median(la),
        median(lb)
    );
}

fn main() {
    let args: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let secs = args.first().copied().unwrap_or(1.0);
    let rounds = args.get(1).copied().unwrap_or(3.0) as usize;
    let dir = std::env::temp_dir().join(format!("sluice-tls-bench-{}", std::process::id()));
    let ca = certs(&dir);
    let settings = TlsSettings {
        certificates: vec![CertSettings {
            cert: "leaf.pem".into(),
            key: "leaf.key".into(),
            sni: vec!["bench.example".into()],
            default: true,
        }],
        ..TlsSettings::default()
    };
    let cache = SessionCache::new(SessionCacheConfig::default(), ManualClock::new(1_700_000_000));
    let sc: Arc<ServerConfig> = sluice_tls::build(&settings, &dir, cache).unwrap();
    let client = |versions: &[&'static rustls::SupportedProtocolVersion], resume: bool| {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let mut c = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.resumption = if resume {
            Resumption::in_memory_sessions(256).tls12_resumption(Tls12Resumption::SessionIdOnly)
        } else {
            Resumption::disabled()
        };
        Arc::new(c)
    };
    println!(
        "in-memory handshakes, ECDSA P-256 certificate, X25519, one thread, {rounds} interleaved rounds of {secs} s, medians"
    );
    let full13 = client(&[&rustls::version::TLS13], false);
    let res12 = client(&[&rustls::version::TLS12], true);
    let res13 = client(&[&rustls::version::TLS13], true);
    let ours = || {
        Box::new(Ours(TlsSession::new(sc.clone(), sluice_tls::DEFAULT_BUFFER_LIMIT).unwrap(), vec![0; 1 << 16]))
            as Box<dyn Server>
    };
    let plain = || Box::new(Plain(ServerConnection::new(sc.clone()).unwrap())) as Box<dyn Server>;
    case("TLS 1.3 full handshake", secs, rounds, &full13, &ours, &plain, false);
    case("TLS 1.2 session-ID resumption", secs, rounds, &res12, &ours, &plain, true);
    case("TLS 1.3 stateful resumption", secs, rounds, &res13, &ours, &plain, true);
    let _ = std::fs::remove_dir_all(&dir);
}
