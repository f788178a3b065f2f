//! The endpoint's timer queue: a binary min-heap of `(deadline, slot, generation)` with lazy
//! deletion. A connection that changes its deadline pushes a new entry; stale entries (whose
//! slot no longer has that deadline) are discarded when they reach the top. `peek` is O(1),
//! which makes `poll_timeout` cheap with thousands of connections. What this is not: the
//! per-connection timers (retransmission, delayed ACK, persist, keepalive, TIME-WAIT), which a
//! connection folds into one `next_deadline`.

use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub deadline: Instant,
    pub slot: u32,
    pub generation: u32,
}

#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TimerQueue {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, e: Entry) {
        self.heap.push(Reverse(e));
    }
    #[must_use]
    pub fn peek(&self) -> Option<Entry> {
        self.heap.peek().map(|r| r.0)
    }
    pub fn pop(&mut self) -> Option<Entry> {
        self.heap.pop().map(|r| r.0)
    }
    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
    /// Drop entries at the top for which `is_current` is false, so that `peek` is exact.
    pub fn prune(&mut self, mut is_current: impl FnMut(&Entry) -> bool) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if is_current(e) {
                break;
            }
            self.heap.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_deletion() {
        let mut q = TimerQueue::new();
        let e = |ms, slot| Entry { deadline: Instant::from_millis(ms), slot, generation: 0 };
        q.push(e(30, 1));
        q.push(e(10, 2));
        q.push(e(20, 3));
        // Slot 2 moved its deadline to 40: its old entry is stale.
        q.push(e(40, 2));
        let current = |x: &Entry| !(x.slot == 2 && x.deadline == Instant::from_millis(10));
        q.prune(current);
        assert_eq!(q.peek(), Some(e(20, 3)));
        assert_eq!(q.pop(), Some(e(20, 3)));
        assert_eq!(q.pop(), Some(e(30, 1)));
        assert_eq!(q.pop(), Some(e(40, 2)));
        assert_eq!(q.pop(), None);
    }
}
