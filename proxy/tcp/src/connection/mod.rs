//! One TCB: the RFC 9293 state machine of a single connection.
//!
//! Incoming segments go through `handle_segment` in the order of RFC 9293 3.10.7.4: PAWS
//! (RFC 7323 5.3), the acceptability test, RST (RFC 5961 3.2), SYN (RFC 5961 4.2), ACK (with
//! the RFC 5961 5.2 range check), text, FIN. Outgoing segments come from `poll_transmit`, one at
//! a time: RST, SYN/SYN-ACK, loss-recovery retransmissions (RFC 5681 / 6582 / 6675, and the
//! RFC 8985 loss probes of `rack`), new data and FIN (congestion and send windows, sender SWS
//! avoidance, no Nagle), probes, then ACKs. Timers (retransmission, loss probe, delayed ACK,
//! persist, keepalive, idle, handshake, TIME-WAIT) fold into `next_deadline`.
//!
//! The TCB is split by concern, one struct per RFC's share of it, each in its own file with
//! the methods that touch only its fields; what crosses concerns is a `Connection` method in
//! the file of the concern it serves:
//! - `send`: the send sequence space (SND.UNA, SND.NXT, SND.WND, SND.WL1/WL2, SND.MAX), the
//!   send window's scale, the send buffer and our FIN;
//! - `recv`: the receive sequence space (RCV.NXT, RCV.WND, the reassembly buffer), the peer's
//!   FIN and the delayed-ACK state (RFC 5681 4.2);
//! - `options`: MSS, window scaling, SACK-permitted (RFC 2018), timestamps and PAWS (RFC 7323);
//! - `timers`: retransmission (RFC 6298), persist, keepalive, idle, FIN-WAIT-2, handshake,
//!   TIME-WAIT;
//! - `recovery`: congestion control, duplicate ACKs, NewReno (RFC 5681, 6582), the SACK
//!   scoreboard (RFC 6675), RACK-TLP loss probes (RFC 8985);
//! - `open`: the constructors (active and passive opens, SYN cookies) and SYN-SENT;
//! - `pmtu`: a lower path MTU from a validated ICMP message (RFC 1191, RFC 8201, RFC 5927);
//! - `output`: `poll_transmit` and the building of a segment.
//!
//! This file keeps the states, the TCB, the input path of the synchronized states
//! (`handle_segment`'s acceptance rules, then the state changes of the ACK and FIN steps), and
//! CLOSE and ABORT.
//!
//! What this is not: demultiplexing, listeners, SYN cookies (`endpoint`).

mod open;
mod options;
mod output;
mod pmtu;
mod recovery;
mod recv;
mod send;
mod timers;

#[cfg(test)]
pub(crate) use options::PawsAnchors;
pub(crate) use options::PeerSyn;

use crate::config::{Config, ConnectionHandle, DropReason, Event, FourTuple, RateLimiter, Stats};
use crate::recv_buffer::RecvBuffer;
use crate::ring::Ring;
use crate::seq::SeqNumber;
use crate::time::Instant;
use options::Options;
use recovery::Recovery;
use recv::RecvSpace;
use send::SendSpace;
use sluice_wire::tcp;
use std::collections::VecDeque;
use timers::Timers;

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
        !matches!(self, State::Closed | State::Listen | State::SynSent | State::SynReceived)
    }
    /// States in which we may still send data (or a FIN) and so retransmit it.
    fn may_send(self) -> bool {
        matches!(self, State::Established | State::CloseWait | State::FinWait1 | State::Closing | State::LastAck)
    }
    /// States in which the peer may still send us data.
    fn can_receive(self) -> bool {
        matches!(self, State::SynReceived | State::Established | State::FinWait1 | State::FinWait2)
    }
}

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

/// The two stream buffers of a connection, recycled by the endpoint between connections so
/// that opening one does not allocate (and zero) them again.
#[derive(Debug)]
pub(crate) struct Buffers {
    send: Ring,
    recv: RecvBuffer,
}

impl Buffers {
    pub(crate) fn new(config: &Config) -> Self {
        Buffers { send: Ring::new(config.send_buffer), recv: RecvBuffer::new(config.recv_buffer) }
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
    snd: SendSpace,
    rcv: RecvSpace,
    opts: Options,
    timers: Timers,
    recovery: Recovery,
    /// A RST goes out on the next `poll_transmit` (ABORT, some timeouts).
    rst_pending: bool,
    /// Counted in its listener's SYN queue (passive, not yet established).
    pub(crate) counted_in_syn_queue: bool,
}

impl Connection {
    // ---- accessors (those of one concern are in its file) ----

    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }
    #[must_use]
    pub fn four_tuple(&self) -> FourTuple {
        self.tuple
    }

    /// Invariants a fuzzer checks; returns a description of the first violated one.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let (snd, rcv) = (&self.snd, &self.rcv);
        if snd.snd_una > snd.snd_nxt {
            return Err("snd_una > snd_nxt");
        }
        if snd.snd_nxt > snd.snd_max {
            return Err("snd_nxt > snd_max");
        }
        if snd.buf.len() > snd.buf.capacity() {
            return Err("send buffer over capacity");
        }
        if rcv.buf.readable() > rcv.buf.capacity() {
            return Err("receive buffer over capacity");
        }
        if rcv.buf.held_out_of_order() > rcv.buf.capacity() {
            return Err("out-of-order bytes over capacity");
        }
        if self.state.synchronized() && snd.outstanding() > snd.buf.len() + 2 {
            return Err("outstanding beyond buffered data");
        }
        if self.state != State::Closed && !self.rst_pending && self.next_deadline().is_none() && self.rto_needed() {
            return Err("outstanding data without a retransmission timer");
        }
        Ok(())
    }

    /// In TIME-WAIT nothing is sent or read any more (RFC 9293 3.10.7.4: it only acknowledges
    /// a retransmitted FIN): hand the buffers back now, emptied, instead of holding them for
    /// 2 MSL; the TCB keeps one-byte ones. `None` outside TIME-WAIT, while received bytes wait to
    /// be read, or when already done.
    pub(crate) fn release_buffers(&mut self) -> Option<Buffers> {
        // Bytes the application has not read yet stay until it has.
        if self.state != State::TimeWait || self.snd.buf.capacity() <= 1 || self.rcv.buf.readable() > 0 {
            return None;
        }
        let mut send = std::mem::replace(&mut self.snd.buf, Ring::new(1));
        send.clear();
        let mut recv = std::mem::replace(&mut self.rcv.buf, RecvBuffer::new(1));
        recv.clear();
        Some(Buffers { send, recv })
    }

    /// Give the buffers back for reuse (emptied).
    pub(crate) fn into_buffers(self) -> Buffers {
        let mut send = self.snd.buf;
        send.clear();
        let mut recv = self.rcv.buf;
        recv.clear();
        Buffers { send, recv }
    }

    /// Bytes of storage the send and receive buffers hold now.
    pub(crate) fn buffer_storage(&self) -> usize {
        self.snd.buf.storage() + self.rcv.buf.storage()
    }

    /// Under memory pressure: both buffers' storage cut to what they hold. Returns the bytes
    /// given back.
    pub(crate) fn shrink_buffers(&mut self) -> usize {
        self.snd.buf.shrink() + self.rcv.buf.shrink()
    }

    /// The TCB can be freed: CLOSED with nothing left to send.
    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Closed && !self.rst_pending
    }
}

// ---- input ----
impl Connection {
    /// RFC 5961 section 7: challenge ACKs are rate limited, first per connection (at most one
    /// per `invalid_ack_interval`, as Linux's `tcp_oow_rate_limited`), then by the endpoint's
    /// randomized budget, which a blind attacker cannot use to learn which 4-tuple exists.
    fn challenge_ack(&mut self, ctx: &mut Ctx<'_>) {
        if !self.timers.may_answer_invalid(ctx.now) {
            ctx.stats.invalid_acks_limited += 1;
        } else if ctx.challenge.allow(ctx.now) {
            self.rcv.ack_now = true;
            ctx.stats.challenge_acks += 1;
        } else {
            ctx.stats.challenge_acks_limited += 1;
        }
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
        self.timers.restart_time_wait(now);
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
            (State::SynReceived, true, false, false) if seq == self.rcv.irs => {
                self.snd.snd_nxt = self.snd.iss;
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
        // RFC 7323 5.3 R1 (PAWS), with Linux's leniency for reordering and more (see
        // `paws_discard`): "treat the arriving segment as not acceptable: Send an
        // acknowledgment ... and drop the segment."
        if self.paws_discard(seg, now) {
            ctx.stats.drop(DropReason::Paws);
            self.answer_invalid(ctx);
            return;
        }
        // RFC 9293 3.10.7.4 first: the acceptability test.
        let rcv_nxt = self.rcv.rcv_nxt;
        let rcv_wnd = self.rcv.rcv_wnd();
        let seg_len = seg.segment_len();
        let in_wnd = |s: SeqNumber| s.in_range(rcv_nxt, rcv_nxt + rcv_wnd);
        let acceptable = match (seg_len, rcv_wnd) {
            // "0 0: SEG.SEQ = RCV.NXT"
            (0, 0) => seq == rcv_nxt,
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
            && seq + seg_len >= self.rcv.last_ack_sent.min(rcv_nxt)
            && seq <= rcv_nxt + rcv_wnd
            && (seg_len == 0 || seq + seg_len >= rcv_nxt);
        let zero_window_ack = !acceptable && ((rcv_wnd == 0 && seq == rcv_nxt) || lenient);
        if zero_window_ack && !f.rst() && seg_len > 0 && seq + seg_len <= rcv_nxt {
            // An old duplicate (a retransmission of what we have): acknowledge at once.
            self.rcv.ack_now = true;
            if self.state == State::TimeWait && f.fin() {
                // A retransmitted FIN in TIME-WAIT: acknowledge it and restart the 2 MSL timeout.
                self.timers.restart_time_wait(now);
            }
        }
        if !acceptable && !zero_window_ack {
            if !f.rst() {
                if self.state == State::TimeWait && f.fin() {
                    // A retransmitted FIN in TIME-WAIT: acknowledge it and restart the 2 MSL timeout.
                    self.rcv.ack_now = true;
                    self.timers.restart_time_wait(now);
                } else {
                    // "If an incoming segment is not acceptable, an acknowledgment should be
                    // sent": at most one per `invalid_ack_interval`.
                    self.answer_invalid(ctx);
                }
            }
            ctx.stats.drop(DropReason::InvalidSequence);
            return;
        }
        // RFC 9293 3.10.7.4 second to fifth steps, hardened by RFC 5961.
        match (self.state, f.rst(), f.syn(), f.ack()) {
            // "CLOSING, LAST-ACK, TIME-WAIT: If the RST bit is set, then enter the CLOSED state,
            // delete the TCB, and return" (RFC 5961 3.2: only a RST at exactly RCV.NXT).
            (State::Closing | State::LastAck | State::TimeWait, true, _, _) if seq == rcv_nxt => {
                ctx.stats.rsts_received += 1;
                self.terminate(ctx, None, false);
                return;
            }
            // "If the RST bit is set ... users should also receive an unsolicited general
            // 'connection reset' signal" (RFC 5961 3.2: exactly RCV.NXT).
            (_, true, _, _) if seq == rcv_nxt => {
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
        self.timers.on_receive(now);
        // RFC 7323 4.3 R3: update TS.Recent from a segment covering Last.ACK.sent.
        self.opts.update_ts_recent(seg.timestamp, seq, self.rcv.last_ack_sent, self.rcv.rcv_nxt, now);
        if !self.process_ack(ctx, seg) {
            return;
        }
        if self.state == State::Closed {
            return;
        }
        // Seventh: segment text.
        if !seg.payload.is_empty() || f.fin() {
            if self.state.can_receive() && !self.rcv.fin_received {
                let ack_every = self.opts.ack_every();
                self.rcv.process_text(ctx, seg, ack_every);
            } else if !seg.payload.is_empty() {
                // "This should not occur since a FIN has been received from the remote side. Ignore."
                ctx.stats.drop(DropReason::AfterFin);
            }
        }
        // Eighth: FIN, once every byte before it arrived.
        if self.rcv.take_fin() {
            ctx.event(Event::PeerClosed);
            match self.state {
                // "SYN-RECEIVED / ESTABLISHED STATE: Enter the CLOSE-WAIT state."
                State::SynReceived | State::Established => self.state = State::CloseWait,
                // "FIN-WAIT-1: If our FIN has been ACKed, enter TIME-WAIT, else CLOSING."
                State::FinWait1 if self.snd.fin_acked => self.enter_time_wait(now),
                State::FinWait1 => self.state = State::Closing,
                // "FIN-WAIT-2: Enter the TIME-WAIT state."
                State::FinWait2 => self.enter_time_wait(now),
                _ => {}
            }
        }
        self.update_persist(now);
    }

    /// Fifth step: the ACK field. Returns false when the segment is to be dropped.
    fn process_ack(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) -> bool {
        let now = ctx.now;
        let ack = SeqNumber(seg.ack_number);
        let seq = SeqNumber(seg.seq_number);
        if self.state == State::SynReceived {
            // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state"
            if !(self.snd.snd_una < ack && ack <= self.snd.snd_max) {
                // "If the segment acknowledgment is not acceptable, form a reset <SEQ=SEG.ACK><CTL=RST>"
                ctx.rsts.push_back((self.tuple, ack.0, None));
                ctx.stats.drop(DropReason::BadAck);
                return false;
            }
            self.state = State::Established;
            self.snd.snd_wl1 = seq - 1;
            ctx.event(Event::Established);
            if self.snd.fin_queued {
                self.state = State::FinWait1;
            }
        }
        // RFC 5961 5.2: acceptable iff SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT.
        if ack > self.snd.snd_max {
            // "If the ACK acks something not yet sent, send an ACK, drop the segment"
            self.rcv.ack_now = true;
            ctx.stats.drop(DropReason::BadAck);
            return false;
        }
        if ack < self.snd.snd_una - self.snd.max_snd_wnd.max(65_535) {
            ctx.stats.drop(DropReason::BadAck);
            self.challenge_ack(ctx);
            return false;
        }
        let sack_news = self.opts.sack_ok
            && self.recovery.on_sack_blocks(ctx.stats, &seg.sack_blocks, ack.max(self.snd.snd_una), self.snd.snd_max);
        let wnd = self.snd.scaled_window(seg.window_len);
        if ack > self.snd.snd_una {
            self.on_new_ack(ctx, seg, ack);
        } else if ack == self.snd.snd_una
            && seg.payload.is_empty()
            && !seg.flags.fin()
            && (wnd == self.snd.snd_wnd || sack_news)
            && self.snd.snd_max > self.snd.snd_una
            && wnd > 0
        {
            // RFC 5681 section 2 "duplicate acknowledgment" (and RFC 6675: SACK information);
            // not while the window is zero: those ACKs answer probes, not losses.
            self.on_dup_ack(ctx);
        }
        // "If SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK), set SND.WND <- SEG.WND"
        if self.snd.update_window(seq, ack, wnd) && wnd > 0 {
            self.timers.stop_persist();
        }
        if self.snd.snd_wnd == 0 {
            // RFC 9293 3.8.6.1: do not time out while the window is zero, as long as the
            // receiver keeps acknowledging.
            self.timers.retransmits = 0;
        }
        if self.snd.fin_acked {
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
}

// ---- application side: CLOSE and ABORT (SEND and RECEIVE are in `send` and `recv`) ----
impl Connection {
    /// RFC 9293 3.10.4 CLOSE.
    pub(crate) fn close(&mut self) {
        match self.state {
            // "SYN-SENT: delete the TCB"
            State::SynSent => self.state = State::Closed,
            // "SYN-RECEIVED: ... queue for processing after entering ESTABLISHED"
            State::SynReceived => self.snd.fin_queued = true,
            // "ESTABLISHED: queue this until all preceding SENDs have been segmentized, then form
            // a FIN segment and send it. Enter FIN-WAIT-1."
            State::Established => {
                self.snd.fin_queued = true;
                self.state = State::FinWait1;
            }
            // "CLOSE-WAIT: queue this request until all preceding SENDs ... enter LAST-ACK"
            State::CloseWait => {
                self.snd.fin_queued = true;
                self.state = State::LastAck;
            }
            _ => {}
        }
    }

    /// RFC 9293 3.10.5 ABORT: RST in synchronized states, then CLOSED.
    pub(crate) fn abort(&mut self) {
        let rst = !matches!(self.state, State::SynSent | State::Closed | State::Listen | State::TimeWait);
        self.state = State::Closed;
        self.rst_pending = rst;
        self.clear_timers();
    }
}
