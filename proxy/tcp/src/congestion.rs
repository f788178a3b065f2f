//! Congestion control: the `CongestionControl` trait, NewReno (RFC 5681, RFC 6582) and CUBIC
//! (RFC 9438), with the initial window of RFC 6928.
//!
//! The controller owns `cwnd` and `ssthresh` only. Loss detection, the recovery episode (the
//! `recover` point of RFC 6582, the pipe of RFC 6675) and, without SACK, NewReno's window
//! inflation during fast recovery live in `connection`, which calls these hooks. All windows are
//! in bytes.

use crate::rtt::RttEstimator;
use crate::time::Instant;

/// Which algorithm a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    NewReno,
    #[default]
    Cubic,
}

/// RFC 6928: IW = min(10 * MSS, max(2 * MSS, 14600)).
#[must_use]
pub fn initial_window(mss: usize) -> usize {
    (10 * mss).min((2 * mss).max(14_600))
}

/// The hooks a congestion controller receives.
pub trait CongestionControl {
    /// Congestion window in bytes.
    fn cwnd(&self) -> usize;
    /// Slow-start threshold in bytes.
    fn ssthresh(&self) -> usize;
    /// `acked` new bytes were cumulatively acknowledged outside loss recovery.
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: &RttEstimator);
    /// Loss detected by duplicate ACKs or SACK: a recovery episode starts (RFC 5681 3.2 step 2).
    fn on_loss(&mut self, now: Instant, flight: usize);
    /// The recovery episode ended with a full acknowledgment (RFC 6582 3.2 step 3).
    fn on_recovery_end(&mut self, now: Instant, flight: usize);
    /// The retransmission timer expired (RFC 5681 eq. 4 and section 3.1 "loss window").
    fn on_rto(&mut self, now: Instant, flight: usize);
    /// The sender MSS changed (only before data flows).
    fn set_mss(&mut self, mss: usize);
}

/// NewReno: slow start, congestion avoidance with byte counting (RFC 5681 3.1, RFC 3465).
#[derive(Debug, Clone)]
pub struct NewReno {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    bytes_acked: usize,
}

impl NewReno {
    #[must_use]
    pub fn new(mss: usize) -> Self {
        NewReno { mss, cwnd: initial_window(mss), ssthresh: usize::MAX, bytes_acked: 0 }
    }
}

impl CongestionControl for NewReno {
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(&mut self, _now: Instant, acked: usize, _rtt: &RttEstimator) {
        if self.cwnd < self.ssthresh {
            // RFC 5681 3.1 eq. 2: cwnd += min(N, SMSS).
            self.cwnd = self.cwnd.saturating_add(acked.min(self.mss));
        } else {
            // RFC 5681 3.1 / RFC 3465: one SMSS per cwnd of acknowledged bytes.
            self.bytes_acked = self.bytes_acked.saturating_add(acked);
            if self.bytes_acked >= self.cwnd {
                self.bytes_acked -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mss);
            }
        }
    }
    fn on_loss(&mut self, _now: Instant, flight: usize) {
        // RFC 5681 eq. 4: ssthresh = max(FlightSize / 2, 2 * SMSS).
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.bytes_acked = 0;
    }
    fn on_recovery_end(&mut self, _now: Instant, flight: usize) {
        // RFC 6582 3.2 step 3 option 1: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS).
        self.cwnd = self.ssthresh.min(flight.max(self.mss) + self.mss);
    }
    fn on_rto(&mut self, _now: Instant, flight: usize) {
        self.ssthresh = (flight / 2).max(2 * self.mss);
        // RFC 5681 3.1: LW = 1 full-sized segment.
        self.cwnd = self.mss;
        self.bytes_acked = 0;
    }
    fn set_mss(&mut self, mss: usize) {
        self.mss = mss.max(1);
        self.cwnd = initial_window(self.mss);
    }
}

/// CUBIC, RFC 9438 (C = 0.4, beta_cubic = 0.7, fast convergence, Reno-friendly region).
#[derive(Debug, Clone)]
pub struct Cubic {
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    /// W_max in segments.
    w_max: f64,
    /// Previous W_max for fast convergence (4.7).
    w_last_max: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch_start: Option<Instant>,
    /// K in seconds.
    k: f64,
    /// Reno-friendly estimate W_est in segments (4.3).
    w_est: f64,
    /// cwnd at the epoch start, in segments.
    cwnd_epoch: f64,
    /// Fractional cwnd growth carried between ACKs, in bytes.
    carry: f64,
}

const CUBIC_C: f64 = 0.4;
const CUBIC_BETA: f64 = 0.7;

impl Cubic {
    #[must_use]
    pub fn new(mss: usize) -> Self {
        Cubic {
            mss,
            cwnd: initial_window(mss),
            ssthresh: usize::MAX,
            w_max: 0.0,
            w_last_max: 0.0,
            epoch_start: None,
            k: 0.0,
            w_est: 0.0,
            cwnd_epoch: 0.0,
            carry: 0.0,
        }
    }

    fn segs(&self, bytes: usize) -> f64 {
        bytes as f64 / self.mss as f64
    }

    /// W_cubic(t) = C * (t - K)^3 + W_max (eq. 1), in segments.
    #[must_use]
    pub fn w_cubic(&self, t_secs: f64) -> f64 {
        let d = t_secs - self.k;
        CUBIC_C * d * d * d + self.w_max
    }

    fn reduce(&mut self, flight: usize) {
        let cwnd_segs = self.segs(self.cwnd.max(flight.min(self.cwnd)));
        // 4.7 fast convergence.
        if cwnd_segs < self.w_last_max {
            self.w_last_max = cwnd_segs;
            self.w_max = cwnd_segs * (1.0 + CUBIC_BETA) / 2.0;
        } else {
            self.w_last_max = cwnd_segs;
            self.w_max = cwnd_segs;
        }
        // 4.6: ssthresh = max(cwnd * beta, 2 * SMSS).
        let ss = (cwnd_segs * CUBIC_BETA * self.mss as f64) as usize;
        self.ssthresh = ss.max(2 * self.mss);
        self.epoch_start = None;
        self.carry = 0.0;
    }
}

impl CongestionControl for Cubic {
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: &RttEstimator) {
        if self.cwnd < self.ssthresh {
            // Slow start as in RFC 5681 (RFC 9438 4.10).
            self.cwnd = self.cwnd.saturating_add(acked.min(self.mss));
            return;
        }
        let cwnd_segs = self.segs(self.cwnd);
        let epoch = match self.epoch_start {
            Some(e) => e,
            None => {
                self.epoch_start = Some(now);
                self.cwnd_epoch = cwnd_segs;
                self.w_est = cwnd_segs;
                if self.w_max < cwnd_segs {
                    self.w_max = cwnd_segs;
                }
                // Eq. 2: K = cubic_root((W_max - cwnd_epoch) / C).
                self.k = ((self.w_max - self.cwnd_epoch).max(0.0) / CUBIC_C).cbrt();
                now
            }
        };
        let rtt_s = rtt.srtt().map_or(0.1, |d| d.as_secs_f64());
        let t = (now - epoch).as_secs_f64();
        // 4.2: target = W_cubic(t + RTT), bounded to [cwnd, 1.5 cwnd].
        let target = self.w_cubic(t + rtt_s).clamp(cwnd_segs, 1.5 * cwnd_segs);
        // 4.3: W_est += alpha_cubic * segments_acked / cwnd.
        let alpha = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);
        let acked_segs = self.segs(acked);
        self.w_est += alpha * acked_segs / cwnd_segs.max(1.0);
        let grow_segs = if self.w_cubic(t) < self.w_est {
            // Reno-friendly region: follow W_est.
            (self.w_est - cwnd_segs).max(0.0)
        } else {
            // 4.4/4.5: cwnd += (target - cwnd) / cwnd per acked segment.
            (target - cwnd_segs) / cwnd_segs.max(1.0) * acked_segs
        };
        self.carry += grow_segs * self.mss as f64;
        if self.carry >= 1.0 {
            let add = self.carry.min(self.mss as f64 * 4.0);
            self.cwnd = self.cwnd.saturating_add(add as usize);
            self.carry -= add.floor();
            if self.carry > self.mss as f64 * 4.0 {
                self.carry = 0.0;
            }
        }
    }
    fn on_loss(&mut self, _now: Instant, flight: usize) {
        self.reduce(flight);
        self.cwnd = self.ssthresh;
    }
    fn on_recovery_end(&mut self, _now: Instant, _flight: usize) {
        self.cwnd = self.ssthresh;
    }
    fn on_rto(&mut self, _now: Instant, flight: usize) {
        self.reduce(flight);
        self.cwnd = self.mss;
    }
    fn set_mss(&mut self, mss: usize) {
        self.mss = mss.max(1);
        self.cwnd = initial_window(self.mss);
    }
}

/// Static dispatch over the implemented algorithms (no allocation, no vtable).
#[derive(Debug, Clone)]
pub enum Controller {
    NewReno(NewReno),
    Cubic(Cubic),
}

impl Controller {
    #[must_use]
    pub fn new(alg: Algorithm, mss: usize) -> Self {
        match alg {
            Algorithm::NewReno => Controller::NewReno(NewReno::new(mss)),
            Algorithm::Cubic => Controller::Cubic(Cubic::new(mss)),
        }
    }
    fn inner(&mut self) -> &mut dyn CongestionControl {
        match self {
            Controller::NewReno(c) => c,
            Controller::Cubic(c) => c,
        }
    }
    fn inner_ref(&self) -> &dyn CongestionControl {
        match self {
            Controller::NewReno(c) => c,
            Controller::Cubic(c) => c,
        }
    }
}

impl CongestionControl for Controller {
    fn cwnd(&self) -> usize {
        self.inner_ref().cwnd()
    }
    fn ssthresh(&self) -> usize {
        self.inner_ref().ssthresh()
    }
    fn on_ack(&mut self, now: Instant, acked: usize, rtt: &RttEstimator) {
        self.inner().on_ack(now, acked, rtt);
    }
    fn on_loss(&mut self, now: Instant, flight: usize) {
        self.inner().on_loss(now, flight);
    }
    fn on_recovery_end(&mut self, now: Instant, flight: usize) {
        self.inner().on_recovery_end(now, flight);
    }
    fn on_rto(&mut self, now: Instant, flight: usize) {
        self.inner().on_rto(now, flight);
    }
    fn set_mss(&mut self, mss: usize) {
        self.inner().set_mss(mss);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn rtt() -> RttEstimator {
        let mut r = RttEstimator::new(Duration::from_secs(1), Duration::from_millis(200), Duration::from_secs(60));
        r.sample(Duration::from_millis(100));
        r
    }

    #[test]
    fn rfc6928_initial_window() {
        assert_eq!(initial_window(1460), 14_600);
        assert_eq!(initial_window(536), 5_360);
        assert_eq!(initial_window(8960), 17_920);
        assert_eq!(initial_window(1000), 10_000);
    }

    #[test]
    fn newreno_slow_start_then_avoidance() {
        let mss = 1000;
        let mut c = NewReno::new(mss);
        let r = rtt();
        assert_eq!(c.cwnd(), 10_000);
        c.on_ack(Instant::ZERO, 5000, &r);
        // min(N, SMSS)
        assert_eq!(c.cwnd(), 11_000);
        c.on_loss(Instant::ZERO, 11_000);
        assert_eq!(c.ssthresh(), 5_500);
        assert_eq!(c.cwnd(), 5_500);
        // Congestion avoidance: +1 MSS per cwnd acked.
        c.on_ack(Instant::ZERO, 3000, &r);
        assert_eq!(c.cwnd(), 5_500);
        c.on_ack(Instant::ZERO, 2500, &r);
        assert_eq!(c.cwnd(), 6_500);
    }

    #[test]
    fn newreno_rto_and_recovery_end() {
        let mut c = NewReno::new(1000);
        c.on_rto(Instant::ZERO, 1000);
        assert_eq!(c.ssthresh(), 2000);
        assert_eq!(c.cwnd(), 1000);
        c.on_loss(Instant::ZERO, 20_000);
        c.on_recovery_end(Instant::ZERO, 2_000);
        assert_eq!(c.cwnd(), 3_000);
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_to_wmax() {
        let mss = 1000;
        let mut c = Cubic::new(mss);
        let r = rtt();
        // Grow in slow start to 100 segments.
        while c.cwnd() < 100 * mss {
            c.on_ack(Instant::ZERO, mss, &r);
        }
        let w0 = c.cwnd();
        c.on_loss(Instant::ZERO, w0);
        assert_eq!(c.cwnd(), (w0 as f64 * 0.7) as usize);
        // Ack a window per RTT for a while; cwnd must climb back to about W_max and beyond.
        let mut now = Instant::ZERO;
        for _ in 0..200 {
            now += Duration::from_millis(100);
            let w = c.cwnd();
            let mut acked = 0;
            while acked < w {
                c.on_ack(now, mss, &r);
                acked += mss;
            }
        }
        assert!(c.cwnd() > w0, "cwnd {} did not regrow past W_max {}", c.cwnd(), w0);
    }

    #[test]
    fn cubic_concave_near_wmax() {
        let mut c = Cubic::new(1000);
        c.w_max = 100.0;
        c.k = ((100.0 - 70.0) / CUBIC_C).cbrt();
        // At t = K the window is exactly W_max; before it is below, after above.
        assert!((c.w_cubic(c.k) - 100.0).abs() < 1e-9);
        assert!(c.w_cubic(0.0) < 100.0);
        assert!((c.w_cubic(0.0) - 70.0).abs() < 1e-6);
        assert!(c.w_cubic(2.0 * c.k) > 100.0);
    }

    #[test]
    fn cubic_fast_convergence() {
        let mut c = Cubic::new(1000);
        c.cwnd = 100_000;
        c.on_loss(Instant::ZERO, 100_000);
        assert!((c.w_max - 100.0).abs() < 1e-9);
        c.cwnd = 80_000;
        c.on_loss(Instant::ZERO, 80_000);
        // Smaller than the last max: W_max = cwnd * (1 + beta) / 2.
        assert!((c.w_max - 80.0 * 0.85).abs() < 1e-9);
    }
}
