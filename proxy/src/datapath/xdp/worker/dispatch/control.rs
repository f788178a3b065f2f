//! The main thread's orders ([`crate::datapath::Control`]): serve a reloaded configuration,
//! drain (stop accepting, serve what is open), abort what is left.

use std::collections::HashSet;
use std::net::SocketAddr;

use sluice_tcp::{FourTuple, Instant};

use super::Dispatch;
use crate::config::ListenerMode;
use crate::datapath::Services;

impl Dispatch {
    /// Serves `services` from now on. Connections already open keep their TLS configuration
    /// and backend; a listener that is gone stops accepting but its connections are served
    /// until they end.
    /// Returns the connections of the listeners this reload removed.
    pub fn reload(&mut self, services: Services) -> Vec<FourTuple> {
        let Services { listeners, tls, relay, limits, access_log, backends, fleet, fleet_listeners } = services;
        self.fleet.reload(&self.epoll, fleet, fleet_listeners);
        let accepting = |m: Option<&ListenerMode>| matches!(m, Some(ListenerMode::Echo | ListenerMode::Relay(_)));
        let mut removed = HashSet::new();
        for (addr, mode) in &self.listeners {
            if accepting(Some(mode)) && !accepting(listeners.get(addr)) {
                self.tcp.unlisten(*addr);
                self.retired.insert(*addr);
                removed.insert(*addr);
            }
        }
        for (addr, mode) in &listeners {
            if accepting(Some(mode)) && !accepting(self.listeners.get(addr)) && !self.draining {
                let _ = self.tcp.listen(*addr);
                self.retired.remove(addr);
            }
        }
        self.backends = crate::session::backend::with_single_backends(&listeners, backends);
        self.listeners = listeners;
        self.tls = tls;
        self.relay_settings = relay;
        self.limits = limits;
        self.access_log = access_log;
        self.flows_on(|local| removed.contains(&local))
    }

    /// The 4-tuples of this worker's connections whose local end passes `on`.
    fn flows_on(&self, on: impl Fn(SocketAddr) -> bool) -> Vec<FourTuple> {
        self.tcp.handles().filter_map(|h| self.tcp.four_tuple(h)).filter(|t| on(t.local)).collect()
    }

    /// Stops accepting on every listener: a SYN now gets a RST from the TCP stack (or, when the
    /// XDP program passes them to the kernel, never arrives). Open connections carry on.
    /// Returns every connection of a listener (to keep them steered to sluice).
    pub fn drain(&mut self) -> Vec<FourTuple> {
        self.draining = true;
        for addr in self.listeners.keys() {
            self.tcp.unlisten(*addr);
        }
        self.counters.connections_active = self.tcp.active_count() as u64;
        self.flows_on(|local| self.listeners.contains_key(&local) || self.retired.contains(&local))
    }

    /// Resets every connection still open (the drain deadline passed).
    pub fn abort_all(&mut self, now: Instant) {
        let handles: Vec<_> = self.tcp.handles().collect();
        for h in handles {
            self.tcp.abort(h);
        }
        self.process(now);
    }
}
