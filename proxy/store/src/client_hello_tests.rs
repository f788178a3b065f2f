//! Tests for the ClientHello peek: real ClientHellos from a rustls client (full and resuming,
//! TLS 1.2 and 1.3), split over records and TCP reads, truncated, mutated, and arbitrary bytes.

use std::sync::{Arc, Mutex, OnceLock};

use proptest::prelude::*;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::*;

/// A server session store that remembers the keys rustls stored: the IDs a resuming client
/// must present.
#[derive(Debug)]
struct Recording {
    inner: Arc<ServerSessionMemoryCache>,
    keys: Mutex<Vec<Vec<u8>>>,
}

impl StoresServerSessions for Recording {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.keys.lock().unwrap().push(key.clone());
        self.inner.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key)
    }
    fn can_cache(&self) -> bool {
        true
    }
}

struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["store.example".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        Pki { ca: ca.der().clone(), chain: vec![leaf.der().clone()], key: leaf_key.serialize_der() }
    })
}

fn server(versions: &[&'static rustls::SupportedProtocolVersion], store: Arc<Recording>) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki().key.clone()));
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki().chain.clone(), key)
        .unwrap();
    cfg.session_storage = store;
    cfg.send_tls13_tickets = 2;
    Arc::new(cfg)
}

fn client(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().ca.clone()).unwrap();
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(8)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    Arc::new(cfg)
}

fn drain(from: &mut dyn FnMut(&mut Vec<u8>) -> usize) -> Vec<u8> {
    let mut out = Vec::new();
    while from(&mut out) > 0 {}
    out
}

/// Runs a whole handshake in memory; returns the client's first flight (its ClientHello).
fn handshake(cc: &Arc<ClientConfig>, sc: &Arc<ServerConfig>) -> Vec<u8> {
    let mut c = ClientConnection::new(cc.clone(), ServerName::try_from("store.example").unwrap()).unwrap();
    let mut s = ServerConnection::new(sc.clone()).unwrap();
    let hello = drain(&mut |o| c.write_tls(o).unwrap());
    let mut to_server = hello.clone();
    for _ in 0..10 {
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        let to_client = drain(&mut |o| s.write_tls(o).unwrap());
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
        to_server = drain(&mut |o| c.write_tls(o).unwrap());
        if to_server.is_empty() && to_client.is_empty() && !c.is_handshaking() && !s.is_handshaking() {
            break;
        }
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    hello
}

/// A real ClientHello: (what, bytes, the ID the server stored that it must name, if any).
type Hello = (&'static str, Vec<u8>, Option<Vec<u8>>);

struct Hellos {
    all: Vec<Hello>,
}

fn hellos() -> &'static Hellos {
    static H: OnceLock<Hellos> = OnceLock::new();
    H.get_or_init(|| {
        let mut all = Vec::new();
        for (name, v) in [("tls12", &rustls::version::TLS12), ("tls13", &rustls::version::TLS13)] {
            let store = Arc::new(Recording { inner: ServerSessionMemoryCache::new(64), keys: Mutex::new(vec![]) });
            let sc = server(&[v], store.clone());
            let cc = client(&[v]);
            let full = handshake(&cc, &sc);
            let stored = store.keys.lock().unwrap().clone();
            assert!(!stored.is_empty(), "{name}: server stored a session");
            let resumed = handshake(&cc, &sc);
            all.push((if name == "tls12" { "tls12 full" } else { "tls13 full" }, full, None));
            all.push((
                if name == "tls12" { "tls12 resumed" } else { "tls13 resumed" },
                resumed,
                // TLS 1.2 names the one session; TLS 1.3 offers the newest ticket first.
                Some(stored.last().unwrap().clone()),
            ));
        }
        // Both versions offered, full handshake: supported_versions lists 1.3.
        let store = Arc::new(Recording { inner: ServerSessionMemoryCache::new(64), keys: Mutex::new(vec![]) });
        let both = [&rustls::version::TLS13, &rustls::version::TLS12];
        all.push(("both full", handshake(&client(&both), &server(&both, store)), None));
        Hellos { all }
    })
}

fn ids(bytes: &[u8]) -> HelloIds {
    match peek(bytes) {
        Peek::ClientHello(ids) => ids,
        other => panic!("expected a ClientHello, got {other:?}"),
    }
}

/// Re-frames a single-record ClientHello into records of at most `size` bytes each.
fn refragment(hello: &[u8], size: usize) -> Vec<u8> {
    let declared = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    let body = &hello[5..(5 + declared).min(hello.len())];
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

// Tests on real ClientHellos.

#[test]
fn real_hellos_give_the_ids_the_server_stored() {
    for (what, bytes, stored) in &hellos().all {
        let got = ids(bytes);
        assert_eq!(got.sni.as_deref(), Some("store.example"), "{what}");
        match *what {
            "tls12 full" => {
                assert!(!got.psk_present && !got.offers_tls13, "{what}: {got:?}");
                assert_eq!(got.lookup_id(true), None, "{what}: a full TLS 1.2 handshake has nothing to look up");
            }
            "tls12 resumed" => {
                assert!(!got.psk_present && !got.offers_tls13, "{what}: {got:?}");
                assert_eq!(got.session_id.as_bytes(), stored.as_deref().unwrap(), "{what}");
                assert_eq!(got.lookup_id(true), stored.as_deref(), "{what}");
            }
            "tls13 full" | "both full" => {
                assert!(got.offers_tls13 && !got.psk_present && got.psk_identity.is_none(), "{what}: {got:?}");
                // Middlebox-compatibility mode: 32 random bytes, not an ID to look up.
                assert_eq!(got.session_id.as_bytes().len(), 32, "{what}");
                assert_eq!(got.lookup_id(true), None, "{what}");
                // A server with TLS 1.3 off would do TLS 1.2: the session ID is then the key.
                assert_eq!(got.lookup_id(false), Some(got.session_id.as_bytes()), "{what}");
            }
            "tls13 resumed" => {
                assert!(got.offers_tls13 && got.psk_present, "{what}: {got:?}");
                assert!(got.psk_identities >= 1);
                assert_eq!(got.psk_identity.as_deref(), stored.as_deref(), "{what}: the ticket is the store's key");
                assert_eq!(got.lookup_id(true), stored.as_deref(), "{what}");
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn every_prefix_of_a_real_hello_is_incomplete() {
    for (what, bytes, _) in &hellos().all {
        for n in 0..bytes.len() {
            assert_eq!(peek(&bytes[..n]), Peek::Incomplete, "{what}: prefix of {n} bytes");
        }
    }
}

#[test]
fn a_hello_split_over_records_reads_the_same() {
    for (what, bytes, _) in &hellos().all {
        let whole = ids(bytes);
        for size in [1, 2, 3, 4, 5, 7, 38, 39, 40, 100, 511] {
            let split = refragment(bytes, size);
            assert_eq!(ids(&split), whole, "{what}: records of {size} bytes");
            // And every prefix of the split form is incomplete.
            for n in (0..split.len()).step_by(size.max(3)) {
                assert_eq!(peek(&split[..n]), Peek::Incomplete, "{what}: {size}-byte records, prefix {n}");
            }
        }
    }
}

#[test]
fn bytes_after_the_hello_are_ignored() {
    let (_, bytes, _) = &hellos().all[1];
    let mut more = bytes.clone();
    more.extend_from_slice(&[20, 3, 3, 0, 1, 1, 0xff, 0xff]);
    assert_eq!(ids(&more), ids(bytes));
}

// Tests on hand-made inputs.

fn record(ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![ty, 3, 1];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// A minimal ClientHello body with the given session ID and extensions block (`None`: no
/// extensions field at all).
fn hello_body(session_id: &[u8], exts: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend_from_slice(&[7; 32]);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    if let Some(e) = exts {
        b.extend_from_slice(&(e.len() as u16).to_be_bytes());
        b.extend_from_slice(e);
    }
    b
}

fn handshake_msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut e = ty.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

fn psk_ext(identities: &[&[u8]]) -> Vec<u8> {
    let mut ids = Vec::new();
    for id in identities {
        ids.extend_from_slice(&(id.len() as u16).to_be_bytes());
        ids.extend_from_slice(id);
        ids.extend_from_slice(&[0, 0, 0, 1]);
    }
    let mut d = (ids.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&ids);
    d.extend_from_slice(&[0, 33, 32]);
    d.extend_from_slice(&[0xbb; 32]);
    ext(EXT_PRE_SHARED_KEY, &d)
}

fn peek_body(body: &[u8]) -> Peek {
    peek(&record(22, &handshake_msg(1, body)))
}

#[test]
fn not_tls_at_all() {
    assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotClientHello(NotReason::NotHandshakeRecord));
    assert_eq!(peek(b"\x16\x02\x00\x00\x01"), Peek::NotClientHello(NotReason::BadRecordVersion));
    assert_eq!(peek(&[22, 3, 1, 0, 0]), Peek::NotClientHello(NotReason::BadRecordLength));
    assert_eq!(peek(&[22, 3, 1, 0x40, 0x01]), Peek::NotClientHello(NotReason::BadRecordLength));
    assert_eq!(peek(&record(22, &handshake_msg(2, &[0; 10]))), Peek::NotClientHello(NotReason::NotClientHello));
    // The first byte of the handshake is enough to say.
    assert_eq!(peek(&[22, 3, 1, 0, 10, 2]), Peek::NotClientHello(NotReason::NotClientHello));
    assert_eq!(peek(&[]), Peek::Incomplete);
    assert_eq!(peek(&[22]), Peek::Incomplete);
}

#[test]
fn another_record_type_in_the_middle_ends_the_peek() {
    let msg = handshake_msg(1, &hello_body(&[], None));
    let mut bytes = record(22, &msg[..10]);
    bytes.extend_from_slice(&record(20, &[1]));
    assert_eq!(peek(&bytes), Peek::NotClientHello(NotReason::NotHandshakeRecord));
}

#[test]
fn tls12_hello_without_extensions() {
    let got = match peek_body(&hello_body(&[9; 32], None)) {
        Peek::ClientHello(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(got.session_id.as_bytes(), &[9; 32]);
    assert_eq!(got.lookup_id(true), Some(&[9u8; 32][..]));
    assert!(got.sni.is_none() && !got.psk_present);
}

#[test]
fn session_id_longer_than_32_is_malformed() {
    assert_eq!(peek_body(&hello_body(&[1; 33], None)), Peek::NotClientHello(NotReason::Malformed));
}

#[test]
fn psk_identities_first_one_wins_and_empty_is_malformed() {
    let e = psk_ext(&[b"first-ticket", b"second"]);
    let got = match peek_body(&hello_body(&[5; 32], Some(&e))) {
        Peek::ClientHello(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(got.psk_identity.as_deref(), Some(&b"first-ticket"[..]));
    assert_eq!(got.psk_identities, 2);
    assert_eq!(got.lookup_id(true), Some(&b"first-ticket"[..]), "the PSK, not the compat session ID");
    assert_eq!(got.lookup_id(false), Some(&b"first-ticket"[..]));
    let e = psk_ext(&[b""]);
    assert_eq!(peek_body(&hello_body(&[], Some(&e))), Peek::NotClientHello(NotReason::Malformed));
    let e = psk_ext(&[]);
    assert_eq!(peek_body(&hello_body(&[], Some(&e))), Peek::NotClientHello(NotReason::Malformed));
}

#[test]
fn lengths_past_their_container_are_malformed() {
    // server_name list longer than the extension.
    let e = ext(EXT_SERVER_NAME, &[0, 50, 0, 0, 3, b'a', b'b', b'c']);
    assert_eq!(peek_body(&hello_body(&[], Some(&e))), Peek::NotClientHello(NotReason::Malformed));
    // An extension longer than the block.
    let mut e = ext(EXT_SUPPORTED_VERSIONS, &[2, 3, 4]);
    e[3] = 40;
    assert_eq!(peek_body(&hello_body(&[], Some(&e))), Peek::NotClientHello(NotReason::Malformed));
    // supported_versions with an odd length.
    let e = ext(EXT_SUPPORTED_VERSIONS, &[3, 3, 4, 3]);
    assert_eq!(peek_body(&hello_body(&[], Some(&e))), Peek::NotClientHello(NotReason::Malformed));
    // A body shorter than its random.
    assert_eq!(peek_body(&[3, 3, 1, 2]), Peek::NotClientHello(NotReason::Malformed));
}

#[test]
fn sni_non_utf8_or_other_name_type_is_none() {
    let e = ext(EXT_SERVER_NAME, &[0, 5, 0, 0, 2, 0xff, 0xfe]);
    match peek_body(&hello_body(&[], Some(&e))) {
        Peek::ClientHello(ids) => assert_eq!(ids.sni, None),
        other => panic!("{other:?}"),
    }
    let e = ext(EXT_SERVER_NAME, &[0, 5, 7, 0, 2, b'a', b'b']);
    match peek_body(&hello_body(&[], Some(&e))) {
        Peek::ClientHello(ids) => assert_eq!(ids.sni, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hello_that_cannot_fit_the_budget_is_too_large() {
    // Announces a 70,000-byte body: refused as soon as the length is seen.
    let mut msg = vec![1];
    msg.extend_from_slice(&70_000u32.to_be_bytes()[1..]);
    assert_eq!(peek(&record(22, &msg)), Peek::NotClientHello(NotReason::TooLarge));
    // 1-byte records: headers eat the budget; the peek stops at 64 KiB.
    let body = hello_body(&[], Some(&ext(0xfafa, &vec![0; 12_000])));
    let split = refragment(&record(22, &handshake_msg(1, &body)), 1);
    assert!(split.len() > MAX_PEEK_BYTES);
    assert_eq!(peek(&split), Peek::NotClientHello(NotReason::TooLarge));
    assert_eq!(peek(&split[..MAX_PEEK_BYTES - 1]), Peek::Incomplete);
    // The same hello in big records fits.
    assert!(matches!(peek(&refragment(&record(22, &handshake_msg(1, &body)), 16_384)), Peek::ClientHello(_)));
}

#[test]
fn a_hello_over_several_full_records() {
    // A 40 KB ClientHello (a big padding extension) in 2^14-byte records.
    let body = hello_body(&[3; 16], Some(&[psk_ext(&[b"t"]), ext(0xfafa, &vec![0; 40_000])].concat()));
    let bytes = refragment(&record(22, &handshake_msg(1, &body))[..], MAX_RECORD_PAYLOAD);
    match peek(&bytes) {
        Peek::ClientHello(ids) => assert_eq!(ids.psk_identity.as_deref(), Some(&b"t"[..])),
        other => panic!("{other:?}"),
    }
}

// Property tests: never a panic, never an answer that depends on bytes past the budget.

fn real_hello() -> impl Strategy<Value = Vec<u8>> {
    (0..hellos().all.len()).prop_map(|i| hellos().all[i].1.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = peek(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_handshake_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        split in 1usize..600,
    ) {
        let bytes = refragment(&record(22, &handshake_msg(1, &body)), split);
        let _ = peek(&bytes);
    }

    #[test]
    fn mutated_real_hellos_never_panic(
        hello in real_hello(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        split in 1usize..700,
    ) {
        let mut bytes = hello;
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = peek(&bytes);
        let n = cut.index(bytes.len() + 1);
        let _ = peek(&bytes[..n]);
        if bytes.len() > 5 {
            let _ = peek(&refragment(&bytes, split));
        }
    }

    #[test]
    fn truncated_real_hellos_are_incomplete_and_split_ones_agree(
        hello in real_hello(),
        cut in any::<prop::sample::Index>(),
        split in 1usize..700,
    ) {
        let n = cut.index(hello.len());
        prop_assert_eq!(peek(&hello[..n]), Peek::Incomplete);
        prop_assert_eq!(peek(&refragment(&hello, split)), peek(&hello));
    }

    #[test]
    fn only_the_budget_is_read(bytes in proptest::collection::vec(any::<u8>(), MAX_PEEK_BYTES..MAX_PEEK_BYTES + 64)) {
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAA; 100]);
        prop_assert_eq!(peek(&bytes), peek(&longer));
    }
}
