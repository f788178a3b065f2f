//! The user side of one AF_XDP queue: UMEM frames, the four rings, the free list and the
//! counters, with the per-iteration operations the worker calls (refill, receive, build and
//! stage TX, publish TX, reap completions).
//!
//! What it is: all of the frame logic, independent of the socket file descriptor, so the same
//! code runs over the kernel's mmap'd rings and over heap rings driven by a simulated kernel in
//! the unit tests. What it is not: syscalls (wakeups, poll, bind) live in `socket.rs`.

use crate::frame::{AccountingError, Frame, FrameStats, FrameTable, Owner};
use crate::ring::{ConsumerRing, ProducerRing};
use crate::umem::UmemArea;

/// Counters of one socket. Monotonic; read with `Socket::stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames read from the RX ring and handed to the callback.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// `recv_batch` calls that found the RX ring empty.
    pub rx_empty_polls: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames returned through the completion ring.
    pub tx_completed: u64,
    /// `refill_fill_ring` calls that could not fill every free slot of the fill ring because
    /// the free list (minus the TX reserve) ran short.
    pub fill_starved: u64,
    /// Frames put on the fill ring.
    pub fill_frames: u64,
    /// TX frames refused because the TX ring had no room (new frames or in-place replies).
    pub tx_ring_full: u64,
    /// TX frames refused because the free list was empty.
    pub tx_no_frame: u64,
    /// `submit` calls refused for a bad length (frame returned to the free list).
    pub tx_bad_len: u64,
    /// `sendto` wakeups issued for the TX ring.
    pub tx_wakeups: u64,
    /// `recvfrom` wakeups issued for the fill ring.
    pub rx_wakeups: u64,
    /// RX or completion descriptors refused: address outside the UMEM, naming a frame the
    /// kernel did not own, or length past the end of the frame.
    pub invalid_descs: u64,
}

/// What to do with a received frame once the `recv_batch` callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxVerdict {
    /// Give the frame back (free list, then fill ring).
    Recycle,
    /// Send the frame's buffer as it is now, `len` bytes from where the received data started
    /// (for replies built in place: the RX frame becomes a TX frame, no copy). If the TX ring
    /// is full the frame is recycled and `tx_ring_full` counted.
    Transmit(usize),
}

/// A received frame, lent to the `recv_batch` callback.
pub struct RxFrame<'a> {
    /// The frame from its start up to the received data: the kernel's headroom, which ends with
    /// the XDP program's metadata (`bpf_xdp_adjust_meta`) when it wrote any.
    head: &'a mut [u8],
    buf: &'a mut [u8],
    len: usize,
    offset: u32,
}

impl RxFrame<'_> {
    /// The received bytes (starting with the Ethernet header).
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Where the data starts in its UMEM frame: the kernel's `XDP_PACKET_HEADROOM` (256) plus
    /// the configured headroom, in copy mode.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// The `N` bytes just before the received data (where the XDP program's metadata ends), if
    /// the headroom holds that many, and wipes them: the descriptor does not say whether the
    /// program wrote metadata, so what is read is trusted only if it matches a secret the program
    /// writes, and is wiped so that it never outlives this frame.
    pub fn take_meta<const N: usize>(&mut self) -> Option<[u8; N]> {
        let start = self.head.len().checked_sub(N)?;
        let meta = &mut self.head[start..];
        let mut out = [0u8; N];
        out.copy_from_slice(meta);
        meta.fill(0);
        Some(out)
    }

    /// Received length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (never, from a sane kernel).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole writable buffer, from the start of the received data to the end of the UMEM
    /// frame (so at least `len()` bytes), for building a reply in place.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.buf
    }
}

impl std::fmt::Debug for RxFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxFrame").field("len", &self.len).field("offset", &self.offset).finish()
    }
}

impl std::fmt::Debug for TxQueue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxQueue").field("staged", &self.parts.staged.len()).field("room", &self.parts.room).finish()
    }
}

impl std::fmt::Debug for TxFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxFrame").field("frame", &self.frame).finish()
    }
}

/// A frame submitted but not yet on the TX ring.
struct Staged {
    frame: Frame,
    offset: u32,
    len: u32,
}

/// The borrowed parts of a [`Queue`] that building TX frames needs.
struct TxParts<'a> {
    area: &'a UmemArea,
    frames: &'a mut FrameTable,
    free: &'a mut Vec<Frame>,
    staged: &'a mut Vec<Staged>,
    stats: &'a mut XskStats,
    /// Free TX ring slots at the start of this borrow; `staged.len()` may not exceed it.
    room: u32,
}

impl TxParts<'_> {
    fn reborrow(&mut self) -> TxParts<'_> {
        TxParts {
            area: self.area,
            frames: self.frames,
            free: self.free,
            staged: self.staged,
            stats: self.stats,
            room: self.room,
        }
    }

    fn has_room(&self) -> bool {
        (self.staged.len() as u32) < self.room
    }

    fn frame(&mut self) -> Option<TxFrame<'_>> {
        if !self.has_room() {
            self.stats.tx_ring_full += 1;
            return None;
        }
        let Some(frame) = self.free.pop() else {
            self.stats.tx_no_frame += 1;
            return None;
        };
        self.frames.set(&frame, Owner::TxUser);
        Some(TxFrame { parts: self.reborrow(), frame: Some(frame) })
    }

    fn recycle(&mut self, frame: Frame) {
        self.frames.set(&frame, Owner::Free);
        self.free.push(frame);
    }

    fn stage(&mut self, frame: Frame, offset: u32, len: u32) {
        self.frames.set(&frame, Owner::TxStaged);
        self.staged.push(Staged { frame, offset, len });
    }
}

/// Access to fresh TX frames from inside a `recv_batch` callback.
pub struct TxQueue<'a> {
    parts: TxParts<'a>,
}

impl TxQueue<'_> {
    /// A free frame to build a frame to send, or `None` (counted) when the free list is empty or
    /// the TX ring has no room.
    pub fn frame(&mut self) -> Option<TxFrame<'_>> {
        self.parts.frame()
    }

    /// Whether the TX ring has room for one more frame (an in-place reply or a fresh frame).
    pub fn has_room(&self) -> bool {
        self.parts.has_room()
    }
}

/// Why a [`TxFrame::submit`] was refused. The frame went back to the free list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxSubmitError {
    /// A zero-length frame.
    #[error("empty TX frame")]
    Empty,
    /// Longer than the frame.
    #[error("TX length {len} exceeds the frame capacity {capacity}")]
    TooLong { len: usize, capacity: usize },
}

/// A frame being built for sending. `submit(len)` stages it for the next `flush_tx`; dropping it
/// gives the frame back to the free list.
#[must_use = "a TX frame is returned to the free list unless submitted"]
pub struct TxFrame<'a> {
    parts: TxParts<'a>,
    frame: Option<Frame>,
}

impl TxFrame<'_> {
    /// The frame's bytes (the whole UMEM frame; write the Ethernet frame from index 0).
    pub fn buf_mut(&mut self) -> &mut [u8] {
        match self.frame.as_mut() {
            Some(f) => self.parts.area.frame_mut(f),
            None => &mut [],
        }
    }

    /// The frame size.
    pub fn capacity(&self) -> usize {
        self.parts.area.frame_size() as usize
    }

    /// Stages the first `len` bytes for sending at the next `flush_tx`.
    pub fn submit(mut self, len: usize) -> Result<(), TxSubmitError> {
        let capacity = self.capacity();
        let Some(frame) = self.frame.take() else {
            return Ok(());
        };
        if len == 0 || len > capacity {
            self.parts.stats.tx_bad_len += 1;
            self.parts.recycle(frame);
            return Err(if len == 0 { TxSubmitError::Empty } else { TxSubmitError::TooLong { len, capacity } });
        }
        self.parts.stage(frame, 0, len as u32);
        Ok(())
    }
}

impl Drop for TxFrame<'_> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.parts.recycle(frame);
        }
    }
}

/// The user side of one queue. See the module doc.
pub(crate) struct Queue {
    area: UmemArea,
    frames: FrameTable,
    free: Vec<Frame>,
    fill: ProducerRing<u64>,
    comp: ConsumerRing<u64>,
    rx: ConsumerRing<libc::xdp_desc>,
    tx: ProducerRing<libc::xdp_desc>,
    staged: Vec<Staged>,
    stats: XskStats,
    tx_reserve: u32,
}

impl Queue {
    pub(crate) fn new(
        area: UmemArea,
        fill: ProducerRing<u64>,
        comp: ConsumerRing<u64>,
        rx: ConsumerRing<libc::xdp_desc>,
        tx: ProducerRing<libc::xdp_desc>,
        tx_reserve: u32,
    ) -> Self {
        let count = (area.len() / area.frame_size() as usize) as u32;
        let (frames, free) = FrameTable::new(count, area.frame_size());
        let staged = Vec::with_capacity(tx.size() as usize);
        Queue { area, frames, free, fill, comp, rx, tx, staged, stats: XskStats::default(), tx_reserve }
    }

    pub(crate) fn stats(&self) -> XskStats {
        self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut XskStats {
        &mut self.stats
    }

    pub(crate) fn frame_stats(&self) -> FrameStats {
        self.frames.stats()
    }

    pub(crate) fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    pub(crate) fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Frames on the TX ring or in the kernel, not yet reaped from the completion ring.
    pub(crate) fn tx_in_flight(&self) -> u32 {
        self.frames.count(Owner::Tx)
    }

    /// Checks every accounting invariant (O(frames)).
    pub(crate) fn check_accounting(&self) -> Result<FrameStats, AccountingError> {
        let s = self.frames.check()?;
        let held = |what, held: usize, counted: u32| {
            if held as u32 == counted {
                Ok(())
            } else {
                Err(AccountingError::Container { what, held: held as u32, counted })
            }
        };
        held("free list", self.free.len(), s.free)?;
        held("TX staging", self.staged.len(), s.tx_staged)?;
        Ok(s)
    }

    /// Moves free frames (keeping `tx_reserve` of them for TX) onto the fill ring. Returns how
    /// many were given.
    pub(crate) fn refill_fill_ring(&mut self) -> u32 {
        let room = self.fill.free_entries(self.fill.size());
        if room == 0 {
            return 0;
        }
        let spare = (self.free.len() as u32).saturating_sub(self.tx_reserve);
        if spare < room {
            self.stats.fill_starved += 1;
        }
        let mut batch = self.fill.reserve(room.min(spare));
        for _ in 0..batch.capacity() {
            let Some(frame) = self.free.pop() else { break };
            let addr = self.frames.give(frame, Owner::Fill);
            // Cannot fail: at most `capacity` pushes.
            let _ = batch.push(addr);
        }
        let n = batch.submit();
        self.stats.fill_frames += u64::from(n);
        n
    }

    /// Reads up to `max` received frames, calling `f` on each; see `Socket::recv_batch`.
    pub(crate) fn recv_batch<F>(&mut self, max: u32, mut f: F) -> u32
    where
        F: FnMut(RxFrame<'_>, &mut TxQueue<'_>) -> RxVerdict,
    {
        let Queue { area, frames, free, rx, tx, staged, stats, .. } = self;
        let mut batch = rx.peek(max);
        if batch.is_empty() {
            stats.rx_empty_polls += 1;
            return 0;
        }
        let frame_size = area.frame_size() as u64;
        let room = tx.free_entries(tx.size());
        let mut txq = TxQueue { parts: TxParts { area, frames, free, staged, stats, room } };
        let mut n = 0;
        for desc in &mut batch {
            let parts = &mut txq.parts;
            let Ok((mut frame, offset)) = parts.frames.claim(desc.addr, Owner::Fill, Owner::RxUser) else {
                parts.stats.invalid_descs += 1;
                continue;
            };
            if u64::from(offset) + u64::from(desc.len) > frame_size {
                parts.stats.invalid_descs += 1;
                parts.recycle(frame);
                continue;
            }
            n += 1;
            parts.stats.rx_frames += 1;
            parts.stats.rx_bytes += u64::from(desc.len);
            let area = parts.area;
            let verdict = {
                let (head, buf) = area.frame_mut(&mut frame).split_at_mut(offset as usize);
                f(RxFrame { head, buf, len: desc.len as usize, offset }, &mut txq)
            };
            let parts = &mut txq.parts;
            match verdict {
                RxVerdict::Recycle => parts.recycle(frame),
                RxVerdict::Transmit(len) => {
                    let fits = len > 0 && u64::from(offset) + len as u64 <= frame_size;
                    if !fits {
                        parts.stats.tx_bad_len += 1;
                        parts.recycle(frame);
                    } else if !parts.has_room() {
                        parts.stats.tx_ring_full += 1;
                        parts.recycle(frame);
                    } else {
                        parts.stage(frame, offset, len as u32);
                    }
                }
            }
        }
        batch.release();
        n
    }

    /// A free frame to build a frame to send (see `Socket::tx_frame`).
    pub(crate) fn tx_frame(&mut self) -> Option<TxFrame<'_>> {
        let want = self.staged.len() as u32 + 1;
        let room = self.tx.free_entries(want);
        let Queue { area, frames, free, staged, stats, .. } = self;
        let parts = TxParts { area, frames, free, staged, stats, room };
        // `frame()` borrows `parts` but the TxFrame must borrow `self`: build it directly.
        if !parts.has_room() {
            parts.stats.tx_ring_full += 1;
            return None;
        }
        let Some(frame) = parts.free.pop() else {
            parts.stats.tx_no_frame += 1;
            return None;
        };
        parts.frames.set(&frame, Owner::TxUser);
        Some(TxFrame { parts, frame: Some(frame) })
    }

    /// Puts staged frames on the TX ring. Returns how many were published.
    pub(crate) fn publish_tx(&mut self) -> u32 {
        if self.staged.is_empty() {
            return 0;
        }
        let mut batch = self.tx.reserve(self.staged.len() as u32);
        let k = batch.capacity() as usize;
        for s in self.staged.drain(..k) {
            let len = s.len;
            let addr = self.frames.give(s.frame, Owner::Tx) + u64::from(s.offset);
            // Cannot fail: exactly `capacity` pushes.
            let _ = batch.push(libc::xdp_desc { addr, len, options: 0 });
            self.stats.tx_bytes += u64::from(len);
        }
        let n = batch.submit();
        self.stats.tx_frames += u64::from(n);
        n
    }

    /// Takes back up to `max` frames from the completion ring. Returns how many.
    pub(crate) fn reap_completions(&mut self, max: u32) -> u32 {
        let mut batch = self.comp.peek(max);
        let mut n = 0;
        for addr in &mut batch {
            match self.frames.claim(addr, Owner::Tx, Owner::Free) {
                Ok((frame, _)) => {
                    self.free.push(frame);
                    n += 1;
                }
                Err(_) => self.stats.invalid_descs += 1,
            }
        }
        batch.release();
        self.stats.tx_completed += u64::from(n);
        n
    }

    /// Descriptors on the TX ring not yet read by the kernel.
    pub(crate) fn tx_ring_pending(&self) -> u32 {
        self.tx.pending()
    }

    pub(crate) fn comp_size(&self) -> u32 {
        self.comp.size()
    }
}

#[cfg(test)]
mod tests {
    use super::RxFrame;

    #[test]
    fn take_meta_reads_the_bytes_before_the_data_and_wipes_them() {
        let mut frame = [0u8; 64];
        frame[24..32].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        frame[32] = 0xee;
        let (head, buf) = frame.split_at_mut(32);
        let mut rx = RxFrame { head, buf, len: 20, offset: 32 };
        assert_eq!(rx.take_meta::<8>(), Some([1, 2, 3, 4, 5, 6, 7, 8]));
        // Wiped: a later frame in the same UMEM frame cannot inherit the mark.
        assert_eq!(rx.take_meta::<8>(), Some([0; 8]));
        assert_eq!(rx.data()[0], 0xee);
        // Not enough headroom: nothing.
        let mut small = [0u8; 16];
        let (head, buf) = small.split_at_mut(4);
        let mut rx = RxFrame { head, buf, len: 4, offset: 4 };
        assert_eq!(rx.take_meta::<8>(), None);
    }
}
