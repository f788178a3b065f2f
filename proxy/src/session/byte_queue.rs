//! A bounded byte queue: data is appended at the end and consumed from the front.
//!
//! The bound is not an allocation: storage starts empty, doubles from [`MIN_STORAGE`] only as far
//! as the bytes queued need, and goes back when the queue empties, so a relay that carries a
//! handshake and a short exchange holds a few KiB, not four full queues, and an idle keep-alive
//! connection holds none. The smallest storage is kept per thread for the next queue (a
//! worker's relays never leave its thread; bounded by [`SPARE_STORAGE`]), so a handshake-heavy load
//! does not allocate and fault in fresh pages per connection.

/// The first storage a queue takes.
pub const MIN_STORAGE: usize = 4096;

/// Smallest storages kept per thread for reuse.
const SPARE_STORAGE: usize = 1024;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub struct ByteQueue {
    buf: Box<[u8]>,
    limit: usize,
    start: usize,
    end: usize,
}

impl ByteQueue {
    /// A queue that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { buf: Box::default(), limit, start: 0, end: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// The queue holds its limit: [`Self::space_mut`] would be empty (asked without taking
    /// storage).
    pub fn is_full(&self) -> bool {
        self.len() >= self.limit
    }

    /// Bytes of storage held now.
    pub fn storage(&self) -> usize {
        self.buf.len()
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            give_back(std::mem::take(&mut self.buf));
        }
    }

    /// Free space at the end: the data moves to the front first when that makes room, and the
    /// storage grows (up to the limit) when the queue is full of it. Empty only at the limit.
    pub fn space_mut(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() && self.buf.len() < self.limit {
            let size = (self.buf.len() * 2).max(MIN_STORAGE).min(self.limit);
            let mut grown = take_storage(size);
            grown[..self.end].copy_from_slice(&self.buf[..self.end]);
            give_back(std::mem::replace(&mut self.buf, grown));
        }
        &mut self.buf[self.end..]
    }

    /// Makes `n` bytes written into [`Self::space_mut`] part of the queue. Storage taken for a
    /// read or write that brought nothing goes back at once: an idle connection's pump asks for
    /// space on every queue and mostly finds nothing to put there.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
        if self.is_empty() {
            self.consume(0);
        }
    }
}

impl ByteQueue {
    /// Under memory pressure: the storage cut to what the bytes queued need (the next power of
    /// two, at least [`MIN_STORAGE`]). Returns the bytes given back.
    pub fn shrink(&mut self) -> usize {
        let old = self.buf.len();
        if self.is_empty() {
            (self.start, self.end) = (0, 0);
            give_back(std::mem::take(&mut self.buf));
            return old;
        }
        let len = self.len();
        let target = len.next_power_of_two().max(MIN_STORAGE).min(self.limit);
        if old <= target {
            return 0;
        }
        let mut smaller = take_storage(target);
        smaller[..len].copy_from_slice(self.data());
        (self.start, self.end) = (0, len);
        give_back(std::mem::replace(&mut self.buf, smaller));
        old - target
    }
}

impl Drop for ByteQueue {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.buf));
    }
}

/// Storage of `size` bytes: a spare one for the smallest size. Old bytes in reused storage are
/// never exposed: only committed bytes are `data`.
fn take_storage(size: usize) -> Box<[u8]> {
    let spare = match size {
        MIN_STORAGE => SPARE.with_borrow_mut(|spare| spare.pop()),
        _ => None,
    };
    spare.unwrap_or_else(|| vec![0; size].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    if buf.len() == MIN_STORAGE {
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < SPARE_STORAGE {
                spare.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_keeps_the_queued_bytes_and_gives_back_the_slack() {
        let mut q = ByteQueue::new(65536);
        while q.len() < 40_000 {
            let want = 40_000 - q.len();
            let space = q.space_mut();
            let n = space.len().min(want);
            space[..n].fill(7);
            q.commit(n);
        }
        assert_eq!(q.storage(), 65536);
        q.consume(38_000);
        q.space_mut()[..1].fill(9);
        q.commit(1);
        assert_eq!(q.shrink(), 65536 - MIN_STORAGE.max(2048));
        assert_eq!(q.data().len(), 2001);
        assert!(q.data()[..2000].iter().all(|&b| b == 7) && q.data()[2000] == 9);
        assert_eq!(q.shrink(), 0);
        q.consume(2001);
        assert_eq!(q.storage(), 0);
    }

    #[test]
    fn storage_grows_as_bytes_queue_and_goes_back_when_empty() {
        let mut q = ByteQueue::new(65536);
        assert_eq!(q.storage(), 0, "nothing is held before a byte is queued");
        assert_eq!(q.space_mut().len(), MIN_STORAGE);
        q.commit(MIN_STORAGE);
        assert_eq!(q.space_mut().len(), MIN_STORAGE, "doubled when full");
        q.commit(10);
        assert_eq!(q.len(), MIN_STORAGE + 10);
        q.consume(MIN_STORAGE + 10);
        assert_eq!(q.storage(), 0, "an empty queue holds no storage");
        while !q.space_mut().is_empty() {
            let n = q.space_mut().len();
            q.commit(n);
        }
        assert_eq!((q.len(), q.storage()), (65536, 65536), "bounded by the limit");
    }

    #[test]
    fn space_left_unused_goes_back() {
        let mut q = ByteQueue::new(65536);
        assert_eq!(q.space_mut().len(), MIN_STORAGE);
        q.commit(0);
        assert_eq!(q.storage(), 0, "a read that found nothing leaves no storage held");
        q.space_mut()[..2].copy_from_slice(b"hi");
        q.commit(2);
        q.commit(0);
        assert_eq!((q.data(), q.storage()), (&b"hi"[..], MIN_STORAGE), "a queue with bytes keeps its storage");
    }

    #[test]
    fn growing_keeps_the_bytes_in_order() {
        let mut q = ByteQueue::new(1 << 20);
        let data: Vec<u8> = (0..3 * MIN_STORAGE).map(|i| (i % 251) as u8).collect();
        let (mut put, mut consumed) = (0, false);
        while put < data.len() {
            let space = q.space_mut();
            let n = space.len().min(data.len() - put).min(1000);
            space[..n].copy_from_slice(&data[put..put + n]);
            q.commit(n);
            put += n;
            if put >= 5000 && !consumed {
                q.consume(10);
                consumed = true;
            }
        }
        assert_eq!(q.data(), &data[10..]);
    }

    #[test]
    fn dropped_storage_is_reused_empty() {
        let mut q = ByteQueue::new(65536);
        q.space_mut()[..6].copy_from_slice(b"secret");
        q.commit(6);
        let storage = q.buf.as_ptr();
        drop(q);
        let mut q = ByteQueue::new(65536);
        assert!(q.is_empty() && q.data().is_empty(), "no old byte is exposed");
        assert_eq!(q.space_mut().as_ptr(), storage, "the storage is reused");
    }

    #[test]
    fn byte_queue_is_bounded_and_compacts() {
        let mut q = ByteQueue::new(8);
        assert_eq!(q.space_mut().len(), 8);
        q.space_mut()[..5].copy_from_slice(b"hello");
        q.commit(5);
        assert_eq!(q.data(), b"hello");
        q.consume(3);
        assert_eq!(q.data(), b"lo");
        assert_eq!(q.space_mut().len(), 3, "no compaction while the end has room");
        q.space_mut()[..3].copy_from_slice(b"abc");
        q.commit(3);
        assert_eq!(q.space_mut().len(), 3, "compacted: the consumed front is free again");
        assert_eq!(q.data(), b"loabc");
        q.commit(100);
        assert_eq!(q.len(), 8, "commit never runs past the capacity");
        q.consume(100);
        assert!(q.is_empty());
        assert_eq!(q.space_mut().len(), 8);
    }
}
