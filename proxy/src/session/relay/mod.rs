//! One proxied connection: the client's TCP connection on sluice's stack, optionally terminated
//! with TLS (rustls, through `sluice_tls::TlsSession`), relayed to a backend over a non-blocking
//! kernel TCP socket.
//!
//! With TLS the client side has two more bounded queues: ciphertext received from the client and
//! not yet taken by rustls, and ciphertext rustls produced and the TCP send buffer did not take
//! yet. rustls's own buffers are bounded by `TlsSession::new`'s limit, the client's handshake by
//! `relay.tls_max_handshake_bytes` ([`Relay::set_tls_max_handshake_in`]). A TLS error (garbage
//! instead of a ClientHello, a bad certificate, a handshake larger than that bound or than rustls
//! holds, ...) sends an alert (rustls's, or the session's own where rustls has none), closes the
//! client connection and resets the backend.
//!
//! Bytes move both ways through bounded queues with back-pressure: when the queue towards the
//! backend is full, sluice stops reading from the client connection, so its receive window
//! closes; when the queue towards the client is full, sluice stops reading the backend socket,
//! so the kernel's window towards the backend closes. Memory per relay is two queues (four with
//! TLS), each holding storage only for the bytes it queues ([`ByteQueue`]).
//!
//! Half-close passes through both ways (RFC 9293 3.6): the client's FIN becomes a `shutdown(Write)`
//! on the backend once every byte before it was written; the backend's EOF becomes sluice's FIN
//! once every byte before it was sent. A backend that refuses or resets makes sluice reset the
//! client; a client that resets makes sluice reset the backend (SO_LINGER 0).
//!
//! Readiness is edge-triggered (epoll, owned by the worker): `readable`/`writable` are set by
//! events and cleared when an operation would block, as mio does.
//!
//! The client side is a [`Client`]: a connection on sluice's TCP stack ([`OnStack`]) or, with
//! the kernel transport, a kernel socket. The backend side is a [`Backend`]: a non-blocking
//! kernel socket ([`connect_kernel`]) in sluice, an in-memory stream in tests and in the ceiling
//! benchmark. The relay itself knows neither: it is sans-IO, readiness and `now` come in as
//! arguments.
//!
//! Choosing a backend is the caller's (the worker's, with `crate::session::backend`): a relay may start
//! without one ([`Relay::new`]) and queue the client's bytes (and, with TLS, finish the
//! handshake) until the caller calls [`Relay::start_connect`]. A connect that fails (refused,
//! reset, timed out) before any byte reached the backend does not fail the client: the relay
//! goes back to wanting a backend ([`Relay::needs_backend`]), keeps the client's bytes queued, and
//! the caller connects it elsewhere or gives up ([`Relay::give_up`]). A preamble (the PROXY
//! header) goes first on every backend connection.
//!
//! The files (everything public is re-exported here): this one keeps the relay's state
//! ([`Relay`], [`RelayEnd`], [`Handshake`]), its construction, its backend's comings and goings
//! and how it ends;
//! - `ends`: the relay's two ends: the [`Client`] trait and [`OnStack`] (a connection on sluice's
//!   TCP stack), the [`Backend`] trait and its kernel socket ([`connect_kernel`]);
//! - `pump`: moving the bytes ([`Relay::pump`]): from the client (through rustls with TLS) to the
//!   backend, from the backend to the client, the half-closes, and the failures met on the way.

mod ends;
mod hello;
mod pump;
#[cfg(test)]
mod tests;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use std::sync::Arc;

use sluice_tcp::Instant;
use sluice_tls::rustls::ServerConfig;
use sluice_tls::{HandshakeInfo, TlsSession};

use super::byte_queue::ByteQueue;

pub use ends::{Backend, Client, OnStack, connect_kernel};
pub use hello::Lookup;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendState {
    /// No backend yet, or the last connect failed before any byte reached it.
    Unassigned,
    Connecting {
        deadline: Instant,
    },
    Connected,
}

/// How a relay ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions closed after every byte was delivered.
    Clean,
    /// The backend refused, reset or failed the connect; the client was reset.
    BackendFailed,
    /// The backend did not accept the connection in time; the client was reset.
    BackendTimeout,
    /// The client reset or timed out; the backend was reset.
    ClientGone,
    /// The TLS handshake or a record failed: an alert was sent, the backend reset.
    TlsFailed,
    /// The client did not finish the TLS handshake in time: closed, the backend reset.
    HandshakeTimeout,
    /// No byte moved either way for `relay.idle_timeout_ms`: both ends reset.
    IdleTimeout,
}

/// A finished TLS handshake, for the histograms and counters: its duration from the first
/// ClientHello byte, and what was agreed.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub duration: Duration,
    pub info: HandshakeInfo,
}

/// The TLS side of a relay.
#[derive(Debug)]
struct Tls {
    session: TlsSession<Instant>,
    /// Ciphertext from the client not yet taken by rustls.
    cipher_in: ByteQueue,
    /// Ciphertext for the client not yet taken by the TCP send buffer.
    cipher_out: ByteQueue,
    tcp_eof: bool,
    eof_fed: bool,
    close_notify_sent: bool,
    handshake_reported: bool,
    /// The handshake must be done by then.
    handshake_deadline: Instant,
    /// Whether rustls may read the ClientHello yet (a fleet's store lookup: see `hello`).
    gate: hello::Gate,
}

#[derive(Debug)]
pub struct Relay<B = TcpStream> {
    /// The backend stream (the one in the transport's readiness set); the failed one is kept
    /// until the next connect replaces it.
    backend: Option<B>,
    state: BackendState,
    connect_timeout: Duration,
    /// How the last connect failed, while `Unassigned` after a failure.
    last_failure: Option<RelayEnd>,
    /// Bytes sent before the relayed stream on every backend connection (a PROXY header).
    preamble: Vec<u8>,
    preamble_sent: usize,
    pub readable: bool,
    pub writable: bool,
    to_backend: ByteQueue,
    to_client: ByteQueue,
    client_eof: bool,
    backend_write_shut: bool,
    backend_eof: bool,
    client_closed: bool,
    tls: Option<Box<Tls>>,
    pub started: Instant,
    /// When a byte last moved (either way), and how long none may.
    last_activity: Instant,
    idle_timeout: Option<Duration>,
    /// Set once: how the relay ended (the worker removes it when the TCB is freed).
    pub end: Option<RelayEnd>,
    /// Backend connect latency and time to the backend's first byte (from the client's
    /// connection being established), each handed out once by `take_timings`.
    connect_time: Option<Duration>,
    first_byte_time: Option<Duration>,
    timings_taken: (bool, bool),
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    /// The client's address and the listener's, for the access log.
    pub peers: Option<(SocketAddr, SocketAddr)>,
}

impl<B: Backend> Relay<B> {
    /// A relay for a client connection, without a backend yet: see [`Self::start_connect`].
    pub fn new(
        now: Instant,
        connect_timeout: Duration,
        buffer: usize,
        tls: Option<(Arc<ServerConfig>, Duration)>,
    ) -> std::io::Result<Self> {
        let tls = match tls {
            None => None,
            Some((config, handshake_timeout)) => Some(Box::new(Tls {
                session: TlsSession::new(config, buffer).map_err(std::io::Error::other)?,
                cipher_in: ByteQueue::new(buffer),
                cipher_out: ByteQueue::new(buffer),
                tcp_eof: false,
                eof_fed: false,
                close_notify_sent: false,
                handshake_reported: false,
                handshake_deadline: now + handshake_timeout,
                gate: hello::Gate::Open,
            })),
        };
        Ok(Self {
            backend: None,
            state: BackendState::Unassigned,
            connect_timeout,
            last_failure: None,
            preamble: Vec::new(),
            preamble_sent: 0,
            readable: false,
            writable: false,
            to_backend: ByteQueue::new(buffer),
            to_client: ByteQueue::new(buffer),
            client_eof: false,
            backend_write_shut: false,
            backend_eof: false,
            client_closed: false,
            tls,
            started: now,
            last_activity: now,
            idle_timeout: None,
            end: None,
            connect_time: None,
            first_byte_time: None,
            timings_taken: (false, false),
            bytes_to_backend: 0,
            bytes_to_client: 0,
            peers: None,
        })
    }

    /// Relays to `backend`, a stream whose connect has started (replacing a failed one: take
    /// the old stream out of the readiness set first, put the new one in after). `preamble`
    /// goes first on it.
    pub fn start_connect(&mut self, backend: B, now: Instant, preamble: Vec<u8>) {
        self.backend = Some(backend);
        self.state = BackendState::Connecting { deadline: now + self.connect_timeout };
        (self.readable, self.writable) = (false, false);
        self.last_failure = None;
        self.preamble = preamble;
        self.preamble_sent = 0;
    }

    /// The backend socket's readiness from the transport: `(readable, writable)` (edge-triggered:
    /// a flag stays set until an operation would block).
    pub fn on_backend_ready(&mut self, (readable, writable): (bool, bool)) {
        self.readable |= readable;
        self.writable |= writable;
    }

    pub fn backend(&self) -> Option<&B> {
        self.backend.as_ref()
    }

    /// The relay waits for a backend: none was given yet, or the last connect failed before
    /// any byte reached it (see [`Self::last_failure`]).
    pub fn needs_backend(&self) -> bool {
        self.end.is_none() && self.state == BackendState::Unassigned
    }

    /// How the last connect failed, while [`Self::needs_backend`].
    pub fn last_failure(&self) -> Option<RelayEnd> {
        self.last_failure
    }

    /// The TLS handshake is still going on (false without TLS).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.session.is_handshaking())
    }

    /// The TLS session, for what the handshake agreed (SNI, ALPN, client certificate).
    pub fn tls_session(&self) -> Option<&TlsSession<Instant>> {
        self.tls.as_ref().map(|t| &t.session)
    }

    /// No backend will take this connection: reset the client (counted as the last failure).
    pub fn give_up(&mut self, client: &mut impl Client) {
        let why = self.last_failure.unwrap_or(RelayEnd::BackendFailed);
        self.fail(client, why);
    }

    /// Nothing reached the backend and nothing came from it: another backend may take over.
    fn untouched(&self) -> bool {
        self.bytes_to_backend == 0 && self.preamble_sent == 0 && self.first_byte_time.is_none() && !self.backend_eof
    }

    /// A connect failed: back to `Unassigned` (the client's bytes stay queued) when nothing was
    /// exchanged yet, else fail the relay.
    fn backend_failed(&mut self, client: &mut impl Client, why: RelayEnd) {
        if self.untouched() {
            self.reset_backend();
            self.state = BackendState::Unassigned;
            (self.readable, self.writable) = (false, false);
            self.last_failure = Some(why);
        } else {
            self.fail(client, why);
        }
    }

    /// The next deadline: the backend connect's while connecting, the TLS handshake's while
    /// handshaking, whichever is earlier.
    pub fn deadline(&self) -> Option<Instant> {
        if self.end.is_some() {
            return None;
        }
        let connect = match self.state {
            BackendState::Connecting { deadline } => Some(deadline),
            BackendState::Connected | BackendState::Unassigned => None,
        };
        let handshake = self.tls.as_ref().filter(|t| t.session.is_handshaking()).map(|t| t.handshake_deadline);
        let parked = self.tls.as_ref().and_then(|t| t.gate.deadline());
        connect.into_iter().chain(handshake).chain(parked).min()
    }

    /// Reads the ClientHello before rustls does, for an identifier to look up in a fleet's
    /// store (`tls13`: the server offers TLS 1.3); see [`Self::take_lookup`]. Nothing without TLS.
    pub fn gate_hello(&mut self, tls13: bool) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.gate = hello::Gate::Peeking { tls13 };
        }
    }

    /// The identifier the client's ClientHello asks to resume, once read, if it is worth a
    /// lookup: the handshake then waits for [`Self::park`] and [`Self::open_gate`] (or, not
    /// parked, for `open_gate` alone).
    pub fn take_lookup(&mut self) -> Option<Lookup> {
        let tls = self.tls.as_deref_mut()?;
        match std::mem::replace(&mut tls.gate, hello::Gate::Open) {
            hello::Gate::Found(lookup) => {
                tls.gate = hello::Gate::Parked { deadline: tls.handshake_deadline };
                Some(lookup)
            }
            other => {
                tls.gate = other;
                None
            }
        }
    }

    /// The lookup is under way: the handshake waits until [`Self::open_gate`] or `deadline`
    /// (then it goes on as if the store had missed).
    pub fn park(&mut self, deadline: Instant) {
        if let Some(tls) = self.tls.as_deref_mut()
            && matches!(tls.gate, hello::Gate::Parked { .. })
        {
            tls.gate = hello::Gate::Parked { deadline };
        }
    }

    /// rustls may read the ClientHello now (the lookup's answer is in memory, or there is none);
    /// pump the relay next.
    pub fn open_gate(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.gate = hello::Gate::Open;
        }
    }

    /// The handshake waits for a lookup.
    pub fn is_parked(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.gate.deadline().is_some())
    }

    /// Bounds the TLS ciphertext the client may send before its handshake completes (see
    /// `TlsSession::set_max_handshake_in`); nothing without TLS.
    pub fn set_tls_max_handshake_in(&mut self, limit: usize) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.session.set_max_handshake_in(limit);
        }
    }

    /// Ends the relay (both ends reset) once no byte has moved for `timeout` (None: never).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout;
    }

    /// Under memory pressure: every queue's storage cut to what it holds. Returns the bytes
    /// given back.
    pub fn shrink(&mut self) -> usize {
        let tls = self.tls.as_mut().map_or(0, |t| t.cipher_in.shrink() + t.cipher_out.shrink());
        self.to_backend.shrink() + self.to_client.shrink() + tls
    }

    /// Bytes of storage the relay's queues hold now (each only for the bytes in it).
    pub fn storage(&self) -> usize {
        let queues = [&self.to_backend, &self.to_client];
        let tls = self.tls.as_ref().map_or(0, |t| t.cipher_in.storage() + t.cipher_out.storage());
        queues.iter().map(|q| q.storage()).sum::<usize>() + tls
    }

    /// When the relay ends for idleness unless a byte moves first.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.end.is_none().then_some(self.last_activity + self.idle_timeout?)
    }

    /// Bytes held in the two queues (for the idle accounting).
    pub fn buffered(&self) -> usize {
        self.to_backend.len() + self.to_client.len()
    }

    /// The backend connect time and the time to the backend's first byte, each once, when known.
    pub fn take_timings(&mut self) -> (Option<Duration>, Option<Duration>) {
        let connect = self.connect_time.filter(|_| !self.timings_taken.0);
        let first = self.first_byte_time.filter(|_| !self.timings_taken.1);
        self.timings_taken.0 |= connect.is_some();
        self.timings_taken.1 |= first.is_some();
        (connect, first)
    }

    /// A TLS handshake that completed since the last call, once.
    pub fn take_handshake(&mut self) -> Option<Handshake> {
        let tls = self.tls.as_mut()?;
        if tls.handshake_reported {
            return None;
        }
        let (first, done) = (tls.session.first_byte_at()?, tls.session.handshake_done_at()?);
        let info = tls.session.handshake_info()?.clone();
        tls.handshake_reported = true;
        Some(Handshake { duration: done.saturating_duration_since(first), info })
    }

    /// What the TLS handshake agreed and how long it took, once it is done.
    pub fn tls_summary(&self) -> Option<(&HandshakeInfo, Duration)> {
        let s = &self.tls.as_ref()?.session;
        let took = s.handshake_done_at()?.saturating_duration_since(s.first_byte_at()?);
        Some((s.handshake_info()?, took))
    }

    /// Closing the backend stream sends a RST, not a FIN.
    fn reset_backend(&self) {
        if let Some(b) = &self.backend {
            b.reset_on_close();
        }
    }

    fn shutdown_backend(&self, how: Shutdown) {
        if let Some(b) = &self.backend {
            b.shutdown(how);
        }
    }

    /// The client reset or timed out: reset the backend too.
    pub fn client_gone(&mut self) {
        if self.end.is_none() {
            self.reset_backend();
            self.shutdown_backend(Shutdown::Both);
            self.end = Some(RelayEnd::ClientGone);
        }
    }

    fn fail(&mut self, client: &mut impl Client, why: RelayEnd) {
        if self.end.is_none() {
            client.abort();
            self.reset_backend();
            self.end = Some(why);
        }
    }

    /// Ends the relay with `why`: the client connection is closed (FIN, after what is queued),
    /// the backend reset.
    /// Idle too long: both ends reset, nothing held for either.
    fn reset_both(&mut self, client: &mut impl Client, why: RelayEnd) {
        if !self.client_closed {
            client.abort();
            self.client_closed = true;
        }
        self.reset_backend();
        self.shutdown_backend(Shutdown::Both);
        self.end = Some(why);
    }

    fn close_client_reset_backend(&mut self, client: &mut impl Client, why: RelayEnd) {
        if !self.client_closed {
            client.close();
            self.client_closed = true;
        }
        self.reset_backend();
        self.shutdown_backend(Shutdown::Both);
        self.end = Some(why);
    }
}
