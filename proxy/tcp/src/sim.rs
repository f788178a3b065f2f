//! A deterministic two-endpoint network simulator in virtual time (after quinn-proto's `Pair`
//! and smoltcp's loss sweeps). Packets leave one `Endpoint` through `poll_transmit`, cross a
//! link with seeded loss, duplication, reordering, delay and a bandwidth limit, and enter the
//! other through the real wire parsers (checksums verified). Nothing here reads a clock.
//!
//! Compiled for this crate's tests and with the `sim` feature (benchmarks).

use crate::config::{Config, ConnectionHandle, Event, StreamError};
use crate::endpoint::Endpoint;
use crate::time::Instant;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use sluice_wire::{Checksum, ethernet, ip, tcp};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// xorshift64*: small, seeded, good enough for a simulator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// One direction of the link.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Probability a packet is held back by `reorder_delay` (so later ones overtake it).
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Bits per second (None: infinite).
    pub bandwidth: Option<u64>,
    /// Largest queueing delay before tail drop.
    pub max_queue_delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(15),
            delay: Duration::from_millis(10),
            bandwidth: None,
            max_queue_delay: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    order: u64,
    to_b: bool,
    bytes: Vec<u8>,
}

/// Counters of the link.
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub queue_drops: u64,
    pub delivered: u64,
    pub unparsable: u64,
}

/// Two endpoints and the link between them.
#[derive(Debug)]
pub struct Pair {
    pub a: Endpoint,
    pub b: Endpoint,
    pub now: Instant,
    pub a_to_b: LinkConfig,
    pub b_to_a: LinkConfig,
    pub stats: LinkStats,
    rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    link_free: [Instant; 2],
    buf: Vec<u8>,
}

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const A_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const B_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);

impl Pair {
    #[must_use]
    pub fn new(config_a: Config, config_b: Config, link: LinkConfig, seed: u64) -> Self {
        let now = Instant::from_millis(1_000);
        Pair {
            a: Endpoint::new(config_a, now),
            b: Endpoint::new(config_b, now),
            now,
            a_to_b: link,
            b_to_a: link,
            stats: LinkStats::default(),
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
            link_free: [now; 2],
            buf: vec![0; 65_536],
        }
    }

    /// Move every packet both endpoints want to send onto the link.
    pub fn transmit(&mut self) {
        for to_b in [true, false] {
            loop {
                let ep = if to_b { &mut self.a } else { &mut self.b };
                let Some(n) = ep.poll_transmit(self.now, &mut self.buf) else {
                    break;
                };
                let bytes = self.buf[..n].to_vec();
                self.put_on_link(to_b, bytes);
            }
        }
    }

    fn put_on_link(&mut self, to_b: bool, bytes: Vec<u8>) {
        let link = if to_b { self.a_to_b } else { self.b_to_a };
        self.stats.sent += 1;
        if self.rng.chance(link.loss) {
            self.stats.lost += 1;
            return;
        }
        let dir = usize::from(!to_b);
        let mut depart = self.now.max(self.link_free[dir]);
        if let Some(bps) = link.bandwidth {
            if depart - self.now > link.max_queue_delay {
                self.stats.queue_drops += 1;
                return;
            }
            let tx = Duration::from_nanos((bytes.len() as u64 * 8).saturating_mul(1_000_000_000) / bps.max(1));
            depart += tx;
            self.link_free[dir] = depart;
        }
        let mut at = depart + link.delay;
        if self.rng.chance(link.reorder) {
            self.stats.reordered += 1;
            at += link.reorder_delay;
        }
        let copies = if self.rng.chance(link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.order += 1;
            self.queue.push(Reverse(InFlight { at, order: self.order, to_b, bytes: bytes.clone() }));
        }
    }

    /// Parse a packet with the real wire code and hand it to `ep`.
    pub fn deliver(ep: &mut Endpoint, now: Instant, bytes: &[u8]) -> bool {
        // The IP version from the first nibble, as a NIC would know it from the EtherType.
        let ethertype = match bytes.first().map(|b| b >> 4) {
            Some(6) => ethernet::EtherType::Ipv6,
            _ => ethernet::EtherType::Ipv4,
        };
        let Ok((ip, upper)) = ip::Repr::parse(ethertype, bytes, Checksum::Verify) else {
            return false;
        };
        let Ok(tp) = tcp::Packet::new_checked(upper) else {
            return false;
        };
        let Ok(seg) = tcp::Repr::parse(&tp, ip.src_addr(), ip.dst_addr(), Checksum::Verify) else {
            return false;
        };
        if std::env::var_os("SIM_TRACE").is_some() {
            std::println!(
                "{now:?} {}:{} > {}:{} [{}] seq {} ack {} win {} len {} sack {:?} ts {:?}",
                ip.src_addr(),
                seg.src_port,
                ip.dst_addr(),
                seg.dst_port,
                seg.flags,
                seg.seq_number,
                seg.ack_number,
                seg.window_len,
                seg.payload.len(),
                seg.sack_blocks,
                seg.timestamp
            );
        }
        ep.handle_segment(now, &ip, &seg);
        true
    }

    /// The next instant something happens (a delivery or a timer), if any.
    #[must_use]
    pub fn next_event(&self) -> Option<Instant> {
        [self.queue.peek().map(|r| r.0.at), self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min()
    }

    /// Advance to the next event and process everything due then. Returns false when idle.
    pub fn step(&mut self) -> bool {
        self.transmit();
        let Some(t) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(t);
        while self.queue.peek().is_some_and(|r| r.0.at <= self.now) {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            let ep = if p.to_b { &mut self.b } else { &mut self.a };
            if Self::deliver(ep, self.now, &p.bytes) {
                self.stats.delivered += 1;
            } else {
                self.stats.unparsable += 1;
            }
        }
        if self.a.poll_timeout().is_some_and(|d| d <= self.now) {
            self.a.handle_timeout(self.now);
        }
        if self.b.poll_timeout().is_some_and(|d| d <= self.now) {
            self.b.handle_timeout(self.now);
        }
        true
    }
}

/// One side of a stream transfer: sends `data`, then closes; reads everything.
#[derive(Debug, Default)]
pub struct StreamApp {
    pub handle: Option<ConnectionHandle>,
    pub data: Vec<u8>,
    pub sent: usize,
    pub received: Vec<u8>,
    pub closed_sent: bool,
    pub finished: bool,
    pub freed: bool,
    pub reset: bool,
    pub timed_out: bool,
    pub established: bool,
    /// Abort instead of closing once everything was sent (tests of RST).
    pub close_when_done: bool,
}

impl StreamApp {
    #[must_use]
    pub fn new(data: Vec<u8>) -> Self {
        StreamApp { data, close_when_done: true, ..Default::default() }
    }

    /// Drain events, read, write, close.
    pub fn drive(&mut self, ep: &mut Endpoint) {
        while let Some((h, e)) = ep.poll_event() {
            match e {
                Event::Established => {
                    self.handle.get_or_insert(h);
                    self.established = true;
                }
                Event::Closed => self.freed = true,
                Event::Reset => self.reset = true,
                Event::TimedOut => self.timed_out = true,
                Event::Readable | Event::Writable | Event::PeerClosed => {}
            }
        }
        let Some(h) = self.handle else { return };
        let mut buf = [0u8; 16_384];
        loop {
            match ep.recv(h, &mut buf) {
                Ok(0) => break,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(StreamError::Finished) => {
                    self.finished = true;
                    break;
                }
                Err(_) => break,
            }
        }
        while self.sent < self.data.len() {
            match ep.send(h, &self.data[self.sent..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => self.sent += n,
            }
        }
        if self.established && self.sent == self.data.len() && !self.closed_sent && self.close_when_done {
            self.closed_sent = true;
            ep.close(h);
        }
    }
}

/// Outcome of `run_transfer`.
#[derive(Debug)]
pub struct Transfer {
    pub pair: Pair,
    pub client: StreamApp,
    pub server: StreamApp,
    /// Virtual time until both TCBs were gone (TIME-WAIT included).
    pub elapsed: Duration,
    /// Virtual time until both applications had every byte of the other side.
    pub data_done: Option<Duration>,
}

/// Connect A to B, move `a_data` A->B and `b_data` B->A, close both ways, and run until both
/// endpoints are empty (TIME-WAIT expired) or `limit` of virtual time passed. Over IPv4
/// (`A_ADDR`, `B_ADDR`); `run_transfer_over` takes the addresses.
pub fn run_transfer(
    config: Config,
    link: LinkConfig,
    seed: u64,
    a_data: Vec<u8>,
    b_data: Vec<u8>,
    limit: Duration,
) -> Transfer {
    run_transfer_over((A_ADDR.into(), B_ADDR.into()), config, link, seed, a_data, b_data, limit)
}

/// `run_transfer` between the addresses `(a, b)` (both IPv4 or both IPv6).
pub fn run_transfer_over(
    (a, b): (IpAddr, IpAddr),
    config: Config,
    link: LinkConfig,
    seed: u64,
    a_data: Vec<u8>,
    b_data: Vec<u8>,
    limit: Duration,
) -> Transfer {
    let mut pair = Pair::new(config.clone(), config, link, seed);
    let server_addr = SocketAddr::new(b, 443);
    let client_addr = SocketAddr::new(a, 40_000 + (seed % 20_000) as u16);
    pair.b.listen(server_addr).expect("listen");
    let start = pair.now;
    let h = pair.a.connect(pair.now, client_addr, server_addr).expect("connect");
    let mut client = StreamApp::new(a_data);
    client.handle = Some(h);
    let mut server = StreamApp::new(b_data);
    let mut data_done = None;
    loop {
        client.drive(&mut pair.a);
        server.drive(&mut pair.b);
        if data_done.is_none()
            && server.received.len() == client.data.len()
            && client.received.len() == server.data.len()
        {
            data_done = Some(pair.now - start);
        }
        if pair.now - start > limit {
            break;
        }
        if !pair.step() {
            client.drive(&mut pair.a);
            server.drive(&mut pair.b);
            pair.transmit();
            if pair.next_event().is_none() {
                break;
            }
        }
    }
    let elapsed = pair.now - start;
    Transfer { pair, client, server, elapsed, data_done }
}
