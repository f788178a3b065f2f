//! Root-only integration tests on a real kernel: AF_XDP sockets on every queue of a two-queue
//! veth in namespaces `sluice-hx-a` / `sluice-hx-b` (198.51.100.101/24 and .102), made here and
//! removed on drop, even when a test panics. They fail (never skip) when the namespaces cannot
//! be made.
//!
//! - bind on every queue in copy mode; forced zero-copy refused on veth; `Auto` falls back to
//!   copy with the reason; a busy queue and a missing queue are refused;
//! - TX: frames through the TX ring of each queue reach the peer (captured with AF_PACKET) and
//!   every frame comes back through the completion ring;
//! - RX: with a minimal XDP redirect program (test scaffolding, raw bpf(2)), requests sent from
//!   the peer arrive on the socket of their queue and are answered in place (RX frame -> TX
//!   frame), in native and in SKB XDP mode.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;
use common::xdp;

use std::collections::HashSet;
use std::io;
use std::process::Command;
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sluice_xsk::{BindMode, BoundMode, RxVerdict, Socket, XskConfig, XskError, enter_named_netns, queue_count};

const NS_A: &str = "sluice-hx-a";
const NS_B: &str = "sluice-hx-b";
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// IEEE 802 local experimental EtherType: nothing in the kernel consumes it.
const ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 8] = b"SLUICEHX";

/// The tests share the namespace names: one at a time.
static NET_LOCK: Mutex<()> = Mutex::new(());

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespace pair; dropping it deletes both namespaces (and with them the veth).
struct TestNet;

impl TestNet {
    fn new() -> TestNet {
        // Leftovers of a crashed run.
        let _ = ip(&["netns", "del", NS_A]);
        let _ = ip(&["netns", "del", NS_B]);
        let net = TestNet;
        let steps: &[&[&str]] = &[
            &["netns", "add", NS_A],
            &["netns", "add", NS_B],
            &[
                "link",
                "add",
                NS_A,
                "netns",
                NS_A,
                "address",
                "02:00:00:00:00:01",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
                "type",
                "veth",
                "peer",
                "name",
                NS_B,
                "netns",
                NS_B,
                "address",
                "02:00:00:00:00:02",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
            ],
            &["-n", NS_A, "addr", "add", "198.51.100.101/24", "dev", NS_A],
            &["-n", NS_B, "addr", "add", "198.51.100.102/24", "dev", NS_B],
            &["-n", NS_A, "link", "set", "lo", "up"],
            &["-n", NS_B, "link", "set", "lo", "up"],
            &["-n", NS_A, "link", "set", NS_A, "up"],
            &["-n", NS_B, "link", "set", NS_B, "up"],
        ];
        for s in steps {
            if let Err(e) = ip(s) {
                panic!("cannot build the test namespaces (root needed): {e}");
            }
        }
        net
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", NS_A]);
        let _ = ip(&["netns", "del", NS_B]);
    }
}

/// Runs `f` on a thread that has entered namespace `ns`; re-raises its panic.
fn in_netns<T: Send + 'static>(ns: &'static str, f: impl FnOnce() -> T + Send + 'static) -> T {
    thread::spawn(move || {
        enter_named_netns(ns).unwrap_or_else(|e| panic!("enter netns {ns}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn small_cfg(mode: BindMode) -> XskConfig {
    XskConfig {
        frame_size: 2048,
        frame_count: 512,
        fill_size: 128,
        comp_size: 256,
        rx_size: 128,
        tx_size: 256,
        tx_reserve: 256,
        mode,
        ..XskConfig::default()
    }
}

fn os_error(e: &XskError) -> Option<i32> {
    match e {
        XskError::Bind { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

#[test]
fn bind_every_queue_and_zero_copy_falls_back_on_veth() {
    let _guard = NET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _net = TestNet::new();
    in_netns(NS_A, || {
        assert_eq!(queue_count(NS_A).unwrap(), 2, "the veth has two queues");

        // Forced zero-copy: veth has no zero-copy AF_XDP support.
        let err = Socket::new(NS_A, 0, &small_cfg(BindMode::ZeroCopy)).expect_err("zero-copy on veth");
        assert_eq!(os_error(&err), Some(libc::EOPNOTSUPP), "{err}");

        // Auto: falls back to copy and says why.
        let (s0, info) = Socket::new(NS_A, 0, &small_cfg(BindMode::Auto)).expect("auto bind on queue 0");
        assert_eq!(info.mode, BoundMode::Copy);
        assert_eq!(s0.mode(), BoundMode::Copy);
        let why = info.zero_copy_refused.expect("a reason for the fallback");
        assert_eq!(why.error.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert!(why.to_string().contains("no zero-copy"), "{why}");

        let (s1, info) = Socket::new(NS_A, 1, &small_cfg(BindMode::Copy)).expect("copy bind on queue 1");
        assert_eq!(info.mode, BoundMode::Copy);
        assert!(info.zero_copy_refused.is_none());
        assert_eq!((s0.queue_id(), s1.queue_id()), (0, 1));
        assert_eq!(s0.ifindex(), s1.ifindex());

        // A queue that has a socket already, and a queue that does not exist.
        let err = Socket::new(NS_A, 1, &small_cfg(BindMode::Copy)).expect_err("second socket on queue 1");
        assert_eq!(os_error(&err), Some(libc::EBUSY), "{err}");
        let err = Socket::new(NS_A, 2, &small_cfg(BindMode::Copy)).expect_err("queue 2 of a 2-queue veth");
        assert_eq!(os_error(&err), Some(libc::EINVAL), "{err}");
        // Not an interface here.
        assert!(matches!(
            Socket::new("sluice-hx-none", 0, &small_cfg(BindMode::Copy)),
            Err(XskError::Interface { .. })
        ));

        for s in [&s0, &s1] {
            let k = s.kernel_stats().unwrap();
            assert_eq!(k.tx_invalid_descs, 0);
            s.check_accounting().unwrap();
        }
    });
}

/// An AF_PACKET socket capturing every frame arriving on one interface.
struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    fn open(ifname: &str) -> io::Result<Capture> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); checked before being wrapped.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `sockaddr_ll` is plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = sluice_xsk::ifindex(ifname)? as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        // SAFETY: `tv` is a valid timeval and the length is its size.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Capture { fd })
    }

    /// The next frame, or `None` after the 100 ms receive timeout.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        use std::os::fd::AsRawFd;
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        }
    }
}

/// A test frame from A to B: Ethernet header, magic, queue, sequence number; 64 bytes.
fn build_frame(buf: &mut [u8], queue: u32, seq: u32) -> usize {
    buf[..64].fill(0);
    buf[0..6].copy_from_slice(&MAC_B);
    buf[6..12].copy_from_slice(&MAC_A);
    buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    buf[14..22].copy_from_slice(MAGIC);
    buf[22..26].copy_from_slice(&queue.to_be_bytes());
    buf[26..30].copy_from_slice(&seq.to_be_bytes());
    64
}

fn parse_frame(f: &[u8]) -> Option<(u32, u32)> {
    if f.len() < 30 || f[12..14] != ETHERTYPE.to_be_bytes() || &f[14..22] != MAGIC || f[0..6] != MAC_B {
        return None;
    }
    Some((u32::from_be_bytes(f[22..26].try_into().ok()?), u32::from_be_bytes(f[26..30].try_into().ok()?)))
}

const PER_QUEUE: u32 = 150;
const QUEUES: u32 = 2;

#[test]
fn tx_ring_frames_reach_the_peer_on_every_queue_and_complete() {
    let _guard = NET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _net = TestNet::new();

    // The capture in B, open before anything is sent.
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = thread::spawn(move || {
        enter_named_netns(NS_B).expect("enter netns B");
        let cap = Capture::open(NS_B).expect("AF_PACKET socket in B");
        ready_tx.send(()).unwrap();
        let mut seen = HashSet::new();
        let mut dups = 0u32;
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < (PER_QUEUE * QUEUES) as usize && Instant::now() < deadline {
            if let Some(n) = cap.recv(&mut buf).expect("capture recv")
                && let Some(id) = parse_frame(&buf[..n])
                && !seen.insert(id)
            {
                dups += 1;
            }
        }
        (seen, dups)
    });
    ready_rx.recv().expect("capture thread started");

    let results = in_netns(NS_A, || {
        let n = queue_count(NS_A).unwrap();
        assert_eq!(n, QUEUES);
        let mut socks: Vec<Socket> = (0..n)
            .map(|q| {
                let (s, info) = Socket::new(NS_A, q, &small_cfg(BindMode::Copy)).expect("copy bind");
                assert_eq!(info.mode, BoundMode::Copy);
                s
            })
            .collect();
        // Interleave the queues, in batches of varying size (1..=40), as a worker would.
        let mut next = vec![0u32; socks.len()];
        let mut round = 0u32;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut busy = false;
            for (q, s) in socks.iter_mut().enumerate() {
                s.reap_completions();
                s.refill_fill_ring();
                let batch = 1 + (round * 7 + q as u32 * 13) % 40;
                for _ in 0..batch {
                    if next[q] == PER_QUEUE {
                        break;
                    }
                    let Some(mut t) = s.tx_frame() else { break };
                    let len = build_frame(t.buf_mut(), q as u32, next[q]);
                    t.submit(len).unwrap();
                    next[q] += 1;
                }
                s.flush_tx().expect("flush_tx");
                busy |= next[q] < PER_QUEUE || s.tx_in_flight() > 0;
            }
            round += 1;
            if !busy {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "TX did not complete: {:?}",
                socks.iter().map(|s| s.stats()).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(1));
        }
        for s in socks.iter_mut() {
            // No XDP program redirects anything here: the RX ring stays empty.
            assert!(!s.poll(Some(Duration::from_millis(1))).expect("poll"));
            let mut called = 0;
            let n = s.recv_batch(64, |_, _| {
                called += 1;
                RxVerdict::Recycle
            });
            assert_eq!((n, called), (0, 0));
            assert_eq!(s.stats().rx_empty_polls, 1);
        }
        socks
            .iter()
            .map(|s| {
                (s.stats(), s.check_accounting().expect("accounting"), s.kernel_stats().unwrap(), s.tx_needs_wakeup())
            })
            .collect::<Vec<_>>()
    });

    for (q, (stats, frames, kernel, _)) in results.iter().enumerate() {
        assert_eq!(stats.tx_frames, u64::from(PER_QUEUE), "queue {q}: {stats:?}");
        assert_eq!(stats.tx_completed, u64::from(PER_QUEUE), "queue {q}: every frame came back: {stats:?}");
        assert_eq!(stats.tx_bytes, u64::from(PER_QUEUE) * 64);
        assert_eq!(stats.invalid_descs, 0);
        assert!(stats.tx_wakeups > 0, "copy mode needs sendto wakeups: {stats:?}");
        assert_eq!(frames.in_tx + frames.tx_staged + frames.in_tx_user + frames.in_rx_user, 0, "{frames:?}");
        assert_eq!(frames.free + frames.in_fill, frames.total, "{frames:?}");
        assert_eq!(kernel.tx_invalid_descs, 0, "{kernel:?}");
    }
    // TOOLCHAIN.md: in copy mode the TX ring always asks for a wakeup.
    assert!(results.iter().all(|r| r.3), "TX ring needs_wakeup in copy mode");

    let (seen, dups) = capture.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
    let missing: Vec<(u32, u32)> =
        (0..QUEUES).flat_map(|q| (0..PER_QUEUE).map(move |s| (q, s))).filter(|id| !seen.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} frames never reached B, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(dups, 0, "frames seen twice in B");
}

const REQ: &[u8; 8] = b"SLUICEHQ";
const REPLY: &[u8; 8] = b"SLUICEHR";

/// B -> A request: Ethernet header, REQ, queue sent on, sequence number; 64 bytes.
fn build_request(buf: &mut [u8], queue: u32, seq: u32) -> usize {
    build_frame(buf, queue, seq);
    buf[0..6].copy_from_slice(&MAC_A);
    buf[6..12].copy_from_slice(&MAC_B);
    buf[14..22].copy_from_slice(REQ);
    64
}

/// A's responder, in place: swap the MAC addresses, REQ -> REPLY, append the queue received on.
fn answer_in_place(buf: &mut [u8], len: usize, rx_queue: u32) -> Option<usize> {
    if len < 34 || buf[12..14] != ETHERTYPE.to_be_bytes() || &buf[14..22] != REQ {
        return None;
    }
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&buf[0..12]);
    buf[0..6].copy_from_slice(&macs[6..12]);
    buf[6..12].copy_from_slice(&macs[0..6]);
    buf[14..22].copy_from_slice(REPLY);
    buf[30..34].copy_from_slice(&rx_queue.to_be_bytes());
    Some(len)
}

/// A reply seen in B: (queue sent on, sequence number, queue A received it on).
fn parse_reply(f: &[u8]) -> Option<(u32, u32, u32)> {
    if f.len() < 34 || f[0..6] != MAC_B || f[12..14] != ETHERTYPE.to_be_bytes() || &f[14..22] != REPLY {
        return None;
    }
    let be = |r: std::ops::Range<usize>| u32::from_be_bytes(f[r].try_into().unwrap());
    Some((be(22..26), be(26..30), be(30..34)))
}

const ECHO_FRAMES: u32 = 200;
const ECHO_WINDOW: u32 = 16;

/// B sends requests on each of its TX queues through AF_XDP; on A, an XDP program redirects
/// them to the AF_XDP socket of the queue they arrived on, and a responder rewrites each in
/// place and sends it back through the same frame (RX -> TX without a copy); B captures the
/// replies. Checks RX on a real kernel, the headroom offset (the payload parses where the crate
/// says it starts), in-place replies, and the frame accounting after thousands of transitions.
fn echo(skb_mode: bool) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let _guard = NET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _net = TestNet::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let stop_a = stop.clone();
    let responder = thread::spawn(move || {
        enter_named_netns(NS_A).expect("enter netns A");
        let mut socks: Vec<Socket> =
            (0..QUEUES).map(|q| Socket::new(NS_A, q, &small_cfg(BindMode::Copy)).expect("bind in A").0).collect();
        let entries: Vec<(u32, i32)> =
            socks.iter().map(|s| (s.queue_id(), std::os::fd::AsRawFd::as_raw_fd(s))).collect();
        let _prog = xdp::Redirect::attach(sluice_xsk::ifindex(NS_A).unwrap(), skb_mode, &entries).expect("attach XDP");
        for s in socks.iter_mut() {
            s.refill_fill_ring();
        }
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !stop_a.load(Ordering::Relaxed) && Instant::now() < deadline {
            let mut work = 0;
            for s in socks.iter_mut() {
                let q = s.queue_id();
                s.reap_completions();
                s.refill_fill_ring();
                work += s.recv_batch(64, |mut rx, _tx| {
                    // TOOLCHAIN.md: copy mode puts the data 256 bytes (XDP_PACKET_HEADROOM) into
                    // the frame when the UMEM headroom is 0.
                    assert_eq!(rx.offset(), 256, "RX data offset");
                    let len = rx.len();
                    match answer_in_place(rx.buf_mut(), len, q) {
                        Some(n) => RxVerdict::Transmit(n),
                        None => RxVerdict::Recycle,
                    }
                });
                s.flush_tx().expect("flush_tx in A");
            }
            if work == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        // Everything sent must come back before the accounting is checked.
        let deadline = Instant::now() + Duration::from_secs(10);
        while socks.iter().any(|s| s.tx_in_flight() > 0) && Instant::now() < deadline {
            for s in socks.iter_mut() {
                s.flush_tx().expect("flush_tx in A");
                s.reap_completions();
            }
            thread::sleep(Duration::from_millis(1));
        }
        socks.iter().map(|s| (s.stats(), s.check_accounting().expect("accounting in A"))).collect::<Vec<_>>()
    });
    if ready_rx.recv().is_err() {
        // The responder died before it was ready: show why.
        std::panic::resume_unwind(responder.join().unwrap_err());
    }

    let (replies, dups) = in_netns(NS_B, || {
        let cap = Capture::open(NS_B).expect("AF_PACKET socket in B");
        let mut socks: Vec<Socket> =
            (0..QUEUES).map(|q| Socket::new(NS_B, q, &small_cfg(BindMode::Copy)).expect("bind in B").0).collect();
        let mut replies = std::collections::HashMap::new();
        let mut dups = 0u32;
        let mut buf = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seq = 0u32;
        while seq < ECHO_FRAMES && Instant::now() < deadline {
            let end = (seq + ECHO_WINDOW).min(ECHO_FRAMES);
            for s in seq..end {
                let q = s % QUEUES;
                let sock = &mut socks[q as usize];
                let mut t = sock.tx_frame().expect("a TX frame in B");
                let len = build_request(t.buf_mut(), q, s);
                t.submit(len).unwrap();
            }
            for sock in socks.iter_mut() {
                sock.flush_tx().expect("flush_tx in B");
            }
            // Wait for this window's replies (a lost one makes the test fail at the deadline).
            while (seq..end).any(|s| !replies.contains_key(&(s % QUEUES, s))) && Instant::now() < deadline {
                for sock in socks.iter_mut() {
                    sock.flush_tx().expect("flush_tx in B");
                    sock.reap_completions();
                }
                if let Some(n) = cap.recv(&mut buf).expect("capture recv")
                    && let Some((q, s, rxq)) = parse_reply(&buf[..n])
                    && replies.insert((q, s), rxq).is_some()
                {
                    dups += 1;
                }
            }
            seq = end;
        }
        (replies, dups)
    });
    stop.store(true, Ordering::Relaxed);
    let a_stats = responder.join().unwrap_or_else(|p| std::panic::resume_unwind(p));

    let missing: Vec<u32> = (0..ECHO_FRAMES).filter(|s| !replies.contains_key(&(s % QUEUES, *s))).collect();
    assert!(
        missing.is_empty(),
        "{} requests got no reply, first: {:?}; A: {a_stats:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(dups, 0, "replies seen twice");
    let replied: u64 = a_stats.iter().map(|(s, _)| s.tx_frames).sum();
    assert_eq!(replied, u64::from(ECHO_FRAMES), "A replied once per request: {a_stats:?}");
    for (stats, frames) in &a_stats {
        assert_eq!(stats.tx_completed, stats.tx_frames, "{stats:?}");
        assert_eq!(stats.invalid_descs, 0, "{stats:?}");
        assert!(stats.rx_frames >= stats.tx_frames, "{stats:?}");
        assert_eq!(frames.in_tx + frames.tx_staged + frames.in_tx_user + frames.in_rx_user, 0, "{frames:?}");
        assert_eq!(frames.free + frames.in_fill, frames.total, "{frames:?}");
    }
    if !skb_mode {
        // Native mode on veth: a frame sent on B's TX queue q arrives on A's RX queue q.
        for ((q, s), rxq) in &replies {
            assert_eq!(q, rxq, "request {s} sent on queue {q} arrived on queue {rxq}");
        }
        assert!(a_stats.iter().all(|(s, _)| s.rx_frames > 0), "both queues received: {a_stats:?}");
    }
}

#[test]
fn rx_echo_in_place_native_xdp() {
    echo(false);
}

#[test]
fn rx_echo_in_place_skb_xdp() {
    echo(true);
}
