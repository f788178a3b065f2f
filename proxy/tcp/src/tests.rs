//! Per-state tests of the state machine in smoltcp's style: one endpoint under test, a peer
//! played by hand with a template segment (`TEMPL`) and `send!`/`recv!` helpers, fixtures that
//! build each state. Grouped by state as in RFC 9293's diagram.

use crate::config::{Config, ConnectionHandle, DropReason, Event, FourTuple, Keepalive};
use crate::connection::State;
use crate::endpoint::Endpoint;
use crate::time::Instant;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::time::Duration;
use sluice_wire::tcp::{Flags, SackBlock, Timestamp};
use sluice_wire::{Checksum, ipv4, tcp};

const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
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
    FourTuple {
        local: SocketAddrV4::new(LOCAL_IP, LOCAL_PORT),
        remote: SocketAddrV4::new(REMOTE_IP, REMOTE_PORT),
    }
}

impl T {
    fn new(config: Config) -> T {
        let now = Instant::from_millis(100_000);
        T {
            ep: Endpoint::new(config, now),
            now,
            iss: 0,
            h: None,
        }
    }
    fn send(&mut self, seg: &tcp::Repr<'_>) {
        self.send_from(REMOTE_IP, seg);
    }
    /// `ack_number: 0` with ACK set (the template's) means "ISS + 1", the usual ACK.
    fn send_from(&mut self, src: Ipv4Addr, seg: &tcp::Repr<'_>) {
        let mut seg = *seg;
        if seg.ack_number == 0 && seg.flags.ack() && self.iss != 0 {
            seg.ack_number = self.iss1();
        }
        let seg = &seg;
        let ip = ipv4::Repr {
            src_addr: src,
            dst_addr: LOCAL_IP,
            protocol: ipv4::Protocol::Tcp,
            payload_len: seg.buffer_len(),
            hop_limit: 64,
        };
        self.ep.handle_segment(self.now, &ip, seg);
        self.ep.check_invariants().unwrap();
    }
    fn recv(&mut self) -> Option<Out> {
        let mut buf = [0u8; 2000];
        let n = self.ep.poll_transmit(self.now, &mut buf)?;
        let ipp = ipv4::Packet::new_checked(&buf[..n]).unwrap();
        let ipr = ipv4::Repr::parse(&ipp, Checksum::Verify).unwrap();
        let tp = tcp::Packet::new_checked(ipp.payload()).unwrap();
        let s = tcp::Repr::parse(&tp, ipr.src_addr, ipr.dst_addr, Checksum::Verify).unwrap();
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
    let mut t = T::new(config);
    t.ep.listen(SocketAddrV4::new(LOCAL_IP, LOCAL_PORT))
        .unwrap();
    t
}

fn syn_received_with(config: Config) -> T {
    let mut t = listening_with(config);
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1460), sack_permitted: true);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 1);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    assert_eq!(t.state(), Some(State::SynReceived));
    t
}
fn syn_received() -> T {
    syn_received_with(config())
}

fn established_with(config: Config) -> T {
    let mut t = syn_received_with(config);
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
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, LOCAL_PORT),
            SocketAddrV4::new(REMOTE_IP, REMOTE_PORT),
        )
        .unwrap();
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
    let mut t = established();
    t.ep.close(t.h());
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1, ack: REMOTE_SEQ + 1);
    assert_eq!(t.state(), Some(State::FinWait1));
    t
}
fn fin_wait_2() -> T {
    let mut t = fin_wait_1();
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
    let mut t = fin_wait_2();
    let a = t.iss1() + 1;
    send!(t, ack_number: a, flags: Flags::FIN | Flags::ACK);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2);
    assert_eq!(t.state(), Some(State::TimeWait));
    t
}

// ---- Tests for the LISTEN state ----

#[test]
fn listen_syn_gets_syn_ack_with_offered_options_only() {
    let mut t = listening_with(Config {
        window_scale: true,
        timestamps: true,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1400));
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 1, mss: Some(1460));
    // The peer offered no window scale, SACK or timestamps: we answer with none.
    assert_eq!(o.wscale, None);
    assert!(!o.sack_permitted);
    assert_eq!(o.ts, None);
}

#[test]
fn listen_syn_with_all_options() {
    let mut t = listening_with(Config {
        window_scale: true,
        timestamps: true,
        recv_buffer: 1 << 20,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, max_seg_size: Some(1460), window_scale: Some(7),
        sack_permitted: true, timestamp: Some(Timestamp { tsval: 777, tsecr: 0 }));
    let o = recv!(t, flags: Flags::SYN | Flags::ACK);
    assert_eq!(o.wscale, Some(5)); // 1 MiB >> 5 fits 16 bits
    assert!(o.sack_permitted);
    assert_eq!(o.ts.map(|t| t.tsecr), Some(777));
    // The SYN-ACK's own window is never scaled.
    assert_eq!(o.window, 65_535);
}

#[test]
fn listen_ignores_rst_and_resets_ack() {
    let mut t = listening_with(Config {
        syn_cookies: false,
        ..config()
    });
    send!(t, flags: Flags::RST);
    recv_nothing!(t);
    // "any acknowledgment is bad if it arrives on a connection still in the LISTEN state"
    send!(t, flags: Flags::ACK, ack_number: 5555);
    recv!(t, flags: Flags::RST, seq: 5555);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn no_listener_syn_gets_rst_ack() {
    let mut t = T::new(config());
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, payload: b"abc");
    // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
    recv!(t, flags: Flags::RST | Flags::ACK, seq: 0, ack: REMOTE_SEQ + 4);
    send!(t, flags: Flags::ACK, ack_number: 99);
    recv!(t, flags: Flags::RST, seq: 99);
    send!(t, flags: Flags::RST);
    recv_nothing!(t);
    assert_eq!(t.drops(DropReason::NoListener), 3);
}

#[test]
fn rsts_to_unknown_flows_are_rate_limited() {
    let mut t = T::new(Config {
        rst_limit: 3,
        ..config()
    });
    for i in 0..10 {
        send!(t, seq_number: i, flags: Flags::SYN);
    }
    assert_eq!(t.recv_all().len(), 3);
    assert_eq!(t.ep.stats().rsts_rate_limited, 7);
    t.advance(Duration::from_secs(1));
    send!(t, seq_number: 77, flags: Flags::SYN);
    assert_eq!(t.recv_all().len(), 1);
}

#[test]
fn listen_on_unspecified_address() {
    let mut t = T::new(config());
    t.ep.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LOCAL_PORT))
        .unwrap();
    assert_eq!(
        t.ep.listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LOCAL_PORT)),
        Err(crate::ListenError::AddrInUse)
    );
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    recv!(t, flags: Flags::SYN | Flags::ACK);
}

#[test]
fn unlisten_refuses_new_syns_and_keeps_established_connections() {
    let mut t = established();
    let local = SocketAddrV4::new(LOCAL_IP, LOCAL_PORT);
    assert!(t.ep.unlisten(local));
    assert!(!t.ep.unlisten(local), "already closed");
    // The established connection still carries data.
    send!(t, flags: Flags::ACK | Flags::PSH, payload: b"still here");
    assert_eq!(t.read_all(), b"still here");
    // A SYN from another port is answered as on a closed port.
    send!(t, src_port: REMOTE_PORT + 1, seq_number: 7, flags: Flags::SYN, ack_number: 0);
    recv!(t, flags: Flags::RST | Flags::ACK, seq: 0, ack: 8);
    assert_eq!(t.drops(DropReason::NoListener), 1);
    assert_eq!(t.ep.connection_count(), 1);
    // Listening again accepts again.
    t.ep.listen(local).unwrap();
    assert_eq!(t.ep.listen(local), Err(crate::ListenError::AddrInUse));
    send!(t, src_port: REMOTE_PORT + 2, seq_number: 7, flags: Flags::SYN, ack_number: 0);
    recv!(t, flags: Flags::SYN | Flags::ACK, ack: 8);
    assert_eq!(t.ep.connection_count(), 2);
}

#[test]
fn time_wait_hands_its_buffers_back_at_once() {
    let mut t = time_wait();
    assert_eq!(t.state(), Some(State::TimeWait));
    assert_eq!(
        t.ep.spare_buffers(),
        1,
        "the buffers are back before the 2 MSL are over"
    );
    assert_eq!(
        t.ep.connection_count(),
        1,
        "the TCB itself stays in TIME-WAIT"
    );
    // A retransmitted FIN is still acknowledged.
    let o = recv_all_after_fin_retransmit(&mut t);
    assert!(o.iter().any(|s| s.flags.contains(Flags::ACK)), "{o:?}");
}

fn recv_all_after_fin_retransmit(t: &mut T) -> Vec<Out> {
    let fin_seq = REMOTE_SEQ + 1;
    send!(t, seq_number: fin_seq, flags: Flags::FIN | Flags::ACK);
    t.recv_all()
}

// ---- Tests for the SYN-RECEIVED state ----

#[test]
fn syn_received_ack_establishes() {
    let mut t = syn_received();
    assert!(
        t.events().is_empty(),
        "a half-open connection is not announced"
    );
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.events(), vec![Event::Established]);
}

#[test]
fn syn_received_bad_ack_gets_rst() {
    let mut t = syn_received();
    let bad = t.iss1() + 100;
    send!(t, ack_number: bad);
    recv!(t, flags: Flags::RST, seq: bad);
    assert_eq!(t.state(), Some(State::SynReceived));
    assert_eq!(t.drops(DropReason::BadAck), 1);
}

#[test]
fn syn_received_rst_frees_quietly() {
    let mut t = syn_received();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    assert_eq!(t.ep.connection_count(), 0);
    assert!(t.events().is_empty());
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn syn_received_retransmitted_syn_repeats_syn_ack() {
    let mut t = syn_received();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    let iss = t.iss;
    recv!(t, flags: Flags::SYN | Flags::ACK, seq: iss, ack: REMOTE_SEQ + 1);
}

#[test]
fn syn_received_syn_ack_retransmitted_with_backoff_then_times_out() {
    let mut t = syn_received_with(Config {
        handshake_timeout: Duration::from_secs(10),
        ..config()
    });
    let start = t.now;
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(1));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(3));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(7));
    recv!(t, flags: Flags::SYN | Flags::ACK);
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(10));
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.stats().timeouts, 1);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn syn_received_close_sends_fin_after_establishment() {
    let mut t = syn_received();
    t.ep.close(t.h());
    recv_nothing!(t);
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    assert_eq!(t.state(), Some(State::FinWait1));
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}

// ---- Tests for the SYN-SENT state ----

#[test]
fn syn_sent_offers_options() {
    let mut t = T::new(Config {
        window_scale: true,
        timestamps: true,
        ..config()
    });
    let h =
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, LOCAL_PORT),
            SocketAddrV4::new(REMOTE_IP, REMOTE_PORT),
        )
        .unwrap();
    let o = recv!(t, flags: Flags::SYN);
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(1));
    assert!(o.sack_permitted);
    assert_eq!(o.ts.map(|t| t.tsecr), Some(0));
    assert_eq!(t.ep.state(h), Some(State::SynSent));
    assert_eq!(
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, LOCAL_PORT),
            SocketAddrV4::new(REMOTE_IP, REMOTE_PORT)
        ),
        Err(crate::ConnectError::AddrInUse)
    );
}

#[test]
fn syn_sent_syn_ack_establishes() {
    let mut t = syn_sent();
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, max_seg_size: Some(1000));
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.events(), vec![Event::Established]);
    recv!(t, flags: Flags::ACK, seq: iss1, ack: REMOTE_SEQ + 1);
    // The peer's MSS bounds our segments.
    t.ep.send(t.h(), &[7u8; 3000]).unwrap();
    let o = recv!(t);
    assert_eq!(o.payload.len(), 1000);
}

#[test]
fn syn_sent_bad_ack_gets_rst() {
    let mut t = syn_sent();
    let bad = t.iss; // acks nothing new: SEG.ACK =< ISS
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: bad);
    recv!(t, flags: Flags::RST, seq: bad);
    assert_eq!(t.state(), Some(State::SynSent));
}

#[test]
fn syn_sent_rst_with_acceptable_ack_resets() {
    let mut t = syn_sent();
    send!(t, seq_number: 0, flags: Flags::RST, ack_number: 0);
    assert_eq!(
        t.state(),
        Some(State::SynSent),
        "a RST without ACK is dropped"
    );
    let iss1 = t.iss1();
    send!(t, seq_number: 0, flags: Flags::RST | Flags::ACK, ack_number: iss1);
    assert_eq!(t.events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn syn_sent_simultaneous_open() {
    let mut t = syn_sent();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, ack_number: 0);
    assert_eq!(t.state(), Some(State::SynReceived));
    let iss = t.iss;
    recv!(t, flags: Flags::SYN | Flags::ACK, seq: iss, ack: REMOTE_SEQ + 1);
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ + 1, flags: Flags::ACK, ack_number: iss1);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn syn_sent_retransmits_and_times_out() {
    let mut t = syn_sent_with(Config {
        handshake_timeout: Duration::from_secs(5),
        ..config()
    });
    let iss = t.iss;
    t.fire();
    recv!(t, flags: Flags::SYN, seq: iss);
    assert_eq!(t.ep.stats().retransmits_rto, 1);
    t.fire();
    recv!(t, flags: Flags::SYN, seq: iss);
    t.fire();
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn syn_sent_close_deletes() {
    let mut t = syn_sent();
    t.ep.close(t.h());
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    recv_nothing!(t);
}

#[test]
fn syn_ack_window_is_not_scaled_later_ones_are() {
    let mut t = syn_sent_with(Config {
        window_scale: true,
        ..config()
    });
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, window_scale: Some(2), window_len: 1000, max_seg_size: Some(1460));
    recv!(t);
    // Window 1000 unscaled: only 1000 bytes may go.
    t.ep.send(t.h(), &[1u8; 5000]).unwrap();
    let sent: usize = t.recv_all().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 1000);
    // A later ACK's window is scaled by 4: 1000 << 2 = 4000 from the new SND.UNA.
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1 + 1000, window_len: 1000);
    let sent: usize = t.recv_all().iter().map(|o| o.payload.len()).sum();
    assert_eq!(sent, 4000);
}

#[test]
fn syn_ack_without_window_scale_disables_it_both_ways() {
    let mut t = syn_sent_with(Config {
        window_scale: true,
        recv_buffer: 1 << 20,
        ..config()
    });
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN | Flags::ACK, ack_number: iss1, window_len: 3000, max_seg_size: Some(1460));
    let o = recv!(t, flags: Flags::ACK);
    // We offered a shift of 5 but the peer did not: our window field is unscaled and capped.
    assert_eq!(o.window, 65_535);
    // And the peer's windows are taken as they are.
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1, window_len: 2920);
    t.ep.send(t.h(), &[0u8; 10_000]).unwrap();
    assert_eq!(
        t.recv_all().iter().map(|o| o.payload.len()).sum::<usize>(),
        2920
    );
    assert_eq!(t.ep.stats().negotiated_wscale, 0);
}

// ---- Tests for the ESTABLISHED state ----

#[test]
fn established_receive_delayed_ack() {
    let mut t = established();
    send!(t, payload: b"hello");
    assert_eq!(t.events(), vec![Event::Readable]);
    // One small segment: the ACK is delayed.
    recv_nothing!(t);
    assert_eq!(t.read_all(), b"hello");
    t.fire();
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 6);
}

#[test]
fn established_ack_every_second_full_segment() {
    let mut t = established();
    let seg = [5u8; 1460];
    send!(t, payload: &seg);
    recv_nothing!(t);
    send!(t, seq_number: REMOTE_SEQ + 1 + 1460, payload: &seg);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1 + 2920);
}

#[test]
fn established_out_of_order_acks_at_once_with_sack() {
    let mut t = established();
    send!(t, seq_number: REMOTE_SEQ + 101, payload: &[2u8; 100]);
    let o = recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(
        o.sack,
        vec![SackBlock {
            left: REMOTE_SEQ + 101,
            right: REMOTE_SEQ + 201
        }]
    );
    send!(t, seq_number: REMOTE_SEQ + 301, payload: &[4u8; 100]);
    let o = recv!(t, ack: REMOTE_SEQ + 1);
    // Most recent block first (RFC 2018 4).
    assert_eq!(
        o.sack[0],
        SackBlock {
            left: REMOTE_SEQ + 301,
            right: REMOTE_SEQ + 401
        }
    );
    assert_eq!(
        o.sack[1],
        SackBlock {
            left: REMOTE_SEQ + 101,
            right: REMOTE_SEQ + 201
        }
    );
    // Filling the first hole acks at once, up to the next hole.
    send!(t, seq_number: REMOTE_SEQ + 1, payload: &[1u8; 100]);
    let o = recv!(t, ack: REMOTE_SEQ + 201);
    assert_eq!(
        o.sack,
        vec![SackBlock {
            left: REMOTE_SEQ + 301,
            right: REMOTE_SEQ + 401
        }]
    );
    let mut expect = vec![1u8; 100];
    expect.extend([2u8; 100]);
    assert_eq!(t.read_all(), expect);
    assert!(t.ep.stats().sack_blocks_sent >= 4);
}

#[test]
fn reassembly_holds_a_bounded_number_of_holes() {
    let mut t = established();
    // 40 one-byte segments, each leaving a hole before it.
    for k in 0..40u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 2 * (k + 1), payload: b"x");
    }
    t.recv_all();
    assert_eq!(
        t.drops(DropReason::ReassemblyFull),
        40 - crate::ranges::MAX_RANGES as u64
    );
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.recv_buffered(), crate::ranges::MAX_RANGES);
    // Filling the holes in order still yields the held bytes.
    send!(t, seq_number: REMOTE_SEQ + 1, payload: b"y");
    for k in 0..crate::ranges::MAX_RANGES as u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 2 * k + 1, payload: b"y");
    }
    let got = t.read_all();
    assert_eq!(got.len(), 2 * crate::ranges::MAX_RANGES + 1);
}

#[test]
fn established_send_and_ack() {
    let mut t = established();
    assert_eq!(t.ep.send(t.h(), b"abcdef").unwrap(), 6);
    let iss1 = t.iss1();
    recv!(t, flags: Flags::ACK | Flags::PSH, seq: iss1, payload: b"abcdef".to_vec());
    send!(t, ack_number: iss1 + 6);
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.snd_una(), c.snd_nxt());
    assert_eq!(
        t.ep.poll_timeout().map(|_| ()),
        None,
        "no timer once everything is acked"
    );
}

#[test]
fn established_no_nagle_small_writes_go_at_once() {
    let mut t = established();
    t.ep.send(t.h(), b"a").unwrap();
    recv!(t, payload: b"a".to_vec());
    // Still unacknowledged; a relay must not hold the next small write back.
    t.ep.send(t.h(), b"b").unwrap();
    recv!(t, payload: b"b".to_vec());
}

#[test]
fn established_out_of_window_segment_is_acked_and_dropped() {
    let mut t = established();
    send!(t, seq_number: REMOTE_SEQ + 1_000_000, payload: b"x");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    // An old duplicate too.
    send!(t, seq_number: REMOTE_SEQ - 100, payload: b"old");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.drops(DropReason::InvalidSequence), 2);
    assert!(t.events().is_empty());
}

#[test]
fn ack_at_right_window_edge_and_old_retransmission_carry_acks() {
    let mut t = established_with(Config {
        recv_buffer: 4000,
        ..config()
    });
    let iss1 = t.iss1();
    t.ep.send(t.h(), b"0123456789").unwrap();
    recv!(t);
    // The peer filled our window (its data got lost); its pure ACK is numbered at our right
    // edge. RFC 9293's strict test rejects it; its ACK must still count (as in Linux).
    send!(t, seq_number: REMOTE_SEQ + 1 + 4000, ack_number: iss1 + 4);
    assert_eq!(t.ep.connection(t.h()).unwrap().snd_una().0, iss1 + 4);
    // A retransmission of data we already have, ending at RCV.NXT: ACK processed, and answered.
    send!(t, payload: b"abc");
    t.read_all();
    t.fire();
    t.recv_all();
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: iss1 + 10, payload: b"abc");
    assert_eq!(t.ep.connection(t.h()).unwrap().snd_una().0, iss1 + 10);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 4);
}

#[test]
fn established_rst_exact_resets() {
    let mut t = established();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    assert_eq!(t.events(), vec![Event::Reset, Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    recv_nothing!(t);
}

#[test]
fn established_rst_in_window_gets_challenge_ack() {
    let mut t = established();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 500);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.state(), Some(State::Established));
    assert_eq!(t.ep.stats().challenge_acks, 1);
    // Outside the window: dropped without an answer.
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 10_000_000);
    recv_nothing!(t);
    assert_eq!(t.drops(DropReason::InvalidSequence), 1);
}

#[test]
fn established_syn_gets_challenge_ack_rate_limited() {
    let mut t = established_with(Config {
        challenge_ack_limit: 2,
        ..config()
    });
    for _ in 0..5 {
        send!(t, flags: Flags::SYN, seq_number: REMOTE_SEQ + 1);
        let _ = t.recv_all();
    }
    assert_eq!(t.ep.stats().challenge_acks, 2);
    assert_eq!(t.drops(DropReason::SynInWindow), 5);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn established_ack_of_unsent_data_is_dropped() {
    let mut t = established();
    let a = t.iss1() + 1000;
    send!(t, ack_number: a, payload: b"data");
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 1);
    assert_eq!(t.drops(DropReason::BadAck), 1);
    assert_eq!(t.read_all(), b"", "the segment's text is not processed");
}

#[test]
fn established_ancient_ack_gets_challenge() {
    let mut t = established();
    let a = t.iss.wrapping_sub(200_000);
    send!(t, ack_number: a);
    recv!(t, flags: Flags::ACK);
    assert_eq!(t.ep.stats().challenge_acks, 1);
}

#[test]
fn established_no_ack_flag_is_dropped() {
    let mut t = established();
    send!(t, flags: Flags::PSH, payload: b"zz");
    assert_eq!(t.drops(DropReason::NoAck), 1);
    assert_eq!(t.read_all(), b"");
}

#[test]
fn paws_drops_old_timestamps() {
    let mut t = listening_with(Config {
        timestamps: true,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: Some(Timestamp { tsval: 1000, tsecr: 0 }));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    let iss1 = t.iss1();
    let ts = |v| Some(Timestamp { tsval: v, tsecr: 0 });
    send!(t, ack_number: iss1, timestamp: ts(1001));
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1, timestamp: ts(1002), payload: b"new");
    assert_eq!(t.read_all(), b"new");
    // A segment carrying an older timestamp is a duplicate from an earlier incarnation.
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, timestamp: ts(900), payload: b"old");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ts.unwrap().tsecr, 1002, "TS.Recent echoed");
    // Wrap-around: a timestamp just past 2^32 is newer.
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, timestamp: ts(1002u32.wrapping_add(0x7fff_0000)), payload: b"ok");
    assert_eq!(t.read_all(), b"ok");
}

/// ESTABLISHED with timestamps negotiated; the peer's last TSval is 1001.
fn established_ts() -> T {
    let mut t = listening_with(Config {
        timestamps: true,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: Some(Timestamp { tsval: 1000, tsecr: 0 }));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    send!(t, timestamp: Some(Timestamp { tsval: 1001, tsecr: 0 }));
    assert_eq!(t.state(), Some(State::Established));
    t
}

fn ts(v: u32) -> Option<Timestamp> {
    Some(Timestamp { tsval: v, tsecr: 0 })
}

/// The case seen through the impairment bridge: segment 1 is lost, segments 2 and 3 were sent
/// before the retransmission of 1, and 3 was held back on the path. The retransmission
/// (newer TSval) moves TS.Recent; 3 arrives after it with an older TSval. Literal RFC 7323 R1
/// would discard it; Linux accepts it if one tick older (TCP_PAWS_WINDOW); we accept it
/// because its TSval is newer than a PAWS anchor less than 2^29 bytes back (here the SYN's).
#[test]
fn paws_accepts_segment_reordered_around_a_retransmission() {
    let mut t = established_ts();
    // Segment 1 (REMOTE_SEQ+1, "aaa", TSval 1002) is lost; 2 arrives out of order.
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts(1009), payload: b"bbb");
    t.recv_all();
    // The retransmission of 1 fills the hole: TS.Recent becomes 1010.
    send!(t, seq_number: REMOTE_SEQ + 1, timestamp: ts(1010), payload: b"aaa");
    assert_eq!(t.read_all(), b"aaabbb");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ts.unwrap().tsecr, 1010);
    // 3, sent seven ticks before the retransmission, arrives late.
    send!(t, seq_number: REMOTE_SEQ + 7, timestamp: ts(1003), payload: b"ccc");
    assert_eq!(t.drops(DropReason::Paws), 0);
    assert_eq!(t.read_all(), b"ccc");
    t.advance(Duration::from_millis(500));
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 10);
    assert_eq!(
        o.ts.unwrap().tsecr,
        1010,
        "an older TSval does not move TS.Recent back"
    );
    // Older than the anchor (sent before the SYN: impossible but for an old duplicate) and
    // beyond TCP_PAWS_WINDOW: R1 applies.
    send!(t, seq_number: REMOTE_SEQ + 10, timestamp: ts(999), payload: b"ddd");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
}

/// Linux's TCP_PAWS_WINDOW on its own: TS.Recent equal to the anchor, a TSval one tick older
/// passes, two ticks older does not.
#[test]
fn paws_window_of_one_tick() {
    let mut t = listening_with(Config {
        timestamps: true,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN, timestamp: ts(1000));
    let o = recv!(t);
    t.iss = o.seq;
    t.h = t.ep.lookup(&tuple());
    send!(t, timestamp: ts(1000));
    assert_eq!(t.state(), Some(State::Established));
    send!(t, timestamp: ts(999), payload: b"one");
    assert_eq!(t.drops(DropReason::Paws), 0);
    assert_eq!(t.read_all(), b"one");
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts(998), payload: b"two");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
}

/// The anchors move along the stream: after 2^28 bytes a new point is recorded, and after
/// another 2^28 the first is forgotten, so `covers` never reaches back more than 2^29 bytes.
#[test]
fn paws_anchors_rotate_every_2_28_bytes() {
    use crate::connection::PawsAnchors;
    use crate::seq::SeqNumber;
    let now = Instant::from_millis(1_000);
    let mut a = PawsAnchors::new(100, SeqNumber(u32::MAX - 10), now);
    assert!(a.covers(100, now) && a.covers(5_000, now) && !a.covers(99, now));
    // Less than 2^28 bytes later: no new point.
    a.on_ts_recent(200, SeqNumber((1 << 28) - 20), now);
    assert!(a.covers(150, now));
    // 2^28 bytes (across the wrap of u32): a new point; the older is still the first.
    a.on_ts_recent(300, SeqNumber((1 << 28) - 10), now);
    assert!(a.covers(150, now));
    // Another 2^28: the first point is forgotten.
    a.on_ts_recent(400, SeqNumber((1 << 29) - 10), now);
    assert!(!a.covers(150, now), "older than the anchor 2^28 bytes back");
    assert!(a.covers(300, now));
    // An anchor too old in time for its TSval to be compared is not used.
    let later = now + Duration::from_secs(13 * 24 * 3600);
    assert!(!a.covers(300, later));
}

/// Linux's tcp_disordered_ack(): a pure duplicate ACK that updates nothing, reordered behind
/// a newer segment, is not a PAWS drop; an ancient one still is.
#[test]
fn paws_accepts_disordered_pure_ack_within_rto() {
    let mut t = established_ts();
    // The peer only acknowledges (a one-way transfer from us): its ACKs all carry
    // SEG.SEQ = RCV.NXT = SND.WL1, and the newest moved TS.Recent to 1050.
    send!(t, timestamp: ts(1050));
    // A pure duplicate ACK from 60 ticks earlier (less than the 1 s initial RTO; older than
    // the PAWS anchor, the SYN's 1000, so only tcp_disordered_ack's rule can accept it).
    send!(t, timestamp: ts(990));
    assert_eq!(t.drops(DropReason::Paws), 0);
    recv_nothing!(t);
    // The same ACK with a window update is not merely reordered: dropped.
    send!(t, timestamp: ts(990), window_len: 65_000);
    assert_eq!(t.drops(DropReason::Paws), 1);
    t.recv_all();
    // A pure ACK older than one RTO (in milliseconds) is an old duplicate: dropped.
    send!(t, timestamp: ts(1050u32.wrapping_sub(5_000)));
    assert_eq!(t.drops(DropReason::Paws), 2);
}

/// What PAWS exists for (RFC 7323 5.1): an old duplicate from 2^32 bytes of sequence space
/// ago, whose sequence number lands in the current window again, must still be rejected.
#[test]
fn paws_still_rejects_wrapped_old_duplicate() {
    let mut t = established_ts();
    let tsval = 1001u32;
    // Moving 2^32 bytes through the endpoint is too slow for a unit test; what R1 sees is the
    // same: a segment in the window now whose TSval is far older than TS.Recent (it was sent
    // one sequence wrap ago).
    send!(t, seq_number: REMOTE_SEQ + 1, timestamp: ts(tsval + 100), payload: b"now");
    assert_eq!(t.read_all(), b"now");
    t.recv_all();
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts((tsval + 100).wrapping_sub(1_000_000)), payload: b"old");
    assert_eq!(t.drops(DropReason::Paws), 1);
    assert_eq!(t.read_all(), b"");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 4, "ACK sent, RCV.NXT unchanged");
    // And a pure ACK from that old incarnation too (older than any RTO).
    send!(t, seq_number: REMOTE_SEQ + 4, timestamp: ts((tsval + 100).wrapping_sub(1_000_000)));
    assert_eq!(t.drops(DropReason::Paws), 2);
}

#[test]
fn rto_retransmits_with_backoff_and_gives_up() {
    let mut t = established_with(Config {
        max_retransmits: 3,
        ..config()
    });
    t.ep.send(t.h(), b"data").unwrap();
    let iss1 = t.iss1();
    recv!(t, seq: iss1);
    let start = t.now;
    t.fire();
    recv!(t, seq: iss1, payload: b"data".to_vec());
    let first = t.now - start;
    t.fire();
    recv!(t, seq: iss1);
    let second = t.now - start - first;
    assert_eq!(second, first * 2, "RTO doubles (RFC 6298 5.5)");
    t.fire();
    recv!(t, seq: iss1);
    t.fire();
    // Fourth expiry > max_retransmits: RST and TimedOut.
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.stats().retransmits_rto, 3);
}

#[test]
fn fast_retransmit_after_three_dup_acks() {
    let mut t = established_with(Config {
        sack: false,
        ..config()
    });
    t.ep.send(t.h(), &[9u8; 1460 * 5]).unwrap();
    let segs = t.recv_all();
    assert_eq!(segs.len(), 5);
    let iss1 = t.iss1();
    for _ in 0..2 {
        send!(t, ack_number: iss1);
        recv_nothing!(t);
    }
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
    assert_eq!(t.ep.stats().dup_acks, 3);
    // NewReno partial ACK: retransmit the next hole at once.
    send!(t, ack_number: iss1 + 1460);
    recv!(t, seq: iss1 + 1460);
    // Full ACK ends recovery.
    send!(t, ack_number: iss1 + 1460 * 5);
    let c = t.ep.connection(t.h()).unwrap();
    assert_eq!(c.snd_una(), c.snd_max());
}

#[test]
fn limited_transmit_on_first_two_dup_acks() {
    let mut t = established_with(Config {
        sack: false,
        ..config()
    });
    t.ep.send(t.h(), &[9u8; 1460 * 20]).unwrap();
    // The initial window: 10 segments.
    assert_eq!(t.recv_all().len(), 10);
    let iss1 = t.iss1();
    // RFC 3042: one new segment per each of the first two duplicate ACKs.
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1 + 1460 * 10);
    recv_nothing!(t);
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1 + 1460 * 11);
    recv_nothing!(t);
    // The third: fast retransmit of the first segment.
    send!(t, ack_number: iss1);
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
}

#[test]
fn sack_recovery_retransmits_only_holes() {
    let mut t = syn_received_with(config());
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    t.events();
    t.ep.send(t.h(), &[9u8; 1460 * 8]).unwrap();
    assert_eq!(t.recv_all().len(), 8);
    // Segments 0 and 2 lost; 1 and 3..8 arrive: SACK them.
    let s = |k: u32| iss1 + 1460 * k;
    let sack = |blocks: &[(u32, u32)]| {
        let mut b = [None; 4];
        for (i, &(l, r)) in blocks.iter().enumerate() {
            b[i] = Some(SackBlock { left: l, right: r });
        }
        b
    };
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(1), s(2))]));
    recv_nothing!(t);
    // Three segments SACKed above SND.UNA: more than (DupThresh - 1) * SMSS, so segment 0
    // IsLost (RFC 6675 4) and is retransmitted, before three duplicate ACKs.
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(3), s(5)), (s(1), s(2))]));
    recv!(t, seq: s(0));
    recv_nothing!(t);
    // Now segment 2 has four SACKed above it: lost too; pipe < cwnd lets it go.
    send!(t, ack_number: iss1, sack_blocks: sack(&[(s(3), s(7)), (s(1), s(2))]));
    recv!(t, seq: s(2));
    recv_nothing!(t);
    assert!(t.ep.stats().retransmits_sack >= 1);
    assert_eq!(t.ep.stats().sack_blocks_received, 5);
}

fn probing() -> Config {
    Config {
        loss_probes: true,
        ..config()
    }
}

fn sack1(left: u32, right: u32) -> [Option<SackBlock>; 4] {
    [Some(SackBlock { left, right }), None, None, None]
}

/// RFC 8985 (see `rack`): the retransmission of the only hole is lost and everything else is
/// SACKed; nothing sent after it can reveal the loss, so the probe timer does, long before
/// the RTO.
#[test]
fn loss_probe_repairs_a_lost_retransmission_before_the_rto() {
    let mut t = established_with(probing());
    let iss1 = t.iss1();
    let s = |k: u32| iss1 + 1460 * k;
    t.ep.send(t.h(), &[9u8; 1460 * 5]).unwrap();
    assert_eq!(t.recv_all().len(), 5);
    // Segment 0 lost, 1..5 SACKed: it IsLost (RFC 6675 4), retransmitted at once.
    send!(t, ack_number: iss1, sack_blocks: sack1(s(1), s(5)));
    recv!(t, seq: s(0));
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_fast, 1);
    // That retransmission is lost too. The next timer is the loss probe, before the RTO.
    let rto_at = t.now + t.ep.connection(t.h()).unwrap().rto();
    t.fire();
    assert!(t.now < rto_at);
    recv!(t, seq: s(0), payload: vec![9u8; 1460]);
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_rack, 1);
    assert_eq!(t.ep.stats().retransmits_rto, 0);
    // It arrives: all acknowledged, no probe or RTO left.
    send!(t, ack_number: s(5));
    assert_eq!(t.ep.poll_timeout(), None);
}

/// RFC 8985 7.3: a tail loss without any SACK information: the probe is the last segment;
/// its ACK SACKs it, and the next expiry retransmits the hole that this revealed.
#[test]
fn tail_loss_probe_resends_the_last_segment() {
    let mut t = established_with(probing());
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[9u8; 1460 * 2]).unwrap();
    assert_eq!(t.recv_all().len(), 2);
    t.fire();
    recv!(t, seq: iss1 + 1460);
    recv_nothing!(t);
    assert_eq!(t.ep.stats().retransmits_tlp, 1);
    send!(t, ack_number: iss1, sack_blocks: sack1(iss1 + 1460, iss1 + 2920));
    recv_nothing!(t);
    t.fire();
    recv!(t, seq: iss1);
    assert_eq!(t.ep.stats().retransmits_rack, 1);
    assert_eq!(t.ep.stats().retransmits_rto, 0);
}

/// Without SACK (or with `loss_probes` off) there is no probe: the next timer is the RTO.
#[test]
fn no_loss_probe_without_sack() {
    let mut t = established_with(Config {
        sack: false,
        ..probing()
    });
    t.ep.send(t.h(), &[9u8; 1460 * 2]).unwrap();
    assert_eq!(t.recv_all().len(), 2);
    t.fire();
    recv!(t, seq: t.iss1());
    assert_eq!(t.ep.stats().retransmits_rto, 1);
    assert_eq!(t.ep.stats().retransmits_tlp, 0);
}

#[test]
fn zero_window_probe_and_reopen() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, window_len: 0);
    t.ep.send(t.h(), b"waiting").unwrap();
    recv_nothing!(t);
    t.fire();
    // Probe: <SEQ=SND.UNA-1>, no data.
    recv!(t, flags: Flags::ACK, seq: iss1.wrapping_sub(1), payload: vec![]);
    assert_eq!(t.ep.stats().zero_window_probes, 1);
    let first = t.ep.poll_timeout().unwrap() - t.now;
    t.fire();
    recv!(t, seq: iss1.wrapping_sub(1));
    let second = t.ep.poll_timeout().unwrap() - t.now;
    assert_eq!(second, first * 2, "probe interval backs off");
    send!(t, ack_number: iss1, window_len: 1000);
    recv!(t, seq: iss1, payload: b"waiting".to_vec());
}

#[test]
fn zero_window_with_outstanding_data_never_times_out_while_acked() {
    let mut t = established_with(Config {
        max_retransmits: 3,
        ..config()
    });
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[1u8; 3000]).unwrap();
    assert_eq!(t.recv_all().len(), 3);
    // The peer takes the first segment and closes its window.
    send!(t, ack_number: iss1 + 1000, window_len: 0);
    for k in 0..10 {
        t.fire();
        let o = recv!(t);
        assert!(
            o.payload.is_empty(),
            "round {k}: {} bytes at {}, iss1 {iss1}",
            o.payload.len(),
            o.seq
        );
        assert_eq!(
            o.seq,
            (iss1 + 1000).wrapping_sub(1),
            "a probe, not a retransmission into the zero window"
        );
        send!(t, ack_number: iss1 + 1000, window_len: 0);
    }
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1 + 1000, window_len: 8000);
    let segs = t.recv_all();
    assert_eq!(segs.iter().map(|o| o.payload.len()).sum::<usize>(), 2000);
}

#[test]
fn sender_sws_avoidance_waits_for_a_useful_window() {
    let mut t = established();
    let iss1 = t.iss1();
    t.ep.send(t.h(), &[1u8; 1460]).unwrap();
    recv!(t);
    t.ep.send(t.h(), &[2u8; 5000]).unwrap();
    // The window's right edge moves by only 100 bytes with data still outstanding: wait.
    send!(t, ack_number: iss1, window_len: 1560);
    recv_nothing!(t);
    // A full segment's worth opens: send it.
    send!(t, ack_number: iss1 + 1460, window_len: 1460);
    recv!(t, seq: iss1 + 1460);
}

#[test]
fn big_buffer_without_window_scaling_is_quiet() {
    // 1 MiB of buffer but the peer offered no window scale: the field caps at 65535, and no
    // window update may look due forever (an ACK storm).
    let mut t = established_with(Config {
        recv_buffer: 1 << 20,
        window_scale: true,
        ..config()
    });
    send!(t, payload: &[1u8; 1000]);
    t.read_all();
    recv_nothing!(t);
    t.fire();
    let o = recv!(t, flags: Flags::ACK);
    assert_eq!(o.window, 65_535);
    recv_nothing!(t);
}

#[test]
fn readable_is_edge_triggered() {
    let mut t = established();
    send!(t, payload: b"one");
    send!(t, seq_number: REMOTE_SEQ + 4, payload: b"two");
    assert_eq!(t.events(), vec![Event::Readable]);
    assert_eq!(t.read_all(), b"onetwo");
    send!(t, seq_number: REMOTE_SEQ + 7, payload: b"three");
    assert_eq!(t.events(), vec![Event::Readable]);
}

#[test]
fn receive_window_fills_then_update_after_read() {
    let mut t = established_with(Config {
        recv_buffer: 4000,
        ..config()
    });
    for k in 0..4u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 1000 * k, payload: &[1u8; 1000]);
    }
    let last = t.recv_all().pop().unwrap();
    assert_eq!(last.ack, REMOTE_SEQ + 4001);
    assert_eq!(last.window, 0);
    // More data beyond the window is not accepted.
    send!(t, seq_number: REMOTE_SEQ + 4001, payload: b"x");
    recv!(t, window: 0, ack: REMOTE_SEQ + 4001);
    assert_eq!(t.read_all().len(), 4000);
    recv!(t, flags: Flags::ACK, window: 4000);
}

#[test]
fn receiver_sws_avoidance_small_read_no_update() {
    let mut t = established_with(Config {
        recv_buffer: 8000,
        ..config()
    });
    for k in 0..8u32 {
        send!(t, seq_number: REMOTE_SEQ + 1 + 1000 * k, payload: &[1u8; 1000]);
    }
    t.recv_all();
    let mut b = [0u8; 100];
    t.ep.recv(t.h(), &mut b).unwrap();
    recv_nothing!(t);
    let mut b = [0u8; 4000];
    t.ep.recv(t.h(), &mut b).unwrap();
    recv!(t, window: 4100);
}

#[test]
fn established_fin_to_close_wait_and_finished() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, flags: Flags::FIN | Flags::ACK, payload: b"bye");
    assert_eq!(t.state(), Some(State::CloseWait));
    assert_eq!(t.events(), vec![Event::Readable, Event::PeerClosed]);
    recv!(t, ack: REMOTE_SEQ + 5);
    assert_eq!(t.read_all(), b"bye");
    let mut b = [0u8; 8];
    assert_eq!(t.ep.recv(t.h(), &mut b), Err(crate::StreamError::Finished));
}

#[test]
fn out_of_order_fin_waits_for_data() {
    let mut t = established();
    let iss1 = t.iss1();
    send!(t, seq_number: REMOTE_SEQ + 4, ack_number: iss1, flags: Flags::FIN | Flags::ACK, payload: b"def");
    assert_eq!(t.state(), Some(State::Established));
    send!(t, ack_number: iss1, payload: b"abc");
    assert_eq!(t.state(), Some(State::CloseWait));
    assert_eq!(t.read_all(), b"abcdef");
    let o = t.recv_all().pop().unwrap();
    assert_eq!(o.ack, REMOTE_SEQ + 8);
}

#[test]
fn established_close_sends_fin_after_data() {
    let mut t = established();
    t.ep.send(t.h(), b"last words").unwrap();
    t.ep.close(t.h());
    assert_eq!(t.state(), Some(State::FinWait1));
    let iss1 = t.iss1();
    recv!(t, seq: iss1, flags: Flags::ACK | Flags::PSH | Flags::FIN, payload: b"last words".to_vec());
    assert_eq!(t.ep.send(t.h(), b"more"), Err(crate::StreamError::Closed));
}

#[test]
fn abort_sends_rst() {
    let mut t = established();
    t.ep.abort(t.h());
    let iss1 = t.iss1();
    recv!(t, flags: Flags::RST | Flags::ACK, seq: iss1);
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(
        t.ep.send(t.h(), b"x"),
        Err(crate::StreamError::InvalidHandle)
    );
}

#[test]
fn keepalive_probes_then_times_out() {
    let ka = Keepalive {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(2),
        probes: 2,
    };
    let mut t = established_with(Config {
        keepalive: Some(ka),
        ..config()
    });
    let start = t.now;
    t.fire();
    assert_eq!(t.now - start, Duration::from_secs(10));
    let iss1 = t.iss1();
    recv!(t, flags: Flags::ACK, seq: iss1.wrapping_sub(1));
    t.fire();
    recv!(t, seq: iss1.wrapping_sub(1));
    t.fire();
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert_eq!(t.events(), vec![Event::TimedOut, Event::Closed]);
    assert_eq!(t.ep.stats().keepalives_sent, 2);
}

#[test]
fn keepalive_answer_resets_probes() {
    let ka = Keepalive {
        idle: Duration::from_secs(10),
        interval: Duration::from_secs(2),
        probes: 1,
    };
    let mut t = established_with(Config {
        keepalive: Some(ka),
        ..config()
    });
    t.fire();
    recv!(t);
    let iss1 = t.iss1();
    send!(t, ack_number: iss1);
    t.fire();
    recv!(t, flags: Flags::ACK);
    assert_eq!(t.state(), Some(State::Established));
}

#[test]
fn idle_timeout_resets() {
    let mut t = established_with(Config {
        idle_timeout: Some(Duration::from_secs(30)),
        ..config()
    });
    t.advance(Duration::from_secs(20));
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, payload: b"x");
    t.advance(Duration::from_secs(20));
    assert_eq!(t.state(), Some(State::Established));
    t.fire();
    t.recv_all();
    assert!(t.events().contains(&Event::TimedOut));
    assert_eq!(t.ep.connection_count(), 0);
}

// ---- Tests for the FIN-WAIT-1 state ----

#[test]
fn fin_wait_1_ack_to_fin_wait_2() {
    let mut t = fin_wait_1();
    let a = t.iss1() + 1;
    send!(t, ack_number: a);
    assert_eq!(t.state(), Some(State::FinWait2));
}

#[test]
fn fin_wait_1_fin_ack_three_step_close() {
    let mut t = fin_wait_1();
    let a = t.iss1() + 1;
    // The peer merges its FIN with the ACK of ours.
    send!(t, ack_number: a, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::TimeWait));
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2, seq: a);
}

#[test]
fn fin_wait_1_fin_to_closing_then_time_wait() {
    let mut t = fin_wait_1();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::Closing));
    recv!(t, ack: REMOTE_SEQ + 2);
    send!(t, seq_number: REMOTE_SEQ + 2, ack_number: iss1 + 1);
    assert_eq!(t.state(), Some(State::TimeWait));
}

#[test]
fn fin_wait_1_fin_retransmitted() {
    let mut t = fin_wait_1();
    t.fire();
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}

#[test]
fn fin_wait_1_still_receives() {
    let mut t = fin_wait_1();
    let iss1 = t.iss1();
    send!(t, ack_number: iss1, payload: b"late");
    assert_eq!(t.read_all(), b"late");
}

// ---- Tests for the FIN-WAIT-2 state ----

#[test]
fn fin_wait_2_half_close_receives_then_fin() {
    let mut t = fin_wait_2();
    let a = t.iss1() + 1;
    send!(t, ack_number: a, payload: b"half-closed data");
    assert_eq!(t.read_all(), b"half-closed data");
    send!(t, seq_number: REMOTE_SEQ + 17, ack_number: a, flags: Flags::FIN | Flags::ACK);
    assert_eq!(t.state(), Some(State::TimeWait));
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 18);
}

#[test]
fn fin_wait_2_silent_peer_times_out() {
    let mut t = established_with(Config {
        fin_wait_2_timeout: Some(Duration::from_secs(60)),
        ..config()
    });
    t.ep.close(t.h());
    t.recv_all();
    let a = t.iss1() + 1;
    send!(t, ack_number: a);
    assert_eq!(t.state(), Some(State::FinWait2));
    let a = t.iss1() + 1;
    t.advance(Duration::from_secs(50));
    // Data keeps a half-closed connection alive.
    send!(t, ack_number: a, payload: b"still here");
    t.read_all();
    t.advance(Duration::from_secs(50));
    assert_eq!(t.state(), Some(State::FinWait2));
    t.recv_all();
    t.fire();
    recv!(t, flags: Flags::RST | Flags::ACK);
    assert!(t.events().contains(&Event::TimedOut));
    assert_eq!(t.ep.connection_count(), 0);
}

// ---- Tests for the CLOSE-WAIT and LAST-ACK states ----

#[test]
fn close_wait_can_still_send() {
    let mut t = close_wait();
    t.ep.send(t.h(), b"reply").unwrap();
    recv!(t, payload: b"reply".to_vec());
}

#[test]
fn last_ack_ack_closes() {
    let mut t = last_ack();
    let a = t.iss1() + 1;
    t.events();
    send!(t, seq_number: REMOTE_SEQ + 2, ack_number: a);
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn last_ack_fin_retransmitted() {
    let mut t = last_ack();
    t.fire();
    let iss1 = t.iss1();
    recv!(t, flags: Flags::FIN | Flags::ACK, seq: iss1);
}

// ---- Tests for the CLOSING and TIME-WAIT states ----

#[test]
fn time_wait_acks_retransmitted_fin_and_restarts_timer() {
    let mut t = time_wait();
    let deadline = t.ep.poll_timeout().unwrap();
    assert_eq!(deadline - t.now, Duration::from_secs(10));
    t.advance(Duration::from_secs(5));
    let a = t.iss1() + 1;
    send!(t, seq_number: REMOTE_SEQ + 1, ack_number: a, flags: Flags::FIN | Flags::ACK);
    recv!(t, flags: Flags::ACK, ack: REMOTE_SEQ + 2);
    assert_eq!(
        t.ep.poll_timeout().unwrap() - t.now,
        Duration::from_secs(10)
    );
}

#[test]
fn time_wait_expires() {
    let mut t = time_wait();
    t.events();
    t.fire();
    assert_eq!(t.events(), vec![Event::Closed]);
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn time_wait_new_syn_reopens() {
    let mut t = time_wait();
    send!(t, seq_number: REMOTE_SEQ + 100_000, flags: Flags::SYN);
    recv!(t, flags: Flags::SYN | Flags::ACK, ack: REMOTE_SEQ + 100_001);
    let h = t.ep.lookup(&tuple()).unwrap();
    assert_eq!(t.ep.state(h), Some(State::SynReceived));
}

#[test]
fn time_wait_rst_closes() {
    let mut t = time_wait();
    t.events();
    send!(t, seq_number: REMOTE_SEQ + 2, flags: Flags::RST);
    assert_eq!(t.events(), vec![Event::Closed]);
}

// ---- SYN queue and SYN cookies ----

fn syn_from(t: &mut T, port: u16, seq: u32, ws: Option<u8>, sack: bool) {
    t.send(&tcp::Repr {
        src_port: port,
        seq_number: seq,
        flags: Flags::SYN,
        max_seg_size: Some(1460),
        window_scale: ws,
        sack_permitted: sack,
        ..TEMPL
    });
}

#[test]
fn syn_cookies_when_queue_full() {
    let mut t = listening_with(Config {
        syn_queue_len: 1,
        window_scale: true,
        ..config()
    });
    syn_from(&mut t, 1000, 500, Some(7), true);
    recv!(t, flags: Flags::SYN | Flags::ACK);
    assert_eq!(t.ep.connection_count(), 1);
    // Queue full: a cookie, no state.
    syn_from(&mut t, 1001, 700, Some(7), true);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK, ack: 701);
    assert_eq!(o.wscale, Some(1)); // 64 KiB needs a shift of 1
    assert!(o.sack_permitted);
    assert_eq!(t.ep.connection_count(), 1);
    assert_eq!(t.ep.stats().syn_cookies_sent, 1);
    // The final ACK recreates the connection with what the cookie carried.
    t.send(&tcp::Repr {
        src_port: 1001,
        seq_number: 701,
        ack_number: o.seq.wrapping_add(1),
        window_len: 100,
        payload: b"GET",
        ..TEMPL
    });
    assert_eq!(t.ep.stats().syn_cookies_validated, 1);
    let tup = FourTuple {
        local: SocketAddrV4::new(LOCAL_IP, LOCAL_PORT),
        remote: SocketAddrV4::new(REMOTE_IP, 1001),
    };
    let h = t.ep.lookup(&tup).unwrap();
    assert_eq!(t.ep.state(h), Some(State::Established));
    let evs: Vec<_> = std::iter::from_fn(|| t.ep.poll_event()).collect();
    assert!(evs.contains(&(h, Event::Established)));
    let mut b = [0u8; 8];
    assert_eq!(t.ep.recv(h, &mut b), Ok(3));
    // The peer's window scale (7) from the cookie applies: 100 << 7 = 12800 bytes may be sent,
    // as 8 full segments of the cookie's MSS (1460); the 1120-byte tail waits (sender SWS
    // avoidance, RFC 9293 3.8.6.2.1).
    t.ep.send(h, &vec![0u8; 20_000]).unwrap();
    let segs: Vec<usize> = t
        .recv_all()
        .iter()
        .filter(|o| o.dst_port == 1001)
        .map(|o| o.payload.len())
        .collect();
    assert_eq!(segs, vec![1460; 8]);
}

#[test]
fn syn_cookie_forged_ack_is_reset() {
    let mut t = listening_with(Config {
        syn_queue_len: 0,
        ..config()
    });
    syn_from(&mut t, 1001, 700, None, false);
    let o = recv!(t, flags: Flags::SYN | Flags::ACK);
    t.send(&tcp::Repr {
        src_port: 1001,
        seq_number: 701,
        ack_number: o.seq.wrapping_add(2),
        ..TEMPL
    });
    recv!(t, flags: Flags::RST);
    assert_eq!(t.drops(DropReason::BadCookie), 1);
    assert_eq!(t.ep.connection_count(), 0);
}

#[test]
fn syn_flood_does_not_grow_memory() {
    let mut t = listening_with(Config {
        syn_queue_len: 16,
        ..config()
    });
    for i in 0..5000u32 {
        let src = Ipv4Addr::from(0xC633_6400u32 | (i & 0xff));
        t.send_from(
            src,
            &tcp::Repr {
                src_port: 1024 + (i >> 8) as u16,
                seq_number: i,
                flags: Flags::SYN,
                ..TEMPL
            },
        );
        while t.ep.poll_transmit(t.now, &mut [0u8; 1600]).is_some() {}
    }
    assert_eq!(t.ep.connection_count(), 16);
    assert_eq!(t.ep.stats().syn_cookies_sent, 5000 - 16);
    let mut t2 = listening_with(Config {
        syn_queue_len: 16,
        syn_cookies: false,
        ..config()
    });
    for i in 0..100u32 {
        t2.send(&tcp::Repr {
            src_port: 1024 + i as u16,
            seq_number: i,
            flags: Flags::SYN,
            ..TEMPL
        });
    }
    assert_eq!(t2.ep.connection_count(), 16);
    assert_eq!(t2.drops(DropReason::SynQueueFull), 84);
}

#[test]
fn max_connections_bounds_the_table() {
    let mut t = listening_with(Config {
        max_connections: 3,
        ..config()
    });
    for i in 0..10u16 {
        syn_from(&mut t, 3000 + i, 1, None, false);
    }
    assert_eq!(t.ep.connection_count(), 3);
    assert_eq!(t.drops(DropReason::SynQueueFull), 7);
    assert_eq!(
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, 5000),
            SocketAddrV4::new(REMOTE_IP, 80)
        ),
        Err(crate::ConnectError::TooManyConnections)
    );
}

#[test]
fn syn_queue_frees_on_establishment() {
    let mut t = listening_with(Config {
        syn_queue_len: 1,
        syn_cookies: false,
        ..config()
    });
    send!(t, seq_number: REMOTE_SEQ, flags: Flags::SYN);
    let o = recv!(t);
    send!(t, ack_number: o.seq.wrapping_add(1));
    // Established: the queue slot is free again.
    syn_from(&mut t, 2000, 1, None, false);
    recv!(t, flags: Flags::SYN | Flags::ACK, dst_port: 2000);
    assert_eq!(t.ep.connection_count(), 2);
}

// ---- Timers with many connections ----

#[test]
fn poll_timeout_is_the_earliest_of_thousands() {
    let mut t = T::new(config());
    let start = t.now;
    for i in 0..3000u16 {
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, 10_000 + i),
            SocketAddrV4::new(REMOTE_IP, 80),
        )
        .unwrap();
        if i % 100 == 99 {
            assert_eq!(t.recv_all().len(), 100);
            t.now += Duration::from_millis(1);
        }
    }
    t.ep.check_invariants().unwrap();
    // The first batch of SYNs went out at `start`: its RTO (1 s) is the earliest timer.
    assert_eq!(t.ep.poll_timeout(), Some(start + Duration::from_secs(1)));
    t.fire();
    assert_eq!(
        t.recv_all().len(),
        100,
        "exactly the SYNs due were retransmitted"
    );
    assert_eq!(
        t.ep.poll_timeout(),
        Some(start + Duration::from_millis(1001))
    );
    // Closing them all leaves nothing behind.
    for i in 0..3000u16 {
        let tup = FourTuple {
            local: SocketAddrV4::new(LOCAL_IP, 10_000 + i),
            remote: SocketAddrV4::new(REMOTE_IP, 80),
        };
        let h = t.ep.lookup(&tup).unwrap();
        t.ep.close(h);
    }
    assert_eq!(t.ep.connection_count(), 0);
    assert_eq!(t.ep.poll_timeout(), None);
}

#[test]
fn stale_handles_are_rejected() {
    let mut t = established();
    let old = t.h();
    send!(t, flags: Flags::RST, seq_number: REMOTE_SEQ + 1);
    // A new connection may reuse the slot; the old handle must not reach it.
    let h =
        t.ep.connect(
            t.now,
            SocketAddrV4::new(LOCAL_IP, 5555),
            SocketAddrV4::new(REMOTE_IP, 80),
        )
        .unwrap();
    assert_ne!(h, old);
    assert_eq!(t.ep.state(old), None);
    assert_eq!(t.ep.send(old, b"x"), Err(crate::StreamError::InvalidHandle));
}

#[test]
fn connection_size_is_modest() {
    // A TCB lives in a Box; keep it small enough that moving it is cheap.
    let size = core::mem::size_of::<crate::connection::Connection>();
    assert!(size < 2048, "Connection is {size} bytes");
    println!("Connection: {size} bytes");
}
