//! Per-state tests of the state machine in smoltcp's style: one endpoint under test, a peer
//! played by hand with a template segment (`TEMPL`) and `send!`/`recv!` helpers, fixtures that
//! build each state. This file is the shared harness; the tests are grouped by state as in
//! RFC 9293's diagram (`listen`, `syn_sent`, `syn_received`, `established`, `close` for
//! FIN-WAIT-1 to TIME-WAIT) and by concern (`options`, `rst_and_challenge`, `window`,
//! `retransmission`, `timers`, `syn_queue`, `endpoint`).

use crate::config::{Config, ConnectionHandle, DropReason, Event, FourTuple, Keepalive};
use crate::connection::State;
use crate::endpoint::Endpoint;
use crate::time::Instant;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use sluice_wire::tcp::{Flags, SackBlock, Timestamp};
use sluice_wire::{Checksum, ip, tcp};

const LOCAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));

const REMOTE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

const LOCAL_IP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2));

const REMOTE_IP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1));

const LOCAL_PORT: u16 = 443;

const REMOTE_PORT: u16 = 49_500;

const REMOTE_SEQ: u32 = 10_000;

const TEMPL: tcp::Repr<'static> = tcp::Repr {
    src_port: REMOTE_PORT,
    dst_port: LOCAL_PORT,
    seq_number: REMOTE_SEQ + 1,
    ack_number: 0,
    flags: Flags::ACK,
    window_len: 64_000,
    max_seg_size: None,
    window_scale: None,
    sack_permitted: false,
    sack_blocks: [None; 4],
    timestamp: None,
    payload: &[],
};

/// A segment the endpoint sent, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    sack_permitted: bool,
    sack: Vec<SackBlock>,
    ts: Option<Timestamp>,
    payload: Vec<u8>,
}

struct T {
    ep: Endpoint,
    /// Our address and the peer's (IPv4 unless the fixture says otherwise).
    local: IpAddr,
    remote: IpAddr,
    now: Instant,
    /// Our ISS as read from the first SYN or SYN-ACK (the peer's view).
    iss: u32,
    h: Option<ConnectionHandle>,
}

fn config() -> Config {
    Config {
        recv_buffer: 64 * 1024,
        send_buffer: 64 * 1024,
        window_scale: false,
        sack: true,
        timestamps: false,
        time_wait: Duration::from_secs(10),
        secret: [3; 16],
        // The RTO tests below time the RTO alone; loss probes have their own tests.
        loss_probes: false,
        ..Config::default()
    }
}

fn tuple() -> FourTuple {
    FourTuple { local: SocketAddr::new(LOCAL_IP, LOCAL_PORT), remote: SocketAddr::new(REMOTE_IP, REMOTE_PORT) }
}

impl T {
    fn new(config: Config) -> T {
        let now = Instant::from_millis(100_000);
        T { ep: Endpoint::new(config, now), local: LOCAL_IP, remote: REMOTE_IP, now, iss: 0, h: None }
    }
    /// A harness whose connection runs over IPv6.
    fn new_v6(config: Config) -> T {
        T { local: LOCAL_IP6, remote: REMOTE_IP6, ..T::new(config) }
    }
    /// The connection's 4-tuple.
    fn tuple(&self) -> FourTuple {
        FourTuple { local: SocketAddr::new(self.local, LOCAL_PORT), remote: SocketAddr::new(self.remote, REMOTE_PORT) }
    }
    fn send(&mut self, seg: &tcp::Repr<'_>) {
        self.send_from(self.remote, seg);
    }
    /// `ack_number: 0` with ACK set (the template's) means "ISS + 1", the usual ACK.
    fn send_from(&mut self, src: IpAddr, seg: &tcp::Repr<'_>) {
        let mut seg = *seg;
        if seg.ack_number == 0 && seg.flags.ack() && self.iss != 0 {
            seg.ack_number = self.iss1();
        }
        let seg = &seg;
        let ip = ip::Repr::new(src, self.local, ip::Protocol::Tcp, seg.buffer_len(), 64).unwrap();
        self.ep.handle_segment(self.now, &ip, seg);
        self.ep.check_invariants().unwrap();
    }
    fn recv(&mut self) -> Option<Out> {
        let mut buf = [0u8; 2000];
        let n = self.ep.poll_transmit(self.now, &mut buf)?;
        let ethertype = ip::Version::of(&self.local).ethertype();
        let (ipr, upper) = ip::Repr::parse(ethertype, &buf[..n], Checksum::Verify).unwrap();
        assert_eq!((ipr.src_addr(), ipr.dst_addr(), ipr.hop_limit()), (self.local, self.remote, 64));
        let tp = tcp::Packet::new_checked(upper).unwrap();
        let s = tcp::Repr::parse(&tp, ipr.src_addr(), ipr.dst_addr(), Checksum::Verify).unwrap();
        self.ep.check_invariants().unwrap();
        Some(Out {
            src_port: s.src_port,
            dst_port: s.dst_port,
            seq: s.seq_number,
            ack: s.ack_number,
            flags: s.flags,
            window: s.window_len,
            mss: s.max_seg_size,
            wscale: s.window_scale,
            sack_permitted: s.sack_permitted,
            sack: s.sack_blocks.iter().flatten().copied().collect(),
            ts: s.timestamp,
            payload: s.payload.to_vec(),
        })
    }
    fn recv_all(&mut self) -> Vec<Out> {
        let mut v = Vec::new();
        while let Some(o) = self.recv() {
            v.push(o);
            assert!(v.len() < 10_000);
        }
        v
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.ep.handle_timeout(self.now);
        self.ep.check_invariants().unwrap();
    }
    /// Advance to the next timer.
    fn fire(&mut self) {
        let t = self.ep.poll_timeout().expect("a timer");
        assert!(t >= self.now);
        self.now = t;
        self.ep.handle_timeout(self.now);
        self.ep.check_invariants().unwrap();
    }
    fn events(&mut self) -> Vec<Event> {
        let mut v = Vec::new();
        while let Some((_, e)) = self.ep.poll_event() {
            v.push(e);
        }
        v
    }
    fn state(&self) -> Option<State> {
        self.h.and_then(|h| self.ep.state(h))
    }
    fn h(&self) -> ConnectionHandle {
        self.h.expect("handle")
    }
    fn iss1(&self) -> u32 {
        self.iss.wrapping_add(1)
    }
    fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.ep.recv(self.h(), &mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }
    fn drops(&self, r: DropReason) -> u64 {
        self.ep.stats().drops_for(r)
    }
}

macro_rules! send {
    ($t:expr, $($field:ident: $value:expr),* $(,)?) => {
        $t.send(&tcp::Repr { $($field: $value,)* ..TEMPL })
    };
}

macro_rules! recv {
    ($t:expr) => {
        $t.recv().expect("a segment")
    };
    ($t:expr, $($field:ident: $value:expr),* $(,)?) => {{
        let o = $t.recv().expect("a segment");
        $(assert_eq!(o.$field, $value, concat!("field ", stringify!($field)));)*
        o
    }};
}

macro_rules! recv_nothing {
    ($t:expr) => {
        if let Some(o) = $t.recv() {
            panic!("unexpected segment {o:?}");
        }
    };
}

// ---- fixtures ----

fn listening_with(config: Config) -> T {
    listening_in(T::new(config))
}

/// `t` listening on its local address.
fn listening_in(mut t: T) -> T {
    t.ep.listen(SocketAddr::new(t.local, LOCAL_PORT)).unwrap();
    t
}

fn syn_received_with(config: Config) -> T {
    syn_received_in(listening_with(config))
}

/// The listening `t` after the peer's SYN (MSS 1460, SACK-permitted) and our SYN-ACK.
fn syn_received_in(mut t: T) -> T {
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1460), sack_permitted: true);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 1);
    t.iss = o.seq;
    t.h = t.ep.lookup(&t.tuple());
    assert_eq!(t.state(), Some(State::SynReceived));
    t
}

fn syn_received() -> T {
    syn_received_with(config())
}

fn established_with(config: Config) -> T {
    established_in(syn_received_with(config))
}

/// ESTABLISHED over IPv6 (2001:db8:100::2 and ::1).
fn established_v6() -> T {
    established_in(syn_received_in(listening_in(T::new_v6(config()))))
}

/// `t` in SYN-RECEIVED after the peer's ACK of our SYN.
fn established_in(mut t: T) -> T {
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.events(), vec![Event::Established]);
    recv_nothing!(t);
    t
}

fn established() -> T {
    established_with(config())
}

fn syn_sent_with(config: Config) -> T {
    let mut t = T::new(config);
    let h =
        t.ep.connect(t.now, SocketAddr::new(LOCAL_IP, LOCAL_PORT), SocketAddr::new(REMOTE_IP, REMOTE_PORT)).unwrap();
    t.h = Some(h);
    let o = recv!(t, flags: Flags::SYN, ack: 0);
    t.iss = o.seq;
    assert_eq!(t.state(), Some(State::SynSent));
    t
}

fn syn_sent() -> T {
    syn_sent_with(config())
}

/// ESTABLISHED, then close: our FIN is out (seq ISS+1).
fn fin_wait_1() -> T {
    fin_wait_1_in(established())
}

/// The established `t` after our close: our FIN is out (seq ISS+1).
fn fin_wait_1_in(mut t: T) -> T {
    t.ep.close(t.h());
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1, ack: REMOTE_SEQ + 1);
    assert_eq!(t.state(), Some(State::FinWait1));
    t
}

fn fin_wait_2() -> T {
    fin_wait_2_in(fin_wait_1())
}

fn fin_wait_2_in(mut t: T) -> T {
    let a = t.iss1() + 1;
    send!(t, ack_number: a);
    assert_eq!(t.state(), Some(State::FinWait2));
    t
}

fn close_wait() -> T {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, flags: Flags::FIN | Flags::ACK);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2);
    assert_eq!(t.state(), Some(State::CloseWait));
    t
}

fn last_ack() -> T {
    let mut t = close_wait();
    t.ep.close(t.h());
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1, ack: REMOTE_SEQ + 2);
    assert_eq!(t.state(), Some(State::LastAck));
    t
}

fn time_wait() -> T {
    time_wait_in(fin_wait_2())
}

/// `t` in FIN-WAIT-2 after the peer's FIN.
fn time_wait_in(mut t: T) -> T {
    let a = t.iss1() + 1;
    send!(t, ack_number: a, flags: Flags::FIN | Flags::ACK);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2);
    assert_eq!(t.state(), Some(State::TimeWait));
    t
}

mod close;
mod endpoint;
mod established;
mod listen;
mod options;
mod path_mtu;
mod retransmission;
mod rst_and_challenge;
mod syn_queue;
mod syn_received;
mod syn_sent;
mod timers;
mod window;
