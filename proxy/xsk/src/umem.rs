//! The UMEM area: one anonymous mapping of `frame_count * frame_size` bytes, plus the generic
//! owned `mmap` region used for it and for the rings.
//!
//! What it is: memory and the one way to borrow a frame's bytes, which needs the frame's
//! [`Frame`] handle (proof that user space, not the kernel, owns it). What it is not: the
//! registration with a socket (`socket.rs`) or the ownership bookkeeping (`frame.rs`).

use std::io;
use std::ptr::NonNull;

use crate::frame::Frame;

/// An owned memory mapping, unmapped on drop.
pub(crate) struct MmapRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is a plain address range owned by this value; nothing in it is tied to a
// thread. Concurrent access to its contents is governed by the types that hand out pointers
// into it (rings: atomics and the ring protocol; UMEM: `Frame` handles).
unsafe impl Send for MmapRegion {}
// SAFETY: `&MmapRegion` only gives the base pointer and length; see `Send`.
unsafe impl Sync for MmapRegion {}

impl MmapRegion {
    /// Anonymous, private, zeroed, populated memory.
    pub(crate) fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; no existing
        // memory is affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_result(p, len)
    }

    /// A shared mapping of `len` bytes of `fd` at offset `pgoff` (an AF_XDP ring).
    pub(crate) fn shared(fd: libc::c_int, len: usize, pgoff: libc::off_t) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the socket's ring at an address the kernel chooses;
        // no existing memory is affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        Self::from_result(p, len)
    }

    fn from_result(p: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(MmapRegion { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly a mapping we created and still own; everything that
        // points into it (rings, frame slices) borrows or holds an Arc to this value, so nothing
        // uses the memory after this point.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The frames of one socket.
pub(crate) struct UmemArea {
    region: MmapRegion,
    frame_size: u32,
    frame_count: u32,
}

impl UmemArea {
    pub(crate) fn new(frame_count: u32, frame_size: u32) -> io::Result<Self> {
        let len = (frame_count as usize)
            .checked_mul(frame_size as usize)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(UmemArea { region: MmapRegion::anonymous(len)?, frame_size, frame_count })
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.region.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.region.len()
    }

    pub(crate) fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The bytes of a frame user space owns. The `&mut Frame` is the proof of ownership: handles
    /// are unique, exist only while the kernel does not own the frame, and frames are disjoint.
    pub(crate) fn frame_mut<'a>(&'a self, f: &'a mut Frame) -> &'a mut [u8] {
        assert!(f.idx() < self.frame_count, "frame handle from another UMEM");
        let off = f.idx() as usize * self.frame_size as usize;
        // SAFETY: `off + frame_size <= len` (checked index). The frame's memory is borrowed for
        // as long as the unique `&mut Frame`, so no other slice of it exists in user space, and
        // the kernel does not touch a frame while a `Frame` handle to it exists (it only owns
        // frames given to it through the fill or TX ring, which consumes the handle).
        unsafe { std::slice::from_raw_parts_mut(self.base().add(off), self.frame_size as usize) }
    }
}
