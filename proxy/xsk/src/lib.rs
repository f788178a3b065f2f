//! AF_XDP sockets for sluice: UMEM, the fill / completion / RX / TX rings, bind, wakeups, and
//! frame accounting. The only crate of sluice with `unsafe` code; every `unsafe` block says why
//! it is sound.
//!
//! What it is: one [`Socket`] per (interface, queue), each with its own UMEM, written directly
//! over `libc` (no libxdp/libbpf; xdpilone is EUPL-1.2 and sluice is MIT/Apache). What it is
//! not: the XDP program and its XSKMAP (the loader puts [`Socket::as_raw_fd`] in
//! `XSKMAP[queue]`), packet parsing, or threads.
//!
//! Kernel reference: Documentation/networking/af_xdp.rst, include/uapi/linux/if_xdp.h.
//!
//! # Frames
//! Every UMEM frame is owned by exactly one of: the free list, the kernel for receiving (fill
//! ring → RX ring), user code for a received frame (inside the [`Socket::recv_batch`] callback),
//! user code building a frame to send ([`TxFrame`]), the TX staging list (submitted, not yet
//! flushed), the kernel for sending (TX ring → completion ring). [`Socket::frame_stats`] counts
//! each; [`Socket::check_accounting`] checks they add up and agree with the ownership table.
//! User code never holds a frame past the borrow that lent it: an [`RxFrame`] goes back when the
//! callback returns, a [`TxFrame`] when it is submitted or dropped. RX descriptors carry the
//! frame address plus the kernel's headroom; frames are recycled by their base address.
//!
//! # Call order in a worker loop
//! ```no_run
//! # use sluice_xsk::{Socket, XskConfig, RxVerdict};
//! # use std::time::Duration;
//! # fn build_reply(_rx: &[u8], _out: &mut [u8]) -> Option<usize> { None }
//! let (mut sock, info) = Socket::new("px0", 0, &XskConfig::default())?;
//! if let Some(why) = &info.zero_copy_refused { eprintln!("queue 0: copy mode: {why}"); }
//! // The loader now inserts sock.as_raw_fd() into XSKMAP[0].
//! loop {
//!     sock.reap_completions();          // 1. sent frames back to the free list
//!     sock.refill_fill_ring();          // 2. free frames to the kernel for RX (keeps tx_reserve)
//!     let n = sock.recv_batch(64, |rx, tx| {
//!         // 3. each received frame; answer it from a fresh frame...
//!         if let Some(mut out) = tx.frame() {
//!             if let Some(len) = build_reply(rx.data(), out.buf_mut()) {
//!                 let _ = out.submit(len);
//!             } // (a dropped TxFrame goes back to the free list)
//!         }
//!         RxVerdict::Recycle            // ...or rewrite `rx` in place: RxVerdict::Transmit(len)
//!     });
//!     // 4. frames the worker sends on its own (timers, ...): sock.tx_frame() -> submit(len)
//!     sock.flush_tx()?;                 // 5. staged frames onto the TX ring + sendto wakeup
//!     if n == 0 && sock.tx_in_flight() == 0 {
//!         sock.poll(Some(Duration::from_millis(100)))?; // 6. idle: sleep until RX
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! Batching: `recv_batch` reads up to `max` descriptors with one acquire load and releases them
//! with one release store; replies are staged and put on the TX ring by one `flush_tx` (one
//! store, then the `sendto` the kernel needs: in copy mode it sends at most 32 frames per call,
//! so `flush_tx` kicks `pending / 32 + 1` times). See [`XskConfig`] for sizing the UMEM so
//! that RX and TX do not starve each other.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]
#![warn(missing_debug_implementations)]

mod frame;
mod iface;
mod queue;
mod ring;
#[cfg(test)]
mod sim;
mod socket;
mod umem;

pub use frame::{AccountingError, FrameStats};
pub use iface::{enter_named_netns, enter_netns, ifindex, queue_count};
pub use queue::{RxFrame, RxVerdict, TxFrame, TxQueue, TxSubmitError, XskStats};
pub use socket::{BindInfo, BindMode, BoundMode, KernelStats, Socket, XskConfig, XskError, ZeroCopyRefused};
