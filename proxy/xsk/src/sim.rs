//! A simulated kernel for the unit tests: the other side of the four rings of a [`Queue`], over
//! heap rings with the kernel's layout. The queue under test runs exactly the code it runs over
//! the real mmap'd rings.
//!
//! Model of the kernel (copy mode): frames taken from the fill ring are written (a sequence
//! number at the headroom offset) and posted on the RX ring with `addr = base + headroom`; TX
//! descriptors are read (their first 8 bytes checked against the expected TX sequence) and their
//! address posted, unchanged, on the completion ring.

use std::collections::VecDeque;

use crate::queue::Queue;
use crate::ring::{ConsumerRing, ProducerRing, heap_pair};
use crate::umem::UmemArea;

const ZERO_DESC: libc::xdp_desc = libc::xdp_desc { addr: 0, len: 0, options: 0 };

pub(crate) struct SimKernel {
    pub fill: ConsumerRing<u64>,
    pub rx: ProducerRing<libc::xdp_desc>,
    pub tx: ConsumerRing<libc::xdp_desc>,
    pub comp: ProducerRing<u64>,
    base: *mut u8,
    frame_size: u32,
    frame_count: u32,
    headroom: u32,
    /// Frames taken from the fill ring, not yet on the RX ring (a packet being received).
    pub rx_inflight: VecDeque<u64>,
    /// TX descriptors read, not yet completed.
    pub tx_inflight: VecDeque<u64>,
    /// Sequence number written into the next received frame.
    pub rx_seq: u64,
    /// Sequence number expected in the next transmitted frame.
    pub tx_seq: u64,
}

pub(crate) struct SimConfig {
    pub frame_count: u32,
    pub frame_size: u32,
    pub ring_size: u32,
    pub tx_reserve: u32,
    pub headroom: u32,
    /// Initial ring indices (near `u32::MAX` to wrap).
    pub start: u32,
}

pub(crate) fn new_pair(c: &SimConfig) -> (Queue, SimKernel) {
    let area = UmemArea::new(c.frame_count, c.frame_size).unwrap();
    let base = area.base();
    let (fill_p, fill_c) = heap_pair::<u64>(c.ring_size, c.start, 0);
    let (comp_p, comp_c) = heap_pair::<u64>(c.ring_size, c.start.wrapping_add(7), 0);
    let (rx_p, rx_c) = heap_pair(c.ring_size, c.start.wrapping_add(13), ZERO_DESC);
    let (tx_p, tx_c) = heap_pair(c.ring_size, c.start.wrapping_add(29), ZERO_DESC);
    let q = Queue::new(area, fill_p, comp_c, rx_c, tx_p, c.tx_reserve);
    let k = SimKernel {
        fill: fill_c,
        rx: rx_p,
        tx: tx_c,
        comp: comp_p,
        base,
        frame_size: c.frame_size,
        frame_count: c.frame_count,
        headroom: c.headroom,
        rx_inflight: VecDeque::new(),
        tx_inflight: VecDeque::new(),
        rx_seq: 0,
        tx_seq: 0,
    };
    (q, k)
}

impl SimKernel {
    /// Takes up to `take` frames from the fill ring, then posts up to `post` received frames
    /// (lengths from `len_of`) on the RX ring.
    pub fn receive(&mut self, take: u32, post: u32, mut len_of: impl FnMut() -> u32) {
        let mut b = self.fill.peek(take);
        for addr in &mut b {
            assert_eq!(addr % u64::from(self.frame_size), 0, "fill ring address not a frame base");
            assert!(addr < u64::from(self.frame_count) * u64::from(self.frame_size));
            self.rx_inflight.push_back(addr);
        }
        b.release();
        let n = post.min(self.rx_inflight.len() as u32);
        let mut b = self.rx.reserve(n);
        for _ in 0..b.capacity() {
            let Some(base) = self.rx_inflight.pop_front() else {
                break;
            };
            let addr = base + u64::from(self.headroom);
            let len = len_of().clamp(8, self.frame_size - self.headroom);
            // SAFETY: the frame was given to the kernel side through the fill ring, so user space
            // holds no handle to it; `addr + 8 <= frame end` as `headroom + 8 <= frame_size`.
            unsafe { (self.base.add(addr as usize) as *mut [u8; 8]).write_unaligned(self.rx_seq.to_le_bytes()) };
            self.rx_seq += 1;
            b.push(libc::xdp_desc { addr, len, options: 0 }).unwrap();
        }
        b.submit();
    }

    /// Posts an RX descriptor outside the UMEM (for the invalid-descriptor path).
    pub fn receive_out_of_range(&mut self) -> bool {
        let addr = u64::from(self.frame_count) * u64::from(self.frame_size) + 0x100;
        let mut b = self.rx.reserve(1);
        if b.push(libc::xdp_desc { addr, len: 64, options: 0 }).is_err() {
            return false;
        }
        b.submit() == 1
    }

    /// Posts the next received frame with a length running past the end of its frame: the
    /// queue must refuse it and recycle the frame.
    pub fn receive_too_long(&mut self) -> bool {
        if self.rx_inflight.is_empty() {
            return false;
        }
        let mut b = self.rx.reserve(1);
        if b.capacity() == 0 {
            return false;
        }
        let base = self.rx_inflight.pop_front().unwrap();
        b.push(libc::xdp_desc { addr: base + u64::from(self.headroom), len: self.frame_size, options: 0 }).unwrap();
        b.submit() == 1
    }

    /// Reads up to `take` TX descriptors, then completes up to `complete` of them.
    pub fn transmit(&mut self, take: u32, complete: u32) {
        let mut b = self.tx.peek(take);
        for d in &mut b {
            assert!(d.len >= 8, "TX frame shorter than its tag");
            let off = d.addr % u64::from(self.frame_size);
            assert!(off + u64::from(d.len) <= u64::from(self.frame_size), "TX frame crosses its chunk");
            // SAFETY: the frame was given to the kernel side through the TX ring; the descriptor
            // is inside the UMEM (checked just above against the frame size, and `addr` comes
            // from a frame of this UMEM).
            let tag = unsafe { (self.base.add(d.addr as usize) as *const [u8; 8]).read_unaligned() };
            assert_eq!(u64::from_le_bytes(tag), self.tx_seq, "TX frames out of order or corrupted");
            self.tx_seq += 1;
            self.tx_inflight.push_back(d.addr);
        }
        b.release();
        let n = complete.min(self.tx_inflight.len() as u32);
        let mut b = self.comp.reserve(n);
        for _ in 0..b.capacity() {
            let addr = self.tx_inflight.pop_front().unwrap();
            b.push(addr).unwrap();
        }
        b.submit();
    }

    /// Frames the kernel side holds for receiving (fill ring, in flight, RX ring).
    pub fn rx_held(&mut self) -> u32 {
        self.fill.available(u32::MAX) + self.rx_inflight.len() as u32 + self.rx.pending()
    }

    /// Frames the kernel side holds for sending (TX ring, in flight, completion ring).
    pub fn tx_held(&mut self) -> u32 {
        self.tx.available(u32::MAX) + self.tx_inflight.len() as u32 + self.comp.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{RxVerdict, XskStats};
    use std::collections::HashSet;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn write_tag(buf: &mut [u8], seq: &mut u64) {
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        *seq += 1;
    }

    fn assert_consistent(q: &Queue, k: &mut SimKernel) {
        let s = q.check_accounting().expect("accounting");
        assert_eq!(s.in_fill, k.rx_held(), "frames given for RX vs held by the kernel side");
        assert_eq!(s.in_tx, k.tx_held(), "frames given for TX vs held by the kernel side");
        assert_eq!(s.in_rx_user + s.in_tx_user, 0, "user frames outside a callback");
    }

    /// Churns frames through fill -> RX -> user -> (recycle | in-place TX | fresh TX) -> TX ->
    /// completion -> free for a million batches of random sizes, with broken descriptors mixed
    /// in, then drains and checks that every frame is accounted for exactly once.
    #[test]
    fn frame_churn_accounts_for_every_frame() {
        let cfg = SimConfig {
            frame_count: 256,
            frame_size: 2048,
            ring_size: 64,
            tx_reserve: 32,
            headroom: 0x100,
            start: u32::MAX - 1000,
        };
        let (mut q, mut k) = new_pair(&cfg);
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut rx_expect = 0u64; // next RX sequence the callback should see
        let mut tx_tag = 0u64; // next TX sequence the user writes
        let mut bogus = 0u64;
        const BATCHES: u32 = 1_000_000;
        for i in 0..BATCHES {
            q.refill_fill_ring();
            let take = rng.below(48) as u32;
            let post = rng.below(48) as u32;
            let mut lens = Rng(rng.next() | 1);
            k.receive(take, post, || 8 + lens.below(1800) as u32);
            if rng.below(5000) == 0 {
                // Out of the UMEM, or a length running past the frame: refused and counted.
                let sent = if rng.below(2) == 0 { k.receive_out_of_range() } else { k.receive_too_long() };
                if sent {
                    bogus += 1;
                }
            }
            let max = 1 + rng.below(64) as u32;
            let mut choices = Rng(rng.next() | 1);
            q.recv_batch(max, |mut rx, txq| {
                assert_eq!(rx.offset(), 0x100);
                let seq = u64::from_le_bytes(rx.data()[..8].try_into().unwrap());
                assert_eq!(seq, rx_expect, "RX frames out of order or at the wrong offset");
                rx_expect += 1;
                match choices.below(4) {
                    0 => RxVerdict::Recycle,
                    1 if txq.has_room() => {
                        // Reply in place.
                        write_tag(rx.buf_mut(), &mut tx_tag);
                        RxVerdict::Transmit(rx.len())
                    }
                    1 => RxVerdict::Recycle,
                    _ => {
                        // Reply from a fresh frame, sometimes abandoned.
                        if let Some(mut t) = txq.frame() {
                            if choices.below(8) == 0 {
                                drop(t);
                            } else {
                                write_tag(t.buf_mut(), &mut tx_tag);
                                t.submit(60).unwrap();
                            }
                        }
                        RxVerdict::Recycle
                    }
                }
            });
            // Frames sent outside RX processing, and a misuse.
            for _ in 0..rng.below(4) {
                if let Some(mut t) = q.tx_frame() {
                    match rng.below(16) {
                        0 => drop(t),
                        1 => assert!(t.submit(4096).is_err()),
                        _ => {
                            write_tag(t.buf_mut(), &mut tx_tag);
                            t.submit(8 + rng.below(2000) as usize).unwrap();
                        }
                    }
                }
            }
            if rng.below(4) != 0 {
                q.publish_tx();
            }
            k.transmit(rng.below(48) as u32, rng.below(48) as u32);
            q.reap_completions(rng.below(64) as u32);
            if i % 4096 == 0 {
                assert_consistent(&q, &mut k);
            }
        }
        // Drain everything in flight.
        for _ in 0..1000 {
            q.publish_tx();
            k.transmit(u32::MAX, u32::MAX);
            q.reap_completions(u32::MAX);
            k.receive(u32::MAX, u32::MAX, || 64);
            q.recv_batch(u32::MAX, |_, _| RxVerdict::Recycle);
        }
        assert_eq!(q.frame_stats().free, cfg.frame_count, "everything drained to the free list");
        q.refill_fill_ring();
        assert_consistent(&q, &mut k);
        let s: XskStats = q.stats();
        assert_eq!(s.invalid_descs, bogus);
        assert_eq!(s.tx_frames, s.tx_completed);
        assert_eq!(s.tx_frames, k.tx_seq);
        assert_eq!(s.rx_frames, k.rx_seq);
        assert!(s.rx_frames > u64::from(BATCHES), "the churn moved frames: {s:?}");
        assert!(s.tx_ring_full > 0 && s.tx_no_frame + s.fill_starved > 0, "pressure paths were hit: {s:?}");
        // Every frame exactly once: in the fill ring or on the free list.
        let fs = q.frame_stats();
        assert_eq!(fs.free + fs.in_fill, fs.total);
        let mut seen = HashSet::new();
        let mut b = k.fill.peek(u32::MAX);
        for addr in &mut b {
            assert!(seen.insert(addr / 2048), "frame {addr:#x} twice in the fill ring");
        }
        b.release();
        assert_eq!(seen.len() as u32, fs.in_fill);
        // Everything left is on the free list; the fill ring cannot be refilled past its size.
        assert_eq!(seen.len() as u32 + fs.free, cfg.frame_count);
    }

    #[test]
    fn tx_reserve_is_kept_out_of_the_fill_ring() {
        let cfg = SimConfig { frame_count: 64, frame_size: 4096, ring_size: 64, tx_reserve: 16, headroom: 0, start: 0 };
        let (mut q, _k) = new_pair(&cfg);
        assert_eq!(q.refill_fill_ring(), 48);
        let fs = q.frame_stats();
        assert_eq!((fs.free, fs.in_fill), (16, 48));
        assert_eq!(q.stats().fill_starved, 1);
        let mut n = 0;
        while let Some(t) = q.tx_frame() {
            t.submit(64).unwrap();
            n += 1;
        }
        assert_eq!(n, 16);
        assert_eq!(q.stats().tx_no_frame, 1);
        assert_eq!(q.publish_tx(), 16);
        assert_eq!(q.tx_in_flight(), 16);
    }

    #[test]
    fn in_place_reply_when_tx_ring_full_is_recycled() {
        let cfg =
            SimConfig { frame_count: 32, frame_size: 2048, ring_size: 4, tx_reserve: 4, headroom: 0x100, start: 0 };
        let (mut q, mut k) = new_pair(&cfg);
        q.refill_fill_ring();
        k.receive(4, 4, || 100);
        // TX ring (4 slots) gets 4 replies; nothing is consumed by the kernel, so the next 4
        // replies find it full.
        let n = q.recv_batch(4, |rx, _| RxVerdict::Transmit(rx.len()));
        assert_eq!(n, 4);
        assert_eq!(q.publish_tx(), 4);
        q.refill_fill_ring();
        k.receive(4, 4, || 100);
        q.recv_batch(4, |rx, _| RxVerdict::Transmit(rx.len()));
        assert_eq!(q.stats().tx_ring_full, 4);
        q.check_accounting().unwrap();
        assert_eq!(q.frame_stats().in_tx, 4);
    }
}
