//! The per-queue worker: one thread per NIC queue, owning that queue's AF_XDP socket and one
//! `sluice_tcp::Endpoint`.
//!
//! Flow ownership: the worker whose queue received a flow's SYN owns it ([`crate::datapath::xdp::flows`]). The
//! NIC (on veth: the sender's transmit queue) delivers a flow's frames on one queue, so they are
//! almost always handled where they arrive. When the sender changes queue (Linux re-hashes after
//! an RTO), the worker that got the frame finds the owner in the shared flow index and hands the
//! frame to its inbox (a crossbeam channel), waking it if it sleeps. Stateless answers (RSTs of
//! a refusing listener) need no owner and are sent at once.
//!
//! Each loop iteration: take back sent frames, refill the fill ring, receive a batch, drain the
//! inbox, run due timers, serve the listeners' connections (echo), transmit what the TCP stack
//! has to send, flush the TX ring. An iteration that found no work sleeps in `poll` on the
//! socket and the inbox's eventfd until a frame, a hand-off or the next timer: an idle sluice
//! uses no CPU.
//!
//! What a frame gets is decided by [`Dispatch`], which knows nothing of sockets or clocks and is
//! tested here with frames built by `sluice-wire`. Drops are counted with a reason.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use sluice_tcp::{ConnectionHandle, Endpoint, Event, FourTuple, Instant, State as TcpState};
use sluice_wire::ethernet::{self, Address as MacAddress, EtherType};
use sluice_wire::{Checksum, Error as WireError, ParsedSegment, emit_frame, parse_frame, rst_reply};
use sluice_xsk::{RxVerdict, Socket};

use crate::session::backend::ListenerBackends;
use crate::config::ListenerMode;
use crate::datapath::xdp::flows::{ClaimError, FlowIndex};
use crate::session::limits::{ConnCounts, Slot};
use crate::datapath::{Control, Controls, Services, Waker};
use crate::observe::counters::QueueCounters;
use crate::observe::stats::SharedCounters;
use crate::session::echo::Echo;
use crate::session::relay::OnStack;
use crate::session::Session;
use crate::datapath::EpollSlot;

/// A worker's inbox: frames handed over by other workers, orders from the main thread, and
/// how to wake the owner.
pub struct Inbox {
    pub rx: Receiver<Vec<u8>>,
    pub control: Receiver<Control>,
    pub wake: Arc<Waker>,
}

/// The other workers' inboxes, indexed by worker.
#[derive(Clone)]
pub struct Peers {
    pub senders: Vec<Sender<Vec<u8>>>,
    pub wakers: Vec<Arc<Waker>>,
}

/// Creates the inboxes of `n` workers: the `Inbox` each owns, the `Peers` all share, and the
/// main thread's `Controls`.
pub fn inboxes(n: usize, capacity: usize) -> std::io::Result<(Vec<Inbox>, Peers, Controls)> {
    let (orders, controls) = crate::datapath::control_channels(n)?;
    let mut inboxes = Vec::new();
    let mut peers = Peers { senders: Vec::new(), wakers: Vec::new() };
    for (control, wake) in orders {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        peers.senders.push(tx);
        peers.wakers.push(Arc::clone(&wake));
        inboxes.push(Inbox { rx, control, wake });
    }
    Ok((inboxes, peers, controls))
}

/// Where a frame comes from: this worker's RX ring, or another worker's hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rx,
    HandOff,
}

/// What became of one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A stateless reply of this many bytes was written into `out`.
    Reply(usize),
    /// The frame belongs to another worker's flow.
    HandOff(usize),
    /// The TCP stack took it (or it was dropped and counted).
    Consumed,
}

/// Remembered neighbours (IPv4 -> MAC), learned from received frames; bounded.
const MAX_NEIGHBORS: usize = 65_536;

/// The socket-free half of a worker.
pub struct Dispatch {
    worker: usize,
    /// Which worker owns each flow (see [`crate::datapath::xdp::flows`]), shared by all workers.
    flows: Arc<FlowIndex>,
    listeners: HashMap<SocketAddrV4, ListenerMode>,
    /// Listeners a reload removed: no new connections, but their open ones are still served.
    retired: HashSet<SocketAddrV4>,
    /// Draining: no listener accepts any more.
    draining: bool,
    limits: crate::config::Limits,
    conn_counts: Arc<ConnCounts>,
    /// Connections admitted under the limits, with their claim.
    admitted: HashMap<ConnectionHandle, Slot>,
    access_log: bool,
    checksum: Checksum,
    tcp: Endpoint,
    echo: HashMap<ConnectionHandle, Echo>,
    neighbors: HashMap<Ipv4Addr, MacAddress>,
    local_mac: MacAddress,
    sessions: HashMap<ConnectionHandle, Session>,
    backends: HashMap<SocketAddrV4, Arc<ListenerBackends>>,
    /// epoll token of a relay's backend socket -> its connection.
    relay_tokens: HashMap<u64, ConnectionHandle>,
    relay_token_of: HashMap<ConnectionHandle, u64>,
    next_token: u64,
    /// Relays with a deadline (backend connect, TLS handshake), checked each `process`.
    deadlines: Vec<ConnectionHandle>,
    relay_settings: crate::config::Relay,
    /// TLS termination per listener address.
    tls: HashMap<SocketAddrV4, Arc<sluice_tls::rustls::ServerConfig>>,
    /// The worker's readiness set: its AF_XDP socket, its inbox and every backend socket.
    pub epoll: Epoll,
    /// How long the loop polls empty rings before it sleeps (`datapath.busy_poll_us`).
    pub busy_poll: Duration,
    /// Most relays open at once (each holds a backend socket): this worker's share of the
    /// descriptors ([`crate::session::limits::connections_per_worker`]).
    pub max_relays: usize,
    pub counters: QueueCounters,
    pub latencies: crate::observe::latency::Latencies,
}

/// epoll tokens of the worker's own descriptors; backend sockets get tokens below these.
pub const TOKEN_XSK: u64 = u64::MAX;
pub const TOKEN_INBOX: u64 = u64::MAX - 1;

impl Dispatch {
    pub fn new(
        worker: usize,
        flows: Arc<FlowIndex>,
        services: Services,
        conn_counts: Arc<ConnCounts>,
        verify_checksums: bool,
        mut tcp: Endpoint,
        local_mac: MacAddress,
    ) -> std::io::Result<Self> {
        let Services { listeners, tls, relay: relay_settings, limits, access_log, backends } = services;
        for (addr, mode) in &listeners {
            if *mode != ListenerMode::Refuse {
                // Every worker listens: whichever owns a flow accepts it.
                let _ = tcp.listen(*addr);
            }
        }
        let backends = crate::session::backend::with_single_backends(&listeners, backends);
        Ok(Self {
            worker,
            flows,
            listeners,
            retired: HashSet::new(),
            draining: false,
            limits,
            conn_counts,
            admitted: HashMap::new(),
            access_log,
            checksum: if verify_checksums { Checksum::Verify } else { Checksum::Ignore },
            tcp,
            echo: HashMap::new(),
            neighbors: HashMap::new(),
            local_mac,
            sessions: HashMap::new(),
            backends,
            relay_tokens: HashMap::new(),
            relay_token_of: HashMap::new(),
            next_token: 0,
            deadlines: Vec::new(),
            relay_settings,
            tls,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            busy_poll: Duration::ZERO,
            max_relays: usize::MAX,
            counters: QueueCounters { queue: worker as u32, ..Default::default() },
            latencies: Default::default(),
        })
    }

    /// Handles one frame of `len` bytes at the start of `buf` (received, or handed over by
    /// another worker). A stateless reply is written in place over it (`buf` extends to the end
    /// of the UMEM frame), so answering costs no second frame and no copy.
    pub fn on_frame(&mut self, now: Instant, buf: &mut [u8], len: usize, source: Source) -> Verdict {
        let frame = &buf[..len.min(buf.len())];
        let seg = match parse_frame(frame, self.checksum) {
            Ok(seg) => seg,
            Err(e) => {
                match e {
                    WireError::Checksum => self.counters.dropped_checksum += 1,
                    WireError::Fragmented | WireError::Unsupported => self.counters.dropped_unsupported += 1,
                    _ => self.counters.dropped_malformed += 1,
                }
                return Verdict::Consumed;
            }
        };
        let local = SocketAddrV4::new(seg.ip.dst_addr, seg.tcp.dst_port);
        let remote = SocketAddrV4::new(seg.ip.src_addr, seg.tcp.src_port);
        let mode = self.listeners.get(&local).copied();
        if mode.is_none() && !self.retired.contains(&local) {
            self.counters.dropped_no_listener += 1;
            return Verdict::Consumed;
        }
        match mode {
            // RFC 9293 3.10.7.1: a closed port answers anything but a RST with a RST.
            Some(ListenerMode::Refuse) => {
                let rst = rst_reply(&seg);
                self.refuse(buf, rst)
            }
            // Accepting listeners, and retired ones whose connections may still be open.
            _ => {
                let tuple = FourTuple { local, remote };
                let local_tcb = self.tcp.lookup(&tuple);
                // A TCB in TIME-WAIT is out of the index: another worker may have reopened its
                // 4-tuple (a new SYN that arrived on another queue).
                let time_wait = local_tcb.is_some_and(|h| self.tcp.state(h) == Some(TcpState::TimeWait));
                let syn = seg.tcp.flags.syn() && !seg.tcp.flags.ack();
                let mut claimed = false;
                if local_tcb.is_none() || time_wait {
                    // Not ours (yet): a flow another worker owns goes there; a new SYN claims
                    // its flow for this worker before the TCB exists.
                    match self.flows.owner(&tuple) {
                        Some(o) if o != self.worker => {
                            if let Some(h) = local_tcb {
                                // The old connection's TIME-WAIT is moot: the 4-tuple lives on.
                                self.tcp.forget_time_wait(h);
                            }
                            return self.hand_off(o, source, false);
                        }
                        Some(_) => {}
                        None if local_tcb.is_none() && syn && mode.is_some() && !self.draining => {
                            if self.limits != Default::default()
                                && let Err(why) =
                                    self.conn_counts.check(&self.limits, self.admitted.len() as u64, seg.ip.src_addr)
                            {
                                self.counters.count_refusal(why);
                                let rst = rst_reply(&seg);
                                return self.refuse(buf, rst);
                            }
                            if matches!(mode, Some(ListenerMode::Relay(_))) && self.sessions.len() >= self.max_relays {
                                self.counters.refused_descriptors += 1;
                                let rst = rst_reply(&seg);
                                return self.refuse(buf, rst);
                            }
                            match self.flows.claim(tuple, self.worker) {
                                Ok(()) => claimed = true,
                                Err(ClaimError::Owned(o)) => return self.hand_off(o, source, true),
                                Err(ClaimError::Full) => {
                                    self.counters.dropped_flow_index_full += 1;
                                    return Verdict::Consumed;
                                }
                            }
                        }
                        None => {}
                    }
                }
                if self.neighbors.len() < MAX_NEIGHBORS || self.neighbors.contains_key(&seg.ip.src_addr) {
                    self.neighbors.insert(seg.ip.src_addr, seg.eth.src_addr);
                }
                let data = !seg.tcp.payload.is_empty();
                self.tcp.handle_segment(now, &seg.ip, &seg.tcp);
                if local_tcb.is_none() || time_wait {
                    self.index_new_flow(tuple, claimed);
                }
                self.release_flows();
                if data {
                    // Let the application take these bytes before the next segment of the batch
                    // is handled: a RST right behind them (an abortive close, as `openssl s_time`
                    // does after its Finished) would flush them unread (RFC 9293 3.10.7.4).
                    self.process(now);
                }
                Verdict::Consumed
            }
        }
    }

    /// A frame of a flow that worker `owner` holds: handed over, counted by reason. A frame
    /// that was itself handed over is never handed on (the owner changed meanwhile): dropped,
    /// counted; TCP recovers it.
    fn hand_off(&mut self, owner: usize, source: Source, syn_race: bool) -> Verdict {
        if source == Source::HandOff {
            self.counters.dropped_handoff_stale += 1;
            return Verdict::Consumed;
        }
        if syn_race { self.counters.handoff_syn_race += 1 } else { self.counters.handoff_moved += 1 }
        Verdict::HandOff(owner)
    }

    /// Whether this worker serves `tuple` actively (a TCB not in TIME-WAIT).
    fn serves(&self, tuple: &FourTuple) -> Option<ConnectionHandle> {
        self.tcp.lookup(tuple).filter(|h| self.tcp.state(*h) != Some(TcpState::TimeWait))
    }

    /// After a segment of a flow this worker did not serve actively: an unused claim is given
    /// back; a connection rebuilt from a SYN cookie (its SYN left no state, so no claim) or
    /// reopened from TIME-WAIT claims its flow now.
    fn index_new_flow(&mut self, tuple: FourTuple, claimed: bool) {
        match self.serves(&tuple) {
            None if claimed => self.flows.release(&tuple, self.worker),
            Some(h) if !claimed && self.flows.claim(tuple, self.worker).is_err() => {
                self.counters.flow_claim_conflicts += 1;
                self.tcp.abort(h);
            }
            _ => {}
        }
    }

    /// Gives back the index entries of the flows the stack released (freed, or in TIME-WAIT)
    /// unless the same 4-tuple was reopened here meanwhile.
    fn release_flows(&mut self) {
        while let Some(t) = self.tcp.take_released() {
            if self.serves(&t).is_none() {
                self.flows.release(&t, self.worker);
            }
        }
    }

    /// Writes `rst` (the answer to a refused segment; none to a RST) in place over the frame in `buf`.
    fn refuse(&mut self, buf: &mut [u8], rst: Option<ParsedSegment<'_>>) -> Verdict {
        match rst {
            None => {
                self.counters.dropped_rst += 1;
                Verdict::Consumed
            }
            Some(rst) => match emit_frame(buf, &rst.eth, &rst.ip, &rst.tcp) {
                Ok(len) => {
                    self.counters.rst_sent += 1;
                    Verdict::Reply(len)
                }
                Err(_) => {
                    self.counters.dropped_tx_full += 1;
                    Verdict::Consumed
                }
            },
        }
    }


    /// Serves `services` from now on. Connections already open keep their TLS configuration
    /// and backend; a listener that is gone stops accepting but its connections are served
    /// until they end.
    /// Returns the connections of the listeners this reload removed.
    pub fn reload(&mut self, services: Services) -> Vec<FourTuple> {
        let Services { listeners, tls, relay, limits, access_log, backends } = services;
        let accepting = |m: Option<&ListenerMode>| matches!(m, Some(ListenerMode::Echo | ListenerMode::Relay(_)));
        let mut removed = HashSet::new();
        for (addr, mode) in &self.listeners {
            if accepting(Some(mode)) && !accepting(listeners.get(addr)) {
                self.tcp.unlisten(*addr);
                self.retired.insert(*addr);
                removed.insert(*addr);
            }
        }
        for (addr, mode) in &listeners {
            if accepting(Some(mode)) && !accepting(self.listeners.get(addr)) && !self.draining {
                let _ = self.tcp.listen(*addr);
                self.retired.remove(addr);
            }
        }
        self.backends = crate::session::backend::with_single_backends(&listeners, backends);
        self.listeners = listeners;
        self.tls = tls;
        self.relay_settings = relay;
        self.limits = limits;
        self.access_log = access_log;
        self.flows_on(|local| removed.contains(&local))
    }

    /// The 4-tuples of this worker's connections whose local end passes `on`.
    fn flows_on(&self, on: impl Fn(SocketAddrV4) -> bool) -> Vec<FourTuple> {
        self.tcp.handles().filter_map(|h| self.tcp.four_tuple(h)).filter(|t| on(t.local)).collect()
    }

    /// Stops accepting on every listener: a SYN now gets a RST from the TCP stack (or, when the
    /// XDP program passes them to the kernel, never arrives). Open connections carry on.
    /// Returns every connection of a listener (to keep them steered to sluice).
    pub fn drain(&mut self) -> Vec<FourTuple> {
        self.draining = true;
        for addr in self.listeners.keys() {
            self.tcp.unlisten(*addr);
        }
        self.counters.connections_active = self.tcp.active_count() as u64;
        self.flows_on(|local| self.listeners.contains_key(&local) || self.retired.contains(&local))
    }

    /// Resets every connection still open (the drain deadline passed).
    pub fn abort_all(&mut self, now: Instant) {
        let handles: Vec<_> = self.tcp.handles().collect();
        for h in handles {
            self.tcp.abort(h);
        }
        self.process(now);
    }

    /// After input: due timers, then the applications (echo) react to the stack's events.
    pub fn process(&mut self, now: Instant) {
        if self.tcp.poll_timeout().is_some_and(|t| t <= now) {
            self.tcp.handle_timeout(now);
        }
        self.release_flows();
        while let Some((h, event)) = self.tcp.poll_event() {
            match event {
                Event::Established => {
                    self.counters.connections_established += 1;
                    if self.limits != Default::default()
                        && let Some(t) = self.tcp.four_tuple(h)
                    {
                        match self.conn_counts.admit(&self.limits, self.admitted.len() as u64, *t.remote.ip()) {
                            Ok(slot) => {
                                self.admitted.insert(h, slot);
                            }
                            Err(why) => {
                                // Another worker took the last place since the SYN was checked.
                                self.counters.count_refusal(why);
                                self.tcp.abort(h);
                                continue;
                            }
                        }
                    }
                    if let Some(c) = self.tcp.connection(h) {
                        crate::observe::latency::record(
                            &mut self.latencies.tcp_handshake,
                            now.saturating_duration_since(c.created()),
                        );
                    }
                    let tuple = self.tcp.four_tuple(h);
                    let local = tuple.map(|t| t.local);
                    match local.and_then(|l| self.listeners.get(&l).copied()) {
                        Some(ListenerMode::Relay(_)) if let Some(t) = tuple => {
                            let tls = self.tls.get(&t.local).cloned();
                            self.open_relay(h, t.remote, t.local, tls, now)
                        }
                        Some(ListenerMode::Echo) => {
                            self.echo.insert(h, Echo::new(self.relay_settings.buffer));
                        }
                        // A handshake that completed after its listener was removed.
                        _ => self.tcp.abort(h),
                    }
                    self.on_connection_event(h, now);
                }
                Event::Readable | Event::Writable => self.on_connection_event(h, now),
                Event::PeerClosed => self.on_connection_event(h, now),
                Event::Reset | Event::TimedOut => {
                    self.echo.remove(&h);
                    if let Some(s) = self.sessions.get_mut(&h) {
                        s.relay.client_gone();
                        self.close_relay(h, now);
                    }
                }
                Event::Closed => {
                    self.counters.connections_closed += 1;
                    if let Some(slot) = self.admitted.remove(&h) {
                        self.conn_counts.release(slot);
                    }
                    self.echo.remove(&h);
                    self.close_relay(h, now);
                }
            }
        }
        // Backend connects and TLS handshakes past their deadline.
        if !self.deadlines.is_empty() {
            let mut i = 0;
            while i < self.deadlines.len() {
                let h = self.deadlines[i];
                match self.sessions.get(&h).map(|s| s.relay.deadline()) {
                    Some(Some(deadline)) => {
                        if deadline <= now {
                            self.pump_relay(h, now);
                        }
                        i += 1;
                    }
                    _ => {
                        self.deadlines.swap_remove(i);
                    }
                }
            }
        }
        self.counters.connections_open = self.tcp.connection_count() as u64;
        if self.draining {
            self.counters.connections_active = self.tcp.active_count() as u64;
        }
        self.counters.relays_open = self.sessions.len() as u64;
    }

    fn on_connection_event(&mut self, h: ConnectionHandle, now: Instant) {
        if self.sessions.contains_key(&h) {
            self.pump_relay(h, now);
        } else if let Some(e) = self.echo.get_mut(&h)
            && e.pump(&mut OnStack { tcp: &mut self.tcp, handle: h }, &mut self.counters.echo_bytes)
        {
            // FIN echoed (or the stream is gone): the TCB finishes the close alone.
            self.echo.remove(&h);
        }
    }

    /// Moves a session's bytes (connecting its backend when it needs one) and records what it
    /// learnt. A session whose work ended is closed at once (its backend socket, its buffers):
    /// the client's TCB may linger for its FIN exchange and TIME-WAIT, but needs nothing of it.
    fn pump_relay(&mut self, h: ConnectionHandle, now: Instant) {
        let Some(s) = self.sessions.get_mut(&h) else { return };
        let token = self.relay_token_of.get(&h).copied().unwrap_or(u64::MAX);
        let mut readiness = EpollSlot { epoll: &self.epoll, token };
        let client = &mut OnStack { tcp: &mut self.tcp, handle: h };
        if s.pump(client, now, &mut readiness, &mut self.counters, &mut self.latencies) {
            self.close_relay(h, now);
        } else if s.relay.deadline().is_some() && !self.deadlines.contains(&h) {
            self.deadlines.push(h);
        }
    }

    /// A backend socket became readable and/or writable (edge-triggered).
    pub fn on_backend_event(&mut self, token: u64, flags: EpollFlags, now: Instant) {
        let Some(h) = self.relay_tokens.get(&token).copied() else { return };
        let Some(s) = self.sessions.get_mut(&h) else { return };
        s.relay.on_backend_ready(crate::datapath::backend_readiness(flags));
        self.pump_relay(h, now);
    }

    /// A session for a new client connection. Its backend is chosen at once, or (when a route
    /// or the PROXY header needs the TLS handshake's facts) once the handshake is done.
    fn open_relay(
        &mut self,
        h: ConnectionHandle,
        client: SocketAddrV4,
        listener: SocketAddrV4,
        tls: Option<Arc<sluice_tls::rustls::ServerConfig>>,
        now: Instant,
    ) {
        let Some(backends) = self.backends.get(&listener).cloned() else {
            self.counters.relays_backend_failed += 1;
            self.tcp.abort(h);
            return;
        };
        if self.sessions.len() >= self.max_relays {
            // Handshakes that were under way when the last place was taken.
            self.counters.refused_descriptors += 1;
            self.tcp.abort(h);
            return;
        }
        let session = match Session::new(now, client, listener, backends, tls, &self.relay_settings) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("relay: {e}");
                self.counters.relays_backend_failed += 1;
                self.tcp.abort(h);
                return;
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        self.counters.relays_opened += 1;
        self.relay_tokens.insert(token, h);
        self.relay_token_of.insert(h, token);
        self.sessions.insert(h, session);
        self.pump_relay(h, now);
    }

    fn close_relay(&mut self, h: ConnectionHandle, now: Instant) {
        let Some(s) = self.sessions.remove(&h) else { return };
        let token = self.relay_token_of.remove(&h).unwrap_or(u64::MAX);
        self.relay_tokens.remove(&token);
        s.close(&mut EpollSlot { epoll: &self.epoll, token }, &mut self.counters, self.access_log, now);
    }

    /// The next Ethernet frame the TCP stack wants sent, written into `out`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        loop {
            let ip_len = self.tcp.poll_transmit(now, out.get_mut(ethernet::HEADER_LEN..)?)?;
            let ip = &out[ethernet::HEADER_LEN..ethernet::HEADER_LEN + ip_len];
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            let Some(dst_mac) = self.neighbors.get(&dst).copied() else {
                self.counters.dropped_no_neighbor += 1;
                continue;
            };
            let eth = ethernet::Repr { src_addr: self.local_mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 };
            eth.emit(&mut ethernet::Frame::new_unchecked(&mut out[..ethernet::HEADER_LEN]));
            return Some(ethernet::HEADER_LEN + ip_len);
        }
    }

    /// The earliest of the TCP stack's timers and the relays' connect deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connects = self.deadlines.iter().filter_map(|h| self.sessions.get(h)?.relay.deadline());
        self.tcp.poll_timeout().into_iter().chain(connects).min()
    }

    pub fn has_relays(&self) -> bool {
        !self.sessions.is_empty()
    }

    pub fn tcp(&self) -> &Endpoint {
        &self.tcp
    }
}



/// Frames received per batch.
const RX_BATCH: u32 = 64;
/// Longest sleep while idle: how soon a stop request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Runs one queue's worker until `stop` is set.
pub fn run(mut sock: Socket, mut dispatch: Dispatch, inbox: Inbox, peers: Peers, worker: crate::datapath::Worker) {
    let crate::datapath::Worker { shared, clock, stop } = worker;
    let now = || Instant::from_micros(clock.elapsed().as_micros() as u64);
    for (fd, token) in [(sock.as_fd(), TOKEN_XSK), (inbox.wake.fd(), TOKEN_INBOX)] {
        if let Err(e) = dispatch.epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            tracing::error!(queue = sock.queue_id(), "epoll: {e}; the worker cannot sleep");
        }
    }
    let mut last_publish = now();
    let mut idle_since: Option<Instant> = None;
    let mut woke_idle = false;
    while !stop.load(Ordering::Relaxed) {
        let t = now();
        while let Ok(c) = inbox.control.try_recv() {
            match c {
                Control::Reload(services, done) => {
                    let _ = done.send(dispatch.reload(services));
                }
                Control::Drain(flows) => {
                    let mine = dispatch.drain();
                    if let Some(tx) = flows {
                        let _ = tx.send(mine);
                    }
                }
                Control::Abort => dispatch.abort_all(t),
            }
        }
        sock.reap_completions();
        sock.refill_fill_ring();
        let mut handoffs = 0u64;
        let received = sock.recv_batch(RX_BATCH, |mut rx, _tx| {
            dispatch.counters.rx_frames += 1;
            let len = rx.len();
            match dispatch.on_frame(t, rx.buf_mut(), len, Source::Rx) {
                Verdict::Reply(n) => RxVerdict::Transmit(n),
                Verdict::HandOff(owner) => {
                    match peers.senders[owner].try_send(rx.data().to_vec()) {
                        Ok(()) => {
                            handoffs += 1;
                            peers.wakers[owner].wake();
                        }
                        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                            dispatch.counters.dropped_handoff_full += 1
                        }
                    }
                    RxVerdict::Recycle
                }
                Verdict::Consumed => RxVerdict::Recycle,
            }
        });
        dispatch.counters.handoff_out += handoffs;
        let mut handed_in = 0u32;
        while let Ok(mut frame) = inbox.rx.try_recv() {
            handed_in += 1;
            // A handed-over frame is never handed on. A stateless answer (a RST for a connection
            // past a limit) is sent from here.
            let len = frame.len();
            if let Verdict::Reply(n) = dispatch.on_frame(t, &mut frame, len, Source::HandOff) {
                let sent = sock.tx_frame().is_some_and(|mut out| {
                    let fits = out.buf_mut().len() >= n;
                    if fits {
                        out.buf_mut()[..n].copy_from_slice(&frame[..n]);
                    }
                    fits && out.submit(n).is_ok()
                });
                if !sent {
                    dispatch.counters.dropped_tx_full += 1;
                }
            }
            if handed_in >= RX_BATCH * 4 {
                break;
            }
        }
        dispatch.counters.handoff_in += u64::from(handed_in);
        let backend = if dispatch.has_relays() { backend_events(&mut dispatch, Duration::ZERO, now) } else { 0 };
        dispatch.process(t);
        let mut sent = 0u32;
        while let Some(mut out) = sock.tx_frame() {
            match dispatch.poll_transmit(t, out.buf_mut()) {
                Some(len) => {
                    if out.submit(len).is_err() {
                        dispatch.counters.dropped_tx_full += 1;
                    }
                    sent += 1;
                }
                None => break, // the unused frame goes back to the free list
            }
        }
        if let Err(e) = sock.flush_tx() {
            tracing::warn!(queue = sock.queue_id(), "TX wakeup failed: {e}");
        }
        let busy = received > 0 || handed_in > 0 || sent > 0 || backend > 0;
        if t.saturating_duration_since(last_publish) >= Duration::from_millis(100) || !busy {
            publish(&sock, &mut dispatch, &shared);
            last_publish = t;
        }
        if busy || sock.tx_in_flight() > 0 {
            idle_since = None;
            woke_idle = false;
            continue;
        }
        // Busy-poll a little before sleeping: a wake-up from poll costs far more than a few
        // empty looks at the rings, and frames arriving meanwhile would wait in the RX ring.
        // Not after a wake-up that brought nothing (a timeout): then sleep again at once.
        let idle_for = t.saturating_duration_since(*idle_since.get_or_insert(t));
        if woke_idle || idle_for >= dispatch.busy_poll {
            idle_since = None;
            woke_idle = true;
            dispatch.counters.idle_sleeps += 1;
            let timeout = dispatch
                .poll_timeout()
                .map_or(IDLE_POLL, |deadline| deadline.saturating_duration_since(now()).min(IDLE_POLL));
            sleep(&mut dispatch, &inbox, timeout, now);
        }
    }
    publish(&sock, &mut dispatch, &shared);
    shared.finish(&mut dispatch.latencies);
    if let Err(e) = sock.check_accounting() {
        tracing::error!(queue = sock.queue_id(), "UMEM frame accounting: {e}");
    }
}

/// Sleeps until the socket has frames, another worker hands one over, a backend socket is
/// ready, or `timeout`; then handles the backends' readiness.
fn sleep(dispatch: &mut Dispatch, inbox: &Inbox, timeout: Duration, now: impl Fn() -> Instant) {
    inbox.wake.set_sleeping(true);
    let timeout = if inbox.rx.is_empty() { timeout } else { Duration::ZERO };
    backend_events(dispatch, timeout, now);
    inbox.wake.set_sleeping(false);
    inbox.wake.reset();
}

/// An epoll timeout of whole milliseconds, rounded up, at most [`IDLE_POLL`]: a timer 0.4 ms
/// away must not turn a sleep into a spin (rounded down, thousands of TIME-WAIT timers a few µs
/// apart kept both cores busy for the 2 MSL after a load).
pub fn epoll_timeout(timeout: Duration) -> EpollTimeout {
    let ms = timeout.min(IDLE_POLL).as_micros().div_ceil(1000);
    EpollTimeout::from(u16::try_from(ms).unwrap_or(u16::MAX))
}

/// Waits up to `timeout` on the worker's epoll set and hands backend readiness to the relays.
fn backend_events(dispatch: &mut Dispatch, timeout: Duration, now: impl Fn() -> Instant) -> usize {
    let mut events = [EpollEvent::empty(); 64];
    let timeout = epoll_timeout(timeout);
    let n = dispatch.epoll.wait(&mut events, timeout).unwrap_or(0);
    let t = now();
    let mut backend = 0;
    for e in &events[..n] {
        if e.data() < TOKEN_INBOX {
            dispatch.on_backend_event(e.data(), e.events(), t);
            backend += 1;
        }
    }
    backend
}

fn publish(sock: &Socket, dispatch: &mut Dispatch, shared: &SharedCounters) {
    let frames = sock.frame_stats();
    let c = &mut dispatch.counters;
    let xsk = sock.stats();
    c.tx_frames = xsk.tx_frames;
    c.xsk_tx_ring_full = xsk.tx_ring_full;
    c.xsk_tx_no_frame = xsk.tx_no_frame;
    c.xsk_fill_starved = xsk.fill_starved;
    c.xsk_invalid_descs = xsk.invalid_descs;
    if let Ok(k) = sock.kernel_stats() {
        c.kernel_rx_dropped = k.rx_dropped;
        c.kernel_rx_ring_full = k.rx_ring_full;
        c.kernel_rx_fill_ring_empty = k.rx_fill_ring_empty_descs;
        c.kernel_rx_invalid_descs = k.rx_invalid_descs;
        c.kernel_tx_invalid_descs = k.tx_invalid_descs;
    }
    c.umem_frames_free = u64::from(frames.free);
    c.umem_frames_total = u64::from(frames.total);
    c.draining = u64::from(dispatch.draining);
    shared.send_interval(&mut dispatch.latencies);
    shared.publish(c, dispatch.tcp.stats());
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::ethernet::Address;
    use sluice_wire::ipv4::{self, Protocol};
    use sluice_wire::tcp::{self, Flags};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const PROXY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const CLIENT_MAC: Address = Address([2, 0, 0, 0, 0, 1]);
    const PROXY_MAC: Address = Address([2, 0, 0, 0, 0, 2]);
    const T0: Instant = Instant::from_millis(1);

    fn dispatch_with(worker: usize, flows: Arc<FlowIndex>, extra: &[(u16, ListenerMode)]) -> Dispatch {
        let mut listeners = HashMap::new();
        listeners.insert(SocketAddrV4::new(PROXY, 443), ListenerMode::Refuse);
        listeners.insert(SocketAddrV4::new(PROXY, 7), ListenerMode::Echo);
        for (port, mode) in extra {
            listeners.insert(SocketAddrV4::new(PROXY, *port), *mode);
        }
        let tcp = Endpoint::new(sluice_tcp::Config::default(), Instant::ZERO);
        let services = Services { listeners, ..Default::default() };
        Dispatch::new(worker, flows, services, Arc::default(), true, tcp, PROXY_MAC).unwrap()
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
            src_addr: CLIENT,
            dst_addr: PROXY,
            protocol: Protocol::Tcp,
            payload_len: tcp.header_len() + s.payload.len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; 1514];
        let len = emit_frame(&mut buf, &eth, &ip, &tcp).unwrap();
        buf.truncate(len);
        buf
    }

    fn syn(dst_port: u16) -> Vec<u8> {
        frame(Seg { src_port: 40000, dst_port, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] })
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

    #[test]
    fn syn_to_refusing_listener_gets_rst_ack() {
        let mut d = dispatch();
        let out = reply(&mut d, &syn(443)).expect("a RST");
        let seg = parse_frame(&out, Checksum::Verify).unwrap();
        assert_eq!(seg.tcp.flags, Flags::RST | Flags::ACK);
        assert_eq!((seg.tcp.seq_number, seg.tcp.ack_number), (0, 1001));
        assert_eq!((seg.ip.src_addr, seg.ip.dst_addr), (PROXY, CLIENT));
        assert_eq!((seg.tcp.src_port, seg.tcp.dst_port), (443, 40000));
        assert_eq!(seg.eth.dst_addr, CLIENT_MAC);
        assert_eq!(d.counters.rst_sent, 1);
    }

    #[test]
    fn rst_to_refusing_listener_is_never_answered() {
        let mut d = dispatch();
        let rst = frame(Seg { src_port: 40000, dst_port: 443, flags: Flags::RST, seq: 5, ack: 0, payload: &[] });
        assert!(reply(&mut d, &rst).is_none());
        assert_eq!((d.counters.dropped_rst, d.counters.rst_sent), (1, 0));
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let mut d = dispatch();
        assert!(reply(&mut d, &syn(80)).is_none());
        assert_eq!(d.counters.dropped_no_listener, 1);
        let mut f = frame(Seg { src_port: 40000, dst_port: 443, flags: Flags::ACK, seq: 1, ack: 1, payload: b"hello" });
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(reply(&mut d, &f).is_none());
        assert_eq!(d.counters.dropped_checksum, 1);
        let f = syn(443);
        for len in 0..f.len() {
            assert!(reply(&mut d, &f[..len]).is_none(), "truncated to {len}");
        }
        let c = d.counters;
        assert_eq!(c.dropped_malformed + c.dropped_unsupported + c.dropped_checksum, 1 + f.len() as u64);
    }

    #[test]
    fn echo_listener_handshakes_and_echoes_through_frames() {
        let mut d = dispatch();
        assert_eq!(on(&mut d, &syn(7)).0, Verdict::Consumed);
        let out = transmit(&mut d, T0);
        assert_eq!(out.len(), 1);
        let synack = parse_frame(&out[0], Checksum::Verify).unwrap();
        assert_eq!(synack.tcp.flags, Flags::SYN | Flags::ACK);
        assert_eq!(synack.tcp.ack_number, 1001);
        assert_eq!((synack.eth.src_addr, synack.eth.dst_addr), (PROXY_MAC, CLIENT_MAC));
        let iss = synack.tcp.seq_number;
        let data = frame(Seg { src_port: 40000, dst_port: 7, flags: Flags::ACK | Flags::PSH, seq: 1001, ack: iss.wrapping_add(1), payload: b"ping" });
        let _ = on(&mut d, &data);
        let out = transmit(&mut d, T0);
        let echoed: Vec<u8> = out
            .iter()
            .map(|f| parse_frame(f, Checksum::Verify).unwrap())
            .flat_map(|s| s.tcp.payload.to_vec())
            .collect();
        assert_eq!(echoed, b"ping");
        assert_eq!(d.counters.connections_established, 1);
        assert_eq!(d.counters.echo_bytes, 4);
    }

    /// Payload bytes of the frames, in order.
    fn payload(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.iter().flat_map(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.payload.to_vec()).collect()
    }

    /// A relay listener whose backend is a kernel socket on loopback: bytes go both ways and the
    /// backend's EOF becomes sluice's FIN.
    #[test]
    fn relay_listener_moves_bytes_to_a_kernel_backend_and_back() {
        use std::io::{Read, Write};
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(backend_addr) = backend.local_addr().unwrap() else { panic!() };
        let mut d = dispatch_with(0, Arc::default(), &[(80, ListenerMode::Relay(backend_addr))]);
        let t = |ms| Instant::from_millis(ms);
        let _ = on(&mut d, &syn(80));
        let iss = parse_frame(&transmit(&mut d, t(1))[0], Checksum::Verify).unwrap().tcp.seq_number;
        let ack = |seq: u32, flags: Flags, data: &[u8]| {
            frame(Seg { src_port: 40000, dst_port: 80, flags, seq, ack: iss.wrapping_add(1), payload: data })
        };
        let _ = on(&mut d, &ack(1001, Flags::ACK | Flags::PSH, b"GET / HTTP/1.1\r\n\r\n"));
        d.process(t(2));
        let (mut conn, _) = backend.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Let the worker see the connect complete and flush the queued request.
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..100 {
            let _ = backend_events(&mut d, Duration::from_millis(10), || t(3 + i));
            d.process(t(3 + i));
            conn.set_nonblocking(true).unwrap();
            if let Ok(n) = conn.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            if got.len() >= 18 {
                break;
            }
        }
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
        conn.set_nonblocking(false).unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        for i in 0..100 {
            let _ = backend_events(&mut d, Duration::from_millis(10), || t(200 + i));
            out.extend(transmit(&mut d, t(200 + i)));
            if out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.fin()) {
                break;
            }
        }
        assert_eq!(payload(&out), b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.fin()), "backend EOF -> FIN");
        assert_eq!(d.counters.relays_opened, 1);
        // The client ACKs sluice's FIN and sends its own: both directions are done. The relay
        // and its backend socket end now, while the client's TCB lingers in TIME-WAIT (the
        // relay used to live, holding a descriptor, until TIME-WAIT was over).
        let fin_seq = out.iter().map(|f| parse_frame(f, Checksum::Verify).unwrap().tcp).find(|t| t.flags.fin()).unwrap();
        let sluice_fin_end = fin_seq.seq_number.wrapping_add(fin_seq.segment_len() as u32);
        let fin = frame(Seg { src_port: 40000, dst_port: 80, flags: Flags::FIN | Flags::ACK, seq: 1019, ack: sluice_fin_end, payload: &[] });
        let _ = on(&mut d, &fin);
        let _ = transmit(&mut d, t(400));
        assert_eq!(d.tcp().connection_count(), 1, "the TCB is in TIME-WAIT");
        assert_eq!(d.tcp().active_count(), 0);
        assert_eq!((d.counters.relays_open, d.counters.relays_clean), (0, 1), "the relay ended with its work");
        assert!(d.relay_tokens.is_empty() && d.sessions.is_empty());
        let mut rest = Vec::new();
        assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "the backend saw its EOF");
    }

    /// A backend that refuses: the client is reset and the relay counted as failed.
    #[test]
    fn refusing_backend_resets_the_client() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = closed.local_addr().unwrap() else { panic!() };
        drop(closed);
        let mut d = dispatch_with(0, Arc::default(), &[(80, ListenerMode::Relay(addr))]);
        let _ = on(&mut d, &syn(80));
        let iss = parse_frame(&transmit(&mut d, T0)[0], Checksum::Verify).unwrap().tcp.seq_number;
        let f = frame(Seg { src_port: 40000, dst_port: 80, flags: Flags::ACK, seq: 1001, ack: iss.wrapping_add(1), payload: &[] });
        let _ = on(&mut d, &f);
        let mut out = transmit(&mut d, T0);
        for i in 0..100 {
            let _ = backend_events(&mut d, Duration::from_millis(10), || Instant::from_millis(2 + i));
            out.extend(transmit(&mut d, Instant::from_millis(2 + i)));
            if out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst()) {
                break;
            }
        }
        assert!(out.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst()), "client reset");
        // The TCB is gone: the relay is closed and counted.
        d.process(Instant::from_millis(200));
        assert_eq!(d.counters.relays_open, 0);
        assert_eq!(d.counters.relays_backend_failed, 1);
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
            listeners: listeners.iter().map(|(p, m)| (SocketAddrV4::new(PROXY, *p), *m)).collect(),
            tls: HashMap::new(),
            relay: d.relay_settings.clone(),
            ..Default::default()
        }
    }

    fn is_rst(frames: &[Vec<u8>]) -> bool {
        frames.iter().any(|f| parse_frame(f, Checksum::Verify).unwrap().tcp.flags.rst())
    }

    #[test]
    fn reload_retires_a_listener_without_touching_its_connections() {
        let mut d = dispatch();
        let iss = establish(&mut d, 40000, 7, T0);
        let s = services(&d, &[(9, ListenerMode::Echo)]);
        let retired = d.reload(s);
        assert_eq!(retired.len(), 1, "the open connection on :7 is reported");
        assert_eq!(retired[0].remote, SocketAddrV4::new(CLIENT, 40000));
        // The connection on the removed listener still echoes.
        let data = frame(Seg { src_port: 40000, dst_port: 7, flags: Flags::ACK | Flags::PSH, seq: 1001, ack: iss.wrapping_add(1), payload: b"ping" });
        let _ = on(&mut d, &data);
        assert_eq!(payload(&transmit(&mut d, T0)), b"ping");
        // A new SYN to :7 is refused by the stack; :9 accepts.
        let _ = on(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
        assert!(is_rst(&transmit(&mut d, T0)));
        establish(&mut d, 40002, 9, T0);
        assert_eq!(d.counters.connections_established, 2);
        // A frame to an address that never was a listener is still dropped.
        assert!(reply(&mut d, &syn(80)).is_none());
        assert_eq!(d.counters.dropped_no_listener, 1);
    }

    #[test]
    fn draining_refuses_syns_and_names_open_flows() {
        let mut d = dispatch();
        establish(&mut d, 40000, 7, T0);
        let flows = d.drain();
        assert_eq!(flows.len(), 1);
        assert_eq!(d.counters.connections_active, 1);
        let _ = on(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
        assert!(is_rst(&transmit(&mut d, T0)));
        assert_eq!(d.tcp().connection_count(), 1);
        // A reload while draining does not reopen the listener.
        let s = services(&d, &[(7, ListenerMode::Echo)]);
        d.reload(s);
        let _ = on(&mut d, &frame(Seg { src_port: 40002, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }));
        assert!(is_rst(&transmit(&mut d, T0)));
        d.abort_all(T0);
        assert!(is_rst(&transmit(&mut d, T0)), "the open connection is reset");
    }

    #[test]
    fn a_syn_past_the_per_client_limit_gets_a_rst_in_place_and_is_counted() {
        let mut d = dispatch();
        let mut s = services(&d, &[(7, ListenerMode::Echo)]);
        s.limits = crate::config::Limits { max_connections_per_client: 1, ..Default::default() };
        d.reload(s);
        establish(&mut d, 40000, 7, T0);
        assert_eq!(d.conn_counts.total(), 1);
        let out = reply(&mut d, &frame(Seg { src_port: 40001, dst_port: 7, flags: Flags::SYN, seq: 5, ack: 0, payload: &[] }))
            .expect("a RST written in place");
        assert_eq!(parse_frame(&out, Checksum::Verify).unwrap().tcp.flags, Flags::RST | Flags::ACK);
        assert_eq!(d.counters.refused_limit_client, 1);
        assert_eq!(d.tcp().connection_count(), 1, "no state for the refused SYN");
    }

    /// Two backends, the first refusing: the client's request is not lost, the relay connects
    /// the second, which gets the PROXY header first, then the request; the refusing backend
    /// is counted as failed and cools down.
    #[test]
    fn a_refused_connect_is_retried_on_the_next_backend_with_the_proxy_header_first() {
        use std::io::Read;
        let v4 = |l: &std::net::TcpListener| match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = v4(&closed);
        drop(closed);
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = v4(&backend);
        let listener = SocketAddrV4::new(PROXY, 80);
        let pool = Arc::new(crate::session::backend::Pool::new(&[dead, live], crate::session::backend::Balance::RoundRobin, Duration::from_secs(60), std::time::Instant::now()));
        let backends = ListenerBackends { default: Arc::clone(&pool), routes: vec![], proxy_protocol: true };
        let mut services = Services::default();
        services.listeners.insert(listener, ListenerMode::Relay(dead));
        services.backends.insert(listener, Arc::new(backends));
        let tcp = Endpoint::new(sluice_tcp::Config::default(), Instant::ZERO);
        let mut d = Dispatch::new(0, Arc::default(), services, Arc::default(), true, tcp, PROXY_MAC).unwrap();
        let t = |ms| Instant::from_millis(ms);
        let _ = on(&mut d, &syn(80));
        let iss = parse_frame(&transmit(&mut d, t(1))[0], Checksum::Verify).unwrap().tcp.seq_number;
        let f = frame(Seg { src_port: 40000, dst_port: 80, flags: Flags::ACK | Flags::PSH, seq: 1001, ack: iss.wrapping_add(1), payload: b"hello" });
        let _ = on(&mut d, &f);
        backend.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut conn: Option<std::net::TcpStream> = None;
        for i in 0..200 {
            let _ = backend_events(&mut d, Duration::from_millis(10), || t(2 + i));
            d.process(t(2 + i));
            if conn.is_none() {
                conn = backend.accept().ok().map(|(c, _)| c);
            }
            if let Some(c) = conn.as_mut() {
                c.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 256];
                if let Ok(n) = c.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            if got.ends_with(b"hello") {
                break;
            }
        }
        let header = crate::session::proxy_protocol::encode(SocketAddrV4::new(CLIENT, 40000), listener, None);
        assert_eq!(got, [&header[..], b"hello"].concat(), "the header, then the client's bytes");
        let stats = pool.stats();
        assert_eq!((stats[0].failures, stats[0].active), (1, 0), "{stats:?}");
        assert_eq!((stats[1].connects, stats[1].active), (1, 1), "{stats:?}");
        assert_eq!(d.counters.backend_retries, 1);
        assert_eq!(d.counters.relays_backend_failed, 0);
        // The next connection goes straight to the live backend: the dead one cools down.
        assert_eq!(pool.pick(std::time::Instant::now(), 0), Some(1));
        assert_eq!(pool.pick(std::time::Instant::now(), 0), Some(1));
    }

    /// `n` workers sharing one flow index, fed as a NIC with `n` queues would: each frame on
    /// the queue its test chooses; hand-offs delivered to the owner's inbox at once.
    struct Queues {
        workers: Vec<Dispatch>,
        now: Instant,
    }

    impl Queues {
        fn new(n: usize) -> Self {
            Self::with(n, &[])
        }

        fn with(n: usize, extra: &[(u16, ListenerMode)]) -> Self {
            let flows = Arc::new(FlowIndex::new(1 << 16));
            Self { workers: (0..n).map(|w| dispatch_with(w, Arc::clone(&flows), extra)).collect(), now: T0 }
        }

        /// `f` arrives on queue `q`; returns the frames every worker sends in answer.
        fn arrive(&mut self, q: usize, f: &[u8]) -> Vec<Vec<u8>> {
            let mut buf = vec![0u8; 2048];
            buf[..f.len()].copy_from_slice(f);
            match self.workers[q].on_frame(self.now, &mut buf, f.len(), Source::Rx) {
                Verdict::HandOff(owner) => {
                    self.workers[q].counters.handoff_out += 1;
                    let mut copy = f.to_vec();
                    let v = self.workers[owner].on_frame(self.now, &mut copy, f.len(), Source::HandOff);
                    assert!(!matches!(v, Verdict::HandOff(_)), "a handed-over frame is never handed on");
                    self.workers[owner].counters.handoff_in += 1;
                }
                Verdict::Reply(n) => return vec![buf[..n].to_vec()],
                Verdict::Consumed => {}
            }
            self.now += Duration::from_micros(100);
            let now = self.now;
            self.workers.iter_mut().flat_map(|d| transmit(d, now)).collect()
        }

        fn handoffs(&self) -> u64 {
            self.workers.iter().map(|d| d.counters.handoff_out).sum()
        }
    }

    fn tcp_of(f: &[u8]) -> (Flags, u32, u32, Vec<u8>) {
        let s = parse_frame(f, Checksum::Verify).unwrap();
        (s.tcp.flags, s.tcp.seq_number, s.tcp.ack_number, s.tcp.payload.to_vec())
    }

    /// A client of the echo listener: handshake and data, each frame on the queue `queue`
    /// gives; returns the bytes echoed back, in order.
    fn echo_client(qs: &mut Queues, port: u16, chunks: &[(&[u8], usize)]) -> Vec<u8> {
        let first_q = chunks[0].1;
        let out = qs.arrive(first_q, &frame(Seg { src_port: port, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] }));
        let (flags, iss, _, _) = tcp_of(&out[0]);
        assert_eq!(flags, Flags::SYN | Flags::ACK);
        let (mut seq, ack) = (1001u32, iss.wrapping_add(1));
        let _ = qs.arrive(first_q, &frame(Seg { src_port: port, dst_port: 7, flags: Flags::ACK, seq, ack, payload: &[] }));
        let mut echoed = Vec::new();
        for (data, q) in chunks {
            let out = qs.arrive(*q, &frame(Seg { src_port: port, dst_port: 7, flags: Flags::ACK | Flags::PSH, seq, ack, payload: data }));
            seq = seq.wrapping_add(data.len() as u32);
            for f in out {
                let (_, _, _, payload) = tcp_of(&f);
                echoed.extend_from_slice(&payload);
            }
        }
        echoed
    }

    #[test]
    fn flows_that_stay_on_their_queue_are_never_handed_off() {
        let mut qs = Queues::new(8);
        for i in 0..400u16 {
            // A NIC hashes each flow to one queue; any spread will do, as long as it stays.
            let q = usize::from(i) * 5 % 8;
            let msg = format!("flow {i} says hello");
            let echoed = echo_client(&mut qs, 20_000 + i, &[(msg.as_bytes(), q), (b" and more", q)]);
            assert_eq!(echoed, [msg.as_bytes(), b" and more"].concat());
        }
        assert_eq!(qs.handoffs(), 0);
        for (w, d) in qs.workers.iter().enumerate() {
            assert_eq!(d.tcp().connection_count(), 50, "worker {w} owns the flows of its queue");
        }
    }

    #[test]
    fn a_flow_that_moves_to_another_queue_keeps_its_owner_and_every_byte_in_order() {
        let mut qs = Queues::new(8);
        let chunks: [(&[u8], usize); 4] = [(b"one ", 3), (b"two ", 5), (b"three ", 5), (b"four", 3)];
        let echoed = echo_client(&mut qs, 40_000, &chunks);
        assert_eq!(echoed, b"one two three four");
        assert_eq!(qs.workers[3].tcp().connection_count(), 1);
        assert_eq!(qs.workers[5].tcp().connection_count(), 0, "never owned twice");
        assert_eq!(qs.workers[5].counters.handoff_moved, 2);
        assert_eq!(qs.handoffs(), 2);
    }

    #[test]
    fn a_retransmitted_syn_on_another_queue_goes_to_the_first_owner() {
        let mut qs = Queues::new(2);
        let syn = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] });
        let first = qs.arrive(0, &syn);
        let again = qs.arrive(1, &syn);
        assert_eq!(tcp_of(&first[0]).1, tcp_of(&again[0]).1, "the same SYN-ACK, from the owner");
        assert_eq!(qs.workers[1].tcp().connection_count(), 0);
        assert_eq!(qs.workers[1].counters.handoff_moved, 1);
    }

    #[test]
    fn a_freed_flow_leaves_the_index_and_may_open_elsewhere() {
        let mut qs = Queues::new(2);
        let syn = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::SYN, seq: 1000, ack: 0, payload: &[] });
        let _ = qs.arrive(0, &syn);
        let rst = frame(Seg { src_port: 40_000, dst_port: 7, flags: Flags::RST, seq: 1001, ack: 0, payload: &[] });
        let _ = qs.arrive(0, &rst);
        assert_eq!(qs.workers[0].tcp().connection_count(), 0);
        assert!(qs.workers[0].flows.is_empty(), "a TCB freed in SYN-RECEIVED gives its flow back");
        let _ = qs.arrive(1, &syn);
        assert_eq!(qs.workers[1].tcp().connection_count(), 1, "the same 4-tuple opens on queue 1");
        assert_eq!(qs.handoffs(), 0);
    }

    /// sluice closed first (the backend's EOF), so its TCB waits in TIME-WAIT on worker 0; the
    /// client reuses the 4-tuple on queue 1: worker 1 opens it, and a frame of the new
    /// connection that lands on queue 0 ends the old TIME-WAIT there and goes to worker 1.
    #[test]
    fn a_4_tuple_in_time_wait_reopens_on_the_queue_of_its_new_syn() {
        use std::io::Write;
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(backend_addr) = backend.local_addr().unwrap() else { panic!() };
        let mut qs = Queues::with(2, &[(80, ListenerMode::Relay(backend_addr))]);
        let seg = |flags, seq, ack, payload| frame(Seg { src_port: 40_000, dst_port: 80, flags, seq, ack, payload });
        let out = qs.arrive(0, &seg(Flags::SYN, 1000, 0, &[]));
        let ack = tcp_of(&out[0]).1.wrapping_add(1);
        let _ = qs.arrive(0, &seg(Flags::ACK | Flags::PSH, 1001, ack, b"hi"));
        let (mut conn, _) = backend.accept().unwrap();
        conn.write_all(b"bye").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut fin = None;
        for i in 0..200 {
            let _ = backend_events(&mut qs.workers[0], Duration::from_millis(5), || Instant::from_millis(10 + i));
            let out = transmit(&mut qs.workers[0], Instant::from_millis(10 + i));
            fin = fin.or(out.iter().map(|f| tcp_of(f)).find(|t| t.0.fin()));
            if fin.is_some() {
                break;
            }
        }
        let (_, fin_seq, _, data) = fin.expect("sluice's FIN after the backend's EOF");
        let _ = qs.arrive(0, &seg(Flags::FIN | Flags::ACK, 1003, fin_seq.wrapping_add(data.len() as u32 + 1), &[]));
        let tw = qs.workers[0].tcp().handles().next().unwrap();
        assert_eq!(qs.workers[0].tcp().state(tw), Some(TcpState::TimeWait));
        assert!(qs.workers[0].flows.is_empty(), "a flow in TIME-WAIT is out of the index");

        let out = qs.arrive(1, &seg(Flags::SYN, 5000, 0, &[]));
        let (flags, iss, _, _) = tcp_of(&out[0]);
        assert_eq!(flags, Flags::SYN | Flags::ACK, "worker 1 opens the reused 4-tuple");
        let tuple = FourTuple { local: SocketAddrV4::new(PROXY, 80), remote: SocketAddrV4::new(CLIENT, 40_000) };
        assert_eq!(qs.workers[1].flows.owner(&tuple), Some(1));
        let _ = qs.arrive(0, &seg(Flags::ACK, 5001, iss.wrapping_add(1), &[]));
        assert_eq!(qs.workers[0].tcp().connection_count(), 0, "the old TIME-WAIT is gone");
        assert_eq!(qs.workers[1].tcp().active_count(), 1);
        assert_eq!(qs.workers[0].counters.handoff_moved, 1);
    }

    #[test]
    fn refusals_are_answered_where_they_land() {
        let mut qs = Queues::new(2);
        let f = frame(Seg { src_port: 40_000, dst_port: 443, flags: Flags::SYN, seq: 1, ack: 0, payload: &[] });
        assert!(is_rst(&qs.arrive(1, &f)));
        assert!(qs.workers[1].flows.is_empty());
    }
}
