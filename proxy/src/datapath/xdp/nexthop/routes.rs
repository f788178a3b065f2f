//! One address family's routes (table main), looked up by longest-prefix match.
//!
//! Routes are kept by prefix length: one hash map from (masked prefix, length) to the routes of
//! that prefix (several metrics), and a count of routes per length so that a lookup tries only
//! the lengths present, longest first (at most 33 or 129 probes, a handful on a real host). Of
//! the routes of the matching prefix the one with the lowest metric wins, as in the kernel's FIB.

use std::collections::HashMap;
use std::net::IpAddr;

/// Where a route sends traffic, as far as sluice's interface is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Through a router on sluice's interface (`via GATEWAY dev IF`).
    Gateway(IpAddr),
    /// The destination itself is on sluice's link (a connected route, `dev IF` without `via`).
    OnLink,
    /// Out of another interface: sluice cannot send there. Kept so that a more specific route
    /// elsewhere shadows a less specific one on sluice's interface, as it does in the kernel.
    OtherInterface,
    /// `blackhole`, `unreachable`, `prohibit` or `throw`: the kernel would not send it either.
    Reject,
}

/// One route of table main, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix (host bits are cleared when stored).
    pub destination: IpAddr,
    /// `RTM_*ROUTE`'s `rtm_dst_len`.
    pub prefix_len: u8,
    /// `RTA_PRIORITY`: among routes of one prefix the lowest wins.
    pub metric: u32,
    pub hop: Hop,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    metric: u32,
    hop: Hop,
    /// The dump generation that last saw it (see `Routes::sweep`).
    generation: u64,
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inserted {
    New,
    Replaced,
    /// Over the cap: not stored.
    Full,
}

/// The routes of one address family: 32-bit (IPv4) or 128-bit (IPv6) prefixes, held as u128.
#[derive(Debug)]
pub(super) struct Routes {
    width: u8,
    by_prefix: HashMap<(u128, u8), Vec<Entry>>,
    /// How many prefixes of each length are present (index = prefix length).
    lengths: [u32; 129],
    len: usize,
}

impl Routes {
    pub(super) fn new(width: u8) -> Self {
        Self { width: width.min(128), by_prefix: HashMap::new(), lengths: [0; 129], len: 0 }
    }

    /// Number of routes stored.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The key of `prefix/len`, or `None` when `len` is longer than the family's addresses.
    fn key(&self, prefix: u128, len: u8) -> Option<(u128, u8)> {
        (len <= self.width).then(|| (mask(prefix, len, self.width), len))
    }

    /// Adds or replaces (same prefix, length and metric: `RTM_NEWROUTE` with `NLM_F_REPLACE`,
    /// or a dump seeing it again) a route, unless `cap` routes are stored already.
    pub(super) fn insert(
        &mut self,
        prefix: u128,
        len: u8,
        metric: u32,
        hop: Hop,
        generation: u64,
        cap: usize,
    ) -> Option<Inserted> {
        let key = self.key(prefix, len)?;
        let entry = Entry { metric, hop, generation };
        if let Some(entries) = self.by_prefix.get_mut(&key) {
            if let Some(e) = entries.iter_mut().find(|e| e.metric == metric) {
                *e = entry;
                return Some(Inserted::Replaced);
            }
            if self.len >= cap {
                return Some(Inserted::Full);
            }
            entries.push(entry);
        } else {
            if self.len >= cap {
                return Some(Inserted::Full);
            }
            self.by_prefix.insert(key, vec![entry]);
            self.lengths[usize::from(len)] += 1;
        }
        self.len += 1;
        Some(Inserted::New)
    }

    /// Removes the route of `prefix/len` with `metric` (`RTM_DELROUTE` names all three);
    /// whether there was one.
    pub(super) fn remove(&mut self, prefix: u128, len: u8, metric: u32) -> bool {
        let Some(key) = self.key(prefix, len) else { return false };
        let Some(entries) = self.by_prefix.get_mut(&key) else { return false };
        let before = entries.len();
        entries.retain(|e| e.metric != metric);
        let removed = before - entries.len();
        self.len -= removed;
        if entries.is_empty() {
            self.by_prefix.remove(&key);
            self.lengths[usize::from(len)] -= 1;
        }
        removed > 0
    }

    /// The hop of the longest prefix containing `addr` (lowest metric among its routes).
    pub(super) fn lookup(&self, addr: u128) -> Option<Hop> {
        for len in (0..=self.width).rev() {
            if self.lengths[usize::from(len)] == 0 {
                continue;
            }
            if let Some(entries) = self.by_prefix.get(&(mask(addr, len, self.width), len)) {
                return entries.iter().min_by_key(|e| e.metric).map(|e| e.hop);
            }
        }
        None
    }

    /// Removes every route a dump of generation `generation` did not see (nor a notification
    /// since it began): what the kernel deleted while notifications were lost.
    pub(super) fn sweep(&mut self, generation: u64) {
        let lengths = &mut self.lengths;
        let mut removed = 0;
        self.by_prefix.retain(|&(_, len), entries| {
            let before = entries.len();
            entries.retain(|e| e.generation >= generation);
            removed += before - entries.len();
            if entries.is_empty() {
                lengths[usize::from(len)] -= 1;
            }
            !entries.is_empty()
        });
        self.len -= removed;
    }
}

/// `addr` with all but its first `len` bits (of `width`) cleared.
fn mask(addr: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let keep = !0u128 << (128 - u32::from(len.min(width)));
    // Addresses narrower than 128 bits sit in the low bits: align the mask with them.
    addr & (keep >> (128 - u32::from(width)))
}

/// An address as the u128 its family's table keys on, with that table's width.
pub(super) fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()))
    }
    fn v6(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }
    const GW: Hop = Hop::Gateway(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 254)));

    #[test]
    fn masks_keep_the_prefix_bits() {
        assert_eq!(mask(v4("192.0.2.77"), 24, 32), v4("192.0.2.0"));
        assert_eq!(mask(v4("192.0.2.77"), 32, 32), v4("192.0.2.77"));
        assert_eq!(mask(v4("192.0.2.77"), 0, 32), 0);
        assert_eq!(mask(v4("192.0.2.77"), 1, 32), v4("128.0.0.0"));
        assert_eq!(mask(v6("2001:db8:1:2::9"), 48, 128), v6("2001:db8:1::"));
        assert_eq!(mask(v6("2001:db8:1:2::9"), 128, 128), v6("2001:db8:1:2::9"));
    }

    #[test]
    fn longest_prefix_wins_then_lowest_metric() {
        let mut r = Routes::new(32);
        r.insert(0, 0, 0, GW, 0, 10);
        r.insert(v4("198.51.100.0"), 24, 100, Hop::OnLink, 0, 10);
        r.insert(v4("192.0.2.0"), 24, 0, Hop::OtherInterface, 0, 10);
        r.insert(v4("192.0.2.128"), 25, 20, Hop::Reject, 0, 10);
        r.insert(v4("192.0.2.128"), 25, 10, Hop::OnLink, 0, 10);
        assert_eq!(r.lookup(v4("198.51.100.9")), Some(Hop::OnLink));
        assert_eq!(r.lookup(v4("192.0.2.1")), Some(Hop::OtherInterface));
        assert_eq!(r.lookup(v4("192.0.2.200")), Some(Hop::OnLink), "metric 10 beats 20");
        assert_eq!(r.lookup(v4("203.0.113.1")), Some(GW), "the default route");
        assert_eq!(r.len(), 5);
        assert!(r.remove(v4("192.0.2.128"), 25, 10));
        assert_eq!(r.lookup(v4("192.0.2.200")), Some(Hop::Reject));
        assert!(!r.remove(v4("192.0.2.128"), 25, 10), "gone already");
        assert!(r.remove(0, 0, 0));
        assert_eq!(r.lookup(v4("203.0.113.1")), None);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn ipv6_prefixes() {
        let mut r = Routes::new(128);
        let gw = Hop::Gateway("fe80::1".parse().unwrap());
        r.insert(0, 0, 1024, gw, 0, 10);
        r.insert(v6("2001:db8:100::"), 64, 256, Hop::OnLink, 0, 10);
        r.insert(v6("2001:db8:100::5"), 128, 0, Hop::Reject, 0, 10);
        assert_eq!(r.lookup(v6("2001:db8:100::1")), Some(Hop::OnLink));
        assert_eq!(r.lookup(v6("2001:db8:100::5")), Some(Hop::Reject));
        assert_eq!(r.lookup(v6("2001:db8:203::1")), Some(gw));
        assert_eq!(r.insert(v6("2001:db8::"), 129, 0, gw, 0, 10), None, "longer than an address");
    }

    #[test]
    fn same_metric_replaces_and_the_cap_holds() {
        let mut r = Routes::new(32);
        assert_eq!(r.insert(v4("192.0.2.0"), 24, 0, Hop::OnLink, 0, 2), Some(Inserted::New));
        assert_eq!(r.insert(v4("192.0.2.0"), 24, 0, GW, 0, 2), Some(Inserted::Replaced));
        assert_eq!(r.insert(v4("203.0.113.0"), 24, 0, GW, 0, 2), Some(Inserted::New));
        assert_eq!(r.insert(v4("198.51.100.0"), 24, 0, GW, 0, 2), Some(Inserted::Full));
        assert_eq!(r.insert(v4("192.0.2.0"), 24, 5, GW, 0, 2), Some(Inserted::Full));
        assert_eq!(r.insert(v4("192.0.2.0"), 24, 0, Hop::Reject, 0, 2), Some(Inserted::Replaced), "full, but known");
        assert_eq!(r.len(), 2);
        assert_eq!(r.lookup(v4("198.51.100.1")), None);
    }

    #[test]
    fn sweep_drops_what_the_dump_did_not_see() {
        let mut r = Routes::new(32);
        r.insert(v4("192.0.2.0"), 24, 0, GW, 1, 10);
        r.insert(v4("203.0.113.0"), 24, 0, GW, 1, 10);
        r.insert(v4("203.0.113.0"), 24, 7, GW, 1, 10);
        r.insert(v4("203.0.113.0"), 24, 0, Hop::OnLink, 2, 10);
        r.sweep(2);
        assert_eq!(r.len(), 1);
        assert_eq!(r.lookup(v4("192.0.2.1")), None);
        assert_eq!(r.lookup(v4("203.0.113.1")), Some(Hop::OnLink));
    }
}
