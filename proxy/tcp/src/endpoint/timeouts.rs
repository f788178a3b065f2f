//! Timeouts (RFC 9293 3.10.8) for all connections: one timer queue with an entry per TCB
//! deadline (`timer`), run by `handle_timeout`, its head told by `poll_timeout`, and its stale
//! entries pruned.
//!
//! What this is not: the timers of one TCB (`connection`'s `timers`).

use super::Endpoint;
use crate::time::Instant;
use crate::timer::{Entry, TimerQueue};

impl Endpoint {
    pub(super) fn prune_timers(&mut self) {
        // Stale entries deeper in the heap are bounded: rebuild when they dominate.
        if self.timers.len() > 4 * self.table.len() + 1024 {
            self.timers = TimerQueue::new();
            for (i, s) in self.slots.iter().enumerate() {
                if let (Some(_), Some(deadline)) = (&s.conn, s.deadline) {
                    self.timers.push(Entry { deadline, slot: i as u32, generation: s.generation });
                }
            }
        }
        let slots = &self.slots;
        self.timers.prune(|e| {
            slots
                .get(e.slot as usize)
                .is_some_and(|s| s.conn.is_some() && s.generation == e.generation && s.deadline == Some(e.deadline))
        });
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
            let current = self
                .slots
                .get(e.slot as usize)
                .is_some_and(|s| s.conn.is_some() && s.generation == e.generation && s.deadline == Some(e.deadline));
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
}
