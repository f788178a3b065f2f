//! A kernel worker's loop ([`Worker::run`]): it polls the epoll set without sleeping while there
//! is work, hands each event to a listener (accept) or a connection, runs the deadlines that
//! passed, takes the main thread's orders (reload, drain, abort), and publishes its counters;
//! with nothing to do it sleeps in epoll until the next deadline, at most [`IDLE_POLL`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use nix::sys::epoll::EpollEvent;
use sluice_tcp::Instant;

use super::{Conn, LISTENER_TOKEN, Worker};
use crate::datapath::{Control, Services};
use crate::observe::stats::SharedCounters;
use crate::session::fleet::Fleet;
use crate::session::relay::Client;

/// Longest wait in epoll: how soon a stop request is noticed.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// How often the counters are published while there is work.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// How soon to publish again when the admin endpoint held the counters' lock.
const RETRY_PUBLISH: Duration = Duration::from_millis(10);

impl Worker {
    /// An order from the main thread (see [`crate::datapath::xdp::worker::Control`]). There are no flows to
    /// name: the kernel owns them.
    fn control(&mut self, c: Control, now: Instant) {
        match c {
            Control::Reload(services, done) => {
                let Services { listeners, tls, relay, limits, access_log, backends, fleet, fleet_listeners } =
                    *services;
                self.fleet.reload(&self.epoll, fleet, fleet_listeners);
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
            } else if Fleet::owns(token) {
                self.fleet.on_event(token, e.events());
            } else {
                self.on_event(token >> 1, token & 1 == 1, e.events(), t);
            }
        }
        let deadlines = self.run_deadlines(t);
        let answered = self.fleet.poll(&self.epoll, t, &mut self.latencies);
        for &id in &answered {
            self.lookup_answered(id, t);
        }
        n + deadlines + answered.len()
    }

    /// The store answered connection `id`'s lookup: its handshake goes on.
    fn lookup_answered(&mut self, id: u64, now: Instant) {
        if let Some(Conn::Relay { session, .. }) = self.conns.get_mut(&id) {
            session.lookup_answered();
            self.step(id, now);
        }
    }

    /// The earliest deadline of any connection, or the end of an accept back-off.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.deadlines.iter().filter_map(|id| self.conns.get(id)?.deadline());
        conns.chain(self.accept_paused_until).chain(self.fleet.poll_timeout()).min()
    }

    /// Counts and latencies as the admin endpoint shows them. The one place that publishes:
    /// returns whether `shared` was free to take them.
    pub fn publish(&mut self, shared: &SharedCounters) -> bool {
        self.counters.connections_open = self.conns.len() as u64;
        self.counters.connections_active = self.conns.len() as u64;
        self.counters.draining = u64::from(self.draining);
        self.counters.relays_open = self.relays_open;
        self.fleet.publish(&mut self.counters);
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
        self.fleet.start(clock);
        let mut last_publish = now();
        let mut dirty = true;
        while !stop.load(Ordering::Relaxed) {
            // Orders wait at most one idle poll (250 ms).
            while let Ok(c) = control.try_recv() {
                self.control(c, now());
                dirty = true;
            }
            // The once-a-second memory charge changes with no event too (the last connection
            // gone): a new one is published like an event.
            let charged = self.counters.memory_charged_now;
            let busy = self.poll(Duration::ZERO, now) > 0;
            dirty |= busy || self.counters.memory_charged_now != charged;
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
                let charged = self.counters.memory_charged_now;
                dirty |= self.poll(wake.saturating_duration_since(t), now) > 0
                    || self.counters.memory_charged_now != charged;
            }
        }
        self.publish(&shared);
        shared.finish(&mut self.latencies);
    }
}
