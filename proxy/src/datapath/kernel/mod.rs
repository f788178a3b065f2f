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
//!
//! The files, by concern (everything public is re-exported here); this one keeps how the
//! transport starts ([`prepare`]) and a worker's state ([`Worker`], its connections):
//! - `listen`: the listening sockets ([`listen()`] with `SO_REUSEPORT`, [`probe_listeners`]),
//!   the listeners a worker has, and accepting: in batches, admitted under the limits, with a
//!   back-off when descriptors run out;
//! - `conn`: one accepted connection's life: its readiness events, stepping its echo or relay,
//!   the deadline scan, and closing or draining it ([`DRAIN`]);
//! - `client`: [`KernelClient`], the relay's client side on a non-blocking kernel socket;
//! - `event_loop`: the worker's loop ([`Worker::run`]): polling the epoll set, orders from the
//!   main thread, publishing the counters.

mod client;
mod conn;
mod event_loop;
mod listen;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context, Result};
use nix::sys::epoll::{Epoll, EpollCreateFlags};
use sluice_tcp::Instant;

use crate::config::{Config, ListenerMode};
use crate::datapath::{Services, Transport};
use crate::observe::counters::QueueCounters;
use crate::session::Session;
use crate::session::backend::ListenerBackends;
use crate::session::echo::Echo;
use crate::session::limits::{ConnCounts, Slot};

pub use client::KernelClient;
pub use conn::DRAIN;
pub use listen::{LISTEN_BACKLOG, listen, probe_listeners};

/// One accepted connection.
#[derive(Debug)]
enum Conn {
    Echo {
        client: KernelClient,
        echo: Echo,
    },
    Relay {
        client: KernelClient,
        session: Box<Session>,
    },
    /// Sluice closed its sending side: read and discard until the client's FIN or `until`.
    Draining {
        client: KernelClient,
        until: Instant,
    },
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

/// One kernel-transport worker: its epoll set, its listening sockets and its connections.
pub struct Worker {
    epoll: Epoll,
    listeners: Vec<(TcpListener, SocketAddr, ListenerMode)>,
    tls: HashMap<SocketAddr, Arc<sluice_tls::rustls::ServerConfig>>,
    relay_settings: crate::config::Relay,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// Connections that may have a deadline (backend connect, TLS handshake, drain).
    deadlines: Vec<u64>,
    idle_sweep: crate::session::IdleSweep,
    relays_open: u64,
    access_log: bool,
    /// The backend pools of relay listeners (shared by all workers).
    backends: HashMap<SocketAddr, Arc<ListenerBackends>>,
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
    /// The next pause of the listeners (doubles while accepting keeps failing).
    accept_backoff: std::time::Duration,
    /// Most connections open at once: this worker's share of the descriptors (two each).
    pub max_conns: usize,
    /// `TCP_USER_TIMEOUT` of every client socket (`tcp.user_timeout_ms`): data the client leaves
    /// unacknowledged this long (a zero window included) makes Linux reset the connection.
    pub user_timeout: Option<std::time::Duration>,
    /// The fleet's session store, if any.
    fleet: crate::session::fleet::WorkerFleet,
    pub counters: QueueCounters,
    pub latencies: crate::observe::latency::Latencies,
}

impl Worker {
    /// Worker `index`: opens its listening sockets (refusing listeners get none). Errors name
    /// the listener address.
    pub fn new(index: usize, services: Services, conn_counts: Arc<ConnCounts>, backlog: i32) -> Result<Self> {
        let Services { listeners, tls, relay: relay_settings, limits, access_log, backends, fleet, fleet_listeners } =
            services;
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
            accept_backoff: listen::ACCEPT_BACKOFF_MIN,
            idle_sweep: Default::default(),
            max_conns: usize::MAX,
            user_timeout: None,
            fleet: crate::session::fleet::WorkerFleet::new(index, fleet, fleet_listeners),
            counters: QueueCounters { queue: index as u32, ..Default::default() },
            latencies: Default::default(),
        };
        w.set_listeners(&listeners)?;
        Ok(w)
    }
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
        let mut w = Worker::new(i, services.clone(), Arc::clone(&conn_counts), LISTEN_BACKLOG)
            .with_context(|| format!("kernel worker {i}"))?;
        w.max_conns = max_conns;
        w.user_timeout =
            (config.tcp.user_timeout_ms > 0).then(|| std::time::Duration::from_millis(config.tcp.user_timeout_ms));
        workers.push(Box::new(move |ctx: crate::datapath::Worker| w.run(ctx.shared, control, ctx.clock, ctx.stop)));
    }
    for l in &config.listeners {
        match l.mode() {
            ListenerMode::Refuse => {
                tracing::info!(addr = %l.address, "refusing (not listened on: the kernel resets)")
            }
            _ => tracing::info!(addr = %l.address, workers = n, "listening (kernel transport, SO_REUSEPORT)"),
        }
    }
    // Listeners bound, keys read: the rest needs only CAP_NET_BIND_SERVICE (kept for a listener
    // below 1024 that a future reload adds).
    Ok(Transport { name: "k", workers, controls, attached: None, keep: &[caps::Capability::CAP_NET_BIND_SERVICE] })
}
