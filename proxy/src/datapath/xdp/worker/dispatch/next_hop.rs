//! Where a frame out goes: the Ethernet destination of every segment is the MAC address of its
//! next hop in the kernel's routes and neighbours ([`Table`], kept current by the loop's netlink
//! reader), never an address seen in a received frame, so no frame from the link can redirect
//! anyone's replies.
//!
//! A segment whose next hop the kernel has not resolved yet is held: copied aside (at most
//! [`MAX_HELD`] per worker, for at most [`HOLD_TIME`], counted `nexthop_held`) while the loop
//! triggers the kernel's resolution ([`Dispatch::take_triggers`]); it is sent when the
//! neighbour appears (`nexthop_released`) or dropped when it does not (`dropped_no_neighbor`).
//! A destination without a route through sluice's interface is dropped (`dropped_no_route`).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use sluice_tcp::Instant;
use sluice_wire::ethernet::{self, Address as MacAddress, EtherType};

use super::Dispatch;
use crate::datapath::xdp::nexthop::{Counters, Resolution, Table};

/// Segments held per worker for a next hop being resolved.
pub const MAX_HELD: usize = 256;
/// How long a held segment waits: the kernel gives a resolution up after three probes a
/// second apart (`mcast_solicit`, `retrans_time`) and marks the entry FAILED.
pub const HOLD_TIME: Duration = Duration::from_secs(3);

/// A segment waiting for its next hop: the whole frame, Ethernet header still to be written.
#[derive(Debug)]
pub(super) struct Held {
    next_hop: IpAddr,
    since: Instant,
    ethertype: EtherType,
    frame: Vec<u8>,
}

/// Segments waiting for their next hops, and the next hops to resolve.
#[derive(Debug, Default)]
pub(super) struct Waiting {
    held: VecDeque<Held>,
    /// Next hops whose resolution the loop should trigger.
    triggers: Vec<IpAddr>,
    /// The table changed since the held segments were last looked at.
    changed: bool,
}

/// The destination and EtherType of the IP packet `ip`; `None` if it is neither IPv4 nor IPv6.
fn destination(ip: &[u8]) -> Option<(IpAddr, EtherType)> {
    match ip.first()? >> 4 {
        4 => {
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(d)), EtherType::Ipv4))
        }
        6 => {
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(d)), EtherType::Ipv6))
        }
        _ => None,
    }
}

impl Dispatch {
    /// The kernel's routes and neighbours this worker sends by (the loop feeds it).
    pub fn next_hops(&mut self) -> &mut Table {
        self.waiting.changed = true;
        &mut self.nexthop
    }

    /// Next hops to trigger resolution of (see [`crate::datapath::xdp::nexthop::Prober`]).
    pub fn take_triggers(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.waiting.triggers)
    }

    /// What the table counted.
    pub fn next_hop_counters(&self) -> Counters {
        self.nexthop.counters()
    }

    /// Segments held now.
    pub fn held(&self) -> usize {
        self.waiting.held.len()
    }

    /// Writes the Ethernet header in front of the IP packet of `ip_len` bytes at
    /// `out[ethernet::HEADER_LEN..]`: the frame's length when it can go now; `None` when it was
    /// held or dropped (counted).
    pub(super) fn address(&mut self, now: Instant, out: &mut [u8], ip_len: usize) -> Option<usize> {
        let len = ethernet::HEADER_LEN + ip_len;
        let Some((dst, ethertype)) = out.get(ethernet::HEADER_LEN..len).and_then(destination) else {
            self.counters.dropped_malformed += 1;
            return None;
        };
        match self.nexthop.resolve(dst) {
            Resolution::Ready(mac) => {
                self.write_ethernet(out, mac, ethertype);
                Some(len)
            }
            Resolution::Pending(next_hop) => {
                if self.waiting.held.len() >= MAX_HELD {
                    self.counters.dropped_no_neighbor += 1;
                    return None;
                }
                self.counters.nexthop_held += 1;
                self.waiting.held.push_back(Held { next_hop, since: now, ethertype, frame: out[..len].to_vec() });
                if !self.waiting.triggers.contains(&next_hop) {
                    self.waiting.triggers.push(next_hop);
                }
                None
            }
            Resolution::Unreachable => {
                self.counters.dropped_no_route += 1;
                None
            }
        }
    }

    /// A held segment whose next hop is resolved now, written into `out` (its length); held
    /// segments past [`HOLD_TIME`] are dropped, counted. Looks only when the table changed or
    /// a segment may have expired.
    pub(super) fn release_held(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let expired = self.waiting.held.front().is_some_and(|h| now.saturating_duration_since(h.since) >= HOLD_TIME);
        if !self.waiting.changed && !expired {
            return None;
        }
        while self.waiting.held.front().is_some_and(|h| now.saturating_duration_since(h.since) >= HOLD_TIME) {
            self.waiting.held.pop_front();
            self.counters.dropped_no_neighbor += 1;
        }
        let ready = self.waiting.held.iter().enumerate().find_map(|(i, h)| match self.nexthop.peek(h.next_hop) {
            Resolution::Ready(mac) => Some((i, mac)),
            _ => None,
        });
        let Some((i, mac)) = ready else {
            self.waiting.changed = false;
            return None;
        };
        let held = self.waiting.held.remove(i)?;
        let Some(dst) = out.get_mut(..held.frame.len()) else {
            self.counters.dropped_tx_full += 1;
            return None;
        };
        dst.copy_from_slice(&held.frame);
        self.write_ethernet(out, mac, held.ethertype);
        self.counters.nexthop_released += 1;
        Some(held.frame.len())
    }

    fn write_ethernet(&self, out: &mut [u8], dst_addr: MacAddress, ethertype: EtherType) {
        let eth = ethernet::Repr { src_addr: self.local_mac, dst_addr, ethertype };
        eth.emit(&mut ethernet::Frame::new_unchecked(&mut out[..ethernet::HEADER_LEN]));
    }
}
