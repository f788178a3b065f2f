//! `Dispatch` fed frames built by `sluice-wire`, as the loop feeds it, without a socket. This
//! file is the shared harness: a client's frames, a dispatcher with an echo listener on :7 and a
//! refusing one on :443, what it transmits. The tests are grouped by concern as the code is:
//! `frames` (refusals, drops, echo, limits), `sessions` (relays to kernel backends on loopback),
//! `control` (reload, drain) and `queues` (several workers sharing one flow index: hand-offs).

mod control;
mod frames;
mod queues;
mod sessions;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sluice_tcp::{Endpoint, FourTuple, Instant, State as TcpState};
use sluice_wire::ethernet::{self, Address, EtherType};
use sluice_wire::ipv4::{self, Protocol};
use sluice_wire::tcp::{self, Flags};
use sluice_wire::{Checksum, emit_frame, parse_frame};

use super::{Dispatch, Source, Verdict, backend_events};
use crate::config::ListenerMode;
use crate::datapath::Services;
use crate::datapath::xdp::flows::FlowIndex;
use crate::datapath::xdp::nexthop::{Hop, NudState, Route, Table};
use crate::session::backend::ListenerBackends;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PROXY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const CLIENT_MAC: Address = Address([2, 0, 0, 0, 0, 1]);
const PROXY_MAC: Address = Address([2, 0, 0, 0, 0, 2]);
const T0: Instant = Instant::from_millis(1);

fn dispatch_with(worker: usize, flows: Arc<FlowIndex>, extra: &[(u16, ListenerMode)]) -> Dispatch {
    let mut listeners = HashMap::new();
    listeners.insert(SocketAddr::from((PROXY, 443)), ListenerMode::Refuse);
    listeners.insert(SocketAddr::from((PROXY, 7)), ListenerMode::Echo);
    for (port, mode) in extra {
        listeners.insert(SocketAddr::from((PROXY, *port)), *mode);
    }
    let tcp = Endpoint::new(sluice_tcp::Config::default(), Instant::ZERO);
    let services = Services { listeners, ..Default::default() };
    Dispatch::new(worker, flows, services, Arc::default(), true, tcp, link()).unwrap()
}

/// The proxy's MAC, and the kernel's tables as the reader would fill them: the client's subnet
/// on the link, the client's MAC address resolved.
fn link() -> super::Link {
    let mut t = Table::new(1, Default::default());
    t.add_route(Route {
        destination: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)),
        prefix_len: 24,
        metric: 0,
        hop: Hop::OnLink,
    });
    t.set_neighbour(IpAddr::V4(CLIENT), NudState::Reachable, Some(CLIENT_MAC));
    super::Link { mac: PROXY_MAC, next_hops: t }
}

/// Worker 0 of 1.
fn dispatch() -> Dispatch {
    dispatch_with(0, Arc::default(), &[])
}

struct Seg<'a> {
    src_port: u16,
    dst_port: u16,
    flags: Flags,
    seq: u32,
    ack: u32,
    payload: &'a [u8],
}

fn frame(s: Seg<'_>) -> Vec<u8> {
    frame_from(CLIENT, s)
}

/// [`frame`] from another source address.
fn frame_from(src_addr: Ipv4Addr, s: Seg<'_>) -> Vec<u8> {
    let eth = ethernet::Repr { src_addr: CLIENT_MAC, dst_addr: PROXY_MAC, ethertype: EtherType::Ipv4 };
    let tcp = tcp::Repr {
        src_port: s.src_port,
        dst_port: s.dst_port,
        seq_number: s.seq,
        ack_number: s.ack,
        flags: s.flags,
        window_len: 64240,
        max_seg_size: s.flags.syn().then_some(1460),
        sack_permitted: s.flags.syn(),
        payload: s.payload,
        ..Default::default()
    };
    let ip = ipv4::Repr {
        src_addr,
        dst_addr: PROXY,
        protocol: Protocol::Tcp,
        payload_len: tcp.header_len() + s.payload.len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 1514];
    let len = emit_frame(&mut buf, &eth, &ip.into(), &tcp).unwrap();
    buf.truncate(len);
    buf
}

fn syn(dst_port: u16) -> Vec<u8> {
    frame(Seg { src_port: 40000, dst_port, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] })
}

/// The client's first data after the handshake that [`syn`] began (the server's ISS `iss`).
fn first_data(dst_port: u16, iss: u32, payload: &[u8]) -> Vec<u8> {
    frame(Seg {
        src_port: 40000,
        dst_port,
        flags: Flags::ACK | Flags::PSH,
        seq: 1001,
        ack: iss.wrapping_add(1),
        payload,
    })
}

/// Hands `f` to the dispatcher in a frame-sized buffer, as the RX ring does.
fn on(d: &mut Dispatch, f: &[u8]) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    buf[..f.len()].copy_from_slice(f);
    let v = d.on_frame(T0, &mut buf, f.len(), Source::Rx);
    (v, buf)
}

fn reply(d: &mut Dispatch, f: &[u8]) -> Option<Vec<u8>> {
    let (v, out) = on(d, f);
    match v {
        Verdict::Reply(n) => Some(out[..n].to_vec()),
        _ => None,
    }
}

/// Everything the TCP stack wants to send now, as frames.
fn transmit(d: &mut Dispatch, now: Instant) -> Vec<Vec<u8>> {
    d.process(now);
    let mut frames = Vec::new();
    let mut out = vec![0u8; 2048];
    while let Some(n) = d.poll_transmit(now, &mut out) {
        frames.push(out[..n].to_vec());
        assert!(frames.len() < 100, "the stack keeps sending: an ACK storm");
    }
    frames
}

/// Payload bytes of the frames, in order.
fn payload(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.iter().flat_map(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.payload.to_vec()).collect()
}

/// Completes a handshake from `src_port` to `dst_port`; returns sluice's ISS.
fn establish(d: &mut Dispatch, src_port: u16, dst_port: u16, now: Instant) -> u32 {
    let syn = frame(Seg { src_port, dst_port, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] });
    let _ = on(d, &syn);
    let out = transmit(d, now);
    let synack = parse_frame(&out[0], Checksum::Verify).unwrap();
    assert_eq!(synack.tcp.flags, Flags::SYN | Flags::ACK);
    let iss = synack.tcp.seq_number;
    let ack = frame(Seg { src_port, dst_port, flags: Flags::ACK, seq: 1001, ack: iss.wrapping_add(1), payload: &[] });
    let _ = on(d, &ack);
    d.process(now);
    iss
}

fn services(d: &Dispatch, listeners: &[(u16, ListenerMode)]) -> Services {
    Services {
        listeners: listeners.iter().map(|(p, m)| (SocketAddr::from((PROXY, *p)), *m)).collect(),
        tls: HashMap::new(),
        relay: d.relay_settings.clone(),
        ..Default::default()
    }
}

fn is_rst(frames: &[Vec<u8>]) -> bool {
    frames.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst())
}
