//! One TCB: the RFC 9293 state machine of a single connection.
//!
//! Incoming segments go through `handle_segment` in the order of RFC 9293 3.10.7.4: PAWS
//! (RFC 7323 5.3), the acceptability test, RST (RFC 5961 3.2), SYN (RFC 5961 4.2), ACK (with
//! the RFC 5961 5.2 range check), text, FIN. Outgoing segments come from `poll_transmit`, one at
//! a time: RST, SYN/SYN-ACK, loss-recovery retransmissions (RFC 5681 / 6582 / 6675, and the
//! RFC 8985 loss probes of `rack`), new data and FIN (congestion and send windows, sender SWS
//! avoidance, no Nagle), probes, then ACKs. Timers (retransmission, loss probe, delayed ACK,
//! persist, keepalive, idle, handshake, TIME-WAIT) fold into `next_deadline`. What this is not: demultiplexing, listeners, SYN cookies (`endpoint`).

use crate::config::{
    Config, ConnectionHandle, DropReason, Event, FourTuple, RateLimiter, Stats, StreamError,
};
use crate::congestion::{CongestionControl, Controller};
use crate::rack::{LossProbe, Probe};
use crate::ranges::Range;
use crate::recv_buffer::RecvBuffer;
use crate::ring::Ring;
use crate::rtt::RttEstimator;
use crate::sack::Scoreboard;
use crate::seq::SeqNumber;
use crate::time::Instant;
use core::time::Duration;
use sluice_wire::tcp::{Flags, SackBlock, Timestamp};
use sluice_wire::{emit_ipv4_tcp_in_place, ipv4, tcp};
use std::collections::VecDeque;

/// RFC 9293 3.3.2 connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl State {
    /// All states, for per-state counters.
    pub const ALL: [State; 11] = [
        State::Closed,
        State::Listen,
        State::SynSent,
        State::SynReceived,
        State::Established,
        State::FinWait1,
        State::FinWait2,
        State::CloseWait,
        State::Closing,
        State::LastAck,
        State::TimeWait,
    ];
    fn synchronized(self) -> bool {
        !matches!(
            self,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        )
    }
    /// States in which we may still send data (or a FIN) and so retransmit it.
    fn may_send(self) -> bool {
        matches!(
            self,
            State::Established
                | State::CloseWait
                | State::FinWait1
                | State::Closing
                | State::LastAck
        )
    }
    /// States in which the peer may still send us data.
    fn can_receive(self) -> bool {
        matches!(
            self,
            State::SynReceived | State::Established | State::FinWait1 | State::FinWait2
        )
    }
}

/// PAWS: timestamps older than this are not compared (RFC 7323 5.5, 24 days).
const PAWS_IDLE: Duration = Duration::from_secs(24 * 24 * 3600);

/// Sequence space between two PAWS anchors (see `PawsAnchors`).
const PAWS_ANCHOR_BYTES: u32 = 1 << 28;

/// Two (TSval, RCV.NXT) points of the peer's stream at least `PAWS_ANCHOR_BYTES` apart, the
/// older at most 2 * `PAWS_ANCHOR_BYTES` = 2^29 behind RCV.NXT. A segment whose TSval is not
/// older than the older anchor's was sent after the peer had reached that point of its
/// stream, so it cannot be an old duplicate from an earlier sequence wrap, whatever its
/// TSval's age relative to TS.Recent (see the PAWS step of `handle_segment`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PawsAnchors {
    /// (TSval, RCV.NXT, when): `[older, newer]`.
    points: [(u32, SeqNumber, Instant); 2],
    valid: bool,
}

impl PawsAnchors {
    pub(crate) fn new(tsval: u32, rcv_nxt: SeqNumber, now: Instant) -> Self {
        PawsAnchors {
            points: [(tsval, rcv_nxt, now); 2],
            valid: true,
        }
    }
    /// TS.Recent was updated to `tsval` with RCV.NXT at `rcv_nxt`.
    pub(crate) fn on_ts_recent(&mut self, tsval: u32, rcv_nxt: SeqNumber, now: Instant) {
        if !self.valid {
            *self = Self::new(tsval, rcv_nxt, now);
        } else if rcv_nxt.0.wrapping_sub(self.points[1].1.0) >= PAWS_ANCHOR_BYTES
            || now - self.points[1].2 >= PAWS_IDLE / 4
        {
            self.points = [self.points[1], (tsval, rcv_nxt, now)];
        }
    }
    /// `tsval` is not older than the older anchor (whose TSval is still comparable).
    pub(crate) fn covers(&self, tsval: u32, now: Instant) -> bool {
        let (anchor, _, at) = self.points[0];
        self.valid && now - at < PAWS_IDLE / 2 && (tsval.wrapping_sub(anchor) as i32) >= 0
    }
}

/// PAWS: how many ticks older than TS.Recent a TSval may be and still pass (Linux's
/// `TCP_PAWS_WINDOW`): segments reordered around a retransmission (see `handle_segment`).
const PAWS_WINDOW: i32 = 1;

/// What a connection needs from its endpoint while it runs.
pub(crate) struct Ctx<'a> {
    pub now: Instant,
    pub stats: &'a mut Stats,
    pub events: &'a mut VecDeque<(ConnectionHandle, Event)>,
    pub handle: ConnectionHandle,
    pub challenge: &'a mut RateLimiter,
    /// Stateless RSTs to send (4-tuple, seq, ack).
    pub rsts: &'a mut VecDeque<(FourTuple, u32, Option<u32>)>,
}

impl Ctx<'_> {
    fn event(&mut self, e: Event) {
        self.events.push_back((self.handle, e));
    }
}

/// Options negotiated on the handshake.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerSyn {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub timestamp: Option<Timestamp>,
}

impl PeerSyn {
    pub(crate) fn from_repr(seg: &tcp::Repr<'_>) -> Self {
        PeerSyn {
            mss: seg.max_seg_size,
            window_scale: seg.window_scale,
            sack_permitted: seg.sack_permitted,
            timestamp: seg.timestamp,
        }
    }
}

/// The two stream buffers of a connection, recycled by the endpoint between connections so
/// that opening one does not allocate (and zero) them again.
#[derive(Debug)]
pub(crate) struct Buffers {
    send: Ring,
    recv: RecvBuffer,
}

impl Buffers {
    pub(crate) fn new(config: &Config) -> Self {
        Buffers {
            send: Ring::new(config.send_buffer),
            recv: RecvBuffer::new(config.recv_buffer),
        }
    }
    pub(crate) fn fits(&self, config: &Config) -> bool {
        self.send.capacity() == config.send_buffer && self.recv.capacity() == config.recv_buffer
    }
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    state: State,
    tuple: FourTuple,

    // Send sequence variables (RFC 9293 3.3.1).
    iss: SeqNumber,
    snd_una: SeqNumber,
    snd_nxt: SeqNumber,
    /// Highest sequence number sent (snd_nxt goes back to snd_una after an RTO).
    snd_max: SeqNumber,
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: SeqNumber,
    snd_wl2: SeqNumber,
    /// Shift applied to the peer's window field (RFC 7323 2.3).
    snd_wscale: u8,

    // Receive sequence variables.
    irs: SeqNumber,
    rcv_nxt: SeqNumber,
    /// Right edge of the window we last advertised.
    rcv_adv: SeqNumber,
    /// Our shift (applied by the peer to our window field).
    rcv_wscale: u8,
    last_ack_sent: SeqNumber,

    // Negotiated options.
    /// Bytes of options + payload per segment: min(peer MSS + 20, MTU - 20) - 20 (RFC 9293 3.7.1).
    mss_budget: usize,
    /// Our MSS (what we advertised).
    our_mss: usize,
    offered_wscale: bool,
    sack_ok: bool,
    ts_ok: bool,
    ts_recent: u32,
    ts_recent_time: Instant,
    paws_anchors: PawsAnchors,
    ts_offset: u32,

    send_buf: Ring,
    recv_buf: RecvBuffer,

    /// `close` was called: a FIN follows the data.
    fin_queued: bool,
    fin_acked: bool,
    /// The peer's FIN sequence number, known before all data ahead of it arrived.
    remote_fin: Option<SeqNumber>,
    fin_received: bool,

    // Timers.
    created: Instant,
    last_rx: Instant,
    rto_at: Option<Instant>,
    delack_at: Option<Instant>,
    persist_at: Option<Instant>,
    persist_backoff: u32,
    time_wait_at: Option<Instant>,
    keepalive_probes: u32,
    retransmits: u32,

    // What to send next.
    ack_now: bool,
    rst_pending: bool,
    probe_pending: bool,
    keepalive_pending: bool,
    /// Retransmit the segment at snd_una (fast retransmit, NewReno partial ACK).
    rexmit_una: bool,

    // Loss recovery and congestion control.
    rtt: RttEstimator,
    rtt_probe: Option<(SeqNumber, Instant)>,
    cc: Controller,
    scoreboard: Scoreboard,
    dupacks: u32,
    in_recovery: bool,
    recover: SeqNumber,
    high_rxt: SeqNumber,
    /// NewReno's window inflation during fast recovery without SACK (RFC 5681 3.2 steps 3-5).
    inflation: usize,
    /// The loss-probe timer (RFC 8985 after `rack`); SACK connections only.
    probe: LossProbe,
    /// The pending `rexmit_una` comes from the probe timer (counted as `retransmits_rack`).
    rexmit_rack: bool,
    /// Send a tail loss probe (RFC 8985 7.3): the last segment again.
    tlp_pending: bool,

    want_writable: bool,
    /// Counted in its listener's SYN queue (passive, not yet established).
    pub(crate) counted_in_syn_queue: bool,

    hs_timeout: Duration,
    idle_timeout: Option<Duration>,
    fin_wait_2_timeout: Option<Duration>,
    keepalive: Option<crate::config::Keepalive>,
    time_wait: Duration,
    delayed_ack: Duration,
    max_retransmits: u32,
    mtu: usize,
    /// `Config::loss_probes` (and SACK negotiated): the `rack` timer runs.
    loss_probes: bool,
}

impl Connection {
    fn new(
        config: &Config,
        bufs: Buffers,
        now: Instant,
        tuple: FourTuple,
        iss: u32,
        ts_offset: u32,
        state: State,
    ) -> Self {
        let iss = SeqNumber(iss);
        let our_mss = config.mss();
        Connection {
            state,
            tuple,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: SeqNumber(0),
            snd_wl2: iss,
            snd_wscale: 0,
            irs: SeqNumber(0),
            rcv_nxt: SeqNumber(0),
            rcv_adv: SeqNumber(0),
            rcv_wscale: if config.window_scale {
                config.rcv_wscale()
            } else {
                0
            },
            last_ack_sent: SeqNumber(0),
            mss_budget: 536,
            our_mss,
            offered_wscale: config.window_scale,
            sack_ok: config.sack,
            ts_ok: config.timestamps,
            ts_recent: 0,
            ts_recent_time: now,
            paws_anchors: PawsAnchors::default(),
            ts_offset,
            send_buf: bufs.send,
            recv_buf: bufs.recv,
            fin_queued: false,
            fin_acked: false,
            remote_fin: None,
            fin_received: false,
            created: now,
            last_rx: now,
            rto_at: None,
            delack_at: None,
            persist_at: None,
            persist_backoff: 0,
            time_wait_at: None,
            keepalive_probes: 0,
            retransmits: 0,
            ack_now: false,
            rst_pending: false,
            probe_pending: false,
            keepalive_pending: false,
            rexmit_una: false,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            rtt_probe: None,
            cc: Controller::new(config.congestion, 536),
            scoreboard: Scoreboard::new(),
            dupacks: 0,
            in_recovery: false,
            probe: LossProbe::default(),
            rexmit_rack: false,
            tlp_pending: false,
            recover: iss,
            high_rxt: iss,
            inflation: 0,
            want_writable: false,
            counted_in_syn_queue: false,
            hs_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            fin_wait_2_timeout: config.fin_wait_2_timeout,
            keepalive: config.keepalive,
            time_wait: config.time_wait,
            delayed_ack: config.delayed_ack,
            max_retransmits: config.max_retransmits,
            loss_probes: config.loss_probes,
            mtu: config.mtu,
        }
    }

    /// Active open (RFC 9293 3.10.1): SYN-SENT, the SYN goes out on the next `poll_transmit`.
    pub(crate) fn connect(
        config: &Config,
        bufs: Buffers,
        now: Instant,
        tuple: FourTuple,
        iss: u32,
        ts_offset: u32,
    ) -> Self {
        Self::new(config, bufs, now, tuple, iss, ts_offset, State::SynSent)
    }

    /// Passive open from a SYN received on a listener (RFC 9293 3.10.7.2): SYN-RECEIVED.
    pub(crate) fn accept(
        config: &Config,
        bufs: Buffers,
        now: Instant,
        tuple: FourTuple,
        iss: u32,
        ts_offset: u32,
        seg: &tcp::Repr<'_>,
    ) -> Self {
        let mut c = Self::new(config, bufs, now, tuple, iss, ts_offset, State::SynReceived);
        c.irs = SeqNumber(seg.seq_number);
        c.rcv_nxt = c.irs + 1;
        c.negotiate(config, PeerSyn::from_repr(seg));
        // The SYN's window is never scaled (RFC 7323 2.2).
        c.snd_wnd = usize::from(seg.window_len);
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = c.irs;
        c.rcv_adv = c.rcv_nxt + c.syn_window();
        c.last_ack_sent = c.rcv_nxt;
        c
    }

    /// A connection recreated from a validated SYN cookie: ESTABLISHED at once (the final ACK
    /// is then processed by `handle_segment`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_cookie(
        config: &Config,
        bufs: Buffers,
        now: Instant,
        tuple: FourTuple,
        iss: u32,
        irs: u32,
        peer: PeerSyn,
        ts_offset: u32,
    ) -> Self {
        let mut c = Self::new(config, bufs, now, tuple, iss, ts_offset, State::Established);
        c.irs = SeqNumber(irs);
        c.rcv_nxt = c.irs + 1;
        c.negotiate(config, peer);
        c.snd_nxt = c.iss + 1;
        c.snd_max = c.snd_nxt;
        c.snd_una = c.iss + 1;
        c.snd_wl1 = c.irs;
        c.rcv_adv = c.rcv_nxt + c.syn_window();
        c.last_ack_sent = c.rcv_nxt;
        c
    }

    /// Apply the peer's SYN options (RFC 9293 3.7.1 MSS; RFC 7323 1.3 and 2.2: window scale and
    /// timestamps only when both sides sent them; RFC 2018 SACK likewise).
    fn negotiate(&mut self, _config: &Config, peer: PeerSyn) {
        self.negotiate_active(peer);
    }

    /// SMSS for congestion control: the payload of a full segment carrying timestamps.
    fn data_mss(&self) -> usize {
        self.mss_budget
            .saturating_sub(if self.ts_ok { 12 } else { 0 })
            .max(1)
    }

    /// The window advertised in a SYN or SYN-ACK (never scaled).
    fn syn_window(&self) -> usize {
        self.recv_buf.window().min(65_535)
    }

    // ---- accessors ----

    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }
    /// When the TCB was made: the SYN's arrival for a passive open (the final ACK's for a
    /// connection rebuilt from a SYN cookie), the `connect` call for an active one.
    #[must_use]
    pub fn created(&self) -> Instant {
        self.created
    }

    #[must_use]
    pub fn four_tuple(&self) -> FourTuple {
        self.tuple
    }
    #[must_use]
    pub fn snd_una(&self) -> SeqNumber {
        self.snd_una
    }
    #[must_use]
    pub fn snd_nxt(&self) -> SeqNumber {
        self.snd_nxt
    }
    #[must_use]
    pub fn snd_max(&self) -> SeqNumber {
        self.snd_max
    }
    #[must_use]
    pub fn rcv_nxt(&self) -> SeqNumber {
        self.rcv_nxt
    }
    #[must_use]
    pub fn cwnd(&self) -> usize {
        self.cc.cwnd()
    }
    #[must_use]
    pub fn rto(&self) -> Duration {
        self.rtt.rto()
    }
    pub(crate) fn negotiated(&self) -> (bool, bool, bool) {
        (self.offered_wscale, self.sack_ok, self.ts_ok)
    }
    /// Bytes in the send buffer (unacknowledged or unsent).
    #[must_use]
    pub fn send_buffered(&self) -> usize {
        self.send_buf.len()
    }
    /// Bytes held by the receive side (readable plus out of order).
    #[must_use]
    pub fn recv_buffered(&self) -> usize {
        self.recv_buf.readable() + self.recv_buf.held_out_of_order()
    }

    /// Invariants a fuzzer checks; returns a description of the first violated one.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.snd_una > self.snd_nxt {
            return Err("snd_una > snd_nxt");
        }
        if self.snd_nxt > self.snd_max {
            return Err("snd_nxt > snd_max");
        }
        if self.send_buf.len() > self.send_buf.capacity() {
            return Err("send buffer over capacity");
        }
        if self.recv_buf.readable() > self.recv_buf.capacity() {
            return Err("receive buffer over capacity");
        }
        if self.recv_buf.held_out_of_order() > self.recv_buf.capacity() {
            return Err("out-of-order bytes over capacity");
        }
        if self.state.synchronized() && self.snd_max - self.snd_una > self.send_buf.len() + 2 {
            return Err("outstanding beyond buffered data");
        }
        if self.state != State::Closed
            && !self.rst_pending
            && self.next_deadline().is_none()
            && self.rto_needed()
        {
            return Err("outstanding data without a retransmission timer");
        }
        Ok(())
    }

    fn rto_needed(&self) -> bool {
        self.snd_max > self.snd_una && !matches!(self.state, State::TimeWait | State::Closed)
    }

    /// In TIME-WAIT nothing is sent or read any more (RFC 9293 3.10.7.4: it only acknowledges
    /// a retransmitted FIN): hand the buffers back now, emptied, instead of holding them for
    /// 2 MSL; the TCB keeps one-byte ones. `None` outside TIME-WAIT, while received bytes wait to
    /// be read, or when already done.
    pub(crate) fn release_buffers(&mut self) -> Option<Buffers> {
        // Bytes the application has not read yet stay until it has.
        if self.state != State::TimeWait
            || self.send_buf.capacity() <= 1
            || self.recv_buf.readable() > 0
        {
            return None;
        }
        let mut send = std::mem::replace(&mut self.send_buf, Ring::new(1));
        send.clear();
        let mut recv = std::mem::replace(&mut self.recv_buf, RecvBuffer::new(1));
        recv.clear();
        Some(Buffers { send, recv })
    }

    /// Give the buffers back for reuse (emptied).
    pub(crate) fn into_buffers(self) -> Buffers {
        let mut send = self.send_buf;
        send.clear();
        let mut recv = self.recv_buf;
        recv.clear();
        Buffers { send, recv }
    }

    /// The TCB can be freed: CLOSED with nothing left to send.
    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Closed && !self.rst_pending
    }

    /// The earliest timer.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let mut d: Option<Instant> = None;
        let mut put = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        put(self.rto_at);
        put(self.probe.deadline());
        put(self.delack_at);
        put(self.persist_at);
        put(self.time_wait_at);
        put(self.handshake_deadline());
        put(self.idle_deadline());
        put(self.keepalive_deadline());
        d
    }

    fn handshake_deadline(&self) -> Option<Instant> {
        matches!(self.state, State::SynSent | State::SynReceived)
            .then(|| self.created + self.hs_timeout)
    }
    fn idle_deadline(&self) -> Option<Instant> {
        if !self.state.synchronized() || self.state == State::TimeWait {
            return None;
        }
        let idle = self.idle_timeout.map(|t| self.last_rx + t);
        let fw2 = (self.state == State::FinWait2)
            .then_some(self.fin_wait_2_timeout)
            .flatten()
            .map(|t| self.last_rx + t);
        match (idle, fw2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn keepalive_deadline(&self) -> Option<Instant> {
        if !matches!(
            self.state,
            State::Established | State::CloseWait | State::FinWait2
        ) {
            return None;
        }
        self.keepalive
            .map(|k| self.last_rx + k.idle + k.interval * self.keepalive_probes)
    }
}

// ---- input ----
impl Connection {
    fn ts_now(&self, now: Instant) -> u32 {
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    /// Linux's `tcp_disordered_ack()`: `seg`, whose TSval is `behind` ticks older than
    /// TS.Recent, is a pure duplicate ACK that updates nothing, reordered within one RTO
    /// (counted in milliseconds, Linux's assumption about the peer's tick).
    fn disordered_ack(&self, seg: &tcp::Repr<'_>, behind: u32) -> bool {
        let seq = SeqNumber(seg.seq_number);
        let f = seg.flags;
        let wnd = usize::from(seg.window_len) << self.snd_wscale;
        // 1. A pure ACK with the right sequence number.
        f.ack() && !f.syn() && !f.fin() && seg.payload.is_empty() && seq == self.rcv_nxt
            // 2. ... and a duplicate ACK.
            && SeqNumber(seg.ack_number) == self.snd_una
            // 3. ... that does not update the window (RFC 9293 3.10.7.4 SND.WL1 rule).
            && !(self.snd_wl1 < seq || (self.snd_wl1 == seq && wnd > self.snd_wnd))
            // 4. ... and sits in the replay window.
            && u128::from(behind) <= self.rtt.rto().as_millis()
    }

    fn challenge_ack(&mut self, ctx: &mut Ctx<'_>) {
        if ctx.challenge.allow(ctx.now) {
            self.ack_now = true;
            ctx.stats.challenge_acks += 1;
        }
    }

    fn clear_timers(&mut self) {
        self.rto_at = None;
        self.probe.clear();
        self.delack_at = None;
        self.persist_at = None;
        self.time_wait_at = None;
    }

    /// The connection ends: CLOSED, with `event` for the application (none for a quiet close).
    fn terminate(&mut self, ctx: &mut Ctx<'_>, event: Option<Event>, send_rst: bool) {
        if let Some(e) = event {
            ctx.event(e);
        }
        self.state = State::Closed;
        self.rst_pending = send_rst;
        self.clear_timers();
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = State::TimeWait;
        self.clear_timers();
        self.time_wait_at = Some(now + self.time_wait);
    }

    /// First sequence number of data (after our SYN).
    fn data_start(&self) -> SeqNumber {
        if matches!(self.state, State::SynSent | State::SynReceived) {
            self.iss + 1
        } else {
            self.snd_una
        }
    }
    /// Sequence number just past the buffered data (where our FIN goes).
    fn data_end(&self) -> SeqNumber {
        self.data_start() + self.send_buf.len()
    }

    /// Process one segment addressed to this connection (checksums already verified).
    pub(crate) fn handle_segment(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) {
        let now = ctx.now;
        let seq = SeqNumber(seg.seq_number);
        let f = seg.flags;
        // Which rules apply: RFC 9293 3.10.7.1 (CLOSED), 3.10.7.3 (SYN-SENT), 3.10.7.4 (others).
        match (self.state, f.syn(), f.ack(), f.rst()) {
            // "If the state is CLOSED ... all data in the incoming segment is discarded"
            // (the endpoint answers unknown flows; a TCB only lingers here to send its RST).
            (State::Closed | State::Listen, ..) => {
                ctx.stats.drop(DropReason::NoListener);
                return;
            }
            // 3.10.7.3 "If the state is SYN-SENT then ..."
            (State::SynSent, ..) => {
                self.handle_syn_sent(ctx, seg);
                return;
            }
            // SYN-RECEIVED and the peer repeats its SYN (same ISN): our SYN-ACK was lost.
            (State::SynReceived, true, false, false) if seq == self.irs => {
                self.snd_nxt = self.iss;
                return;
            }
            // SYN-RECEIVED and a SYN with another ISN: not ours; drop.
            (State::SynReceived, true, false, false) => {
                ctx.stats.drop(DropReason::InvalidSequence);
                return;
            }
            // Synchronized states: the acceptability test and the steps below.
            _ => {}
        }
        // RFC 7323 5.3 R1 (PAWS): "If there is a Timestamps option in the arriving segment,
        // SEG.TSval < TS.Recent, TS.Recent is valid (see later discussion), and if the RST bit
        // is not set, then treat the arriving segment as not acceptable: Send an acknowledgment
        // in reply as specified in Section 3.10.7.4 of [RFC9293] and drop the segment."
        //
        // Read literally, R1 also discards segments that are merely reordered: once a
        // retransmission filling a hole (a newer TSval) moved TS.Recent, an original sent a
        // moment earlier and delayed on the path fails R1 although it is valid, and must be
        // sent again. Like Linux (`tcp_paws_discard()`), we are lenient in two ways:
        // - `tcp_paws_check(.., TCP_PAWS_WINDOW)`: a TSval at most `PAWS_WINDOW` tick older than
        //   TS.Recent passes. PAWS exists for old duplicates from 2^31 bytes of sequence space
        //   ago (RFC 7323 5.1); no path we serve wraps that within one tick of the peer's clock
        //   (RFC 7323 5.4: 1 ms to 1 s), so those are still rejected.
        // - `tcp_disordered_ack()`: a pure duplicate ACK (SEG.SEQ = RCV.NXT, SEG.ACK = SND.UNA,
        //   no window update) less than one RTO old in TSval ticks (Linux assumes 1 ms ticks)
        //   is only a reordered ACK. It carries nothing to discard, and dropping it would only
        //   hide the duplicate ACKs and SACK blocks that loss recovery needs.
        // And beyond Linux, because a reordering path may hold a segment back for more than one
        // tick of the peer's clock (the impairment bridge's 1 ms holds often take 2 ms):
        // - `PawsAnchors::covers`: a TSval no older than one recorded less than 2^29 bytes of
        //   sequence space ago was sent after that point, so its sequence number cannot be from
        //   an earlier wrap (it lies within 2^29 + one window, < 2^31, of RCV.NXT): the
        //   acceptability test alone judges it. This is exactly the hazard of RFC 7323 5.1
        //   ("old duplicate segments ... from an earlier incarnation of the sequence space"),
        //   measured in bytes instead of ticks, so it holds whatever the peer's clock rate.
        if self.ts_ok
            && !f.rst()
            && let Some(ts) = seg.timestamp
            && self.ts_recent.wrapping_sub(ts.tsval) as i32 > PAWS_WINDOW
            && now - self.ts_recent_time < PAWS_IDLE
            && !self.paws_anchors.covers(ts.tsval, now)
            && !self.disordered_ack(seg, self.ts_recent.wrapping_sub(ts.tsval))
        {
            ctx.stats.drop(DropReason::Paws);
            self.ack_now = true;
            return;
        }
        // RFC 9293 3.10.7.4 first: the acceptability test.
        let rcv_wnd = self.rcv_adv - self.rcv_nxt;
        let seg_len = seg.segment_len();
        let in_wnd = |s: SeqNumber| s.in_range(self.rcv_nxt, self.rcv_nxt + rcv_wnd);
        let acceptable = match (seg_len, rcv_wnd) {
            // "0 0: SEG.SEQ = RCV.NXT"
            (0, 0) => seq == self.rcv_nxt,
            // "0 >0: RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND"
            (0, _) => in_wnd(seq),
            // ">0 0: not acceptable"
            (_, 0) => false,
            // ">0 >0: either end of the segment inside the window"
            (n, _) => in_wnd(seq) || in_wnd(seq + (n - 1)),
        };
        // With a zero window, "special allowance should be made to accept valid ACKs". Like
        // Linux's tcp_sequence(), also accept a segment that ends at or after the RCV.NXT we
        // last acknowledged and starts at or before the right edge: a pure ACK numbered at the
        // right edge (the sender filled our window) or a retransmission ending at RCV.NXT still
        // carries a valid ACK. Without this, two peers whose ACKs were lost can both keep
        // discarding each other's ACKs (seen in the simulator). Text outside the window is
        // trimmed by the reassembly step.
        let lenient = !acceptable
            && seq + seg_len >= self.last_ack_sent.min(self.rcv_nxt)
            && seq <= self.rcv_nxt + rcv_wnd
            && (seg_len == 0 || seq + seg_len >= self.rcv_nxt);
        let zero_window_ack = !acceptable && ((rcv_wnd == 0 && seq == self.rcv_nxt) || lenient);
        if zero_window_ack && !f.rst() && seg_len > 0 && seq + seg_len <= self.rcv_nxt {
            // An old duplicate (a retransmission of what we have): acknowledge at once.
            self.ack_now = true;
            if self.state == State::TimeWait && f.fin() {
                // A retransmitted FIN in TIME-WAIT: acknowledge it and restart the 2 MSL timeout.
                self.time_wait_at = Some(now + self.time_wait);
            }
        }
        if !acceptable && !zero_window_ack {
            if !f.rst() {
                // "If an incoming segment is not acceptable, an acknowledgment should be sent"
                self.ack_now = true;
                if self.state == State::TimeWait && f.fin() {
                    // A retransmitted FIN in TIME-WAIT: acknowledge it and restart the 2 MSL timeout.
                    self.time_wait_at = Some(now + self.time_wait);
                }
            }
            ctx.stats.drop(DropReason::InvalidSequence);
            return;
        }
        // RFC 9293 3.10.7.4 second to fifth steps, hardened by RFC 5961.
        match (self.state, f.rst(), f.syn(), f.ack()) {
            // "CLOSING, LAST-ACK, TIME-WAIT: If the RST bit is set, then enter the CLOSED state,
            // delete the TCB, and return" (RFC 5961 3.2: only a RST at exactly RCV.NXT).
            (State::Closing | State::LastAck | State::TimeWait, true, _, _)
                if seq == self.rcv_nxt =>
            {
                ctx.stats.rsts_received += 1;
                self.terminate(ctx, None, false);
                return;
            }
            // "If the RST bit is set ... users should also receive an unsolicited general
            // 'connection reset' signal" (RFC 5961 3.2: exactly RCV.NXT).
            (_, true, _, _) if seq == self.rcv_nxt => {
                ctx.stats.rsts_received += 1;
                self.terminate(ctx, Some(Event::Reset), false);
                return;
            }
            // RFC 5961 3.2: "If the RST bit is set and the sequence number does not exactly match
            // ... but is within the acceptable window, TCP MUST send an ACK (challenge ACK)".
            (_, true, _, _) => {
                ctx.stats.drop(DropReason::RstOutOfWindow);
                self.challenge_ack(ctx);
                return;
            }
            // RFC 5961 4.2: "If the SYN bit is set, irrespective of the sequence number, TCP MUST
            // send an ACK (also referred to as challenge ACK) to the remote peer".
            (_, false, true, _) => {
                ctx.stats.drop(DropReason::SynInWindow);
                self.challenge_ack(ctx);
                return;
            }
            // "fifth, check the ACK field: if the ACK bit is off, drop the segment and return".
            (_, false, false, false) => {
                ctx.stats.drop(DropReason::NoAck);
                return;
            }
            // "if the ACK bit is on": the ACK, text and FIN steps follow.
            (_, false, false, true) => {}
        }
        self.last_rx = now;
        self.keepalive_probes = 0;
        // RFC 7323 4.3 R3: update TS.Recent from a segment covering Last.ACK.sent.
        if self.ts_ok
            && let Some(ts) = seg.timestamp
            && (ts.tsval.wrapping_sub(self.ts_recent) as i32) >= 0
            && seq <= self.last_ack_sent
        {
            self.ts_recent = ts.tsval;
            self.ts_recent_time = now;
            self.paws_anchors.on_ts_recent(ts.tsval, self.rcv_nxt, now);
        }
        if !self.process_ack(ctx, seg) {
            return;
        }
        if self.state == State::Closed {
            return;
        }
        // Seventh: segment text.
        if !seg.payload.is_empty() || f.fin() {
            if self.state.can_receive() && !self.fin_received {
                self.process_text(ctx, seg);
            } else if !seg.payload.is_empty() {
                // "This should not occur since a FIN has been received from the remote side. Ignore."
                ctx.stats.drop(DropReason::AfterFin);
            }
        }
        // Eighth: FIN, once every byte before it arrived.
        if let Some(fs) = self.remote_fin
            && !self.fin_received
            && fs == self.rcv_nxt
        {
            self.rcv_nxt += 1;
            self.fin_received = true;
            self.ack_now = true;
            ctx.event(Event::PeerClosed);
            match self.state {
                // "SYN-RECEIVED / ESTABLISHED STATE: Enter the CLOSE-WAIT state."
                State::SynReceived | State::Established => self.state = State::CloseWait,
                // "FIN-WAIT-1: If our FIN has been ACKed, enter TIME-WAIT, else CLOSING."
                State::FinWait1 if self.fin_acked => self.enter_time_wait(now),
                State::FinWait1 => self.state = State::Closing,
                // "FIN-WAIT-2: Enter the TIME-WAIT state."
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }
        self.update_persist(now);
    }

    /// RFC 9293 3.10.7.3: SYN-SENT.
    fn handle_syn_sent(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) {
        let now = ctx.now;
        let f = seg.flags;
        let seq = SeqNumber(seg.seq_number);
        let ack = SeqNumber(seg.ack_number);
        // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset <SEQ=SEG.ACK><CTL=RST> (unless RST)"
        if f.ack() && (ack <= self.iss || ack > self.snd_max) {
            if !f.rst() {
                ctx.rsts.push_back((self.tuple, ack.0, None));
            }
            ctx.stats.drop(DropReason::BadAck);
            return;
        }
        if f.rst() {
            if f.ack() {
                // "If the ACK was acceptable, then signal 'connection reset', ... enter CLOSED"
                ctx.stats.rsts_received += 1;
                self.terminate(ctx, Some(Event::Reset), false);
            } else {
                // "Otherwise (no ACK), drop the segment and return."
                ctx.stats.drop(DropReason::BadFlags);
            }
            return;
        }
        if !f.syn() {
            // "If neither of the SYN or RST bits is set, then drop the segment and return."
            ctx.stats.drop(DropReason::BadFlags);
            return;
        }
        self.irs = seq;
        self.rcv_nxt = seq + 1;
        self.last_rx = now;
        self.negotiate_active(PeerSyn::from_repr(seg));
        // The SYN's window is never scaled (RFC 7323 2.2).
        self.snd_wnd = usize::from(seg.window_len);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = seq;
        self.snd_wl2 = ack;
        if f.ack() {
            // "If SND.UNA > ISS (our SYN has been ACKed), change the state to ESTABLISHED"
            self.snd_una = ack;
            self.snd_nxt = self.snd_nxt.max(ack);
            if let Some((s, t)) = self.rtt_probe.take()
                && ack > s
            {
                self.rtt.sample(now - t);
            }
            self.retransmits = 0;
            self.rto_at = None;
            self.state = State::Established;
            self.ack_now = true;
            self.rcv_adv = self.rcv_nxt;
            ctx.event(Event::Established);
            if self.fin_queued {
                self.state = State::FinWait1;
            }
        } else {
            // Simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment".
            self.state = State::SynReceived;
            self.snd_nxt = self.iss;
            self.rto_at = None;
            self.rcv_adv = self.rcv_nxt + self.syn_window();
            self.last_ack_sent = self.rcv_nxt;
        }
    }

    fn negotiate_active(&mut self, peer: PeerSyn) {
        let mtu = self.mtu;
        let peer_mss = usize::from(peer.mss.unwrap_or(536)).max(64);
        self.mss_budget = (peer_mss + 20)
            .min(mtu.saturating_sub(20))
            .saturating_sub(20)
            .max(64);
        match (self.offered_wscale, peer.window_scale) {
            (true, Some(ws)) => self.snd_wscale = ws.min(14),
            _ => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
                self.offered_wscale = false;
            }
        }
        self.sack_ok = self.sack_ok && peer.sack_permitted;
        match peer.timestamp {
            Some(ts) if self.ts_ok => {
                self.ts_recent = ts.tsval;
                self.ts_recent_time = self.last_rx;
                self.paws_anchors = PawsAnchors::new(ts.tsval, self.rcv_nxt, self.last_rx);
            }
            _ => self.ts_ok = false,
        }
        let smss = self.data_mss();
        self.cc.set_mss(smss);
    }

    /// Fifth step: the ACK field. Returns false when the segment is to be dropped.
    fn process_ack(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) -> bool {
        let now = ctx.now;
        let ack = SeqNumber(seg.ack_number);
        let seq = SeqNumber(seg.seq_number);
        if self.state == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state"
            if !(self.snd_una < ack && ack <= self.snd_max) {
                // "If the segment acknowledgment is not acceptable, form a reset <SEQ=SEG.ACK><CTL=RST>"
                ctx.rsts.push_back((self.tuple, ack.0, None));
                ctx.stats.drop(DropReason::BadAck);
                return false;
            }
            self.state = State::Established;
            self.snd_wl1 = seq - 1;
            ctx.event(Event::Established);
            if self.fin_queued {
                self.state = State::FinWait1;
            }
        }
        // RFC 5961 5.2: acceptable iff SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT.
        if ack > self.snd_max {
            // "If the ACK acks something not yet sent, send an ACK, drop the segment"
            self.ack_now = true;
            ctx.stats.drop(DropReason::BadAck);
            return false;
        }
        if ack < self.snd_una - self.max_snd_wnd.max(65_535) {
            ctx.stats.drop(DropReason::BadAck);
            self.challenge_ack(ctx);
            return false;
        }
        let mut sack_news = false;
        if self.sack_ok {
            for b in seg.sack_blocks.iter().flatten() {
                ctx.stats.sack_blocks_received += 1;
                sack_news |= self.scoreboard.on_sack_block(
                    ack.max(self.snd_una),
                    self.snd_max,
                    SeqNumber(b.left),
                    SeqNumber(b.right),
                );
            }
        }
        let wnd = usize::from(seg.window_len) << self.snd_wscale;
        if ack > self.snd_una {
            self.on_new_ack(ctx, seg, ack);
        } else if ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.fin()
            && (wnd == self.snd_wnd || sack_news)
            && self.snd_max > self.snd_una
            && wnd > 0
        {
            // RFC 5681 section 2 "duplicate acknowledgment" (and RFC 6675: SACK information);
            // not while the window is zero: those ACKs answer probes, not losses.
            self.on_dup_ack(ctx);
        }
        // "If SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK), set SND.WND <- SEG.WND"
        if self.snd_una <= ack
            && (self.snd_wl1 < seq || (self.snd_wl1 == seq && self.snd_wl2 <= ack))
        {
            self.snd_wnd = wnd;
            self.snd_wl1 = seq;
            self.snd_wl2 = ack;
            self.max_snd_wnd = self.max_snd_wnd.max(wnd);
            if wnd > 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
        }
        if self.snd_wnd == 0 {
            // RFC 9293 3.8.6.1: do not time out while the window is zero, as long as the
            // receiver keeps acknowledging.
            self.retransmits = 0;
        }
        if self.fin_acked {
            match self.state {
                // "FIN-WAIT-1: if the FIN segment is now acknowledged, enter FIN-WAIT-2"
                State::FinWait1 => self.state = State::FinWait2,
                // "CLOSING: if the ACK acknowledges our FIN, enter the TIME-WAIT state"
                State::Closing => self.enter_time_wait(now),
                // "LAST-ACK: if our FIN is now acknowledged, delete the TCB, enter CLOSED"
                State::LastAck => {
                    self.terminate(ctx, None, false);
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    fn on_new_ack(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>, ack: SeqNumber) {
        let now = ctx.now;
        let mut acked = ack - self.snd_una;
        if self.snd_una == self.iss {
            // Our SYN.
            acked = acked.saturating_sub(1);
        }
        let buffered = self.send_buf.len();
        if acked > buffered {
            if self.fin_queued {
                self.fin_acked = true;
            }
            acked = buffered;
        }
        self.send_buf.consume(acked);
        self.snd_una = ack;
        self.snd_nxt = self.snd_nxt.max(ack);
        self.scoreboard.on_ack(ack);
        // RTT (RFC 7323 4.1 timestamps, else one timed segment under Karn's rule).
        let mut sampled = false;
        if self.ts_ok
            && let Some(ts) = seg.timestamp
        {
            let d = self.ts_now(now).wrapping_sub(ts.tsecr);
            if ts.tsecr != 0 && (d as i32) >= 0 && d < 120_000 {
                self.rtt.sample(Duration::from_millis(u64::from(d)));
                sampled = true;
            }
        }
        if let Some((s, t)) = self.rtt_probe
            && ack > s
        {
            if !sampled {
                self.rtt.sample(now - t);
            }
            self.rtt_probe = None;
        }
        self.retransmits = 0;
        // RFC 6298 5.2 / 5.3: stop the timer when all is acked, else restart it.
        self.rto_at = if self.snd_una == self.snd_max {
            None
        } else {
            Some(now + self.rtt.rto())
        };
        let mss = self.data_mss();
        let outstanding = self.snd_max - self.snd_una;
        let probing = self.sack_ok && self.loss_probes;
        self.probe.on_progress(
            now,
            probing && outstanding > 0,
            &self.rtt,
            outstanding <= mss,
        );
        if self.in_recovery {
            if ack >= self.recover {
                // RFC 6582 3.2 step 3: full acknowledgment, leave fast recovery.
                self.in_recovery = false;
                self.inflation = 0;
                let flight = self.snd_max - self.snd_una;
                self.cc.on_recovery_end(now, flight);
            } else {
                // RFC 6582 3.2 step 4: partial acknowledgment: retransmit the first unacked
                // segment, deflate by the amount acked and add back one SMSS.
                if !self.sack_ok {
                    self.rexmit_una = true;
                    self.inflation =
                        self.inflation.saturating_sub(acked) + if acked >= mss { mss } else { 0 };
                } else if !self.scoreboard.is_sacked(self.snd_una) && self.high_rxt <= self.snd_una
                {
                    self.rexmit_una = true;
                }
            }
        } else {
            self.inflation = 0;
            self.cc.on_ack(now, acked, &self.rtt);
        }
        self.dupacks = 0;
        if acked > 0 && self.want_writable && self.send_buf.free() > 0 {
            self.want_writable = false;
            ctx.event(Event::Writable);
        }
    }

    fn on_dup_ack(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        ctx.stats.dup_acks += 1;
        self.dupacks = self.dupacks.saturating_add(1);
        let mss = self.data_mss();
        if self.in_recovery {
            if !self.sack_ok {
                // RFC 5681 3.2 step 4: inflate by one SMSS per additional duplicate ACK.
                self.inflation += mss;
            }
            return;
        }
        // RFC 3042 Limited Transmit: the first two duplicate ACKs each let one new segment go,
        // beyond cwnd by at most 2 * SMSS.
        self.inflation = (self.dupacks.min(2) as usize) * mss;
        let lost = self.sack_ok && self.scoreboard.is_lost(self.snd_una, mss);
        // RFC 6582 3.2 step 2: only if the ACK covers more than `recover` (no second reduction
        // for losses of one window); RFC 6675 5 (IsLost(HighACK + 1)) with SACK.
        if (self.dupacks >= 3 || lost) && self.snd_una >= self.recover {
            self.enter_recovery(now);
        }
    }

    /// RFC 6582 3.2 step 2 / RFC 6675 5 step 4: fast retransmit and enter loss recovery.
    fn enter_recovery(&mut self, now: Instant) {
        let mss = self.data_mss();
        self.in_recovery = true;
        self.recover = self.snd_max;
        let flight = self.snd_max - self.snd_una;
        self.cc.on_loss(now, flight);
        self.high_rxt = self.snd_una;
        self.rexmit_una = true;
        self.rtt_probe = None;
        self.inflation = if self.sack_ok { 0 } else { 3 * mss };
    }

    /// The loss-probe timer expired without cumulative progress (see `rack`).
    fn on_probe_timeout(&mut self, now: Instant) {
        let mss = self.data_mss();
        let outstanding = self.snd_max - self.snd_una;
        let sending = self.state.may_send();
        // Not while a zero window is probed or an RTO's go-back is under way.
        if !sending
            || !self.sack_ok
            || outstanding == 0
            || self.snd_wnd == 0
            || self.snd_nxt < self.snd_max
        {
            self.probe.clear();
            return;
        }
        let hole_known = self.in_recovery || !self.scoreboard.is_empty();
        match self
            .probe
            .on_expiry(now, hole_known, &self.rtt, outstanding <= mss)
        {
            // RFC 8985 6.2: the first hole was sent before data the peer has (or, in
            // recovery, its retransmission had its RACK.rtt and more): presumed lost.
            Probe::FirstHole => {
                if !self.in_recovery {
                    self.enter_recovery(now);
                }
                self.rexmit_una = true;
                self.rexmit_rack = true;
            }
            // RFC 8985 7.3: no SACK information; probe with the last segment.
            Probe::Tail => self.tlp_pending = true,
        }
    }

    fn process_text(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) {
        let now = ctx.now;
        let seq = SeqNumber(seg.seq_number);
        let had_ooo = self.recv_buf.has_out_of_order();
        let was_readable = self.recv_buf.readable() > 0;
        let placed = self.recv_buf.place(self.rcv_nxt, seq, seg.payload);
        if placed.refused {
            ctx.stats.drop(DropReason::ReassemblyFull);
            self.ack_now = true;
            return;
        }
        ctx.stats.bytes_in += placed.advanced as u64;
        self.rcv_nxt += placed.advanced;
        // Edge-triggered: only when bytes appear in an empty receive buffer.
        if placed.advanced > 0 && !was_readable {
            ctx.event(Event::Readable);
        }
        if seg.flags.fin() && placed.trimmed == 0 {
            let fs = seq + seg.payload.len();
            if fs >= self.rcv_nxt {
                self.remote_fin = Some(fs);
            }
        }
        // RFC 5681 4.2: ACK at once for out-of-order data and for data filling a hole;
        // otherwise at least every second full-sized segment, else within the delayed-ACK timer.
        if placed.out_of_order || had_ooo || placed.trimmed > 0 || seg.flags.fin() {
            self.ack_now = true;
        } else if !seg.payload.is_empty() {
            if self.rcv_nxt - self.last_ack_sent >= 2 * self.our_mss.min(self.mss_budget.max(536)) {
                self.ack_now = true;
            } else if self.delack_at.is_none() {
                self.delack_at = Some(now + self.delayed_ack);
            }
        }
    }

    fn update_persist(&mut self, now: Instant) {
        let blocked = self.state.synchronized()
            && self.snd_wnd == 0
            && self.snd_max == self.snd_una
            && self.data_end() > self.snd_nxt;
        if blocked {
            if self.persist_at.is_none() {
                self.persist_at = Some(now + self.persist_interval());
            }
        } else {
            self.persist_at = None;
            self.persist_backoff = 0;
        }
    }

    fn persist_interval(&self) -> Duration {
        let factor = 1u32 << self.persist_backoff.min(10);
        (self.rtt.rto() * factor).min(Duration::from_secs(60))
    }

    /// Run the timers that are due.
    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.time_wait_at) {
            // TIME-WAIT "when the timeout expires, delete the TCB, enter CLOSED".
            self.terminate(ctx, None, false);
            return;
        }
        if due(self.handshake_deadline()) {
            ctx.stats.timeouts += 1;
            self.terminate(ctx, Some(Event::TimedOut), false);
            return;
        }
        if due(self.idle_deadline()) {
            ctx.stats.timeouts += 1;
            self.terminate(ctx, Some(Event::TimedOut), true);
            return;
        }
        if due(self.keepalive_deadline()) {
            let probes = self.keepalive.map_or(0, |k| k.probes);
            if self.keepalive_probes >= probes {
                ctx.stats.timeouts += 1;
                self.terminate(ctx, Some(Event::TimedOut), true);
                return;
            }
            self.keepalive_probes += 1;
            self.keepalive_pending = true;
        }
        if due(self.rto_at) {
            self.on_rto(ctx);
            if self.state == State::Closed {
                return;
            }
        } else if due(self.probe.deadline()) {
            self.on_probe_timeout(now);
        }
        if due(self.delack_at) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if due(self.persist_at) {
            self.probe_pending = true;
            self.persist_backoff = self.persist_backoff.saturating_add(1);
            self.persist_at = Some(now + self.persist_interval());
        }
    }

    /// RFC 6298 5.4-5.7 and RFC 5681 3.1 (loss window) on retransmission timeout.
    fn on_rto(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.retransmits += 1;
        if self.retransmits > self.max_retransmits {
            ctx.stats.timeouts += 1;
            let rst = self.state.synchronized();
            self.terminate(ctx, Some(Event::TimedOut), rst);
            return;
        }
        if self.state.synchronized() && self.snd_wnd == 0 {
            // Nothing fits in a zero window: probe it (RFC 9293 3.8.6.1) and resend from SND.UNA
            // once it opens. Flow control, not congestion: cwnd stays.
            self.rtt.on_timeout();
            self.probe_pending = true;
            self.snd_nxt = self.snd_una;
            self.rtt_probe = None;
            self.rto_at = Some(now + self.rtt.rto());
            return;
        }
        ctx.stats.retransmits_rto += 1;
        self.rtt.on_timeout();
        let flight = self.snd_max - self.snd_una;
        self.cc.on_rto(now, flight);
        // RFC 2018 8: forget SACK information after a timeout.
        self.scoreboard.clear();
        self.in_recovery = false;
        self.inflation = 0;
        self.dupacks = 0;
        self.rexmit_una = false;
        self.rexmit_rack = false;
        self.tlp_pending = false;
        self.probe.clear();
        self.recover = self.snd_max;
        self.high_rxt = self.snd_una;
        // Go back: resend from SND.UNA (the SYN in SYN-SENT / SYN-RECEIVED).
        self.snd_nxt = self.snd_una;
        self.rtt_probe = None;
        self.rto_at = Some(now + self.rtt.rto());
    }
}

// ---- output ----
impl Connection {
    /// Our window for the next segment, with receiver SWS avoidance (RFC 9293 3.8.6.2.2) and
    /// without shrinking an advertised window (RFC 9293 3.8.6). Updates `rcv_adv`.
    fn advertise(&mut self) -> u16 {
        let free = self.recv_buf.window();
        let mut right = self.rcv_nxt + free;
        let threshold = (self.recv_buf.capacity() / 2).min(self.our_mss).max(1);
        let old = self.rcv_adv.max(self.rcv_nxt);
        if right > old && right - old < threshold {
            right = old;
        }
        if right < old {
            right = old;
        }
        let wnd = right - self.rcv_nxt;
        let field = (wnd >> self.rcv_wscale).min(65_535);
        self.rcv_adv = self.rcv_nxt + (field << self.rcv_wscale);
        field as u16
    }

    fn window_update_due(&self) -> bool {
        if !self.state.can_receive() || self.fin_received {
            return false;
        }
        // The window field can carry at most 65535 << RCV.WIND.SHIFT: a buffer larger than that
        // (a peer that did not offer window scaling) must not make an update look due forever.
        let max_wnd = 65_535usize << self.rcv_wscale;
        let right = self.rcv_nxt + self.recv_buf.window().min(max_wnd);
        let threshold = (self.recv_buf.capacity() / 2).min(2 * self.our_mss).max(1);
        right > self.rcv_adv && right - self.rcv_adv >= threshold
    }

    fn base_repr(&self) -> tcp::Repr<'static> {
        tcp::Repr {
            src_port: self.tuple.local.port(),
            dst_port: self.tuple.remote.port(),
            seq_number: 0,
            ack_number: 0,
            flags: Flags::empty(),
            window_len: 0,
            ..Default::default()
        }
    }

    /// Build and write one segment. `data`: bytes of the send buffer from `seq` (at most
    /// `len`), trimmed to what fits. Returns (packet length, payload length).
    fn emit(
        &mut self,
        ctx: &mut Ctx<'_>,
        buf: &mut [u8],
        seq: SeqNumber,
        flags: Flags,
        data_len: usize,
    ) -> Option<(usize, usize)> {
        let now = ctx.now;
        let mut repr = self.base_repr();
        repr.seq_number = seq.0;
        repr.flags = flags;
        let syn = flags.syn();
        if flags.ack() {
            repr.ack_number = self.rcv_nxt.0;
        }
        if syn {
            repr.window_len = self.syn_window() as u16;
            if flags.ack() {
                self.rcv_adv = self.rcv_nxt + self.syn_window();
            }
            repr.max_seg_size = Some(self.our_mss.min(65_535) as u16);
            if self.offered_wscale {
                repr.window_scale = Some(self.rcv_wscale);
            }
            repr.sack_permitted = self.sack_ok;
            if self.ts_ok {
                repr.timestamp = Some(Timestamp {
                    tsval: self.ts_now(now),
                    tsecr: if flags.ack() { self.ts_recent } else { 0 },
                });
            }
        } else {
            if flags.ack() {
                repr.window_len = self.advertise();
            }
            if self.ts_ok {
                repr.timestamp = Some(Timestamp {
                    tsval: self.ts_now(now),
                    tsecr: self.ts_recent,
                });
            }
            if self.sack_ok && flags.ack() && self.recv_buf.has_out_of_order() {
                let mut ranges: [Option<Range>; 4] = [None; 4];
                let n = self.recv_buf.sack_ranges(&mut ranges);
                for (slot, r) in repr.sack_blocks.iter_mut().zip(ranges.iter().take(n)) {
                    *slot = r.map(|r| SackBlock {
                        left: r.left.0,
                        right: r.right.0,
                    });
                }
            }
        }
        let hl = repr.header_len();
        let room = buf.len().checked_sub(ipv4::HEADER_LEN + hl)?;
        let opt_len = hl - tcp::HEADER_LEN;
        let mut len = data_len
            .min(self.mss_budget.saturating_sub(opt_len))
            .min(room);
        let off = ipv4::HEADER_LEN + hl;
        if len > 0 {
            let start = seq - self.data_start();
            len = self.send_buf.read_at(start, &mut buf[off..off + len]);
            if seq + len == self.data_end() {
                repr.flags |= Flags::PSH;
            }
        }
        // A FIN rides only on the segment that carries the last byte.
        if repr.flags.fin() && seq + len != self.data_end() {
            repr.flags.remove(Flags::FIN);
        }
        let ip = ipv4::Repr {
            src_addr: *self.tuple.local.ip(),
            dst_addr: *self.tuple.remote.ip(),
            protocol: ipv4::Protocol::Tcp,
            payload_len: hl + len,
            hop_limit: 64,
        };
        let n = emit_ipv4_tcp_in_place(buf, &ip, &repr, len).ok()?;
        ctx.stats.segments_out += 1;
        ctx.stats.bytes_out += len as u64;
        ctx.stats.sack_blocks_sent += repr.sack_capacity() as u64;
        if repr.flags.ack() {
            self.ack_now = false;
            self.delack_at = None;
            self.last_ack_sent = self.rcv_nxt;
        }
        Some((n, len + usize::from(repr.flags.fin()) + usize::from(syn)))
    }

    fn arm_rto(&mut self, now: Instant) {
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
    }

    /// Send a segment of data (and FIN) starting at `seq`; advances snd_nxt/snd_max when new.
    fn send_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        buf: &mut [u8],
        seq: SeqNumber,
        len: usize,
        fin: bool,
    ) -> Option<usize> {
        let mut flags = Flags::ACK;
        if fin {
            flags |= Flags::FIN;
        }
        let (n, seg_len) = self.emit(ctx, buf, seq, flags, len)?;
        let end = seq + seg_len;
        let new_data = end > self.snd_max;
        if seq == self.snd_nxt {
            self.snd_nxt = end;
        }
        if end > self.snd_max {
            // Karn: time only segments sent for the first time.
            if self.rtt_probe.is_none() && seq >= self.snd_max && self.retransmits == 0 {
                self.rtt_probe = Some((seq, ctx.now));
            }
            self.snd_max = end;
        }
        if seg_len > 0 {
            self.arm_rto(ctx.now);
            if self.sack_ok && self.loss_probes {
                let one = self.snd_max - self.snd_una <= self.data_mss();
                self.probe.on_send(ctx.now, new_data, &self.rtt, one);
            }
        }
        Some(n)
    }

    /// Write at most one segment into `buf` (IPv4 + TCP); see the module doc for the order.
    pub(crate) fn poll_transmit(&mut self, ctx: &mut Ctx<'_>, buf: &mut [u8]) -> Option<usize> {
        let now = ctx.now;
        if self.rst_pending {
            self.rst_pending = false;
            let (n, _) = self.emit(ctx, buf, self.snd_max, Flags::RST | Flags::ACK, 0)?;
            ctx.stats.rsts_sent += 1;
            return Some(n);
        }
        match self.state {
            State::Closed | State::Listen => return None,
            State::SynSent | State::SynReceived => {
                if self.snd_nxt == self.iss {
                    let flags = if self.state == State::SynSent {
                        Flags::SYN
                    } else {
                        Flags::SYN | Flags::ACK
                    };
                    let (n, _) = self.emit(ctx, buf, self.iss, flags, 0)?;
                    self.snd_nxt = self.iss + 1;
                    if self.snd_max < self.snd_nxt {
                        self.snd_max = self.snd_nxt;
                        if self.retransmits == 0 {
                            self.rtt_probe = Some((self.iss, now));
                        }
                    }
                    self.arm_rto(now);
                    return Some(n);
                }
                if self.state == State::SynReceived && self.ack_now {
                    return self
                        .emit(ctx, buf, self.snd_nxt, Flags::ACK, 0)
                        .map(|x| x.0);
                }
                return None;
            }
            _ => {}
        }
        let mss = self.data_mss();
        let data_end = self.data_end();
        let sending = self.state.may_send();
        let fin_state = self.fin_queued
            && !self.fin_acked
            && matches!(
                self.state,
                State::FinWait1 | State::Closing | State::LastAck
            );
        if sending && self.snd_max > self.snd_una {
            // Fast retransmit of the first unacknowledged segment (RFC 5681 3.2 step 2, RFC 6582).
            if self.rexmit_una {
                self.rexmit_una = false;
                let len = (self.snd_max - self.snd_una)
                    .min(mss)
                    .min(data_end - self.snd_una);
                let fin = fin_state && self.snd_una + len == data_end;
                if len > 0 || fin {
                    let n = self.send_data(ctx, buf, self.snd_una, len, fin)?;
                    self.high_rxt = self.high_rxt.max(self.snd_una + len.max(1));
                    if core::mem::take(&mut self.rexmit_rack) {
                        ctx.stats.retransmits_rack += 1;
                    } else {
                        ctx.stats.retransmits_fast += 1;
                    }
                    return Some(n);
                }
            }
            self.rexmit_rack = false;
            // RFC 8985 7.3 tail loss probe: the last segment sent (with our FIN if it was sent).
            if core::mem::take(&mut self.tlp_pending) {
                let end = self.snd_max.min(data_end);
                let len = (end - self.snd_una).min(mss);
                let fin = fin_state && self.snd_max > data_end;
                if len > 0 || fin {
                    let n = self.send_data(ctx, buf, end - len, len, fin)?;
                    ctx.stats.retransmits_tlp += 1;
                    return Some(n);
                }
            }
            // RFC 6675 5 (C): while pipe < cwnd, retransmit NextSeg.
            if self.in_recovery && self.sack_ok {
                let pipe = self
                    .scoreboard
                    .pipe(self.snd_una, self.snd_max, self.high_rxt, mss);
                if pipe < self.cc.cwnd()
                    && let Some((s, l)) = self.scoreboard.next_seg(self.snd_una, self.high_rxt, mss)
                {
                    let len = l.min(data_end - s);
                    let fin = fin_state && s + len == data_end && l > len;
                    if len > 0 || fin {
                        let n = self.send_data(ctx, buf, s, len, fin)?;
                        self.high_rxt = s + len.max(1);
                        ctx.stats.retransmits_sack += 1;
                        return Some(n);
                    }
                    self.high_rxt = s + l;
                }
            }
        }
        if sending {
            // New data (or data again after an RTO), then the FIN.
            let available = data_end - self.snd_nxt;
            let flight = if self.in_recovery && self.sack_ok {
                self.scoreboard
                    .pipe(self.snd_una, self.snd_max, self.high_rxt, mss)
            } else {
                self.snd_nxt - self.snd_una
            };
            let cwnd = self.cc.cwnd() + self.inflation;
            let cwnd_room = cwnd.saturating_sub(flight);
            let wnd_room = (self.snd_una + self.snd_wnd) - self.snd_nxt;
            let len = available.min(mss).min(cwnd_room).min(wnd_room);
            if len > 0 {
                // Sender SWS avoidance (RFC 9293 3.8.6.2.1) without Nagle: a full segment, all
                // that is queued, half the largest window, or nothing outstanding.
                let ok = len == mss
                    || len == available
                    || len >= self.max_snd_wnd / 2
                    || self.snd_nxt == self.snd_una;
                if ok {
                    let fin = fin_state && self.snd_nxt + len == data_end;
                    let seq = self.snd_nxt;
                    return self.send_data(ctx, buf, seq, len, fin);
                }
            } else if available == 0 && fin_state && self.snd_nxt == data_end {
                let seq = self.snd_nxt;
                return self.send_data(ctx, buf, seq, 0, true);
            }
        }
        // Zero-window probe and keepalive: an out-of-window ACK <SEQ=SND.UNA-1> elicits an ACK.
        if self.probe_pending || self.keepalive_pending {
            if self.probe_pending {
                ctx.stats.zero_window_probes += 1;
            } else {
                ctx.stats.keepalives_sent += 1;
            }
            self.probe_pending = false;
            self.keepalive_pending = false;
            let seq = self.snd_una - 1;
            return self.emit(ctx, buf, seq, Flags::ACK, 0).map(|x| x.0);
        }
        if self.ack_now || self.window_update_due() {
            // SND.MAX, not SND.NXT: after an RTO SND.NXT goes back, and an ACK numbered below
            // the peer's RCV.NXT would fail its acceptability test and be ignored.
            let seq = self.snd_max;
            let r = self.emit(ctx, buf, seq, Flags::ACK, 0).map(|x| x.0);
            self.update_persist(now);
            return r;
        }
        self.update_persist(now);
        None
    }
}

// ---- application side ----
impl Connection {
    pub(crate) fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        let open = match self.state {
            State::SynSent | State::SynReceived | State::Established | State::CloseWait => {
                !self.fin_queued
            }
            _ => false,
        };
        if !open {
            return Err(StreamError::Closed);
        }
        let n = self.send_buf.push(data);
        if n < data.len() {
            self.want_writable = true;
        }
        Ok(n)
    }

    pub(crate) fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let n = self.recv_buf.read(buf);
        if n == 0 && !buf.is_empty() && self.fin_received {
            return Err(StreamError::Finished);
        }
        if n > 0 && self.window_update_due() {
            self.ack_now = true;
        }
        Ok(n)
    }

    /// Bytes ready for `recv`.
    #[must_use]
    pub fn readable(&self) -> usize {
        self.recv_buf.readable()
    }

    /// RFC 9293 3.10.4 CLOSE.
    pub(crate) fn close(&mut self) {
        match self.state {
            // "SYN-SENT: delete the TCB"
            State::SynSent => self.state = State::Closed,
            // "SYN-RECEIVED: ... queue for processing after entering ESTABLISHED"
            State::SynReceived => self.fin_queued = true,
            // "ESTABLISHED: queue this until all preceding SENDs have been segmentized, then form
            // a FIN segment and send it. Enter FIN-WAIT-1."
            State::Established => {
                self.fin_queued = true;
                self.state = State::FinWait1;
            }
            // "CLOSE-WAIT: queue this request until all preceding SENDs ... enter LAST-ACK"
            State::CloseWait => {
                self.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// RFC 9293 3.10.5 ABORT: RST in synchronized states, then CLOSED.
    pub(crate) fn abort(&mut self) {
        let rst = !matches!(
            self.state,
            State::SynSent | State::Closed | State::Listen | State::TimeWait
        );
        self.state = State::Closed;
        self.rst_pending = rst;
        self.clear_timers();
    }
}
