//! A fixed-capacity byte ring, allocated once per connection, used by both stream buffers.
//!
//! Offsets are relative to the head (the oldest byte). Writing past `len` (for out-of-order
//! reassembly) is allowed up to the capacity; `commit` then makes those bytes part of `len`.
//! No method panics on any offset or length: out-of-range requests are clipped.

/// Fixed-capacity ring of bytes.
#[derive(Debug, Clone)]
pub struct Ring {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl Ring {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Ring {
            buf: vec![0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }
    #[must_use]
    pub fn capacity(&self) -> usize {
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
        self.capacity() - self.len
    }

    /// Copy `data` at `offset` from the head (may be beyond `len`); clipped to the capacity.
    /// Returns the number of bytes written.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> usize {
        let cap = self.capacity();
        if offset >= cap {
            return 0;
        }
        let n = data.len().min(cap - offset);
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
        self.len = (self.len + n).min(self.capacity());
    }

    /// Copy bytes at `offset` from the head, up to `len`; returns the number copied.
    #[must_use]
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        if offset >= self.len {
            return 0;
        }
        let cap = self.capacity();
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
        if self.capacity() > 0 {
            self.head = (self.head + n) % self.capacity();
        }
        // The head is not reset when the ring empties: bytes written beyond `len`
        // (out-of-order data) stay where they are.
        self.len -= n;
    }

    /// Forget every byte.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
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
    fn zero_capacity_is_harmless() {
        let mut r = Ring::new(0);
        assert_eq!(r.push(b"a"), 0);
        r.consume(3);
        r.commit(3);
        assert_eq!(r.len(), 0);
    }
}
