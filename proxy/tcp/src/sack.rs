//! The sender's SACK scoreboard and the loss-recovery helpers of RFC 6675.
//!
//! It records which bytes above SND.UNA the peer has SACKed (RFC 2018), and answers IsLost
//! (6675 section 4: DupThresh discontiguous SACKed ranges, or more than (DupThresh - 1) * SMSS
//! bytes SACKed, above a sequence number), NextSeg (rule 1: the first unSACKed byte above HighRxt
//! that is lost) and pipe (the bytes estimated to be in flight). What this is not: the
//! congestion window (see `congestion`) or the decision to enter recovery (see `connection`).
//! After a retransmission timeout the scoreboard is cleared (RFC 2018 section 8, RFC 6675 5.1).

use crate::ranges::RangeSet;
use crate::seq::SeqNumber;

/// RFC 6675 DupThresh.
pub const DUP_THRESH: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Scoreboard {
    sacked: RangeSet,
}

impl Scoreboard {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    pub fn clear(&mut self) {
        self.sacked.clear();
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sacked.is_empty()
    }
    /// Bytes SACKed above SND.UNA.
    #[must_use]
    pub fn sacked_bytes(&self) -> usize {
        self.sacked.bytes()
    }
    /// Highest SACKed sequence number (exclusive end), if any.
    #[must_use]
    pub fn high_sacked(&self) -> Option<SeqNumber> {
        self.sacked.as_slice().last().map(|r| r.right)
    }
    #[must_use]
    pub fn is_sacked(&self, seq: SeqNumber) -> bool {
        self.sacked.contains(seq)
    }

    /// Record one SACK block; blocks outside `(snd_una, snd_max]` are ignored (RFC 2018 is
    /// advisory; a block covering unsent data is bogus). Returns whether it added information.
    pub fn on_sack_block(&mut self, snd_una: SeqNumber, snd_max: SeqNumber, left: SeqNumber, right: SeqNumber) -> bool {
        if right <= left || left < snd_una || right > snd_max {
            return false;
        }
        let before = self.sacked.bytes();
        // When full, new information is dropped; recovery then falls back to NewReno behaviour.
        let _ = self.sacked.insert(left, right);
        self.sacked.bytes() != before
    }

    /// The cumulative ACK advanced to `snd_una`.
    pub fn on_ack(&mut self, snd_una: SeqNumber) {
        self.sacked.remove_below(snd_una);
    }

    /// The boundary below which every unSACKed byte IsLost (RFC 6675 section 4, IsLost):
    /// the left edge of the lowest SACKed range such that at least DupThresh ranges or more than
    /// (DupThresh - 1) * SMSS bytes are SACKed at or above it. `None`: nothing is lost.
    #[must_use]
    pub fn lost_boundary(&self, mss: usize) -> Option<SeqNumber> {
        let mut bytes = 0usize;
        for (count, r) in self.sacked.as_slice().iter().rev().enumerate() {
            bytes += r.len();
            if count + 1 >= DUP_THRESH || bytes > (DUP_THRESH - 1) * mss {
                return Some(r.left);
            }
        }
        None
    }

    /// IsLost(seq).
    #[must_use]
    pub fn is_lost(&self, seq: SeqNumber, mss: usize) -> bool {
        !self.is_sacked(seq) && self.lost_boundary(mss).is_some_and(|b| seq < b)
    }

    /// NextSeg rule 1 (RFC 6675 section 4): the first unSACKed, lost range starting at or after
    /// `max(high_rxt, snd_una)`, at most `mss` bytes long.
    #[must_use]
    pub fn next_seg(&self, snd_una: SeqNumber, high_rxt: SeqNumber, mss: usize) -> Option<(SeqNumber, usize)> {
        let boundary = self.lost_boundary(mss)?;
        let mut seq = high_rxt.max(snd_una);
        for r in self.sacked.as_slice() {
            if seq >= boundary {
                return None;
            }
            if r.right <= seq {
                continue;
            }
            if r.left <= seq {
                seq = r.right;
                continue;
            }
            // A hole [seq, r.left).
            let len = (r.left - seq).min(mss);
            return Some((seq, len));
        }
        None
    }

    /// pipe (RFC 6675 section 4, SetPipe) over `[snd_una, snd_nxt)`: every byte not SACKed
    /// counts once unless it IsLost, and once more if it was retransmitted (below `high_rxt`).
    #[must_use]
    pub fn pipe(&self, snd_una: SeqNumber, snd_nxt: SeqNumber, high_rxt: SeqNumber, mss: usize) -> usize {
        let outstanding = snd_nxt - snd_una;
        let unsacked = outstanding.saturating_sub(self.sacked_bytes());
        let boundary = self.lost_boundary(mss).unwrap_or(snd_una).min(snd_nxt);
        let lost = self.unsacked_between(snd_una, boundary);
        let rexmit_end = high_rxt.min(boundary).max(snd_una);
        let retransmitted = self.unsacked_between(snd_una, rexmit_end);
        unsacked - lost.min(unsacked) + retransmitted
    }

    fn unsacked_between(&self, lo: SeqNumber, hi: SeqNumber) -> usize {
        if hi <= lo {
            return 0;
        }
        let mut n = hi - lo;
        for r in self.sacked.as_slice() {
            let l = r.left.max(lo);
            let h = r.right.min(hi);
            if l < h {
                n -= h - l;
            }
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
    const MSS: usize = 100;

    /// Ten segments 0..1000 sent; segment 0 lost, 1..=k SACKed.
    fn board(k: u32) -> Scoreboard {
        let mut b = Scoreboard::new();
        for i in 1..=k {
            b.on_sack_block(s(0), s(1000), s(i * 100), s(i * 100 + 100));
        }
        b
    }

    #[test]
    fn islost_needs_dupthresh() {
        // 2 segments (200 bytes, 1 range after merging) SACKed: not > 2*MSS yet.
        let b = board(2);
        assert!(!b.is_lost(s(0), MSS));
        let b = board(3);
        assert!(b.is_lost(s(0), MSS));
        assert!(b.is_lost(s(99), MSS));
        assert!(!b.is_lost(s(100), MSS));
        assert!(!b.is_lost(s(500), MSS));
    }

    #[test]
    fn islost_by_discontiguous_ranges() {
        let mut b = Scoreboard::new();
        for i in [1u32, 3, 5] {
            b.on_sack_block(s(0), s(1000), s(i * 100), s(i * 100 + 10));
        }
        // Three ranges above 0, only two above 200.
        assert!(b.is_lost(s(0), MSS));
        assert!(!b.is_lost(s(200), MSS));
        assert!(!b.is_lost(s(400), MSS));
    }

    #[test]
    fn next_seg_walks_holes() {
        let mut b = Scoreboard::new();
        // Holes at 0..100 and 200..300; SACKed 100..200 and 300..700.
        b.on_sack_block(s(0), s(1000), s(100), s(200));
        b.on_sack_block(s(0), s(1000), s(300), s(700));
        assert_eq!(b.next_seg(s(0), s(0), MSS), Some((s(0), 100)));
        assert_eq!(b.next_seg(s(0), s(100), MSS), Some((s(200), 100)));
        assert_eq!(b.next_seg(s(0), s(300), MSS), None);
    }

    #[test]
    fn pipe_accounts_lost_and_retransmitted() {
        let b = board(3);
        // Outstanding 1000, sacked 300, lost 100 (0..100): pipe = 700 - 100 = 600.
        assert_eq!(b.pipe(s(0), s(1000), s(0), MSS), 600);
        // After retransmitting the lost segment: +100.
        assert_eq!(b.pipe(s(0), s(1000), s(100), MSS), 700);
        // Without SACK information pipe is the flight size.
        let e = Scoreboard::new();
        assert_eq!(e.pipe(s(0), s(1000), s(0), MSS), 1000);
    }

    #[test]
    fn bogus_blocks_ignored_and_ack_prunes() {
        let mut b = Scoreboard::new();
        assert!(!b.on_sack_block(s(100), s(1000), s(50), s(150)));
        assert!(!b.on_sack_block(s(100), s(1000), s(900), s(1100)));
        assert!(!b.on_sack_block(s(100), s(1000), s(300), s(300)));
        assert!(b.on_sack_block(s(100), s(1000), s(300), s(400)));
        assert!(!b.on_sack_block(s(100), s(1000), s(300), s(400)));
        b.on_ack(s(350));
        assert_eq!(b.sacked_bytes(), 50);
        b.on_ack(s(400));
        assert!(b.is_empty());
    }
}
