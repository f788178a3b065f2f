//! The listening side of a kernel worker: its listening sockets (each worker opens its own on
//! every accepting listener address, with `SO_REUSEPORT`, and the kernel spreads connections
//! over them), keeping them in step with a reload, and accepting connections: in batches of
//! [`ACCEPT_BATCH`], admitted under the connection limits, each opening an echo or a session.
//! When descriptors or memory run out (or the worker is at `max_conns`), the listeners leave the
//! epoll set for a back-off ([`ACCEPT_BACKOFF_MIN`], doubling on every failure in a row up to
//! [`ACCEPT_BACKOFF_MAX`], back to the minimum after an accept succeeds) and the connections
//! wait in the kernel's backlog: a level-triggered listener whose `accept` fails would otherwise
//! wake the worker at once, for ever.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use sluice_tcp::Instant;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Conn, KernelClient, LISTENER_TOKEN, Worker};
use crate::config::{Config, ListenerMode};
use crate::session::Session;
use crate::session::echo::Echo;
use crate::session::relay::Client;

/// Listen backlog of every listening socket (the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;
/// How long a worker first stops accepting after `accept` failed for want of descriptors or
/// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or it reached `max_conns`.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause: the back-off doubles up to this while `accept` keeps failing.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Connections accepted per readiness event of a listener before other sockets get a turn.
const ACCEPT_BATCH: usize = 64;

/// Opens a non-blocking listening socket on `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`):
/// every worker opens its own on the same address and the kernel spreads connections over them.
/// An IPv6 socket takes IPv6 only (`[::]:port` does not take IPv4 clients as ::ffff:a.b.c.d;
/// `0.0.0.0:port` is the listener for those).
pub fn listen(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let socket = tcp_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

impl Worker {
    /// Listens on the accepting listeners of `listeners` (keeping the sockets of those it
    /// already has, closing those no longer wanted; their accepted connections live on).
    pub(super) fn set_listeners(&mut self, listeners: &HashMap<SocketAddr, ListenerMode>) -> Result<()> {
        let mut wanted: Vec<_> = listeners.iter().filter(|(_, m)| **m != ListenerMode::Refuse).collect();
        wanted.sort_by_key(|(a, _)| (a.ip(), a.port()));
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

    /// Takes the listeners out of the epoll set for the current back-off, and doubles the next
    /// one (up to [`ACCEPT_BACKOFF_MAX`]).
    fn pause_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_none() {
            for (s, _, _) in &self.listeners {
                let _ = self.epoll.delete(s);
            }
        }
        let pause = self.accept_backoff.clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        self.accept_paused_until = Some(now + pause);
        self.accept_backoff = (pause * 2).min(ACCEPT_BACKOFF_MAX);
    }

    /// Puts the listeners back once the back-off is over.
    pub(super) fn resume_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for (i, (s, addr, _)) in self.listeners.iter().enumerate() {
                if let Err(e) = self.epoll.add(s, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER_TOKEN - i as u64)) {
                    tracing::warn!(%addr, "epoll add of listener: {e}");
                }
            }
        }
    }

    pub(super) fn accept(&mut self, i: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= self.max_conns {
                // The connections wait in the backlog until a place frees.
                self.counters.refused_descriptors += 1;
                return self.pause_accepting(now);
            }
            let (listener, configured, mode) = &self.listeners[i];
            let (configured, mode) = (*configured, *mode);
            let stream = match listener.accept() {
                Ok((stream, _)) => {
                    self.accept_backoff = ACCEPT_BACKOFF_MIN;
                    stream
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM, ...: the connection waits in the backlog;
                    // try again a little later instead of spinning on a readable listener.
                    if self.counters.accept_backoffs == 0 {
                        tracing::warn!(%configured, "accept: {e}; pausing the listeners (counted accept_backoffs)");
                    } else {
                        tracing::debug!(%configured, "accept: {e}");
                    }
                    self.counters.accept_backoffs += 1;
                    return self.pause_accepting(now);
                }
            };
            self.counters.connections_established += 1;
            let unknown = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
            let peer = stream.peer_addr().unwrap_or(unknown);
            // The address the client reached (a wildcard listener's is the one it connected to).
            let local = stream.local_addr().unwrap_or(configured);
            let slot = match self.conn_counts.admit(&self.limits, self.admitted.len() as u64, peer.ip()) {
                Ok(slot) => Some(slot),
                Err(why) => {
                    // Refused: closed with a RST, counted as on the XDP transport.
                    self.counters.count_refusal(why);
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    self.counters.connections_closed += 1;
                    continue;
                }
            };
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_user_timeout(self.user_timeout) {
                tracing::debug!("TCP_USER_TIMEOUT: {e}");
            }
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
                ListenerMode::Relay(_) => self.open_session(id, client, peer, local, configured, now),
                ListenerMode::Echo | ListenerMode::Refuse => {
                    let echo = Echo::new(self.relay_settings.buffer);
                    self.conns.insert(id, Conn::Echo { client, echo });
                }
            }
            self.step(id, now);
        }
    }

    /// A session for an accepted connection; its backend is connected by its first step.
    fn open_session(
        &mut self,
        id: u64,
        mut client: KernelClient,
        peer: SocketAddr,
        local: SocketAddr,
        listener: SocketAddr,
        now: Instant,
    ) {
        let tls = self.tls.get(&listener).cloned();
        let fleet = self.fleet.listener(listener);
        let session = self
            .backends
            .get(&listener)
            .cloned()
            .map(|backends| Session::new(now, peer, local, backends, tls, &self.relay_settings, fleet));
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
}

/// A TCP socket for `addr`'s family with `SO_REUSEADDR` (and `IPV6_V6ONLY` for IPv6).
fn tcp_socket(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Fails if something already listens on one of `config`'s listener addresses that is not in
/// `mine`: SO_REUSEPORT would let the workers join another process's listeners on the same
/// address (same user) and share its connections.
pub fn probe_listeners(config: &Config, mine: &[SocketAddr]) -> Result<()> {
    let accepting = config.listeners.iter().filter(|l| l.mode() != ListenerMode::Refuse);
    for addr in accepting.flat_map(|l| l.socket_addrs()) {
        if mine.contains(&addr) {
            continue;
        }
        let probe = tcp_socket(addr)?;
        probe.bind(&SockAddr::from(addr)).with_context(|| format!("listener {addr}: cannot bind (in use?)"))?;
    }
    Ok(())
}
