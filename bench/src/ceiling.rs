//! `sluice-bench ceiling`: the in-memory ceilings that the end-to-end handshake numbers are held
//! against (issue 5). One thread, no kernel, no network: a rustls client and sluice's TLS server
//! in one process, for four handshake kinds.
//!
//! - (a) `memory`: the rustls `ClientConnection` and sluice's server exchange TLS bytes through
//!   in-memory buffers.
//! - (b) `tcp`: the same handshakes, with every byte carried by two `sluice_tcp::Endpoint`s (the
//!   client's and the server's): SYN, SYN-ACK, ACK, the TLS flights, FIN both ways, TIME-WAIT
//!   expired, every segment emitted and parsed with checksums verified. The server is sluice's
//!   real session layer, run as an AF_XDP worker runs it (`proxy/src/datapath/xdp/worker/`):
//!   a `sluice::session::Session` opened when the connection is established, pumped with the
//!   connection as its client (`relay::OnStack`), closed once it ended. Its backend is the
//!   in-memory one of `proxy/src/session/memory.rs` (`MemoryLink`, `ListenerBackends::single`),
//!   which answers the request with the response and ends its stream; the session relays both
//!   and closes the client with close_notify and FIN.
//!
//! Both run the same connection: handshake, a 36-byte HTTP/1.1 request, a 65-byte response, the
//! server's close_notify. (a) answers from a stand-in for the relay's plaintext side; (b) through
//! the session and its backend, checked as the worker's counters see the session (one clean
//! relay, one handshake, exactly those bytes each way). The server is built exactly as sluice
//! builds it: `sluice_tls::build` with a `sluice_tls::SessionCache` (`resumption =
//! "session_id"`: TLS 1.2 session IDs and TLS 1.3 tickets that are IDs into the cache; no
//! stateless tickets), and every server connection is a `sluice_tls::TlsSession`. Pinned:
//! X25519, TLS13_AES_128_GCM_SHA256, and for TLS 1.2 ECDHE with the certificate's key type and
//! AES_128_GCM_SHA256. The certificate is what `sluice-bench certs` makes: an ECDSA P-256 leaf
//! under an ECDSA P-256 CA (`--key rsa`: an RSA-2048 leaf). Every connection is checked (kind,
//! version, suite, group); a mismatch stops the run rather than print a wrong figure.
//!
//! Two figures per kind and path: connections per CPU-second of the thread (client and server
//! together; CLOCK_THREAD_CPUTIME_ID, so other processes on a shared machine do not count), and
//! the server side alone (timed around each call: (a) its `TlsSession` and the plaintext
//! stand-in, (b) its `Endpoint` and `Session`, not the in-memory backend; the median
//! connection), which is what one core serving remote clients could do.
//!
//! What it is not: a load test or a latency measurement. It prints rates and the ratio (b)/(a);
//! the unit tests assert what each handshake is, never how fast.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::json;
use sluice::observe::counters::QueueCounters;
use sluice::observe::latency::Latencies;
use sluice::session::Session;
use sluice::session::backend::ListenerBackends;
use sluice::session::memory::{MemoryBackend, MemoryLink};
use sluice::session::relay::{OnStack, RelayEnd};
use sluice_tcp::{Config as TcpConfig, ConnectionHandle, Endpoint, Event, State, StreamError};
use sluice_tls::rustls::client::{Resumption as ClientResumption, Tls12Resumption};
use sluice_tls::rustls::crypto::aws_lc_rs;
use sluice_tls::rustls::pki_types::ServerName;
use sluice_tls::rustls::{
    self, CipherSuite, ClientConfig, ClientConnection, HandshakeKind, NamedGroup, ProtocolVersion, RootCertStore,
    ServerConfig,
};
use sluice_tls::testcerts::{Ca, KeyKind};
use sluice_tls::{
    CacheStats, CertSettings, DEFAULT_BUFFER_LIMIT, HandshakeInfo, Resumption, SessionCache, TlsSession, TlsSettings,
};
use sluice_wire::{Checksum, ipv4, tcp};

/// The SNI name of the certificate and of every client.
const NAME: &str = "bench.test";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nceiling\n";
/// Steps without progress-or-timer before a connection is declared stuck.
const MAX_STEPS: usize = 10_000;

/// The bound of the relay's per-direction queues: sluice's `relay.buffer` default.
fn relay_buffer() -> usize {
    sluice::config::Relay::default().buffer
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyArg {
    /// ECDSA P-256 (what `sluice-bench certs` makes for every name).
    Ecdsa,
    /// RSA 2048 (the extra leaf `sluice-bench certs` makes for the first name).
    Rsa,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seconds per measurement (one kind, one path, one round).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Rounds; (a) and (b) alternate which goes first. Best and median are printed.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Certificate key type.
    #[arg(long, value_enum, default_value_t = KeyArg::Ecdsa)]
    pub key: KeyArg,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Measure only these kinds (comma-separated); all four by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<Kind>,
}

/// The four handshake kinds measured.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tls13Full,
    Tls13Resumed,
    Tls12Full,
    Tls12Resumed,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tls13Full, Kind::Tls13Resumed, Kind::Tls12Full, Kind::Tls12Resumed];

    /// Short name, as in sluice's histograms (`tls13_handshake_full` ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tls13Full => "tls13_full",
            Kind::Tls13Resumed => "tls13_resumed",
            Kind::Tls12Full => "tls12_full",
            Kind::Tls12Resumed => "tls12_resumed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Tls13Full => "TLS 1.3 full",
            Kind::Tls13Resumed => "TLS 1.3 resumed (stateful ticket)",
            Kind::Tls12Full => "TLS 1.2 full",
            Kind::Tls12Resumed => "TLS 1.2 session-ID resumption",
        }
    }

    pub fn version(self) -> ProtocolVersion {
        match self {
            Kind::Tls13Full | Kind::Tls13Resumed => ProtocolVersion::TLSv1_3,
            Kind::Tls12Full | Kind::Tls12Resumed => ProtocolVersion::TLSv1_2,
        }
    }

    pub fn resumed(self) -> bool {
        matches!(self, Kind::Tls13Resumed | Kind::Tls12Resumed)
    }

    /// The key-exchange group the handshake must use: none for a TLS 1.2 resumption (it has no
    /// key exchange); X25519 otherwise (TLS 1.3 resumption is psk_dhe_ke, RFC 8446 §4.2.9).
    pub fn group(self) -> Option<NamedGroup> {
        (self != Kind::Tls12Resumed).then_some(NamedGroup::X25519)
    }
}

/// Which path carried the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// (a) in-memory buffers between rustls and sluice's `TlsSession`.
    Memory,
    /// (b) two `sluice_tcp::Endpoint`s, the server side a `sluice::session::Session`.
    Tcp,
}

/// What one connection agreed, as each side saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub client_kind: Option<HandshakeKind>,
    pub client_version: Option<ProtocolVersion>,
    pub client_suite: Option<CipherSuite>,
    pub client_group: Option<NamedGroup>,
    pub server: sluice_tls::HandshakeInfo,
}

/// The server (as sluice builds it), its session cache, and one client config per kind.
pub struct Fixture {
    /// Holds the certificate and key files `build` read; removed on drop.
    _dir: TempDir,
    pub server: Arc<ServerConfig>,
    pub cache: Arc<SessionCache>,
    pub tls12_suite: CipherSuite,
    clients: [Arc<ClientConfig>; 4],
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "sluice-ceiling-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(dir: &Path, name: &str, data: &str) -> Result<()> {
    std::fs::write(dir.join(name), data).with_context(|| format!("writing {name}"))
}

impl Fixture {
    pub fn new(key: KeyArg) -> Result<Self> {
        let dir = TempDir::new()?;
        let ca = Ca::new()?;
        let (kind, tls12_suite) = match key {
            KeyArg::Ecdsa => (KeyKind::EcdsaP256, CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            KeyArg::Rsa => (KeyKind::Rsa2048, CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
        };
        let leaf = ca.server(&[NAME], kind)?;
        write_file(&dir.0, "leaf.pem", &leaf.cert_pem)?;
        write_file(&dir.0, "leaf.key", &leaf.key_pem)?;
        let settings = TlsSettings {
            certificates: vec![CertSettings {
                cert: "leaf.pem".into(),
                key: "leaf.key".into(),
                sni: vec![NAME.into()],
                default: true,
            }],
            groups: vec!["x25519".into()],
            cipher_suites: vec![format!("{:?}", CipherSuite::TLS13_AES_128_GCM_SHA256), format!("{tls12_suite:?}")],
            resumption: Resumption::SessionId,
            ..TlsSettings::default()
        };
        // As proxy/src/run.rs does: the process clock, the settings' bounds.
        let clock = Arc::new(rustls::time_provider::DefaultTimeProvider);
        let cache = SessionCache::new(settings.session_cache_config(), clock);
        let server = sluice_tls::build(&settings, &dir.0, Arc::clone(&cache)).context("sluice_tls::build")?;

        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der()).context("CA certificate")?;
        let mut provider = aws_lc_rs::default_provider();
        provider.kx_groups = vec![aws_lc_rs::kx_group::X25519];
        provider.cipher_suites.retain(|s| [CipherSuite::TLS13_AES_128_GCM_SHA256, tls12_suite].contains(&s.suite()));
        let provider = Arc::new(provider);
        let client = |kind: Kind| -> Result<Arc<ClientConfig>> {
            let version = match kind.version() {
                ProtocolVersion::TLSv1_3 => &rustls::version::TLS13,
                _ => &rustls::version::TLS12,
            };
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.resumption = if kind.resumed() {
                ClientResumption::in_memory_sessions(256).tls12_resumption(Tls12Resumption::SessionIdOnly)
            } else {
                ClientResumption::disabled()
            };
            Ok(Arc::new(c))
        };
        let clients = [
            client(Kind::Tls13Full)?,
            client(Kind::Tls13Resumed)?,
            client(Kind::Tls12Full)?,
            client(Kind::Tls12Resumed)?,
        ];
        Ok(Self { _dir: dir, server, cache, tls12_suite, clients })
    }

    fn client_config(&self, kind: Kind) -> &Arc<ClientConfig> {
        &self.clients[Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// The suite `kind` must negotiate.
    pub fn suite(&self, kind: Kind) -> CipherSuite {
        match kind.version() {
            ProtocolVersion::TLSv1_3 => CipherSuite::TLS13_AES_128_GCM_SHA256,
            _ => self.tls12_suite,
        }
    }

    /// `Ok` when `o` is the handshake `kind` claims to be, on both sides.
    pub fn check(&self, kind: Kind, o: &Outcome) -> Result<()> {
        let want_kind = if kind.resumed() { HandshakeKind::Resumed } else { HandshakeKind::Full };
        let s = &o.server;
        ensure!(
            o.client_kind == Some(want_kind) && s.kind == want_kind && s.resumed == kind.resumed(),
            "{}: client saw {:?}, server {:?}",
            kind.name(),
            o.client_kind,
            s.kind
        );
        ensure!(
            o.client_version == Some(kind.version()) && s.version == kind.version(),
            "{}: version {:?} / {:?}",
            kind.name(),
            o.client_version,
            s.version
        );
        let suite = self.suite(kind);
        ensure!(
            o.client_suite == Some(suite) && s.cipher_suite == suite,
            "{}: suite {:?} / {:?}, want {suite:?}",
            kind.name(),
            o.client_suite,
            s.cipher_suite
        );
        ensure!(
            o.client_group == kind.group() && s.kx_group == kind.group(),
            "{}: group {:?} / {:?}, want {:?}",
            kind.name(),
            o.client_group,
            s.kx_group,
            kind.group()
        );
        ensure!(s.sni.as_deref() == Some(NAME), "{}: SNI {:?}", kind.name(), s.sni);
        Ok(())
    }

    /// For resumed kinds: one full handshake so the client holds a session to resume.
    pub fn prime(&self, kind: Kind) -> Result<()> {
        let mut m = Memory::default();
        m.connect(self, kind).map(|_| ())
    }
}

fn new_client(fx: &Fixture, kind: Kind) -> Result<ClientConnection> {
    let name = ServerName::try_from(NAME).map_err(|e| anyhow!("{e}"))?;
    let mut c = ClientConnection::new(fx.client_config(kind).clone(), name)?;
    // Queued until the handshake completes (no early data).
    c.writer().write_all(REQUEST)?;
    Ok(c)
}

/// What the client agreed, and what the server's handshake agreed (`None`: it did not complete).
fn outcome(client: &ClientConnection, server: Option<HandshakeInfo>) -> Result<Outcome> {
    Ok(Outcome {
        client_kind: client.handshake_kind(),
        client_version: client.protocol_version(),
        client_suite: client.negotiated_cipher_suite().map(|s| s.suite()),
        client_group: client.negotiated_key_exchange_group().map(|g| g.name()),
        server: server.ok_or_else(|| anyhow!("server handshake did not complete"))?,
    })
}

/// Client-side TLS input: every byte of `data` into rustls, processed. Returns whether the
/// server's close_notify has arrived.
fn client_take(client: &mut ClientConnection, mut data: &[u8]) -> Result<bool> {
    let mut closed = false;
    while !data.is_empty() {
        client.read_tls(&mut data)?;
        closed |= client.process_new_packets()?.peer_has_closed();
    }
    Ok(closed)
}

/// Client-side plaintext: read what is there; returns the bytes read.
fn client_read(client: &mut ClientConnection, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while let Ok(n) = client.reader().read(buf) {
        if n == 0 {
            break;
        }
        got += n;
    }
    got
}

/// (a)'s server-side request/response, a stand-in for the relay and its backend: read
/// plaintext until the whole request is in, then queue the response and close_notify once.
struct ServerApp {
    request: usize,
    responded: bool,
}

impl ServerApp {
    fn new() -> Self {
        Self { request: 0, responded: false }
    }
    fn step<I: Copy>(&mut self, s: &mut TlsSession<I>, scratch: &mut [u8]) -> Result<bool> {
        let mut progress = false;
        loop {
            let m = s.read_plaintext(scratch);
            if m == 0 {
                break;
            }
            self.request += m;
            progress = true;
        }
        if !self.responded && self.request >= REQUEST.len() {
            ensure!(s.write_plaintext(RESPONSE) == RESPONSE.len(), "response not accepted");
            s.send_close_notify();
            self.responded = true;
            progress = true;
        }
        Ok(progress)
    }
}

// ---------------------------------------------------------------- (a) in memory

/// (a): buffers reused across connections.
pub struct Memory {
    wire: Vec<u8>,
    scratch: Vec<u8>,
    /// Time spent in server-side calls (`TlsSession` and the plaintext stand-in).
    pub server_time: Duration,
}

impl Default for Memory {
    fn default() -> Self {
        Self { wire: Vec::with_capacity(relay_buffer()), scratch: vec![0; relay_buffer()], server_time: Duration::ZERO }
    }
}

impl Memory {
    /// One connection: handshake, request, response, close_notify.
    pub fn connect(&mut self, fx: &Fixture, kind: Kind) -> Result<Outcome> {
        let mut client = new_client(fx, kind)?;
        let t = Instant::now();
        let mut server = TlsSession::<u64>::new(fx.server.clone(), DEFAULT_BUFFER_LIMIT)?;
        let mut app = ServerApp::new();
        self.server_time += t.elapsed();
        let (mut got, mut closed) = (0usize, false);
        for _ in 0..MAX_STEPS {
            let mut progress = false;
            // client -> server
            self.wire.clear();
            while client.wants_write() {
                client.write_tls(&mut self.wire)?;
            }
            let t = Instant::now();
            let mut data = &self.wire[..];
            while !data.is_empty() {
                let n = server.feed(0, data)?;
                data = &data[n..];
                progress = true;
                // Plaintext out first, so that rustls can take more.
                let m = app.step(&mut server, &mut self.scratch)?;
                ensure!(n > 0 || m, "server stopped taking bytes");
            }
            progress |= app.step(&mut server, &mut self.scratch)?;
            self.server_time += t.elapsed();
            // server -> client
            loop {
                let t = Instant::now();
                let n = server.write_ciphertext(&mut self.scratch);
                self.server_time += t.elapsed();
                if n == 0 {
                    break;
                }
                closed |= client_take(&mut client, &self.scratch[..n])?;
                progress = true;
            }
            got += client_read(&mut client, &mut self.scratch);
            if got >= RESPONSE.len() && closed {
                ensure!(got == RESPONSE.len(), "response of {got} bytes");
                return outcome(&client, server.handshake_info().cloned());
            }
            ensure!(progress, "stalled: got {got} closed {closed}");
        }
        bail!("did not finish in {MAX_STEPS} steps")
    }
}

// ---------------------------------------------------------------- (b) through sluice's TCP

/// The backend behind the session (not sluice's side, so not timed): takes what the relay
/// sends until the whole request is in, answers it with the response and ends its stream.
/// Returns whether it did anything.
fn backend_answers(link: &MemoryLink, request: &mut Vec<u8>) -> Result<bool> {
    let Some(b) = link.servers.last() else {
        return Ok(false);
    };
    if request.len() >= REQUEST.len() {
        return Ok(false);
    }
    request.extend_from_slice(&b.take());
    if request.len() < REQUEST.len() {
        return Ok(false);
    }
    ensure!(request == REQUEST, "the backend got {:?}", String::from_utf8_lossy(request));
    b.send(RESPONSE);
    b.shutdown_write();
    Ok(true)
}

/// (b): a client and a server `Endpoint` joined by an in-memory wire, virtual time. The
/// server's connection is served by sluice's session layer as an AF_XDP worker serves it.
pub struct Tcp {
    client: Endpoint,
    server: Endpoint,
    now: sluice_tcp::Instant,
    server_addr: SocketAddr,
    port: u16,
    frame: Vec<u8>,
    scratch: Vec<u8>,
    cipher: Vec<u8>,
    /// The listener's backends: one, in memory (the `backend = "ip:port"` form).
    backends: Arc<ListenerBackends>,
    /// sluice's `relay` defaults.
    settings: sluice::config::Relay,
    /// The transport's side of the backend connections: in-memory streams.
    link: MemoryLink,
    /// What the backend received of the current connection's request.
    request: Vec<u8>,
    /// The worker's counters and histograms, which the session reports into.
    counters: QueueCounters,
    latencies: Latencies,
    /// Segments carried, for the report.
    pub segments: u64,
    /// Time spent on the server's side: its `Endpoint` (segments in after parsing them,
    /// segments out, timers) and its `Session` (opened, pumped, closed).
    pub server_time: Duration,
}

impl Tcp {
    pub fn new() -> Result<Self> {
        // sluice's TCP defaults (256 KiB buffers, window scale, SACK, timestamps, CUBIC).
        let cfg = TcpConfig { secret: *b"sluice-ceiling!!", ..TcpConfig::default() };
        let now = sluice_tcp::Instant::from_millis(1_000);
        let mut server = Endpoint::new(cfg.clone(), now);
        let server_addr = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 2), 443));
        server.listen(server_addr)?;
        let backend = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 10), 8080));
        let settings = sluice::config::Relay::default();
        Ok(Self {
            client: Endpoint::new(cfg, now),
            server,
            now,
            server_addr,
            port: 1024,
            frame: vec![0; 2048],
            scratch: vec![0; settings.buffer],
            cipher: Vec::with_capacity(settings.buffer),
            backends: Arc::new(ListenerBackends::single(backend, Instant::now())),
            settings,
            link: MemoryLink::default(),
            request: Vec::with_capacity(REQUEST.len()),
            counters: QueueCounters::default(),
            latencies: Latencies::default(),
            segments: 0,
            server_time: Duration::ZERO,
        })
    }

    /// Move every pending segment from `from` to `to` through emit, parse and checksums. The
    /// server's share (emitting when it is `from`, parsing and handling when it is `to`) is
    /// added to `server_time`.
    fn carry(
        frame: &mut [u8],
        now: sluice_tcp::Instant,
        from: &mut Endpoint,
        to: &mut Endpoint,
        server_is_from: bool,
        server_time: &mut Duration,
    ) -> Result<u64> {
        let mut n = 0;
        loop {
            let t0 = Instant::now();
            let Some(len) = from.poll_transmit(now, frame) else {
                if server_is_from {
                    *server_time += t0.elapsed();
                }
                break;
            };
            let t1 = Instant::now();
            let ipp = ipv4::Packet::new_checked(&frame[..len]).map_err(|e| anyhow!("ipv4: {e:?}"))?;
            let ip = ipv4::Repr::parse(&ipp, Checksum::Verify).map_err(|e| anyhow!("ipv4 repr: {e:?}"))?;
            let tp = tcp::Packet::new_checked(ipp.payload()).map_err(|e| anyhow!("tcp: {e:?}"))?;
            let seg = tcp::Repr::parse(&tp, ip.src_addr.into(), ip.dst_addr.into(), Checksum::Verify)
                .map_err(|e| anyhow!("tcp repr: {e:?}"))?;
            to.handle_segment(now, &ip.into(), &seg);
            *server_time += if server_is_from { t1 - t0 } else { t1.elapsed() };
            n += 1;
        }
        Ok(n)
    }

    /// One connection: SYN, handshake, request relayed to the backend, its response relayed
    /// back, close_notify, FIN both ways, TIME-WAIT expired; both endpoints are empty again
    /// afterwards, and the session ended clean having relayed exactly the request and response.
    pub fn connect(&mut self, fx: &Fixture, kind: Kind) -> Result<Outcome> {
        self.port = if self.port >= 61_000 { 1024 } else { self.port + 1 };
        self.link.servers.clear();
        self.request.clear();
        let counted = self.counters;
        let local = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), self.port));
        let ch = self.client.connect(self.now, local, self.server_addr)?;
        let mut client = new_client(fx, kind)?;
        // The server's connection and its session, from Established until the session ended.
        let mut session: Option<(ConnectionHandle, Session<MemoryBackend>)> = None;
        // Once the session ended: its connection, and what its handshake agreed.
        let mut ended: Option<(ConnectionHandle, Option<HandshakeInfo>)> = None;
        let (mut got, mut tls_closed, mut fin, mut client_closed) = (0usize, false, false, false);
        for _ in 0..MAX_STEPS {
            let mut progress = false;
            // The client's TLS bytes into its TCP send buffer, once established.
            if self.client.state(ch) == Some(State::Established) {
                while client.wants_write() {
                    client.write_tls(&mut self.cipher)?;
                }
                if !self.cipher.is_empty() {
                    let n = self.client.send(ch, &self.cipher)?;
                    self.cipher.drain(..n);
                    progress |= n > 0;
                }
            }
            // As a worker does: the segments that arrived, then the session, then transmit, so
            // that ACKs and window updates ride on the server's next flight.
            let moved = Self::carry(
                &mut self.frame,
                self.now,
                &mut self.client,
                &mut self.server,
                false,
                &mut self.server_time,
            )?;
            self.segments += moved;
            progress |= moved > 0;
            let t = Instant::now();
            while let Some((h, e)) = self.server.poll_event() {
                match e {
                    // The worker's open_relay (worker/dispatch/sessions.rs): a passive
                    // connection appears with Established.
                    Event::Established if session.is_none() && ended.is_none() => {
                        let s = Session::new(
                            self.now,
                            local,
                            self.server_addr,
                            Arc::clone(&self.backends),
                            Some(fx.server.clone()),
                            &self.settings,
                            None,
                        )?;
                        session = Some((h, s));
                        progress = true;
                    }
                    Event::Reset | Event::TimedOut => bail!("server connection: {e:?}"),
                    _ => {}
                }
            }
            self.server_time += t.elapsed();
            // the worker's pump_relay on the connection's events, and again on the backend's
            // readiness once it answered (an in-memory backend is always ready).
            while let Some((h, s)) = session.as_mut() {
                let t = Instant::now();
                s.relay.on_backend_ready(MemoryLink::readiness(s.relay.backend()));
                let done = s.pump(
                    &mut OnStack { tcp: &mut self.server, handle: *h },
                    self.now,
                    &mut self.link,
                    &mut self.counters,
                    &mut self.latencies,
                    &mut sluice::session::Lookups::none(),
                );
                if done && let Some((h, s)) = session.take() {
                    // the worker's close_relay: closed once it ended; the TCB finishes alone.
                    let info = s.relay.tls_session().and_then(|t| t.handshake_info()).cloned();
                    let end = s.relay.end;
                    s.close(&mut self.link, &mut self.counters, false, self.now);
                    self.server_time += t.elapsed();
                    ensure!(end == Some(RelayEnd::Clean), "the session ended {end:?}");
                    ended = Some((h, info));
                    progress = true;
                    break;
                }
                self.server_time += t.elapsed();
                if !backend_answers(&self.link, &mut self.request)? {
                    break;
                }
                progress = true;
            }
            let moved = Self::carry(
                &mut self.frame,
                self.now,
                &mut self.server,
                &mut self.client,
                true,
                &mut self.server_time,
            )?;
            self.segments += moved;
            progress |= moved > 0;
            while self.client.poll_event().is_some() {}
            // Client: TCP -> rustls -> plaintext; close after the server's FIN.
            if !fin {
                loop {
                    match self.client.recv(ch, &mut self.scratch) {
                        Ok(0) => break,
                        Ok(n) => {
                            tls_closed |= client_take(&mut client, &self.scratch[..n])?;
                            progress = true;
                        }
                        Err(StreamError::Finished) => {
                            fin = true;
                            progress = true;
                            break;
                        }
                        Err(e) => bail!("client recv: {e}"),
                    }
                }
            }
            got += client_read(&mut client, &mut self.scratch);
            if fin && !client_closed {
                self.client.close(ch);
                client_closed = true;
                progress = true;
            }
            let server_done = ended.as_ref().is_some_and(|(h, _)| self.server.state(*h) == Some(State::TimeWait));
            if client_closed && self.client.connection_count() == 0 && server_done {
                ensure!(got == RESPONSE.len() && tls_closed, "response of {got} bytes, close_notify {tls_closed}");
                let info = ended.take().and_then(|(_, info)| info);
                let o = outcome(&client, info)?;
                self.check_session(kind, &counted)?;
                // TIME-WAIT (the server closed first) expires: both endpoints empty again.
                self.now += self.server.config().time_wait;
                let t = Instant::now();
                self.server.handle_timeout(self.now);
                while self.server.poll_event().is_some() {}
                self.server_time += t.elapsed();
                self.client.handle_timeout(self.now);
                while self.client.poll_event().is_some() {}
                ensure!(self.server.connection_count() == 0, "server TCB left after TIME-WAIT");
                return Ok(o);
            }
            if !progress {
                // Quiet: run the earliest timer (delayed ACK, ...), the session's deadline
                // among them as in the worker's poll_timeout.
                let deadline = session.as_ref().and_then(|(_, s)| s.relay.deadline());
                let t = [self.client.poll_timeout(), self.server.poll_timeout(), deadline]
                    .into_iter()
                    .flatten()
                    .min()
                    .ok_or_else(|| anyhow!("stuck without timers: got {got}, fin {fin}, tls_closed {tls_closed}"))?;
                self.now = self.now.max(t);
                self.client.handle_timeout(self.now);
                let t = Instant::now();
                self.server.handle_timeout(self.now);
                self.server_time += t.elapsed();
            }
        }
        bail!("did not finish in {MAX_STEPS} steps")
    }

    /// The session of a finished connection, as the worker's counters saw it (`before`: the
    /// counters before it): one clean relay, one handshake of `kind`, exactly the request to
    /// the backend and the response to the client; its one backend stream got its FIN, left the
    /// readiness set and was let go.
    fn check_session(&self, kind: Kind, before: &QueueCounters) -> Result<()> {
        let c = &self.counters;
        let handshakes = if kind.resumed() {
            c.tls_handshakes_resumed - before.tls_handshakes_resumed
        } else {
            c.tls_handshakes_full - before.tls_handshakes_full
        };
        let relayed = (
            c.relays_clean - before.relays_clean,
            handshakes,
            c.relay_bytes_to_backend - before.relay_bytes_to_backend,
            c.relay_bytes_to_client - before.relay_bytes_to_client,
        );
        let want = (1, 1, REQUEST.len() as u64, RESPONSE.len() as u64);
        ensure!(
            relayed == want,
            "{}: (clean, handshakes, bytes to backend, to client) {relayed:?}, want {want:?}",
            kind.name()
        );
        let [b] = &self.link.servers[..] else {
            bail!("{} backend connections", self.link.servers.len());
        };
        ensure!(
            b.got_fin() && !b.got_reset() && b.dropped() && self.link.registered == 0,
            "backend stream: fin {}, reset {}, dropped {}, registered {}",
            b.got_fin(),
            b.got_reset(),
            b.dropped(),
            self.link.registered
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- measurement

/// This thread's CPU time (CLOCK_THREAD_CPUTIME_ID): what the handshakes cost, whatever else
/// runs on the machine.
fn thread_cpu() -> Result<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")?;
    Ok(Duration::from(t))
}

/// One measurement of one kind on one path.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Connections per CPU-second of this thread.
    per_cpu_sec: f64,
    /// Connections per wall-clock second.
    per_wall_sec: f64,
    /// TCP segments per connection (0 for (a)).
    segments: f64,
    /// 1 / the median connection's server-side time: what one core running only the server
    /// side would serve. The median, because a wall-clock interval that the scheduler
    /// interrupted is much longer than the work in it, and that happens to few connections.
    per_server_sec: f64,
}

/// Connections for `secs` of wall time on one path. Every outcome is checked.
fn measure(fx: &Fixture, kind: Kind, path: Via, secs: f64) -> Result<Sample> {
    let mut mem = Memory::default();
    let mut tcp = Tcp::new()?;
    let one = |mem: &mut Memory, tcp: &mut Tcp| -> Result<()> {
        let o = match path {
            Via::Memory => mem.connect(fx, kind)?,
            Via::Tcp => tcp.connect(fx, kind)?,
        };
        fx.check(kind, &o)
    };
    // Warm-up (allocator, TCP buffers recycled).
    for _ in 0..10 {
        one(&mut mem, &mut tcp)?;
    }
    let segments = tcp.segments;
    let mut server = Vec::new();
    let (start, cpu) = (Instant::now(), thread_cpu()?);
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs || n == 0 {
        let before = mem.server_time + tcp.server_time;
        one(&mut mem, &mut tcp)?;
        server.push((mem.server_time + tcp.server_time - before).as_secs_f64());
        n += 1;
    }
    let (wall, cpu) = (start.elapsed(), thread_cpu()? - cpu);
    Ok(Sample {
        per_cpu_sec: n as f64 / cpu.as_secs_f64().max(1e-9),
        per_wall_sec: n as f64 / wall.as_secs_f64(),
        segments: (tcp.segments - segments) as f64 / n as f64,
        per_server_sec: 1.0 / median(&server).max(1e-9),
    })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

pub fn run(args: &Args) -> Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(args.seconds > 0.0, "--seconds must be positive");
    let fx = Fixture::new(args.key)?;
    let key = match args.key {
        KeyArg::Ecdsa => "ECDSA P-256",
        KeyArg::Rsa => "RSA 2048",
    };
    println!(
        "ceiling: in-memory handshakes, one thread, {key} certificate, X25519, \
         TLS13_AES_128_GCM_SHA256 / {:?}; {} rounds of {} s per kind and path",
        fx.tls12_suite, args.rounds, args.seconds
    );
    println!("  rates per CPU-second of this thread (CLOCK_THREAD_CPUTIME_ID; wall-clock rates in --json)");
    println!(
        "  per connection: handshake, {} B request, {} B response, close_notify; \
         (b) adds SYN/SYN-ACK/ACK, FIN both ways, TIME-WAIT, checksummed segments, \
         sluice's Session relaying to an in-memory backend",
        REQUEST.len(),
        RESPONSE.len()
    );
    println!(
        "{:<34} {:>21} {:>21} {:>21} {:>9} {:>5}",
        "kind (best round)", "(a) rustls in memory", "(b) sluice TCP + TLS", "(b)/(a) best (median)", "(b)-(a)", "segs"
    );
    let mut rows = Vec::new();
    let mut server_side = Vec::new();
    let kinds = if args.kinds.is_empty() { Kind::ALL.to_vec() } else { args.kinds.clone() };
    for kind in kinds {
        if kind.resumed() {
            fx.prime(kind)?;
        }
        let before = fx.cache_stats();
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        for r in 0..args.rounds {
            if r % 2 == 0 {
                sa.push(measure(&fx, kind, Via::Memory, args.seconds)?);
                sb.push(measure(&fx, kind, Via::Tcp, args.seconds)?);
            } else {
                sb.push(measure(&fx, kind, Via::Tcp, args.seconds)?);
                sa.push(measure(&fx, kind, Via::Memory, args.seconds)?);
            }
        }
        let after = fx.cache_stats();
        let cpu = |v: &[Sample]| v.iter().map(|s| s.per_cpu_sec).collect::<Vec<_>>();
        let wall = |v: &[Sample]| v.iter().map(|s| s.per_wall_sec).collect::<Vec<_>>();
        let (a, b) = (cpu(&sa), cpu(&sb));
        let segments = sb.last().map_or(0.0, |s| s.segments);
        let srv = |v: &[Sample]| v.iter().map(|s| s.per_server_sec).collect::<Vec<_>>();
        let (sa_best, sb_best) = (best(&srv(&sa)), best(&srv(&sb)));
        server_side.push((kind, sa_best, sb_best));
        let (a_best, a_med, b_best, b_med) = (best(&a), median(&a), best(&b), median(&b));
        println!(
            "{:<34} {:>8.0}/s {:>7.1} us {:>8.0}/s {:>7.1} us {:>13.2} ({:.2}) {:>6.1} us {:>5.1}",
            kind.label(),
            a_best,
            1e6 / a_best,
            b_best,
            1e6 / b_best,
            b_best / a_best,
            b_med / a_med,
            1e6 / b_best - 1e6 / a_best,
            segments
        );
        rows.push(json!({
            "kind": kind.name(),
            "memory": { "per_sec_best": a_best, "per_sec_median": a_med, "us_best": 1e6 / a_best, "rounds": a, "rounds_wall": wall(&sa) },
            "tcp": { "per_sec_best": b_best, "per_sec_median": b_med, "us_best": 1e6 / b_best, "rounds": b, "rounds_wall": wall(&sb), "segments_per_connection": segments },
            "ratio_best": b_best / a_best,
            "ratio_median": b_med / a_med,
            "server_side": {
                "memory_per_sec_best": sa_best,
                "tcp_per_sec_best": sb_best,
                "ratio_best": sb_best / sa_best,
            },
            "session_cache_hits": after.hits - before.hits,
            "session_cache_misses": after.misses - before.misses,
        }));
    }
    println!(
        "server side only ((a) its TlsSession, (b) its Endpoint and Session; timed around each \
         call): what one core serving these clients could do"
    );
    for (kind, a, b) in &server_side {
        println!(
            "{:<34} {:>8.0}/s {:>7.1} us {:>8.0}/s {:>7.1} us {:>13.2} {:>14.1} us",
            kind.label(),
            a,
            1e6 / a,
            b,
            1e6 / b,
            b / a,
            1e6 / b - 1e6 / a
        );
    }
    let s = fx.cache_stats();
    println!(
        "session cache: {} hits, {} misses, {} inserts, {} entries (sluice's SessionCache)",
        s.hits, s.misses, s.inserts, s.entries
    );
    if let Some(path) = &args.json {
        let doc = json!({
            "benchmark": "ceiling",
            "key": match args.key { KeyArg::Ecdsa => "ecdsa_p256", KeyArg::Rsa => "rsa2048" },
            "group": "x25519",
            "tls13_suite": "TLS13_AES_128_GCM_SHA256",
            "tls12_suite": format!("{:?}", fx.tls12_suite),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "rate": "connections per CPU-second of the measuring thread, client and server (per_sec_*, rounds); rounds_wall: per wall-clock second; server_side: per second of time inside the server's calls",
            "results": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` connections of `kind` on `path`; returns every outcome and the cache's hit delta.
    fn run_kind(fx: &Fixture, kind: Kind, path: Via, n: usize) -> (Vec<Outcome>, CacheStats) {
        if kind.resumed() {
            fx.prime(kind).unwrap();
        }
        let before = fx.cache_stats();
        let mut mem = Memory::default();
        let mut tcp = Tcp::new().unwrap();
        let out: Vec<Outcome> = (0..n)
            .map(|_| match path {
                Via::Memory => mem.connect(fx, kind).unwrap(),
                Via::Tcp => tcp.connect(fx, kind).unwrap(),
            })
            .collect();
        let after = fx.cache_stats();
        if path == Via::Tcp {
            assert_eq!(tcp.client.connection_count(), 0);
            assert_eq!(tcp.server.connection_count(), 0);
            // Every connection was a session that relayed the request and response, clean.
            let c = &tcp.counters;
            assert_eq!(c.relays_clean, n as u64);
            assert_eq!(c.relay_bytes_to_backend, (n * REQUEST.len()) as u64);
            assert_eq!(c.relay_bytes_to_client, (n * RESPONSE.len()) as u64);
            assert_eq!(c.tls_handshakes_full + c.tls_handshakes_resumed, n as u64);
            // At least SYN, SYN-ACK, ACK, two flights, FIN/ACK both ways per connection.
            assert!(tcp.segments >= 7 * n as u64, "{} segments", tcp.segments);
        }
        let delta = CacheStats {
            hits: after.hits - before.hits,
            misses: after.misses - before.misses,
            inserts: after.inserts - before.inserts,
            ..CacheStats::default()
        };
        (out, delta)
    }

    fn assert_kind(key: KeyArg, kind: Kind, path: Via) {
        let fx = Fixture::new(key).unwrap();
        let n = 3;
        let (outs, delta) = run_kind(&fx, kind, path, n);
        for o in &outs {
            let want = if kind.resumed() { HandshakeKind::Resumed } else { HandshakeKind::Full };
            assert_eq!(o.client_kind, Some(want), "{kind:?} {path:?}");
            assert_eq!(o.server.kind, want);
            assert_eq!(o.server.resumed, kind.resumed());
            assert_eq!(o.client_version, Some(kind.version()));
            assert_eq!(o.server.version, kind.version());
            assert_eq!(o.client_suite, Some(fx.suite(kind)));
            assert_eq!(o.server.cipher_suite, fx.suite(kind));
            assert_eq!(o.server.kx_group, kind.group());
            assert_eq!(o.client_group, kind.group());
            fx.check(kind, o).unwrap();
        }
        // sluice's SessionCache served every resumption, and nothing else looked it up.
        let hits = if kind.resumed() { n as u64 } else { 0 };
        assert_eq!(delta.hits, hits, "{kind:?} {path:?}: {delta:?}");
        assert_eq!(delta.misses, 0, "{kind:?} {path:?}: {delta:?}");
        // TLS 1.3: two stateful tickets per handshake go into the cache; TLS 1.2: a full
        // handshake stores its session ID, a resumption stores nothing new.
        let inserts = match kind {
            Kind::Tls13Full | Kind::Tls13Resumed => 2 * n as u64,
            Kind::Tls12Full => n as u64,
            Kind::Tls12Resumed => 0,
        };
        assert_eq!(delta.inserts, inserts, "{kind:?} {path:?}: {delta:?}");
    }

    #[test]
    fn memory_tls13_full() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls13Full, Via::Memory);
    }
    #[test]
    fn memory_tls13_resumed() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls13Resumed, Via::Memory);
    }
    #[test]
    fn memory_tls12_full() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls12Full, Via::Memory);
    }
    #[test]
    fn memory_tls12_resumed() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls12Resumed, Via::Memory);
    }
    #[test]
    fn tcp_tls13_full() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls13Full, Via::Tcp);
    }
    #[test]
    fn tcp_tls13_resumed() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls13Resumed, Via::Tcp);
    }
    #[test]
    fn tcp_tls12_full() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls12Full, Via::Tcp);
    }
    #[test]
    fn tcp_tls12_resumed() {
        assert_kind(KeyArg::Ecdsa, Kind::Tls12Resumed, Via::Tcp);
    }
    #[test]
    fn rsa_tls12_suite_follows_the_key() {
        assert_kind(KeyArg::Rsa, Kind::Tls12Full, Via::Tcp);
        assert_kind(KeyArg::Rsa, Kind::Tls13Resumed, Via::Memory);
    }

    /// The check refuses a handshake that is not the claimed kind: a full handshake is not a
    /// resumption, and a TLS 1.2 resumption is not a TLS 1.3 one.
    #[test]
    fn check_rejects_the_wrong_kind() {
        let fx = Fixture::new(KeyArg::Ecdsa).unwrap();
        let mut mem = Memory::default();
        let full = mem.connect(&fx, Kind::Tls13Full).unwrap();
        assert!(fx.check(Kind::Tls13Full, &full).is_ok());
        assert!(fx.check(Kind::Tls13Resumed, &full).is_err());
        assert!(fx.check(Kind::Tls12Full, &full).is_err());
        fx.prime(Kind::Tls12Resumed).unwrap();
        let res12 = mem.connect(&fx, Kind::Tls12Resumed).unwrap();
        assert!(fx.check(Kind::Tls12Resumed, &res12).is_ok());
        assert!(fx.check(Kind::Tls13Resumed, &res12).is_err());
        assert!(fx.check(Kind::Tls12Full, &res12).is_err());
    }

    /// The JSON file has one row per kind with both paths and the ratio.
    #[test]
    fn json_has_every_kind() {
        let dir = TempDir::new().unwrap();
        let path = dir.0.join("ceiling.json");
        run(&Args { seconds: 0.01, rounds: 1, key: KeyArg::Ecdsa, json: Some(path.clone()), kinds: Vec::new() })
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let rows = v["results"].as_array().unwrap();
        let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["tls13_full", "tls13_resumed", "tls12_full", "tls12_resumed"]);
        for r in rows {
            assert!(r["memory"]["per_sec_best"].as_f64().unwrap() > 0.0);
            assert!(r["tcp"]["per_sec_best"].as_f64().unwrap() > 0.0);
            assert!(r["ratio_best"].as_f64().unwrap() > 0.0);
            assert!(r["server_side"]["memory_per_sec_best"].as_f64().unwrap() > 0.0);
            assert!(r["server_side"]["tcp_per_sec_best"].as_f64().unwrap() > 0.0);
        }
        assert!(rows[1]["session_cache_hits"].as_u64().unwrap() > 0);
        assert_eq!(rows[0]["session_cache_hits"].as_u64().unwrap(), 0);
    }
}
