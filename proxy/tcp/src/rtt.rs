//! Round-trip time estimation and the retransmission timeout, RFC 6298.
//!
//! SRTT/RTTVAR with alpha = 1/8 and beta = 1/4 (section 2), RTO = SRTT + max(G, 4 * RTTVAR),
//! bounded by `[min_rto, max_rto]` (section 2.4, 2.5), exponential backoff on expiry (5.5) and
//! reset of the backoff by a new sample (5.7). Karn's rule (section 3) is the caller's duty:
//! samples are only taken from segments that were never retransmitted, or from timestamp echoes
//! (RFC 7323 section 4.1), which are unambiguous. What this is not: the timer itself.

use core::time::Duration;

/// Clock granularity G (section 2): our virtual clock is in microseconds, but be conservative.
const GRANULARITY: Duration = Duration::from_millis(1);

/// RFC 6298 estimator state.
#[derive(Debug, Clone)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    backoff: u32,
    min_rto: Duration,
    max_rto: Duration,
    latest: Option<Duration>,
    min_rtt: Option<Duration>,
}

impl RttEstimator {
    /// A fresh estimator: RTO = `initial` (1 s per RFC 6298 section 2.1) until the first sample.
    #[must_use]
    pub fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial.clamp(min_rto, max_rto),
            backoff: 0,
            min_rto,
            max_rto,
            latest: None,
            min_rtt: None,
        }
    }

    /// Feed one RTT measurement R.
    pub fn sample(&mut self, r: Duration) {
        match self.srtt {
            // 2.2: first measurement.
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            // 2.3: RTTVAR <- (1 - beta) * RTTVAR + beta * |SRTT - R'|; SRTT <- (1 - alpha) * SRTT + alpha * R'
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + GRANULARITY.max(self.rttvar * 4)).clamp(self.min_rto, self.max_rto);
        // 5.7: a new sample after backoff recomputes RTO from the estimator.
        self.backoff = 0;
        self.latest = Some(r);
        self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
    }

    /// 5.5: the timer expired; double the RTO (bounded by `max_rto`).
    pub fn on_timeout(&mut self) {
        self.backoff = self.backoff.saturating_add(1);
    }

    /// The current retransmission timeout including backoff.
    #[must_use]
    pub fn rto(&self) -> Duration {
        let factor = 1u32.checked_shl(self.backoff.min(16)).unwrap_or(u32::MAX);
        self.rto.saturating_mul(factor).min(self.max_rto)
    }

    /// Number of consecutive expiries without a new sample.
    #[must_use]
    pub fn backoff(&self) -> u32 {
        self.backoff
    }

    #[must_use]
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
    #[must_use]
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
    #[must_use]
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> RttEstimator {
        RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(60))
    }

    #[test]
    fn initial_rto_is_one_second() {
        assert_eq!(est().rto(), Duration::from_secs(1));
    }

    #[test]
    fn first_sample() {
        let mut e = est();
        e.sample(Duration::from_millis(100));
        assert_eq!(e.srtt(), Some(Duration::from_millis(100)));
        assert_eq!(e.rttvar(), Duration::from_millis(50));
        // 100 + 4*50 = 300 ms
        assert_eq!(e.rto(), Duration::from_millis(300));
    }

    #[test]
    fn subsequent_samples_smooth() {
        let mut e = est();
        e.sample(Duration::from_millis(100));
        e.sample(Duration::from_millis(200));
        // rttvar = 3/4*50 + 1/4*100 = 62.5; srtt = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.rto(), Duration::from_micros(362_500));
    }

    #[test]
    fn min_bound_applies() {
        let mut e = est();
        e.sample(Duration::from_millis(1));
        assert_eq!(e.rto(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_doubles_and_caps_then_resets() {
        let mut e = est();
        e.on_timeout();
        assert_eq!(e.rto(), Duration::from_secs(2));
        e.on_timeout();
        assert_eq!(e.rto(), Duration::from_secs(4));
        for _ in 0..40 {
            e.on_timeout();
        }
        assert_eq!(e.rto(), Duration::from_secs(60));
        e.sample(Duration::from_millis(100));
        assert_eq!(e.backoff(), 0);
        assert_eq!(e.rto(), Duration::from_millis(300));
    }
}
