//! Fuzz body: any sequence of segments, timer runs and application calls into an `Endpoint`
//! must never panic and must keep the invariants of `Endpoint::check_invariants`
//! (snd_una <= snd_nxt <= snd_max, buffers within bounds, the timer queue consistent with
//! every connection's deadline, SYN-queue accounting). Every emitted packet must parse.
//!
//! Used by `proxy/tcp/fuzz` (cargo-fuzz, feature `fuzzing`) and by a proptest in this crate.

use crate::config::{Config, ConnectionHandle, Event, FourTuple};
use crate::endpoint::Endpoint;
use crate::time::Instant;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use sluice_wire::tcp::{Flags, SackBlock, Timestamp};
use sluice_wire::{Checksum, ethernet, ip, tcp};

std::thread_local! {
    /// For tests: whether some input reached a synchronized state.
    pub static DEEPEST: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([self.u8()?, self.u8()?, self.u8()?, self.u8()?]))
    }
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const PEERS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(203, 0, 113, 2)];

/// Run one fuzz input. Panics (the finding) if an invariant breaks.
pub fn endpoint(data: &[u8]) {
    let mut input = Input(data);
    let flags0 = input.u8().unwrap_or(0);
    let flags1 = input.u8().unwrap_or(0);
    let config = Config {
        recv_buffer: 1024 << (flags1 % 10),
        send_buffer: 2048,
        syn_queue_len: 2,
        sack: flags0 & 4 == 0,
        timestamps: flags0 & 8 == 0,
        window_scale: flags0 & 16 == 0,
        syn_cookies: flags0 & 32 == 0,
        time_wait: Duration::from_secs(1),
        keepalive: (flags0 & 64 != 0).then_some(crate::config::Keepalive {
            idle: Duration::from_secs(2),
            interval: Duration::from_secs(1),
            probes: 2,
        }),
        idle_timeout: (flags0 & 128 != 0).then_some(Duration::from_secs(30)),
        ..Config::default()
    };
    let mut now = Instant::from_millis(10_000);
    let mut ep = Endpoint::new(config, now);
    let _ = ep.listen(SocketAddr::new(LOCAL.into(), 443));
    let mut handles: Vec<ConnectionHandle> = Vec::new();
    let mut max_state_seen = 0usize;
    if let Ok(h) = ep.connect(now, SocketAddr::new(LOCAL.into(), 50_000), SocketAddr::new(PEERS[1].into(), 80)) {
        handles.push(h);
    }
    let mut buf = vec![0u8; 1600];
    let mut app = [0u8; 4096];
    let mut steps = 0;
    while let Some(op) = input.u8() {
        steps += 1;
        if steps > 2000 {
            break;
        }
        match op % 8 {
            // A segment.
            0..=3 => {
                let Some(sel) = input.u8() else { break };
                let peer = PEERS[usize::from(sel & 1)];
                let (src_port, dst_port) =
                    if sel & 1 == 0 { (40_000 + u16::from(sel >> 5), 443) } else { (80, 50_000) };
                let tuple_conn = ep.lookup(&FourTuple {
                    local: SocketAddr::new(LOCAL.into(), dst_port),
                    remote: SocketAddr::new(peer.into(), src_port),
                });
                let (Some(seq_mode), Some(seq_raw), Some(ack_raw), Some(fl), Some(win), Some(opt), Some(plen)) =
                    (input.u8(), input.u32(), input.u32(), input.u8(), input.u16(), input.u8(), input.u8())
                else {
                    break;
                };
                // Sequence numbers near the connection's own, so that the window tests pass often.
                let (seq, ack) = match (seq_mode & 3, tuple_conn.and_then(|h| ep.connection(h))) {
                    (0, _) | (_, None) => (seq_raw, ack_raw),
                    (2, Some(c)) => (c.rcv_nxt().0, c.snd_max().0),
                    (_, Some(c)) => (
                        c.rcv_nxt().0.wrapping_add(seq_raw % 4096).wrapping_sub(1024),
                        c.snd_una().0.wrapping_add(ack_raw % 4096).wrapping_sub(512),
                    ),
                };
                let payload_len = usize::from(plen) * 4 % 1200;
                let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
                let mut sack_blocks = [None; 4];
                if opt & 1 != 0 {
                    let base = ack;
                    sack_blocks[0] = Some(SackBlock {
                        left: base.wrapping_add(u32::from(opt) * 16),
                        right: base.wrapping_add(u32::from(opt) * 32 + 100),
                    });
                    sack_blocks[1] = Some(SackBlock { left: base.wrapping_add(3000), right: base.wrapping_add(4000) });
                }
                let seg = tcp::Repr {
                    src_port,
                    dst_port,
                    seq_number: seq,
                    ack_number: ack,
                    flags: Flags(fl),
                    window_len: win,
                    max_seg_size: (opt & 2 != 0).then_some(win.max(1)),
                    window_scale: (opt & 4 != 0).then_some(opt >> 4),
                    sack_permitted: opt & 8 != 0,
                    sack_blocks,
                    timestamp: (opt & 16 != 0).then_some(Timestamp { tsval: seq_raw, tsecr: ack_raw }),
                    payload: &payload,
                };
                let ip = ip::Repr::new(peer.into(), LOCAL.into(), ip::Protocol::Tcp, seg.buffer_len(), 64)
                    .expect("one family");
                ep.handle_segment(now, &ip, &seg);
            }
            // Time passes.
            4 => {
                let Some(ms) = input.u16() else { break };
                now += Duration::from_millis(u64::from(ms));
                ep.handle_timeout(now);
            }
            // Drain transmissions; each must parse.
            5 => {
                let mut n = 0;
                while let Some(len) = ep.poll_transmit(now, &mut buf) {
                    let (ipr, upper) = ip::Repr::parse(ethernet::EtherType::Ipv4, &buf[..len], Checksum::Verify)
                        .expect("emitted IPv4 parses and verifies");
                    let tp = tcp::Packet::new_checked(upper).expect("emitted TCP parses");
                    tcp::Repr::parse(&tp, ipr.src_addr(), ipr.dst_addr(), Checksum::Verify)
                        .expect("emitted TCP verifies");
                    n += 1;
                    if n > 10_000 {
                        panic!("poll_transmit never ends");
                    }
                }
            }
            // Application calls.
            _ => {
                let Some(what) = input.u8() else { break };
                while let Some((h, e)) = ep.poll_event() {
                    if e == Event::Established && !handles.contains(&h) {
                        handles.push(h);
                    }
                }
                if handles.is_empty() {
                    continue;
                }
                let h = handles[usize::from(what >> 3) % handles.len()];
                match what & 7 {
                    0 | 1 => {
                        let _ = ep.send(h, &app[..usize::from(what) * 16]);
                    }
                    2 | 3 => {
                        let _ = ep.recv(h, &mut app);
                    }
                    4 => ep.close(h),
                    5 => ep.abort(h),
                    _ => {
                        let _ = ep.state(h);
                    }
                }
            }
        }
        if let Err(e) = ep.check_invariants() {
            panic!("invariant broken after op {steps}: {e}");
        }
        let synchronized = ep
            .connections_by_state()
            .iter()
            .filter(|(s, n)| *n > 0 && !matches!(s, crate::State::SynSent | crate::State::SynReceived))
            .count();
        max_state_seen = max_state_seen.max(synchronized);
        if ep.poll_timeout().is_some_and(|t| t < now) && op % 8 == 4 {
            panic!("a timer in the past survived handle_timeout");
        }
    }
    DEEPEST.with(|d| d.set(d.get().max(max_state_seen)));
    // Everything ends: run time forward until no timers remain (bounded).
    for _ in 0..200 {
        while ep.poll_transmit(now, &mut buf).is_some() {}
        let Some(t) = ep.poll_timeout() else { break };
        now = now.max(t);
        ep.handle_timeout(now);
        if let Err(e) = ep.check_invariants() {
            panic!("invariant broken while draining: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), failure_persistence: None, ..Default::default() })]
        #[test]
        fn endpoint_survives_any_input(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            super::endpoint(&data);
        }
    }

    /// A structured run: handshake-shaped inputs reach deeper states than random bytes.
    #[test]
    fn endpoint_survives_structured_inputs() {
        let mut rng = crate::sim::Rng::new(42);
        for _ in 0..300 {
            let len = (rng.next_u64() % 3000) as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            super::endpoint(&data);
        }
        assert!(super::DEEPEST.with(|d| d.get()) > 0, "no input reached a synchronized state");
    }
}
