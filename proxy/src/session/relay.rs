//! One proxied connection: the client's TCP connection on sluice's stack, optionally terminated
//! with TLS (rustls, through `sluice_tls::TlsSession`), relayed to a backend over a non-blocking
//! kernel TCP socket.
//!
//! With TLS the client side has two more bounded queues: ciphertext received from the client and
//! not yet taken by rustls, and ciphertext rustls produced and the TCP send buffer did not take
//! yet. rustls's own buffers are bounded by `TlsSession::new`'s limit. A TLS error (garbage
//! instead of a ClientHello, a bad certificate, ...) sends rustls's alert, closes the client
//! connection and resets the backend.
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

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpStream};
use std::time::Duration;

use std::sync::Arc;

use sluice_tcp::{ConnectionHandle, Endpoint, Instant, StreamError};
use sluice_tls::rustls::ServerConfig;
use sluice_tls::{HandshakeInfo, TlsSession};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::byte_queue::ByteQueue;

/// The client's side of a relay: a byte stream that can be read, written, closed and reset.
pub trait Client {
    /// Reads what the client sent: `Ok(0)` when nothing is there now, `Err(Finished)` once the
    /// client finished sending and every byte was read; other errors when the stream is gone.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError>;
    /// Queues bytes for the client: how many were taken (0 when the send buffer is full); an
    /// error when the stream no longer takes data.
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError>;
    /// Closes the sending side after what was queued (FIN).
    fn close(&mut self);
    /// Resets the connection (RST).
    fn abort(&mut self);
}

/// The backend's side of a relay: a byte stream the transport opened (non-blocking: reads and
/// writes that would block say `WouldBlock`).
pub trait Backend: Read + Write {
    /// Called once the transport reported the connecting stream writable: `Ok` when it is
    /// connected, the connect's error when it failed.
    fn finish_connect(&self) -> std::io::Result<()>;
    /// Ends one or both directions (a FIN for `Write`).
    fn shutdown(&self, how: Shutdown);
    /// Closing the stream resets it (RST) instead of ending it.
    fn reset_on_close(&self);
}

/// A backend on a non-blocking kernel TCP socket.
impl Backend for TcpStream {
    fn finish_connect(&self) -> std::io::Result<()> {
        match self.take_error()? {
            Some(e) => Err(e),
            None => self.peer_addr().map(|_| ()),
        }
    }
    fn shutdown(&self, how: Shutdown) {
        let _ = TcpStream::shutdown(self, how);
    }
    fn reset_on_close(&self) {
        // SO_LINGER 0.
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

/// Starts a non-blocking connect of a kernel TCP socket to `backend` (TCP_NODELAY).
pub fn connect_kernel(backend: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(backend)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// A client connection on sluice's own TCP stack.
pub struct OnStack<'a> {
    pub tcp: &'a mut Endpoint,
    pub handle: ConnectionHandle,
}

impl Client for OnStack<'_> {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        self.tcp.recv(self.handle, buf)
    }
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.tcp.send(self.handle, data)
    }
    fn close(&mut self) {
        self.tcp.close(self.handle)
    }
    fn abort(&mut self) {
        self.tcp.abort(self.handle)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendState {
    /// No backend yet, or the last connect failed before any byte reached it.
    Unassigned,
    Connecting { deadline: Instant },
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
    pub peers: Option<(SocketAddrV4, SocketAddrV4)>,
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
        connect.into_iter().chain(handshake).min()
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

    /// Takes what the client sent into `to_backend` (through rustls with TLS). `Err` on a TLS
    /// failure. Returns whether anything moved.
    fn pull_from_client(&mut self, client: &mut impl Client, now: Instant) -> Result<bool, ()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            if self.client_eof {
                return Ok(false);
            }
            let space = self.to_backend.space_mut();
            if space.is_empty() {
                return Ok(false);
            }
            return Ok(match client.recv(space) {
                Ok(n) => {
                    self.to_backend.commit(n);
                    n > 0
                }
                Err(StreamError::Finished) => {
                    self.client_eof = true;
                    true
                }
                Err(_) => false,
            });
        };
        let mut progress = false;
        if !tls.tcp_eof {
            let space = tls.cipher_in.space_mut();
            if !space.is_empty() {
                match client.recv(space) {
                    Ok(n) => {
                        tls.cipher_in.commit(n);
                        progress |= n > 0;
                    }
                    Err(StreamError::Finished) => {
                        tls.tcp_eof = true;
                        progress = true;
                    }
                    Err(_) => {}
                }
            }
        }
        while !tls.cipher_in.is_empty() {
            let n = tls.session.feed(now, tls.cipher_in.data()).map_err(|_| ())?;
            tls.cipher_in.consume(n);
            progress |= n > 0;
            // Plaintext out first, so that rustls can take more.
            let space = self.to_backend.space_mut();
            let m = tls.session.read_plaintext(space);
            self.to_backend.commit(m);
            progress |= m > 0;
            if n == 0 && m == 0 {
                break;
            }
        }
        if tls.tcp_eof && tls.cipher_in.is_empty() && !tls.eof_fed {
            tls.session.feed_eof(now).map_err(|_| ())?;
            tls.eof_fed = true;
            progress = true;
        }
        let space = self.to_backend.space_mut();
        let had_space = !space.is_empty();
        let m = tls.session.read_plaintext(space);
        self.to_backend.commit(m);
        progress |= m > 0;
        // The stream to the backend ends only once rustls has no plaintext left: a 0 read into a
        // full queue says nothing (ending it then sent the backend a FIN before the last bytes).
        if !self.client_eof && m == 0 && had_space && (tls.session.peer_closed() || tls.eof_fed) {
            // close_notify, or the TCP stream ended: the plaintext stream to the backend ends.
            self.client_eof = true;
            progress = true;
        }
        progress |= Self::flush_ciphertext(tls, client)?;
        Ok(progress)
    }

    /// Sends `to_client` to the client (through rustls with TLS). `Err` when the client
    /// connection no longer takes data.
    fn push_to_client(&mut self, client: &mut impl Client) -> Result<bool, ()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            if self.to_client.is_empty() {
                return Ok(false);
            }
            let n = client.send(self.to_client.data()).map_err(|_| ())?;
            self.to_client.consume(n);
            self.bytes_to_client += n as u64;
            return Ok(n > 0);
        };
        let mut progress = false;
        if !self.to_client.is_empty() && !tls.close_notify_sent {
            let n = tls.session.write_plaintext(self.to_client.data());
            self.to_client.consume(n);
            self.bytes_to_client += n as u64;
            progress |= n > 0;
        }
        progress |= Self::flush_ciphertext(tls, client)?;
        Ok(progress)
    }

    /// rustls's records -> `cipher_out` -> the TCP send buffer.
    fn flush_ciphertext(tls: &mut Tls, client: &mut impl Client) -> Result<bool, ()> {
        let mut progress = false;
        loop {
            let n = tls.session.write_ciphertext(tls.cipher_out.space_mut());
            tls.cipher_out.commit(n);
            if tls.cipher_out.is_empty() {
                break;
            }
            let sent = client.send(tls.cipher_out.data()).map_err(|_| ())?;
            tls.cipher_out.consume(sent);
            progress |= sent > 0 || n > 0;
            if sent == 0 {
                break;
            }
        }
        Ok(progress)
    }

    /// A TLS failure: send rustls's alert (if any), close the client connection after it,
    /// reset the backend.
    fn tls_failed(&mut self, client: &mut impl Client) {
        if let Some(tls) = self.tls.as_deref_mut() {
            let _ = Self::flush_ciphertext(tls, client);
        }
        self.close_client_reset_backend(client, RelayEnd::TlsFailed);
    }

    /// Ends the relay with `why`: the client connection is closed (FIN, after what is queued),
    /// the backend reset.
    fn close_client_reset_backend(&mut self, client: &mut impl Client, why: RelayEnd) {
        if !self.client_closed {
            client.close();
            self.client_closed = true;
        }
        self.reset_backend();
        self.shutdown_backend(Shutdown::Both);
        self.end = Some(why);
    }

    /// A read or write on the backend socket failed.
    fn backend_io_failed(&mut self, client: &mut impl Client, e: &std::io::Error) {
        tracing::debug!(error = %e, "backend I/O failed");
        self.backend_failed(client, RelayEnd::BackendFailed);
    }

    /// Moves every byte that can move now, both ways. Call on any TCP event of the connection,
    /// any readiness event of the backend socket, and at the connect deadline.
    pub fn pump(&mut self, client: &mut impl Client, now: Instant) {
        if self.end.is_some() {
            return;
        }
        if let Some(tls) = self.tls.as_deref()
            && tls.session.is_handshaking()
            && now >= tls.handshake_deadline
        {
            // A client stalled mid-handshake: close it, free the backend.
            return self.close_client_reset_backend(client, RelayEnd::HandshakeTimeout);
        }
        if let BackendState::Connecting { deadline } = self.state {
            if !self.writable {
                if now >= deadline {
                    self.backend_failed(client, RelayEnd::BackendTimeout);
                }
                // Meanwhile the client's bytes queue up (bounded) below.
            } else {
                match self.backend.as_ref().map(B::finish_connect) {
                    Some(Ok(())) => {
                        self.state = BackendState::Connected;
                        self.connect_time = Some(now.saturating_duration_since(self.started));
                    }
                    _ => self.backend_failed(client, RelayEnd::BackendFailed),
                }
            }
            if self.end.is_some() {
                return;
            }
        }
        let connected = self.state == BackendState::Connected;
        if !connected || self.backend.is_none() {
            // No backend yet: take what the client sends (bounded) and finish the handshake.
            loop {
                match self.pull_from_client(client, now) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(()) => return self.tls_failed(client),
                }
            }
        }
        loop {
            let mut progress = false;
            // Client -> backend.
            match self.pull_from_client(client, now) {
                Ok(p) => progress |= p,
                Err(()) => return self.tls_failed(client),
            }
            if self.writable && self.preamble_sent < self.preamble.len() {
                match io(&mut self.backend).and_then(|b| b.write(&self.preamble[self.preamble_sent..])) {
                    Ok(n) => {
                        self.preamble_sent += n;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) => return self.backend_io_failed(client, &e),
                }
            }
            let preamble_done = self.preamble_sent == self.preamble.len();
            if self.writable && preamble_done && !self.to_backend.is_empty() {
                match io(&mut self.backend).and_then(|b| b.write(self.to_backend.data())) {
                    Ok(n) => {
                        self.to_backend.consume(n);
                        self.bytes_to_backend += n as u64;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.writable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                    Err(e) => return self.backend_io_failed(client, &e),
                }
            }
            if preamble_done && self.client_eof && self.to_backend.is_empty() && !self.backend_write_shut {
                self.shutdown_backend(Shutdown::Write);
                self.backend_write_shut = true;
            }
            // Backend -> client.
            if self.readable && !self.backend_eof {
                let space = self.to_client.space_mut();
                if !space.is_empty() {
                    match io(&mut self.backend).and_then(|b| b.read(space)) {
                        Ok(0) => {
                            self.backend_eof = true;
                            progress = true;
                        }
                        Ok(n) => {
                            self.to_client.commit(n);
                            if self.first_byte_time.is_none() {
                                self.first_byte_time = Some(now.saturating_duration_since(self.started));
                            }
                            progress = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                        Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                        Err(e) => return self.backend_io_failed(client, &e),
                    }
                }
            }
            match self.push_to_client(client) {
                Ok(p) => progress |= p,
                Err(()) => return self.fail(client, RelayEnd::ClientGone),
            }
            if self.backend_eof && self.to_client.is_empty() && !self.client_closed {
                match self.tls.as_deref_mut() {
                    None => {
                        client.close();
                        self.client_closed = true;
                    }
                    Some(tls) => {
                        if !tls.close_notify_sent {
                            tls.session.send_close_notify();
                            tls.close_notify_sent = true;
                            progress = true;
                        } else if tls.cipher_out.is_empty() && !tls.session.wants_write() {
                            client.close();
                            self.client_closed = true;
                        }
                    }
                }
            }
            if !progress {
                break;
            }
        }
        if self.client_closed && self.backend_write_shut {
            self.end = Some(RelayEnd::Clean);
        }
    }
}

/// The backend stream for an IO call, or `NotConnected`.
fn io<B>(backend: &mut Option<B>) -> std::io::Result<&mut B> {
    backend.as_mut().ok_or_else(|| std::io::Error::from(ErrorKind::NotConnected))
}

#[cfg(test)]
mod tests {
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
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { panic!() };
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
}
