//! One accepted connection's life on a kernel worker: the readiness events of its client socket
//! (and of a relay's backend socket), stepping its echo or its session, the scan of the
//! connections whose deadline passed (backend connect, TLS handshake, drain), and its end:
//! closed at once when reset, or left draining for up to [`DRAIN`] when sluice closed its
//! sending side (see the module documentation of `kernel`).

use std::time::Duration;

use nix::sys::epoll::EpollFlags;
use sluice_tcp::Instant;

use super::{Conn, KernelClient, Worker};
use crate::datapath::EpollSlot;
use crate::session::IdleSweep;
use crate::session::relay::Client;

/// How long a connection whose sending side sluice closed waits for the client's FIN.
pub const DRAIN: Duration = Duration::from_secs(5);

impl Worker {
    pub(super) fn on_event(&mut self, id: u64, backend: bool, flags: EpollFlags, now: Instant) {
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
    pub(super) fn step(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let done = match conn {
            Conn::Echo { client, echo } => echo.pump(client, &mut self.counters.echo_bytes),
            Conn::Relay { client, session } => {
                let mut readiness = EpollSlot { epoll: &self.epoll, token: id << 1 | 1 };
                let mut lookups = self.fleet.lookups(id);
                session.pump(client, now, &mut readiness, &mut self.counters, &mut self.latencies, &mut lookups);
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
    pub(super) fn finish(&mut self, id: u64, now: Instant) {
        let Some(conn) = self.conns.remove(&id) else { return };
        if let Some(slot) = self.admitted.remove(&id) {
            self.conn_counts.release(slot);
        }
        match conn {
            Conn::Echo { client, .. } | Conn::Draining { client, .. } => self.close_client(client),
            Conn::Relay { client, session } => {
                self.relays_open -= 1;
                // Closes the backend socket (a RST where the relay armed SO_LINGER 0).
                session.close(
                    &mut EpollSlot { epoll: &self.epoll, token: id << 1 | 1 },
                    &mut self.counters,
                    self.access_log,
                    now,
                );
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

    pub(super) fn close_client(&mut self, client: KernelClient) {
        let _ = self.epoll.delete(client.stream());
        self.counters.connections_closed += 1;
        drop(client);
    }

    /// Steps the connections whose deadline passed; forgets those without one. Returns how many
    /// were due.
    pub(super) fn run_deadlines(&mut self, now: Instant) -> usize {
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
        if self.idle_sweep.due(now) {
            let idle = self.conns.iter().filter_map(|(id, c)| match c {
                Conn::Relay { session, .. } if IdleSweep::expired(session, now) => Some(*id),
                _ => None,
            });
            due.extend(idle);
            if self.conn_counts.over_memory(&self.limits) {
                // Past `limits.memory`: every relay queue cut to what it holds.
                let freed: usize = self
                    .conns
                    .values_mut()
                    .map(|c| match c {
                        Conn::Relay { session, .. } => session.relay.shrink(),
                        _ => 0,
                    })
                    .sum();
                self.counters.memory_shrunk_bytes += freed as u64;
            }
            let sessions = self.conns.values().filter_map(|c| match c {
                Conn::Relay { session, .. } => Some(&**session),
                _ => None,
            });
            let charge = IdleSweep::memory_charge(self.conns.len(), 0, sessions);
            self.conn_counts.charge(usize::try_from(self.counters.queue).unwrap_or(0), charge);
            self.counters.memory_charged_now = charge;
        }
        let n = due.len();
        for id in due {
            self.step(id, now);
        }
        n
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
