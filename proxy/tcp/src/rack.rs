//! A loss-probe timer after RFC 8985 (RACK-TLP), reduced to what sluice's recovery (the
//! RFC 6675 scoreboard in `sack`, no per-segment send times) can carry.
//!
//! Why: RFC 6675 alone ends in a retransmission timeout (RFC 6298, at least `min_rto`, 200 ms)
//! in two cases the simulator showed to be nearly all of them under the impairment bridge:
//! - a lost retransmission: the hole at SND.UNA was retransmitted, the retransmission was
//!   lost, and every other outstanding byte is SACKed (RFC 6675 retransmits a byte once per
//!   recovery episode). RFC 8985 section 6 detects it when a segment sent after the
//!   retransmission is delivered; with a fixed send buffer full of SACKed data nothing is
//!   sent after it, so only the passage of time can tell (RFC 8961: "protocols can only
//!   count on the passage of time without delivery confirmation to declare a packet lost").
//! - a tail: too few segments outstanding (after an RTO, or at the end of a burst) for
//!   DupThresh duplicate ACKs or for IsLost, or every ACK lost.
//!
//! The rule (a deliberate simplification of RACK-TLP): while data is outstanding, a timer runs
//! from the last cumulative acknowledgment or transmission of new data
//! with the probe timeout of RFC 8985 7.2, PTO = 2 * SRTT (plus the peer's worst-case delayed
//! ACK when only one segment is outstanding), never less than `MIN_PTO` and never more than
//! the RTO. When it fires without cumulative progress:
//! - if the peer SACKed data above SND.UNA, or a recovery is under way, the first hole is
//!   presumed lost, as RACK would after RACK.rtt + RACK.reo_wnd (section 6.2): it is
//!   retransmitted (entering recovery first if needed, with the usual window reduction);
//! - otherwise (no SACK information, the tail loss of section 7) the last segment is sent again
//!   as a loss probe (section 7.3), whose ACK brings the SACK information that the next expiry
//!   or the usual rules act on.
//!
//! Each expiry without progress doubles the PTO; after `MAX_PROBES` the RTO takes over, which
//! stays armed throughout (section 7.3: the probe does not replace the RTO).
//!
//! What this is not: RACK's per-segment send-time ordering (no reordering window adapted from
//! D-SACK), nor the congestion response of RFC 8985 9.3 beyond the one reduction per
//! recovery episode that `connection` already applies.

use crate::rtt::RttEstimator;
use crate::time::Instant;
use core::time::Duration;

/// Lower bound of the probe timeout (Linux's TLP also keeps a floor of a few milliseconds
/// so that a 1 ms timestamp clock and ACK jitter do not cause spurious probes).
pub const MIN_PTO: Duration = Duration::from_millis(10);
/// RFC 8985 7.2 WCDelAckT: the peer's worst-case delayed-ACK timer.
pub const WC_DEL_ACK: Duration = Duration::from_millis(200);
/// Expiries without progress before only the RTO is left.
pub const MAX_PROBES: u32 = 3;

/// What an expiry asks the connection to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The first hole (at SND.UNA) is presumed lost: retransmit it.
    FirstHole,
    /// No SACK information: retransmit the last segment to elicit an ACK (RFC 8985 7.3).
    Tail,
}

/// The probe timer's state for one connection.
#[derive(Debug, Clone, Default)]
pub struct LossProbe {
    at: Option<Instant>,
    probes: u32,
}

impl LossProbe {
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }

    pub fn clear(&mut self) {
        self.at = None;
        self.probes = 0;
    }

    /// RFC 8985 7.2 PTO, with the backoff of the expiries since the last progress.
    #[must_use]
    pub fn pto(&self, rtt: &RttEstimator, one_segment: bool) -> Duration {
        let srtt = rtt.srtt().unwrap_or(rtt.rto());
        let mut pto = srtt * 2;
        if one_segment {
            pto += WC_DEL_ACK;
        }
        let pto = pto.max(MIN_PTO) * (1 << self.probes.min(MAX_PROBES));
        pto.min(rtt.rto())
    }

    /// Cumulative progress (or nothing outstanding any more): restart from `now`, or stop.
    pub fn on_progress(&mut self, now: Instant, outstanding: bool, rtt: &RttEstimator, one: bool) {
        self.probes = 0;
        self.at = outstanding.then(|| now + self.pto(rtt, one));
    }

    /// Data was sent: start the timer if it is not running, and restart it after new data
    /// (RFC 8985 7.2: the PTO is scheduled "after transmitting new data"), unless probes
    /// since the last progress are backing it off.
    pub fn on_send(&mut self, now: Instant, new_data: bool, rtt: &RttEstimator, one: bool) {
        if self.probes == 0 && (self.at.is_none() || new_data) {
            self.at = Some(now + self.pto(rtt, one));
        }
    }

    /// The timer expired at `now`: what to send, given whether the peer SACKed data above
    /// SND.UNA or a recovery is under way. Re-arms with backoff while probes are left.
    pub fn on_expiry(&mut self, now: Instant, hole_known: bool, rtt: &RttEstimator, one: bool) -> Probe {
        self.probes += 1;
        self.at = (self.probes < MAX_PROBES).then(|| now + self.pto(rtt, one));
        if hole_known { Probe::FirstHole } else { Probe::Tail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt_min(ms: u64, min_rto: u64) -> RttEstimator {
        let mut r = RttEstimator::new(Duration::from_secs(1), Duration::from_millis(min_rto), Duration::from_secs(60));
        r.sample(Duration::from_millis(ms));
        r
    }

    fn rtt(ms: u64) -> RttEstimator {
        rtt_min(ms, 10)
    }

    #[test]
    fn pto_is_two_srtt_with_floor_and_rto_cap() {
        let p = LossProbe::default();
        assert_eq!(p.pto(&rtt(30), false), Duration::from_millis(60));
        assert_eq!(p.pto(&rtt(1), false), MIN_PTO);
        // 2 * 30 ms + 200 ms exceeds the RTO (30 + 4 * 15 ms): the RTO bounds it.
        let r = rtt(30);
        assert_eq!(r.rto(), Duration::from_millis(90));
        assert_eq!(p.pto(&r, true), r.rto());
        let r = rtt(100);
        assert_eq!(p.pto(&r, true), Duration::from_millis(300).min(r.rto()));
    }

    #[test]
    fn expiries_back_off_then_leave_it_to_the_rto() {
        let r = rtt_min(20, 200);
        let t0 = Instant::from_millis(1_000);
        let mut p = LossProbe::default();
        p.on_send(t0, true, &r, false);
        assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(40)));
        let t1 = p.deadline().unwrap();
        assert_eq!(p.on_expiry(t1, false, &r, false), Probe::Tail);
        assert_eq!(p.deadline(), Some(t1 + Duration::from_millis(80)));
        let t2 = p.deadline().unwrap();
        assert_eq!(p.on_expiry(t2, true, &r, false), Probe::FirstHole);
        assert_eq!(p.deadline(), Some(t2 + Duration::from_millis(160)));
        let t3 = p.deadline().unwrap();
        p.on_expiry(t3, true, &r, false);
        assert_eq!(p.deadline(), None, "MAX_PROBES reached");
        p.on_send(t3, true, &r, false);
        assert_eq!(p.deadline(), None, "no more probes until progress");
        p.on_progress(t3, true, &r, false);
        assert_eq!(p.deadline(), Some(t3 + Duration::from_millis(40)));
        p.on_progress(t3, false, &r, false);
        assert_eq!(p.deadline(), None);
    }
}
