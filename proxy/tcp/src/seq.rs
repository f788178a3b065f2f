//! Sequence numbers: 32-bit values compared modulo 2^32 (RFC 9293 section 3.4).
//!
//! `a < b` means "b is ahead of a by less than 2^31"; this is the comparison every TCP uses
//! (Linux's `before()`/`after()`). It is not a total order over the whole space, so it must only
//! be used for numbers known to lie within half the space of each other (always true within
//! one window). What this module is not: window arithmetic (see `connection`).

use core::cmp::Ordering;
use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A TCP sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// The larger of two numbers in sequence space.
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        if self > other { self } else { other }
    }
    /// The smaller of two numbers in sequence space.
    #[must_use]
    pub fn min(self, other: Self) -> Self {
        if self < other { self } else { other }
    }
    /// Signed distance `self - other` (valid when the two are within 2^31).
    #[must_use]
    pub fn diff(self, other: Self) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }
    /// `lo <= self < hi` in sequence space.
    #[must_use]
    pub fn in_range(self, lo: Self, hi: Self) -> bool {
        lo <= self && self < hi
    }
}

impl fmt::Debug for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Display for SeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Add<usize> for SeqNumber {
    type Output = SeqNumber;
    fn add(self, rhs: usize) -> SeqNumber {
        // Lengths added to sequence numbers are always bounded by windows (< 2^31);
        // truncation is modulo 2^32 by definition.
        SeqNumber(self.0.wrapping_add(rhs as u32))
    }
}
impl AddAssign<usize> for SeqNumber {
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}
impl Sub<usize> for SeqNumber {
    type Output = SeqNumber;
    fn sub(self, rhs: usize) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(rhs as u32))
    }
}
/// `a - b` as a length. Saturates at 0 when `b` is ahead of `a` (callers compare first).
impl Sub for SeqNumber {
    type Output = usize;
    fn sub(self, rhs: SeqNumber) -> usize {
        let d = self.diff(rhs);
        if d < 0 { 0 } else { d as usize }
    }
}

impl PartialOrd for SeqNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.diff(*other).cmp(&0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_wraps() {
        let a = SeqNumber(u32::MAX - 10);
        let b = a + 20;
        assert_eq!(b.0, 9);
        assert!(a < b);
        assert!(b > a);
        assert_eq!(b - a, 20);
        assert_eq!(a - b, 0);
        assert_eq!(b.diff(a), 20);
        assert_eq!(a.diff(b), -20);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert!(SeqNumber(u32::MAX).in_range(a, b));
        assert!(SeqNumber(0).in_range(a, b));
        assert!(!b.in_range(a, b));
        assert_eq!(SeqNumber(3) - 5usize, SeqNumber(u32::MAX - 1));
    }

    #[test]
    fn half_space_boundary() {
        let a = SeqNumber(0);
        assert!(a < SeqNumber(0x7fff_ffff));
        // Exactly 2^31 apart the comparison is ambiguous: each is "before" the other.
        assert!(a < SeqNumber(0x8000_0000));
        assert!(SeqNumber(0x8000_0000) < a);
    }

    proptest::proptest! {
        #[test]
        fn add_then_sub_roundtrips(x: u32, n in 0usize..0x7fff_ffff) {
            let a = SeqNumber(x);
            let b = a + n;
            proptest::prop_assert_eq!(b - a, n);
            proptest::prop_assert!(a <= b);
            proptest::prop_assert_eq!(b - n, a);
        }
    }
}
