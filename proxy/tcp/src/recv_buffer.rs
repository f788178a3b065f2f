//! The receive side: a ring holding in-order bytes not yet read by the application, plus
//! out-of-order bytes placed at their offset and tracked by a bounded range set (reassembly).
//!
//! Overlapping and duplicated segments are accepted: bytes already held are overwritten with
//! the (identical, for a sane peer) new copy and the range set merges. Held bytes never exceed the
//! ring's capacity (the data beyond the advertised window is trimmed by the caller and again
//! here), and the number of holes is bounded by `ranges::MAX_RANGES` (RFC 9293 3.10.7.4,
//! "segment text"; RFC 2018 for the SACK blocks built from the held ranges).

use crate::ranges::{Range, RangeSet};
use crate::ring::Ring;
use crate::seq::SeqNumber;

#[derive(Debug, Clone)]
pub struct RecvBuffer {
    ring: Ring,
    /// Out-of-order data held beyond `rcv_nxt`, in sequence space.
    ooo: RangeSet,
}

/// Outcome of placing one segment's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placed {
    /// Bytes that became in order (rcv_nxt advances by this much).
    pub advanced: usize,
    /// The segment was (at least partly) beyond rcv_nxt: out of order.
    pub out_of_order: bool,
    /// Bytes of the segment that were outside the window and discarded.
    pub trimmed: usize,
    /// The segment was refused because reassembly would need too many holes.
    pub refused: bool,
}

impl RecvBuffer {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        RecvBuffer { ring: Ring::new(capacity), ooo: RangeSet::new() }
    }
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
    /// In-order bytes ready for the application.
    #[must_use]
    pub fn readable(&self) -> usize {
        self.ring.len()
    }
    /// Space for new data beyond what is readable (the receive window).
    #[must_use]
    pub fn window(&self) -> usize {
        self.ring.free()
    }
    /// Out-of-order bytes held.
    #[must_use]
    pub fn held_out_of_order(&self) -> usize {
        self.ooo.bytes()
    }
    #[must_use]
    pub fn has_out_of_order(&self) -> bool {
        !self.ooo.is_empty()
    }
    /// Out-of-order ranges, most recent first, for SACK blocks (RFC 2018 section 4).
    pub fn sack_ranges(&self, out: &mut [Option<Range>]) -> usize {
        self.ooo.most_recent(out)
    }

    /// Place `data` starting at `seq`, with `rcv_nxt` the next expected byte.
    pub fn place(&mut self, rcv_nxt: SeqNumber, seq: SeqNumber, data: &[u8]) -> Placed {
        let mut out = Placed::default();
        let mut seq = seq;
        let mut data = data;
        // Drop the part already received (before rcv_nxt).
        if seq < rcv_nxt {
            let skip = (rcv_nxt - seq).min(data.len());
            data = &data[skip..];
            seq = rcv_nxt;
        }
        let offset = seq - rcv_nxt;
        let window = self.window();
        if offset >= window {
            out.trimmed = data.len();
            return out;
        }
        let fit = data.len().min(window - offset);
        out.trimmed = data.len() - fit;
        let data = &data[..fit];
        if data.is_empty() {
            return out;
        }
        out.out_of_order = offset > 0;
        let end = seq + data.len();
        if offset > 0 {
            if self.ooo.insert(seq, end).is_err() {
                out.refused = true;
                return out;
            }
            let len = self.ring.len();
            self.ring.write_at(len + offset, data);
            return out;
        }
        let len = self.ring.len();
        self.ring.write_at(len, data);
        let mut new_nxt = end;
        // Pull in held ranges that are now contiguous.
        while let Some(r) = self.ooo.pop_front_if_starts_at(new_nxt) {
            new_nxt = new_nxt.max(r.right);
        }
        self.ooo.remove_below(new_nxt);
        let advanced = new_nxt - rcv_nxt;
        self.ring.commit(advanced);
        out.advanced = advanced;
        out
    }

    /// Forget everything held.
    pub fn clear(&mut self) {
        self.ring.clear();
        self.ooo.clear();
    }

    /// Copy out and consume up to `buf.len()` in-order bytes.
    /// Storage goes back once nothing is held, in order or not.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.ring.pop(buf);
        if self.ooo.is_empty() {
            self.ring.release();
        }
        n
    }

    /// Under memory pressure: the storage cut to what the readable bytes need, unless
    /// out-of-order data lies beyond them. Returns the bytes given back.
    pub fn shrink(&mut self) -> usize {
        if self.ooo.is_empty() { self.ring.shrink() } else { 0 }
    }

    /// Bytes of storage allocated now (grows with the bytes held, up to the capacity).
    #[must_use]
    pub fn storage(&self) -> usize {
        self.ring.storage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn s(x: u32) -> SeqNumber {
        SeqNumber(x)
    }

    #[test]
    fn in_order() {
        let mut b = RecvBuffer::new(16);
        let p = b.place(s(100), s(100), b"hello");
        assert_eq!(p.advanced, 5);
        assert!(!p.out_of_order);
        assert_eq!(b.window(), 11);
        let mut out = [0u8; 16];
        assert_eq!(b.read(&mut out), 5);
        assert_eq!(&out[..5], b"hello");
        assert_eq!(b.window(), 16);
    }

    #[test]
    fn out_of_order_then_fill() {
        let mut b = RecvBuffer::new(32);
        let p = b.place(s(0), s(5), b"world");
        assert_eq!(p.advanced, 0);
        assert!(p.out_of_order);
        assert_eq!(b.held_out_of_order(), 5);
        let p = b.place(s(0), s(0), b"hello");
        assert_eq!(p.advanced, 10);
        assert_eq!(b.held_out_of_order(), 0);
        let mut out = [0u8; 32];
        assert_eq!(b.read(&mut out), 10);
        assert_eq!(&out[..10], b"helloworld");
    }

    #[test]
    fn overlapping_and_duplicate() {
        let mut b = RecvBuffer::new(32);
        b.place(s(0), s(4), b"4567");
        b.place(s(0), s(2), b"2345");
        b.place(s(0), s(6), b"6789");
        assert_eq!(b.place(s(0), s(0), b"012").advanced, 10);
        // A duplicate of old data advances nothing.
        assert_eq!(b.place(s(10), s(3), b"3456789").advanced, 0);
        // Partially old, partially new.
        assert_eq!(b.place(s(10), s(8), b"89ab").advanced, 2);
        let mut out = [0u8; 32];
        assert_eq!(b.read(&mut out), 12);
        assert_eq!(&out[..12], b"0123456789ab");
    }

    #[test]
    fn trimmed_to_window() {
        let mut b = RecvBuffer::new(8);
        let p = b.place(s(0), s(0), b"0123456789");
        assert_eq!(p.advanced, 8);
        assert_eq!(p.trimmed, 2);
        assert_eq!(b.window(), 0);
        let p = b.place(s(8), s(8), b"89");
        assert_eq!(p.trimmed, 2);
        assert_eq!(p.advanced, 0);
        let p = b.place(s(8), s(100), b"x");
        assert_eq!(p.trimmed, 1);
    }

    #[test]
    fn sack_ranges_most_recent_first() {
        let mut b = RecvBuffer::new(100);
        b.place(s(0), s(10), b"aa");
        b.place(s(0), s(20), b"bb");
        let mut out = [None; 3];
        assert_eq!(b.sack_ranges(&mut out), 2);
        assert_eq!(out[0].unwrap().left, s(20));
        assert_eq!(out[1].unwrap().left, s(10));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any permutation (with duplicates) of a stream's segments reassembles to the stream.
        #[test]
        fn reassembles_any_order(
            len in 1usize..300,
            cuts in proptest::collection::vec(0usize..300, 0..20),
            order in proptest::collection::vec(0usize..1000, 1..60),
            isn: u32,
        ) {
            let stream: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < len).collect();
            bounds.push(0);
            bounds.push(len);
            bounds.sort_unstable();
            bounds.dedup();
            let segs: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
            let mut b = RecvBuffer::new(512);
            let mut rcv_nxt = SeqNumber(isn);
            let deliver = |b: &mut RecvBuffer, rcv_nxt: &mut SeqNumber, (l, r): (usize, usize)| {
                let p = b.place(*rcv_nxt, SeqNumber(isn) + l, &stream[l..r]);
                *rcv_nxt += p.advanced;
            };
            for o in order {
                let k = o % segs.len();
                deliver(&mut b, &mut rcv_nxt, segs[k]);
            }
            for &sg in &segs {
                deliver(&mut b, &mut rcv_nxt, sg);
            }
            let mut out = vec![0u8; 512];
            let n = b.read(&mut out);
            proptest::prop_assert_eq!(&out[..n], &stream[..]);
            proptest::prop_assert_eq!(rcv_nxt, SeqNumber(isn) + len);
        }
    }
}
