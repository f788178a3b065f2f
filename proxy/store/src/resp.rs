//! A sans-IO Redis client for exactly what a session store needs: `AUTH`, `SET key value PX
//! ms`, `GET key`, `GETDEL key` (Redis >= 6.2), pipelined over one connection.
//!
//! What it is: a state machine the caller drives from its own event loop. The caller owns the
//! socket: it calls [`Client::on_connected`] when its non-blocking connect completes, writes
//! [`Client::pending_output`] and reports it with [`Client::advance_output`], feeds what it
//! read to [`Client::handle_input`], calls [`Client::handle_timeout`] at
//! [`Client::poll_timeout`], and takes each request's [`Completion`] (with the caller's
//! [`Token`]) from [`Client::poll_completion`]. `now` is always an argument. Replies are
//! matched to requests in order (Redis answers a connection's commands in order).
//!
//! Bounds: at most `max_in_flight` requests written and not answered, at most `max_queued`
//! waiting behind them; a request that finds both full is refused at once (a `SET` is
//! dropped and counted, a `GET` fails so the handshake goes on without it). A request not
//! answered within `timeout` completes [`RequestError::TimedOut`]; its reply, when it comes,
//! is read and thrown away. When the oldest unanswered request is older than `stall_reset`,
//! the connection is hopelessly behind: it is declared broken. A reply larger than
//! `max_reply_bytes`, a reply of a type the command cannot have, a reply nobody asked for, or
//! bytes that are not RESP2 break the connection too: every pending request fails
//! [`RequestError::Connection`], the client is disconnected, and the caller closes its socket
//! and reconnects after [`Backoff::next_delay`]. Nothing here panics on what the server sends.
//!
//! What it is not: a general Redis client. No RESP3, no arrays in replies (none of these
//! commands has one, so a reply starting with `*` is a protocol error before any parsing,
//! which also keeps a hostile server from nesting arrays), no cluster redirections, no TLS.
//! The RESP2 framing is the `redis-protocol` crate's.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

/// Longest first line of a bulk string reply (`$` and up to 20 digits and CRLF).
const MAX_LENGTH_LINE: usize = 24;
/// Longest status or error line accepted (Redis's error messages are far shorter).
const MAX_STATUS_LINE: usize = 4096;

/// The caller's name for a request, handed back with its [`Completion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// `AUTH [username] password`.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// Redis 6 ACL user; `None` sends `AUTH password` (the `default` user).
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("username", &self.username).field("password", &"***").finish()
    }
}

/// The client's limits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Sent on every new connection before anything else.
    pub auth: Option<Auth>,
    /// Requests written and not yet answered (late replies of timed-out requests included).
    pub max_in_flight: usize,
    /// Requests accepted but waiting for room in flight.
    pub max_queued: usize,
    /// A request not answered within this completes [`RequestError::TimedOut`].
    pub timeout: Duration,
    /// The oldest unanswered request older than this breaks the connection
    /// ([`ConnError::Stalled`]).
    pub stall_reset: Duration,
    /// Largest reply accepted (bytes of one RESP frame).
    pub max_reply_bytes: usize,
    /// Largest value a `SET` may carry.
    pub max_value_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            auth: None,
            max_in_flight: 256,
            max_queued: 256,
            timeout: Duration::from_millis(5),
            stall_reset: Duration::from_secs(1),
            max_reply_bytes: 64 * 1024,
            max_value_bytes: 32 * 1024,
        }
    }
}

/// A request's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `SET` answered `+OK`.
    Stored,
    /// `GET`/`GETDEL` found a value.
    Value(Vec<u8>),
    /// `GET`/`GETDEL` found nothing.
    Nil,
}

/// Why a request has no [`Reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Not answered within the timeout.
    TimedOut,
    /// The connection broke (or was closed) before the answer.
    Connection(ConnError),
    /// Redis answered with an error (`-ERR ...`), e.g. `GETDEL` on Redis older than 6.2.
    Server(String),
}

/// One request's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The caller's token.
    pub token: Token,
    /// The reply, or why there is none.
    pub result: Result<Reply, RequestError>,
}

/// Why a request was refused at once (nothing will complete for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused {
    /// No connection (connecting, or backing off after a failure).
    Down,
    /// In flight and queue are full.
    Full,
    /// The value is larger than `max_value_bytes`.
    TooLarge,
}

/// Why a connection is no good any more. After one, the client is disconnected: the caller
/// closes its socket and reconnects after a back-off.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The caller's socket closed or failed ([`Client::connection_lost`]).
    Closed,
    /// Bytes that are not RESP2.
    Protocol,
    /// A reply of a type the command cannot have (an array, a `SET` answered with a bulk
    /// string, ...), or a reply with no request.
    UnexpectedReply,
    /// A reply larger than `max_reply_bytes`.
    ReplyTooLarge,
    /// `AUTH` was refused; the server's message.
    AuthFailed(String),
    /// The oldest unanswered request waited longer than `stall_reset`.
    Stalled,
}

/// Counters, for the caller to export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `SET`s dropped because the queue was full.
    pub sets_dropped_full: u64,
    /// `SET`s dropped because there was no connection.
    pub sets_dropped_down: u64,
    /// `SET`s refused because the value was larger than `max_value_bytes`.
    pub sets_too_large: u64,
    /// `GET`/`GETDEL`s refused because the queue was full.
    pub gets_refused_full: u64,
    /// `GET`/`GETDEL`s refused because there was no connection.
    pub gets_refused_down: u64,
    /// Requests completed [`RequestError::TimedOut`].
    pub timed_out: u64,
    /// Replies that came after their request had timed out, thrown away.
    pub late_replies: u64,
    /// Connections that broke (any [`ConnError`] but `Closed`).
    pub connection_errors: u64,
    /// Requests failed by a broken or closed connection.
    pub failed_by_connection: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Auth,
    Set,
    Get,
    GetDel,
}

/// A request sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    kind: Kind,
    /// `None` once it completed as timed out (its reply is still to come).
    token: Option<Token>,
    submitted: Instant,
    sent: Instant,
}

/// A request waiting for room in flight.
#[derive(Debug)]
struct Waiting {
    kind: Kind,
    token: Token,
    submitted: Instant,
    key: Vec<u8>,
    value: Vec<u8>,
    px_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Disconnected,
    Connected,
}

/// The client of one Redis connection.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    state: State,
    in_flight: VecDeque<InFlight>,
    waiting: VecDeque<Waiting>,
    out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    completions: VecDeque<Completion>,
    authenticated: bool,
    stats: ClientStats,
}

impl Client {
    /// A disconnected client.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            state: State::Disconnected,
            in_flight: VecDeque::new(),
            waiting: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            completions: VecDeque::new(),
            authenticated: false,
            stats: ClientStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Whether a connection is up (requests are accepted).
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// Whether the server accepted `AUTH` on this connection (or none was needed and a reply
    /// came back): the connection works, reset the back-off.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Requests written (or to be written) and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Requests waiting for room in flight.
    pub fn queued(&self) -> usize {
        self.waiting.len()
    }

    /// The caller's socket is connected: start a fresh connection (sends `AUTH` first when
    /// configured). Anything pending from an earlier connection has already failed.
    pub fn on_connected(&mut self, now: Instant) {
        if self.state == State::Connected {
            self.fail_all(ConnError::Closed);
        }
        self.state = State::Connected;
        self.authenticated = false;
        self.out.clear();
        self.out_pos = 0;
        self.input.clear();
        if let Some(auth) = self.config.auth.clone() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &auth.username {
                args.push(u.as_bytes());
            }
            args.push(auth.password.as_bytes());
            encode_command(&mut self.out, &args);
            self.in_flight.push_back(InFlight { kind: Kind::Auth, token: None, submitted: now, sent: now });
        }
    }

    /// The caller's socket closed or failed: every pending request fails, the client is
    /// disconnected.
    pub fn connection_lost(&mut self) {
        self.fail_all(ConnError::Closed);
    }

    /// `SET key value PX px_ms` (an expiry of 0 is sent as 1 ms).
    pub fn set(&mut self, now: Instant, token: Token, key: &[u8], value: &[u8], px_ms: u64) -> Result<(), Refused> {
        if value.len() > self.config.max_value_bytes {
            self.stats.sets_too_large += 1;
            return Err(Refused::TooLarge);
        }
        self.submit(now, Kind::Set, token, key, value, px_ms.max(1))
    }

    /// `GET key`.
    pub fn get(&mut self, now: Instant, token: Token, key: &[u8]) -> Result<(), Refused> {
        self.submit(now, Kind::Get, token, key, &[], 0)
    }

    /// `GETDEL key` (Redis >= 6.2): a TLS 1.3 ticket is used once (RFC 8446 §8.1).
    pub fn getdel(&mut self, now: Instant, token: Token, key: &[u8]) -> Result<(), Refused> {
        self.submit(now, Kind::GetDel, token, key, &[], 0)
    }

    fn submit(
        &mut self,
        now: Instant,
        kind: Kind,
        token: Token,
        key: &[u8],
        value: &[u8],
        px_ms: u64,
    ) -> Result<(), Refused> {
        let refuse = |stats: &mut ClientStats, why: Refused| {
            match (kind, why) {
                (Kind::Set, Refused::Down) => stats.sets_dropped_down += 1,
                (Kind::Set, _) => stats.sets_dropped_full += 1,
                (_, Refused::Down) => stats.gets_refused_down += 1,
                _ => stats.gets_refused_full += 1,
            }
            Err(why)
        };
        if self.state != State::Connected {
            return refuse(&mut self.stats, Refused::Down);
        }
        if self.in_flight.len() < self.config.max_in_flight && self.waiting.is_empty() {
            self.send(now, kind, Some(token), now, key, value, px_ms);
            Ok(())
        } else if self.waiting.len() < self.config.max_queued {
            self.waiting.push_back(Waiting {
                kind,
                token,
                submitted: now,
                key: key.to_vec(),
                value: value.to_vec(),
                px_ms,
            });
            Ok(())
        } else {
            refuse(&mut self.stats, Refused::Full)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: Instant,
        kind: Kind,
        token: Option<Token>,
        submitted: Instant,
        key: &[u8],
        value: &[u8],
        px_ms: u64,
    ) {
        match kind {
            Kind::Set => {
                let px = px_ms.to_string();
                encode_command(&mut self.out, &[b"SET", key, value, b"PX", px.as_bytes()]);
            }
            Kind::Get => encode_command(&mut self.out, &[b"GET", key]),
            Kind::GetDel => encode_command(&mut self.out, &[b"GETDEL", key]),
            Kind::Auth => unreachable!("AUTH is sent by on_connected"),
        }
        self.in_flight.push_back(InFlight { kind, token, submitted, sent: now });
    }

    /// Bytes to write to the socket (empty: nothing to write).
    pub fn pending_output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`Client::pending_output`] were written.
    pub fn advance_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Bytes read from the socket. On `Err` the connection is broken: every pending request
    /// has failed, the client is disconnected, and the caller closes its socket.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ConnError> {
        if self.state != State::Connected {
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            let buf = &self.input[pos..];
            let Some(&first) = buf.first() else { break Ok(()) };
            // Only these four types can answer AUTH, SET, GET and GETDEL; refusing anything
            // else here also keeps nested arrays away from the recursive decoder.
            if !matches!(first, b'+' | b'-' | b':' | b'$') {
                break Err(if first == b'*' { ConnError::UnexpectedReply } else { ConnError::Protocol });
            }
            // The first line must end soon: a bulk string's length is a few digits, a status
            // or error line is short. Checked before decoding, so a server that trickles a
            // line byte by byte costs a bounded scan per read, not a rescan of a long line.
            let line_limit = if first == b'$' { MAX_LENGTH_LINE } else { MAX_STATUS_LINE };
            let head = &buf[..buf.len().min(line_limit)];
            if !head.windows(2).any(|w| w == b"\r\n") {
                if buf.len() >= line_limit {
                    break Err(ConnError::Protocol);
                }
                break Ok(());
            }
            match decode(buf) {
                // `redis-protocol` 6 takes the two bytes after a bulk string's data without
                // checking they are CRLF: every RESP2 frame ends with one, so check it here.
                Ok(Some((_, n))) if n < 2 || buf.get(n - 2..n) != Some(b"\r\n") => break Err(ConnError::Protocol),
                Ok(Some((_, n))) if n > self.config.max_reply_bytes => break Err(ConnError::ReplyTooLarge),
                Ok(Some((frame, n))) => {
                    pos += n;
                    if let Err(e) = self.on_reply(now, frame) {
                        break Err(e);
                    }
                }
                Ok(None) if buf.len() > self.config.max_reply_bytes => break Err(ConnError::ReplyTooLarge),
                Ok(None) => break Ok(()),
                Err(_) => break Err(ConnError::Protocol),
            }
        };
        match result {
            Ok(()) => {
                self.input.drain(..pos);
                Ok(())
            }
            Err(e) => {
                self.fail_all(e.clone());
                Err(e)
            }
        }
    }

    fn on_reply(&mut self, now: Instant, frame: OwnedFrame) -> Result<(), ConnError> {
        let Some(req) = self.in_flight.pop_front() else {
            return Err(ConnError::UnexpectedReply);
        };
        let result = match (req.kind, frame) {
            (Kind::Auth, OwnedFrame::Error(msg)) => Err(ConnError::AuthFailed(msg)),
            (_, OwnedFrame::Error(msg)) => Ok(Err(RequestError::Server(msg))),
            (Kind::Auth | Kind::Set, OwnedFrame::SimpleString(s)) if s == b"OK" => Ok(Ok(Reply::Stored)),
            (Kind::Get | Kind::GetDel, OwnedFrame::BulkString(v)) => Ok(Ok(Reply::Value(v))),
            (Kind::Get | Kind::GetDel, OwnedFrame::Null) => Ok(Ok(Reply::Nil)),
            _ => Err(ConnError::UnexpectedReply),
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                // Back in line, so that failing the connection fails this request too.
                self.in_flight.push_front(req);
                return Err(e);
            }
        };
        // A good reply (the AUTH's first): the connection works.
        if result.is_ok() {
            self.authenticated = true;
        }
        match req.token {
            Some(token) => self.completions.push_back(Completion { token, result }),
            None if req.kind == Kind::Auth => {}
            None => self.stats.late_replies += 1,
        }
        self.refill(now);
        Ok(())
    }

    /// Moves waiting requests into flight while there is room.
    fn refill(&mut self, now: Instant) {
        while self.in_flight.len() < self.config.max_in_flight {
            let Some(w) = self.waiting.pop_front() else { break };
            self.send(now, w.kind, Some(w.token), w.submitted, &w.key, &w.value, w.px_ms);
        }
    }

    /// Times requests out. On `Err` the connection is hopelessly behind
    /// ([`ConnError::Stalled`]): handled as in [`Client::handle_input`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnError> {
        let timeout = self.config.timeout;
        // In flight first: they were submitted before anything still waiting.
        for req in self.in_flight.iter_mut() {
            if now.saturating_duration_since(req.submitted) < timeout {
                break;
            }
            if let Some(token) = req.token.take() {
                self.stats.timed_out += 1;
                self.completions.push_back(Completion { token, result: Err(RequestError::TimedOut) });
            }
        }
        while let Some(w) = self.waiting.front() {
            if now.saturating_duration_since(w.submitted) < timeout {
                break;
            }
            let token = w.token;
            self.waiting.pop_front();
            self.stats.timed_out += 1;
            self.completions.push_back(Completion { token, result: Err(RequestError::TimedOut) });
        }
        if let Some(oldest) = self.in_flight.front()
            && now.saturating_duration_since(oldest.sent) >= self.config.stall_reset
        {
            self.fail_all(ConnError::Stalled);
            return Err(ConnError::Stalled);
        }
        Ok(())
    }

    /// When [`Client::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.config.timeout;
        let waiting = self.waiting.front().map(|w| w.submitted + timeout);
        let flight = self.in_flight.iter().find(|r| r.token.is_some()).map(|r| r.submitted + timeout);
        let stall = self.in_flight.front().map(|r| r.sent + self.config.stall_reset);
        [waiting, flight, stall].into_iter().flatten().min()
    }

    /// The next finished request.
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Fails every pending request and disconnects.
    fn fail_all(&mut self, why: ConnError) {
        if why != ConnError::Closed {
            self.stats.connection_errors += 1;
        }
        let in_flight = self.in_flight.drain(..).filter_map(|r| r.token);
        let waiting = self.waiting.drain(..).map(|w| w.token);
        for token in in_flight.chain(waiting) {
            self.stats.failed_by_connection += 1;
            self.completions.push_back(Completion { token, result: Err(RequestError::Connection(why.clone())) });
        }
        self.state = State::Disconnected;
        self.authenticated = false;
        self.out.clear();
        self.out_pos = 0;
        self.input.clear();
    }
}

/// Appends one command (an array of bulk strings) to `out`.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frames: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer was sized by `encode_len`: encoding bulk strings into it cannot fail.
    let n = encode_borrowed(&mut out[start..], &frame, false).expect("RESP encode into a sized buffer");
    out.truncate(start + n);
}

/// Reconnect back-off: exponential from `base`, capped at `cap`, each delay drawn uniformly
/// from its upper half ("equal jitter") so a fleet that lost its store does not reconnect in
/// step. The caller asks [`Backoff::next_delay`] after each failed or broken connection and
/// calls [`Backoff::reset`] once a connection works ([`Client::is_authenticated`]).
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// `seed` drives the jitter (any value; give each worker its own).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Self {
        Self { base, cap: cap.max(base), attempt: 0, rng: seed }
    }

    /// Failures since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next connection attempt.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let span = u64::try_from((exp - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { self.next_u64() % (span + 1) };
        half + Duration::from_nanos(jitter)
    }

    /// The connection works again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
