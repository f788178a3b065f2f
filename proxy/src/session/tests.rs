//! The session layer in memory: a [`MemoryClient`], backends on a [`MemoryLink`], no kernel and
//! no clock. Each test is one relay behaviour an operator relies on.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use sluice_tcp::Instant;

use super::backend::{Balance, ListenerBackends, Pool};
use super::memory::{Answer, MemoryBackend, MemoryClient, MemoryLink};
use super::relay::RelayEnd;
use super::{IdleSweep, Session, proxy_protocol};
use crate::observe::counters::QueueCounters;
use crate::observe::latency::Latencies;

const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 40000));
const LISTENER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 443));
const A: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 8080));
const B: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 11), 8080));
const BUFFER: usize = 16 * 1024;

struct Rig {
    session: Session<MemoryBackend>,
    client: MemoryClient,
    link: MemoryLink,
    counters: QueueCounters,
    latencies: Latencies,
    ended: bool,
}

impl Rig {
    fn new(backends: &[SocketAddr], proxy_protocol: bool) -> Self {
        let pool =
            Arc::new(Pool::new(backends, Balance::RoundRobin, Duration::from_secs(60), std::time::Instant::now()));
        let backends = Arc::new(ListenerBackends { default: pool, routes: Vec::new(), proxy_protocol });
        let settings = crate::config::Relay { buffer: BUFFER, ..Default::default() };
        let session = Session::new(Instant::ZERO, CLIENT, LISTENER, backends, None, &settings, None).unwrap();
        Self {
            session,
            client: MemoryClient::default(),
            link: MemoryLink::default(),
            counters: QueueCounters::default(),
            latencies: Latencies::default(),
            ended: false,
        }
    }

    /// Pumps until nothing moves any more (or the session ended), at `now`.
    fn run(&mut self, now: Instant) {
        for _ in 0..64 {
            let ready = MemoryLink::readiness(self.session.relay.backend());
            self.session.relay.on_backend_ready(ready);
            self.ended = self.session.pump(
                &mut self.client,
                now,
                &mut self.link,
                &mut self.counters,
                &mut self.latencies,
                &mut crate::session::Lookups::none(),
            );
            if self.ended {
                return;
            }
        }
    }

    fn end(&self) -> Option<RelayEnd> {
        self.session.relay.end
    }

    fn close(self) -> (MemoryLink, QueueCounters) {
        let Rig { session, mut link, mut counters, .. } = self;
        session.close(&mut link, &mut counters, false, Instant::ZERO);
        (link, counters)
    }
}

#[test]
fn bytes_and_half_closes_pass_both_ways_in_order() {
    let mut rig = Rig::new(&[A], false);
    rig.client.inbox.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    rig.client.fin = true;
    rig.run(Instant::ZERO);
    let server = rig.link.servers[0].clone();
    assert_eq!(server.take(), b"GET / HTTP/1.0\r\n\r\n");
    assert!(server.got_fin(), "the client's FIN reaches the backend after its bytes");
    assert!(!rig.client.closed, "the backend still sends: the client's side stays open");
    server.send(b"HTTP/1.0 200 OK\r\n\r\nhello");
    rig.run(Instant::ZERO);
    assert_eq!(rig.client.out, b"HTTP/1.0 200 OK\r\n\r\nhello");
    assert!(!rig.client.closed);
    server.shutdown_write();
    rig.run(Instant::ZERO);
    assert!(rig.client.closed && !rig.client.aborted, "the backend's EOF becomes the client's FIN");
    assert!(rig.ended);
    assert_eq!(rig.end(), Some(RelayEnd::Clean));
    assert!(!server.got_reset());
    let (link, counters) = rig.close();
    assert_eq!(link.registered, 0, "the backend left the readiness set");
    assert!(server.dropped());
    assert_eq!((counters.relays_clean, counters.relay_bytes_to_backend, counters.relay_bytes_to_client), (1, 18, 24));
}

#[test]
fn a_refused_connect_moves_to_the_next_backend_with_the_clients_bytes() {
    let mut rig = Rig::new(&[A, B], false);
    rig.link.answers.insert(A, Answer::Refuse);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    assert_eq!(rig.link.servers[0].addr, A, "a fresh round-robin pool starts with its first backend");
    let other = B;
    assert_eq!(rig.link.servers.len(), 2, "one retry, on the other backend");
    assert_eq!(rig.link.servers[1].addr, other);
    assert_eq!(rig.link.servers[1].take(), b"hello", "the bytes waited for the second backend");
    assert!(rig.link.servers[0].take().is_empty());
    assert!(!rig.client.aborted && rig.end().is_none());
    assert_eq!(rig.counters.backend_retries, 1);
    assert_eq!(rig.link.registered, 1, "only the live backend is watched");
}

#[test]
fn when_every_backend_refuses_the_client_is_reset() {
    let mut rig = Rig::new(&[A], false);
    rig.link.answers.insert(A, Answer::Refuse);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    assert!(rig.client.aborted);
    assert_eq!(rig.end(), Some(RelayEnd::BackendFailed));
    let (link, counters) = rig.close();
    assert_eq!((link.registered, counters.relays_backend_failed), (0, 1));
}

#[test]
fn a_backend_that_never_answers_times_out_at_the_deadline() {
    let mut rig = Rig::new(&[A], false);
    rig.link.answers.insert(A, Answer::Silent);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    let deadline = rig.session.relay.deadline().expect("a connect deadline");
    assert_eq!(deadline, Instant::ZERO + Duration::from_millis(5_000));
    rig.run(deadline - Duration::from_millis(1));
    assert!(!rig.client.aborted, "not before the deadline");
    rig.run(deadline);
    assert!(rig.client.aborted);
    assert_eq!(rig.end(), Some(RelayEnd::BackendTimeout));
}

#[test]
fn the_proxy_header_goes_first_on_the_backend_connection() {
    let mut rig = Rig::new(&[A], true);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    let got = rig.link.servers[0].take();
    let header = proxy_protocol::encode(CLIENT, LISTENER, None);
    assert_eq!(&got[..12], &proxy_protocol::SIGNATURE);
    assert_eq!(&got[..header.len()], &header[..]);
    assert_eq!(&got[header.len()..], b"hello");
}

#[test]
fn a_backend_reset_after_bytes_flowed_resets_the_client_without_retry() {
    let mut rig = Rig::new(&[A, B], false);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    assert_eq!(rig.link.servers[0].take(), b"hello");
    rig.link.servers[0].reset();
    rig.client.inbox.extend_from_slice(b"more");
    rig.run(Instant::ZERO);
    assert!(rig.client.aborted, "bytes reached the first backend: no other one can take over");
    assert_eq!(rig.link.servers.len(), 1);
    assert_eq!(rig.end(), Some(RelayEnd::BackendFailed));
}

#[test]
fn a_client_that_goes_away_resets_the_backend() {
    let mut rig = Rig::new(&[A], false);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(Instant::ZERO);
    rig.session.relay.client_gone();
    assert_eq!(rig.end(), Some(RelayEnd::ClientGone));
    assert!(rig.link.servers[0].got_reset() && rig.link.servers[0].got_fin());
}

#[test]
fn a_backend_that_does_not_read_holds_the_client_back_with_bounded_memory() {
    let mut rig = Rig::new(&[A], false);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    rig.client.inbox.extend_from_slice(&data);
    rig.client.fin = true;
    rig.link.window = Some(0);
    rig.run(Instant::ZERO);
    let server = rig.link.servers[0].clone();
    let mut got = server.take();
    assert!(
        rig.client.inbox.len() >= data.len() - got.len() - BUFFER,
        "the relay holds at most its buffer ({} of {} bytes not read from the client)",
        rig.client.inbox.len(),
        data.len()
    );
    assert!(!server.got_fin());
    server.set_window(4096);
    while got.len() < data.len() {
        rig.run(Instant::ZERO);
        let chunk = server.take();
        assert!(!chunk.is_empty(), "stalled at {} bytes", got.len());
        got.extend_from_slice(&chunk);
    }
    assert!(got == data, "every byte, in order");
    rig.run(Instant::ZERO);
    assert!(server.got_fin());
}

#[test]
fn a_relay_where_no_byte_moves_for_the_idle_timeout_resets_both_ends() {
    let mut rig = Rig::new(&[A], false);
    let s = |secs| Instant::ZERO + Duration::from_secs(secs);
    rig.client.inbox.extend_from_slice(b"hello");
    rig.run(s(0));
    let server = rig.link.servers[0].clone();
    assert_eq!(server.take(), b"hello");
    // A byte at 200 s moves the deadline (300 s by default) to 500 s.
    rig.run(s(200));
    server.send(b"x");
    rig.run(s(200));
    assert_eq!(rig.client.out, b"x");
    assert_eq!(rig.session.relay.idle_deadline(), Some(s(500)));
    rig.run(s(499));
    assert!(!rig.ended && rig.end().is_none(), "not idle long enough");
    assert!(IdleSweep::expired(&rig.session, s(500)));
    rig.run(s(500));
    assert!(rig.ended);
    assert_eq!(rig.end(), Some(RelayEnd::IdleTimeout));
    assert!(rig.client.aborted, "the client gets a RST");
    assert!(server.got_reset(), "the backend gets a RST");
    let (_, counters) = rig.close();
    assert_eq!(counters.relays_idle_timeout, 1);
}

#[test]
fn the_idle_sweep_runs_once_a_second() {
    let mut sweep = IdleSweep::default();
    let ms = |m| Instant::ZERO + Duration::from_millis(m);
    assert!(sweep.due(ms(0)));
    assert!(!sweep.due(ms(999)));
    assert!(sweep.due(ms(1000)));
    assert!(!sweep.due(ms(1500)));
}
