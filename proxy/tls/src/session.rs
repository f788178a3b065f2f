//! `TlsSession`: one server-side TLS connection, driven from a TCP byte stream (sans-IO).
//!
//! What it is: a thin owner of a `rustls::ServerConnection` that the relay feeds with the
//! in-order bytes the TCP connection delivered ([`TlsSession::feed`]), drains of ciphertext to
//! send ([`TlsSession::write_ciphertext`]), and exchanges plaintext with
//! ([`TlsSession::read_plaintext`] / [`TlsSession::write_plaintext`]). `now` is an argument and
//! of the caller's time type `I` (sluice passes `sluice_tcp::Instant`); it only timestamps the
//! handshake: the first ClientHello byte and the completion (RFC 8446 §4 / RFC 5246 §7.3).
//!
//! Copies: ciphertext is copied once from the caller's slice into rustls's deframer and once from
//! rustls's output queue into the caller's transmit buffer; plaintext once each way. rustls
//! decrypts in place. Memory: rustls buffers at most `buffer_limit` bytes of unsent TLS records
//! (so a slow client cannot make it queue without bound) and 16 KiB of received plaintext; `feed`
//! then consumes less than it was given, and the caller keeps the rest in its TCP receive buffer.
//!
//! Handshake input is bounded ([`TlsSession::set_max_handshake_in`], default
//! [`DEFAULT_MAX_HANDSHAKE_IN`]): the ciphertext a client sends before its handshake completes
//! (the ClientHello, and its second flight, which with a client certificate can be large). rustls
//! has bounds of its own: a handshake message of at most 0xffff bytes, and a deframer that holds
//! at most 0xffff bytes of a message's records (framing included) while it joins them. Past any
//! of these the session fails with [`TlsError::HandshakeTooLarge`] and an alert is queued
//! (rustls queues none for its own two: it stops taking bytes, or fails silently), so a client
//! never waits on silence: a fatal `decode_error` alert in the clear while sluice has sent
//! nothing yet (RFC 8446 §6: no keys are in use then), else rustls's close_notify, which rustls
//! protects with the keys in use.
//!
//! Call order, each time the relay wakes for this connection:
//! 1. `feed(now, bytes)` with what TCP delivered in order (keep what was not consumed);
//!    `feed_eof(now)` once TCP delivered a FIN;
//! 2. `read_plaintext` until it returns 0, and hand that to the backend;
//! 3. `write_plaintext` with backend bytes while it accepts them;
//! 4. `write_ciphertext` into the TCP send buffer while it returns > 0 (also after an error:
//!    that flushes the alert).
//!
//! What it is not: a socket wrapper, a timer (handshake timeouts belong to the relay), or a
//! policy on errors: after a fatal error the alert rustls queued is still available through
//! `write_ciphertext`, and the caller decides to flush it and close.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{CipherSuite, HandshakeKind, NamedGroup, ProtocolVersion, ServerConfig, ServerConnection};

/// What the handshake agreed on. Available once [`TlsSession::is_handshaking`] is false.
#[derive(Clone, Debug, PartialEq)]
pub struct HandshakeInfo {
    pub version: ProtocolVersion,
    pub cipher_suite: CipherSuite,
    /// The SNI name the client sent (RFC 6066 §3), if any.
    pub sni: Option<String>,
    /// The ALPN protocol agreed (RFC 7301), if any.
    pub alpn: Option<Vec<u8>>,
    /// A resumed handshake (session ID, stateful or stateless ticket).
    pub resumed: bool,
    /// Full, resumed, or full after a HelloRetryRequest.
    pub kind: HandshakeKind,
    /// The key-exchange group; `None` for a TLS 1.2 resumption (no key exchange).
    pub kx_group: Option<NamedGroup>,
    /// The client presented a certificate (mTLS).
    pub client_cert: bool,
}

/// Why [`TlsSession::new`] or [`TlsSession::feed`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer broke the protocol or the handshake failed (rustls's reason). An alert is
    /// queued: flush [`TlsSession::write_ciphertext`] then close.
    #[error("tls: {0}")]
    Protocol(#[from] rustls::Error),
    /// The client's handshake was larger than this session takes: more than `limit` bytes of
    /// ciphertext before it completed, or a handshake message larger than rustls holds. An
    /// alert is queued.
    #[error("tls: handshake larger than {limit} bytes")]
    HandshakeTooLarge { limit: usize },
}

/// Default bound on rustls's unsent TLS records (and pre-handshake plaintext).
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// Default bound on the ciphertext a client sends before its handshake completes: room for the
/// largest ClientHello rustls takes (a 0xffff-byte message in records) and a second flight as
/// large (client certificates).
pub const DEFAULT_MAX_HANDSHAKE_IN: usize = 128 * 1024;

/// The most bytes rustls's deframer holds while it joins one handshake message's records
/// (rustls 0.23 `MAX_HANDSHAKE_SIZE`, framing included): a larger message it neither takes nor
/// refuses.
pub const RUSTLS_MAX_HANDSHAKE_BUFFER: usize = 0xffff;

/// AlertDescription decode_error (RFC 8446 §6.2).
const ALERT_DECODE_ERROR: u8 = 50;
/// One server TLS connection. See the module doc for the call order.
pub struct TlsSession<I: Copy> {
    conn: ServerConnection,
    first_byte_at: Option<I>,
    handshake_done_at: Option<I>,
    info: Option<HandshakeInfo>,
    peer_closed: bool,
    failed: bool,
    /// Ciphertext consumed while handshaking, and its bound.
    handshake_in: usize,
    max_handshake_in: usize,
    /// The session failed with [`TlsError::HandshakeTooLarge`].
    too_large: bool,
    /// Ciphertext has gone to the client (an alert in the clear no longer fits then).
    sent_any: bool,
    /// An alert of sluice's own (rustls queued none), sent before anything rustls queues.
    own_alert: Vec<u8>,
}

impl<I: Copy> std::fmt::Debug for TlsSession<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("info", &self.info)
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<I: Copy> TlsSession<I> {
    /// A new server connection on `config`, with rustls's send buffer bounded by `buffer_limit`
    /// bytes ([`DEFAULT_BUFFER_LIMIT`] is a fair choice).
    pub fn new(config: Arc<ServerConfig>, buffer_limit: usize) -> Result<Self, TlsError> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(buffer_limit.max(1)));
        Ok(Self {
            conn,
            first_byte_at: None,
            handshake_done_at: None,
            info: None,
            peer_closed: false,
            failed: false,
            handshake_in: 0,
            max_handshake_in: DEFAULT_MAX_HANDSHAKE_IN,
            too_large: false,
            sent_any: false,
            own_alert: Vec::new(),
        })
    }

    /// Bounds the ciphertext the client may send before its handshake completes (at least 1);
    /// past it [`Self::feed`] fails with [`TlsError::HandshakeTooLarge`] and queues an alert.
    pub fn set_max_handshake_in(&mut self, limit: usize) {
        self.max_handshake_in = limit.max(1);
    }

    /// Hand rustls the next in-order bytes from the TCP stream and process them. Returns how many
    /// bytes were consumed: fewer than given when rustls's buffers are full (read plaintext first,
    /// then feed the rest again) or after the peer's close_notify (bytes after it are discarded:
    /// those in the same call may be counted as consumed, later calls consume nothing).
    ///
    /// On `Err` the connection is dead and an alert is queued (rustls's, RFC 8446 §6.2, or
    /// sluice's when rustls has none): drain [`Self::write_ciphertext`] and close.
    pub fn feed(&mut self, now: I, ciphertext: &[u8]) -> Result<usize, TlsError> {
        if self.failed {
            return Ok(0);
        }
        if !ciphertext.is_empty() && self.first_byte_at.is_none() {
            self.first_byte_at = Some(now);
        }
        let mut consumed = 0;
        while consumed < ciphertext.len() {
            let mut rest = &ciphertext[consumed..];
            let handshaking = self.conn.is_handshaking();
            if handshaking {
                let room = self.max_handshake_in.saturating_sub(self.handshake_in);
                if room == 0 {
                    // More is needed to finish the handshake than the client may send.
                    return Err(self.too_large(self.max_handshake_in));
                }
                rest = &rest[..rest.len().min(room)];
            }
            // Ok(0): close_notify seen. Err of kind InvalidData: rustls's deframer holds as much
            // of one handshake message as it ever will and the message is not whole yet: it would
            // wait for ever. Other errors: the received-plaintext buffer is full (read it first).
            let n = match self.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(self.too_large(RUSTLS_MAX_HANDSHAKE_BUFFER));
                }
                Err(_) => break,
            };
            if handshaking {
                self.handshake_in += n;
            }
            consumed += n;
            self.process(now)?;
        }
        if consumed == 0 && !self.failed {
            // Nothing new, but a previous partial feed may have left records to process.
            self.process(now)?;
        }
        Ok(consumed)
    }

    /// The TCP stream ended (FIN received). After this, [`Self::read_plaintext`] drains what is
    /// left; whether the close was clean is [`Self::peer_closed`].
    pub fn feed_eof(&mut self, now: I) -> Result<(), TlsError> {
        let _ = self.conn.read_tls(&mut io::empty());
        self.process(now)
    }

    fn process(&mut self, now: I) -> Result<(), TlsError> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                if state.peer_has_closed() {
                    self.peer_closed = true;
                }
                if self.info.is_none() && !self.conn.is_handshaking() {
                    self.handshake_done_at = Some(now);
                    self.info = Some(self.collect_info());
                }
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                if matches!(e, rustls::Error::InvalidMessage(rustls::InvalidMessage::HandshakePayloadTooLarge)) {
                    // A message over rustls's 0xffff bytes: rustls fails without an alert.
                    return Err(self.too_large(RUSTLS_MAX_HANDSHAKE_BUFFER));
                }
                if !self.conn.wants_write() {
                    self.queue_own_alert();
                }
                Err(e.into())
            }
        }
    }

    /// Fails the session for a handshake larger than `limit`, with an alert queued.
    fn too_large(&mut self, limit: usize) -> TlsError {
        self.failed = true;
        self.too_large = true;
        if !self.conn.wants_write() {
            self.queue_own_alert();
        }
        TlsError::HandshakeTooLarge { limit }
    }

    /// An alert when rustls queued none: a fatal decode_error in the clear (RFC 8446 §5.1: a
    /// TLSPlaintext record, legacy_record_version 0x0303) while nothing was sent yet, else
    /// rustls's close_notify, protected with the keys in use.
    fn queue_own_alert(&mut self) {
        if self.sent_any {
            self.conn.send_close_notify();
        } else if self.own_alert.is_empty() {
            self.own_alert = vec![21, 3, 3, 0, 2, 2, ALERT_DECODE_ERROR];
        }
    }

    fn collect_info(&self) -> HandshakeInfo {
        let kind = self.conn.handshake_kind().unwrap_or(HandshakeKind::Full);
        HandshakeInfo {
            version: self.conn.protocol_version().unwrap_or(ProtocolVersion::Unknown(0)),
            cipher_suite: self.conn.negotiated_cipher_suite().map_or(CipherSuite::Unknown(0), |s| s.suite()),
            sni: self.conn.server_name().map(str::to_owned),
            alpn: self.conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: kind == HandshakeKind::Resumed,
            kind,
            kx_group: self.conn.negotiated_key_exchange_group().map(|g| g.name()),
            client_cert: self.conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        }
    }

    /// Whether there is ciphertext to send (handshake messages, records, alerts).
    pub fn wants_write(&self) -> bool {
        !self.own_alert.is_empty() || self.conn.wants_write()
    }

    /// Moves sluice's own alert (if any) into `buf`; returns the bytes written.
    fn write_own_alert(&mut self, buf: &mut [u8]) -> usize {
        let n = self.own_alert.len().min(buf.len());
        buf[..n].copy_from_slice(&self.own_alert[..n]);
        self.own_alert.drain(..n);
        self.sent_any |= n > 0;
        n
    }

    /// Move queued ciphertext into `buf`; returns the bytes written (0 when nothing is queued).
    pub fn write_ciphertext(&mut self, buf: &mut [u8]) -> usize {
        let mut total = self.write_own_alert(buf);
        while total < buf.len() && self.conn.wants_write() {
            let mut out = &mut buf[total..];
            match self.conn.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        self.sent_any |= total > 0;
        total
    }

    /// Move queued ciphertext into `out` (for callers whose transmit buffer is a `Write`).
    pub fn pending_ciphertext(&mut self, out: &mut dyn Write) -> io::Result<usize> {
        let mut total = 0;
        if !self.own_alert.is_empty() {
            out.write_all(&self.own_alert)?;
            total = std::mem::take(&mut self.own_alert).len();
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(out)? {
                0 => break,
                n => total += n,
            }
        }
        self.sent_any |= total > 0;
        Ok(total)
    }

    /// Copy received plaintext into `buf`; 0 when none is available (see [`Self::peer_closed`]).
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        self.conn.reader().read(buf).unwrap_or(0)
    }

    /// Queue plaintext for encryption; returns how much was accepted, bounded by the buffer limit
    /// (0 when rustls's queue is full: wait until `write_ciphertext` has drained it). Before the
    /// handshake completes the bytes wait in rustls, within the same limit.
    pub fn write_plaintext(&mut self, data: &[u8]) -> usize {
        if self.failed {
            return 0;
        }
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Queue a close_notify alert (RFC 8446 §6.1); flush it with `write_ciphertext`.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer sent close_notify (a clean end of its half of the stream).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// A fatal error happened; only the queued alert remains to be sent.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The session failed with [`TlsError::HandshakeTooLarge`].
    pub fn handshake_too_large(&self) -> bool {
        self.too_large
    }

    /// Ciphertext the client sent while the handshake was going on.
    pub fn handshake_in(&self) -> usize {
        self.handshake_in
    }

    /// The first ClientHello byte arrived at `now`, before it is fed (the caller read the
    /// ClientHello first): the handshake's duration counts from then.
    pub fn note_first_byte(&mut self, now: I) {
        self.first_byte_at.get_or_insert(now);
    }

    /// `now` of the first ClientHello byte fed.
    pub fn first_byte_at(&self) -> Option<I> {
        self.first_byte_at
    }

    /// `now` of the `feed` that completed the handshake.
    pub fn handshake_done_at(&self) -> Option<I> {
        self.handshake_done_at
    }

    /// What the handshake agreed on, once it completed.
    pub fn handshake_info(&self) -> Option<&HandshakeInfo> {
        self.info.as_ref()
    }

    /// The rustls connection, for anything this wrapper does not expose.
    pub fn connection(&self) -> &ServerConnection {
        &self.conn
    }
}
