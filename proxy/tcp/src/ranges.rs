//! A small bounded set of disjoint sequence ranges `[left, right)`, kept sorted and merged.
//!
//! Used by the receiver's reassembly (`assembler`, RFC 9293 3.10.7.4 "segment text") and SACK
//! block generation (RFC 2018 section 4, most recently changed block first), and by the sender's
//! SACK scoreboard (`sack`, RFC 6675). The bound (`MAX_RANGES`) limits the state a peer can make
//! us hold; an insert that would exceed it is refused and the caller drops the segment.

use crate::seq::SeqNumber;

/// Largest number of disjoint ranges held.
pub const MAX_RANGES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub left: SeqNumber,
    pub right: SeqNumber,
    /// Insertion stamp of the last change, for "most recent first" (RFC 2018 section 4).
    pub stamp: u32,
}

impl Range {
    #[must_use]
    pub fn len(&self) -> usize {
        self.right - self.left
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Error: the insert would need more than `MAX_RANGES` ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRanges;

#[derive(Debug, Clone)]
pub struct RangeSet {
    ranges: [Range; MAX_RANGES],
    count: usize,
    clock: u32,
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeSet {
    #[must_use]
    pub fn new() -> Self {
        let empty = Range { left: SeqNumber(0), right: SeqNumber(0), stamp: 0 };
        RangeSet { ranges: [empty; MAX_RANGES], count: 0, clock: 0 }
    }
    #[must_use]
    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.count]
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn clear(&mut self) {
        self.count = 0;
    }
    /// Total bytes covered.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.as_slice().iter().map(Range::len).sum()
    }

    /// Insert `[left, right)`, merging with overlapping or adjacent ranges.
    pub fn insert(&mut self, left: SeqNumber, right: SeqNumber) -> Result<(), TooManyRanges> {
        if right <= left {
            return Ok(());
        }
        self.clock = self.clock.wrapping_add(1);
        let stamp = self.clock;
        // First range whose right edge reaches `left` (could merge).
        let mut i = 0;
        while i < self.count && self.ranges[i].right < left {
            i += 1;
        }
        // Ranges [i, j) overlap or touch the new one.
        let mut j = i;
        let (mut l, mut r) = (left, right);
        while j < self.count && self.ranges[j].left <= right {
            l = l.min(self.ranges[j].left);
            r = r.max(self.ranges[j].right);
            j += 1;
        }
        let merged = Range { left: l, right: r, stamp };
        if i == j {
            if self.count == MAX_RANGES {
                return Err(TooManyRanges);
            }
            self.ranges.copy_within(i..self.count, i + 1);
            self.ranges[i] = merged;
            self.count += 1;
        } else {
            self.ranges[i] = merged;
            self.ranges.copy_within(j..self.count, i + 1);
            self.count -= j - i - 1;
        }
        Ok(())
    }

    /// Forget everything below `seq` (cumulative ACK / rcv_nxt advance).
    pub fn remove_below(&mut self, seq: SeqNumber) {
        let mut drop = 0;
        while drop < self.count && self.ranges[drop].right <= seq {
            drop += 1;
        }
        self.ranges.copy_within(drop..self.count, 0);
        self.count -= drop;
        if self.count > 0 && self.ranges[0].left < seq {
            self.ranges[0].left = seq;
        }
    }

    /// Remove and return the first range if it starts at or before `seq`.
    pub fn pop_front_if_starts_at(&mut self, seq: SeqNumber) -> Option<Range> {
        if self.count > 0 && self.ranges[0].left <= seq {
            let r = self.ranges[0];
            self.ranges.copy_within(1..self.count, 0);
            self.count -= 1;
            Some(r)
        } else {
            None
        }
    }

    /// Whether `seq` lies in a range.
    #[must_use]
    pub fn contains(&self, seq: SeqNumber) -> bool {
        self.as_slice().iter().any(|r| r.left <= seq && seq < r.right)
    }

    /// Up to `out.len()` ranges, most recently changed first (RFC 2018 section 4).
    pub fn most_recent(&self, out: &mut [Option<Range>]) -> usize {
        let mut n = 0;
        let mut taken = [false; MAX_RANGES];
        while n < out.len() {
            let mut best: Option<usize> = None;
            for (k, r) in self.as_slice().iter().enumerate() {
                if !taken[k] && best.is_none_or(|b| r.stamp.wrapping_sub(self.ranges[b].stamp) as i32 > 0) {
                    best = Some(k);
                }
            }
            let Some(b) = best else { break };
            taken[b] = true;
            out[n] = Some(self.ranges[b]);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(x: u32) -> SeqNumber {
        SeqNumber(x)
    }
    fn pairs(r: &RangeSet) -> Vec<(u32, u32)> {
        r.as_slice().iter().map(|x| (x.left.0, x.right.0)).collect()
    }

    #[test]
    fn insert_merges() {
        let mut r = RangeSet::new();
        r.insert(s(10), s(20)).unwrap();
        r.insert(s(30), s(40)).unwrap();
        r.insert(s(0), s(5)).unwrap();
        assert_eq!(pairs(&r), vec![(0, 5), (10, 20), (30, 40)]);
        r.insert(s(20), s(30)).unwrap();
        assert_eq!(pairs(&r), vec![(0, 5), (10, 40)]);
        r.insert(s(3), s(50)).unwrap();
        assert_eq!(pairs(&r), vec![(0, 50)]);
        assert_eq!(r.bytes(), 50);
        r.insert(s(7), s(7)).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn wraps_around_zero() {
        let mut r = RangeSet::new();
        r.insert(s(u32::MAX - 5), s(4)).unwrap();
        r.insert(s(10), s(12)).unwrap();
        assert_eq!(pairs(&r), vec![(u32::MAX - 5, 4), (10, 12)]);
        r.remove_below(s(1));
        assert_eq!(pairs(&r), vec![(1, 4), (10, 12)]);
        assert!(r.contains(s(3)));
        assert!(!r.contains(s(4)));
    }

    #[test]
    fn bounded() {
        let mut r = RangeSet::new();
        for k in 0..MAX_RANGES as u32 {
            r.insert(s(k * 10), s(k * 10 + 5)).unwrap();
        }
        assert_eq!(r.insert(s(1000), s(1001)), Err(TooManyRanges));
        // Merging into an existing range still works when full.
        r.insert(s(5), s(10)).unwrap();
        assert_eq!(r.len(), MAX_RANGES - 1);
    }

    #[test]
    fn most_recent_first() {
        let mut r = RangeSet::new();
        r.insert(s(10), s(20)).unwrap();
        r.insert(s(30), s(40)).unwrap();
        r.insert(s(50), s(60)).unwrap();
        r.insert(s(20), s(22)).unwrap();
        let mut out = [None; 4];
        assert_eq!(r.most_recent(&mut out), 3);
        assert_eq!(out[0].unwrap().left, s(10));
        assert_eq!(out[1].unwrap().left, s(50));
        assert_eq!(out[2].unwrap().left, s(30));
        assert_eq!(out[3], None);
    }

    proptest::proptest! {
        #[test]
        fn model(ops in proptest::collection::vec((0u32..200, 0u32..20), 0..60)) {
            let mut r = RangeSet::new();
            let mut model = [false; 220];
            for (l, n) in ops {
                if r.insert(s(l), s(l + n)).is_ok() {
                    for k in l..l + n { model[k as usize] = true; }
                }
            }
            for k in 0..220u32 {
                proptest::prop_assert_eq!(r.contains(s(k)), model[k as usize]);
            }
            let sl = r.as_slice();
            for w in sl.windows(2) {
                proptest::prop_assert!(w[0].right < w[1].left);
            }
        }
    }
}
