//! After input ([`Dispatch::process`]): the TCP stack's due timers, then its events, served by
//! each connection's application: an echo, or a relay [`Session`] with its backend socket
//! (in the worker's epoll set under a token of its own) and its deadlines (backend connect, TLS
//! handshake).

use std::net::SocketAddr;

use nix::sys::epoll::EpollFlags;
use sluice_tcp::{ConnectionHandle, Event, FourTuple, Instant};

use super::Dispatch;
use crate::config::ListenerMode;
use crate::datapath::EpollSlot;
use crate::session::echo::Echo;
use crate::session::relay::OnStack;
use crate::session::{IdleSweep, Session};

impl Dispatch {
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
                    if let Some(t) = self.tcp.four_tuple(h) {
                        match self.conn_counts.admit(&self.limits, self.admitted.len() as u64, t.remote.ip()) {
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
                    let listener = tuple.and_then(|t| self.listener_of(t.local));
                    match listener.and_then(|l| self.listeners.get(&l).copied()) {
                        Some(ListenerMode::Relay(_)) if let (Some(t), Some(l)) = (tuple, listener) => {
                            self.open_relay(h, t, l, now)
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
        if self.idle_sweep.due(now) {
            let idle: Vec<_> =
                self.sessions.iter().filter(|(_, s)| IdleSweep::expired(s, now)).map(|(h, _)| *h).collect();
            for h in idle {
                self.pump_relay(h, now);
            }
            if self.conn_counts.over_memory(&self.limits) {
                // Past `limits.memory`: every buffer cut to what it holds.
                let queues: usize = self.sessions.values_mut().map(|s| s.relay.shrink()).sum();
                self.counters.memory_shrunk_bytes += (self.tcp.shrink_buffers() + queues) as u64;
            }
            let charge = IdleSweep::memory_charge(
                self.tcp.connection_count(),
                self.tcp.buffer_storage(),
                self.sessions.values(),
            );
            self.conn_counts.charge(self.worker, charge);
            self.counters.memory_charged_now = charge;
        }
        self.poll_fleet(now);
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
        let mut lookups = self.fleet.lookups(token);
        if s.pump(client, now, &mut readiness, &mut self.counters, &mut self.latencies, &mut lookups) {
            self.close_relay(h, now);
        } else if s.relay.deadline().is_some() && !self.deadlines.contains(&h) {
            self.deadlines.push(h);
        }
    }

    /// The fleet's store answered the lookup of the relay under `token`: its handshake goes on.
    pub(super) fn lookup_answered(&mut self, token: u64, now: Instant) {
        let Some(h) = self.relay_tokens.get(&token).copied() else { return };
        if let Some(s) = self.sessions.get_mut(&h) {
            s.lookup_answered();
            self.pump_relay(h, now);
        }
    }

    /// The store's sockets and answers (after the relays were pumped: their requests go out
    /// in the same loop).
    fn poll_fleet(&mut self, now: Instant) {
        for token in self.fleet.poll(&self.epoll, now, &mut self.latencies) {
            self.lookup_answered(token, now);
        }
    }

    /// A backend socket became readable and/or writable (edge-triggered).
    pub fn on_backend_event(&mut self, token: u64, flags: EpollFlags, now: Instant) {
        let Some(h) = self.relay_tokens.get(&token).copied() else { return };
        let Some(s) = self.sessions.get_mut(&h) else { return };
        s.relay.on_backend_ready(crate::datapath::backend_readiness(flags));
        self.pump_relay(h, now);
    }

    /// A session for a new client connection `tuple` of `listener` (as configured: the
    /// unspecified address of a wildcard listener). Its backend is chosen at once, or (when a
    /// route or the PROXY header needs the TLS handshake's facts) once the handshake is done.
    fn open_relay(&mut self, h: ConnectionHandle, tuple: FourTuple, listener: SocketAddr, now: Instant) {
        let tls = self.tls.get(&listener).cloned();
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
        let fleet = self.fleet.listener(listener);
        let session = match Session::new(now, tuple.remote, tuple.local, backends, tls, &self.relay_settings, fleet) {
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
}
