//! In-memory handshakes: a rustls `ClientConnection` and a `TlsSession` exchange bytes through
//! slices, no sockets. `now` is a plain counter (`u64`) bumped on every flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption as ClientResumption, Tls12Resumption, WebPkiServerVerifier};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig};

use crate::testcerts::{self, Ca, KeyKind};
use crate::*;

// ---------------------------------------------------------------- fixtures

struct Files {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
}

fn files() -> &'static Files {
    static F: OnceLock<Files> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-tls-tests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = testcerts::generate(&dir, &["a.example", "b.example"]).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&g.ca_key).unwrap()).unwrap();
        let ca = Ca::from_key(ca_key).unwrap();
        let client = ca.client("client.example", KeyKind::EcdsaP256).unwrap();
        // A CA nobody trusts, for the mTLS reject case.
        let other = Ca::new().unwrap();
        let stranger = other.client("stranger.example", KeyKind::EcdsaP256).unwrap();
        std::fs::write(dir.join("stranger.pem"), stranger.cert_pem).unwrap();
        std::fs::write(dir.join("stranger.key"), stranger.key_pem).unwrap();
        std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap();
        Files { ca: pem_certs(&g.ca_cert).remove(0), dir, client_chain: client.chain, client_key: client.key_der }
    })
}

fn pem_certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

fn cert(file: &str, sni: &[&str], default: bool) -> CertSettings {
    CertSettings {
        cert: format!("{file}.pem").into(),
        key: format!("{file}.key").into(),
        sni: sni.iter().map(|s| (*s).to_owned()).collect(),
        default,
    }
}

/// a.example and b.example, each with an ECDSA and an RSA chain; a.example ECDSA is the default.
fn settings() -> TlsSettings {
    TlsSettings {
        certificates: vec![
            cert("a.example.ecdsa", &["a.example"], true),
            cert("a.example.rsa", &["a.example"], false),
            cert("b.example.ecdsa", &["b.example"], false),
            cert("b.example.rsa", &["b.example"], false),
        ],
        alpn: vec!["h2".into(), "http/1.1".into()],
        ..TlsSettings::default()
    }
}

fn new_cache() -> Arc<SessionCache> {
    SessionCache::new(SessionCacheConfig::default(), ManualClock::new(1_700_000_000))
}

fn server(s: &TlsSettings, cache: Arc<SessionCache>) -> Arc<ServerConfig> {
    build(s, &files().dir, cache).unwrap()
}

struct Client {
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<&'static str>,
    auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    tickets: bool,
    rsa_only: bool,
    sni: bool,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![],
            auth: None,
            tickets: false,
            rsa_only: false,
            sni: true,
        }
    }
}

impl Client {
    fn v12() -> Self {
        Self { versions: vec![&rustls::version::TLS12], ..Self::default() }
    }
    fn v13() -> Self {
        Self { versions: vec![&rustls::version::TLS13], ..Self::default() }
    }
    fn build(self) -> Arc<ClientConfig> {
        let mut prov = aws_lc_rs::default_provider();
        if self.rsa_only {
            // Offer only RSA signature schemes so the server must pick its RSA chain.
            let mut algs = prov.signature_verification_algorithms;
            algs.mapping = Box::leak(
                algs.mapping
                    .iter()
                    .filter(|(s, _)| format!("{s:?}").contains("RSA"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            );
            prov.signature_verification_algorithms = algs;
        }
        let mut roots = RootCertStore::empty();
        roots.add(files().ca.clone()).unwrap();
        let b = ClientConfig::builder_with_provider(Arc::new(prov))
            .with_protocol_versions(&self.versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut cfg = match self.auth {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        cfg.resumption = ClientResumption::in_memory_sessions(64).tls12_resumption(if self.tickets {
            Tls12Resumption::SessionIdOrTickets
        } else {
            Tls12Resumption::SessionIdOnly
        });
        cfg.enable_sni = self.sni;
        Arc::new(cfg)
    }
}

#[derive(Debug)]
#[allow(dead_code)] // the payloads are for failure messages
enum Failed {
    Server(TlsError),
    Client(rustls::Error),
}

/// Move bytes both ways until neither side has anything to say. `now` ticks once per flight.
fn pump(c: &mut ClientConnection, s: &mut TlsSession<u64>, now: &mut u64) -> Result<(), Failed> {
    loop {
        let mut progress = false;
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            progress = true;
            *now += 1;
            let mut off = 0;
            while off < wire.len() {
                match s.feed(*now, &wire[off..]) {
                    Ok(0) => break,
                    Ok(n) => off += n,
                    Err(e) => {
                        // Deliver the alert the server queued, as a real peer would see it.
                        let mut out = vec![0u8; 1 << 16];
                        let n = s.write_ciphertext(&mut out);
                        let _ = feed_client(c, &out[..n]);
                        return Err(Failed::Server(e));
                    }
                }
            }
        }
        let mut out = vec![0u8; 1 << 16];
        let n = s.write_ciphertext(&mut out);
        if n > 0 {
            progress = true;
            *now += 1;
            feed_client(c, &out[..n]).map_err(Failed::Client)?;
        }
        if !progress {
            return Ok(());
        }
    }
}

fn feed_client(c: &mut ClientConnection, mut data: &[u8]) -> Result<(), rustls::Error> {
    while !data.is_empty() {
        if c.read_tls(&mut data).unwrap_or(0) == 0 {
            break;
        }
        c.process_new_packets()?;
    }
    Ok(())
}

#[derive(Debug)]
struct Done {
    client: ClientConnection,
    server: TlsSession<u64>,
}

fn connect(cc: &Arc<ClientConfig>, sc: &Arc<ServerConfig>, name: &str) -> Result<Done, Failed> {
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from(name.to_owned()).unwrap()).unwrap();
    let mut server = TlsSession::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
    let mut now = 100;
    pump(&mut client, &mut server, &mut now)?;
    assert!(!client.is_handshaking() && !server.is_handshaking());
    Ok(Done { client, server })
}

/// Verify `chain` for `name` against `ca` as a client would.
pub(crate) fn verify_chain(ca: &CertificateDer<'static>, chain: &[CertificateDer<'static>], name: &str) {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(aws_lc_rs::default_provider()))
        .build()
        .unwrap();
    v.verify_server_cert(&chain[0], &chain[1..], &ServerName::try_from(name.to_owned()).unwrap(), &[], UnixTime::now())
        .unwrap();
}

fn leaf_of(file: &str) -> CertificateDer<'static> {
    pem_certs(&files().dir.join(format!("{file}.pem"))).remove(0)
}

fn info(d: &Done) -> HandshakeInfo {
    d.server.handshake_info().cloned().expect("handshake info after completion")
}

// ---------------------------------------------------------------- full handshakes

#[test]
fn full_handshakes_tls12_tls13_ecdsa_rsa() {
    let sc = server(&settings(), new_cache());
    for (client, version) in [(Client::v13(), ProtocolVersion::TLSv1_3), (Client::v12(), ProtocolVersion::TLSv1_2)] {
        for rsa in [false, true] {
            let cc = Client { rsa_only: rsa, ..client_like(&client) }.build();
            let d = connect(&cc, &sc, "a.example").unwrap();
            let i = info(&d);
            assert_eq!(i.version, version);
            assert!(!i.resumed);
            assert_eq!(i.kind, HandshakeKind::Full);
            assert_eq!(i.sni.as_deref(), Some("a.example"));
            assert!(i.kx_group.is_some());
            let expect = if rsa { "a.example.rsa" } else { "a.example.ecdsa" };
            assert_eq!(d.client.peer_certificates().unwrap()[0], leaf_of(expect), "{version:?} rsa={rsa}");
            let suite = format!("{:?}", i.cipher_suite);
            if version == ProtocolVersion::TLSv1_2 {
                assert!(suite.contains(if rsa { "ECDHE_RSA" } else { "ECDHE_ECDSA" }), "{suite}");
            }
        }
    }
    let _ = &sc;
}

fn client_like(c: &Client) -> Client {
    Client { versions: c.versions.clone(), tickets: c.tickets, ..Client::default() }
}

#[test]
fn handshake_markers_and_data_both_ways() {
    let sc = server(&settings(), new_cache());
    let cc = Client::v13().build();
    let mut client = ClientConnection::new(cc, ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc, DEFAULT_BUFFER_LIMIT).unwrap();
    assert!(s.first_byte_at().is_none() && s.handshake_info().is_none());
    let mut now = 1000;
    pump(&mut client, &mut s, &mut now).unwrap();
    // ClientHello at 1001, ServerHello.. at 1002, client Finished at 1003.
    assert_eq!(s.first_byte_at(), Some(1001));
    assert_eq!(s.handshake_done_at(), Some(1003));
    // Data both ways.
    std::io::Write::write_all(&mut client.writer(), b"ping").unwrap();
    pump(&mut client, &mut s, &mut now).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read_plaintext(&mut buf);
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(s.read_plaintext(&mut buf), 0);
    assert_eq!(s.write_plaintext(b"pong"), 4);
    pump(&mut client, &mut s, &mut now).unwrap();
    let n = std::io::Read::read(&mut client.reader(), &mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
    // Clean close from the client.
    assert!(!s.peer_closed());
    client.send_close_notify();
    pump(&mut client, &mut s, &mut now).unwrap();
    assert!(s.peer_closed());
}

#[test]
fn sni_picks_the_right_certificate_and_chain_verifies() {
    let sc = server(&settings(), new_cache());
    let cc = Client::default().build();
    for (name, file) in [("a.example", "a.example.ecdsa"), ("b.example", "b.example.ecdsa")] {
        let d = connect(&cc, &sc, name).unwrap();
        let chain = d.client.peer_certificates().unwrap().to_vec();
        assert_eq!(chain[0], leaf_of(file));
        verify_chain(&files().ca, &chain, name);
        assert_eq!(info(&d).sni.as_deref(), Some(name));
    }
    // Unknown name: the default certificate (the client then rejects it, as it should).
    let r = connect(&cc, &sc, "c.example");
    assert!(matches!(r, Err(Failed::Client(_))), "{r:?}");
}

#[test]
fn alpn_negotiated() {
    let sc = server(&settings(), new_cache());
    let cc = Client { alpn: vec!["http/1.1", "h2"], ..Client::default() }.build();
    let d = connect(&cc, &sc, "a.example").unwrap();
    // Server preference order (RFC 7301 §3.2: the server selects).
    assert_eq!(info(&d).alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(d.client.alpn_protocol(), Some(&b"h2"[..]));
    let cc = Client { alpn: vec!["http/1.1"], ..Client::default() }.build();
    assert_eq!(info(&connect(&cc, &sc, "a.example").unwrap()).alpn.as_deref(), Some(&b"http/1.1"[..]));
    let cc = Client::default().build();
    assert_eq!(info(&connect(&cc, &sc, "a.example").unwrap()).alpn, None);
}

#[test]
fn no_sni_gets_the_default_certificate() {
    let mut s = settings();
    // Make b.example's ECDSA chain the default instead of the first entry.
    s.certificates[0].default = false;
    s.certificates[2].default = true;
    let sc = server(&s, new_cache());
    let cc = Client { sni: false, ..Client::default() }.build();
    let d = connect(&cc, &sc, "b.example").unwrap();
    assert_eq!(d.client.peer_certificates().unwrap()[0], leaf_of("b.example.ecdsa"));
    assert_eq!(info(&d).sni, None);
    // Without an explicit default, the first entry (and its same-names RSA twin) is the default.
    let sc = server(&settings(), new_cache());
    let d = connect(&cc, &sc, "a.example").unwrap();
    assert_eq!(d.client.peer_certificates().unwrap()[0], leaf_of("a.example.ecdsa"));
    let rsa = Client { sni: false, rsa_only: true, ..Client::default() }.build();
    let d = connect(&rsa, &sc, "a.example").unwrap();
    assert_eq!(d.client.peer_certificates().unwrap()[0], leaf_of("a.example.rsa"));
}

#[test]
fn wildcard_sni_matches_one_label() {
    use crate::config::SniResolver;
    assert!(SniResolver::matches("*.example", "a.example"));
    assert!(!SniResolver::matches("*.example", "a.b.example"));
    assert!(!SniResolver::matches("*.example", "example"));
    assert!(!SniResolver::matches("*.example", ".example"));
    assert!(SniResolver::matches("a.example", "a.example"));
    assert!(!SniResolver::matches("a.example", "b.example"));
}

// ---------------------------------------------------------------- resumption

/// First connection on one `ServerConfig` in this thread, second on another `ServerConfig`
/// (same cache) in another thread: the session must resume there.
fn resumes_across_threads(
    client: Client,
    settings: TlsSettings,
    clean_close: bool,
) -> (HandshakeInfo, Arc<SessionCache>) {
    let cache = new_cache();
    let sc1 = server(&settings, cache.clone());
    let cc = client.build();
    let mut d = connect(&cc, &sc1, "a.example").unwrap();
    assert!(!info(&d).resumed);
    // Some data, then either a clean close or just dropping the connection (no close_notify).
    std::io::Write::write_all(&mut d.client.writer(), b"hello").unwrap();
    let mut now = 500;
    pump(&mut d.client, &mut d.server, &mut now).unwrap();
    if clean_close {
        d.client.send_close_notify();
        d.server.send_close_notify();
        pump(&mut d.client, &mut d.server, &mut now).unwrap();
    }
    drop(d);
    let sc2 = server(&settings, cache.clone());
    let (i, kind) = std::thread::spawn(move || {
        let d = connect(&cc, &sc2, "a.example").unwrap();
        (info(&d), d.client.handshake_kind())
    })
    .join()
    .unwrap();
    assert_eq!(kind, Some(HandshakeKind::Resumed), "client side");
    assert!(i.resumed, "server side: {i:?}");
    assert_eq!(i.kind, HandshakeKind::Resumed);
    (i, cache)
}

#[test]
fn tls12_session_id_resumption_through_shared_cache() {
    let (i, cache) = resumes_across_threads(Client::v12(), settings(), true);
    assert_eq!(i.version, ProtocolVersion::TLSv1_2);
    let s = cache.stats();
    assert!(s.inserts >= 1 && s.hits >= 1, "{s:?}");
}

#[test]
fn tls13_stateful_resumption_through_shared_cache() {
    let (i, cache) = resumes_across_threads(Client::v13(), settings(), true);
    assert_eq!(i.version, ProtocolVersion::TLSv1_3);
    let s = cache.stats();
    // Two tickets stored by the full handshake; one taken (single use) by the resumption, which
    // stores two fresh ones.
    assert_eq!((s.inserts, s.hits, s.entries), (4, 1, 3), "{s:?}");
}

#[test]
fn resumption_after_client_closed_without_close_notify() {
    resumes_across_threads(Client::v12(), settings(), false);
    resumes_across_threads(Client::v13(), settings(), false);
}

#[test]
fn stateless_tickets_resume_without_the_cache() {
    let s = TlsSettings { resumption: Resumption::Tickets, ticket_rotation_secs: 3600, ..settings() };
    let (i, cache) = resumes_across_threads(Client::v13(), s.clone(), true);
    assert_eq!(i.version, ProtocolVersion::TLSv1_3);
    assert_eq!(cache.stats().inserts, 0);
    let (i, cache) = resumes_across_threads(Client { tickets: true, ..Client::v12() }, s, true);
    assert_eq!(i.version, ProtocolVersion::TLSv1_2);
    assert_eq!(cache.stats().inserts, 0);
}

#[test]
fn resumption_none_does_full_handshakes() {
    let s = TlsSettings { resumption: Resumption::None, ..settings() };
    for client in [Client::v12(), Client::v13()] {
        let cache = new_cache();
        let sc = server(&s, cache.clone());
        let cc = client.build();
        connect(&cc, &sc, "a.example").unwrap();
        let d = connect(&cc, &sc, "a.example").unwrap();
        assert!(!info(&d).resumed);
        assert_eq!(cache.stats().inserts, 0);
    }
}

#[test]
fn expired_session_does_not_resume() {
    let clock = ManualClock::new(1_700_000_000);
    let cache = SessionCache::new(SessionCacheConfig { lifetime_secs: 60, ..Default::default() }, clock.clone());
    let sc = server(&settings(), cache.clone());
    let cc = Client::v12().build();
    connect(&cc, &sc, "a.example").unwrap();
    clock.advance(61);
    let d = connect(&cc, &sc, "a.example").unwrap();
    assert!(!info(&d).resumed);
    assert!(cache.stats().evicted_expired >= 1);
}

/// A "reload" (a second ServerConfig on the same cache) that keeps the policy keeps sessions
/// resumable; one that adds client authentication does not: the old session gets a full
/// handshake that demands a certificate (and fails without one), counted as a policy mismatch.
#[test]
fn resumption_follows_the_tls_policy_across_a_reload() {
    for (client, tickets) in [(Client::v12(), false), (Client::v13(), false), (Client::v13(), true)] {
        let base = if tickets {
            TlsSettings { resumption: Resumption::Tickets, ticket_rotation_secs: 3600, ..settings() }
        } else {
            settings()
        };
        let cache = new_cache();
        let cc = client_like(&client).build();
        connect(&cc, &server(&base, cache.clone()), "a.example").unwrap();
        // Same policy, rebuilt: resumes.
        let d = connect(&cc, &server(&base, cache.clone()), "a.example").unwrap();
        assert!(info(&d).resumed, "tickets {tickets}: same policy did not resume");
        // mTLS added: no resumption; the full handshake wants a certificate this client lacks.
        let mtls = TlsSettings { client_ca: Some("ca.pem".into()), ..base.clone() };
        let r = connect(&cc, &server(&mtls, cache.clone()), "a.example");
        assert!(matches!(r, Err(Failed::Server(_))), "tickets {tickets}: {r:?}");
        if !tickets {
            assert!(cache.stats().policy_mismatch >= 1, "{:?}", cache.stats());
        }
        // Another ALPN list: a full handshake, not a resumption.
        let cc = client.build();
        connect(&cc, &server(&base, cache.clone()), "a.example").unwrap();
        let alpn = TlsSettings { alpn: vec!["h2".into()], ..base.clone() };
        let d = connect(&cc, &server(&alpn, cache.clone()), "a.example").unwrap();
        assert!(!info(&d).resumed, "tickets {tickets}: resumed across an ALPN change");
    }
}

// ---------------------------------------------------------------- ticket key files (a fleet)

/// Writes a ticket key file of `len` bytes (48 or 80; others for the error cases) derived from
/// `seed` into the test directory; returns its name there.
fn key_file(name: &str, len: usize, seed: u8) -> PathBuf {
    let bytes: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(37).wrapping_add(i as u8)).collect();
    std::fs::write(files().dir.join(name), bytes).unwrap();
    name.into()
}

fn with_key_files(keys: &[&PathBuf]) -> TlsSettings {
    TlsSettings {
        resumption: Resumption::Tickets,
        ticket_key_files: keys.iter().map(|k| (*k).clone()).collect(),
        ..settings()
    }
}

/// Two hosts (each its own `ServerConfig` and session cache, as two processes have) sharing
/// the key files resume each other's tickets, TLS 1.2 and 1.3; with in-process keys they do not.
#[test]
fn key_files_resume_tickets_across_hosts() {
    let key = key_file("fleet-a.key", 80, 1);
    let small = key_file("fleet-b.key", 48, 2);
    for keys in [vec![&key], vec![&small]] {
        let s = with_key_files(&keys);
        for client in [Client::v13(), Client { tickets: true, ..Client::v12() }] {
            let version = client.versions[0].version;
            let (cache_a, cache_b) = (new_cache(), new_cache());
            let (host_a, host_b) = (server(&s, cache_a.clone()), server(&s, cache_b.clone()));
            let cc = client.build();
            assert!(!info(&connect(&cc, &host_a, "a.example").unwrap()).resumed);
            let d = connect(&cc, &host_b, "a.example").unwrap();
            assert!(info(&d).resumed, "{version:?}: a ticket of host A did not resume on host B");
            assert_eq!(d.client.handshake_kind(), Some(HandshakeKind::Resumed));
            assert_eq!(info(&d).version, version);
            // And back: B's ticket resumes on A. Nothing went through the caches.
            assert!(info(&connect(&cc, &host_a, "a.example").unwrap()).resumed);
            assert_eq!((cache_a.stats().inserts, cache_b.stats().inserts), (0, 0));
        }
    }
    // Each host its own in-process keys: a full handshake on the other host.
    let s = TlsSettings { resumption: Resumption::Tickets, ..settings() };
    for client in [Client::v13(), Client { tickets: true, ..Client::v12() }] {
        let cc = client.build();
        connect(&cc, &server(&s, new_cache()), "a.example").unwrap();
        assert!(!info(&connect(&cc, &server(&s, new_cache()), "a.example").unwrap()).resumed);
    }
}

/// Rotation: a new file prepended; old tickets still resume, new ones are made with the new key
/// (a host that has only the old file cannot open them, one with only the new file can).
#[test]
fn key_file_rotation_keeps_old_tickets_and_encrypts_with_the_new_key() {
    let (old, new) = (key_file("rotate-old.key", 80, 3), key_file("rotate-new.key", 80, 4));
    for client in [Client::v13(), Client { tickets: true, ..Client::v12() }] {
        let cc = client_like(&client).build();
        connect(&cc, &server(&with_key_files(&[&old]), new_cache()), "a.example").unwrap();
        let rotated = server(&with_key_files(&[&new, &old]), new_cache());
        assert!(info(&connect(&cc, &rotated, "a.example").unwrap()).resumed, "an old ticket after rotation");
        // The client now holds tickets of the rotated host: made with the new key.
        let cc = client_like(&client).build();
        connect(&cc, &rotated, "a.example").unwrap();
        assert!(!info(&connect(&cc, &server(&with_key_files(&[&old]), new_cache()), "a.example").unwrap()).resumed);
        let cc = client_like(&client).build();
        connect(&cc, &rotated, "a.example").unwrap();
        assert!(info(&connect(&cc, &server(&with_key_files(&[&new]), new_cache()), "a.example").unwrap()).resumed);
    }
}

/// Hosts sharing the files but serving another TLS policy (here: ALPN) do not resume each
/// other's tickets: a full handshake, counted as a policy mismatch.
#[test]
fn key_file_tickets_resume_only_under_their_policy() {
    let key = key_file("policy.key", 80, 5);
    let s = with_key_files(&[&key]);
    let other = TlsSettings { alpn: vec!["h2".into()], ..s.clone() };
    for client in [Client::v13(), Client { tickets: true, ..Client::v12() }] {
        let cc = client.build();
        connect(&cc, &server(&s, new_cache()), "a.example").unwrap();
        let cache = new_cache();
        let d = connect(&cc, &server(&other, cache.clone()), "a.example").unwrap();
        assert!(!info(&d).resumed);
        assert!(cache.stats().policy_mismatch >= 1, "{:?}", cache.stats());
    }
}

#[test]
fn key_file_errors_name_the_file() {
    let good = key_file("good.key", 48, 6);
    let short = key_file("short.key", 47, 7);
    let e = build_err(&with_key_files(&[&good, &short]));
    assert!(e.contains("tls.ticket_key_files[1]") && e.contains("short.key") && e.contains("47 bytes"), "{e}");
    assert!(e.contains("48 or 80"), "{e}");
    let e = build_err(&with_key_files(&[&good, &"missing.key".into()]));
    assert!(e.contains("ticket_key_files[1]") && e.contains("missing.key"), "{e}");
    let e = build_err(&with_key_files(&[&good, &good]));
    assert!(e.contains("ticket_key_files[1]") && e.contains("same key name") && e.contains("good.key"), "{e}");
    let s = TlsSettings { ticket_key_files: vec![good.clone()], ..settings() };
    assert!(build_err(&s).contains("needs resumption = \"tickets\""));
    // Listed among the files a reload reads (the keyholder reads them for sluice).
    let named = files_named(&with_key_files(&[&good]), Path::new("/etc/sluice"));
    assert_eq!(named.last().unwrap(), Path::new("/etc/sluice/good.key"));
    let s: TlsSettings =
        toml::from_str("resumption = \"tickets\"\nticket_key_files = [\"a.key\", \"/b.key\"]").unwrap();
    assert_eq!(s.ticket_key_files, [PathBuf::from("a.key"), PathBuf::from("/b.key")]);
}

/// The files are read through the `FileSource` given to `build_with` (after the privilege
/// drop, that is the keyholder's answer), not from the disk.
#[test]
fn key_files_are_read_through_the_file_source() {
    struct Memory(PathBuf, Vec<u8>);
    impl FileSource for Memory {
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            if path == self.0 { Ok(self.1.clone()) } else { Disk.read(path) }
        }
    }
    let s = with_key_files(&[&"only-in-memory.key".into()]);
    let e = build_err(&s);
    assert!(e.contains("only-in-memory.key"), "{e}");
    let source = Memory(files().dir.join("only-in-memory.key"), vec![9; 80]);
    let host_a = build_with(&s, &files().dir, &source, new_cache()).unwrap();
    let host_b = build_with(&s, &files().dir, &source, new_cache()).unwrap();
    let cc = Client::v13().build();
    connect(&cc, &host_a, "a.example").unwrap();
    assert!(info(&connect(&cc, &host_b, "a.example").unwrap()).resumed);
}

// ---------------------------------------------------------------- mTLS

#[test]
fn mtls_accepts_a_client_of_the_ca_and_rejects_others() {
    let s = TlsSettings { client_ca: Some("ca.pem".into()), ..settings() };
    let sc = server(&s, new_cache());
    let f = files();
    let good = Client { auth: Some((f.client_chain.clone(), f.client_key.clone_key())), ..Client::default() }.build();
    let d = connect(&good, &sc, "a.example").unwrap();
    assert!(info(&d).client_cert);

    let none = Client::default().build();
    assert!(matches!(connect(&none, &sc, "a.example"), Err(Failed::Server(_))));

    let chain = pem_certs(&f.dir.join("stranger.pem"));
    let key = PrivateKeyDer::from_pem_file(f.dir.join("stranger.key")).unwrap();
    let stranger = Client { auth: Some((chain, key)), ..Client::v12() }.build();
    assert!(matches!(connect(&stranger, &sc, "a.example"), Err(Failed::Server(_))));
}

// ---------------------------------------------------------------- errors on the wire

#[test]
fn garbage_instead_of_client_hello_gives_error_and_alert() {
    let sc = server(&settings(), new_cache());
    let mut s = TlsSession::<u64>::new(sc, DEFAULT_BUFFER_LIMIT).unwrap();
    let r = s.feed(7, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert!(r.is_err(), "{r:?}");
    assert!(s.failed());
    assert_eq!(s.first_byte_at(), Some(7));
    let mut out = [0u8; 64];
    let n = s.write_ciphertext(&mut out);
    // An alert record (RFC 8446 §5.1 ContentType alert = 21), level fatal (2).
    assert!(n >= 7, "alert queued");
    assert_eq!(out[0], 21);
    assert_eq!(out[5], 2);
    assert!(!s.wants_write());
    assert_eq!(s.write_plaintext(b"x"), 0);
}

#[test]
fn tls12_switched_off_refuses_a_tls12_only_client() {
    let s = TlsSettings { tls12: false, ..settings() };
    let sc = server(&s, new_cache());
    let r = connect(&Client::v12().build(), &sc, "a.example");
    assert!(matches!(r, Err(Failed::Server(_))), "{r:?}");
    let d = connect(&Client::default().build(), &sc, "a.example").unwrap();
    assert_eq!(info(&d).version, ProtocolVersion::TLSv1_3);

    let s = TlsSettings { tls13: false, ..settings() };
    let sc = server(&s, new_cache());
    let d = connect(&Client::default().build(), &sc, "a.example").unwrap();
    assert_eq!(info(&d).version, ProtocolVersion::TLSv1_2);
    assert!(connect(&Client::v13().build(), &sc, "a.example").is_err());
}

#[test]
fn groups_and_suites_are_honoured() {
    let s = TlsSettings {
        groups: vec!["secp256r1".into()],
        cipher_suites: vec!["TLS13_CHACHA20_POLY1305_SHA256".into(), "tls_ecdhe_ecdsa_with_aes_128_gcm_sha256".into()],
        ..settings()
    };
    let sc = server(&s, new_cache());
    let d = connect(&Client::v13().build(), &sc, "a.example").unwrap();
    assert_eq!(format!("{:?}", info(&d).cipher_suite), "TLS13_CHACHA20_POLY1305_SHA256");
    assert_eq!(format!("{:?}", info(&d).kx_group.unwrap()), "secp256r1");
    let d = connect(&Client::v12().build(), &sc, "a.example").unwrap();
    assert_eq!(format!("{:?}", info(&d).cipher_suite), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
}

#[test]
fn write_plaintext_is_bounded() {
    let sc = server(&settings(), new_cache());
    let cc = Client::v13().build();
    let mut client = ClientConnection::new(cc, ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc, 32 * 1024).unwrap();
    let mut now = 0;
    pump(&mut client, &mut s, &mut now).unwrap();
    let big = vec![0x5a; 1 << 20];
    let first = s.write_plaintext(&big);
    assert!(first > 0 && first <= 32 * 1024 + 16 * 1024, "accepted {first}");
    assert_eq!(s.write_plaintext(&big[first..]), 0, "full until drained");
    let mut out = vec![0u8; 1 << 17];
    assert!(s.write_ciphertext(&mut out) > first);
    assert!(s.write_plaintext(&big[first..]) > 0, "room again after draining");
}

#[test]
fn feed_stops_when_received_plaintext_is_full() {
    let sc = server(&settings(), new_cache());
    let cc = Client::v13().build();
    let mut client = ClientConnection::new(cc, ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc, DEFAULT_BUFFER_LIMIT).unwrap();
    let mut now = 0;
    pump(&mut client, &mut s, &mut now).unwrap();
    let payload = vec![0x42u8; 200 * 1024];
    let mut wire = Vec::new();
    for chunk in payload.chunks(16 * 1024) {
        std::io::Write::write_all(&mut client.writer(), chunk).unwrap();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
    }
    // The whole 200 KiB cannot be taken at once: rustls keeps received plaintext bounded.
    let mut got = Vec::new();
    let mut off = 0;
    let mut partial = false;
    while off < wire.len() {
        let n = s.feed(1, &wire[off..]).unwrap();
        partial |= off + n < wire.len();
        off += n;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let m = s.read_plaintext(&mut buf);
            if m == 0 {
                break;
            }
            got.extend_from_slice(&buf[..m]);
        }
    }
    assert!(partial);
    assert_eq!(got, payload);
}

// ---------------------------------------------------------------- configuration errors

fn build_err(s: &TlsSettings) -> String {
    build(s, &files().dir, new_cache()).unwrap_err().to_string()
}

#[test]
fn config_errors_name_field_and_file() {
    let mut s = settings();
    s.certificates[1].cert = "missing.pem".into();
    let e = build_err(&s);
    assert!(e.contains("certificates[1].cert") && e.contains("missing.pem"), "{e}");

    let mut s = settings();
    s.certificates[0].key = "missing.key".into();
    let e = build_err(&s);
    assert!(e.contains("certificates[0].key") && e.contains("missing.key"), "{e}");

    let mut s = settings();
    s.certificates[0].cert = "garbage.pem".into();
    let e = build_err(&s);
    assert!(e.contains("certificates[0].cert") && e.contains("garbage.pem"), "{e}");

    let mut s = settings();
    s.certificates[2].key = "a.example.ecdsa.pem".into(); // a certificate, not a key
    let e = build_err(&s);
    assert!(e.contains("certificates[2].key") && e.contains("a.example.ecdsa.pem"), "{e}");

    let mut s = settings();
    s.certificates[0].key = "b.example.ecdsa.key".into();
    let e = build_err(&s);
    assert!(
        e.contains("does not match") && e.contains("b.example.ecdsa.key") && e.contains("a.example.ecdsa.pem"),
        "{e}"
    );

    let s = TlsSettings { groups: vec!["x25519".into(), "brainpool".into()], ..settings() };
    let e = build_err(&s);
    assert!(e.contains("tls.groups") && e.contains("brainpool"), "{e}");

    let s = TlsSettings { cipher_suites: vec!["TLS_RSA_WITH_RC4_128_MD5".into()], ..settings() };
    let e = build_err(&s);
    assert!(e.contains("tls.cipher_suites") && e.contains("RC4"), "{e}");

    let s = TlsSettings { tls12: false, tls13: false, ..settings() };
    assert!(build_err(&s).contains("no protocol version"));

    // Only TLS 1.3 suites but only TLS 1.2 enabled: nothing usable.
    let s = TlsSettings { tls13: false, cipher_suites: vec!["TLS13_AES_128_GCM_SHA256".into()], ..settings() };
    assert!(build_err(&s).contains("tls.cipher_suites"));

    let s = TlsSettings { client_ca: Some("nope-ca.pem".into()), ..settings() };
    let e = build_err(&s);
    assert!(e.contains("tls.client_ca") && e.contains("nope-ca.pem"), "{e}");

    let s = TlsSettings { certificates: vec![], ..settings() };
    assert!(build_err(&s).contains("tls.certificates"));

    let mut s = settings();
    s.certificates[1].default = true;
    assert!(build_err(&s).contains("default"));
}

#[test]
fn settings_parse_from_toml_with_defaults_and_reject_unknown_fields() {
    let s: TlsSettings = toml::from_str(
        r#"
        alpn = ["h2", "http/1.1"]
        tls12 = false
        resumption = "tickets"
        groups = ["x25519", "secp256r1"]
        client_ca = "ca.pem"
        [[certificates]]
        cert = "a.pem"
        key = "a.key"
        sni = ["a.example"]
        default = true
        [[certificates]]
        cert = "b.pem"
        key = "b.key"
        "#,
    )
    .unwrap();
    assert!(!s.tls12 && s.tls13);
    assert_eq!(s.resumption, Resumption::Tickets);
    assert_eq!(s.certificates.len(), 2);
    assert!(s.certificates[1].sni.is_empty() && !s.certificates[1].default);
    assert_eq!(s.session_cache_entries, TlsSettings::default().session_cache_entries);

    let e = toml::from_str::<TlsSettings>("tls14 = true").unwrap_err().to_string();
    assert!(e.contains("tls14"), "{e}");
    let e =
        toml::from_str::<TlsSettings>("[[certificates]]\ncert = \"a\"\nkey = \"b\"\nsin = []").unwrap_err().to_string();
    assert!(e.contains("sin"), "{e}");
    assert!(toml::from_str::<TlsSettings>("resumption = \"maybe\"").is_err());
}

// ---------------------------------------------------------------- hostile input

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_input_never_panics() {
    let sc = server(&settings(), new_cache());
    // A real ClientHello to mutate.
    let mut c = ClientConnection::new(Client::default().build(), ServerName::try_from("a.example").unwrap()).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let mut errors = 0;
    for round in 0..3000 {
        let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
        let mut input = if round % 2 == 0 {
            let mut h = hello.clone();
            for _ in 0..1 + rng.next() % 8 {
                let i = (rng.next() as usize) % h.len();
                h[i] = rng.next() as u8;
            }
            h.truncate(1 + (rng.next() as usize) % h.len());
            h
        } else {
            let mut v = vec![0x16, 0x03, 0x01];
            v.extend((0..(rng.next() % 600)).map(|_| rng.next() as u8));
            v
        };
        input.extend((0..(rng.next() % 64)).map(|_| rng.next() as u8));
        let mut off = 0;
        let mut out = [0u8; 4096];
        while off < input.len() {
            let step = 1 + (rng.next() as usize) % 300;
            let end = (off + step).min(input.len());
            match s.feed(round, &input[off..end]) {
                Ok(n) if n > 0 => off += n,
                Ok(_) => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
            s.write_ciphertext(&mut out);
        }
        let _ = s.feed_eof(round);
        s.write_ciphertext(&mut out);
        s.read_plaintext(&mut out);
    }
    assert!(errors > 1000, "most mutated inputs must be refused: {errors}");
}

#[test]
fn unclean_eof_and_bytes_after_close_notify() {
    let sc = server(&settings(), new_cache());
    // Unclean: FIN without close_notify.
    let cc = Client::v13().build();
    let mut client = ClientConnection::new(cc.clone(), ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
    let mut now = 0;
    pump(&mut client, &mut s, &mut now).unwrap();
    s.feed_eof(now).unwrap();
    assert!(!s.peer_closed());
    assert_eq!(s.read_plaintext(&mut [0u8; 8]), 0);
    // Clean: close_notify, then bytes after it are not consumed.
    let mut client = ClientConnection::new(cc, ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc, DEFAULT_BUFFER_LIMIT).unwrap();
    pump(&mut client, &mut s, &mut now).unwrap();
    client.send_close_notify();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let len = wire.len();
    wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]);
    let n = s.feed(now, &wire).unwrap();
    assert!(s.peer_closed());
    // rustls reads what it is given before it sees the alert; later feeds take nothing.
    assert!(n >= len);
    assert_eq!(s.feed(now, &[0x17, 0x03, 0x03, 0x00, 0x01, 9]).unwrap(), 0);
    assert_eq!(s.read_plaintext(&mut [0u8; 8]), 0);
}

// ---------------------------------------------------------------- large ClientHellos

use crate::testhello::{MAX_RECORD_PAYLOAD, client_hello, first_alert, starts_with_server_hello};

/// What a fresh session answers to `wire` fed in pieces of `chunk` bytes: the session's result
/// and the first bytes it queued for the client.
fn answer(s: &mut TlsSession<u64>, wire: &[u8], chunk: usize) -> (Result<(), TlsError>, Vec<u8>) {
    let mut off = 0;
    let mut res = Ok(());
    while off < wire.len() {
        let end = off.saturating_add(chunk).min(wire.len());
        match s.feed(1, &wire[off..end]) {
            Ok(0) => panic!("stalled after {off} of {} bytes: rustls took nothing and said nothing", wire.len()),
            Ok(n) => off += n,
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    let mut out = vec![0u8; 1 << 16];
    let n = s.write_ciphertext(&mut out);
    out.truncate(n);
    (res, out)
}

const DECODE_ERROR: u8 = 50;

#[test]
fn large_client_hellos_get_a_server_hello() {
    let sc = server(&settings(), new_cache());
    // 11 KB fits one record; the larger ones span records (RFC 8446 §5.1), up to the largest
    // rustls joins: a message whose records (framing included) fill its 0xffff-byte buffer.
    for size in [11_000, 16_380, 16_390, 40_000, 61_000, 65_000, RUSTLS_MAX_HANDSHAKE_BUFFER - 5 * 5] {
        for record in [MAX_RECORD_PAYLOAD, 4_000] {
            for chunk in [usize::MAX, 1448, 100] {
                let wire = client_hello("a.example", size, record);
                if wire.len() > RUSTLS_MAX_HANDSHAKE_BUFFER {
                    continue;
                }
                let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
                let (res, out) = answer(&mut s, &wire, chunk);
                assert!(res.is_ok(), "{size} in records of {record}, pieces of {chunk}: {res:?}");
                assert!(starts_with_server_hello(&out), "{size}/{record}/{chunk}: no ServerHello: {out:02x?}");
                assert_eq!(s.handshake_in(), wire.len());
            }
        }
    }
}

#[test]
fn a_client_hello_larger_than_rustls_holds_gets_an_alert_not_silence() {
    let sc = server(&settings(), new_cache());
    // 0xffff + 4 bytes: a body rustls's message limit allows, but its records do not fit the
    // deframer (rustls takes 0xffff bytes and then nothing, saying nothing); 70,000: over the
    // message limit (rustls fails without an alert); 11 KB in 1-byte records: six times its
    // size in framing.
    for (size, record) in [(0xffff + 4, MAX_RECORD_PAYLOAD), (70_000, MAX_RECORD_PAYLOAD), (11_000, 1)] {
        for chunk in [usize::MAX, 1448] {
            let wire = client_hello("a.example", size, record);
            let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
            let (res, out) = answer(&mut s, &wire, chunk);
            assert!(matches!(res, Err(TlsError::HandshakeTooLarge { .. })), "{size}/{record}/{chunk}: {res:?}");
            assert!(s.failed() && s.handshake_too_large());
            assert_eq!(first_alert(&out), Some(DECODE_ERROR), "{size}/{record}/{chunk}: {out:02x?}");
            assert_eq!(out[5], 2, "fatal");
            assert!(!s.wants_write());
            assert_eq!(s.feed(2, &wire[..10]).unwrap(), 0, "a failed session takes nothing more");
        }
    }
}

#[test]
fn the_handshake_input_bound_is_honoured() {
    let sc = server(&settings(), new_cache());
    let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
    s.set_max_handshake_in(8192);
    let (res, out) = answer(&mut s, &client_hello("a.example", 11_000, MAX_RECORD_PAYLOAD), 1448);
    assert!(matches!(res, Err(TlsError::HandshakeTooLarge { limit: 8192 })), "{res:?}");
    assert_eq!(first_alert(&out), Some(DECODE_ERROR));
    assert_eq!(s.handshake_in(), 8192);

    let mut s = TlsSession::<u64>::new(sc.clone(), DEFAULT_BUFFER_LIMIT).unwrap();
    s.set_max_handshake_in(8192);
    let (res, out) = answer(&mut s, &client_hello("a.example", 8192 - 5, MAX_RECORD_PAYLOAD), usize::MAX);
    assert!(res.is_ok() && starts_with_server_hello(&out), "exactly at the bound: {res:?}");

    // A whole handshake of a real client fits a small bound; the bytes after it are not counted.
    let cc = Client::v13().build();
    let mut client = ClientConnection::new(cc, ServerName::try_from("a.example").unwrap()).unwrap();
    let mut s = TlsSession::<u64>::new(sc, DEFAULT_BUFFER_LIMIT).unwrap();
    s.set_max_handshake_in(4096);
    let mut now = 0;
    pump(&mut client, &mut s, &mut now).unwrap();
    assert!(!s.is_handshaking());
    let hs = s.handshake_in();
    std::io::Write::write_all(&mut client.writer(), &[7u8; 10_000]).unwrap();
    pump(&mut client, &mut s, &mut now).unwrap();
    assert_eq!(s.handshake_in(), hs);
    let mut buf = vec![0u8; 16_384];
    assert_eq!(s.read_plaintext(&mut buf), 10_000);
}
