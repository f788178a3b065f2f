//! The sans-IO next-hop table: the kernel's routes (table main) and neighbours of sluice's
//! interface, fed by [`super::Reader`] (or by a test), asked by [`Table::resolve`]. It never
//! learns anything from received frames, and every map in it is bounded ([`Limits`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use sluice_tcp::Instant;
use sluice_wire::ethernet::Address as MacAddress;

use super::routes::{Hop, Inserted, Route, Routes, bits};

/// Bounds of the table; the defaults suit a host with one uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Routes kept (both families); more are counted in `routes_overflow` and not used.
    pub max_routes: usize,
    /// Neighbours kept; more are counted in `neighbours_overflow` and not used.
    pub max_neighbours: usize,
    /// At most one resolution trigger per next hop in this interval (the kernel's default
    /// `retrans_time` between ARP/NS probes is 1 s).
    pub trigger_interval: Duration,
    /// Next hops whose last trigger is remembered for the rate limit.
    pub max_triggered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_routes: 65_536,
            max_neighbours: 65_536,
            trigger_interval: Duration::from_secs(1),
            max_triggered: 4_096,
        }
    }
}

/// Where a frame to a destination goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Send it to this MAC address.
    Ready(MacAddress),
    /// The route is through sluice's interface, but the kernel has no usable neighbour entry
    /// for this next hop (the destination itself when on-link, else the gateway) yet:
    /// trigger resolution ([`super::Prober::trigger`]) and hold the frame briefly.
    Pending(IpAddr),
    /// No route, a route out of another interface, or a reject route.
    Unreachable,
}

/// The kernel's neighbour states (`NUD_*`, include/uapi/linux/neighbour.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NudState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
    NoArp,
    Permanent,
    /// `NUD_NONE` or anything unknown.
    None,
}

impl NudState {
    /// Whether its link-layer address may be used (the kernel's `NUD_VALID`): a STALE entry is
    /// used and re-confirmed by the kernel (RFC 4861 7.3.3); INCOMPLETE and FAILED have none.
    pub fn usable(self) -> bool {
        matches!(self, Self::Reachable | Self::Stale | Self::Delay | Self::Probe | Self::NoArp | Self::Permanent)
    }
}

/// What the table counted; sizes are filled in by [`Table::counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub lookups_ready: u64,
    pub lookups_pending: u64,
    pub lookups_unreachable: u64,
    /// Resolutions triggered (a datagram handed to the kernel for a next hop).
    pub triggers: u64,
    /// Triggers refused by the per-next-hop rate limit.
    pub triggers_limited: u64,
    /// Triggers the kernel refused (`send` failed).
    pub trigger_errors: u64,
    /// Routes stored now (IPv4 + IPv6).
    pub routes: u64,
    /// Usable neighbours stored now.
    pub neighbours: u64,
    /// Routes not stored because `max_routes` were.
    pub routes_overflow: u64,
    /// Neighbours not stored because `max_neighbours` were.
    pub neighbours_overflow: u64,
    /// Full dumps after the first: lost notifications (ENOBUFS), an interrupted dump, or a
    /// change of the interface or its addresses (IPv4 drops routes then without notifying).
    pub redumps: u64,
    /// Netlink messages that did not parse, or routes and neighbours that made no sense.
    pub malformed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Neighbour {
    mac: MacAddress,
    generation: u64,
}

/// Routes and neighbours of one interface; see the module docs.
#[derive(Debug)]
pub struct Table {
    ifindex: u32,
    limits: Limits,
    v4: Routes,
    v6: Routes,
    neighbours: HashMap<IpAddr, Neighbour>,
    triggered: HashMap<IpAddr, Instant>,
    /// Generation stamped on what is written now; raised when a dump begins.
    route_generation: u64,
    neighbour_generation: u64,
    counters: Counters,
}

impl Table {
    /// An empty table for the interface with index `ifindex`.
    pub fn new(ifindex: u32, limits: Limits) -> Self {
        Self {
            ifindex,
            limits,
            v4: Routes::new(32),
            v6: Routes::new(128),
            neighbours: HashMap::new(),
            triggered: HashMap::new(),
            route_generation: 0,
            neighbour_generation: 0,
            counters: Counters::default(),
        }
    }

    /// The interface this table serves.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Where a frame to `dst` goes: the route of the longest prefix containing it (table main,
    /// lowest metric), then the neighbour entry of its next hop. Counted.
    pub fn resolve(&mut self, dst: IpAddr) -> Resolution {
        let r = self.peek(dst);
        match r {
            Resolution::Ready(_) => self.counters.lookups_ready += 1,
            Resolution::Pending(_) => self.counters.lookups_pending += 1,
            Resolution::Unreachable => self.counters.lookups_unreachable += 1,
        }
        r
    }

    /// [`Table::resolve`] without counting.
    pub fn peek(&self, dst: IpAddr) -> Resolution {
        let (addr, width) = bits(dst);
        let routes = if width == 32 { &self.v4 } else { &self.v6 };
        let next_hop = match routes.lookup(addr) {
            Some(Hop::Gateway(gw)) => gw,
            Some(Hop::OnLink) => dst,
            Some(Hop::OtherInterface | Hop::Reject) | None => return Resolution::Unreachable,
        };
        match self.neighbours.get(&next_hop) {
            Some(n) => Resolution::Ready(n.mac),
            None => Resolution::Pending(next_hop),
        }
    }

    /// A route was added or replaced (`RTM_NEWROUTE`, or seen in a dump).
    pub fn add_route(&mut self, route: Route) {
        let (prefix, width) = bits(route.destination);
        let cap = self.limits.max_routes.saturating_sub(if width == 32 { self.v6.len() } else { self.v4.len() });
        let routes = if width == 32 { &mut self.v4 } else { &mut self.v6 };
        match routes.insert(prefix, route.prefix_len, route.metric, route.hop, self.route_generation, cap) {
            Some(Inserted::New | Inserted::Replaced) => {}
            Some(Inserted::Full) => self.counters.routes_overflow += 1,
            None => self.counters.malformed += 1,
        }
    }

    /// A route was deleted (`RTM_DELROUTE`); its hop does not matter.
    pub fn remove_route(&mut self, destination: IpAddr, prefix_len: u8, metric: u32) {
        let (prefix, width) = bits(destination);
        let routes = if width == 32 { &mut self.v4 } else { &mut self.v6 };
        routes.remove(prefix, prefix_len, metric);
    }

    /// A neighbour entry of sluice's interface changed (`RTM_NEWNEIGH`, or seen in a dump):
    /// stored when `state` is usable and it has an Ethernet address, removed otherwise.
    pub fn set_neighbour(&mut self, ip: IpAddr, state: NudState, mac: Option<MacAddress>) {
        let Some(mac) = mac.filter(|_| state.usable()) else {
            self.neighbours.remove(&ip);
            return;
        };
        let entry = Neighbour { mac, generation: self.neighbour_generation };
        if let Some(n) = self.neighbours.get_mut(&ip) {
            *n = entry;
        } else if self.neighbours.len() >= self.limits.max_neighbours {
            self.counters.neighbours_overflow += 1;
        } else {
            self.neighbours.insert(ip, entry);
            // Resolved: a later failure may trigger again at once.
            self.triggered.remove(&ip);
        }
    }

    /// A neighbour entry was deleted (`RTM_DELNEIGH`).
    pub fn remove_neighbour(&mut self, ip: IpAddr) {
        self.neighbours.remove(&ip);
    }

    /// Whether a resolution of `next_hop` may be triggered now: at most one per
    /// `trigger_interval` per next hop, and only `max_triggered` next hops remembered (when
    /// full, those older than the interval are forgotten first). A refusal is counted.
    pub fn may_trigger(&mut self, now: Instant, next_hop: IpAddr) -> bool {
        let interval = self.limits.trigger_interval;
        let recent = |at: &Instant| now.saturating_duration_since(*at) < interval;
        if self.triggered.get(&next_hop).is_some_and(recent) {
            self.counters.triggers_limited += 1;
            return false;
        }
        if !self.triggered.contains_key(&next_hop) && self.triggered.len() >= self.limits.max_triggered {
            self.triggered.retain(|_, at| recent(at));
            if self.triggered.len() >= self.limits.max_triggered {
                self.counters.triggers_limited += 1;
                return false;
            }
        }
        self.triggered.insert(next_hop, now);
        true
    }

    /// A dump of routes begins: what it and later notifications write is newer than all
    /// stored now.
    pub fn begin_route_dump(&mut self) {
        self.route_generation += 1;
    }

    /// The route dump is complete: routes it did not see are gone from the kernel.
    pub fn end_route_dump(&mut self) {
        self.v4.sweep(self.route_generation);
        self.v6.sweep(self.route_generation);
    }

    /// A dump of neighbours begins (see [`Table::begin_route_dump`]).
    pub fn begin_neighbour_dump(&mut self) {
        self.neighbour_generation += 1;
    }

    /// The neighbour dump is complete: neighbours it did not see are gone.
    pub fn end_neighbour_dump(&mut self) {
        let generation = self.neighbour_generation;
        self.neighbours.retain(|_, n| n.generation >= generation);
    }

    /// Counters, with the current sizes.
    pub fn counters(&self) -> Counters {
        Counters {
            routes: (self.v4.len() + self.v6.len()) as u64,
            neighbours: self.neighbours.len() as u64,
            ..self.counters
        }
    }

    /// The counters, for the reader and the prober to count into.
    pub(super) fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }
}
