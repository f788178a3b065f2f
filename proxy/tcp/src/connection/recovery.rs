//! Loss recovery and congestion control of one connection: duplicate ACKs and fast retransmit
//! (RFC 5681 3.2), Limited Transmit (RFC 3042), NewReno without SACK (RFC 6582), the SACK
//! scoreboard and its pipe (RFC 6675, in `sack`), the RFC 8985 loss probes (`rack`), and the
//! congestion controller behind `congestion::Controller` (NewReno or CUBIC).
//!
//! What this is not: the retransmission timeout itself (`timers`; it ends a recovery here with
//! `Recovery::on_rto`), what is sent (`output`, which reads the flags set here).

use super::{Connection, Ctx};
use crate::config::{Config, Event, Stats};
use crate::congestion::{CongestionControl, Controller};
use crate::rack::{LossProbe, Probe};
use crate::sack::Scoreboard;
use crate::seq::SeqNumber;
use crate::time::Instant;
use sluice_wire::tcp::{self, SackBlock};

/// Congestion control, the recovery episode, and the retransmissions it asks for.
#[derive(Debug)]
pub(super) struct Recovery {
    pub(super) cc: Controller,
    pub(super) scoreboard: Scoreboard,
    dupacks: u32,
    pub(super) in_recovery: bool,
    /// RFC 6582 `recover`: SND.MAX when the recovery episode began.
    recover: SeqNumber,
    /// RFC 6675 HighRxt: the highest sequence number retransmitted in this episode.
    pub(super) high_rxt: SeqNumber,
    /// NewReno's window inflation during fast recovery without SACK (RFC 5681 3.2 steps 3-5).
    pub(super) inflation: usize,
    /// The loss-probe timer (RFC 8985 after `rack`); SACK connections only.
    pub(super) probe: LossProbe,
    /// `Config::loss_probes` (and SACK negotiated): the `rack` timer runs.
    pub(super) loss_probes: bool,
    /// Retransmit the segment at snd_una (fast retransmit, NewReno partial ACK).
    pub(super) rexmit_una: bool,
    /// The pending `rexmit_una` comes from the probe timer (counted as `retransmits_rack`).
    pub(super) rexmit_rack: bool,
    /// Send a tail loss probe (RFC 8985 7.3): the last segment again.
    pub(super) tlp_pending: bool,
}

impl Recovery {
    pub(super) fn new(config: &Config, iss: SeqNumber) -> Self {
        Recovery {
            cc: Controller::new(config.congestion, 536),
            scoreboard: Scoreboard::new(),
            dupacks: 0,
            in_recovery: false,
            recover: iss,
            high_rxt: iss,
            inflation: 0,
            probe: LossProbe::default(),
            loss_probes: config.loss_probes,
            rexmit_una: false,
            rexmit_rack: false,
            tlp_pending: false,
        }
    }

    /// RFC 2018 / RFC 6675: fold the SACK blocks of an ACK into the scoreboard (`cum_ack`:
    /// the cumulative acknowledgment, at least SND.UNA). Returns whether they told something
    /// new.
    pub(super) fn on_sack_blocks(
        &mut self,
        stats: &mut Stats,
        blocks: &[Option<SackBlock>],
        cum_ack: SeqNumber,
        snd_max: SeqNumber,
    ) -> bool {
        let mut sack_news = false;
        for b in blocks.iter().flatten() {
            stats.sack_blocks_received += 1;
            sack_news |= self.scoreboard.on_sack_block(cum_ack, snd_max, SeqNumber(b.left), SeqNumber(b.right));
        }
        sack_news
    }

    /// RFC 6582 3.2 step 2 / RFC 6675 5 step 4: fast retransmit and enter loss recovery.
    fn enter(&mut self, now: Instant, snd_una: SeqNumber, snd_max: SeqNumber, sack_ok: bool, mss: usize) {
        self.in_recovery = true;
        self.recover = snd_max;
        let flight = snd_max - snd_una;
        self.cc.on_loss(now, flight);
        self.high_rxt = snd_una;
        self.rexmit_una = true;
        self.inflation = if sack_ok { 0 } else { 3 * mss };
    }

    /// RFC 5681 3.1 on a retransmission timeout: the loss window, and the recovery episode
    /// (with its SACK information, RFC 2018 8) is over.
    pub(super) fn on_rto(&mut self, now: Instant, snd_una: SeqNumber, snd_max: SeqNumber) {
        let flight = snd_max - snd_una;
        self.cc.on_rto(now, flight);
        self.end_episode(snd_una, snd_max);
    }

    /// A path-MTU message lowered the segment size to `mss` (SMSS): everything from SND.UNA is
    /// sent again in segments of the new size, starting over like after a timeout but without
    /// its loss window (a too-big segment is not congestion). Congestion control restarts from
    /// its initial window of the new size.
    pub(super) fn on_path_mtu(&mut self, mss: usize, snd_una: SeqNumber, snd_max: SeqNumber) {
        self.cc.set_mss(mss);
        self.end_episode(snd_una, snd_max);
    }

    /// The recovery episode (if any) is over and every segment is sent again from SND.UNA.
    fn end_episode(&mut self, snd_una: SeqNumber, snd_max: SeqNumber) {
        // RFC 2018 8: forget SACK information after a timeout.
        self.scoreboard.clear();
        self.in_recovery = false;
        self.inflation = 0;
        self.dupacks = 0;
        self.rexmit_una = false;
        self.rexmit_rack = false;
        self.tlp_pending = false;
        self.probe.clear();
        self.recover = snd_max;
        self.high_rxt = snd_una;
    }

    /// RFC 6675 SetPipe: bytes presumed in the network during a SACK recovery.
    pub(super) fn pipe(&self, snd_una: SeqNumber, snd_max: SeqNumber, mss: usize) -> usize {
        self.scoreboard.pipe(snd_una, snd_max, self.high_rxt, mss)
    }
}

impl Connection {
    #[must_use]
    pub fn cwnd(&self) -> usize {
        self.recovery.cc.cwnd()
    }

    /// An ACK of new data (SND.UNA < SEG.ACK =< SND.MAX): the send buffer, the RTT and the
    /// retransmission timer, the loss-probe timer, and the recovery episode or the congestion
    /// window.
    pub(super) fn on_new_ack(&mut self, ctx: &mut Ctx<'_>, seg: &tcp::Repr<'_>, ack: SeqNumber) {
        let now = ctx.now;
        let acked = self.snd.on_new_ack(ack);
        self.recovery.scoreboard.on_ack(ack);
        // RTT (RFC 7323 4.1 timestamps, else one timed segment under Karn's rule).
        let ts_rtt = self.opts.ts_rtt(now, seg.timestamp);
        self.timers.sample_rtt(now, ack, ts_rtt);
        self.timers.retransmits = 0;
        self.timers.on_progress(now);
        // RFC 6298 5.2 / 5.3: stop the timer when all is acked, else restart it.
        self.timers.rto_at =
            if self.snd.snd_una == self.snd.snd_max { None } else { Some(now + self.timers.rtt.rto()) };
        let mss = self.opts.data_mss();
        let outstanding = self.snd.outstanding();
        let sack_ok = self.opts.sack_ok;
        let r = &mut self.recovery;
        let probing = sack_ok && r.loss_probes;
        r.probe.on_progress(now, probing && outstanding > 0, &self.timers.rtt, outstanding <= mss);
        if r.in_recovery {
            if ack >= r.recover {
                // RFC 6582 3.2 step 3: full acknowledgment, leave fast recovery.
                r.in_recovery = false;
                r.inflation = 0;
                let flight = self.snd.outstanding();
                r.cc.on_recovery_end(now, flight);
            } else {
                // RFC 6582 3.2 step 4: partial acknowledgment: retransmit the first unacked
                // segment, deflate by the amount acked and add back one SMSS.
                if !sack_ok {
                    r.rexmit_una = true;
                    r.inflation = r.inflation.saturating_sub(acked) + if acked >= mss { mss } else { 0 };
                } else if !r.scoreboard.is_sacked(self.snd.snd_una) && r.high_rxt <= self.snd.snd_una {
                    r.rexmit_una = true;
                }
            }
        } else {
            r.inflation = 0;
            r.cc.on_ack(now, acked, &self.timers.rtt);
        }
        r.dupacks = 0;
        if acked > 0 && self.snd.want_writable && self.snd.buf.free() > 0 {
            self.snd.want_writable = false;
            ctx.event(Event::Writable);
        }
    }

    /// RFC 5681 section 2 "duplicate acknowledgment" (or new SACK information, RFC 6675).
    pub(super) fn on_dup_ack(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        ctx.stats.dup_acks += 1;
        let mss = self.opts.data_mss();
        let r = &mut self.recovery;
        r.dupacks = r.dupacks.saturating_add(1);
        if r.in_recovery {
            if !self.opts.sack_ok {
                // RFC 5681 3.2 step 4: inflate by one SMSS per additional duplicate ACK.
                r.inflation += mss;
            }
            return;
        }
        // RFC 3042 Limited Transmit: the first two duplicate ACKs each let one new segment go,
        // beyond cwnd by at most 2 * SMSS.
        r.inflation = (r.dupacks.min(2) as usize) * mss;
        let lost = self.opts.sack_ok && r.scoreboard.is_lost(self.snd.snd_una, mss);
        // RFC 6582 3.2 step 2: only if the ACK covers more than `recover` (no second reduction
        // for losses of one window); RFC 6675 5 (IsLost(HighACK + 1)) with SACK.
        if (r.dupacks >= 3 || lost) && self.snd.snd_una >= r.recover {
            self.enter_recovery(now);
        }
    }

    /// RFC 6582 3.2 step 2 / RFC 6675 5 step 4: fast retransmit and enter loss recovery.
    fn enter_recovery(&mut self, now: Instant) {
        let mss = self.opts.data_mss();
        self.recovery.enter(now, self.snd.snd_una, self.snd.snd_max, self.opts.sack_ok, mss);
        self.timers.rtt_probe = None;
    }

    /// The loss-probe timer expired without cumulative progress (see `rack`).
    pub(super) fn on_probe_timeout(&mut self, now: Instant) {
        let mss = self.opts.data_mss();
        let outstanding = self.snd.outstanding();
        let sending = self.state.may_send();
        // Not while a zero window is probed or an RTO's go-back is under way.
        if !sending
            || !self.opts.sack_ok
            || outstanding == 0
            || self.snd.snd_wnd == 0
            || self.snd.snd_nxt < self.snd.snd_max
        {
            self.recovery.probe.clear();
            return;
        }
        let hole_known = self.recovery.in_recovery || !self.recovery.scoreboard.is_empty();
        match self.recovery.probe.on_expiry(now, hole_known, &self.timers.rtt, outstanding <= mss) {
            // RFC 8985 6.2: the first hole was sent before data the peer has (or, in
            // recovery, its retransmission had its RACK.rtt and more): presumed lost.
            Probe::FirstHole => {
                if !self.recovery.in_recovery {
                    self.enter_recovery(now);
                }
                self.recovery.rexmit_una = true;
                self.recovery.rexmit_rack = true;
            }
            // RFC 8985 7.3: no SACK information; probe with the last segment.
            Probe::Tail => self.recovery.tlp_pending = true,
        }
    }
}
