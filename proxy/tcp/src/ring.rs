//! A bounded byte ring, used by both stream buffers.
//!
//! Offsets are relative to the head (the oldest byte). Writing past `len` (for out-of-order
//! reassembly) is allowed up to the capacity; `commit` then makes those bytes part of `len`.
//! No method panics on any offset or length: out-of-range requests are clipped.
//!
//! The capacity is a bound, not an allocation: storage starts empty and doubles (from
//! [`MIN_STORAGE`]) only as far as the bytes written need, so a connection that carries a
//! handshake and a short request holds a few KiB, not its whole window. [`Ring::release`] gives
//! the storage back once its owner knows no byte is held.

/// The first storage a ring allocates.
pub const MIN_STORAGE: usize = 1024;

/// Bounded ring of bytes.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Storage, `<= capacity` long; positions wrap modulo its length.
    buf: Vec<u8>,
    capacity: usize,
    head: usize,
    len: usize,
}

impl Ring {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Ring { buf: Vec::new(), capacity, head: 0, len: 0 }
    }
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Bytes of storage allocated now.
    #[must_use]
    pub fn storage(&self) -> usize {
        self.buf.len()
    }
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    #[must_use]
    pub fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// Make the storage at least `needed` bytes long (bounded by the capacity), keeping every
    /// byte it held, in order from the head.
    fn reserve(&mut self, needed: usize) {
        let old = self.buf.len();
        if needed <= old {
            return;
        }
        let size = needed.next_power_of_two().max(MIN_STORAGE).max(old * 2).min(self.capacity);
        let mut grown = vec![0; size];
        let first = old - self.head;
        grown[..first].copy_from_slice(&self.buf[self.head..]);
        grown[first..old].copy_from_slice(&self.buf[..self.head]);
        self.buf = grown;
        self.head = 0;
    }

    /// Give the storage back when no byte is held (the owner knows nothing lies beyond `len`).
    pub fn release(&mut self) {
        if self.len == 0 {
            self.buf = Vec::new();
            self.head = 0;
        }
    }

    /// Copy `data` at `offset` from the head (may be beyond `len`); clipped to the capacity.
    /// Returns the number of bytes written.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        if offset >= self.capacity {
            return 0;
        }
        let n = data.len().min(self.capacity - offset);
        if n == 0 {
            return 0;
        }
        self.reserve(offset + n);
        let cap = self.buf.len();
        let start = (self.head + offset) % cap;
        let first = n.min(cap - start);
        self.buf[start..start + first].copy_from_slice(&data[..first]);
        self.buf[..n - first].copy_from_slice(&data[first..n]);
        n
    }

    /// Append at the tail; returns the number of bytes accepted.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        let written = self.write_at(self.len, &data[..n]);
        self.len += written;
        written
    }

    /// Make `n` bytes beyond `len` (already written with `write_at`) readable.
    pub fn commit(&mut self, n: usize) {
        // Only bytes that were written can become readable.
        self.len = (self.len + n).min(self.buf.len());
    }

    /// Copy bytes at `offset` from the head, up to `len`; returns the number copied.
    #[must_use]
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let cap = self.buf.len();
        let n = out.len().min(self.len - offset);
        let start = (self.head + offset) % cap;
        let first = n.min(cap - start);
        out[..first].copy_from_slice(&self.buf[start..start + first]);
        out[first..n].copy_from_slice(&self.buf[..n - first]);
        n
    }

    /// Drop `n` bytes from the head.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        if !self.buf.is_empty() {
            self.head = (self.head + n) % self.buf.len();
        }
        // The head is not reset when the ring empties: bytes written beyond `len`
        // (out-of-order data) stay where they are.
        self.len -= n;
    }

    /// Under memory pressure: cut the storage to what the bytes held need (the next power of
    /// two, at least [`MIN_STORAGE`]), for an owner that knows nothing lies beyond `len`.
    /// Returns the bytes given back.
    pub fn shrink(&mut self) -> usize {
        let old = self.buf.len();
        if self.len == 0 {
            self.release();
            return old;
        }
        let target = self.len.next_power_of_two().max(MIN_STORAGE).min(self.capacity);
        if old <= target {
            return 0;
        }
        let mut smaller = vec![0; target];
        let n = self.read_at(0, &mut smaller[..self.len]);
        debug_assert_eq!(n, self.len);
        self.buf = smaller;
        self.head = 0;
        old - target
    }

    /// Forget every byte (and the storage).
    pub fn clear(&mut self) {
        self.len = 0;
        self.release();
    }

    /// Read and consume.
    pub fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = self.read_at(0, out);
        self.consume(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_the_bytes_in_order_and_gives_back_the_slack() {
        let mut r = Ring::new(1 << 20);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        assert_eq!(r.push(&data), data.len());
        assert_eq!(r.storage(), 131_072);
        // Most of it is consumed, the head sits mid-storage and the rest wraps.
        r.consume(99_000);
        r.push(&data[..2_000]);
        assert_eq!(r.shrink(), 131_072 - 4096);
        assert_eq!(r.storage(), 4096);
        let mut out = vec![0u8; 3_000];
        assert_eq!(r.read_at(0, &mut out), 3_000);
        assert_eq!(&out[..1_000], &data[99_000..]);
        assert_eq!(&out[1_000..], &data[..2_000]);
        assert_eq!(r.shrink(), 0, "nothing more to give");
        r.consume(3_000);
        assert_eq!(r.shrink(), 4096);
        assert_eq!(r.storage(), 0);
    }

    #[test]
    fn push_pop_wraps() {
        let mut r = Ring::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        let mut out = [0u8; 4];
        assert_eq!(r.pop(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(r.push(b"ghijklmn"), 6);
        assert_eq!(r.len(), 8);
        let mut out = [0u8; 8];
        assert_eq!(r.read_at(0, &mut out), 8);
        assert_eq!(&out, b"efghijkl");
        assert_eq!(r.read_at(6, &mut out), 2);
        assert_eq!(&out[..2], b"kl");
        assert_eq!(r.read_at(8, &mut out), 0);
    }

    #[test]
    fn write_beyond_len_then_commit() {
        let mut r = Ring::new(8);
        r.push(b"ab");
        r.consume(2);
        assert_eq!(r.write_at(3, b"xyz"), 3);
        assert_eq!(r.write_at(0, b"abc"), 3);
        r.commit(6);
        let mut out = [0u8; 6];
        assert_eq!(r.pop(&mut out), 6);
        assert_eq!(&out, b"abcxyz");
        assert_eq!(r.write_at(7, b"0123"), 1);
        assert_eq!(r.write_at(100, b"0123"), 0);
    }

    #[test]
    fn draining_keeps_bytes_beyond_len() {
        let mut r = Ring::new(8);
        r.push(b"abc");
        r.write_at(5, b"xy");
        let mut out = [0u8; 3];
        assert_eq!(r.pop(&mut out), 3);
        r.write_at(0, b"01");
        r.commit(4);
        let mut out = [0u8; 4];
        assert_eq!(r.pop(&mut out), 4);
        assert_eq!(&out, b"01xy");
    }

    #[test]
    fn storage_grows_with_the_bytes_held_and_is_released() {
        let mut r = Ring::new(256 * 1024);
        assert_eq!(r.storage(), 0, "nothing is allocated before a byte arrives");
        r.push(&[7; 100]);
        assert_eq!(r.storage(), MIN_STORAGE);
        r.push(&[8; 5000]);
        assert_eq!(r.storage(), 8192, "doubled as far as needed");
        let mut out = vec![0; 5100];
        assert_eq!(r.pop(&mut out), 5100);
        assert!(out[..100].iter().all(|&b| b == 7) && out[100..].iter().all(|&b| b == 8));
        r.release();
        assert_eq!(r.storage(), 0);
        r.push(b"x");
        r.release();
        assert_eq!(r.storage(), MIN_STORAGE, "not released while a byte is held");
    }

    #[test]
    fn growing_keeps_wrapped_and_out_of_order_bytes_in_place() {
        let mut r = Ring::new(1 << 20);
        let fill: Vec<u8> = (0..MIN_STORAGE).map(|i| i as u8).collect();
        r.push(&fill);
        r.consume(1000);
        r.push(&[0xaa; 500]); // wraps in the first storage
        r.write_at(MIN_STORAGE, b"hole then"); // beyond len: out-of-order
        assert!(r.storage() > MIN_STORAGE);
        r.write_at(524, &[0xbb; 500]);
        r.commit(MIN_STORAGE + 9 - r.len());
        let mut out = vec![0; MIN_STORAGE + 9];
        assert_eq!(r.pop(&mut out), MIN_STORAGE + 9);
        assert_eq!(out[..24], fill[1000..]);
        assert!(out[24..524].iter().all(|&b| b == 0xaa));
        assert!(out[524..MIN_STORAGE].iter().all(|&b| b == 0xbb));
        assert_eq!(&out[MIN_STORAGE..], b"hole then");
    }

    #[test]
    fn zero_capacity_is_harmless() {
        let mut r = Ring::new(0);
        assert_eq!(r.push(b"a"), 0);
        r.consume(3);
        r.commit(3);
        assert_eq!(r.len(), 0);
    }
}
