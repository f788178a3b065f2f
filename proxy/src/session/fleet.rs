//! Sessions shared by a fleet of sluices through Redis (`[session_store]`, issue 14): the
//! worker's side.
//!
//! Two levels: the process's [`SessionCache`] first, then the store. Every session rustls stores
//! is copied to the store behind the worker's back ([`WriteQueue`], the cache's
//! [`WriteBehind`]: a bounded queue, a full one drops the write, counted), sealed with the
//! first key of `key_file` under a store key that is a keyed hash of the session ID, with the
//! session lifetime as its expiry. A handshake whose ClientHello asks for a session this process
//! does not hold is parked (the relay's hello gate) while [`Fleet`] asks the store, on
//! non-blocking sockets in the worker's own epoll set; the answer goes into the cache and the
//! handshake goes on, resumed from memory. A TLS 1.3 session is single use in the whole fleet:
//! its lookup is a `GETDEL`, made even when this process holds the session (the store says
//! whether another process used it first; it is removed here too when the store no longer has
//! it), and falls back to the local copy only when the store cannot answer.
//!
//! Never stall: a lookup waits at most `timeout_ms` (then a full handshake); a node that is down
//! or whose queue is full answers a miss at once; the store's garbage, its silence and its
//! absence cost full handshakes, never failed ones; memory is bounded by the write queue and by
//! each node's requests in flight and waiting. Nodes reconnect with back-off
//! ([`sluice_store::Link`]). Sessions spread over the nodes by rendezvous hashing.
//!
//! What it is not: the protocol (`sluice_store`: RESP, sealing, the ClientHello reader), nor
//! the relay (it only parks and releases handshakes through [`crate::session::Session::pump`]).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use serde::Serialize;
use sluice_store::{Backoff, ClientConfig, KeySet, Link, Reply, RequestError, Token};
use sluice_tcp::Instant;
use sluice_tls::{SessionCache, WriteBehind};
use zeroize::Zeroizing;

use super::relay::{Backend, Lookup, connect_kernel};
use crate::observe::latency::Latencies;

/// Writes waiting for a worker to send them, over the whole process.
pub const WRITE_QUEUE: usize = 4096;
/// Writes a worker takes from the queue per loop.
const WRITES_PER_POLL: usize = 256;
/// Reconnect back-off.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A node's connect must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// epoll tokens of the store's sockets: `FLEET_TOKEN + node` (below every listener token, above
/// every connection's).
pub const FLEET_TOKEN: u64 = 1 << 62;
/// Tokens of writes: nobody waits for their completion.
const WRITE_TOKEN: u64 = 1 << 63;

/// The `[session_store]` settings as the workers use them, made once per (re)load.
#[derive(Debug)]
pub struct FleetSettings {
    /// Each node's name (for the rendezvous), address and client settings.
    pub nodes: Vec<(String, SocketAddr, ClientConfig)>,
    pub prefix: Vec<u8>,
    pub timeout: Duration,
    pub keys: KeySet,
    /// The process's write queue (the same across reloads).
    pub writes: Arc<WriteQueue>,
}

impl FleetSettings {
    /// The settings of `config`, its nodes resolved now (a name that does not resolve is an
    /// error: workers never resolve), `key_file`'s content given.
    pub fn new(
        config: &sluice_store::SessionStoreConfig,
        key_file: &[u8],
        writes: Arc<WriteQueue>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let urls = config.validate()?;
        let text = std::str::from_utf8(key_file).context("session_store.key_file: not text")?;
        let keys = KeySet::parse(text).context("session_store.key_file")?;
        let mut nodes = Vec::new();
        for url in &urls {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&(url.host.as_str(), url.port))
                .ok()
                .and_then(|mut a| a.next())
                .with_context(|| format!("session_store.url: {} does not resolve", url.node_name()))?;
            nodes.push((url.node_name(), addr, config.client_config(url)));
        }
        Ok(Self {
            nodes,
            prefix: config.prefix.as_bytes().to_vec(),
            timeout: Duration::from_millis(config.timeout_ms),
            keys,
            writes,
        })
    }
}

/// One session to copy to the store.
struct SessionWrite {
    id: Vec<u8>,
    value: Zeroizing<Vec<u8>>,
    lifetime_secs: u64,
}

/// The process's bounded queue of sessions to copy to the store: the session caches put into
/// it ([`WriteBehind`], on the worker thread inside rustls), every worker's [`Fleet`] takes from
/// it. Full: the write is dropped and counted.
pub struct WriteQueue {
    tx: Sender<SessionWrite>,
    rx: Receiver<SessionWrite>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteQueue").field("queued", &self.rx.len()).finish()
    }
}

impl WriteQueue {
    pub fn new(capacity: usize) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        Arc::new(Self { tx, rx, dropped: AtomicU64::new(0) })
    }
}

impl WriteBehind for WriteQueue {
    fn put(&self, key: &[u8], value: &[u8], lifetime_secs: u64) {
        let w = SessionWrite { id: key.to_vec(), value: Zeroizing::new(value.to_vec()), lifetime_secs };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(w) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the store did for one worker (in `/stats.json` and `/metrics` under these names, among
/// the worker's other counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetCounters {
    /// Handshakes parked for a store lookup.
    pub session_store_lookups: u64,
    /// Lookups answered with a session that opened (put into the cache, then resumed from it).
    pub session_store_hits: u64,
    /// Lookups the store answered with nothing.
    pub session_store_misses: u64,
    /// Lookups not answered within `timeout_ms` (the handshake went on without).
    pub session_store_timeouts: u64,
    /// Lookups the store could not take or answer: no node up, a full queue, a broken
    /// connection, an error reply.
    pub session_store_errors: u64,
    /// Values that did not open (altered, truncated, sealed under a key not in `key_file`).
    pub session_store_open_failed: u64,
    /// Sessions sent to the store, and those dropped (the write queue full, the node down or
    /// its queue full).
    pub session_store_writes: u64,
    pub session_store_writes_dropped: u64,
    /// Connections to a node that failed or broke.
    pub session_store_connection_failures: u64,
    /// Lookups in flight now.
    pub session_store_lookups_now: u64,
    /// Nodes this worker is connected to now.
    pub session_store_nodes_up_now: u64,
}

/// One store node's connection.
struct Node {
    link: Link,
    addr: SocketAddr,
    socket: Option<TcpStream>,
    readable: bool,
    writable: bool,
}

/// A parked handshake's lookup.
struct Pending {
    conn: u64,
    id: Vec<u8>,
    single_use: bool,
    cache: Arc<SessionCache>,
    /// The store key asked now, and those of older keys still to try (a key rotation).
    store_key: Vec<u8>,
    older: Vec<Vec<u8>>,
    started: Instant,
}

/// A worker's side of the store: its node connections, its parked lookups. Connections are
/// named by the transport's `u64` (a kernel connection id, an XDP relay token), never reused.
pub struct Fleet {
    settings: Arc<FleetSettings>,
    nodes: Vec<Node>,
    rendezvous: sluice_store::Rendezvous,
    pending: HashMap<u64, Pending>,
    next_token: u64,
    /// The worker's clock origin: `sluice_tcp::Instant` is microseconds since it.
    origin: std::time::Instant,
    pub counters: FleetCounters,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("nodes", &self.nodes.len()).field("pending", &self.pending.len()).finish()
    }
}

impl Fleet {
    /// A worker's fleet on `settings`; `origin` is the worker's clock origin. Nodes connect at
    /// the first [`Self::poll`].
    pub fn new(settings: Arc<FleetSettings>, origin: std::time::Instant, worker: usize) -> Self {
        let nodes = settings
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (_, addr, config))| Node {
                link: Link::new(
                    config.clone(),
                    Backoff::new(BACKOFF_MIN, BACKOFF_MAX, (worker as u64) << 32 | i as u64),
                    CONNECT_TIMEOUT,
                ),
                addr: *addr,
                socket: None,
                readable: false,
                writable: false,
            })
            .collect();
        let rendezvous = sluice_store::Rendezvous::new(settings.nodes.iter().map(|(name, _, _)| name.as_str()));
        Self {
            settings,
            nodes,
            rendezvous,
            pending: HashMap::new(),
            next_token: 0,
            origin,
            counters: FleetCounters::default(),
        }
    }

    fn wall(&self, now: Instant) -> std::time::Instant {
        self.origin + Duration::from_micros(now.as_micros())
    }

    /// Starts the lookup of `lookup` for connection `conn` whose listener keeps its sessions
    /// in `cache`. Returns until when the handshake waits, or `None`: go on now (a reusable
    /// session held here, or a store that cannot take the lookup).
    pub fn start(&mut self, now: Instant, conn: u64, cache: &Arc<SessionCache>, lookup: Lookup) -> Option<Instant> {
        if !lookup.single_use && cache.contains(&lookup.id) {
            return None;
        }
        let s = Arc::clone(&self.settings);
        let mut keys = s.keys.store_keys(&s.prefix, &lookup.id);
        let store_key = keys.next()?;
        let older = keys.collect();
        let token = self.next_token;
        self.next_token = (self.next_token + 1) % WRITE_TOKEN;
        self.counters.session_store_lookups += 1;
        // Sessions still queued go first: on one node's connection a GETDEL then follows the
        // SET of a session made a moment ago (a client that resumes at once), instead of
        // finding nothing and costing the client its session.
        self.send_writes(self.wall(now));
        if !self.ask(now, token, &store_key, lookup.single_use) {
            self.counters.session_store_errors += 1;
            return None;
        }
        let p = Pending {
            conn,
            id: lookup.id,
            single_use: lookup.single_use,
            cache: Arc::clone(cache),
            store_key,
            older,
            started: now,
        };
        self.pending.insert(token, p);
        Some(now + s.timeout)
    }

    /// Sends a GET (GETDEL when `single_use`) of `store_key` to its node; false when no node
    /// can take it.
    fn ask(&mut self, now: Instant, token: u64, store_key: &[u8], single_use: bool) -> bool {
        let Some(i) = self.rendezvous.pick(store_key) else { return false };
        let wall = self.wall(now);
        let client = self.nodes[i].link.client();
        let asked = if single_use {
            client.getdel(wall, Token(token), store_key)
        } else {
            client.get(wall, Token(token), store_key)
        };
        asked.is_ok()
    }

    /// A node's socket is ready (`token` is `FLEET_TOKEN + node`).
    pub fn on_event(&mut self, token: u64, flags: EpollFlags) {
        let Some(node) = token.checked_sub(FLEET_TOKEN).and_then(|i| self.nodes.get_mut(i as usize)) else { return };
        let (readable, writable) = crate::datapath::backend_readiness(flags);
        node.readable |= readable;
        node.writable |= writable;
    }

    /// Whether `token` names one of the store's sockets.
    pub fn owns(token: u64) -> bool {
        (FLEET_TOKEN..FLEET_TOKEN + 1024).contains(&token)
    }

    /// Moves everything that can move: connects, reads answers, sends the queued writes and
    /// requests, runs timers. Returns the connections whose lookup is answered (their answer
    /// is in the cache, or there is none): open their gate and pump them. Lookup latencies go to
    /// `latencies`.
    pub fn poll(&mut self, epoll: &Epoll, now: Instant, latencies: &mut Latencies) -> Vec<u64> {
        let wall = self.wall(now);
        for i in 0..self.nodes.len() {
            self.connect(epoll, i, wall);
        }
        self.send_writes(wall);
        let mut answered = Vec::new();
        for i in 0..self.nodes.len() {
            self.io(epoll, i, wall);
            let up = self.nodes[i].link.is_up();
            self.rendezvous.set_up(i, up);
            while let Some(c) = self.nodes[i].link.client().poll_completion() {
                if let Some(conn) = self.completed(now, c, latencies) {
                    answered.push(conn);
                }
            }
            // Requests a completion just added (an older key's store key).
            self.io(epoll, i, wall);
        }
        self.counters.session_store_writes_dropped += self.settings.writes.dropped.swap(0, Ordering::Relaxed);
        self.counters.session_store_lookups_now = self.pending.len() as u64;
        self.counters.session_store_nodes_up_now = self.nodes_up() as u64;
        answered
    }

    /// Nodes this worker is connected to.
    fn nodes_up(&self) -> usize {
        self.nodes.iter().filter(|n| n.link.is_up()).count()
    }

    /// Starts node `i`'s connect when its link asks for one.
    fn connect(&mut self, epoll: &Epoll, i: usize, wall: std::time::Instant) {
        let node = &mut self.nodes[i];
        if !node.link.poll_connect(wall) {
            return;
        }
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        match connect_kernel(node.addr) {
            Ok(s) if epoll.add(&s, EpollEvent::new(interest, FLEET_TOKEN + i as u64)).is_ok() => {
                (node.readable, node.writable) = (false, false);
                node.socket = Some(s);
            }
            Ok(_) | Err(_) => {
                node.link.on_closed(wall);
                self.counters.session_store_connection_failures += 1;
            }
        }
    }

    /// Node `i`'s socket: the connect's end, reading, writing, timers. Any failure closes it
    /// (its requests fail; the link backs off).
    fn io(&mut self, epoll: &Epoll, i: usize, wall: std::time::Instant) {
        let node = &mut self.nodes[i];
        let mut broken = false;
        if node.link.poll_timeout().is_some_and(|t| t <= wall) && node.link.handle_timeout(wall).is_err() {
            broken = true;
        }
        if let (Some(s), false) = (&node.socket, broken) {
            if matches!(node.link.state(), sluice_store::LinkState::Connecting(_)) && node.writable {
                match s.finish_connect() {
                    Ok(()) => node.link.on_connected(wall),
                    Err(_) => broken = true,
                }
            }
            if node.link.is_up() {
                broken |= Self::read(node, wall).is_err() || Self::write(node).is_err();
            }
        }
        if broken {
            if let Some(s) = node.socket.take() {
                let _ = epoll.delete(&s);
                if node.link.is_up() || matches!(node.link.state(), sluice_store::LinkState::Connecting(_)) {
                    node.link.on_closed(wall);
                }
            }
            self.counters.session_store_connection_failures += 1;
        }
    }

    fn read(node: &mut Node, wall: std::time::Instant) -> Result<(), ()> {
        let Some(s) = node.socket.as_mut() else { return Ok(()) };
        let mut buf = [0u8; 16 * 1024];
        while node.readable {
            match s.read(&mut buf) {
                Ok(0) => {
                    node.link.on_closed(wall);
                    return Err(());
                }
                Ok(n) => node.link.handle_input(wall, &buf[..n]).map_err(|_| ())?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => node.readable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    node.link.on_closed(wall);
                    return Err(());
                }
            }
        }
        Ok(())
    }

    fn write(node: &mut Node) -> Result<(), ()> {
        let Some(s) = node.socket.as_mut() else { return Ok(()) };
        while node.writable {
            let out = node.link.client().pending_output();
            if out.is_empty() {
                break;
            }
            match s.write(out) {
                Ok(n) => node.link.client().advance_output(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => node.writable = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Takes queued sessions and sends them sealed, as `SET key value PX lifetime`. A worker
    /// connected to no node takes none: they wait for a worker that is (or, when none is, fill
    /// the queue, where they are dropped and counted).
    fn send_writes(&mut self, wall: std::time::Instant) {
        if self.nodes_up() == 0 {
            return;
        }
        let s = Arc::clone(&self.settings);
        for w in s.writes.rx.try_iter().take(WRITES_PER_POLL) {
            let store_key = s.keys.store_key(&s.prefix, &w.id);
            let sent = self.rendezvous.pick(&store_key).is_some_and(|i| {
                let sealed = s.keys.seal(&store_key, &w.value);
                let px = w.lifetime_secs.saturating_mul(1000).max(1);
                self.nodes[i].link.client().set(wall, Token(WRITE_TOKEN), &store_key, &sealed, px).is_ok()
            });
            if sent {
                self.counters.session_store_writes += 1;
            } else {
                self.counters.session_store_writes_dropped += 1;
            }
        }
    }

    /// A request finished: a write's result is only counted; a lookup's answer goes into the
    /// cache. Returns the connection to release.
    fn completed(&mut self, now: Instant, c: sluice_store::Completion, latencies: &mut Latencies) -> Option<u64> {
        if c.token.0 == WRITE_TOKEN {
            if c.result.is_err() {
                self.counters.session_store_writes_dropped += 1;
            }
            return None;
        }
        let mut p = self.pending.remove(&c.token.0)?;
        let c = match c.result {
            Ok(Reply::Nil) if !p.older.is_empty() => {
                // Not under the sealing key: maybe under an older one (a rotation).
                p.store_key = p.older.remove(0);
                if self.ask(now, c.token.0, &p.store_key.clone(), p.single_use) {
                    self.pending.insert(c.token.0, p);
                    return None;
                }
                Ok(Reply::Nil)
            }
            other => other,
        };
        crate::observe::latency::record(&mut latencies.session_store_lookup, now.saturating_duration_since(p.started));
        match c {
            Ok(Reply::Value(sealed)) => match self.settings.keys.open(&p.store_key, &sealed) {
                Ok(value) => {
                    self.counters.session_store_hits += 1;
                    p.cache.insert_fetched(p.id, value);
                }
                Err(e) => {
                    tracing::debug!("session store: a value that does not open: {e}");
                    self.counters.session_store_open_failed += 1;
                    if p.single_use {
                        p.cache.remove(&p.id);
                    }
                }
            },
            Ok(Reply::Nil) => {
                self.counters.session_store_misses += 1;
                if p.single_use {
                    // Used elsewhere (or never stored): not here either.
                    p.cache.remove(&p.id);
                }
            }
            Err(RequestError::TimedOut) => self.counters.session_store_timeouts += 1,
            Ok(Reply::Stored) | Err(_) => self.counters.session_store_errors += 1,
        }
        Some(p.conn)
    }

    /// When [`Self::poll`] next has something to do (a request's or a connect's timeout, a
    /// back-off's end).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wall = self.nodes.iter().filter_map(|n| n.link.poll_timeout()).min()?;
        Some(Instant::from_micros(wall.saturating_duration_since(self.origin).as_micros() as u64))
    }

    /// Writes are waiting in the process's queue and this worker can send them (then it does
    /// not sleep; a worker connected to no node leaves them and sleeps).
    pub fn has_writes(&self) -> bool {
        !self.settings.writes.rx.is_empty() && self.nodes_up() > 0
    }

    /// The fleet is replaced (a reload): its sockets leave `epoll`; returns the connections
    /// still parked (open their gates: they go on as full handshakes).
    pub fn close(mut self, epoll: &Epoll) -> Vec<u64> {
        for n in &mut self.nodes {
            if let Some(s) = n.socket.take() {
                let _ = epoll.delete(&s);
            }
        }
        self.pending.drain().map(|(_, p)| p.conn).collect()
    }
}

/// A worker's fleet across reloads, as both transports keep it: the settings and listeners the
/// last (re)load gave, and the [`Fleet`] running on them once the worker's clock is known.
#[derive(Debug, Default)]
pub struct WorkerFleet {
    fleet: Option<Fleet>,
    settings: Option<Arc<FleetSettings>>,
    /// TLS listeners whose sessions the fleet shares.
    listeners: HashMap<SocketAddr, super::FleetListener>,
    origin: Option<std::time::Instant>,
    worker: usize,
    /// Connections whose lookups a replaced fleet had: released at the next [`Self::poll`].
    released: Vec<u64>,
}

impl WorkerFleet {
    /// Worker `worker`'s fleet on `settings` (none: no store), not running before [`Self::start`].
    pub fn new(
        worker: usize,
        settings: Option<Arc<FleetSettings>>,
        listeners: HashMap<SocketAddr, super::FleetListener>,
    ) -> Self {
        Self { fleet: None, settings, listeners, origin: None, worker, released: Vec::new() }
    }

    /// Runs on the worker's clock (`origin`: where its `now` counts from).
    pub fn start(&mut self, origin: std::time::Instant) {
        self.origin = Some(origin);
        self.fleet = self.settings.clone().map(|s| Fleet::new(s, origin, self.worker));
    }

    /// A reload: new settings make a new fleet (the old one's sockets leave `epoll`); the
    /// handshakes parked on the old one go on (as full ones) at the next [`Self::poll`].
    pub fn reload(
        &mut self,
        epoll: &Epoll,
        settings: Option<Arc<FleetSettings>>,
        listeners: HashMap<SocketAddr, super::FleetListener>,
    ) {
        self.listeners = listeners;
        self.settings = settings;
        if let Some(old) = self.fleet.take() {
            self.released.extend(old.close(epoll));
        }
        if let Some(origin) = self.origin {
            self.start(origin);
        }
    }

    /// What a session on `listener` shares with the fleet, if anything.
    pub fn listener(&self, listener: SocketAddr) -> Option<&super::FleetListener> {
        self.fleet.as_ref().and(self.listeners.get(&listener))
    }

    /// How connection `conn`'s session asks the store.
    pub fn lookups(&mut self, conn: u64) -> super::Lookups<'_> {
        super::Lookups { fleet: self.fleet.as_mut(), conn }
    }

    /// A store socket's readiness (`token`: [`Fleet::owns`]).
    pub fn on_event(&mut self, token: u64, flags: EpollFlags) {
        if let Some(f) = &mut self.fleet {
            f.on_event(token, flags);
        }
    }

    /// [`Fleet::poll`], and the handshakes a reload released; nothing without a store.
    pub fn poll(&mut self, epoll: &Epoll, now: Instant, latencies: &mut Latencies) -> Vec<u64> {
        let mut answered = std::mem::take(&mut self.released);
        if let Some(f) = &mut self.fleet {
            answered.extend(f.poll(epoll, now, latencies));
        }
        answered
    }

    /// [`Fleet::poll_timeout`], or at once when writes wait in the queue or a reload released
    /// handshakes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.released.is_empty() {
            return Some(Instant::ZERO);
        }
        let f = self.fleet.as_ref()?;
        if f.has_writes() { Some(Instant::ZERO) } else { f.poll_timeout() }
    }

    /// The store's counters into the worker's.
    pub fn publish(&self, counters: &mut crate::observe::counters::QueueCounters) {
        if let Some(f) = &self.fleet {
            counters.session_store = f.counters;
        }
    }
}
