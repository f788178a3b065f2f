//! `sluice-bench load`: a TLS load generator (issue 5).
//!
//! What it is: many TLS client connections from one process, each thread one non-blocking event
//! loop (mio over epoll, a timerfd for the schedule), rustls as the client with the key exchange
//! group and the cipher suite pinned (X25519; TLS13_AES_128_GCM_SHA256, or for TLS 1.2
//! ECDHE_{ECDSA,RSA}_WITH_AES_128_GCM_SHA256, whichever the certificate's key allows; TLS 1.2
//! also lists secp256r1, see [`client_config`]). What was negotiated is recorded, as is every
//! handshake's kind (full or resumed) as rustls saw it.
//!
//! Modes:
//! - `full`: every connection a full handshake (resumption disabled in the client), one
//!   `GET` with `Connection: close`, then the server's close.
//! - `resume`: a priming phase makes sessions (counted apart), then every connection offers one:
//!   TLS 1.2 session IDs (no tickets offered), or TLS 1.3 PSKs from a pool of the server's tickets
//!   (each used once, newest first). A connection the server did not resume counts as full.
//!   With `--prime-at ADDR` the priming goes to ADDR and the measured connections resume at
//!   `--connect` (same server name): resumption across servers sharing a session store. The
//!   pool is then frozen after priming, so every measured connection offers a session made at
//!   ADDR (never one the measured server handed out); the report says where priming went and
//!   how many sessions were offered.
//! - `keepalive`: `--concurrency` connections, each a full handshake, then requests on them.
//!
//! Schedules:
//! - open loop (`--rate R`): connection (or keep-alive request) `i` has the intended start
//!   `t0 + i/R`, whether or not earlier ones have finished; latency is measured from the intended
//!   start, so a stalled server is charged for the connections it delayed (the coordinated
//!   omission correction of wrk2). The uncorrected service times are recorded too.
//! - closed loop (no `--rate`): `--concurrency` connections back to back for `--duration`.
//!
//! Histograms (microseconds, HdrHistogram, 3 significant digits): `tcp_connect` (connect() to
//! established), `tls_handshake` (established to handshake complete), `handshake` (intended start
//! to handshake complete: what a client waited), `request` (request intended to response
//! complete), `request_service` (request sent to response complete), `start_lag` (intended to
//! actual start: how far the generator itself fell behind).
//!
//! What it is not: a browser. One request per connection (or many on keep-alive connections);
//! the body is read and checked for a 200 status, not interpreted.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls12Resumption, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, NamedGroup};
use serde_json::{Value, json};

use crate::probe::{machine_cpu_seconds, process_cpu_seconds};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Full handshakes only (the client never offers a session).
    Full,
    /// Resumed handshakes (after a priming phase counted apart).
    Resume,
    /// Persistent connections carrying many requests.
    Keepalive,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    Tls12,
    #[value(name = "1.3")]
    Tls13,
}

impl TlsVersion {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Server to load, e.g. 198.51.100.2:443.
    #[arg(long, default_value = "198.51.100.2:443")]
    pub connect: SocketAddr,
    /// SNI and the name the certificate must carry.
    #[arg(long, default_value = "a.test")]
    pub server_name: String,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, default_value = "run/certs/ca.pem")]
    pub ca: PathBuf,
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = TlsVersion::Tls13)]
    pub tls: TlsVersion,
    /// Open loop: connections/s (keepalive: requests/s) on a fixed schedule. Absent: closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed loop: connections at once. Keepalive: the number of connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Open loop: connections in flight at most; later ones wait (and are charged the wait).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Seconds of load (the schedule; in-flight connections then finish).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop after this many connections (keepalive: requests) have been started.
    #[arg(long)]
    pub count: Option<u64>,
    /// Resume: priming connections before the measured run (default: 1 for TLS 1.2, enough
    /// tickets for the concurrency for TLS 1.3).
    #[arg(long)]
    pub prime: Option<u64>,
    /// Resume: prime at this address instead of `--connect` (same `--server-name`), then resume
    /// those sessions at `--connect`: resumption across two servers sharing a session store.
    /// The measured phase offers only sessions made in priming (the pool is frozen), so TLS 1.3
    /// needs a ticket per measured connection (the default `--prime` is the measured count when
    /// `--count` or `--rate` fixes it); how many were offered is reported.
    #[arg(long)]
    pub prime_at: Option<SocketAddr>,
    /// Path of the HTTP request.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Event-loop threads (each its own share of the rate or the concurrency).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A connection not done after this long is abandoned and counted as a timeout.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Run the event loops inside this network namespace (/run/netns/NAME).
    #[arg(long)]
    pub netns: Option<String>,
    /// Write the report as JSON to this file (it is always printed).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the handshake latency percentiles to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    /// The defaults of the command line, against `connect` with the CA at `ca`.
    pub fn new(connect: SocketAddr, ca: PathBuf) -> Self {
        Self {
            connect,
            server_name: "a.test".into(),
            ca,
            mode: Mode::Full,
            tls: TlsVersion::Tls13,
            rate: None,
            concurrency: 32,
            max_in_flight: 4096,
            duration: 5.0,
            count: None,
            prime: None,
            prime_at: None,
            path: "/".into(),
            threads: 1,
            timeout_ms: 10_000,
            netns: None,
            json: None,
            plot: None,
            quiet: true,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "connect": self.connect.to_string(), "server_name": self.server_name,
            "mode": format!("{:?}", self.mode).to_lowercase(), "tls": self.tls.name(),
            "rate": self.rate, "concurrency": self.concurrency, "max_in_flight": self.max_in_flight,
            "duration_s": self.duration, "count": self.count, "prime": self.prime,
            "prime_at": self.prime_at.map(|a| a.to_string()), "path": self.path,
            "threads": self.threads, "timeout_ms": self.timeout_ms, "netns": self.netns,
        })
    }
}

/// The open-loop schedule: item `i` is meant to start `i / rate` seconds after `t0`. Thread `k`
/// of `n` takes items `k, k + n, k + 2n, ...`, so the threads together keep the whole rate.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub t0: Instant,
    pub rate: f64,
    pub thread: u64,
    pub threads: u64,
}

impl Schedule {
    /// Intended start of this thread's `j`-th item.
    pub fn intended(&self, j: u64) -> Instant {
        let i = j * self.threads + self.thread;
        self.t0 + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many of this thread's items fall in `[t0, t0 + duration)`.
    pub fn items_within(&self, duration: Duration) -> u64 {
        let total = (duration.as_secs_f64() * self.rate).ceil() as u64;
        // Items k, k+n, ... below total.
        if total > self.thread { (total - self.thread).div_ceil(self.threads) } else { 0 }
    }
}

/// Latency charged to one item: completion minus intended start (coordinated omission
/// corrected), and completion minus actual start (the service time); microseconds, at least 1.
pub fn latencies_us(intended: Instant, started: Instant, done: Instant) -> (u64, u64) {
    let us = |d: Duration| (d.as_micros() as u64).max(1);
    (us(done.saturating_duration_since(intended)), us(done.saturating_duration_since(started)))
}

/// A client session store that keeps every TLS 1.3 ticket the server sends (up to a bound,
/// newest used first) and the latest TLS 1.2 session: rustls's own in-memory store keeps 8
/// tickets per server, too few for many connections at once each using one.
#[derive(Debug, Default)]
pub struct TicketPool {
    inner: Mutex<PoolInner>,
    /// TLS 1.3 connections that found no ticket to offer (so they could only be full).
    empty: AtomicU64,
    /// TLS 1.3 tickets taken (offered), and TLS 1.2 sessions handed out to offer.
    taken13: AtomicU64,
    taken12: AtomicU64,
    /// Frozen: nothing new is stored and nothing removed, so connections offer only sessions
    /// made before (priming at `--prime-at`), never ones the measured server handed out.
    frozen: AtomicBool,
}

#[derive(Debug, Default)]
struct PoolInner {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

const POOL_MAX: usize = 20_000;

impl TicketPool {
    pub fn tickets(&self) -> usize {
        self.inner.lock().map(|g| g.tls13.len()).unwrap_or(0)
    }

    /// How many times a TLS 1.3 connection found the pool empty.
    pub fn empty_takes(&self) -> u64 {
        self.empty.load(Relaxed)
    }

    /// Sessions handed to connections to offer: TLS 1.3 tickets taken, TLS 1.2 sessions read.
    pub fn offered(&self, tls: TlsVersion) -> u64 {
        match tls {
            TlsVersion::Tls13 => self.taken13.load(Relaxed),
            TlsVersion::Tls12 => self.taken12.load(Relaxed),
        }
    }

    /// From now on keeps what it has: no new session stored, none removed (tickets are still
    /// taken, each used once).
    pub fn freeze(&self) {
        self.frozen.store(true, Relaxed);
    }

    fn is_frozen(&self) -> bool {
        self.frozen.load(Relaxed)
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        if let Ok(mut g) = self.inner.lock() {
            g.kx_hint = Some(group);
        }
    }
    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.lock().ok()?.kx_hint
    }
    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        if self.is_frozen() {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            g.tls12 = Some(value);
        }
    }
    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let session = self.inner.lock().ok()?.tls12.clone();
        if session.is_some() {
            self.taken12.fetch_add(1, Relaxed);
        }
        session
    }
    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        if self.is_frozen() {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            g.tls12 = None;
        }
    }
    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        if self.is_frozen() {
            return;
        }
        if let Ok(mut g) = self.inner.lock() {
            if g.tls13.len() >= POOL_MAX {
                g.tls13.pop_front();
            }
            g.tls13.push_back(value);
        }
    }
    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        let ticket = self.inner.lock().ok()?.tls13.pop_back();
        match ticket {
            Some(_) => self.taken13.fetch_add(1, Relaxed),
            None => self.empty.fetch_add(1, Relaxed),
        };
        ticket
    }
}

/// The pinned client configuration: X25519 only; one AES-128-GCM suite per version; the CA in
/// `ca` as the only root; ALPN http/1.1; resumption as `mode` wants it.
pub fn client_config(args: &LoadArgs, store: Option<Arc<TicketPool>>) -> Result<Arc<ClientConfig>> {
    use rustls::crypto::aws_lc_rs::{self as provider, cipher_suite as cs};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut prov = provider::default_provider();
    // TLS 1.2: RFC 8422 §5.1 has the client's supported_groups also name the curves it accepts
    // for the server's ECDSA certificate, so P-256 must be listed for a P-256 certificate
    // (OpenSSL refuses with "no shared cipher" otherwise). X25519 stays first, the servers in
    // the comparison allow only X25519 for the key exchange, and the negotiated group is recorded.
    prov.kx_groups = match args.tls {
        TlsVersion::Tls13 => vec![provider::kx_group::X25519],
        TlsVersion::Tls12 => vec![provider::kx_group::X25519, provider::kx_group::SECP256R1],
    };
    prov.cipher_suites = match args.tls {
        TlsVersion::Tls13 => vec![cs::TLS13_AES_128_GCM_SHA256],
        TlsVersion::Tls12 => {
            vec![cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).with_context(|| format!("reading {}", args.ca.display()))? {
        roots.add(cert.context("a certificate in the CA file")?)?;
    }
    let version: &'static rustls::SupportedProtocolVersion = match args.tls {
        TlsVersion::Tls12 => &rustls::version::TLS12,
        TlsVersion::Tls13 => &rustls::version::TLS13,
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(prov))
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = match store {
        Some(store) => Resumption::store(store).tls12_resumption(Tls12Resumption::SessionIdOnly),
        None => Resumption::disabled(),
    };
    Ok(Arc::new(config))
}

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    Connect,
    Tls,
    Io,
    /// Closed before the response was complete.
    Eof,
    /// A response that was not `200`, or could not be parsed.
    Http,
    Timeout,
}

const FAILURES: [Failure; 6] =
    [Failure::Connect, Failure::Tls, Failure::Io, Failure::Eof, Failure::Http, Failure::Timeout];

fn failure_name(f: Failure) -> &'static str {
    match f {
        Failure::Connect => "connect",
        Failure::Tls => "tls",
        Failure::Io => "io",
        Failure::Eof => "eof",
        Failure::Http => "http",
        Failure::Timeout => "timeout",
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds")
}

/// What one phase (priming or measured) of one or all threads saw.
#[derive(Debug, Clone)]
pub struct Tally {
    pub started: u64,
    /// Connections that got their response(s) and were closed cleanly.
    pub completed: u64,
    pub failed: [u64; 6],
    pub handshakes_full: u64,
    pub handshakes_resumed: u64,
    /// Full handshakes after a HelloRetryRequest (none expected: the key share is pinned).
    pub hello_retries: u64,
    pub requests: u64,
    pub tcp_connect: Histogram<u64>,
    pub tls_handshake: Histogram<u64>,
    pub handshake: Histogram<u64>,
    pub request: Histogram<u64>,
    pub request_service: Histogram<u64>,
    pub start_lag: Histogram<u64>,
    /// What was negotiated: (protocol, suite, group) of the first handshake, and how many differed.
    pub negotiated: Option<(String, String, String)>,
    pub negotiated_other: u64,
    /// The first failure's details (e.g. the TLS alert), for a person to read.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Resume: sessions this phase's connections offered (TLS 1.3: tickets taken, each used
    /// once; TLS 1.2: times the stored session ID was handed out to offer).
    pub sessions_offered: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            started: 0,
            completed: 0,
            failed: [0; 6],
            handshakes_full: 0,
            handshakes_resumed: 0,
            hello_retries: 0,
            requests: 0,
            tcp_connect: hist(),
            tls_handshake: hist(),
            handshake: hist(),
            request: hist(),
            request_service: hist(),
            start_lag: hist(),
            negotiated: None,
            negotiated_other: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            sessions_offered: 0,
        }
    }
}

impl Tally {
    fn merge(&mut self, o: &Tally) {
        self.started += o.started;
        self.completed += o.completed;
        for (a, b) in self.failed.iter_mut().zip(o.failed) {
            *a += b;
        }
        self.handshakes_full += o.handshakes_full;
        self.handshakes_resumed += o.handshakes_resumed;
        self.hello_retries += o.hello_retries;
        self.requests += o.requests;
        self.sessions_offered += o.sessions_offered;
        for (a, b) in [
            (&mut self.tcp_connect, &o.tcp_connect),
            (&mut self.tls_handshake, &o.tls_handshake),
            (&mut self.handshake, &o.handshake),
            (&mut self.request, &o.request),
            (&mut self.request_service, &o.request_service),
            (&mut self.start_lag, &o.start_lag),
        ] {
            let _ = a.add(b);
        }
        match (&self.negotiated, &o.negotiated) {
            (None, n) => self.negotiated = n.clone(),
            (Some(a), Some(b)) if !same_parameters(a, b) => {
                self.negotiated_other += o.handshakes_full + o.handshakes_resumed
            }
            _ => {}
        }
        self.negotiated_other += o.negotiated_other;
        if self.first_error.is_none() {
            self.first_error = o.first_error.clone();
        }
        self.elapsed = self.elapsed.max(o.elapsed);
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    pub fn handshakes(&self) -> u64 {
        self.handshakes_full + self.handshakes_resumed
    }

    fn to_json(&self) -> Value {
        let failed: serde_json::Map<String, Value> =
            FAILURES.iter().zip(self.failed).map(|(f, n)| (failure_name(*f).to_owned(), json!(n))).collect();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        json!({
            "started": self.started, "completed": self.completed, "failed": failed,
            "handshakes_full": self.handshakes_full, "handshakes_resumed": self.handshakes_resumed,
            "hello_retries": self.hello_retries, "requests": self.requests,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "handshakes_per_s": self.handshakes() as f64 / secs,
            "requests_per_s": self.requests as f64 / secs,
            "negotiated": self.negotiated.as_ref().map(|(p, s, g)| json!({"protocol": p, "suite": s, "group": g})),
            "negotiated_other": self.negotiated_other,
            "first_error": self.first_error,
            "latency_us": {
                "tcp_connect": hist_json(&self.tcp_connect),
                "tls_handshake": hist_json(&self.tls_handshake),
                "handshake": hist_json(&self.handshake),
                "request": hist_json(&self.request),
                "request_service": hist_json(&self.request_service),
                "start_lag": hist_json(&self.start_lag),
            },
        })
    }
}

/// Same protocol and suite, and the same group unless one of them had no key exchange (a
/// TLS 1.2 resumption).
fn same_parameters(a: &(String, String, String), b: &(String, String, String)) -> bool {
    a.0 == b.0 && a.1 == b.1 && (a.2 == b.2 || a.2.is_empty() || b.2.is_empty())
}

/// count, mean, p50, p90, p99, p99.9, max of a histogram (microseconds).
pub fn hist_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(), "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9), "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999), "max": h.max(),
    })
}

/// (percentile, microseconds) points for a percentile plot: 0 to 99.999 evenly on the
/// `1/(1-p)` axis, as HdrHistogram plots are drawn.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=50)
        .map(|k| {
            let q = 1.0 - 10f64.powf(-(k as f64) / 10.0);
            (q * 100.0, h.value_at_quantile(q))
        })
        .collect()
}

/// The whole run: configuration, priming, measured phase, CPU.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub args: LoadArgs,
    pub priming: Tally,
    pub measured: Tally,
    /// Whole-machine CPU time (all cores, seconds) during the measured phase, from /proc/stat.
    pub machine_cpu_s: f64,
    /// This process's CPU time (user + system, seconds) during the measured phase.
    pub generator_cpu_s: f64,
    /// Resume TLS 1.3: measured connections that had no ticket to offer (the server had sent
    /// fewer than were used); their full handshakes are the client's doing, not the server's.
    pub no_ticket_offered: u64,
    /// A `full` run in which the server resumed something: not a full-handshake result.
    pub flagged: Vec<String>,
}

impl LoadReport {
    /// Handshakes of both phases: what the server should have counted.
    pub fn handshakes_full(&self) -> u64 {
        self.priming.handshakes_full + self.measured.handshakes_full
    }
    pub fn handshakes_resumed(&self) -> u64 {
        self.priming.handshakes_resumed + self.measured.handshakes_resumed
    }

    /// Resume: where priming went (`--prime-at`, else `--connect`); `None` in other modes.
    pub fn prime_at(&self) -> Option<SocketAddr> {
        (self.args.mode == Mode::Resume).then(|| self.args.prime_at.unwrap_or(self.args.connect))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "config": self.args.to_json(),
            "pinned": {
                "group": "X25519 (TLS 1.2 also lists secp256r1 for the ECDSA certificate's curve, RFC 8422 §5.1)",
                "suites": match self.args.tls {
                    TlsVersion::Tls13 => vec!["TLS13_AES_128_GCM_SHA256"],
                    TlsVersion::Tls12 => vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
                },
                "version": self.args.tls.name(),
            },
            "priming": self.priming.to_json(),
            "measured": self.measured.to_json(),
            "machine_cpu_s": self.machine_cpu_s,
            "generator_cpu_s": self.generator_cpu_s,
            "no_ticket_offered": self.no_ticket_offered,
            "prime_at": self.prime_at().map(|a| a.to_string()),
            "sessions_offered": self.measured.sessions_offered,
            "flagged": self.flagged,
            "handshake_percentiles_us": percentile_points(&self.measured.handshake),
        })
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let m = &self.measured;
        let h = |h: &Histogram<u64>| {
            format!(
                "p50 {} p99 {} p99.9 {} max {} µs",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            )
        };
        let secs = m.elapsed.as_secs_f64().max(1e-9);
        let (p, s, g) = m.negotiated.clone().unwrap_or_default();
        let mut out = format!(
            "{:?} {} {}: {} started, {} completed, {} failed {:?} in {:.2} s\n\
             handshakes: {} full, {} resumed ({:.0}/s); priming: {} full, {} resumed\n\
             negotiated {p} {s} {g} ({} differed); first error: {}\n\
             tcp_connect   {}\ntls_handshake {}\nhandshake     {} (from intended start)\n",
            self.args.mode,
            self.args.tls.name(),
            match self.args.rate {
                Some(r) => format!("open loop {r}/s"),
                None => format!("closed loop x{}", self.args.concurrency),
            },
            m.started,
            m.completed,
            m.failed_total(),
            m.failed,
            secs,
            m.handshakes_full,
            m.handshakes_resumed,
            m.handshakes() as f64 / secs,
            self.priming.handshakes_full,
            self.priming.handshakes_resumed,
            m.negotiated_other,
            m.first_error.as_deref().unwrap_or("none"),
            h(&m.tcp_connect),
            h(&m.tls_handshake),
            h(&m.handshake),
        );
        if m.requests > 0 {
            out += &format!(
                "request       {} ({} requests, {:.0}/s)\n",
                h(&m.request),
                m.requests,
                m.requests as f64 / secs
            );
        }
        out += &format!(
            "start lag     {}\nCPU: machine {:.2} s, generator {:.2} s",
            h(&m.start_lag),
            self.machine_cpu_s,
            self.generator_cpu_s
        );
        if let Some(at) = self.prime_at() {
            out += &format!(
                "\nprimed at {at}{}, resumed at {}; sessions offered: {}",
                if self.args.prime_at.is_some() { " (--prime-at)" } else { "" },
                self.args.connect,
                self.measured.sessions_offered
            );
        }
        for f in &self.flagged {
            out += &format!("\nFLAGGED: {f}");
        }
        out
    }
}

/// Shared progress counters for the progress bar.
#[derive(Default)]
struct Progress {
    handshakes: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    done: AtomicBool,
}

/// Runs the load: priming (resume mode), then the measured phase; both on `args.threads`
/// event-loop threads inside `args.netns` if given.
pub fn run(args: &LoadArgs) -> Result<LoadReport> {
    if args.threads == 0 || args.concurrency == 0 {
        bail!("--threads and --concurrency must be at least 1");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number");
    }
    if args.prime_at.is_some() && args.mode != Mode::Resume {
        bail!("--prime-at needs --mode resume");
    }
    let store = (args.mode == Mode::Resume).then(|| Arc::new(TicketPool::default()));
    let config = client_config(args, store.clone())?;
    let mut priming = Tally::default();
    if let Some(store) = &store {
        let want = args.prime.unwrap_or(match args.tls {
            TlsVersion::Tls12 => 1,
            // Each resumption uses one ticket and gets at least one: the pool must cover the
            // connections in flight at once.
            TlsVersion::Tls13 if args.prime_at.is_none() => match args.rate {
                Some(r) => (r / 10.0).clamp(64.0, args.max_in_flight as f64) as u64,
                None => 2 * args.concurrency as u64,
            },
            // Primed elsewhere, the pool is frozen: no ticket the measured server sends is
            // offered again, so every measured connection needs one from priming (each priming
            // connection gets at least one).
            TlsVersion::Tls13 => {
                let measured = match (args.rate, args.count) {
                    (Some(r), c) => {
                        let n = (args.duration.max(0.0) * r).ceil() as u64;
                        Some(c.map_or(n, |c| c.min(n)))
                    }
                    (None, c) => c,
                };
                measured.unwrap_or(2 * args.concurrency as u64).clamp(1, POOL_MAX as u64)
            }
        });
        let prime_args = LoadArgs {
            connect: args.prime_at.unwrap_or(args.connect),
            rate: None,
            count: Some(want),
            concurrency: args.concurrency.min(want.max(1) as usize).min(64),
            duration: 3600.0,
            threads: 1,
            ..args.clone()
        };
        priming = run_phase(&prime_args, &config, true)?;
        if priming.completed == 0 {
            bail!(
                "priming: no connection completed ({:?}; {})",
                priming.failed,
                priming.first_error.unwrap_or_default()
            );
        }
        if args.tls == TlsVersion::Tls13 && store.tickets() == 0 {
            bail!("priming: the server sent no TLS 1.3 ticket, nothing to resume");
        }
        if args.prime_at.is_some() {
            // Only sessions made at --prime-at are offered at --connect.
            store.freeze();
        }
    }
    let empty0 = store.as_ref().map_or(0, |s| s.empty_takes());
    let offered0 = store.as_ref().map_or(0, |s| s.offered(args.tls));
    let cpu0 = (machine_cpu_seconds(), process_cpu_seconds(std::process::id()).unwrap_or(0.0));
    let mut measured = run_phase(args, &config, false)?;
    // rustls asks for a TLS 1.3 ticket even when only TLS 1.2 is enabled: count 1.3 runs only.
    let no_ticket_offered = match args.tls {
        TlsVersion::Tls13 => store.as_ref().map_or(0, |s| s.empty_takes()) - empty0,
        TlsVersion::Tls12 => 0,
    };
    measured.sessions_offered = store.as_ref().map_or(0, |s| s.offered(args.tls) - offered0);
    let cpu1 = (machine_cpu_seconds(), process_cpu_seconds(std::process::id()).unwrap_or(0.0));
    let mut flagged = Vec::new();
    if args.mode != Mode::Resume && measured.handshakes_resumed > 0 {
        flagged.push(format!(
            "{} handshakes resumed in a {:?} run: not a full-handshake result",
            measured.handshakes_resumed, args.mode
        ));
    }
    if args.mode == Mode::Resume && measured.handshakes_full > 0 {
        let why = match args.tls {
            TlsVersion::Tls13 => format!(" ({no_ticket_offered} had no ticket to offer)"),
            TlsVersion::Tls12 => String::new(),
        };
        flagged.push(format!("{} of the resume run's handshakes were full{why}", measured.handshakes_full));
    }
    if measured.negotiated_other > 0 {
        flagged.push(format!("{} handshakes negotiated other parameters", measured.negotiated_other));
    }
    let report = LoadReport {
        args: args.clone(),
        priming,
        measured,
        machine_cpu_s: cpu1.0 - cpu0.0,
        generator_cpu_s: cpu1.1 - cpu0.1,
        no_ticket_offered,
        flagged,
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let label = format!("{:?} {}", args.mode, args.tls.name());
        crate::plot::write_svg(
            path,
            "handshake latency by percentile",
            &[(label, percentile_points(&report.measured.handshake))],
        )?;
    }
    Ok(report)
}

fn run_phase(args: &LoadArgs, config: &Arc<ClientConfig>, priming: bool) -> Result<Tally> {
    let progress = Arc::new(Progress::default());
    let t0 = Instant::now() + Duration::from_millis(20);
    let bar = (!args.quiet && !priming && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let (progress, duration) = (progress.clone(), args.duration);
        std::thread::spawn(move || progress_bar(&progress, t0, duration))
    });
    let mut threads = Vec::new();
    for k in 0..args.threads {
        let (args, config, progress) = (args.clone(), config.clone(), progress.clone());
        let ns = match &args.netns {
            Some(ns) => {
                let path = format!("/run/netns/{ns}");
                Some(std::fs::File::open(&path).with_context(|| format!("opening {path}"))?)
            }
            None => None,
        };
        threads.push(std::thread::spawn(move || -> Result<Tally> {
            if let Some(file) = ns {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            }
            EventLoop::new(&args, config, k, t0, progress)?.run()
        }));
    }
    let mut total = Tally::default();
    let mut error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(tally)) => total.merge(&tally),
            Ok(Err(e)) => error = Some(e),
            Err(_) => error = Some(anyhow::anyhow!("a load thread panicked")),
        }
    }
    progress.done.store(true, Relaxed);
    if let Some(bar) = bar {
        let _ = bar.join();
    }
    match error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

fn progress_bar(p: &Progress, t0: Instant, duration: f64) {
    let width = 30;
    while !p.done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let secs = Instant::now().saturating_duration_since(t0).as_secs_f64();
        let filled = ((secs / duration).min(1.0) * width as f64) as usize;
        let hs = p.handshakes.load(Relaxed);
        eprint!(
            "\r[{}{}] {secs:5.1}/{duration:.0} s  {hs} handshakes ({:.0}/s)  {} requests  {} failed ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            hs as f64 / secs.max(1e-3),
            p.requests.load(Relaxed),
            p.failed.load(Relaxed),
        );
    }
    eprintln!();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Handshaking,
    /// Handshake done: requests go out and responses come back.
    Open,
    /// The last response is in; waiting for the server's close.
    Closing,
}

struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    state: State,
    intended: Instant,
    started: Instant,
    connected: Instant,
    deadline: Instant,
    /// Intended start times of requests not yet sent.
    queued: VecDeque<Instant>,
    /// The request on the wire: (intended, sent).
    outstanding: Option<(Instant, Instant)>,
    /// Plaintext received and not yet consumed.
    inbox: Vec<u8>,
    /// Connection: close after the first response (full/resume modes).
    one_shot: bool,
}

const TIMER: Token = Token(usize::MAX - 1);

struct EventLoop {
    args: LoadArgs,
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    poll: Poll,
    timer: nix::sys::timerfd::TimerFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    schedule: Option<Schedule>,
    /// Items (connections, or keep-alive requests) this thread starts in all.
    budget: u64,
    issued: u64,
    end: Instant,
    tally: Tally,
    progress: Arc<Progress>,
    request: Vec<u8>,
    request_close: Vec<u8>,
    keepalive_ready: bool,
}

impl EventLoop {
    fn new(args: &LoadArgs, config: Arc<ClientConfig>, k: usize, t0: Instant, progress: Arc<Progress>) -> Result<Self> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let poll = Poll::new()?;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        poll.registry().register(&mut SourceFd(&timer.as_fd_raw()), TIMER, Interest::READABLE)?;
        let n = args.threads as u64;
        let duration = Duration::from_secs_f64(args.duration.max(0.0));
        let schedule = args.rate.map(|rate| Schedule { t0, rate, thread: k as u64, threads: n });
        let share = |total: u64| total / n + u64::from((k as u64) < total % n);
        let budget = match (&schedule, args.count) {
            (Some(s), count) => {
                let within = s.items_within(duration);
                count.map_or(within, |c| within.min(share(c)))
            }
            (None, Some(c)) => share(c),
            (None, None) => u64::MAX,
        };
        let host = &args.server_name;
        let request = format!("GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-bench\r\n\r\n", args.path);
        let request_close = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-bench\r\nConnection: close\r\n\r\n",
            args.path
        );
        Ok(Self {
            server_name: ServerName::try_from(args.server_name.clone()).context("--server-name")?,
            args: args.clone(),
            config,
            poll,
            timer,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            schedule,
            budget,
            issued: 0,
            end: t0 + duration,
            tally: Tally::default(),
            progress,
            request: request.into_bytes(),
            request_close: request_close.into_bytes(),
            keepalive_ready: false,
        })
    }

    fn per_thread_concurrency(&self, k: u64) -> usize {
        let (c, n) = (self.args.concurrency as u64, self.args.threads as u64);
        (c / n + u64::from(k < c % n)).max(1) as usize
    }

    fn run(mut self) -> Result<Tally> {
        let start = Instant::now();
        let thread = self.schedule.map_or(0, |s| s.thread);
        let keepalive = self.args.mode == Mode::Keepalive;
        let concurrency = self.per_thread_concurrency(thread);
        let mut events = Events::with_capacity(1024);
        if keepalive {
            // The connections first (full handshakes), then the requests' clock starts.
            let now = Instant::now();
            for _ in 0..concurrency {
                self.open(now, now)?;
            }
            while self.live > 0 && self.conns.iter().flatten().any(|c| c.state != State::Open) {
                self.poll.poll(&mut events, Some(Duration::from_millis(10)))?;
                self.dispatch(&events);
                self.reap_timeouts(Instant::now());
            }
            let shift = Instant::now().saturating_duration_since(start);
            if let Some(s) = &mut self.schedule {
                s.t0 += shift;
            }
            self.end += shift;
            self.keepalive_ready = true;
            if self.live == 0 {
                bail!("keepalive: no connection could be opened ({:?})", self.tally.failed);
            }
        }
        let measure_from = Instant::now();
        let grace = Duration::from_millis(self.args.timeout_ms);
        loop {
            let now = Instant::now();
            self.issue(now, concurrency)?;
            let schedule_done = self.issued >= self.budget || (self.schedule.is_none() && now >= self.end);
            if schedule_done && self.pending_work() == 0 {
                break;
            }
            if now > self.end + grace + Duration::from_secs(1) {
                self.reap_timeouts(Instant::now() + grace * 2);
                break;
            }
            // Sleep until the next intended start (timerfd: microsecond precision) or an event.
            let timeout = match (&self.schedule, schedule_done) {
                // At the in-flight cap, a finished connection (an event) makes room.
                (Some(_), false) if self.live >= self.args.max_in_flight && !keepalive => {
                    Some(Duration::from_millis(5))
                }
                (Some(s), false) => {
                    let next = s.intended(self.issued);
                    let wait = next.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        Some(Duration::ZERO)
                    } else {
                        self.arm_timer(wait)?;
                        Some(Duration::from_millis(100))
                    }
                }
                _ => Some(Duration::from_millis(if schedule_done { 20 } else { 5 })),
            };
            self.poll.poll(&mut events, timeout)?;
            self.dispatch(&events);
            self.reap_timeouts(Instant::now());
        }
        if keepalive {
            // Close the persistent connections: close_notify, then the socket.
            for slot in 0..self.conns.len() {
                if let Some(mut c) = self.conns[slot].take() {
                    c.tls.send_close_notify();
                    let _ = c.tls.write_tls(&mut c.sock);
                    if c.outstanding.is_none() && c.queued.is_empty() {
                        self.tally.completed += 1;
                    } else {
                        self.fail_counted(Failure::Timeout);
                    }
                    let _ = self.poll.registry().deregister(&mut c.sock);
                }
            }
        }
        self.tally.elapsed = Instant::now().saturating_duration_since(measure_from);
        Ok(self.tally)
    }

    fn pending_work(&self) -> usize {
        if self.args.mode == Mode::Keepalive {
            self.conns.iter().flatten().map(|c| c.queued.len() + usize::from(c.outstanding.is_some())).sum()
        } else {
            self.live
        }
    }

    fn arm_timer(&self, wait: Duration) -> Result<()> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        self.timer.set(Expiration::OneShot(TimeSpec::from_duration(wait)), TimerSetTimeFlags::empty())?;
        Ok(())
    }

    /// Starts what the schedule says is due (open loop), or tops up the concurrency.
    fn issue(&mut self, now: Instant, concurrency: usize) -> Result<()> {
        let keepalive = self.args.mode == Mode::Keepalive;
        match self.schedule {
            Some(s) => {
                while self.issued < self.budget {
                    let intended = s.intended(self.issued);
                    if intended > now {
                        break;
                    }
                    if keepalive {
                        self.enqueue_request(intended, now);
                    } else {
                        if self.live >= self.args.max_in_flight {
                            break;
                        }
                        self.open(intended, now)?;
                    }
                    self.issued += 1;
                }
            }
            None if keepalive => {
                // Closed loop: every idle connection gets its next request at once.
                if now < self.end {
                    for slot in 0..self.conns.len() {
                        if self.issued >= self.budget {
                            break;
                        }
                        let idle = self.conns[slot]
                            .as_ref()
                            .is_some_and(|c| c.state == State::Open && c.outstanding.is_none() && c.queued.is_empty());
                        if idle && let Some(c) = self.conns[slot].as_mut() {
                            c.queued.push_back(now);
                            self.issued += 1;
                            self.send_next(slot, now);
                        }
                    }
                }
            }
            None => {
                while self.live < concurrency && now < self.end && self.issued < self.budget {
                    self.open(now, now)?;
                    self.issued += 1;
                }
            }
        }
        Ok(())
    }

    /// Open loop keep-alive: request `issued` goes to connection `issued mod n`, queued behind
    /// whatever that connection still has outstanding.
    fn enqueue_request(&mut self, intended: Instant, now: Instant) {
        let slots: Vec<usize> = (0..self.conns.len()).filter(|&i| self.conns[i].is_some()).collect();
        if slots.is_empty() {
            return;
        }
        let slot = slots[(self.issued % slots.len() as u64) as usize];
        if let Some(c) = self.conns[slot].as_mut() {
            c.queued.push_back(intended);
        }
        self.send_next(slot, now);
    }

    fn open(&mut self, intended: Instant, now: Instant) -> Result<()> {
        self.tally.started += 1;
        let lag = now.saturating_duration_since(intended).as_micros() as u64;
        let _ = self.tally.start_lag.record(lag.max(1));
        let sock = match TcpStream::connect(self.args.connect) {
            Ok(s) => s,
            Err(_) => {
                self.fail_counted(Failure::Connect);
                return Ok(());
            }
        };
        let tls = ClientConnection::new(self.config.clone(), self.server_name.clone())?;
        let conn = Conn {
            sock,
            tls,
            state: State::Connecting,
            intended,
            started: now,
            connected: now,
            deadline: now + Duration::from_millis(self.args.timeout_ms),
            queued: VecDeque::new(),
            outstanding: None,
            inbox: Vec::new(),
            one_shot: self.args.mode != Mode::Keepalive,
        };
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.conns[slot] = Some(conn);
        self.live += 1;
        let c = self.conns[slot].as_mut().expect("just put");
        if self.poll.registry().register(&mut c.sock, Token(slot), Interest::READABLE | Interest::WRITABLE).is_err() {
            self.finish(slot, Err(Failure::Connect));
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            if ev.token() == TIMER {
                let _ = self.timer.wait();
                continue;
            }
            self.drive(ev.token().0);
        }
    }

    fn reap_timeouts(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(c) = &self.conns[slot] else { continue };
            let waiting = !(self.keepalive_ready && c.state == State::Open && c.outstanding.is_none());
            if waiting && now > c.deadline {
                self.finish(slot, Err(Failure::Timeout));
            }
        }
    }

    fn fail_counted(&mut self, f: Failure) {
        let i = FAILURES.iter().position(|x| *x == f).unwrap_or(0);
        self.tally.failed[i] += 1;
        self.progress.failed.fetch_add(1, Relaxed);
    }

    fn finish(&mut self, slot: usize, result: Result<(), Failure>) {
        let Some(mut c) = self.conns[slot].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.free.push(slot);
        self.live -= 1;
        match result {
            Ok(()) => self.tally.completed += 1,
            Err(f) => self.fail_counted(f),
        }
    }

    fn drive(&mut self, slot: usize) {
        let result = match self.conns.get_mut(slot).and_then(Option::as_mut) {
            Some(_) => self.step(slot),
            None => return,
        };
        match result {
            Ok(true) => self.finish(slot, Ok(())),
            Ok(false) => {}
            Err(f) => self.finish(slot, Err(f)),
        }
    }

    /// Moves connection `slot` as far as its socket allows; `Ok(true)` when it is done.
    fn step(&mut self, slot: usize) -> Result<bool, Failure> {
        let now = Instant::now();
        let keepalive_ready = self.keepalive_ready;
        let Some(c) = self.conns[slot].as_mut() else {
            return Ok(false);
        };
        if c.state == State::Connecting {
            if let Ok(Some(_)) | Err(_) = c.sock.take_error() {
                return Err(Failure::Connect);
            }
            match c.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(false),
                Err(_) => return Err(Failure::Connect),
            }
            c.connected = now;
            let (_, service) = latencies_us(c.started, c.started, now);
            let _ = self.tally.tcp_connect.record(service);
            c.state = State::Handshaking;
        }
        let mut eof = false;
        loop {
            let c = self.conns[slot].as_mut().ok_or(Failure::Io)?;
            // Out: everything rustls has, until the socket pushes back.
            while c.tls.wants_write() {
                match c.tls.write_tls(&mut c.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Err(Failure::Io),
                }
            }
            // In: one read, then let rustls process it.
            let mut progressed = false;
            if !eof {
                match c.tls.read_tls(&mut c.sock) {
                    Ok(0) => {
                        eof = true;
                        progressed = true;
                    }
                    Ok(_) => progressed = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => progressed = true,
                    Err(_) => return Err(Failure::Io),
                }
            }
            if progressed && let Err(e) = c.tls.process_new_packets() {
                // Send the alert rustls queued, best effort.
                let _ = c.tls.write_tls(&mut c.sock);
                if self.tally.first_error.is_none() {
                    self.tally.first_error = Some(format!("TLS: {e}"));
                }
                return Err(Failure::Tls);
            }
            if c.state == State::Handshaking && !c.tls.is_handshaking() {
                // A fresh clock: this step may have run long (several reads, a preemption).
                self.handshake_done(slot, Instant::now());
                progressed = true;
            }
            let c = self.conns[slot].as_mut().ok_or(Failure::Io)?;
            // Plaintext in.
            let mut closed_cleanly = false;
            if c.state != State::Handshaking {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match c.tls.reader().read(&mut buf) {
                        Ok(0) => {
                            closed_cleanly = true;
                            break;
                        }
                        Ok(n) => c.inbox.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                            eof = true;
                            break;
                        }
                        Err(_) => return Err(Failure::Tls),
                    }
                }
            }
            while self.conns[slot].as_ref().is_some_and(|c| c.outstanding.is_some()) {
                match self.take_response(slot)? {
                    true => progressed = true,
                    false => break,
                }
            }
            let c = self.conns[slot].as_mut().ok_or(Failure::Io)?;
            if c.state == State::Closing && (eof || closed_cleanly) {
                return Ok(true);
            }
            if eof || closed_cleanly {
                return Err(Failure::Eof);
            }
            if c.state == State::Open && keepalive_ready && c.outstanding.is_none() && !c.queued.is_empty() {
                self.send_next(slot, Instant::now());
                progressed = true;
            }
            if !progressed {
                return Ok(false);
            }
        }
    }

    fn handshake_done(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        c.state = State::Open;
        let (corrected, _) = latencies_us(c.intended, c.started, now);
        let (_, tls) = latencies_us(c.connected, c.connected, now);

        let _ = self.tally.handshake.record(corrected);
        let _ = self.tally.tls_handshake.record(tls);
        match c.tls.handshake_kind() {
            Some(HandshakeKind::Resumed) => self.tally.handshakes_resumed += 1,
            Some(HandshakeKind::FullWithHelloRetryRequest) => {
                self.tally.handshakes_full += 1;
                self.tally.hello_retries += 1;
            }
            _ => self.tally.handshakes_full += 1,
        }
        let negotiated = (
            c.tls.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
            c.tls.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
            c.tls.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name())).unwrap_or_default(),
        );
        match &mut self.tally.negotiated {
            None => self.tally.negotiated = Some(negotiated),
            Some(n) if !same_parameters(n, &negotiated) => self.tally.negotiated_other += 1,
            // A TLS 1.2 resumption has no key exchange: keep the group a full handshake showed.
            Some(n) if n.2.is_empty() => n.2 = negotiated.2,
            _ => {}
        }
        self.progress.handshakes.fetch_add(1, Relaxed);
        if c.one_shot {
            c.queued.push_back(now);
            self.send_next(slot, now);
        }
    }

    /// Sends the next queued request if none is outstanding.
    fn send_next(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if c.state != State::Open || c.outstanding.is_some() {
            return;
        }
        let Some(intended) = c.queued.pop_front() else {
            return;
        };
        let req = if c.one_shot { &self.request_close } else { &self.request };
        if c.tls.writer().write_all(req).is_err() {
            return;
        }
        c.outstanding = Some((intended, now));
        c.deadline = now + Duration::from_millis(self.args.timeout_ms);
        while c.tls.wants_write() {
            match c.tls.write_tls(&mut c.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: the writable edge will come; other errors show on the next read.
                Err(_) => break,
            }
        }
    }

    /// Consumes one complete response from the inbox; `Ok(false)` if it is not complete yet.
    fn take_response(&mut self, slot: usize) -> Result<bool, Failure> {
        let now = Instant::now();
        let Some(c) = self.conns[slot].as_mut() else {
            return Ok(false);
        };
        let Some(len) = response_len(&c.inbox)? else {
            return Ok(false);
        };
        if !c.inbox.starts_with(b"HTTP/1.1 200") {
            return Err(Failure::Http);
        }
        c.inbox.drain(..len);
        let (intended, sent) = c.outstanding.take().ok_or(Failure::Http)?;
        let (corrected, service) = latencies_us(intended, sent, now);
        let _ = self.tally.request.record(corrected);
        let _ = self.tally.request_service.record(service);
        self.tally.requests += 1;
        self.progress.requests.fetch_add(1, Relaxed);
        if c.one_shot {
            c.state = State::Closing;
        } else {
            c.deadline = now + Duration::from_millis(self.args.timeout_ms);
            // Closed loop: the next request goes out at once.
            if self.schedule.is_none() && now < self.end && self.issued < self.budget {
                c.queued.push_back(now);
                self.issued += 1;
            }
        }
        Ok(true)
    }
}

/// Length of the first complete HTTP/1.1 response in `buf` (head and Content-Length body),
/// `None` while incomplete; an unparseable head is an error.
pub fn response_len(buf: &[u8]) -> Result<Option<usize>, Failure> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 { Err(Failure::Http) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| Failure::Http)?;
    let mut length = None;
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse::<usize>().map_err(|_| Failure::Http)?);
        }
    }
    let total = end + 4 + length.ok_or(Failure::Http)?;
    Ok((buf.len() >= total).then_some(total))
}

trait RawFdExt {
    fn as_fd_raw(&self) -> std::os::fd::RawFd;
}

impl RawFdExt for nix::sys::timerfd::TimerFd {
    fn as_fd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

/// `sluice-bench load`: runs, prints the summary and the JSON.
pub fn main(args: &LoadArgs) -> Result<()> {
    let report = run(args)?;
    println!("{}", report.summary());
    if args.json.is_none() {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    }
    let _ = io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_items_by_the_rate_and_interleaves_threads() {
        let t0 = Instant::now();
        let one = Schedule { t0, rate: 1000.0, thread: 0, threads: 1 };
        assert_eq!(one.intended(0), t0);
        assert_eq!(one.intended(1), t0 + Duration::from_millis(1));
        assert_eq!(one.intended(2500), t0 + Duration::from_millis(2500));
        assert_eq!(one.items_within(Duration::from_secs(2)), 2000);
        // Two threads: thread 1 takes items 1, 3, 5, ...
        let t1 = Schedule { t0, rate: 1000.0, thread: 1, threads: 2 };
        assert_eq!(t1.intended(0), t0 + Duration::from_millis(1));
        assert_eq!(t1.intended(1), t0 + Duration::from_millis(3));
        let t0s = Schedule { thread: 0, ..t1 };
        // 5 items in 5 ms: thread 0 gets 0, 2, 4 and thread 1 gets 1, 3.
        assert_eq!(t0s.items_within(Duration::from_millis(5)), 3);
        assert_eq!(t1.items_within(Duration::from_millis(5)), 2);
    }

    #[test]
    fn latency_is_charged_from_the_intended_start() {
        // A server stall: the item was due at t0, the generator could only start it 40 ms later
        // (its earlier connections were stuck), and it finished 1 ms after starting.
        let t0 = Instant::now();
        let started = t0 + Duration::from_millis(40);
        let done = started + Duration::from_millis(1);
        let (corrected, service) = latencies_us(t0, started, done);
        assert_eq!(corrected, 41_000);
        assert_eq!(service, 1_000);
        // On time: both agree; a completion can never be charged less than 1 µs.
        assert_eq!(latencies_us(t0, t0, t0 + Duration::from_micros(250)), (250, 250));
        assert_eq!(latencies_us(t0, t0, t0), (1, 1));
    }

    #[test]
    fn a_stalled_open_loop_run_keeps_its_schedule() {
        // The schedule does not move when items run late: the 100 items due during a 100 ms
        // stall are all due at their own times, so each is charged its own wait.
        let t0 = Instant::now();
        let s = Schedule { t0, rate: 1000.0, thread: 0, threads: 1 };
        let resume = t0 + Duration::from_millis(100);
        let mut h = hist();
        for j in 0..100 {
            let (corrected, _) = latencies_us(s.intended(j), resume, resume + Duration::from_micros(500));
            h.record(corrected).unwrap();
        }
        // Item 0 waited 100.5 ms, item 99 1.5 ms: the median about 50 ms, not 0.5 ms.
        assert!(h.value_at_quantile(0.5) > 45_000 && h.value_at_quantile(0.5) < 55_000, "{}", h.value_at_quantile(0.5));
        assert!(h.max() >= 100_000);
    }

    #[test]
    fn responses_are_framed_by_content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(response_len(r), Ok(Some(r.len())));
        assert_eq!(response_len(&r[..r.len() - 1]), Ok(None));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"), Err(Failure::Http));
        assert_eq!(response_len(b"HTTP/1.1 200 OK\r\n\r\n"), Err(Failure::Http));
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb";
        assert_eq!(response_len(two), Ok(Some(two.len() / 2)));
    }

    #[test]
    fn percentile_points_rise_to_the_tail() {
        let mut h = hist();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let p = percentile_points(&h);
        assert_eq!(p.len(), 51);
        assert_eq!(p[0].0, 0.0);
        assert!((p[10].0 - 90.0).abs() < 1e-9 && (p[20].0 - 99.0).abs() < 1e-9);
        assert!(p.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(p[10].1 >= 8_990 && p[10].1 <= 9_010, "{:?}", p[10]);
    }

    /// An in-process TLS server on loopback (both versions; stateful resumption through
    /// `store`): answers each connection's request with a 200 and closes.
    fn serve(
        leaf: &sluice_tls::testcerts::Leaf,
        store: Arc<dyn rustls::server::StoresServerSessions + Send + Sync>,
    ) -> SocketAddr {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(leaf.chain.clone(), leaf.key_der.clone_key())
                .unwrap();
        config.session_storage = store;
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let (mut buf, mut got) = ([0u8; 4096], Vec::new());
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        addr
    }

    /// Primes at server A, resumes at server B: B shares A's session store (`shared`) or has
    /// its own.
    fn prime_at_other_server(tls: TlsVersion, shared: bool) -> LoadReport {
        use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
        use sluice_tls::testcerts::{Ca, KeyKind};
        let ca = Ca::new().unwrap();
        let leaf = ca.server(&["a.test"], KeyKind::EcdsaP256).unwrap();
        let dir = std::env::temp_dir().join(format!("sluice-load-prime-at-{}-{tls:?}-{shared}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let store_a: Arc<dyn StoresServerSessions + Send + Sync> = ServerSessionMemoryCache::new(1024);
        let store_b = if shared { store_a.clone() } else { ServerSessionMemoryCache::new(1024) };
        let (a, b) = (serve(&leaf, store_a), serve(&leaf, store_b));
        let mut args = LoadArgs::new(b, ca_path);
        args.mode = Mode::Resume;
        args.tls = tls;
        args.prime_at = Some(a);
        args.count = Some(12);
        args.concurrency = 3;
        let report = run(&args).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(report.prime_at(), Some(a));
        assert_eq!(report.to_json()["prime_at"], json!(a.to_string()));
        assert_eq!(report.to_json()["config"]["prime_at"], json!(a.to_string()));
        assert!(
            report.summary().contains(&format!("primed at {a} (--prime-at), resumed at {b}")),
            "{}",
            report.summary()
        );
        assert_eq!(report.measured.failed_total(), 0, "{}", report.summary());
        assert_eq!(report.measured.completed, 12, "{}", report.summary());
        assert!(report.priming.completed > 0 && report.priming.failed_total() == 0, "{}", report.summary());
        // Every measured connection offered a session made at A.
        assert_eq!(report.no_ticket_offered, 0, "{}", report.summary());
        assert!(report.measured.sessions_offered >= 12, "{}", report.summary());
        report
    }

    #[test]
    fn sessions_primed_at_one_server_resume_at_another_sharing_its_store() {
        for tls in [TlsVersion::Tls13, TlsVersion::Tls12] {
            let r = prime_at_other_server(tls, true);
            assert_eq!(
                (r.measured.handshakes_resumed, r.measured.handshakes_full),
                (12, 0),
                "{tls:?}\n{}",
                r.summary()
            );
            assert!(r.flagged.is_empty(), "{:?}", r.flagged);
        }
    }

    #[test]
    fn sessions_primed_at_one_server_are_full_at_a_server_with_its_own_store() {
        for tls in [TlsVersion::Tls13, TlsVersion::Tls12] {
            let r = prime_at_other_server(tls, false);
            // None resumed, not even with a session B handed out in the measured phase itself.
            assert_eq!(
                (r.measured.handshakes_resumed, r.measured.handshakes_full),
                (0, 12),
                "{tls:?}\n{}",
                r.summary()
            );
            assert!(r.flagged.iter().any(|f| f.contains("were full")), "{:?}", r.flagged);
        }
    }

    #[test]
    fn prime_at_needs_resume_mode() {
        let mut args = LoadArgs::new("127.0.0.1:1".parse().unwrap(), "/nonexistent".into());
        args.prime_at = Some("127.0.0.1:2".parse().unwrap());
        assert!(run(&args).is_err());
    }
}
