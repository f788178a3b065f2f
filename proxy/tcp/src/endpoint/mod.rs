//! `Endpoint`: many connections behind one sans-IO interface.
//!
//! It demultiplexes segments by 4-tuple, owns the listeners (a bounded SYN queue per listener,
//! SYN cookies when it is full), answers segments of unknown flows with a rate-limited RST
//! (RFC 9293 3.10.7.1), and keeps one timer queue for all connections.
//!
//! # Driving an endpoint
//! The caller owns the clock and the packets. Every call takes `now`, which must not go
//! backwards. A loop looks like this:
//! 1. For each received IPv4/TCP or IPv6/TCP packet whose checksums were verified:
//!    [`Endpoint::handle_segment`].
//! 2. If [`Endpoint::poll_timeout`] is at or before `now`: [`Endpoint::handle_timeout`].
//! 3. Drain [`Endpoint::poll_event`] and act on it ([`Endpoint::recv`] on `Readable`,
//!    [`Endpoint::send`], [`Endpoint::close`] ...).
//! 4. Call [`Endpoint::poll_transmit`] until it returns `None`, sending each packet.
//! 5. Sleep until the next packet or [`Endpoint::poll_timeout`], whichever is first.
//!
//! Calls in steps 1-3 only queue work; nothing is sent before step 4. A handle is valid from
//! `connect` (active) or its `Event::Established` (passive) until the TCB is freed, which is
//! when `Event::Closed` is queued; after that every call with it returns `InvalidHandle` or
//! `None` (stale handles never reach a newer connection in the same slot). `Readable` is
//! edge-triggered: after it, `recv` until `Ok(0)`. `Writable` follows a short `send`.
//! `poll_transmit` writes IPv4 or IPv6 (the connection's family) + TCP (no Ethernet header):
//! pass `&mut frame[14..]`.
//!
//! The endpoint is split by concern, each file adding `Endpoint` methods; this one keeps its
//! state (the TCB slots, the listeners, the queued stateless replies) and its construction:
//! - `table`: the connection table: TCB slots and their handles, one call into a TCB and the
//!   bookkeeping after it (SYN-queue accounting, counters, freeing, the timer entry, the
//!   transmit queue), the released 4-tuples;
//! - `calls`: the user calls of RFC 9293 3.10: OPEN (active), SEND, RECEIVE, CLOSE, ABORT, and
//!   the events;
//! - `listen`: passive OPEN and SEGMENT ARRIVES in LISTEN (RFC 9293 3.10.7.2): the listeners,
//!   the SYN queue, SYN cookies;
//! - `segment`: SEGMENT ARRIVES (RFC 9293 3.10.7): demultiplexing by 4-tuple, TIME-WAIT reuse,
//!   and the rate-limited RST of CLOSED (3.10.7.1);
//! - `timeouts`: Timeouts (RFC 9293 3.10.8): one timer queue for all connections;
//! - `output`: `poll_transmit`: the stateless replies, then the connections' segments;
//! - `status`: STATUS (RFC 9293 3.10.6): lookups and counts, and `check_invariants`.

mod calls;
mod listen;
mod output;
mod segment;
mod status;
mod table;
mod timeouts;

use crate::config::RateLimiter;
pub use crate::config::{
    Config, ConnectError, ConnectionHandle, DropReason, Event, FourTuple, Keepalive, ListenError, PathMtuIgnored,
    Stats, StreamError,
};
use crate::connection::{Buffers, Connection};
use crate::isn::IsnGenerator;
use crate::syncookie::{CookieOptions, SynCookies};
use crate::time::Instant;
use crate::timer::TimerQueue;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::collections::{HashMap, VecDeque};

/// Most stateless replies (RSTs, cookie SYN-ACKs) queued at once; more are dropped.
const CTRL_QUEUE_LEN: usize = 1024;

#[derive(Debug)]
struct Listener {
    addr: SocketAddr,
    half_open: usize,
    /// `false` after `unlisten`: new SYNs are answered as on a closed port; connections it
    /// accepted before live on. (Kept in the list: connections refer to it by index.)
    open: bool,
    /// When this listener last sent a SYN cookie: a bare ACK is checked as a cookie only within
    /// [`COOKIES_RECENT`] of it.
    last_cookie: Option<Instant>,
    /// When a SYN last found this listener's SYN queue full (with cookies or not).
    last_overflow: Option<Instant>,
}

/// How long after its last SYN cookie a listener still checks bare ACKs as cookies: two cookie
/// periods, the longest a cookie stays valid (Linux's `TCP_SYNCOOKIE_VALID` with
/// `tcp_synq_no_recent_overflow`).
pub const COOKIES_RECENT: core::time::Duration = crate::syncookie::VALIDITY;

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Box<Connection>>,
    deadline: Option<Instant>,
    queued: bool,
    listener: Option<usize>,
    /// The application has seen this handle (active opens, or `Established` emitted).
    announced: bool,
    counted_open: bool,
    /// Reported by [`Endpoint::take_released`] (on entering TIME-WAIT, or when freed).
    released: bool,
}

#[derive(Debug, Clone, Copy)]
struct CookieSynAck {
    tuple: FourTuple,
    iss: u32,
    ack: u32,
    opts: CookieOptions,
}

/// Many TCP connections, sans IO. See the module documentation for the call order.
#[derive(Debug)]
pub struct Endpoint {
    config: Config,
    isn: IsnGenerator,
    cookies: SynCookies,
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    table: HashMap<FourTuple, u32>,
    timers: TimerQueue,
    dirty: VecDeque<u32>,
    rsts: VecDeque<(FourTuple, u32, Option<u32>)>,
    synacks: VecDeque<CookieSynAck>,
    events: VecDeque<(ConnectionHandle, Event)>,
    stats: Stats,
    challenge: RateLimiter,
    rst_limit: RateLimiter,
    /// Buffers of freed connections, for reuse.
    spare: Vec<Buffers>,
    /// 4-tuples released since the last [`Endpoint::take_released`] (bounded).
    released: VecDeque<FourTuple>,
    /// Connections in TIME-WAIT, oldest first, for recycling when the table is full (entries
    /// of TCBs freed since are skipped; at most `max_connections`).
    time_wait: VecDeque<ConnectionHandle>,
}

impl Endpoint {
    #[must_use]
    pub fn new(config: Config, now: Instant) -> Self {
        Endpoint {
            isn: IsnGenerator::new(config.secret),
            cookies: SynCookies::new(config.secret),
            challenge: RateLimiter::randomized(config.challenge_ack_limit, now, config.secret),
            rst_limit: RateLimiter::new(config.rst_limit, now),
            config,
            listeners: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            table: HashMap::new(),
            timers: TimerQueue::new(),
            dirty: VecDeque::new(),
            rsts: VecDeque::new(),
            synacks: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            spare: Vec::new(),
            released: VecDeque::new(),
            time_wait: VecDeque::new(),
        }
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// An address any test may use.
#[doc(hidden)]
#[must_use]
pub fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}
