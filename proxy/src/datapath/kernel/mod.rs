//! The kernel transport (`[datapath] transport = "kernel"`): sluice's TLS termination, session
//! cache, relay and statistics on Linux's own TCP stack instead of XDP, AF_XDP and sluice's stack.
//!
//! What it is: the fair baseline for sluice's bypass (only the TCP stack differs: the same
//! [`Relay`], the same rustls configuration and shared session cache, the same counters and
//! histograms in `/stats.json`), and the fallback for hosts without AF_XDP. No XDP program is
//! attached and no interface is needed.
//!
//! How: `datapath.workers` threads (default: one per CPU), pinned to cores in turn like the XDP
//! workers. Each worker owns an epoll set and, per listener address, its own listening socket
//! with `SO_REUSEPORT`, so the kernel spreads incoming connections over the workers by a hash of
//! the 4-tuple and no connection ever moves between threads. Client and backend sockets are
//! non-blocking and edge-triggered; a connection's readiness is kept in flags that operations
//! clear when they would block, as the relay's backend side does.
//!
//! - A relay listener's connection is a [`Relay`] whose client side is a [`KernelClient`].
//! - An echo listener's connection echoes every byte (bounded, with back-pressure).
//! - A refusing listener is not listened on: the kernel answers a SYN with a RST, as the XDP
//!   datapath does (RFC 9293 3.10.7.1); these RSTs are the kernel's, so `rst_sent` stays 0.
//!
//! When sluice closes its sending side of a client connection (relay done, TLS alert, TLS
//! handshake timeout), the socket stays open for up to [`DRAIN`] reading and discarding what the
//! client still sends until its FIN: closing a socket with unread bytes makes Linux send a RST
//! that can overtake the alert or the last bytes. Reset connections are closed at once.
//!
//! What it is not: sluice's TCP stack, so the kernel's TCP settings apply (sysctls), not the
//! `[tcp]` section; and the TCP handshake cannot be seen from user space on a kernel socket (the
//! kernel completes it before `accept`), so the `tcp_handshake` histogram stays empty. There is no
//! idle timeout on kernel connections.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use sluice_tcp::{Instant, StreamError};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{Config, ListenerMode};
use crate::datapath::EpollSlot;
use crate::session::Session;
use crate::session::backend::ListenerBackends;
use crate::session::echo::Echo;
use crate::session::limits::{ConnCounts, Slot};
use crate::session::relay::Client;
use crate::datapath::{Control, Services, Transport};
use crate::observe::counters::QueueCounters;
use crate::observe::stats::SharedCounters;
use crossbeam_channel::Receiver;

/// Listen backlog of every listening socket (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;
/// Longest wait in epoll: how soon a stop request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often the counters are published while there is work.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How soon to publish again when the admin endpoint held the counters' lock.
const RETRY_PUBLISH: Duration = Duration::from_millis(10);
/// How long a connection whose sending side sluice closed waits for the client's FIN.
pub const DRAIN: Duration = Duration::from_secs(5);
/// How long a worker stops accepting after `accept` failed for want of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections accepted per readiness event of a listener before other sockets get a turn.
const ACCEPT_BATCH: usize = 64;

/// The client side of a relay on a non-blocking kernel socket. Readiness is edge-triggered:
/// `readable`/`writable` are set by epoll events and cleared when an operation would block.
#[derive(Debug)]
pub struct KernelClient {
    stream: TcpStream,
    pub readable: bool,
    pub writable: bool,
    /// The connection was reset or failed: nothing moves any more.
    pub gone: bool,
    /// The client's FIN was read.
    eof: bool,
    write_shut: bool,
    /// SO_LINGER 0 is set: closing the socket sends a RST.
    aborted: bool,
}

impl KernelClient {
    /// Takes a connected socket (made non-blocking here); both readiness flags start set, so
    /// the first operations find out what the socket has.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, readable: true, writable: true, gone: false, eof: false, write_shut: false, aborted: false })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sets the readiness flags from an epoll event; an error marks the connection gone.
    fn on_event(&mut self, flags: EpollFlags) {
        if flags.contains(EpollFlags::EPOLLERR) {
            self.gone = true;
        }
        let hup = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | hup) {
            self.readable = true;
        }
        if flags.intersects(EpollFlags::EPOLLOUT | hup) {
            self.writable = true;
        }
    }
}

impl Client for KernelClient {
    /// `Ok(0)` when nothing is there now (would block), `Err(Finished)` once the client's FIN
    /// was read, `Err(InvalidHandle)` after a reset or a socket error.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        if self.eof {
            return Err(StreamError::Finished);
        }
        if self.gone {
            return Err(StreamError::InvalidHandle);
        }
        if !self.readable || buf.is_empty() {
            return Ok(0);
        }
        loop {
            return match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    Err(StreamError::Finished)
                }
                Ok(n) => Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    Ok(0)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    Err(StreamError::InvalidHandle)
                }
            };
        }
    }

    /// How many bytes the socket's send buffer took (0 when full); an error once the sending
    /// side is closed or the connection is gone.
    fn send(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if self.gone || self.aborted {
            return Err(StreamError::InvalidHandle);
        }
        if self.write_shut {
            return Err(StreamError::Closed);
        }
        if !self.writable || data.is_empty() {
            return Ok(0);
        }
        loop {
            return match self.stream.write(data) {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.writable = false;
                    Ok(0)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.gone = true;
                    Err(StreamError::InvalidHandle)
                }
            };
        }
    }

    /// `shutdown(Write)`: the kernel sends a FIN after what was written.
    fn close(&mut self) {
        if !self.write_shut {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.write_shut = true;
        }
    }

    /// SO_LINGER 0: the worker closes the socket next, which sends a RST.
    fn abort(&mut self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        self.aborted = true;
    }
}

/// One accepted connection.
#[derive(Debug)]
enum Conn {
    Echo { client: KernelClient, echo: Echo },
    Relay { client: KernelClient, session: Box<Session> },
    /// Sluice closed its sending side: read and discard until the client's FIN or `until`.
    Draining { client: KernelClient, until: Instant },
}

impl Conn {
    fn deadline(&self) -> Option<Instant> {
        match self {
            Conn::Echo { .. } => None,
            Conn::Relay { session, .. } => session.relay.deadline(),
            Conn::Draining { until, .. } => Some(*until),
        }
    }
}

/// epoll tokens: a connection `id` has `id << 1` for its client socket and `id << 1 | 1` for
/// its backend socket; listener `i` has `LISTENER_TOKEN - i`.
const LISTENER_TOKEN: u64 = u64::MAX;

/// Opens a non-blocking listening socket on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`):
/// every worker opens its own on the same address and the kernel spreads connections over them.
pub fn listen(addr: SocketAddrV4, backlog: i32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// One kernel-transport worker: its epoll set, its listening sockets and its connections.
pub struct Worker {
    epoll: Epoll,
    listeners: Vec<(TcpListener, SocketAddrV4, ListenerMode)>,
    tls: HashMap<SocketAddrV4, Arc<sluice_tls::rustls::ServerConfig>>,
    relay_settings: crate::config::Relay,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// Connections that may have a deadline (backend connect, TLS handshake, drain).
    deadlines: Vec<u64>,
    relays_open: u64,
    access_log: bool,
    /// The backend pools of relay listeners (shared by all workers).
    backends: HashMap<SocketAddrV4, Arc<ListenerBackends>>,
    limits: crate::config::Limits,
    conn_counts: Arc<ConnCounts>,
    /// Connections admitted under the limits, with their claim.
    admitted: HashMap<u64, Slot>,
    backlog: i32,
    /// Draining: every listening socket is closed (the kernel answers SYNs), open connections
    /// finish.
    draining: bool,
    /// Out of descriptors (or at `max_conns`): the listeners are out of the epoll set until
    /// then, so the level-triggered readiness of a full backlog cannot spin the worker.
    accept_paused_until: Option<Instant>,
    /// Most connections open at once: this worker's share of the descriptors (two each).
    pub max_conns: usize,
    pub counters: QueueCounters,
    pub latencies: crate::observe::latency::Latencies,
}

impl Worker {
    /// Worker `index`: opens its listening sockets (refusing listeners get none). Errors name
    /// the listener address.
    pub fn new(index: usize, services: Services, conn_counts: Arc<ConnCounts>, backlog: i32) -> Result<Self> {
        let Services { listeners, tls, relay: relay_settings, limits, access_log, backends } = services;
        let backends = crate::session::backend::with_single_backends(&listeners, backends);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
        let mut w = Self {
            epoll,
            listeners: Vec::new(),
            tls,
            relay_settings,
            conns: HashMap::new(),
            next_id: 0,
            deadlines: Vec::new(),
            relays_open: 0,
            access_log,
            backends,
            limits,
            conn_counts,
            admitted: HashMap::new(),
            backlog,
            draining: false,
            accept_paused_until: None,
            max_conns: usize::MAX,
            counters: QueueCounters { queue: index as u32, ..Default::default() },
            latencies: Default::default(),
        };
        w.set_listeners(&listeners)?;
        Ok(w)
    }

    /// Listens on the accepting listeners of `listeners` (keeping the sockets of those it
    /// already has, closing those no longer wanted; their accepted connections live on).
    fn set_listeners(&mut self, listeners: &HashMap<SocketAddrV4, ListenerMode>) -> Result<()> {
        let mut wanted: Vec<_> = listeners.iter().filter(|(_, m)| **m != ListenerMode::Refuse).collect();
        wanted.sort_by_key(|(a, _)| (*a.ip(), a.port()));
        let mut old: HashMap<_, _> = self.listeners.drain(..).map(|(s, a, _)| (a, s)).collect();
        for s in old.values() {
            let _ = self.epoll.delete(s);
        }
        for (i, (addr, mode)) in wanted.into_iter().enumerate() {
            let socket = match old.remove(addr) {
                Some(s) => s,
                None => listen(*addr, self.backlog).with_context(|| format!("listening on {addr}"))?,
            };
            if self.accept_paused_until.is_none() {
                self.epoll
                    .add(&socket, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN - i as u64))
                    .with_context(|| format!("epoll add of listener {addr}"))?;
            }
            self.listeners.push((socket, *addr, *mode));
        }
        Ok(())
    }

    /// An order from the main thread (see [`crate::datapath::xdp::worker::Control`]). There are no flows to
    /// name: the kernel owns them.
    fn control(&mut self, c: Control, now: Instant) {
        match c {
            Control::Reload(services, done) => {
                let Services { listeners, tls, relay, limits, access_log, backends } = services;
                if !self.draining
                    && let Err(e) = self.set_listeners(&listeners)
                {
                    tracing::error!(queue = self.counters.queue, "reload: {e:#}");
                }
                self.backends = crate::session::backend::with_single_backends(&listeners, backends);
                (self.tls, self.relay_settings, self.limits, self.access_log) = (tls, relay, limits, access_log);
                let _ = done.send(Vec::new());
            }
            Control::Drain(done) => {
                self.draining = true;
                for (s, _, _) in self.listeners.drain(..) {
                    let _ = self.epoll.delete(&s);
                }
                if let Some(done) = done {
                    let _ = done.send(Vec::new());
                }
            }
            Control::Abort => {
                let ids: Vec<u64> = self.conns.keys().copied().collect();
                for id in ids {
                    match self.conns.get_mut(&id) {
                        Some(Conn::Relay { client, session }) => {
                            session.relay.client_gone();
                            client.abort();
                        }
                        Some(Conn::Echo { client, .. }) => client.abort(),
                        Some(Conn::Draining { client, .. }) => client.abort(),
                        None => {}
                    }
                    self.finish(id, now);
                }
            }
        }
    }

    /// Takes the listeners out of the epoll set for [`ACCEPT_BACKOFF`].
    fn pause_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_none() {
            for (s, _, _) in &self.listeners {
                let _ = self.epoll.delete(s);
            }
        }
        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
    }

    /// Puts the listeners back once the back-off is over.
    fn resume_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for (i, (s, addr, _)) in self.listeners.iter().enumerate() {
                if let Err(e) = self.epoll.add(s, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN - i as u64)) {
                    tracing::warn!(%addr, "epoll add of listener: {e}");
                }
            }
        }
    }

    /// Waits up to `timeout` for readiness and handles it, then the deadlines that passed.
    /// Returns how many events and deadlines there were.
    pub fn poll(&mut self, timeout: Duration, now: impl Fn() -> Instant) -> usize {
        let mut events = [EpollEvent::empty(); 128];
        let n = self.epoll.wait(&mut events, crate::datapath::xdp::worker::epoll_timeout(timeout)).unwrap_or(0);
        let t = now();
        for e in &events[..n] {
            let token = e.data();
            let listener = LISTENER_TOKEN - token;
            if (listener as usize) < self.listeners.len() {
                self.accept(listener as usize, t);
            } else {
                self.on_event(token >> 1, token & 1 == 1, e.events(), t);
            }
        }
        n + self.run_deadlines(t)
    }

    /// The earliest deadline of any connection, or the end of an accept back-off.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.deadlines.iter().filter_map(|id| self.conns.get(id)?.deadline());
        conns.chain(self.accept_paused_until).min()
    }

    fn accept(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= self.max_conns {
                // The connections wait in the backlog until a place frees.
                self.counters.refused_descriptors += 1;
                return self.pause_accepting(now);
            }
            let (listener, local, mode) = &self.listeners[i];
            let (local, mode) = (*local, *mode);
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ...: the connection waits in the backlog; try
                    // again a little later instead of spinning on a readable listener.
                    tracing::debug!(%local, "accept: {e}");
                    self.counters.accept_backoffs += 1;
                    return self.pause_accepting(now);
                }
            };
            self.counters.connections_established += 1;
            let peer = match stream.peer_addr() {
                Ok(std::net::SocketAddr::V4(peer)) => peer,
                _ => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            };
            let slot = if self.limits == Default::default() {
                None
            } else {
                match self.conn_counts.admit(&self.limits, self.admitted.len() as u64, *peer.ip()) {
                    Ok(slot) => Some(slot),
                    Err(why) => {
                        // Refused: closed with a RST, counted as on the XDP transport.
                        self.counters.count_refusal(why);
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        self.counters.connections_closed += 1;
                        continue;
                    }
                }
            };
            let client = match KernelClient::new(stream) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("accepted socket: {e}");
                    self.counters.connections_closed += 1;
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            if let Some(slot) = slot {
                self.admitted.insert(id, slot);
            }
            let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
            if let Err(e) = self.epoll.add(client.stream(), EpollEvent::new(interest, id << 1)) {
                tracing::warn!("epoll add: {e}");
                self.counters.connections_closed += 1;
                continue;
            }
            match mode {
                ListenerMode::Relay(_) => self.open_session(id, client, peer, local, now),
                ListenerMode::Echo | ListenerMode::Refuse => {
                    let echo = Echo::new(self.relay_settings.buffer);
                    self.conns.insert(id, Conn::Echo { client, echo });
                }
            }
            self.step(id, now);
        }
    }

    /// A session for an accepted connection; its backend is connected by its first step.
    fn open_session(&mut self, id: u64, mut client: KernelClient, peer: SocketAddrV4, local: SocketAddrV4, now: Instant) {
        let tls = self.tls.get(&local).cloned();
        let session = self
            .backends
            .get(&local)
            .cloned()
            .map(|backends| Session::new(now, peer, local, backends, tls, &self.relay_settings));
        let Some(Ok(session)) = session else {
            self.counters.relays_backend_failed += 1;
            client.abort();
            if let Some(slot) = self.admitted.remove(&id) {
                self.conn_counts.release(slot);
            }
            self.close_client(client);
            return;
        };
        self.counters.relays_opened += 1;
        self.relays_open += 1;
        self.deadlines.push(id);
        self.conns.insert(id, Conn::Relay { client, session: Box::new(session) });
    }

    fn on_event(&mut self, id: u64, backend: bool, flags: EpollFlags, now: Instant) {
        match self.conns.get_mut(&id) {
            Some(Conn::Relay { session, .. }) if backend => {
                session.relay.on_backend_ready(crate::datapath::backend_readiness(flags));
            }
            Some(Conn::Echo { client, .. } | Conn::Relay { client, .. } | Conn::Draining { client, .. })
                if !backend =>
            {
                client.on_event(flags)
            }
            _ => return, // a socket closed earlier in this batch
        }
        self.step(id, now);
    }

    /// Moves what can move on connection `id`; finishes it when it is done.
    fn step(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let done = match conn {
            Conn::Echo { client, echo } => echo.pump(client, &mut self.counters.echo_bytes),
            Conn::Relay { client, session } => {
                let mut readiness = EpollSlot { epoll: &self.epoll, token: id << 1 | 1 };
                session.pump(client, now, &mut readiness, &mut self.counters, &mut self.latencies);
                if client.gone {
                    session.relay.client_gone();
                }
                session.relay.end.is_some()
            }
            Conn::Draining { client, until } => drain(client) || now >= *until,
        };
        if done {
            self.finish(id, now);
        }
    }

    /// Connection `id` is done: count how it ended and close it, or let it drain.
    fn finish(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.remove(&id) else { return };
        if let Some(slot) = self.admitted.remove(&id) {
            self.conn_counts.release(slot);
        }
        match conn {
            Conn::Echo { client, .. } | Conn::Draining { client, .. } => self.close_client(client),
            Conn::Relay { client, session } => {
                self.relays_open -= 1;
                // Closes the backend socket (a RST where the relay armed SO_LINGER 0).
                session.close(&mut EpollSlot { epoll: &self.epoll, token: id << 1 | 1 }, &mut self.counters, self.access_log, now);
                if client.aborted || client.gone || client.eof {
                    self.close_client(client);
                } else {
                    self.conns.insert(id, Conn::Draining { client, until: now + DRAIN });
                    self.deadlines.push(id);
                    self.step(id, now);
                }
            }
        }
    }

    fn close_client(&mut self, client: KernelClient) {
        let _ = self.epoll.delete(client.stream());
        self.counters.connections_closed += 1;
        drop(client);
    }

    /// Steps the connections whose deadline passed; forgets those without one. Returns how many
    /// were due.
    fn run_deadlines(&mut self, now: Instant) -> usize {
        self.resume_accepting(now);
        let mut due = Vec::new();
        self.deadlines.retain(|id| match self.conns.get(id).and_then(Conn::deadline) {
            Some(d) => {
                if d <= now {
                    due.push(*id);
                }
                true
            }
            None => false,
        });
        let n = due.len();
        for id in due {
            self.step(id, now);
        }
        n
    }

    /// Counts and latencies as the admin endpoint shows them. The one place that publishes:
    /// returns whether `shared` was free to take them.
    pub fn publish(&mut self, shared: &SharedCounters) -> bool {
        self.counters.connections_open = self.conns.len() as u64;
        self.counters.connections_active = self.conns.len() as u64;
        self.counters.draining = u64::from(self.draining);
        self.counters.relays_open = self.relays_open;
        let handed = shared.send_interval(&mut self.latencies) || self.latencies.is_empty();
        shared.publish(&self.counters, &sluice_tcp::Stats::default());
        handed
    }

    /// Runs until `stop` is set: looks for work without sleeping, and when there is none
    /// publishes what changed and sleeps in epoll (at most [`IDLE_POLL`], less when a deadline is
    /// due). While busy it publishes every [`PUBLISH_EVERY`], so the stats are current whenever
    /// the worker sleeps and at most that old while it works.
    pub fn run(
        mut self,
        shared: SharedCounters,
        control: Receiver<Control>,
        clock: std::time::Instant,
        stop: Arc<AtomicBool>,
    ) {
        let now = || Instant::from_micros(clock.elapsed().as_micros() as u64);
        let mut last_publish = now();
        let mut dirty = true;
        while !stop.load(Ordering::Relaxed) {
            // Orders wait at most one idle poll (250 ms).
            while let Ok(c) = control.try_recv() {
                self.control(c, now());
                dirty = true;
            }
            let busy = self.poll(Duration::ZERO, now) > 0;
            dirty |= busy;
            let t = now();
            if dirty && (!busy || t.saturating_duration_since(last_publish) >= PUBLISH_EVERY) {
                dirty = !self.publish(&shared);
                last_publish = t;
            }
            if !busy {
                let mut wake = t + if dirty { RETRY_PUBLISH } else { IDLE_POLL };
                if let Some(d) = self.poll_timeout() {
                    wake = wake.min(d);
                }
                self.counters.idle_sleeps += 1;
                dirty |= self.poll(wake.saturating_duration_since(t), now) > 0;
            }
        }
        self.publish(&shared);
        shared.finish(&mut self.latencies);
    }
}

/// Reads and discards what a draining client still sends; whether it is done (FIN or gone).
fn drain(client: &mut KernelClient) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match client.recv(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
}


/// Fails if something already listens on one of `config`'s listener addresses that is not in
/// `mine`: SO_REUSEPORT would let the workers join another process's listeners on the same
/// address (same user) and share its connections.
pub fn probe_listeners(config: &Config, mine: &[SocketAddrV4]) -> Result<()> {
    for l in config.listeners.iter().filter(|l| l.mode() != ListenerMode::Refuse) {
        let addr = l.socket_addr();
        if mine.contains(&addr) {
            continue;
        }
        let probe = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&SockAddr::from(addr)).with_context(|| format!("listener {addr}: cannot bind (in use?)"))?;
    }
    Ok(())
}

/// The kernel transport: opens every worker's listening
/// sockets (so a port taken elsewhere fails the start) and prepares a worker per CPU (or
/// `datapath.workers`) serving `services`.
pub fn prepare(config: &Config, services: &Services) -> Result<Transport> {
    let n = config
        .datapath
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    probe_listeners(config, &[])?;
    // Each connection holds two descriptors: the client's socket and the backend's.
    let max_conns = crate::session::limits::descriptor_budget(n, 2);
    let (orders, controls) = crate::datapath::control_channels(n)?;
    let conn_counts = Arc::new(ConnCounts::default());
    let mut workers: Vec<Box<dyn FnOnce(crate::datapath::Worker) + Send>> = Vec::new();
    for (i, (control, _wake)) in orders.into_iter().enumerate() {
        let mut w = Worker::new(i, services.clone(), Arc::clone(&conn_counts), LISTEN_BACKLOG).with_context(|| format!("kernel worker {i}"))?;
        w.max_conns = max_conns;
        workers.push(Box::new(move |ctx: crate::datapath::Worker| w.run(ctx.shared, control, ctx.clock, ctx.stop)));
    }
    for l in &config.listeners {
        match l.mode() {
            ListenerMode::Refuse => tracing::info!(addr = %l.socket_addr(), "refusing (not listened on: the kernel resets)"),
            _ => tracing::info!(addr = %l.socket_addr(), workers = n, "listening (kernel transport, SO_REUSEPORT)"),
        }
    }
    // Listeners bound, keys read: the rest needs only CAP_NET_BIND_SERVICE (kept for a listener
    // below 1024 that a future reload adds).
    Ok(Transport { name: "k", workers, controls, attached: None, keep: &[caps::Capability::CAP_NET_BIND_SERVICE] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::counters::Published;
    use sha2::{Digest, Sha256};
    use std::path::{Path, PathBuf};
    use std::thread::JoinHandle;

    /// A port free on 127.0.0.1 just now (every worker then binds it with SO_REUSEPORT).
    fn free_port() -> u16 {
        free_ports::<1>()[0]
    }

    /// `N` different ports free on 127.0.0.1 just now.
    fn free_ports<const N: usize>() -> [u16; N] {
        let held: Vec<_> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        std::array::from_fn(|i| held[i].local_addr().unwrap().port())
    }

    /// A fresh directory for a test's files, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn scratch_dir(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kt-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Kernel-transport workers serving `listeners` (TOML) on loopback, in this process.
    struct Running {
        shared: Vec<SharedCounters>,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Running {
        fn start(workers: usize, listeners: &str, dir: &Path) -> Self {
            let text = format!("[datapath]\ntransport = \"kernel\"\nworkers = {workers}\n\n{listeners}");
            let config = Config::parse(Path::new("test.toml"), &text).unwrap();
            let caches = Default::default();
            let services = crate::run::services(&config, dir, &caches).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let clock = std::time::Instant::now();
            let (mut shared, mut threads) = (Vec::new(), Vec::new());
            for i in 0..workers {
                let worker = Worker::new(i, services.clone(), Arc::default(), 128).unwrap();
                let counters = SharedCounters::default();
                shared.push(Arc::clone(&counters));
                let stop = Arc::clone(&stop);
                threads.push(std::thread::spawn(move || worker.run(counters, crossbeam_channel::never(), clock, stop)));
            }
            Self { shared, stop, threads }
        }

        /// Waits (up to 10 s) until the workers published `n` connections, none open.
        fn wait_closed(&self, n: u64) {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let p: Vec<Published> = self.shared.iter().map(|s| s.snapshot()).collect();
                if total(&p, |c| c.connections_closed) == n && total(&p, |c| c.connections_open) == 0 {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "not closed: {p:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Stops the workers (each publishes once more) and returns what they published and
        /// every latency they handed over.
        fn stop(self) -> (Vec<Published>, crate::observe::latency::Latencies) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads {
                t.join().unwrap();
            }
            let mut l = crate::observe::latency::Latencies::default();
            for s in &self.shared {
                while let Some(i) = s.take_interval() {
                    l.merge(&i);
                }
            }
            (self.shared.iter().map(|s| s.snapshot()).collect(), l)
        }
    }

    fn total(p: &[Published], f: impl Fn(&QueueCounters) -> u64) -> u64 {
        p.iter().map(|p| f(&p.queue)).sum()
    }

    /// An echo server on 127.0.0.1 (one thread per connection; half-close passed through).
    fn echo_backend() -> SocketAddrV4 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else { unreachable!() };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    /// Sends `len` pseudo-random bytes to `addr`, reads the echo concurrently, half-closes;
    /// returns the sha256 of what went and what came back.
    fn echo_stream(addr: SocketAddrV4, len: usize) -> ([u8; 32], [u8; 32]) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let read = std::thread::spawn(move || {
            let (mut h, mut buf) = (Sha256::new(), vec![0u8; 1 << 16]);
            loop {
                match reader.read(&mut buf).unwrap() {
                    0 => return <[u8; 32]>::from(h.finalize()),
                    n => h.update(&buf[..n]),
                }
            }
        });
        let (mut h, mut rng, mut sent) = (Sha256::new(), 0x5eed_u64, 0);
        let mut chunk = vec![0u8; 1 << 16];
        while sent < len {
            let n = chunk.len().min(len - sent);
            for b in chunk[..n].chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
            }
            s.write_all(&chunk[..n]).unwrap();
            h.update(&chunk[..n]);
            sent += n;
        }
        s.shutdown(Shutdown::Write).unwrap();
        (h.finalize().into(), read.join().unwrap())
    }

    #[test]
    fn kernel_client_would_block_eof_close_and_abort() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut c = KernelClient::new(listener.accept().unwrap().0).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf), Ok(0), "nothing there: would block");
        assert!(!c.readable);
        assert_eq!(c.recv(&mut buf), Ok(0), "not readable: not even tried");
        peer.write_all(b"hello").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.readable = true;
        assert_eq!(c.recv(&mut buf), Ok(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(c.recv(&mut buf), Err(StreamError::Finished));
        assert_eq!(c.recv(&mut buf), Err(StreamError::Finished), "and again");
        assert_eq!(c.send(b"bye"), Ok(3));
        c.close();
        assert_eq!(c.send(b"more"), Err(StreamError::Closed));
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye", "FIN after the bytes");

        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut c = KernelClient::new(listener.accept().unwrap().0).unwrap();
        c.abort();
        drop(c);
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let e = peer.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "abort resets");
    }

    #[test]
    fn echo_spreads_over_workers_with_reuseport() {
        let port = free_port();
        let listeners = format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\necho = true\n");
        let running = Running::start(2, &listeners, &scratch_dir("echo"));
        let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let mut bytes = 0;
        for i in 0..32 {
            let len = 1000 + i * 997;
            let (sent, back) = echo_stream(addr, len);
            assert_eq!(sent, back, "connection {i}");
            bytes += len as u64;
        }
        let (p, _) = running.stop();
        assert_eq!(total(&p, |c| c.connections_established), 32);
        assert_eq!(total(&p, |c| c.connections_closed), 32);
        assert_eq!(total(&p, |c| c.connections_open), 0);
        assert_eq!(total(&p, |c| c.echo_bytes), bytes);
        for (i, w) in p.iter().enumerate() {
            assert_eq!(w.queue.queue, i as u32);
            // 32 connections hashed over 2 sockets: all on one has odds 2^-31.
            assert!(w.queue.connections_established > 0, "worker {i} accepted nothing: {p:?}");
            assert!(w.queue.idle_sleeps > 0);
        }
    }

    #[test]
    fn plain_relay_moves_bytes_intact_refuses_and_resets() {
        let backend = echo_backend();
        let [closed, relay, refuse, dead] = free_ports(); // nothing listens on `closed`
        let listeners = format!(
            "[[listener]]\naddress = \"127.0.0.1:{relay}\"\nbackend = \"{backend}\"\n\n\
             [[listener]]\naddress = \"127.0.0.1:{refuse}\"\nrefuse = true\n\n\
             [[listener]]\naddress = \"127.0.0.1:{dead}\"\nbackend = \"127.0.0.1:{closed}\"\n"
        );
        let running = Running::start(2, &listeners, &scratch_dir("relay"));
        let ip = std::net::Ipv4Addr::LOCALHOST;
        const LEN: usize = 8 << 20;
        let (sent, back) = echo_stream(SocketAddrV4::new(ip, relay), LEN);
        assert_eq!(sent, back, "sha256 differs");
        // A refusing listener is not listened on: the kernel answers the SYN with a RST.
        let e = TcpStream::connect(SocketAddrV4::new(ip, refuse)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        // A backend that refuses: the client is reset. (Nothing is written first: a write that
        // meets the RST would take the error, and the read after it would see an EOF.)
        let mut s = TcpStream::connect(SocketAddrV4::new(ip, dead)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let e = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        let (p, l) = running.stop();
        assert_eq!(total(&p, |c| c.relays_opened), 2);
        assert_eq!(total(&p, |c| c.relays_clean), 1);
        assert_eq!(total(&p, |c| c.relays_backend_failed), 1);
        assert_eq!(total(&p, |c| c.relays_open), 0);
        assert_eq!(total(&p, |c| c.connections_open), 0);
        assert_eq!(total(&p, |c| c.relay_bytes_to_backend), LEN as u64);
        assert_eq!(total(&p, |c| c.relay_bytes_to_client), LEN as u64);
        assert_eq!((l.backend_connect.len(), l.first_backend_byte.len()), (1, 1));
        assert_eq!(l.tcp_handshake.len(), 0, "not visible on kernel sockets");
    }

    #[test]
    fn tls_relay_full_then_resumed_and_garbage_gets_an_alert() {
        use sluice_tls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
        use sluice_tls::testcerts::{Ca, KeyKind};
        let dir = scratch_dir("tls");
        let ca = Ca::new().unwrap();
        let leaf = ca.server(&["a.test"], KeyKind::EcdsaP256).unwrap();
        std::fs::write(dir.join("a.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("a.key"), &leaf.key_pem).unwrap();
        let backend = echo_backend();
        let port = free_port();
        let listeners = format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n\
             [listener.tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}]\n"
        );
        let running = Running::start(2, &listeners, &dir);
        let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let mut kinds = Vec::new();
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let mut config = ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.resumption = rustls::client::Resumption::in_memory_sessions(8);
            let config = Arc::new(config);
            for _ in 0..2 {
                let tcp = TcpStream::connect(addr).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = ClientConnection::new(config.clone(), "a.test".try_into().unwrap()).unwrap();
                let mut tls = StreamOwned::new(conn, tcp);
                tls.write_all(b"ping through TLS").unwrap();
                tls.conn.send_close_notify();
                tls.flush().unwrap();
                let mut back = Vec::new();
                tls.read_to_end(&mut back).unwrap(); // the backend's EOF arrives as close_notify
                assert_eq!(back, b"ping through TLS");
                kinds.push(tls.conn.handshake_kind());
            }
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(kinds, [Some(Full), Some(Resumed), Some(Full), Some(Resumed)]);
        // Plain HTTP instead of a ClientHello: an alert record (type 21), then the FIN.
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(answer.first(), Some(&21), "{answer:02x?}");
        drop(s);
        // The draining connections see the clients' FINs and close.
        running.wait_closed(5);
        let (p, l) = running.stop();
        assert_eq!(total(&p, |c| c.tls_handshakes_full), 2);
        assert_eq!(total(&p, |c| c.tls_handshakes_resumed), 2);
        assert_eq!(total(&p, |c| c.tls_failed), 1);
        assert_eq!(total(&p, |c| c.relays_clean), 4);
        assert_eq!(total(&p, |c| c.connections_open), 0);
        let counts = [l.tls12_full.len(), l.tls12_resumed.len(), l.tls13_full.len(), l.tls13_resumed.len()];
        assert_eq!(counts, [1, 1, 1, 1]);
    }

    #[test]
    fn hundred_concurrent_relays_over_two_workers() {
        let backend = echo_backend();
        let port = free_port();
        let listeners = format!("[[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n");
        let running = Running::start(2, &listeners, &scratch_dir("many"));
        let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let clients: Vec<_> = (0..100).map(|i| std::thread::spawn(move || echo_stream(addr, 100_000 + i * 1013))).collect();
        for (i, c) in clients.into_iter().enumerate() {
            let (sent, back) = c.join().unwrap();
            assert_eq!(sent, back, "connection {i}");
        }
        let (p, _) = running.stop();
        assert_eq!(total(&p, |c| c.relays_clean), 100);
        assert_eq!(total(&p, |c| c.connections_open), 0);
        let bytes: u64 = (0..100).map(|i| 100_000 + i * 1013).sum();
        assert_eq!(total(&p, |c| c.relay_bytes_to_client), bytes);
    }

    #[test]
    fn stalled_tls_handshake_is_closed_after_the_timeout() {
        let dir = scratch_dir("stall");
        let ca = sluice_tls::testcerts::Ca::new().unwrap();
        let leaf = ca.server(&["a.test"], sluice_tls::testcerts::KeyKind::EcdsaP256).unwrap();
        std::fs::write(dir.join("a.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("a.key"), &leaf.key_pem).unwrap();
        let backend = echo_backend();
        let port = free_port();
        let listeners = format!(
            "[relay]\ntls_handshake_timeout_ms = 300\n\n\
             [[listener]]\naddress = \"127.0.0.1:{port}\"\nbackend = \"{backend}\"\n\
             [listener.tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}]\n"
        );
        let running = Running::start(1, &listeners, &dir);
        let mut s = TcpStream::connect(SocketAddrV4::new([127, 0, 0, 1].into(), port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A TLS record header promising a 512-byte handshake message, then nothing.
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed without an answer: {rest:02x?}");
        drop(s);
        running.wait_closed(1);
        let (p, _) = running.stop();
        assert_eq!(total(&p, |c| c.tls_handshake_timeouts), 1);
        assert_eq!(total(&p, |c| c.relays_open), 0);
    }
}
