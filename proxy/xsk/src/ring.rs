//! Single-producer / single-consumer descriptor rings shared with the kernel.
//!
//! What it is: the cursor logic of the four AF_XDP rings (fill, completion, RX, TX), the same
//! protocol as `tools/lib/bpf/xsk.h` / libxdp: free-running `u32` producer and consumer indices
//! (wrapping), a power-of-two descriptor array indexed by `index & mask`, acquire loads of the
//! other side's index and release stores of our own. Batches are `#[must_use]` guards: a
//! [`ProducerBatch`] is rolled back unless submitted, a [`ConsumerBatch`] is cancelled (its
//! entries stay in the ring) unless released.
//!
//! What it is not: it knows nothing of frames or sockets. The memory behind a ring is either an
//! `mmap` of the socket (see `socket.rs`) or, in tests, a heap allocation with the same layout
//! ([`heap_pair`]): the cursor code is the same in both cases.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// The raw view of one ring: where its indices, flags and descriptors live.
pub(crate) struct RingMem<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut T,
    size: u32,
    /// Keeps the memory behind the pointers alive (an mmap region or a heap ring).
    _backing: Arc<dyn Send + Sync>,
    _marker: PhantomData<T>,
}

// SAFETY: a `RingMem` is an owning handle to memory kept alive by `_backing`. The indices are
// atomics; the descriptor slots are only touched by the one producer or consumer object that
// owns this `RingMem` (the other side is the kernel, or a simulated kernel in tests), through
// `&mut self`. Moving it to another thread is therefore sound as long as `T` is `Send`.
unsafe impl<T: Send> Send for RingMem<T> {}

impl<T> RingMem<T> {
    /// Builds a ring view from raw pointers.
    ///
    /// # Safety
    /// - `producer`, `consumer` and `flags` point to aligned `u32`s, and `desc` to an aligned array
    ///   of `size` `T`s, all valid for reads and writes for as long as `backing` is alive;
    /// - `size` is a power of two;
    /// - the caller creates at most one user-side producer or consumer over this memory (the other
    ///   side being the kernel or a test simulation that follows the same protocol).
    pub(crate) unsafe fn new(
        producer: *const AtomicU32,
        consumer: *const AtomicU32,
        flags: *const AtomicU32,
        desc: *mut T,
        size: u32,
        backing: Arc<dyn Send + Sync>,
    ) -> Self {
        debug_assert!(size.is_power_of_two());
        RingMem { producer, consumer, flags, desc, size, _backing: backing, _marker: PhantomData }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned while `_backing` lives (contract of `new`); atomics may be
        // shared with the other side.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }
    }

    fn mask(&self) -> u32 {
        self.size - 1
    }
}

impl<T: Copy> RingMem<T> {
    fn read(&self, idx: u32) -> T {
        // SAFETY: `idx & mask < size`, so the slot is inside the array (contract of `new`). The
        // slot was published by the other side with a release store of its index, which we
        // observed with an acquire load before handing out this index.
        unsafe { self.desc.add((idx & self.mask()) as usize).read() }
    }

    fn write(&mut self, idx: u32, v: T) {
        // SAFETY: `idx & mask < size` (contract of `new`). The slot lies between the consumer's
        // index (acquire-loaded) and our unpublished producer index, so the other side neither
        // reads nor writes it until we publish with a release store.
        unsafe { self.desc.add((idx & self.mask()) as usize).write(v) }
    }
}

const NEED_WAKEUP: u32 = libc::XDP_RING_NEED_WAKEUP;

/// The user side of a ring where user space produces (fill, TX).
pub struct ProducerRing<T> {
    mem: RingMem<T>,
    /// Our producer index, equal to the published one outside a batch.
    cached_prod: u32,
    /// The consumer index last read, plus `size`: `cached_cons - cached_prod` is the free room.
    cached_cons: u32,
}

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let cached_prod = mem.producer().load(Ordering::Relaxed);
        let cached_cons = mem.consumer().load(Ordering::Acquire).wrapping_add(mem.size);
        ProducerRing { mem, cached_prod, cached_cons }
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Free slots; reads the consumer index only when the cached value shows fewer than `want`.
    pub fn free_entries(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free.min(self.mem.size);
        }
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire).wrapping_add(self.mem.size);
        // A consumer index beyond our producer would be a broken peer: never claim more than the
        // ring holds.
        self.cached_cons.wrapping_sub(self.cached_prod).min(self.mem.size)
    }

    /// Entries published but not yet consumed by the other side.
    pub fn pending(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.mem.consumer().load(Ordering::Acquire)).min(self.mem.size)
    }

    /// Reserves up to `n` slots (fewer if the ring has less room, possibly zero).
    pub fn reserve(&mut self, n: u32) -> ProducerBatch<'_, T> {
        let n = n.min(self.free_entries(n));
        let start = self.cached_prod;
        self.cached_prod = start.wrapping_add(n);
        ProducerBatch { ring: self, start, reserved: n, written: 0 }
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        self.mem.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }

    #[cfg(test)]
    pub(crate) fn set_need_wakeup(&self, on: bool) {
        self.mem.flags().store(if on { NEED_WAKEUP } else { 0 }, Ordering::Relaxed);
    }
}

/// Slots reserved in a [`ProducerRing`]: fill them with [`push`](Self::push), then
/// [`submit`](Self::submit). Dropping the batch rolls the reservation back.
#[must_use = "a producer batch is rolled back unless submitted"]
pub struct ProducerBatch<'a, T: Copy> {
    ring: &'a mut ProducerRing<T>,
    start: u32,
    reserved: u32,
    written: u32,
}

impl<T: Copy> ProducerBatch<'_, T> {
    /// Slots reserved.
    pub fn capacity(&self) -> u32 {
        self.reserved
    }

    /// Slots written so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn len(&self) -> u32 {
        self.written
    }

    /// Writes the next descriptor; gives it back if the reservation is full.
    pub fn push(&mut self, v: T) -> Result<(), T> {
        if self.written == self.reserved {
            return Err(v);
        }
        let idx = self.start.wrapping_add(self.written);
        self.ring.mem.write(idx, v);
        self.written += 1;
        Ok(())
    }

    /// Publishes the written descriptors (release store of the producer index) and gives back
    /// the reserved slots that were not written. Returns how many were published.
    pub fn submit(self) -> u32 {
        let end = self.start.wrapping_add(self.written);
        let n = self.written;
        self.ring.cached_prod = end;
        self.ring.mem.producer().store(end, Ordering::Release);
        std::mem::forget(self);
        n
    }
}

impl<T: Copy> Drop for ProducerBatch<'_, T> {
    fn drop(&mut self) {
        // Not submitted: nothing was published, so the whole reservation goes back.
        self.ring.cached_prod = self.start;
    }
}

/// The user side of a ring where user space consumes (RX, completion).
pub struct ConsumerRing<T> {
    mem: RingMem<T>,
    /// The producer index last read.
    cached_prod: u32,
    /// Our consumer index, equal to the published one outside a batch.
    cached_cons: u32,
}

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let cached_cons = mem.consumer().load(Ordering::Relaxed);
        let cached_prod = mem.producer().load(Ordering::Acquire);
        ConsumerRing { mem, cached_prod, cached_cons }
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Entries ready to read, at most `want`; reads the producer index only when the cached
    /// value shows fewer than `want`.
    pub fn available(&mut self, want: u32) -> u32 {
        let mut entries = self.cached_prod.wrapping_sub(self.cached_cons);
        if entries < want {
            self.cached_prod = self.mem.producer().load(Ordering::Acquire);
            entries = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        // A producer index more than `size` ahead would be a broken peer: never read more than
        // the ring holds.
        entries.min(self.mem.size).min(want)
    }

    /// Takes up to `n` entries for reading. Dropping the batch leaves them in the ring.
    pub fn peek(&mut self, n: u32) -> ConsumerBatch<'_, T> {
        let n = self.available(n);
        let start = self.cached_cons;
        self.cached_cons = start.wrapping_add(n);
        ConsumerBatch { ring: self, start, len: n, read: 0 }
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn needs_wakeup(&self) -> bool {
        self.mem.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }

    #[cfg(test)]
    pub(crate) fn set_need_wakeup(&self, on: bool) {
        self.mem.flags().store(if on { NEED_WAKEUP } else { 0 }, Ordering::Relaxed);
    }
}

/// Entries taken from a [`ConsumerRing`]: read them in order (it is an iterator), then
/// [`release`](Self::release) the ones read. Dropping the batch cancels it: every entry stays in
/// the ring and is seen again by the next peek.
#[must_use = "a consumer batch is cancelled unless released"]
pub struct ConsumerBatch<'a, T: Copy> {
    ring: &'a mut ConsumerRing<T>,
    start: u32,
    len: u32,
    read: u32,
}

impl<T: Copy> ConsumerBatch<'_, T> {
    /// Entries in the batch.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the batch holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands the entries read so far back to the producer (release store of the consumer index);
    /// entries not read stay in the ring. Returns how many were released.
    pub fn release(self) -> u32 {
        let end = self.start.wrapping_add(self.read);
        let n = self.read;
        self.ring.cached_cons = end;
        self.ring.mem.consumer().store(end, Ordering::Release);
        std::mem::forget(self);
        n
    }
}

impl<T: Copy> Iterator for ConsumerBatch<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.read == self.len {
            return None;
        }
        let v = self.ring.mem.read(self.start.wrapping_add(self.read));
        self.read += 1;
        Some(v)
    }
}

impl<T: Copy> Drop for ConsumerBatch<'_, T> {
    fn drop(&mut self) {
        // Not released: nothing was handed back, so every entry stays for the next peek.
        self.ring.cached_cons = self.start;
    }
}

/// A ring in ordinary memory with the kernel's layout, for tests and the simulated kernel.
#[cfg(test)]
struct HeapRing<T> {
    producer: AtomicU32,
    consumer: AtomicU32,
    flags: AtomicU32,
    desc: Box<[std::cell::UnsafeCell<T>]>,
}

// SAFETY: the descriptor cells are only accessed through the ring protocol (one producer, one
// consumer, slots handed over by release/acquire on the indices), as with the kernel's rings.
#[cfg(test)]
unsafe impl<T: Send> Sync for HeapRing<T> {}

/// A producer and a consumer over one heap ring whose indices start at `start` (use a value near
/// `u32::MAX` to exercise wrap-around).
#[cfg(test)]
pub(crate) fn heap_pair<T: Copy + Send + 'static>(
    size: u32,
    start: u32,
    init: T,
) -> (ProducerRing<T>, ConsumerRing<T>) {
    assert!(size.is_power_of_two());
    let ring = Arc::new(HeapRing {
        producer: AtomicU32::new(start),
        consumer: AtomicU32::new(start),
        flags: AtomicU32::new(0),
        desc: (0..size).map(|_| std::cell::UnsafeCell::new(init)).collect(),
    });
    let desc = ring.desc.as_ptr() as *mut T;
    let mk = || {
        // SAFETY: the pointers point into `ring`, kept alive by the Arc passed as backing;
        // `UnsafeCell<T>` has the layout of `T`; `size` is a power of two; exactly one producer
        // and one consumer are built over this memory.
        unsafe {
            RingMem::new(&ring.producer, &ring.consumer, &ring.flags, desc, size, ring.clone() as Arc<dyn Send + Sync>)
        }
    };
    (ProducerRing::new(mk()), ConsumerRing::new(mk()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Debug, Clone)]
    enum Op {
        /// Reserve `n`, push `k` (bounded by the reservation), then submit or drop.
        Produce { n: u32, k: u32, submit: bool },
        /// Peek `n`, read `k` (bounded), then release or drop.
        Consume { n: u32, k: u32, release: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40, 0u32..40, any::<bool>()).prop_map(|(n, k, submit)| Op::Produce { n, k, submit }),
            (0u32..40, 0u32..40, any::<bool>()).prop_map(|(n, k, release)| Op::Consume { n, k, release }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// The rings against a `VecDeque` model, with indices starting just before `u32`
        /// overflow so that every run wraps.
        #[test]
        fn ring_matches_model(
            size_log in 0u32..6,
            start_back in 0u32..64,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let size = 1u32 << size_log;
            let start = u32::MAX - start_back;
            let (mut prod, mut cons) = heap_pair::<u64>(size, start, 0);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next_val = 0u64;
            for op in ops {
                match op {
                    Op::Produce { n, k, submit } => {
                        let room = size - model.len() as u32;
                        let mut b = prod.reserve(n);
                        prop_assert_eq!(b.capacity(), n.min(room));
                        let mut written = vec![];
                        for _ in 0..k {
                            match b.push(next_val) {
                                Ok(()) => { written.push(next_val); next_val += 1; }
                                Err(v) => { prop_assert_eq!(v, next_val); break; }
                            }
                        }
                        prop_assert_eq!(written.len() as u32, k.min(n.min(room)));
                        prop_assert_eq!(b.len(), written.len() as u32);
                        if submit {
                            prop_assert_eq!(b.submit(), written.len() as u32);
                            model.extend(written);
                        } else {
                            drop(b);
                        }
                    }
                    Op::Consume { n, k, release } => {
                        let mut b = cons.peek(n);
                        prop_assert_eq!(b.len(), n.min(model.len() as u32));
                        let mut got = vec![];
                        for _ in 0..k {
                            match b.next() { Some(v) => got.push(v), None => break }
                        }
                        prop_assert_eq!(got.len() as u32, k.min(b.len()));
                        let expect: Vec<u64> = model.iter().take(got.len()).copied().collect();
                        prop_assert_eq!(&got, &expect);
                        if release {
                            prop_assert_eq!(b.release(), got.len() as u32);
                            model.drain(..got.len());
                        } else {
                            drop(b);
                        }
                    }
                }
                prop_assert_eq!(prod.pending(), model.len() as u32);
                prop_assert_eq!(prod.free_entries(size), size - model.len() as u32);
                prop_assert_eq!(cons.available(u32::MAX), model.len() as u32);
            }
        }
    }

    #[test]
    fn dropped_batches_roll_back() {
        let (mut prod, mut cons) = heap_pair::<u64>(4, u32::MAX - 1, 0);
        {
            let mut b = prod.reserve(3);
            b.push(1).unwrap();
            b.push(2).unwrap();
        }
        assert_eq!(cons.available(4), 0, "an unsubmitted batch publishes nothing");
        assert_eq!(prod.free_entries(4), 4, "and gives its room back");
        let mut b = prod.reserve(8);
        assert_eq!(b.capacity(), 4);
        for v in 10..14 {
            b.push(v).unwrap();
        }
        assert_eq!(b.push(99), Err(99));
        assert_eq!(b.submit(), 4);
        {
            let mut c = cons.peek(4);
            assert_eq!(c.next(), Some(10));
        }
        let c = cons.peek(4);
        assert_eq!(c.collect::<Vec<_>>(), vec![10, 11, 12, 13], "a dropped peek is cancelled");
        let mut c = cons.peek(4);
        assert_eq!(c.next(), Some(10));
        assert_eq!(c.next(), Some(11));
        assert_eq!(c.release(), 2, "release hands back only what was read");
        assert_eq!(prod.free_entries(4), 2);
        assert_eq!(cons.peek(4).collect::<Vec<_>>(), vec![12, 13]);
    }

    #[test]
    fn need_wakeup_flag() {
        let (prod, cons) = heap_pair::<u64>(2, 0, 0);
        assert!(!prod.needs_wakeup());
        cons.set_need_wakeup(true);
        assert!(prod.needs_wakeup());
        prod.set_need_wakeup(false);
        assert!(!cons.needs_wakeup());
    }
}
