//! `Endpoint`: many connections behind one sans-IO interface.
//!
//! It demultiplexes segments by 4-tuple, owns the listeners (a bounded SYN queue per listener,
//! SYN cookies when it is full), answers segments of unknown flows with a rate-limited RST
//! (RFC 9293 3.10.7.1), and keeps one timer queue for all connections.
//!
//! # Driving an endpoint
//! The caller owns the clock and the packets. Every call takes `now`, which must not go
//! backwards. A loop looks like this:
//! 1. For each received IPv4/TCP packet whose checksums were verified:
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
//! `poll_transmit` writes IPv4 + TCP (no Ethernet header): pass `&mut frame[14..]`.

use crate::config::RateLimiter;
pub use crate::config::{
    Config, ConnectError, ConnectionHandle, DropReason, Event, FourTuple, Keepalive, ListenError,
    Stats, StreamError,
};
use crate::connection::{Buffers, Connection, Ctx, PeerSyn, State};
use crate::isn::IsnGenerator;
use crate::syncookie::{CookieOptions, SynCookies};
use crate::time::Instant;
use crate::timer::{Entry, TimerQueue};
use core::net::{Ipv4Addr, SocketAddrV4};
use sluice_wire::tcp::Flags;
use sluice_wire::{emit_ipv4_tcp_in_place, ipv4, tcp};
use std::collections::{HashMap, VecDeque};

/// Most stateless replies (RSTs, cookie SYN-ACKs) queued at once; more are dropped.
const CTRL_QUEUE_LEN: usize = 1024;

#[derive(Debug)]
struct Listener {
    addr: SocketAddrV4,
    half_open: usize,
    /// `false` after `unlisten`: new SYNs are answered as on a closed port; connections it
    /// accepted before live on. (Kept in the list: connections refer to it by index.)
    open: bool,
}

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
}

/// Most released 4-tuples remembered for [`Endpoint::take_released`]; the oldest go first.
const RELEASED_QUEUE_LEN: usize = 1 << 16;

/// Buffers kept for reuse after connections close.
const SPARE_BUFFERS: usize = 64;

impl Endpoint {
    #[must_use]
    pub fn new(config: Config, now: Instant) -> Self {
        Endpoint {
            isn: IsnGenerator::new(config.secret),
            cookies: SynCookies::new(config.secret),
            challenge: RateLimiter::new(config.challenge_ack_limit, now),
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
        }
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Passive open on `local` (an unspecified IP listens on every address).
    pub fn listen(&mut self, local: SocketAddrV4) -> Result<(), ListenError> {
        if local.port() == 0 {
            return Err(ListenError::InvalidPort);
        }
        if let Some(l) = self.listeners.iter_mut().find(|l| l.addr == local) {
            if l.open {
                return Err(ListenError::AddrInUse);
            }
            l.open = true;
            return Ok(());
        }
        self.listeners.push(Listener {
            addr: local,
            half_open: 0,
            open: true,
        });
        Ok(())
    }

    /// Stops accepting on `local` (RFC 9293 3.10.7.1: new SYNs get a RST, as on a closed port).
    /// Established connections and handshakes already under way are not touched. Returns
    /// whether `local` was listening.
    pub fn unlisten(&mut self, local: SocketAddrV4) -> bool {
        match self
            .listeners
            .iter_mut()
            .find(|l| l.addr == local && l.open)
        {
            Some(l) => {
                l.open = false;
                true
            }
            None => false,
        }
    }

    /// Active open: the SYN leaves on the next `poll_transmit`.
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<ConnectionHandle, ConnectError> {
        if local.port() == 0
            || remote.port() == 0
            || local.ip().is_unspecified()
            || remote.ip().is_unspecified()
        {
            return Err(ConnectError::InvalidAddress);
        }
        let tuple = FourTuple { local, remote };
        if self.table.contains_key(&tuple) {
            return Err(ConnectError::AddrInUse);
        }
        if self.table.len() >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let iss = self.isn.isn(now, local, remote);
        let ts = self.isn.ts_offset(local, remote);
        let bufs = self.take_buffers();
        let conn = Connection::connect(&self.config, bufs, now, tuple, iss, ts);
        let slot = self.insert(tuple, conn, None, true);
        self.after(slot, true);
        self.prune_timers();
        Ok(self.handle_of(slot))
    }

    fn take_buffers(&mut self) -> Buffers {
        self.spare
            .pop()
            .unwrap_or_else(|| Buffers::new(&self.config))
    }

    fn handle_of(&self, slot: u32) -> ConnectionHandle {
        ConnectionHandle {
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    fn insert(
        &mut self,
        tuple: FourTuple,
        conn: Connection,
        listener: Option<usize>,
        announced: bool,
    ) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.conn = Some(Box::new(conn));
        s.deadline = None;
        s.queued = false;
        s.listener = listener;
        s.announced = announced;
        s.counted_open = false;
        s.released = false;
        self.table.insert(tuple, slot);
        slot
    }

    fn find_listener(&self, local: SocketAddrV4) -> Option<usize> {
        self.listeners
            .iter()
            .position(|l| l.open && l.addr == local)
            .or_else(|| {
                self.listeners.iter().position(|l| {
                    l.open && l.addr.port() == local.port() && l.addr.ip().is_unspecified()
                })
            })
    }

    /// Run `f` on the connection of `slot` with a context, then update the endpoint's view.
    fn with_conn<R>(
        &mut self,
        slot: u32,
        now: Instant,
        f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let s = self.slots.get_mut(slot as usize)?;
        let conn = s.conn.as_mut()?;
        let handle = ConnectionHandle {
            slot,
            generation: s.generation,
        };
        let before = self.events.len();
        let mut ctx = Ctx {
            now,
            stats: &mut self.stats,
            events: &mut self.events,
            handle,
            challenge: &mut self.challenge,
            rsts: &mut self.rsts,
        };
        let r = f(conn, &mut ctx);
        // Events of a passive connection the application has not seen yet are withheld,
        // except `Established`, which announces it.
        if !s.announced {
            let mut i = before;
            while i < self.events.len() {
                if self.events[i].1 == Event::Established {
                    s.announced = true;
                    i += 1;
                } else if !s.announced {
                    self.events.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        while self.rsts.len() > CTRL_QUEUE_LEN {
            self.rsts.pop_back();
            self.stats.rsts_rate_limited += 1;
        }
        Some(r)
    }

    /// Bookkeeping after any call into a connection: SYN queue accounting, counters, freeing,
    /// the timer entry and the transmit queue.
    fn after(&mut self, slot: u32, requeue: bool) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(conn) = s.conn.as_mut() else { return };
        if conn.counted_in_syn_queue && conn.state() != State::SynReceived {
            conn.counted_in_syn_queue = false;
            if let Some(l) = s.listener.and_then(|l| self.listeners.get_mut(l)) {
                l.half_open = l.half_open.saturating_sub(1);
            }
        }
        if !s.counted_open
            && !matches!(
                conn.state(),
                State::SynSent | State::SynReceived | State::Closed | State::Listen
            )
        {
            s.counted_open = true;
            self.stats.connections_opened += 1;
            let (ws, sack, ts) = conn.negotiated();
            self.stats.negotiated_wscale += u64::from(ws);
            self.stats.negotiated_sack += u64::from(sack);
            self.stats.negotiated_timestamps += u64::from(ts);
        }
        if conn.is_finished() {
            self.free_slot(slot);
            return;
        }
        if conn.state() == State::TimeWait && !std::mem::replace(&mut s.released, true) {
            Self::release(&mut self.released, conn.four_tuple());
        }
        if let Some(bufs) = conn.release_buffers()
            && self.spare.len() < SPARE_BUFFERS
            && bufs.fits(&self.config)
        {
            self.spare.push(bufs);
        }
        let d = conn.next_deadline();
        if d != s.deadline {
            s.deadline = d;
            if let Some(deadline) = d {
                self.timers.push(Entry {
                    deadline,
                    slot,
                    generation: s.generation,
                });
            }
        }
        if requeue && !s.queued {
            s.queued = true;
            self.dirty.push_back(slot);
        }
    }

    fn free_slot(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let Some(conn) = s.conn.take() else { return };
        self.table.remove(&conn.four_tuple());
        if !std::mem::replace(&mut s.released, true) {
            Self::release(&mut self.released, conn.four_tuple());
        }
        if conn.counted_in_syn_queue
            && let Some(l) = s.listener.and_then(|l| self.listeners.get_mut(l))
        {
            l.half_open = l.half_open.saturating_sub(1);
        }
        if s.announced {
            self.events.push_back((
                ConnectionHandle {
                    slot,
                    generation: s.generation,
                },
                Event::Closed,
            ));
        }
        self.stats.connections_closed += 1;
        let bufs = conn.into_buffers();
        if self.spare.len() < SPARE_BUFFERS && bufs.fits(&self.config) {
            self.spare.push(bufs);
        }
        let s = &mut self.slots[slot as usize];
        s.generation = s.generation.wrapping_add(1);
        s.deadline = None;
        s.queued = false;
        s.announced = false;
        self.free.push(slot);
    }

    fn prune_timers(&mut self) {
        // Stale entries deeper in the heap are bounded: rebuild when they dominate.
        if self.timers.len() > 4 * self.table.len() + 1024 {
            self.timers = TimerQueue::new();
            for (i, s) in self.slots.iter().enumerate() {
                if let (Some(_), Some(deadline)) = (&s.conn, s.deadline) {
                    self.timers.push(Entry {
                        deadline,
                        slot: i as u32,
                        generation: s.generation,
                    });
                }
            }
        }
        let slots = &self.slots;
        self.timers.prune(|e| {
            slots.get(e.slot as usize).is_some_and(|s| {
                s.conn.is_some() && s.generation == e.generation && s.deadline == Some(e.deadline)
            })
        });
    }

    fn queue_rst(&mut self, now: Instant, tuple: FourTuple, seg: &tcp::Repr<'_>) {
        if seg.flags.rst() {
            return;
        }
        if !self.rst_limit.allow(now) || self.rsts.len() >= CTRL_QUEUE_LEN {
            self.stats.rsts_rate_limited += 1;
            return;
        }
        // RFC 9293 3.10.7.1: "If the incoming segment has the ACK bit set, the reset takes its
        // sequence number from the ACK field; otherwise the reset has sequence number zero and
        // the ACK field is set to the sum of the sequence number and segment length".
        if seg.flags.ack() {
            self.rsts.push_back((tuple, seg.ack_number, None));
        } else {
            let ack = seg.seq_number.wrapping_add(seg.segment_len() as u32);
            self.rsts.push_back((tuple, 0, Some(ack)));
        }
    }

    fn release(queue: &mut VecDeque<FourTuple>, tuple: FourTuple) {
        if queue.len() >= RELEASED_QUEUE_LEN {
            queue.pop_front();
        }
        queue.push_back(tuple);
    }

    /// The next 4-tuple this endpoint no longer serves actively, oldest first: its TCB entered
    /// TIME-WAIT (where a new SYN may reopen the 4-tuple, RFC 6191) or was freed in any state,
    /// announced or not; each TCB once. For a caller that mirrors the flow table elsewhere (a
    /// flow index shared by workers): drain it after every call. At most 65,536 are kept.
    pub fn take_released(&mut self) -> Option<FourTuple> {
        self.released.pop_front()
    }

    /// Frees a connection in TIME-WAIT without sending anything (its 4-tuple was reopened
    /// elsewhere: the caller knows better than the 2 MSL rule). Returns whether it did.
    pub fn forget_time_wait(&mut self, h: ConnectionHandle) -> bool {
        match self.slot_of(h) {
            Some(slot) if self.state(h) == Some(State::TimeWait) => {
                self.free_slot(slot);
                true
            }
            _ => false,
        }
    }

    /// Process one received segment. `ip` and `seg` come from the wire parsers with checksums
    /// verified (or offloaded). Never fails: drops are counted in `stats().drops`.
    pub fn handle_segment(&mut self, now: Instant, ip: &ipv4::Repr, seg: &tcp::Repr<'_>) {
        self.stats.segments_in += 1;
        let tuple = FourTuple {
            local: SocketAddrV4::new(ip.dst_addr, seg.dst_port),
            remote: SocketAddrV4::new(ip.src_addr, seg.src_port),
        };
        if let Some(&slot) = self.table.get(&tuple) {
            let reuse = self.slots[slot as usize].conn.as_ref().is_some_and(|c| {
                // RFC 9293 3.10.7.4 / RFC 6191: a new SYN may reopen a connection in TIME-WAIT
                // when its sequence number is beyond the old one.
                c.state() == State::TimeWait
                    && seg.flags.syn()
                    && !seg.flags.ack()
                    && !seg.flags.rst()
                    && crate::seq::SeqNumber(seg.seq_number) > c.rcv_nxt()
            }) && self.find_listener(tuple.local).is_some();
            if reuse {
                self.free_slot(slot);
            } else {
                self.with_conn(slot, now, |c, ctx| c.handle_segment(ctx, seg));
                self.after(slot, true);
                self.prune_timers();
                return;
            }
        }
        match self.find_listener(tuple.local) {
            Some(li) => self.listener_segment(now, li, tuple, seg),
            None => {
                self.stats.drop(DropReason::NoListener);
                self.queue_rst(now, tuple, seg);
            }
        }
        self.prune_timers();
    }

    /// RFC 9293 3.10.7.2: LISTEN.
    fn listener_segment(&mut self, now: Instant, li: usize, tuple: FourTuple, seg: &tcp::Repr<'_>) {
        let f = seg.flags;
        // "first, check for a RST: An incoming RST should be ignored."
        if f.rst() {
            self.stats.drop(DropReason::BadFlags);
            return;
        }
        if f.ack() {
            if !f.syn() && self.config.syn_cookies {
                let peer_isn = seg.seq_number.wrapping_sub(1);
                let cookie = seg.ack_number.wrapping_sub(1);
                if let Some(opts) =
                    self.cookies
                        .validate(now, tuple.local, tuple.remote, peer_isn, cookie)
                {
                    if self.table.len() >= self.config.max_connections {
                        self.stats.drop(DropReason::SynQueueFull);
                        return;
                    }
                    self.stats.syn_cookies_validated += 1;
                    let peer = PeerSyn {
                        mss: Some(opts.mss),
                        window_scale: opts.window_scale,
                        sack_permitted: opts.sack_permitted,
                        timestamp: None,
                    };
                    let ts = self.isn.ts_offset(tuple.local, tuple.remote);
                    let bufs = self.take_buffers();
                    let conn = Connection::from_cookie(
                        &self.config,
                        bufs,
                        now,
                        tuple,
                        cookie,
                        peer_isn,
                        peer,
                        ts,
                    );
                    let slot = self.insert(tuple, conn, Some(li), true);
                    let handle = self.handle_of(slot);
                    self.events.push_back((handle, Event::Established));
                    self.with_conn(slot, now, |c, ctx| c.handle_segment(ctx, seg));
                    self.after(slot, true);
                    return;
                }
                self.stats.drop(DropReason::BadCookie);
            } else {
                self.stats.drop(DropReason::BadAck);
            }
            // "second, check for an ACK: ... form a reset <SEQ=SEG.ACK><CTL=RST>"
            self.queue_rst(now, tuple, seg);
            return;
        }
        if !f.syn() {
            // "fourth, other text or control: drop the segment and return"
            self.stats.drop(DropReason::BadFlags);
            return;
        }
        // "third, check for a SYN".
        if self.table.len() >= self.config.max_connections {
            self.stats.drop(DropReason::SynQueueFull);
            return;
        }
        if self.listeners[li].half_open >= self.config.syn_queue_len {
            if !self.config.syn_cookies {
                self.stats.drop(DropReason::SynQueueFull);
                return;
            }
            if self.synacks.len() >= CTRL_QUEUE_LEN {
                self.stats.drop(DropReason::SynQueueFull);
                return;
            }
            let opts = CookieOptions {
                mss: seg.max_seg_size.unwrap_or(536),
                window_scale: if self.config.window_scale {
                    seg.window_scale
                } else {
                    None
                },
                sack_permitted: self.config.sack && seg.sack_permitted,
            };
            let iss = self
                .cookies
                .generate(now, tuple.local, tuple.remote, seg.seq_number, opts);
            self.synacks.push_back(CookieSynAck {
                tuple,
                iss,
                ack: seg.seq_number.wrapping_add(1),
                opts,
            });
            self.stats.syn_cookies_sent += 1;
            return;
        }
        let iss = self.isn.isn(now, tuple.local, tuple.remote);
        let ts = self.isn.ts_offset(tuple.local, tuple.remote);
        let bufs = self.take_buffers();
        let mut conn = Connection::accept(&self.config, bufs, now, tuple, iss, ts, seg);
        conn.counted_in_syn_queue = true;
        self.listeners[li].half_open += 1;
        let slot = self.insert(tuple, conn, Some(li), false);
        self.after(slot, true);
    }

    /// Run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut budget = self.timers.len() + 16;
        while let Some(e) = self.timers.peek() {
            if e.deadline > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.timers.pop();
            let current = self.slots.get(e.slot as usize).is_some_and(|s| {
                s.conn.is_some() && s.generation == e.generation && s.deadline == Some(e.deadline)
            });
            if !current {
                continue;
            }
            self.slots[e.slot as usize].deadline = None;
            self.with_conn(e.slot, now, |c, ctx| c.handle_timeout(ctx));
            self.after(e.slot, true);
        }
        self.prune_timers();
    }

    /// The earliest instant at which `handle_timeout` has work, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|e| e.deadline)
    }

    /// Write one IPv4 + TCP packet into `buf` and return its length, or `None` when there is
    /// nothing to send. `buf` should hold at least MTU bytes.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some((tuple, seq, ack)) = self.rsts.pop_front()
            && let Some(n) = emit_stateless(
                buf,
                tuple,
                seq,
                ack.unwrap_or(0),
                if ack.is_some() {
                    Flags::RST | Flags::ACK
                } else {
                    Flags::RST
                },
                None,
                0,
            )
        {
            self.stats.rsts_sent += 1;
            self.stats.segments_out += 1;
            return Some(n);
        }
        if let Some(sa) = self.synacks.pop_front() {
            let window = self.config.recv_buffer.min(65_535) as u16;
            let wscale = sa.opts.window_scale.map(|_| self.config.rcv_wscale());
            let syn = SynOpts {
                mss: self.config.mss().min(65_535) as u16,
                window_scale: wscale,
                sack_permitted: sa.opts.sack_permitted,
            };
            if let Some(n) = emit_stateless(
                buf,
                sa.tuple,
                sa.iss,
                sa.ack,
                Flags::SYN | Flags::ACK,
                Some(syn),
                window,
            ) {
                self.stats.segments_out += 1;
                return Some(n);
            }
        }
        while let Some(slot) = self.dirty.pop_front() {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                s.queued = false;
            }
            let r = self
                .with_conn(slot, now, |c, ctx| c.poll_transmit(ctx, buf))
                .flatten();
            match r {
                Some(n) => {
                    let s = &mut self.slots[slot as usize];
                    if !s.queued {
                        s.queued = true;
                        self.dirty.push_back(slot);
                    }
                    self.after(slot, false);
                    self.prune_timers();
                    return Some(n);
                }
                None => self.after(slot, false),
            }
        }
        self.prune_timers();
        None
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.events.pop_front()
    }

    fn slot_of(&self, h: ConnectionHandle) -> Option<u32> {
        let s = self.slots.get(h.slot as usize)?;
        (s.generation == h.generation && s.conn.is_some()).then_some(h.slot)
    }

    fn conn(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.slots.get(self.slot_of(h)? as usize)?.conn.as_deref()
    }

    /// Queue bytes for sending; returns how many the send buffer took (a short count means
    /// full: wait for `Writable`).
    pub fn send(&mut self, h: ConnectionHandle, data: &[u8]) -> Result<usize, StreamError> {
        let slot = self.slot_of(h).ok_or(StreamError::InvalidHandle)?;
        let r = self
            .with_conn(slot, Instant::ZERO, |c, _| c.send(data))
            .ok_or(StreamError::InvalidHandle)?;
        self.after(slot, true);
        r
    }

    /// Read in-order bytes. `Ok(0)`: nothing now; `Err(Finished)`: the peer's FIN was reached.
    pub fn recv(&mut self, h: ConnectionHandle, buf: &mut [u8]) -> Result<usize, StreamError> {
        let slot = self.slot_of(h).ok_or(StreamError::InvalidHandle)?;
        let r = self
            .with_conn(slot, Instant::ZERO, |c, _| c.recv(buf))
            .ok_or(StreamError::InvalidHandle)?;
        self.after(slot, true);
        r
    }

    /// Close the sending side: a FIN follows the queued data (RFC 9293 3.10.4).
    pub fn close(&mut self, h: ConnectionHandle) {
        if let Some(slot) = self.slot_of(h) {
            self.with_conn(slot, Instant::ZERO, |c, _| c.close());
            self.after(slot, true);
            self.prune_timers();
        }
    }

    /// Abort: send a RST (in synchronized states) and free the connection.
    pub fn abort(&mut self, h: ConnectionHandle) {
        if let Some(slot) = self.slot_of(h) {
            self.with_conn(slot, Instant::ZERO, |c, _| c.abort());
            self.after(slot, true);
            self.prune_timers();
        }
    }

    /// The connection with this 4-tuple, if any (including half-open ones not yet announced).
    #[must_use]
    pub fn lookup(&self, tuple: &FourTuple) -> Option<ConnectionHandle> {
        self.table.get(tuple).map(|&slot| self.handle_of(slot))
    }

    #[must_use]
    pub fn four_tuple(&self, h: ConnectionHandle) -> Option<FourTuple> {
        self.conn(h).map(Connection::four_tuple)
    }

    #[must_use]
    pub fn state(&self, h: ConnectionHandle) -> Option<State> {
        self.conn(h).map(Connection::state)
    }

    /// The connection itself, read-only (sequence variables, cwnd, RTO), for tests and stats.
    #[must_use]
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conn(h)
    }

    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Handles of every live connection (every state), e.g. to reset them all at shutdown.
    pub fn handles(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.table.values().map(|&slot| self.handle_of(slot))
    }

    /// Live TCBs that still carry a conversation: every state but TIME-WAIT (whose only job is
    /// to absorb stray segments; a draining server need not wait for it).
    #[must_use]
    pub fn active_count(&self) -> usize {
        self.table
            .values()
            .filter(|&&slot| {
                self.slots[slot as usize]
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.state() != State::TimeWait)
            })
            .count()
    }

    /// Buffers kept for the next connections.
    #[cfg(test)]
    pub(crate) fn spare_buffers(&self) -> usize {
        self.spare.len()
    }

    /// Live TCBs (every state, TIME-WAIT included).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.table.len()
    }

    /// Live TCBs per state (a scan; not for the fast path).
    #[must_use]
    pub fn connections_by_state(&self) -> Vec<(State, usize)> {
        State::ALL
            .iter()
            .map(|&st| {
                (
                    st,
                    self.slots
                        .iter()
                        .filter(|s| s.conn.as_ref().is_some_and(|c| c.state() == st))
                        .count(),
                )
            })
            .collect()
    }

    /// Check the endpoint's invariants (for tests and the fuzzer): per connection, see
    /// `Connection::check_invariants`; the table and the slots agree; every live timer is in
    /// the queue and the queue's head is current; SYN-queue counts match.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut live = 0;
        let mut half_open = vec![0usize; self.listeners.len()];
        for (i, s) in self.slots.iter().enumerate() {
            let Some(c) = s.conn.as_ref() else { continue };
            live += 1;
            c.check_invariants().map_err(|e| format!("slot {i}: {e}"))?;
            if self.table.get(&c.four_tuple()) != Some(&(i as u32)) {
                return Err(format!("slot {i}: not in the table"));
            }
            if s.deadline != c.next_deadline() {
                return Err(format!(
                    "slot {i}: deadline {:?} != connection's {:?}",
                    s.deadline,
                    c.next_deadline()
                ));
            }
            if c.counted_in_syn_queue
                && let Some(l) = s.listener
            {
                half_open[l] += 1;
            }
            if c.is_finished() {
                return Err(format!("slot {i}: finished but not freed"));
            }
        }
        if live != self.table.len() {
            return Err(format!(
                "{live} live slots, {} table entries",
                self.table.len()
            ));
        }
        for (l, n) in self.listeners.iter().zip(half_open) {
            if l.half_open != n {
                return Err(format!(
                    "listener {}: half_open {} != {}",
                    l.addr, l.half_open, n
                ));
            }
            if l.half_open > self.config.syn_queue_len {
                return Err("SYN queue over its bound".into());
            }
        }
        let earliest = self
            .slots
            .iter()
            .filter(|s| s.conn.is_some())
            .filter_map(|s| s.deadline)
            .min();
        match (earliest, self.poll_timeout()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) => {}
            (a, b) => return Err(format!("earliest deadline {a:?}, poll_timeout {b:?}")),
        }
        if self.rsts.len() > CTRL_QUEUE_LEN || self.synacks.len() > CTRL_QUEUE_LEN {
            return Err("control queue over its bound".into());
        }
        Ok(())
    }
}

struct SynOpts {
    mss: u16,
    window_scale: Option<u8>,
    sack_permitted: bool,
}

fn emit_stateless(
    buf: &mut [u8],
    tuple: FourTuple,
    seq: u32,
    ack: u32,
    flags: Flags,
    syn: Option<SynOpts>,
    window: u16,
) -> Option<usize> {
    let mut repr = tcp::Repr {
        src_port: tuple.local.port(),
        dst_port: tuple.remote.port(),
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: window,
        ..Default::default()
    };
    if let Some(s) = syn {
        repr.max_seg_size = Some(s.mss);
        repr.window_scale = s.window_scale;
        repr.sack_permitted = s.sack_permitted;
    }
    let ip = ipv4::Repr {
        src_addr: *tuple.local.ip(),
        dst_addr: *tuple.remote.ip(),
        protocol: ipv4::Protocol::Tcp,
        payload_len: repr.header_len(),
        hop_limit: 64,
    };
    emit_ipv4_tcp_in_place(buf, &ip, &repr, 0).ok()
}

/// An address any test may use.
#[doc(hidden)]
#[must_use]
pub fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)
}
