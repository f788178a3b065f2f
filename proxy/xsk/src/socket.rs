//! One AF_XDP socket bound to one (interface, queue), with its own UMEM.
//!
//! What it is: the OS edge: `socket(AF_XDP)`, `XDP_UMEM_REG`, ring sizes, `XDP_MMAP_OFFSETS` and
//! the four `mmap`s, `bind` (copy, zero-copy, or zero-copy with fallback to copy), the
//! need-wakeup kicks (`sendto` for TX, `recvfrom` for the fill ring), `poll`, and the kernel's
//! `XDP_STATISTICS`. The frame logic it delegates to `queue.rs`. What it is not: the XDP program
//! or the XSKMAP (the loader inserts [`Socket::as_raw_fd`] there). It never prints: the caller
//! logs what [`BindInfo`] reports.
//!
//! Kernel reference: Documentation/networking/af_xdp.rst, include/uapi/linux/if_xdp.h.

use std::fmt;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use crate::frame::{AccountingError, FrameStats};
use crate::queue::{Queue, RxFrame, RxVerdict, TxFrame, TxQueue, XskStats};
use crate::ring::{ConsumerRing, ProducerRing, RingMem};
use crate::umem::{MmapRegion, UmemArea};

/// How to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: works on every driver (the kernel copies frames to and from the UMEM).
    Copy,
    /// `XDP_ZEROCOPY`: fails unless the driver supports it.
    ZeroCopy,
    /// Zero-copy if the driver supports it, else copy; [`BindInfo`] says which and why.
    Auto,
}

/// The mode a socket got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundMode {
    Copy,
    ZeroCopy,
}

impl fmt::Display for BoundMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BoundMode::Copy => "copy",
            BoundMode::ZeroCopy => "zero-copy",
        })
    }
}

/// Sizes and mode of one socket. Ring sizes are powers of two.
///
/// Sizing: `frame_count >= fill_size + rx_size + tx_reserve` lets the fill ring be topped up
/// while the RX ring is full, and `tx_reserve >= tx_size` lets TX fill its ring; the default
/// (4096 frames of 4 KiB = 16 MiB, rings of 1024, reserve 1024) does both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Frames in the UMEM.
    pub frame_count: u32,
    /// Extra headroom the kernel leaves before received data (on top of its own
    /// `XDP_PACKET_HEADROOM`); usually 0.
    pub headroom: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    pub rx_size: u32,
    pub tx_size: u32,
    /// Free frames `refill_fill_ring` leaves on the free list so that TX never starves.
    pub tx_reserve: u32,
    pub mode: BindMode,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: 4096,
            frame_count: 4096,
            headroom: 0,
            fill_size: 1024,
            comp_size: 1024,
            rx_size: 1024,
            tx_size: 1024,
            tx_reserve: 1024,
            mode: BindMode::Auto,
        }
    }
}

impl XskConfig {
    /// Checks the sizes; the error names the field.
    pub fn validate(&self) -> Result<(), XskError> {
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(XskError::Config("frame_size must be 2048 or 4096"));
        }
        if self.frame_count == 0 {
            return Err(XskError::Config("frame_count must be at least 1"));
        }
        if u64::from(self.frame_count) * u64::from(self.frame_size) > 1 << 40 {
            return Err(XskError::Config("frame_count * frame_size is too large"));
        }
        for (v, msg) in [
            (self.fill_size, "fill_size must be a power of two"),
            (self.comp_size, "comp_size must be a power of two"),
            (self.rx_size, "rx_size must be a power of two"),
            (self.tx_size, "tx_size must be a power of two"),
        ] {
            if !v.is_power_of_two() {
                return Err(XskError::Config(msg));
            }
        }
        // The kernel's XDP_PACKET_HEADROOM (256) plus ours must leave room for a full frame.
        if self.headroom > self.frame_size / 2 {
            return Err(XskError::Config("headroom must be at most frame_size / 2"));
        }
        if self.tx_reserve > self.frame_count {
            return Err(XskError::Config("tx_reserve must not exceed frame_count"));
        }
        Ok(())
    }
}

/// Why zero-copy was not used by a [`BindMode::Auto`] bind.
#[derive(Debug)]
pub struct ZeroCopyRefused {
    /// The error of the zero-copy bind.
    pub error: io::Error,
}

impl fmt::Display for ZeroCopyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.error.raw_os_error() {
            Some(libc::EOPNOTSUPP) => "the driver has no zero-copy AF_XDP support",
            Some(libc::EINVAL) => "the driver refused zero-copy for this queue or UMEM",
            Some(libc::EBUSY) => "the queue is busy",
            _ => "zero-copy bind failed",
        };
        write!(f, "{why} ({})", self.error)
    }
}

/// What a bind got.
#[derive(Debug)]
pub struct BindInfo {
    pub mode: BoundMode,
    /// Set when zero-copy was tried (mode `Auto`) and refused; the socket is in copy mode.
    pub zero_copy_refused: Option<ZeroCopyRefused>,
}

/// Errors of opening a socket or of a syscall on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XskError {
    #[error("invalid AF_XDP configuration: {0}")]
    Config(&'static str),
    #[error("interface {name:?}: {source}")]
    Interface { name: String, source: io::Error },
    #[error("{op}: {source}")]
    Os { op: &'static str, source: io::Error },
    #[error("bind AF_XDP socket to ifindex {ifindex} queue {queue} in {mode} mode: {source}")]
    Bind { ifindex: u32, queue: u32, mode: BoundMode, source: io::Error },
}

fn os(op: &'static str) -> impl FnOnce(io::Error) -> XskError {
    move |source| XskError::Os { op, source }
}

/// The kernel's per-socket counters (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket on one (interface, queue). See the crate doc for the call order.
pub struct Socket {
    // Declared first so that it is dropped (closed) before the rings and UMEM are unmapped.
    fd: OwnedFd,
    q: Queue,
    ifindex: u32,
    queue_id: u32,
    mode: BoundMode,
}

/// Frames the kernel's copy-mode TX path sends per `sendto` before returning `EAGAIN`
/// (`TX_BATCH_SIZE` in net/xdp/xsk.c).
const KERNEL_TX_BATCH: u32 = 32;

impl Socket {
    /// Opens a socket on queue `queue_id` of interface `ifname` (in the calling thread's network
    /// namespace).
    pub fn new(ifname: &str, queue_id: u32, cfg: &XskConfig) -> Result<(Socket, BindInfo), XskError> {
        let ifindex =
            crate::iface::ifindex(ifname).map_err(|source| XskError::Interface { name: ifname.to_owned(), source })?;
        Self::with_ifindex(ifindex, queue_id, cfg)
    }

    /// Opens a socket on queue `queue_id` of the interface with index `ifindex`.
    pub fn with_ifindex(ifindex: u32, queue_id: u32, cfg: &XskConfig) -> Result<(Socket, BindInfo), XskError> {
        cfg.validate()?;
        match cfg.mode {
            BindMode::Copy => Ok((
                Self::open(ifindex, queue_id, cfg, BoundMode::Copy)?,
                BindInfo { mode: BoundMode::Copy, zero_copy_refused: None },
            )),
            BindMode::ZeroCopy => Ok((
                Self::open(ifindex, queue_id, cfg, BoundMode::ZeroCopy)?,
                BindInfo { mode: BoundMode::ZeroCopy, zero_copy_refused: None },
            )),
            BindMode::Auto => match Self::open(ifindex, queue_id, cfg, BoundMode::ZeroCopy) {
                Ok(s) => Ok((s, BindInfo { mode: BoundMode::ZeroCopy, zero_copy_refused: None })),
                // Only a refused bind falls back; other errors (bad ifindex, no memory) are real.
                Err(XskError::Bind { source, .. }) => {
                    // A fresh socket and UMEM: nothing of the failed attempt is reused.
                    let s = Self::open(ifindex, queue_id, cfg, BoundMode::Copy)?;
                    Ok((
                        s,
                        BindInfo { mode: BoundMode::Copy, zero_copy_refused: Some(ZeroCopyRefused { error: source }) },
                    ))
                }
                Err(e) => Err(e),
            },
        }
    }

    fn open(ifindex: u32, queue_id: u32, cfg: &XskConfig, mode: BoundMode) -> Result<Socket, XskError> {
        // SAFETY: plain socket(2); the result is checked before being wrapped.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let area = UmemArea::new(cfg.frame_count, cfg.frame_size).map_err(os("mmap UMEM"))?;
        let reg = libc::xdp_umem_reg {
            addr: area.base() as u64,
            len: area.len() as u64,
            chunk_size: cfg.frame_size,
            headroom: cfg.headroom,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &reg).map_err(os("setsockopt(XDP_UMEM_REG)"))?;
        setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &cfg.fill_size).map_err(os("setsockopt(XDP_UMEM_FILL_RING)"))?;
        setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &cfg.comp_size)
            .map_err(os("setsockopt(XDP_UMEM_COMPLETION_RING)"))?;
        setsockopt(&fd, libc::XDP_RX_RING, &cfg.rx_size).map_err(os("setsockopt(XDP_RX_RING)"))?;
        setsockopt(&fd, libc::XDP_TX_RING, &cfg.tx_size).map_err(os("setsockopt(XDP_TX_RING)"))?;
        let off: libc::xdp_mmap_offsets =
            getsockopt(&fd, libc::XDP_MMAP_OFFSETS).map_err(os("getsockopt(XDP_MMAP_OFFSETS)"))?;

        let fill = map_ring::<u64>(&fd, &off.fr, cfg.fill_size, libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t)
            .map_err(os("mmap fill ring"))?;
        let comp = map_ring::<u64>(&fd, &off.cr, cfg.comp_size, libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t)
            .map_err(os("mmap completion ring"))?;
        let rx = map_ring::<libc::xdp_desc>(&fd, &off.rx, cfg.rx_size, libc::XDP_PGOFF_RX_RING)
            .map_err(os("mmap RX ring"))?;
        let tx = map_ring::<libc::xdp_desc>(&fd, &off.tx, cfg.tx_size, libc::XDP_PGOFF_TX_RING)
            .map_err(os("mmap TX ring"))?;

        let mode_flag = match mode {
            BoundMode::Copy => libc::XDP_COPY,
            BoundMode::ZeroCopy => libc::XDP_ZEROCOPY,
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP | mode_flag,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue_id,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp and the length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(XskError::Bind { ifindex, queue: queue_id, mode, source: io::Error::last_os_error() });
        }
        let opts: libc::xdp_options = getsockopt(&fd, libc::XDP_OPTIONS).map_err(os("getsockopt(XDP_OPTIONS)"))?;
        let got = if opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 { BoundMode::ZeroCopy } else { BoundMode::Copy };
        if got != mode {
            return Err(XskError::Bind {
                ifindex,
                queue: queue_id,
                mode,
                source: io::Error::other(format!("kernel reports {got} mode")),
            });
        }
        let q = Queue::new(
            area,
            ProducerRing::new(fill),
            ConsumerRing::new(comp),
            ConsumerRing::new(rx),
            ProducerRing::new(tx),
            cfg.tx_reserve,
        );
        Ok(Socket { fd, q, ifindex, queue_id, mode: got })
    }

    /// The interface index bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The queue bound to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// The bind mode obtained.
    pub fn mode(&self) -> BoundMode {
        self.mode
    }

    /// Moves free frames (all but `tx_reserve`) to the fill ring, and kicks the kernel with
    /// `recvfrom` if the fill ring asks for a wakeup (zero-copy drivers). Returns frames given.
    pub fn refill_fill_ring(&mut self) -> u32 {
        let n = self.q.refill_fill_ring();
        if self.q.fill_needs_wakeup() {
            // Errors of a wakeup are transient or show up on the next bind/poll; see wakeup_rx.
            let _ = self.wakeup_rx();
        }
        n
    }

    /// Reads up to `max` received frames. For each, `f` gets the frame and a [`TxQueue`] (to
    /// take fresh TX frames while the RX frame is still held) and returns what to do with the
    /// frame: recycle it or send it back as it now is. Returns the frames handed to `f`.
    pub fn recv_batch<F>(&mut self, max: u32, f: F) -> u32
    where
        F: FnMut(RxFrame<'_>, &mut TxQueue<'_>) -> RxVerdict,
    {
        self.q.recv_batch(max, f)
    }

    /// A free frame to build a frame to send, or `None` (counted in the stats) when no frame is
    /// free or the TX ring is full. Submit it, then call [`flush_tx`](Self::flush_tx).
    pub fn tx_frame(&mut self) -> Option<TxFrame<'_>> {
        self.q.tx_frame()
    }

    /// Puts submitted frames on the TX ring and, while the ring holds descriptors the kernel has
    /// not read and it asks for a wakeup (always, in copy mode), wakes it with `sendto`. In copy
    /// mode each `sendto` sends at most 32 frames, so this kicks up to `pending / 32 + 1` times.
    /// Returns frames put on the ring.
    pub fn flush_tx(&mut self) -> io::Result<u32> {
        let n = self.q.publish_tx();
        let pending = self.q.tx_ring_pending();
        if pending > 0 && self.q.tx_needs_wakeup() {
            for _ in 0..pending / KERNEL_TX_BATCH + 1 {
                if !self.wakeup_tx()? || self.q.tx_ring_pending() == 0 {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// Takes back completed TX frames onto the free list. Returns how many.
    pub fn reap_completions(&mut self) -> u32 {
        let max = self.q.comp_size();
        self.q.reap_completions(max)
    }

    /// `sendto(MSG_DONTWAIT)`: makes the kernel process the TX ring. `EAGAIN`, `EBUSY` and
    /// `ENOBUFS` are not errors (the kernel is busy or out of buffers; try again on the next
    /// flush). Returns `true` if the kernel stopped with `EAGAIN` (more left to send).
    pub fn wakeup_tx(&mut self) -> io::Result<bool> {
        self.q.stats_mut().tx_wakeups += 1;
        // SAFETY: a zero-length send with no buffer and no address on our own socket.
        let r =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        if r >= 0 {
            return Ok(false);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(true),
            Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(false),
            _ => Err(e),
        }
    }

    /// `recvfrom(MSG_DONTWAIT)`: makes a zero-copy driver look at the fill ring again.
    pub fn wakeup_rx(&mut self) -> io::Result<()> {
        self.q.stats_mut().rx_wakeups += 1;
        // SAFETY: a zero-length receive with no buffer and no address on our own socket.
        let r = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(()),
            _ => Err(e),
        }
    }

    /// Whether the fill ring asks for a wakeup.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.q.fill_needs_wakeup()
    }

    /// Whether the TX ring asks for a wakeup.
    pub fn tx_needs_wakeup(&self) -> bool {
        self.q.tx_needs_wakeup()
    }

    /// Waits until the RX ring has frames (`POLLIN`), at most `timeout` (`None`: forever).
    /// Returns whether it is readable. In copy mode `poll` also pushes pending TX.
    pub fn poll(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(pfd.revents & libc::POLLIN != 0)
    }

    /// Frames submitted to the kernel for sending and not yet reaped.
    pub fn tx_in_flight(&self) -> u32 {
        self.q.tx_in_flight()
    }

    /// This socket's counters.
    pub fn stats(&self) -> XskStats {
        self.q.stats()
    }

    /// Where every frame is (O(1)).
    pub fn frame_stats(&self) -> FrameStats {
        self.q.frame_stats()
    }

    /// Checks every frame accounting invariant (O(frames)); an error is a bug in this crate.
    pub fn check_accounting(&self) -> Result<FrameStats, AccountingError> {
        self.q.check_accounting()
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        let s: libc::xdp_statistics = getsockopt(&self.fd, libc::XDP_STATISTICS)?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

// Compile-time check: a socket can be moved to its worker thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Socket>();
};

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.fd.as_raw_fd())
            .field("ifindex", &self.ifindex)
            .field("queue_id", &self.queue_id)
            .field("mode", &self.mode)
            .finish()
    }
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a valid `T` and the length passed is its size; the kernel only reads.
    let r = unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, (v as *const T).cast(), size_of::<T>() as libc::socklen_t)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `getsockopt` of a plain-old-data `T` (integers only); fails unless the kernel fills all of it.
fn getsockopt<T: Copy>(fd: &OwnedFd, opt: libc::c_int) -> io::Result<T> {
    let mut v = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the buffer is `len` writable bytes; the kernel writes at most `len` and updates it.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, v.as_mut_ptr().cast(), &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<T>() {
        return Err(io::Error::other(format!(
            "getsockopt(SOL_XDP, {opt}) returned {len} bytes, expected {} (kernel too old?)",
            size_of::<T>()
        )));
    }
    // SAFETY: zero-initialised, then fully written by the kernel; `T` is plain integers, for
    // which every bit pattern is valid.
    Ok(unsafe { v.assume_init() })
}

fn map_ring<T>(fd: &OwnedFd, off: &libc::xdp_ring_offset, size: u32, pgoff: libc::off_t) -> io::Result<RingMem<T>> {
    let len = off.desc as usize + size as usize * size_of::<T>();
    for (field, at, width) in [("producer", off.producer, 4), ("consumer", off.consumer, 4), ("flags", off.flags, 4)] {
        if at % 4 != 0 || at as usize + width > len {
            return Err(io::Error::other(format!("ring offset of {field} ({at}) outside the ring")));
        }
    }
    if !(off.desc as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(io::Error::other("misaligned ring descriptors"));
    }
    let region = Arc::new(MmapRegion::shared(fd.as_raw_fd(), len, pgoff)?);
    let base = region.as_ptr();
    // SAFETY: the offsets were checked to lie inside the `len`-byte mapping, aligned for their
    // types (the mapping is page-aligned); the descriptor array of `size` entries ends exactly
    // at `len`; `size` is a power of two (validated config, accepted by the kernel); the mapping
    // stays alive as long as the Arc backing; exactly one user-side ring is built per mapping.
    unsafe {
        Ok(RingMem::new(
            base.add(off.producer as usize) as *const AtomicU32,
            base.add(off.consumer as usize) as *const AtomicU32,
            base.add(off.flags as usize) as *const AtomicU32,
            base.add(off.desc as usize) as *mut T,
            size,
            region,
        ))
    }
}
