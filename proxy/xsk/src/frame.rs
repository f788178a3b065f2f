//! Frame ownership and accounting.
//!
//! What it is: the record of who owns each UMEM frame. A frame is always owned by exactly one
//! [`Owner`]; user space holds a frame as a [`Frame`] handle, which is neither `Copy` nor
//! `Clone`, and gives it up (by value) when the frame enters a kernel ring. Frames coming back
//! from the kernel (RX, completion) are re-claimed from a descriptor address, and only if the
//! table says the kernel held that frame: a descriptor naming a frame the kernel does not own is
//! refused and counted, so a duplicate or stray address can never create a second handle.
//!
//! What it is not: it does not touch the rings or the frame memory (see `queue.rs`, `umem.rs`).
//! Aligned chunk mode only: a frame's base is its address with the low `log2(frame_size)` bits
//! cleared; RX descriptors carry base + headroom offset.

use std::fmt;

/// A handle to one UMEM frame, owned by user space. Not `Copy`/`Clone`: there is at most one.
#[derive(Debug)]
pub(crate) struct Frame {
    idx: u32,
}

impl Frame {
    pub(crate) fn idx(&self) -> u32 {
        self.idx
    }
}

/// Who owns a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Owner {
    /// On the free list.
    Free = 0,
    /// Given to the kernel through the fill ring (in the fill ring, being received, or in the RX
    /// ring not yet read).
    Fill = 1,
    /// Received, held by user space.
    RxUser = 2,
    /// Taken from the free list by user space to build a frame to send.
    TxUser = 3,
    /// Built and submitted by user space, waiting for `flush_tx` to put it on the TX ring.
    TxStaged = 4,
    /// Given to the kernel through the TX ring (in the TX ring, being sent, or in the completion
    /// ring not yet read).
    Tx = 5,
}

const OWNERS: usize = 6;

/// Where every frame of a socket is. `total` is always the sum of the other fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Frames in the UMEM.
    pub total: u32,
    /// On the free list.
    pub free: u32,
    /// Owned by the kernel for receiving (fill ring, in flight, RX ring not yet read).
    pub in_fill: u32,
    /// Received and held by user space (inside a `recv_batch` callback).
    pub in_rx_user: u32,
    /// Held by user space as a `TxFrame` being built.
    pub in_tx_user: u32,
    /// Submitted, waiting for `flush_tx`.
    pub tx_staged: u32,
    /// Owned by the kernel for sending (TX ring, in flight, completion ring not yet read).
    pub in_tx: u32,
}

impl FrameStats {
    /// Sum of the per-owner counts.
    pub fn accounted(&self) -> u32 {
        self.free + self.in_fill + self.in_rx_user + self.in_tx_user + self.tx_staged + self.in_tx
    }
}

/// A broken accounting invariant: a bug in this crate, never a network event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountingError {
    /// The per-owner counters do not add up to the number of frames.
    #[error("frame counts add up to {accounted}, not to the {total} frames of the UMEM")]
    Sum { accounted: u32, total: u32 },
    /// The counters disagree with a census of the ownership table.
    #[error("frame counters {counters:?} disagree with the ownership table {census:?}")]
    Census { counters: [u32; OWNERS], census: [u32; OWNERS] },
    /// A container holds a different number of frames than its owner count says.
    #[error("{what} holds {held} frames but the table counts {counted}")]
    Container { what: &'static str, held: u32, counted: u32 },
}

/// Why a descriptor address from the kernel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadDesc {
    /// Past the end of the UMEM.
    OutOfRange,
    /// Names a frame the kernel does not own in that role (duplicate or stray address).
    NotOwned(Owner),
}

/// The ownership table of one UMEM.
pub(crate) struct FrameTable {
    owner: Vec<Owner>,
    counts: [u32; OWNERS],
    frame_shift: u32,
}

impl fmt::Debug for FrameTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameTable").field("counts", &self.counts).finish()
    }
}

impl FrameTable {
    /// A table of `count` frames of `frame_size` bytes (a power of two), all free; returns the
    /// handles of all of them.
    pub(crate) fn new(count: u32, frame_size: u32) -> (Self, Vec<Frame>) {
        debug_assert!(frame_size.is_power_of_two());
        let mut counts = [0; OWNERS];
        counts[Owner::Free as usize] = count;
        let table =
            FrameTable { owner: vec![Owner::Free; count as usize], counts, frame_shift: frame_size.trailing_zeros() };
        // Reverse, so that popping the free list hands out frame 0 first.
        let frames = (0..count).rev().map(|idx| Frame { idx }).collect();
        (table, frames)
    }

    pub(crate) fn total(&self) -> u32 {
        self.owner.len() as u32
    }

    pub(crate) fn count(&self, o: Owner) -> u32 {
        self.counts[o as usize]
    }

    /// The UMEM address of a frame's first byte.
    pub(crate) fn addr(&self, f: &Frame) -> u64 {
        u64::from(f.idx) << self.frame_shift
    }

    /// Moves a user-held frame to a new user-side owner.
    pub(crate) fn set(&mut self, f: &Frame, to: Owner) {
        let slot = &mut self.owner[f.idx as usize];
        self.counts[*slot as usize] -= 1;
        self.counts[to as usize] += 1;
        *slot = to;
    }

    /// Gives a frame to the kernel (`to` is `Fill` or `Tx`): the handle is consumed, and the
    /// address to put in the ring is returned.
    pub(crate) fn give(&mut self, f: Frame, to: Owner) -> u64 {
        debug_assert!(matches!(to, Owner::Fill | Owner::Tx));
        self.set(&f, to);
        self.addr(&f)
    }

    /// Takes back from the kernel the frame that `addr` points into, if the kernel owns it as
    /// `expect`; the frame becomes `to`. Returns the handle and the offset of `addr` in it.
    pub(crate) fn claim(&mut self, addr: u64, expect: Owner, to: Owner) -> Result<(Frame, u32), BadDesc> {
        let idx = addr >> self.frame_shift;
        let offset = (addr & ((1u64 << self.frame_shift) - 1)) as u32;
        let Some(slot) = self.owner.get(idx as usize) else {
            return Err(BadDesc::OutOfRange);
        };
        if *slot != expect {
            return Err(BadDesc::NotOwned(*slot));
        }
        let f = Frame { idx: idx as u32 };
        self.set(&f, to);
        Ok((f, offset))
    }

    pub(crate) fn stats(&self) -> FrameStats {
        let c = |o: Owner| self.counts[o as usize];
        FrameStats {
            total: self.total(),
            free: c(Owner::Free),
            in_fill: c(Owner::Fill),
            in_rx_user: c(Owner::RxUser),
            in_tx_user: c(Owner::TxUser),
            tx_staged: c(Owner::TxStaged),
            in_tx: c(Owner::Tx),
        }
    }

    /// Checks that the counters add up and agree with a census of the table (O(frames)).
    pub(crate) fn check(&self) -> Result<FrameStats, AccountingError> {
        let s = self.stats();
        if s.accounted() != s.total {
            return Err(AccountingError::Sum { accounted: s.accounted(), total: s.total });
        }
        let mut census = [0u32; OWNERS];
        for o in &self.owner {
            census[*o as usize] += 1;
        }
        if census != self.counts {
            return Err(AccountingError::Census { counters: self.counts, census });
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_masks_headroom_and_refuses_strays() {
        let (mut t, mut free) = FrameTable::new(4, 2048);
        let f = free.pop().unwrap();
        assert_eq!(t.addr(&f), 0);
        let f1 = free.pop().unwrap();
        let a1 = t.give(f1, Owner::Fill);
        assert_eq!(a1, 2048);
        // RX descriptor = base + headroom.
        let (g, off) = t.claim(a1 + 0x100, Owner::Fill, Owner::RxUser).unwrap();
        assert_eq!((g.idx(), off), (1, 0x100));
        // The same address again: the kernel no longer owns it.
        assert_eq!(t.claim(a1 + 0x100, Owner::Fill, Owner::RxUser).unwrap_err(), BadDesc::NotOwned(Owner::RxUser));
        assert_eq!(t.claim(4 * 2048, Owner::Fill, Owner::RxUser).unwrap_err(), BadDesc::OutOfRange);
        // A free frame cannot be claimed as completed TX.
        assert_eq!(t.claim(3 * 2048, Owner::Tx, Owner::Free).unwrap_err(), BadDesc::NotOwned(Owner::Free));
        t.set(&f, Owner::TxUser);
        let s = t.check().unwrap();
        assert_eq!((s.free, s.in_rx_user, s.in_tx_user, s.total), (2, 1, 1, 4));
    }
}
