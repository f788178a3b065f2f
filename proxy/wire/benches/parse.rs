//! Microbenchmark: ns per frame for `parse_frame` (checksums verified and ignored), `emit_frame`
//! and `emit_ip_tcp_in_place` of a 1460-byte TCP segment with timestamps, and the checksum
//! of 1480 bytes. Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p sluice-wire --bench parse` (release profile).

use std::hint::black_box;
use std::time::Instant;

use sluice_wire::ethernet::{self, Address, EtherType};
use sluice_wire::ip::{self, Protocol};
use sluice_wire::ipv4::{self, Ipv4Addr};
use sluice_wire::tcp::{self, Flags, Timestamp};
use sluice_wire::{Checksum, checksum, emit_frame, emit_ip_tcp_in_place, parse_frame};

const ITERS: u32 = 2_000_000;

fn measure(name: &str, mut f: impl FnMut()) {
    for _ in 0..ITERS / 20 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..ITERS / 5 {
            f();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(ITERS / 5);
        best = best.min(ns);
    }
    println!("{name:<44} {best:>8.1} ns/frame");
}

fn main() {
    let payload: Vec<u8> = (0..1460u32).map(|i| (i * 7) as u8).collect();
    let eth = ethernet::Repr {
        src_addr: Address([2, 0, 0, 0, 0, 1]),
        dst_addr: Address([2, 0, 0, 0, 0, 2]),
        ethertype: EtherType::Ipv4,
    };
    let tcp = tcp::Repr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1,
        ack_number: 2,
        flags: Flags::ACK | Flags::PSH,
        window_len: 501,
        max_seg_size: None,
        window_scale: None,
        sack_permitted: false,
        sack_blocks: [None; 4],
        timestamp: Some(Timestamp { tsval: 3, tsecr: 4 }),
        payload: &payload,
    };
    let ip = ip::Repr::V4(ipv4::Repr {
        src_addr: Ipv4Addr::new(198, 51, 100, 1),
        dst_addr: Ipv4Addr::new(198, 51, 100, 2),
        protocol: Protocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    });
    let mut frame = vec![0u8; 2048];
    let len = emit_frame(&mut frame, &eth, &ip, &tcp).unwrap();
    frame.truncate(len);
    println!("frame: {len} bytes (1460-byte payload, timestamps option), {ITERS} iterations x best of 5");

    measure("parse_frame (Checksum::Verify)", || {
        let s = parse_frame(black_box(&frame), Checksum::Verify).unwrap();
        black_box(s.tcp.payload.len());
    });
    measure("parse_frame (Checksum::Ignore)", || {
        let s = parse_frame(black_box(&frame), Checksum::Ignore).unwrap();
        black_box(s.tcp.payload.len());
    });
    let mut out = vec![0u8; 2048];
    measure("emit_frame (copies payload, both checksums)", || {
        let n = emit_frame(black_box(&mut out), black_box(&eth), &ip, black_box(&tcp)).unwrap();
        black_box(n);
    });
    let no_payload = tcp::Repr { payload: &[], ..tcp };
    measure("emit_ip_tcp_in_place (both checksums)", || {
        let n = emit_ip_tcp_in_place(black_box(&mut out[14..]), &ip, black_box(&no_payload), 1460).unwrap();
        black_box(n);
    });
    measure("checksum::data over 1480 bytes", || {
        black_box(checksum::data(black_box(&frame[34..])));
    });
}
