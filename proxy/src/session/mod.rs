//! One proxied connection, whatever transport carries it: TLS termination and the relay to a
//! backend ([`relay`]), the choice of backend ([`backend`]: pools, routes, health), the PROXY v2
//! preamble ([`proxy_protocol`]), the connection limits ([`limits`]), the echo service
//! ([`echo`]) and how a session reports itself ([`report`]).
//!
//! [`Session`] joins them: a relay and its way through the listener's backends. A transport
//! opens one when a client connection is established, calls [`Session::pump`] on every event of
//! the client or the backend socket and at the deadline, and [`Session::close`] once it ended.
//! The client is any [`relay::Client`] (a connection on sluice's TCP stack, a kernel socket);
//! the backend is any [`relay::Backend`], opened by the transport's [`BackendLink`] and
//! entering and leaving its readiness set through it (a kernel socket in an epoll set in
//! sluice, an in-memory stream in the tests).

pub mod backend;
pub mod byte_queue;
pub mod echo;
pub mod fleet;
pub mod limits;
pub mod memory;
pub mod proxy_protocol;
pub mod relay;
pub mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_tcp::Instant;
use sluice_tls::rustls::ServerConfig;

use crate::observe::counters::QueueCounters;
use crate::observe::latency::Latencies;
use backend::{Lease, ListenerBackends, Pool};
use relay::{Backend, Client, Lookup, Relay};
use sluice_tls::SessionCache;

/// A TLS listener whose sessions a fleet shares (`[session_store]`, resumption by session ID):
/// its session cache, and whether it offers TLS 1.3.
#[derive(Debug, Clone)]
pub struct FleetListener {
    pub cache: Arc<SessionCache>,
    pub tls13: bool,
}

/// How a session asks the fleet's store for the session its client wants to resume: a
/// transport's [`fleet::Fleet`] and its name for the connection, or no fleet.
pub struct Lookups<'a> {
    pub fleet: Option<&'a mut fleet::Fleet>,
    pub conn: u64,
}

impl Lookups<'_> {
    /// No store: every handshake goes on at once.
    pub fn none() -> Self {
        Self { fleet: None, conn: 0 }
    }

    /// Starts `lookup`; returns until when the handshake waits (`None`: go on now).
    fn start(&mut self, now: Instant, cache: &Arc<SessionCache>, lookup: Lookup) -> Option<Instant> {
        self.fleet.as_deref_mut()?.start(now, self.conn, cache, lookup)
    }
}

/// How a transport opens backend streams and watches their readiness (its epoll set).
pub trait BackendLink {
    type Stream: Backend;
    /// Starts a non-blocking connect to `addr`.
    fn connect(&mut self, addr: SocketAddr) -> std::io::Result<Self::Stream>;
    /// Watch `backend` (a fresh connect) for this session.
    fn register(&mut self, backend: &Self::Stream) -> std::io::Result<()>;
    /// Stop watching `backend` (replaced, or the session ended).
    fn deregister(&mut self, backend: &Self::Stream);
}

/// When a transport looks for relays idle past `relay.idle_timeout_ms` (they end at their next
/// pump): once a second, so that an idle deadline costs nothing per connection and loop.
#[derive(Debug, Default)]
pub struct IdleSweep {
    next: Option<Instant>,
}

impl IdleSweep {
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether a sweep is due at `now` (then the next is a second away).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|n| now < n) {
            return false;
        }
        self.next = Some(now + Self::EVERY);
        true
    }

    /// What a worker's connections hold (`limits.memory`): `connections` TCBs at
    /// [`crate::config::CONNECTION_BYTES`] each for their state, `tcp_buffers` bytes in their TCP
    /// buffers (none on the kernel transport: the kernel holds those), and the relays' queues.
    pub fn memory_charge<'a, B: Backend + 'a>(
        connections: usize,
        tcp_buffers: usize,
        sessions: impl Iterator<Item = &'a Session<B>>,
    ) -> u64 {
        let queues: usize = sessions.map(|s| s.relay.storage()).sum();
        connections as u64 * crate::config::CONNECTION_BYTES + (tcp_buffers + queues) as u64
    }

    /// Whether `session` is idle past its timeout at `now`.
    pub fn expired<B: Backend>(session: &Session<B>, now: Instant) -> bool {
        session.relay.idle_deadline().is_some_and(|d| d <= now)
    }
}

/// One proxied connection: its relay and its way through the listener's backends.
#[derive(Debug)]
pub struct Session<B = std::net::TcpStream> {
    pub relay: Relay<B>,
    backends: Arc<ListenerBackends>,
    /// The pool, chosen by route once the handshake's SNI and ALPN are known.
    pool: Option<Arc<Pool>>,
    /// Backends of the pool tried so far (bit i: backend i).
    tried: u64,
    /// The claim on the backend being connected (counts as active in the pool).
    lease: Option<Lease>,
    /// The relay's backend stream is in the transport's readiness set.
    registered: bool,
    client: SocketAddr,
    listener: SocketAddr,
    /// The listener's cache, when a fleet's store shares its sessions.
    fleet: Option<Arc<SessionCache>>,
}

impl<B: Backend> Session<B> {
    /// A session for a client connection from `client` to `listener`, relaying to `backends`
    /// (with TLS when `tls` is given). Its backend is connected by the first [`Self::pump`].
    pub fn new(
        now: Instant,
        client: SocketAddr,
        listener: SocketAddr,
        backends: Arc<ListenerBackends>,
        tls: Option<Arc<ServerConfig>>,
        settings: &crate::config::Relay,
        fleet: Option<&FleetListener>,
    ) -> std::io::Result<Self> {
        let timeout = Duration::from_millis(settings.backend_connect_timeout_ms);
        let tls = tls.map(|c| (c, Duration::from_millis(settings.tls_handshake_timeout_ms)));
        let mut relay = Relay::new(now, timeout, settings.buffer, tls)?;
        relay.set_idle_timeout((settings.idle_timeout_ms > 0).then(|| Duration::from_millis(settings.idle_timeout_ms)));
        relay.set_tls_max_handshake_in(settings.tls_max_handshake_bytes);
        relay.peers = Some((client, listener));
        if let Some(f) = fleet {
            relay.gate_hello(f.tls13);
        }
        let fleet = fleet.map(|f| Arc::clone(&f.cache));
        Ok(Self { relay, backends, pool: None, tried: 0, lease: None, registered: false, client, listener, fleet })
    }

    /// Moves what can move, connects a backend when the relay needs one, and records what the
    /// relay learnt. A ClientHello asking for a session this process does not hold parks the
    /// handshake while `lookups` asks the fleet's store ([`Self::lookup_answered`] ends that).
    /// Returns whether the session ended (then [`Self::close`] it).
    pub fn pump(
        &mut self,
        client: &mut impl Client,
        now: Instant,
        link: &mut impl BackendLink<Stream = B>,
        counters: &mut QueueCounters,
        latencies: &mut Latencies,
        lookups: &mut Lookups<'_>,
    ) -> bool {
        self.relay.pump(client, now);
        if let Some(lookup) = self.relay.take_lookup() {
            match self.fleet.as_ref().and_then(|cache| lookups.start(now, cache, lookup)) {
                Some(deadline) => self.relay.park(deadline),
                None => {
                    self.relay.open_gate();
                    self.relay.pump(client, now);
                }
            }
        }
        if self.relay.needs_backend() {
            self.assign_backend(client, now, link, counters);
        }
        counters.relay_progress(&mut self.relay, latencies);
        self.relay.end.is_some()
    }

    /// Connects a relay that needs a backend: after a failed connect the failed backend cools
    /// down and the next untried one of the pool is connected (the client's bytes wait in the
    /// relay); once every backend of the pool was tried, the client is reset. With routes or a
    /// PROXY header, waits for the TLS handshake.
    fn assign_backend(
        &mut self,
        client: &mut impl Client,
        now: Instant,
        link: &mut impl BackendLink<Stream = B>,
        counters: &mut QueueCounters,
    ) {
        let r = &mut self.relay;
        if !r.needs_backend() || (self.backends.needs_handshake() && r.is_handshaking()) {
            return;
        }
        let wall = std::time::Instant::now();
        if let Some(lease) = self.lease.take() {
            // The connect to it failed before any byte went through.
            tracing::debug!(backend = ?lease.addr(), why = ?r.last_failure(), "backend connect failed");
            lease.failed(wall);
            counters.backend_retries += 1;
        }
        let info = r.tls_session().and_then(|s| s.handshake_info());
        let backends = &self.backends;
        let pool = Arc::clone(self.pool.get_or_insert_with(|| {
            let (sni, alpn) = (info.and_then(|i| i.sni.as_deref()), info.and_then(|i| i.alpn.as_deref()));
            Arc::clone(backends.route(sni, alpn))
        }));
        let preamble = if self.backends.proxy_protocol {
            let facts = r.tls_session().and_then(|s| {
                let chain = s.connection().peer_certificates();
                Some(proxy_protocol::TlsFacts::new(s.handshake_info()?, chain))
            });
            proxy_protocol::encode(self.client, self.listener, facts.as_ref())
        } else {
            Vec::new()
        };
        if let Some(old) = r.backend().filter(|_| self.registered) {
            link.deregister(old);
            self.registered = false;
        }
        loop {
            let Some(i) = pool.pick(wall, self.tried) else {
                r.give_up(client);
                return;
            };
            self.tried |= 1 << i;
            let lease = pool.lease(i);
            let Some(addr) = lease.addr() else { continue };
            let stream = match link.connect(addr) {
                Ok(stream) => stream,
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        // Out of descriptors: not the backend's fault, and no other backend helps.
                        counters.refused_descriptors += 1;
                        r.give_up(client);
                        return;
                    }
                    tracing::debug!(backend = %addr, "backend connect: {e}");
                    lease.failed(wall);
                    continue;
                }
            };
            r.start_connect(stream, now, preamble.clone());
            self.lease = Some(lease);
            break;
        }
        if let Some(b) = r.backend() {
            match link.register(b) {
                Ok(()) => self.registered = true,
                Err(e) => {
                    tracing::warn!("epoll add: {e}");
                    r.give_up(client);
                }
            }
        }
    }

    /// The fleet's store answered this session's lookup (the session, if any, is in the cache
    /// now): its handshake goes on at the next [`Self::pump`].
    pub fn lookup_answered(&mut self) {
        self.relay.open_gate();
    }

    /// The session is over: its backend stream leaves the readiness set and closes, its end is
    /// counted (and logged with `access_log`).
    pub fn close(
        self,
        link: &mut impl BackendLink<Stream = B>,
        counters: &mut QueueCounters,
        access_log: bool,
        now: Instant,
    ) {
        if let Some(b) = self.relay.backend().filter(|_| self.registered) {
            link.deregister(b);
        }
        counters.relay_ended(&self.relay, access_log, now);
    }
}

#[cfg(test)]
mod tests;
