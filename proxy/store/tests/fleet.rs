//! Resumption across a fleet, end to end with the crate's pieces and a real `redis-server`:
//! a client does a full handshake with sluice A, which seals every session rustls stores and
//! writes it to Redis; the client then comes back to sluice B, whose own cache is empty. B
//! peeks at the ClientHello, fetches the session (GET for TLS 1.2, GETDEL for TLS 1.3), opens
//! it into its cache, and only then hands the ClientHello to rustls: the handshake resumes.
//! This is the flow the workers will run (issue 14), minus their event loops.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{Conn, PASSWORD, start_redis};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, ServerConnection};
use sluice_store::{Auth, KeySet, Peek, Rendezvous, Reply, Token, peek};

const PREFIX: &[u8] = b"sluice:fleet:";
const LIFETIME_MS: u64 = 300_000;

/// A sluice's local cache that also queues each new session for the store (write-behind).
#[derive(Debug)]
struct WriteBehind {
    local: Arc<ServerSessionMemoryCache>,
    to_store: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl WriteBehind {
    fn new() -> Arc<Self> {
        Arc::new(Self { local: ServerSessionMemoryCache::new(64), to_store: Mutex::new(Vec::new()) })
    }
}

impl StoresServerSessions for WriteBehind {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.to_store.lock().unwrap().push((key.clone(), value.clone()));
        self.local.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.local.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.local.take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

struct Pki {
    roots: RootCertStore,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(vec!["fleet.example".to_owned()]).unwrap().signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    Pki { roots, chain: vec![leaf.der().clone()], key: leaf_key.serialize_der() }
}

fn server(pki: &Pki, v: &'static rustls::SupportedProtocolVersion, store: Arc<WriteBehind>) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone()));
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[v])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), key)
        .unwrap();
    cfg.session_storage = store;
    Arc::new(cfg)
}

fn client(pki: &Pki, v: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(&[v])
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(8)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    Arc::new(cfg)
}

fn drain(mut f: impl FnMut(&mut Vec<u8>) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    while f(&mut out) > 0 {}
    out
}

/// Runs a handshake; `before_server` sees the client's first flight before the server does
/// (where sluice peeks and fetches). Returns how the server's handshake went.
fn handshake(cc: &Arc<ClientConfig>, sc: &Arc<ServerConfig>, before_server: impl FnOnce(&[u8])) -> HandshakeKind {
    let mut c = ClientConnection::new(cc.clone(), ServerName::try_from("fleet.example").unwrap()).unwrap();
    let mut s = ServerConnection::new(sc.clone()).unwrap();
    let mut to_server = drain(|o| c.write_tls(o).unwrap());
    before_server(&to_server);
    for _ in 0..10 {
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        let to_client = drain(|o| s.write_tls(o).unwrap());
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        to_server = drain(|o| c.write_tls(o).unwrap());
        if to_server.is_empty() && to_client.is_empty() && !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(!s.is_handshaking() && !c.is_handshaking());
    s.handshake_kind().unwrap()
}

#[test]
fn a_session_made_on_one_sluice_resumes_on_another() {
    let redis = start_redis("fleet");
    let auth = Auth { username: None, password: PASSWORD.into() };
    let keys = KeySet::parse("f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f\n").unwrap();
    // Two nodes by name, one of them this Redis: rendezvous picks per key; the test sends
    // every request to the one server, but checks the pick is stable between the sluices.
    let nodes = Rendezvous::new(["127.0.0.1:1", "127.0.0.1:2"]);
    let pki = pki();
    let mut conn = Conn::open(redis.addr, Some(auth));
    let mut token = 0;

    for (name, v) in [("TLS 1.2", &rustls::version::TLS12), ("TLS 1.3", &rustls::version::TLS13)] {
        let tls13 = name == "TLS 1.3";
        let store_a = WriteBehind::new();
        let store_b = WriteBehind::new();
        let (a, b) = (server(&pki, v, store_a.clone()), server(&pki, v, store_b.clone()));
        let cc = client(&pki, v);

        // Full handshake on A; A writes its sessions behind, sealed.
        assert_eq!(handshake(&cc, &a, |_| {}), HandshakeKind::Full, "{name}");
        let written: Vec<(Vec<u8>, Vec<u8>)> = std::mem::take(&mut *store_a.to_store.lock().unwrap());
        assert!(!written.is_empty(), "{name}: A stored sessions");
        let mut picked_on_a = Vec::new();
        for (id, value) in &written {
            let store_key = keys.store_key(PREFIX, id);
            picked_on_a.push(nodes.pick(&store_key));
            token += 1;
            conn.client
                .set(Instant::now(), Token(token), &store_key, &keys.seal(&store_key, value), LIFETIME_MS)
                .unwrap();
            assert_eq!(conn.wait(Token(token)), Ok(Reply::Stored), "{name}");
        }

        // The client comes back to B, whose cache is empty.
        let mut fetched = false;
        let kind = handshake(&cc, &b, |hello| {
            let Peek::ClientHello(ids) = peek(hello) else { panic!("{name}: not a ClientHello") };
            let id = ids.lookup_id(true).expect("a resuming client names its session").to_vec();
            assert!(store_b.local.get(&id).is_none(), "{name}: a local miss");
            let store_key = keys.store_key(PREFIX, &id);
            assert!(picked_on_a.contains(&nodes.pick(&store_key)), "{name}: same node on both sluices");
            token += 1;
            let now = Instant::now();
            if tls13 {
                conn.client.getdel(now, Token(token), &store_key).unwrap();
            } else {
                conn.client.get(now, Token(token), &store_key).unwrap();
            }
            let Ok(Reply::Value(sealed)) = conn.wait(Token(token)) else { panic!("{name}: store miss") };
            let session = keys.open(&store_key, &sealed).expect("opens");
            assert!(store_b.local.put(id.clone(), session));
            fetched = true;
            if tls13 {
                // Single use: the ticket is gone from the store.
                token += 1;
                conn.client.get(Instant::now(), Token(token), &store_key).unwrap();
                assert_eq!(conn.wait(Token(token)), Ok(Reply::Nil), "{name}");
            }
        });
        assert!(fetched);
        assert_eq!(kind, HandshakeKind::Resumed, "{name}: B resumed A's session");
        // Without the store, a third sluice cannot resume: the fetch is what made B resume.
        let c = server(&pki, v, WriteBehind::new());
        assert_eq!(handshake(&cc, &c, |_| {}), HandshakeKind::Full, "{name}");
    }
    drop(redis);
}
