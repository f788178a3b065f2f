//! Figures, not a test: how many frames per second one AF_XDP worker receives and answers in
//! place (RX frame -> TX frame), copy mode, on a one-queue veth between two namespaces it makes
//! (`sluice-hx-ea` / `sluice-hx-eb`, 198.51.100.111/24 and .112, removed at the end).
//!
//! A sender in B blasts 64-byte frames through its own AF_XDP TX ring; in A a minimal XDP
//! program redirects them to the responder's socket, which answers each one in place. Both run
//! busy loops, so on a 2-core machine they share the CPU with the kernel's softirq work: read the
//! figures as indicative.
//!
//! Run as root: `cargo run -p sluice-xsk --release --example echo_rate -- [seconds] [native|skb]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sluice_xsk::{BindMode, RxVerdict, Socket, XskConfig, enter_named_netns, ifindex};

const NS_A: &str = "sluice-hx-ea";
const NS_B: &str = "sluice-hx-eb";

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

struct Net;

impl Drop for Net {
    fn drop(&mut self) {
        ip(&["netns", "del", NS_A]);
        ip(&["netns", "del", NS_B]);
    }
}

fn setup() -> Net {
    ip(&["netns", "del", NS_A]);
    ip(&["netns", "del", NS_B]);
    let net = Net;
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
            "02:00:00:00:01:01",
            "type",
            "veth",
            "peer",
            "name",
            NS_B,
            "netns",
            NS_B,
            "address",
            "02:00:00:00:01:02",
        ],
        &["-n", NS_A, "addr", "add", "198.51.100.111/24", "dev", NS_A],
        &["-n", NS_B, "addr", "add", "198.51.100.112/24", "dev", NS_B],
        &["-n", NS_A, "link", "set", NS_A, "up"],
        &["-n", NS_B, "link", "set", NS_B, "up"],
    ];
    for s in steps {
        assert!(ip(s), "ip {s:?} failed (root needed)");
    }
    net
}

fn cfg() -> XskConfig {
    XskConfig { frame_size: 2048, mode: BindMode::Copy, ..XskConfig::default() }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let skb = args.next().as_deref() == Some("skb");
    let _net = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();

    let stop_a = stop.clone();
    let responder = thread::spawn(move || {
        enter_named_netns(NS_A).unwrap();
        let (mut s, _) = Socket::new(NS_A, 0, &cfg()).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let _prog = common::xdp::Redirect::attach(ifindex(NS_A).unwrap(), skb, &[(0, fd)]).unwrap();
        s.refill_fill_ring();
        ready_tx.send(()).unwrap();
        let mut answered = 0u64;
        let mut t0 = None;
        while !stop_a.load(Ordering::Relaxed) {
            s.reap_completions();
            s.refill_fill_ring();
            let n = s.recv_batch(64, |mut rx, _| {
                let len = rx.len();
                let b = rx.buf_mut();
                let mut macs = [0u8; 12];
                macs.copy_from_slice(&b[..12]);
                b[..6].copy_from_slice(&macs[6..]);
                b[6..12].copy_from_slice(&macs[..6]);
                RxVerdict::Transmit(len)
            });
            if n > 0 && t0.is_none() {
                t0 = Some((Instant::now(), s.stats()));
            }
            answered += u64::from(n);
            s.flush_tx().unwrap();
        }
        let (t0, s0) = t0.expect("no frame received");
        let dt = t0.elapsed().as_secs_f64();
        let s1 = s.stats();
        (dt, s1.rx_frames - s0.rx_frames, s1.tx_frames - s0.tx_frames, s1, s.kernel_stats().unwrap(), answered)
    });
    ready_rx.recv().unwrap();

    let stop_b = stop.clone();
    let sender = thread::spawn(move || {
        enter_named_netns(NS_B).unwrap();
        let (mut s, _) = Socket::new(NS_B, 0, &cfg()).unwrap();
        let t0 = Instant::now();
        while !stop_b.load(Ordering::Relaxed) {
            s.reap_completions();
            for _ in 0..64 {
                let Some(mut t) = s.tx_frame() else { break };
                let b = t.buf_mut();
                b[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
                b[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
                b[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
                b[14..64].fill(0x5a);
                let _ = t.submit(64);
            }
            s.flush_tx().unwrap();
        }
        (t0.elapsed().as_secs_f64(), s.stats())
    });

    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (bdt, bstats) = sender.join().unwrap();
    let (dt, rx, tx, astats, kstats, _) = responder.join().unwrap();
    println!("mode: {} XDP, copy-mode AF_XDP, 64-byte frames, {secs} s", if skb { "skb" } else { "native" });
    println!("sender (B):    {:>10.0} frames/s put on the TX ring", bstats.tx_frames as f64 / bdt);
    println!("responder (A): {:>10.0} frames/s received, {:>10.0} frames/s answered", rx as f64 / dt, tx as f64 / dt);
    println!("responder stats: {astats:?}");
    println!("responder kernel stats: {kstats:?}");
}
