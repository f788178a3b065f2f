//! [`Dispatch`], the socket-free half of a worker: the loop hands it each frame with the time,
//! and it decides what the frame gets and what to send; the AF_XDP socket, the inbox and the
//! clock stay with the loop.
//!
//! This file holds its state and construction, what the loop exchanges with it ([`Source`],
//! [`Verdict`], the epoll tokens) and what the loop asks of it between frames. The fields the
//! loop and the tests read are `pub(super)`. The methods are split by concern, each file adding
//! `Dispatch` methods:
//! - `frames`: a frame in: parsed, its flow's owner found in the flow index (claimed by a new
//!   SYN, handed off when another worker owns it), then refused in place with a RST or given to
//!   the TCP stack; and a frame out: the stack's next segment;
//! - `next_hop`: where a frame out goes (the kernel's routes and neighbours), and the segments
//!   held while the kernel resolves a next hop;
//! - `sessions`: after input: the stack's timers and events, served by the echo and relay
//!   sessions, with their backend sockets and deadlines;
//! - `control`: the main thread's orders: reload, drain, abort.

mod control;
mod frames;
pub(super) mod next_hop;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags};
use sluice_tcp::{ConnectionHandle, Endpoint, Instant, RateLimiter};
use sluice_wire::Checksum;
use sluice_wire::ethernet::Address as MacAddress;

use crate::config::ListenerMode;
use crate::datapath::Services;
use crate::datapath::xdp::flows::FlowIndex;
use crate::datapath::xdp::nexthop::Table;
use crate::observe::counters::QueueCounters;
use crate::session::Session;
use crate::session::backend::ListenerBackends;
use crate::session::echo::Echo;
use crate::session::limits::{ConnCounts, Slot};

/// Where a frame comes from: this worker's RX ring, or another worker's hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Rx,
    /// Received, carrying the XDP program's mark: the kernel validated its SYN cookie.
    RxCookie,
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

/// The socket-free half of a worker.
pub struct Dispatch {
    worker: usize,
    /// Which worker owns each flow (see [`crate::datapath::xdp::flows`]), shared by all workers.
    pub(super) flows: Arc<FlowIndex>,
    listeners: HashMap<SocketAddr, ListenerMode>,
    /// Listeners a reload removed: no new connections, but their open ones are still served.
    retired: HashSet<SocketAddr>,
    /// Draining: no listener accepts any more.
    pub(super) draining: bool,
    limits: crate::config::Limits,
    pub(super) conn_counts: Arc<ConnCounts>,
    /// Connections admitted under the limits, with their claim.
    admitted: HashMap<ConnectionHandle, Slot>,
    access_log: bool,
    checksum: Checksum,
    pub(super) tcp: Endpoint,
    echo: HashMap<ConnectionHandle, Echo>,
    /// The kernel's routes and neighbours: where frames out go (`next_hop`).
    nexthop: Table,
    waiting: next_hop::Waiting,
    local_mac: MacAddress,
    pub(super) sessions: HashMap<ConnectionHandle, Session>,
    backends: HashMap<SocketAddr, Arc<ListenerBackends>>,
    /// epoll token of a relay's backend socket -> its connection.
    pub(super) relay_tokens: HashMap<u64, ConnectionHandle>,
    relay_token_of: HashMap<ConnectionHandle, u64>,
    next_token: u64,
    /// Relays with a deadline (backend connect, TLS handshake), checked each `process`.
    deadlines: Vec<ConnectionHandle>,
    idle_sweep: crate::session::IdleSweep,
    pub(super) relay_settings: crate::config::Relay,
    /// TLS termination per listener address.
    tls: HashMap<SocketAddr, Arc<sluice_tls::rustls::ServerConfig>>,
    /// The worker's readiness set: its AF_XDP socket, its inbox and every backend socket.
    pub epoll: Epoll,
    /// How long the loop polls empty rings before it sleeps (`datapath.busy_poll_us`).
    pub busy_poll: Duration,
    /// Most relays open at once (each holds a backend socket): this worker's share of the
    /// descriptors ([`crate::session::limits::connections_per_worker`]).
    pub max_relays: usize,
    /// RSTs left this second for refused segments.
    refusals: RateLimiter,
    pub counters: QueueCounters,
    /// The netlink socket was readable when the loop last waited.
    pub netlink_ready: bool,
    /// The fleet's session store, if any.
    pub fleet: crate::session::fleet::WorkerFleet,
    pub latencies: crate::observe::latency::Latencies,
}

/// sluice's side of the link: its interface's MAC address (the source of every frame sent) and
/// the kernel's routes and neighbours there (where frames go).
pub struct Link {
    pub mac: MacAddress,
    pub next_hops: Table,
}

/// RSTs a worker sends per second to refused segments (a refusing listener, a limit).
pub const REFUSAL_RSTS_PER_SECOND: u32 = 1000;

/// epoll tokens of the worker's own descriptors; backend sockets get tokens below these.
pub const TOKEN_XSK: u64 = u64::MAX;
pub const TOKEN_INBOX: u64 = u64::MAX - 1;
pub const TOKEN_NETLINK: u64 = u64::MAX - 2;

impl Dispatch {
    pub fn new(
        worker: usize,
        flows: Arc<FlowIndex>,
        services: Services,
        conn_counts: Arc<ConnCounts>,
        verify_checksums: bool,
        mut tcp: Endpoint,
        link: Link,
    ) -> std::io::Result<Self> {
        let Link { mac: local_mac, next_hops: nexthop } = link;
        let Services { listeners, tls, relay: relay_settings, limits, access_log, backends, fleet, fleet_listeners } =
            services;
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
            nexthop,
            waiting: Default::default(),
            local_mac,
            sessions: HashMap::new(),
            backends,
            relay_tokens: HashMap::new(),
            relay_token_of: HashMap::new(),
            next_token: 0,
            deadlines: Vec::new(),
            idle_sweep: Default::default(),
            relay_settings,
            tls,
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            busy_poll: Duration::ZERO,
            max_relays: usize::MAX,
            refusals: RateLimiter::new(REFUSAL_RSTS_PER_SECOND, Instant::ZERO),
            counters: QueueCounters { queue: worker as u32, ..Default::default() },
            netlink_ready: false,
            fleet: crate::session::fleet::WorkerFleet::new(worker, fleet, fleet_listeners),
            latencies: Default::default(),
        })
    }

    /// The earliest of the TCP stack's timers and the relays' connect deadlines.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connects = self.deadlines.iter().filter_map(|h| self.sessions.get(h)?.relay.deadline());
        self.tcp.poll_timeout().into_iter().chain(connects).chain(self.fleet.poll_timeout()).min()
    }

    pub fn has_relays(&self) -> bool {
        !self.sessions.is_empty()
    }

    pub fn tcp(&self) -> &Endpoint {
        &self.tcp
    }
}
