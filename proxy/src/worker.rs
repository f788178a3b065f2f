//! The per-queue worker: one thread per NIC queue, owning that queue's AF_XDP socket.
//!
//! Each loop iteration: take back sent frames, refill the fill ring, receive a batch and answer
//! each frame, flush the TX ring; when a whole iteration found no work, sleep in `poll` on the
//! socket (so an idle sluice uses no CPU) with a timeout that lets it notice a stop request.
//!
//! What a frame gets is decided by [`Dispatch`], which knows nothing of sockets: it is tested
//! here with frames built by `sluice-wire`. Drops are counted with a reason, never errors.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sluice_wire::{Checksum, Error as WireError, emit_frame, parse_frame, rst_reply};
use sluice_xsk::{RxVerdict, Socket};

use crate::config::ListenerMode;

/// Counters of one queue. Written by its worker only; published to [`SharedCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounters {
    pub queue: u32,
    /// Frames received from the RX ring.
    pub rx_frames: u64,
    /// Frames sent (replies and segments of sluice's own).
    pub tx_frames: u64,
    /// RSTs sent for refused connections and segments of unknown flows.
    pub rst_sent: u64,
    /// Frames whose headers did not parse (truncated, bad lengths, options past the header).
    pub dropped_malformed: u64,
    /// Frames with a wrong IPv4 or TCP checksum.
    pub dropped_checksum: u64,
    /// IPv4 fragments, non-IPv4 or non-TCP frames (the XDP program should not send them).
    pub dropped_unsupported: u64,
    /// TCP segments for an address that is not a listener here.
    pub dropped_no_listener: u64,
    /// Incoming RSTs for which there was nothing to reset.
    pub dropped_rst: u64,
    /// Replies that found no free frame or no room on the TX ring.
    pub dropped_tx_full: u64,
    /// Loop iterations that slept in poll.
    pub idle_sleeps: u64,
    /// Frames of the UMEM, by owner (checked to add up on every publish).
    pub umem_frames_free: u64,
    pub umem_frames_total: u64,
}

/// Where a worker publishes its counters for the admin endpoint: the fast path only ever
/// `try_lock`s it, so a reader never stalls a worker.
pub type SharedCounters = Arc<Mutex<QueueCounters>>;

/// The socket-free half of a worker: what to send in answer to one received frame.
#[derive(Debug)]
pub struct Dispatch {
    listeners: HashMap<SocketAddrV4, ListenerMode>,
    checksum: Checksum,
    pub counters: QueueCounters,
}

impl Dispatch {
    pub fn new(queue: u32, listeners: HashMap<SocketAddrV4, ListenerMode>, verify_checksums: bool) -> Self {
        Self {
            listeners,
            checksum: if verify_checksums { Checksum::Verify } else { Checksum::Ignore },
            counters: QueueCounters { queue, ..Default::default() },
        }
    }

    /// Handles one received frame; writes the reply, if any, into `out` and returns its length.
    pub fn on_frame(&mut self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        self.counters.rx_frames += 1;
        let seg = match parse_frame(frame, self.checksum) {
            Ok(seg) => seg,
            Err(WireError::Checksum) => {
                self.counters.dropped_checksum += 1;
                return None;
            }
            Err(WireError::Fragmented | WireError::Unsupported) => {
                self.counters.dropped_unsupported += 1;
                return None;
            }
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return None;
            }
        };
        let local = SocketAddrV4::new(seg.ip.dst_addr, seg.tcp.dst_port);
        match self.listeners.get(&local) {
            // RFC 9293 3.10.7.1: a closed port answers anything but a RST with a RST.
            Some(ListenerMode::Refuse) => self.reset(&seg, out),
            Some(ListenerMode::Echo) | None => {
                self.counters.dropped_no_listener += 1;
                None
            }
        }
    }

    fn reset(&mut self, seg: &sluice_wire::ParsedSegment<'_>, out: &mut [u8]) -> Option<usize> {
        let Some(rst) = rst_reply(seg) else {
            self.counters.dropped_rst += 1;
            return None;
        };
        match emit_frame(out, &rst.eth, &rst.ip, &rst.tcp) {
            Ok(len) => {
                self.counters.rst_sent += 1;
                Some(len)
            }
            Err(_) => {
                self.counters.dropped_tx_full += 1;
                None
            }
        }
    }
}

/// Frames received per batch.
const RX_BATCH: u32 = 64;
/// Longest sleep while idle: how soon a stop request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Runs one queue's worker until `stop` is set.
pub fn run(mut sock: Socket, mut dispatch: Dispatch, shared: SharedCounters, stop: Arc<AtomicBool>) {
    let mut tx_full = 0u64;
    while !stop.load(Ordering::Relaxed) {
        sock.reap_completions();
        sock.refill_fill_ring();
        let received = sock.recv_batch(RX_BATCH, |rx, tx| {
            match tx.frame() {
                Some(mut out) => {
                    if let Some(len) = dispatch.on_frame(rx.data(), out.buf_mut()) {
                        if out.submit(len).is_err() {
                            tx_full += 1;
                        }
                    }
                }
                None => {
                    // No frame to answer with: still account for what arrived.
                    let mut scratch = [0u8; 0];
                    if dispatch.on_frame(rx.data(), &mut scratch).is_some() {
                        tx_full += 1;
                    }
                }
            }
            RxVerdict::Recycle
        });
        if let Err(e) = sock.flush_tx() {
            tracing::warn!(queue = sock.queue_id(), "TX wakeup failed: {e}");
        }
        dispatch.counters.dropped_tx_full += std::mem::take(&mut tx_full);
        if received == 0 && sock.tx_in_flight() == 0 {
            dispatch.counters.idle_sleeps += 1;
            publish(&sock, &mut dispatch, &shared);
            if let Err(e) = sock.poll(Some(IDLE_POLL)) {
                tracing::warn!(queue = sock.queue_id(), "poll: {e}");
            }
        } else if dispatch.counters.rx_frames % 1024 < u64::from(received) {
            publish(&sock, &mut dispatch, &shared);
        }
    }
    publish(&sock, &mut dispatch, &shared);
    if let Err(e) = sock.check_accounting() {
        tracing::error!(queue = sock.queue_id(), "UMEM frame accounting: {e}");
    }
}

fn publish(sock: &Socket, dispatch: &mut Dispatch, shared: &SharedCounters) {
    let frames = sock.frame_stats();
    let xsk = sock.stats();
    let c = &mut dispatch.counters;
    c.tx_frames = xsk.tx_frames;
    c.umem_frames_free = u64::from(frames.free);
    c.umem_frames_total = u64::from(frames.total);
    if let Ok(mut s) = shared.try_lock() {
        *s = *c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::ethernet::{self, Address, EtherType};
    use sluice_wire::ipv4::{self, Ipv4Addr, Protocol};
    use sluice_wire::tcp::{self, Flags};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const PROXY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    fn dispatch() -> Dispatch {
        let mut listeners = HashMap::new();
        listeners.insert(SocketAddrV4::new(PROXY, 443), ListenerMode::Refuse);
        Dispatch::new(0, listeners, true)
    }

    fn frame(dst_port: u16, flags: Flags, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let eth = ethernet::Repr {
            src_addr: Address([2, 0, 0, 0, 0, 1]),
            dst_addr: Address([2, 0, 0, 0, 0, 2]),
            ethertype: EtherType::Ipv4,
        };
        let tcp = tcp::Repr {
            src_port: 40000,
            dst_port,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: 64240,
            max_seg_size: Some(1460),
            window_scale: None,
            sack_permitted: true,
            sack_blocks: [None; 4],
            timestamp: None,
            payload,
        };
        let ip = ipv4::Repr {
            src_addr: CLIENT,
            dst_addr: PROXY,
            protocol: Protocol::Tcp,
            payload_len: tcp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 1514];
        let len = emit_frame(&mut buf, &eth, &ip, &tcp).unwrap();
        buf.truncate(len);
        buf
    }

    fn reply(d: &mut Dispatch, f: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 2048];
        d.on_frame(f, &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn syn_to_refusing_listener_gets_rst_ack() {
        let mut d = dispatch();
        let out = reply(&mut d, &frame(443, Flags::SYN, 1000, 0, &[])).expect("a RST");
        let seg = parse_frame(&out, Checksum::Verify).unwrap();
        assert_eq!(seg.tcp.flags, Flags::RST | Flags::ACK);
        assert_eq!(seg.tcp.ack_number, 1001);
        assert_eq!(seg.tcp.seq_number, 0);
        assert_eq!((seg.ip.src_addr, seg.ip.dst_addr), (PROXY, CLIENT));
        assert_eq!((seg.tcp.src_port, seg.tcp.dst_port), (443, 40000));
        assert_eq!(seg.eth.dst_addr, Address([2, 0, 0, 0, 0, 1]));
        assert_eq!(d.counters.rst_sent, 1);
    }

    #[test]
    fn ack_to_refusing_listener_gets_rst_with_its_ack_as_seq() {
        let mut d = dispatch();
        let out = reply(&mut d, &frame(443, Flags::ACK, 5, 777, b"data")).unwrap();
        let seg = parse_frame(&out, Checksum::Verify).unwrap();
        assert_eq!(seg.tcp.flags, Flags::RST);
        assert_eq!(seg.tcp.seq_number, 777);
    }

    #[test]
    fn rst_is_never_answered() {
        let mut d = dispatch();
        assert!(reply(&mut d, &frame(443, Flags::RST, 5, 0, &[])).is_none());
        assert_eq!(d.counters.dropped_rst, 1);
        assert_eq!(d.counters.rst_sent, 0);
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut d = dispatch();
        // Not a listener.
        assert!(reply(&mut d, &frame(80, Flags::SYN, 1, 0, &[])).is_none());
        assert_eq!(d.counters.dropped_no_listener, 1);
        // A flipped payload bit breaks the TCP checksum.
        let mut f = frame(443, Flags::ACK, 1, 1, b"hello");
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(reply(&mut d, &f).is_none());
        assert_eq!(d.counters.dropped_checksum, 1);
        // Truncated at every length: never a panic, always a counted drop.
        let f = frame(443, Flags::SYN, 1, 0, &[]);
        for len in 0..f.len() {
            assert!(reply(&mut d, &f[..len]).is_none());
        }
        let c = d.counters;
        assert_eq!(c.rx_frames, 2 + f.len() as u64);
        assert_eq!(c.dropped_malformed + c.dropped_unsupported + c.dropped_checksum, 1 + f.len() as u64);
    }

    #[test]
    fn no_room_for_the_reply_is_counted_not_a_panic() {
        let mut d = dispatch();
        let mut out = [0u8; 10];
        assert!(d.on_frame(&frame(443, Flags::SYN, 1, 0, &[]), &mut out).is_none());
        assert_eq!(d.counters.dropped_tx_full, 1);
    }
}
