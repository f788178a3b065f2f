//! Opening a connection: the TCB's constructor, OPEN (RFC 9293 3.10.1, active), the passive
//! open from a SYN on a listener (3.10.7.2) or from a validated SYN cookie, and SEGMENT ARRIVES
//! in SYN-SENT (3.10.7.3), which finishes an active open or turns it into a simultaneous one.
//!
//! What this is not: SYN-RECEIVED's final ACK (`process_ack` in the parent module), the
//! listeners, the SYN queue and the cookies themselves (`endpoint`, `syncookie`).

use super::options::{Options, PeerSyn};
use super::recovery::Recovery;
use super::recv::RecvSpace;
use super::send::SendSpace;
use super::timers::Timers;
use super::{Buffers, Connection, Ctx, State};
use crate::config::{Config, DropReason, Event, FourTuple};
use crate::seq::SeqNumber;
use crate::time::Instant;
use sluice_wire::tcp;

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
        Connection {
            state,
            tuple,
            snd: SendSpace::new(iss, bufs.send),
            rcv: RecvSpace::new(config, bufs.recv),
            opts: Options::new(config, now, ts_offset, tuple.version()),
            timers: Timers::new(config, now),
            recovery: Recovery::new(config, iss),
            rst_pending: false,
            counted_in_syn_queue: false,
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
        c.rcv.irs = SeqNumber(seg.seq_number);
        c.rcv.rcv_nxt = c.rcv.irs + 1;
        c.negotiate(PeerSyn::from_repr(seg));
        // The SYN's window is never scaled (RFC 7323 2.2).
        c.snd.snd_wnd = usize::from(seg.window_len);
        c.snd.max_snd_wnd = c.snd.snd_wnd;
        c.snd.snd_wl1 = c.rcv.irs;
        c.rcv.rcv_adv = c.rcv.rcv_nxt + c.rcv.syn_window();
        c.rcv.last_ack_sent = c.rcv.rcv_nxt;
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
        c.rcv.irs = SeqNumber(irs);
        c.rcv.rcv_nxt = c.rcv.irs + 1;
        c.negotiate(peer);
        c.snd.snd_nxt = c.snd.iss + 1;
        c.snd.snd_max = c.snd.snd_nxt;
        c.snd.snd_una = c.snd.iss + 1;
        c.snd.snd_wl1 = c.rcv.irs;
        c.rcv.rcv_adv = c.rcv.rcv_nxt + c.rcv.syn_window();
        c.rcv.last_ack_sent = c.rcv.rcv_nxt;
        c
    }

    /// RFC 9293 3.10.7.3: SYN-SENT.
    pub(super) fn handle_syn_sent(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>) {
        let now = ctx.now;
        let f = seg.flags;
        let seq = SeqNumber(seg.seq_number);
        let ack = SeqNumber(seg.ack_number);
        // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset <SEQ=SEG.ACK><CTL=RST> (unless RST)"
        if f.ack() && (ack <= self.snd.iss || ack > self.snd.snd_max) {
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
        self.rcv.irs = seq;
        self.rcv.rcv_nxt = seq + 1;
        self.timers.last_rx = now;
        self.negotiate(PeerSyn::from_repr(seg));
        // The SYN's window is never scaled (RFC 7323 2.2).
        self.snd.snd_wnd = usize::from(seg.window_len);
        self.snd.max_snd_wnd = self.snd.snd_wnd;
        self.snd.snd_wl1 = seq;
        self.snd.snd_wl2 = ack;
        if f.ack() {
            // "If SND.UNA > ISS (our SYN has been ACKed), change the state to ESTABLISHED"
            self.snd.snd_una = ack;
            self.snd.snd_nxt = self.snd.snd_nxt.max(ack);
            if let Some((s, t)) = self.timers.rtt_probe.take()
                && ack > s
            {
                self.timers.rtt.sample(now - t);
            }
            self.timers.retransmits = 0;
            self.timers.rto_at = None;
            self.state = State::Established;
            self.rcv.ack_now = true;
            self.rcv.rcv_adv = self.rcv.rcv_nxt;
            ctx.event(Event::Established);
            if self.snd.fin_queued {
                self.state = State::FinWait1;
            }
        } else {
            // Simultaneous open: "enter SYN-RECEIVED, form a SYN,ACK segment".
            self.state = State::SynReceived;
            self.snd.snd_nxt = self.snd.iss;
            self.timers.rto_at = None;
            self.rcv.rcv_adv = self.rcv.rcv_nxt + self.rcv.syn_window();
            self.rcv.last_ack_sent = self.rcv.rcv_nxt;
        }
    }
}
