//! When the XDP program answers a queue's SYNs itself ([`SynPressure`]): a worker's SYN queue
//! under pressure turns SYN cookies in XDP on for its RX queue at once; after the queue has been
//! calm for [`CALM`] the program stops answering SYNs but keeps validating ACKs for
//! [`ACK_WINDOW`] (the cookies it sent are still good that long), then stops that too. Sans-IO:
//! the worker feeds it the time and its TCP stack's pressure, and writes the level it returns
//! into the program's map (`loader::PressureFlag`).
//!
//! What it is not: the cookies (the kernel's, in `ebpf/src/cookie.rs`) or the rule that decides
//! pressure (`sluice_tcp::Endpoint::syn_queue_pressure`).

use std::time::Duration;

use sluice_ebpf::{PRESSURE_ACKS, PRESSURE_OFF, PRESSURE_SYNS};
use sluice_tcp::Instant;

/// How long the SYN queue must stay calm before SYNs go to user space again.
pub const CALM: Duration = Duration::from_secs(10);
/// How long ACKs are still checked after the last SYN answered in XDP: the kernel's cookies are
/// good for up to two minutes (its counter of 64-second periods, `MAX_SYNCOOKIE_AGE` 2).
pub const ACK_WINDOW: Duration = Duration::from_secs(130);
/// A SYN queue this full (percent) is under pressure.
pub const PRESSURE_PERCENT: usize = 90;
/// A SYN that found the queue full this recently means pressure too.
pub const OVERFLOW_WINDOW: Duration = Duration::from_secs(1);

/// The pressure level of one RX queue (`sluice_ebpf::PRESSURE_*`).
#[derive(Debug, Clone, Default)]
pub struct SynPressure {
    level: u32,
    calm_since: Option<Instant>,
    syns_until: Option<Instant>,
}

impl SynPressure {
    /// The level at `now` given whether the SYN queue is under pressure now.
    pub fn update(&mut self, now: Instant, under_pressure: bool) -> u32 {
        if under_pressure {
            self.level = PRESSURE_SYNS;
            self.calm_since = None;
            return self.level;
        }
        match self.level {
            PRESSURE_SYNS => {
                let since = *self.calm_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= CALM {
                    self.level = PRESSURE_ACKS;
                    self.syns_until = Some(now);
                }
            }
            PRESSURE_ACKS if self.syns_until.is_none_or(|t| now.saturating_duration_since(t) >= ACK_WINDOW) => {
                self.level = PRESSURE_OFF;
            }
            _ => {}
        }
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_on_at_once_off_after_calm_then_acks_for_the_window() {
        let mut p = SynPressure::default();
        let t0 = Instant::from_millis(1_000);
        assert_eq!(p.update(t0, false), PRESSURE_OFF);
        assert_eq!(p.update(t0, true), PRESSURE_SYNS);
        // Calm, but not long enough; pressure again restarts the calm period.
        assert_eq!(p.update(t0 + Duration::from_secs(5), false), PRESSURE_SYNS);
        assert_eq!(p.update(t0 + Duration::from_secs(6), true), PRESSURE_SYNS);
        assert_eq!(p.update(t0 + Duration::from_secs(7), false), PRESSURE_SYNS);
        assert_eq!(p.update(t0 + Duration::from_secs(16), false), PRESSURE_SYNS);
        let calm = t0 + Duration::from_secs(17);
        assert_eq!(p.update(calm, false), PRESSURE_ACKS);
        assert_eq!(p.update(calm + ACK_WINDOW - Duration::from_millis(1), false), PRESSURE_ACKS);
        assert_eq!(p.update(calm + ACK_WINDOW, false), PRESSURE_OFF);
        // Pressure during the ACK window answers SYNs again.
        let mut p = SynPressure::default();
        p.update(t0, true);
        p.update(t0 + Duration::from_secs(1), false);
        assert_eq!(p.update(t0 + Duration::from_secs(12), false), PRESSURE_ACKS);
        assert_eq!(p.update(t0 + Duration::from_secs(13), true), PRESSURE_SYNS);
    }
}
