//! The timers of one connection: retransmission (RFC 6298, with its RTT estimator and Karn's
//! rule), persist (zero-window probes, RFC 9293 3.8.6.1), keepalive (RFC 9293 3.8.4), idle,
//! FIN-WAIT-2 and user (RFC 5482: data that makes no progress) timeouts, the handshake timeout, and TIME-WAIT (2 MSL, RFC 9293 3.10.7.4). The
//! delayed-ACK timer is part of the receive side's delayed-ACK state (`recv`), the loss-probe
//! timer part of recovery (`rack`, in `recovery`); `next_deadline` folds them all, and
//! `handle_timeout` runs those that are due.
//!
//! What this is not: the endpoint's timer heap (`timer`), which holds one deadline per
//! connection.

use super::{Connection, Ctx, State};
use crate::config::{Config, Event, Keepalive};
use crate::rtt::RttEstimator;
use crate::seq::SeqNumber;
use crate::time::Instant;
use core::time::Duration;

/// Deadlines, their backoff, and the durations from `Config`.
#[derive(Debug)]
pub(super) struct Timers {
    /// When the TCB was made (see `Connection::created`).
    created: Instant,
    /// The last acceptable segment with ACK: the idle and keepalive timers run from it.
    pub(super) last_rx: Instant,

    // Retransmission (RFC 6298).
    pub(super) rtt: RttEstimator,
    /// The segment timed for an RTT sample under Karn's rule: (its first byte, when sent).
    pub(super) rtt_probe: Option<(SeqNumber, Instant)>,
    pub(super) rto_at: Option<Instant>,
    /// Retransmission timeouts since the last acknowledgment of new data.
    pub(super) retransmits: u32,
    max_retransmits: u32,

    // Persist (RFC 9293 3.8.6.1).
    pub(super) persist_at: Option<Instant>,
    persist_backoff: u32,
    /// A zero-window probe is due.
    pub(super) probe_pending: bool,

    // Keepalive, idle, FIN-WAIT-2, handshake.
    keepalive: Option<Keepalive>,
    keepalive_probes: u32,
    /// A keepalive probe is due.
    pub(super) keepalive_pending: bool,
    idle_timeout: Option<Duration>,
    fin_wait_2_timeout: Option<Duration>,
    hs_timeout: Duration,
    user_timeout: Option<Duration>,
    /// The last ACK sent in answer to an unacceptable segment, and how often one may go.
    last_invalid_ack: Option<Instant>,
    invalid_ack_interval: Duration,
    /// Since when data has waited (unacknowledged, or behind a zero window) without any of it
    /// being acknowledged; None while nothing waits.
    stalled_since: Option<Instant>,

    // TIME-WAIT.
    time_wait: Duration,
    time_wait_at: Option<Instant>,
}

impl Timers {
    pub(super) fn new(config: &Config, now: Instant) -> Self {
        Timers {
            created: now,
            last_rx: now,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            rtt_probe: None,
            rto_at: None,
            retransmits: 0,
            max_retransmits: config.max_retransmits,
            persist_at: None,
            persist_backoff: 0,
            probe_pending: false,
            keepalive: config.keepalive,
            keepalive_probes: 0,
            keepalive_pending: false,
            idle_timeout: config.idle_timeout,
            fin_wait_2_timeout: config.fin_wait_2_timeout,
            hs_timeout: config.handshake_timeout,
            user_timeout: config.user_timeout,
            last_invalid_ack: None,
            invalid_ack_interval: config.invalid_ack_interval,
            stalled_since: None,
            time_wait: config.time_wait,
            time_wait_at: None,
        }
    }

    /// The timers of this struct that a state change to CLOSED or TIME-WAIT stops.
    fn clear(&mut self) {
        self.rto_at = None;
        self.persist_at = None;
        self.time_wait_at = None;
    }

    /// An acceptable segment with ACK arrived: idle and keepalive run from now.
    pub(super) fn on_receive(&mut self, now: Instant) {
        self.last_rx = now;
        self.keepalive_probes = 0;
    }

    /// (Re)start the 2 MSL timeout of TIME-WAIT.
    pub(super) fn restart_time_wait(&mut self, now: Instant) {
        self.time_wait_at = Some(now + self.time_wait);
    }

    /// RFC 6298 5.1: start the retransmission timer unless it runs.
    pub(super) fn arm_rto(&mut self, now: Instant) {
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rtt.rto());
        }
    }

    /// RTT on an acknowledgment of new data up to `ack`: the timestamp measurement if there is
    /// one (RFC 7323 4.1), else the timed segment's if `ack` covers it (Karn's rule).
    pub(super) fn sample_rtt(&mut self, now: Instant, ack: SeqNumber, ts_rtt: Option<Duration>) {
        if let Some(r) = ts_rtt {
            self.rtt.sample(r);
        }
        if let Some((s, t)) = self.rtt_probe
            && ack > s
        {
            if ts_rtt.is_none() {
                self.rtt.sample(now - t);
            }
            self.rtt_probe = None;
        }
    }

    /// The window opened: no more zero-window probes.
    pub(super) fn stop_persist(&mut self) {
        self.persist_at = None;
        self.persist_backoff = 0;
    }

    fn persist_interval(&self) -> Duration {
        let factor = 1u32 << self.persist_backoff.min(10);
        (self.rtt.rto() * factor).min(Duration::from_secs(60))
    }

    fn handshake_deadline(&self, state: State) -> Option<Instant> {
        matches!(state, State::SynSent | State::SynReceived).then(|| self.created + self.hs_timeout)
    }
    fn idle_deadline(&self, state: State) -> Option<Instant> {
        if !state.synchronized() || state == State::TimeWait {
            return None;
        }
        let idle = self.idle_timeout.map(|t| self.last_rx + t);
        let fw2 = (state == State::FinWait2).then_some(self.fin_wait_2_timeout).flatten().map(|t| self.last_rx + t);
        match (idle, fw2) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn user_deadline(&self, state: State) -> Option<Instant> {
        if !state.synchronized() {
            return None;
        }
        Some(self.stalled_since? + self.user_timeout?)
    }
    /// Whether an ACK may answer an unacceptable segment now (then the next one waits
    /// `invalid_ack_interval`).
    pub(super) fn may_answer_invalid(&mut self, now: Instant) -> bool {
        if self.last_invalid_ack.is_some_and(|t| now < t + self.invalid_ack_interval) {
            return false;
        }
        self.last_invalid_ack = Some(now);
        true
    }
    /// Data was acknowledged: if more waits, it waits from now.
    pub(super) fn on_progress(&mut self, now: Instant) {
        if self.stalled_since.is_some() {
            self.stalled_since = Some(now);
        }
    }
    fn keepalive_deadline(&self, state: State) -> Option<Instant> {
        if !matches!(state, State::Established | State::CloseWait | State::FinWait2) {
            return None;
        }
        self.keepalive.map(|k| self.last_rx + k.idle + k.interval * self.keepalive_probes)
    }
}

impl Connection {
    /// When the TCB was made: the SYN's arrival for a passive open (the final ACK's for a
    /// connection rebuilt from a SYN cookie), the `connect` call for an active one.
    #[must_use]
    pub fn created(&self) -> Instant {
        self.timers.created
    }
    #[must_use]
    pub fn rto(&self) -> Duration {
        self.timers.rtt.rto()
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
        let t = &self.timers;
        put(t.rto_at);
        put(self.recovery.probe.deadline());
        put(self.rcv.delack_at);
        put(t.persist_at);
        put(t.time_wait_at);
        put(t.handshake_deadline(self.state));
        put(t.idle_deadline(self.state));
        put(t.user_deadline(self.state));
        put(t.keepalive_deadline(self.state));
        d
    }

    pub(super) fn rto_needed(&self) -> bool {
        self.snd.snd_max > self.snd.snd_una && !matches!(self.state, State::TimeWait | State::Closed)
    }

    /// Stop every timer (CLOSED, TIME-WAIT).
    pub(super) fn clear_timers(&mut self) {
        self.timers.clear();
        self.recovery.probe.clear();
        self.rcv.delack_at = None;
    }

    /// An unacceptable segment (out of the window, or failing PAWS) is answered with an ACK,
    /// unless one went less than `invalid_ack_interval` ago (counted `invalid_acks_limited`).
    pub(super) fn answer_invalid(&mut self, ctx: &mut Ctx<'_>) {
        if self.timers.may_answer_invalid(ctx.now) {
            self.rcv.ack_now = true;
        } else {
            ctx.stats.invalid_acks_limited += 1;
        }
    }

    /// Start or stop the persist timer: it runs while data waits behind a zero window with
    /// nothing outstanding (RFC 9293 3.8.6.1). And the user timeout's clock: it runs while any
    /// data waits for an acknowledgment, sent or not.
    pub(super) fn update_persist(&mut self, now: Instant) {
        let waiting =
            self.state.synchronized() && (self.snd.snd_max > self.snd.snd_una || self.data_end() > self.snd.snd_nxt);
        match (waiting, self.timers.stalled_since) {
            (false, _) => self.timers.stalled_since = None,
            (true, None) => self.timers.stalled_since = Some(now),
            (true, Some(_)) => {}
        }
        let blocked = self.state.synchronized()
            && self.snd.snd_wnd == 0
            && self.snd.snd_max == self.snd.snd_una
            && self.data_end() > self.snd.snd_nxt;
        if blocked {
            if self.timers.persist_at.is_none() {
                self.timers.persist_at = Some(now + self.timers.persist_interval());
            }
        } else {
            self.timers.stop_persist();
        }
    }

    /// Run the timers that are due.
    pub(crate) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timers.time_wait_at) {
            // TIME-WAIT "when the timeout expires, delete the TCB, enter CLOSED".
            self.terminate(ctx, None, false);
            return;
        }
        if due(self.timers.handshake_deadline(self.state)) {
            ctx.stats.timeouts += 1;
            self.terminate(ctx, Some(Event::TimedOut), false);
            return;
        }
        if due(self.timers.idle_deadline(self.state)) {
            ctx.stats.timeouts += 1;
            self.terminate(ctx, Some(Event::TimedOut), true);
            return;
        }
        if due(self.timers.user_deadline(self.state)) {
            ctx.stats.timeouts += 1;
            ctx.stats.user_timeouts += 1;
            self.terminate(ctx, Some(Event::TimedOut), true);
            return;
        }
        if due(self.timers.keepalive_deadline(self.state)) {
            let probes = self.timers.keepalive.map_or(0, |k| k.probes);
            if self.timers.keepalive_probes >= probes {
                ctx.stats.timeouts += 1;
                self.terminate(ctx, Some(Event::TimedOut), true);
                return;
            }
            self.timers.keepalive_probes += 1;
            self.timers.keepalive_pending = true;
        }
        if due(self.timers.rto_at) {
            self.on_rto(ctx);
            if self.state == State::Closed {
                return;
            }
        } else if due(self.recovery.probe.deadline()) {
            self.on_probe_timeout(now);
        }
        if due(self.rcv.delack_at) {
            self.rcv.delack_at = None;
            self.rcv.ack_now = true;
        }
        if due(self.timers.persist_at) {
            let t = &mut self.timers;
            t.probe_pending = true;
            t.persist_backoff = t.persist_backoff.saturating_add(1);
            t.persist_at = Some(now + t.persist_interval());
        }
    }

    /// RFC 6298 5.4-5.7 and RFC 5681 3.1 (loss window) on retransmission timeout.
    fn on_rto(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        self.timers.retransmits += 1;
        if self.timers.retransmits > self.timers.max_retransmits {
            ctx.stats.timeouts += 1;
            let rst = self.state.synchronized();
            self.terminate(ctx, Some(Event::TimedOut), rst);
            return;
        }
        if self.state.synchronized() && self.snd.snd_wnd == 0 {
            // Nothing fits in a zero window: probe it (RFC 9293 3.8.6.1) and resend from SND.UNA
            // once it opens. Flow control, not congestion: cwnd stays.
            self.timers.rtt.on_timeout();
            self.timers.probe_pending = true;
            self.snd.snd_nxt = self.snd.snd_una;
            self.timers.rtt_probe = None;
            self.timers.rto_at = Some(now + self.timers.rtt.rto());
            return;
        }
        ctx.stats.retransmits_rto += 1;
        self.timers.rtt.on_timeout();
        self.recovery.on_rto(now, self.snd.snd_una, self.snd.snd_max);
        // Go back: resend from SND.UNA (the SYN in SYN-SENT / SYN-RECEIVED).
        self.snd.snd_nxt = self.snd.snd_una;
        self.timers.rtt_probe = None;
        self.timers.rto_at = Some(now + self.timers.rtt.rto());
    }
}
