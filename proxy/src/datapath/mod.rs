//! The transports that carry sessions: [`xdp`] (the XDP program steers listener traffic into
//! AF_XDP sockets; a worker per queue runs sluice's TCP stack) and [`kernel`] (SO_REUSEPORT
//! kernel sockets). Each moves bytes and readiness; what a connection does is
//! [`crate::session`]'s, and starting, reloading and draining is [`crate::run`]'s.
//!
//! The seam between the runtime and a transport is here: a transport sets itself up while
//! sluice is still privileged and hands back a [`Transport`] (one body per worker, how to reach
//! the workers, what must stay privileged); the runtime then starts the observers, drops
//! privileges and runs the bodies on pinned threads. Orders reach the workers as [`Control`]s
//! with a [`Waker`] each; what they serve is [`Services`].

pub mod kernel;
pub mod xdp;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use sluice_tcp::FourTuple;

use crate::config::ListenerMode;
use crate::observe::stats::SharedCounters;
use crate::session::BackendLink;
use crate::session::backend::ListenerBackends;
use crate::session::relay::connect_kernel;

/// A transport, set up and ready to run (see the module documentation).
pub struct Transport {
    /// `"xdp"` or `"kernel"`: thread names and logs.
    pub name: &'static str,
    /// One body per worker; each runs on its own thread until [`Worker::stop`] is set.
    pub workers: Vec<Box<dyn FnOnce(Worker) + Send>>,
    /// How the runtime reaches the workers (reload, drain, abort).
    pub controls: Controls,
    /// The XDP program with its maps (none on kernel sockets): reload and drain steer flows.
    pub attached: Option<Arc<Mutex<xdp::loader::Attached>>>,
    /// Capabilities the workers still need once privileges are dropped.
    pub keep: &'static [caps::Capability],
}

/// What the runtime gives each worker body.
pub struct Worker {
    /// Where the worker publishes its counters and latencies.
    pub shared: SharedCounters,
    /// The runtime's clock origin: `now` is `clock.elapsed()`.
    pub clock: std::time::Instant,
    /// Set when the worker must return.
    pub stop: Arc<AtomicBool>,
}

/// What a worker serves: its listeners, their TLS configurations, how relays behave, the
/// connection limits, the backend pools. Replaced as a whole on reload.
#[derive(Clone, Default)]
pub struct Services {
    pub listeners: HashMap<SocketAddr, ListenerMode>,
    pub tls: HashMap<SocketAddr, Arc<sluice_tls::rustls::ServerConfig>>,
    pub relay: crate::config::Relay,
    pub limits: crate::config::Limits,
    /// Log one line per connection when it ends.
    pub access_log: bool,
    /// The backend pools of relay listeners, shared by all workers. A relay listener missing
    /// here gets a pool of its one `ListenerMode::Relay` backend.
    pub backends: HashMap<SocketAddr, Arc<ListenerBackends>>,
    /// The fleet's session store (`[session_store]`), and the TLS listeners whose sessions it
    /// shares.
    pub fleet: Option<Arc<crate::session::fleet::FleetSettings>>,
    pub fleet_listeners: HashMap<SocketAddr, crate::session::FleetListener>,
}

/// Orders from the main thread (signals).
pub enum Control {
    /// SIGHUP: serve this from now on (connections already open keep what they had). Once the
    /// worker took it, it answers with its connections on the listeners this reload removed
    /// (they must keep reaching sluice while those listeners drain).
    Reload(Box<Services>, Sender<Vec<FourTuple>>),
    /// SIGTERM/SIGINT: stop accepting, let open connections finish; answer with every
    /// connection of a listener when asked (to keep them steered to sluice).
    Drain(Option<Sender<Vec<FourTuple>>>),
    /// The drain deadline passed: reset every connection still open.
    Abort,
}

/// How the main thread reaches each worker.
pub struct Controls {
    pub senders: Vec<Sender<Control>>,
    pub wakers: Vec<Arc<Waker>>,
}

impl Controls {
    /// Sends `c(i)` to every worker `i` and wakes it.
    pub fn broadcast(&self, c: impl Fn(usize) -> Control) {
        for (i, (tx, waker)) in self.senders.iter().zip(&self.wakers).enumerate() {
            let _ = tx.send(c(i));
            waker.wake();
        }
    }
}

/// Wakes a worker sleeping in poll. The eventfd is written only while the owner sleeps.
pub struct Waker {
    eventfd: EventFd,
    sleeping: AtomicBool,
}

impl Waker {
    pub fn new() -> std::io::Result<Self> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Self { eventfd, sleeping: AtomicBool::new(false) })
    }

    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.eventfd.write(1);
        }
    }
}

impl Waker {
    /// The eventfd to sleep on (readable once woken).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// The owner is about to sleep (`true`) or awake again (`false`).
    pub fn set_sleeping(&self, sleeping: bool) {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Takes the wake-up back (after a sleep).
    pub fn reset(&self) {
        let _ = self.eventfd.read(); // EAGAIN when nobody wrote
    }
}

/// One worker's end of its order channel: the receiver and the waker that interrupts its sleep.
pub type Orders = (Receiver<Control>, Arc<Waker>);

/// The order channels of `n` workers: each worker's receiver and waker, and the runtime's
/// [`Controls`].
pub fn control_channels(n: usize) -> std::io::Result<(Vec<Orders>, Controls)> {
    let mut orders = Vec::new();
    let mut controls = Controls { senders: Vec::new(), wakers: Vec::new() };
    for _ in 0..n {
        let (tx, rx) = crossbeam_channel::unbounded();
        let wake = Arc::new(Waker::new()?);
        controls.senders.push(tx);
        controls.wakers.push(Arc::clone(&wake));
        orders.push((rx, wake));
    }
    Ok((orders, controls))
}

/// A session's backend socket: a kernel TCP socket in a transport's epoll set, under `token`:
/// edge-triggered, for reading, writing and the peer's half-close.
pub struct EpollSlot<'a> {
    pub epoll: &'a Epoll,
    pub token: u64,
}

impl BackendLink for EpollSlot<'_> {
    type Stream = TcpStream;

    fn connect(&mut self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        connect_kernel(addr)
    }

    fn register(&mut self, backend: &TcpStream) -> std::io::Result<()> {
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        self.epoll.add(backend, EpollEvent::new(interest, self.token)).map_err(std::io::Error::from)
    }

    fn deregister(&mut self, backend: &TcpStream) {
        let _ = self.epoll.delete(backend);
    }
}

/// What an epoll event says of a socket: `(readable, writable)`; an error or a hang-up makes it
/// both (the next read or write finds out).
pub fn backend_readiness(flags: EpollFlags) -> (bool, bool) {
    let err = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
    (flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | err), flags.intersects(EpollFlags::EPOLLOUT | err))
}
