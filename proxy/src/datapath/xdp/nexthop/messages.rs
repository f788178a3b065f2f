//! rtnetlink route and neighbour messages (`RTM_NEWROUTE`, `RTM_DELROUTE`, `RTM_NEWNEIGH`,
//! `RTM_DELNEIGH`, from a dump or a notification) applied to a [`Table`]. Pure: what is kept and
//! what is ignored is decided here, so the unit tests can feed it messages without a socket.
//!
//! Kept: unicast routes of table main without TOS or source prefix (sluice's frames carry
//! TOS 0 and any source), and reject routes (`blackhole`, `unreachable`, `prohibit`, `throw`)
//! which shadow shorter prefixes. A route out of another interface is kept as
//! [`Hop::OtherInterface`]. Of a multipath route the first next hop on sluice's interface is
//! used. Neighbours: IPv4 and IPv6 entries of sluice's interface, not proxy entries.

use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType, RouteVia};
use sluice_wire::ethernet::Address as MacAddress;

use super::routes::{Hop, Route};
use super::table::{NudState, Table};

/// Applies a route message; `add` for `RTM_NEWROUTE`, else `RTM_DELROUTE`.
pub(super) fn apply_route(table: &mut Table, msg: &RouteMessage, add: bool) {
    let h = &msg.header;
    let width = match h.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return,
    };
    let table_id = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table_id != u32::from(RouteHeader::RT_TABLE_MAIN) || h.tos != 0 || h.source_prefix_length != 0 {
        return;
    }
    let reject = match h.kind {
        RouteType::Unicast => false,
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit | RouteType::Throw => true,
        _ => return,
    };
    if h.destination_prefix_length > width {
        table.counters_mut().malformed += 1;
        return;
    }
    let mut destination = None;
    let mut metric = 0;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => destination = ip(d),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let unspecified = if width == 32 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u8; 16]) };
    let destination = match destination {
        Some(d) if d.is_ipv4() == (width == 32) => d,
        Some(_) => {
            table.counters_mut().malformed += 1;
            return;
        }
        // The default route has no RTA_DST.
        None => unspecified,
    };
    if !add {
        table.remove_route(destination, h.destination_prefix_length, metric);
        return;
    }
    let hop = if reject { Hop::Reject } else { unicast_hop(table.ifindex(), None, &msg.attributes) };
    table.add_route(Route { destination, prefix_len: h.destination_prefix_length, metric, hop });
}

/// Where a unicast route goes: `RTA_OIF` + `RTA_GATEWAY` (or `RTA_VIA`), or the first next hop
/// of `RTA_MULTIPATH` on `ifindex`. `oif` is the interface already known (a multipath hop's).
fn unicast_hop(ifindex: u32, mut oif: Option<u32>, attributes: &[RouteAttribute]) -> Hop {
    let mut gateway = None;
    for a in attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Via(RouteVia::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            RouteAttribute::MultiPath(hops) if oif.is_none() => {
                return hops
                    .iter()
                    .find(|h| h.interface_index == ifindex)
                    .map_or(Hop::OtherInterface, |h| unicast_hop(ifindex, Some(ifindex), &h.attributes));
            }
            _ => {}
        }
    }
    match (oif, gateway) {
        (Some(i), Some(gw)) if i == ifindex => Hop::Gateway(gw),
        (Some(i), None) if i == ifindex => Hop::OnLink,
        _ => Hop::OtherInterface,
    }
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Applies a neighbour message; `add` for `RTM_NEWNEIGH`, else `RTM_DELNEIGH`.
pub(super) fn apply_neighbour(table: &mut Table, msg: &NeighbourMessage, add: bool) {
    let h = &msg.header;
    if !matches!(h.family, AddressFamily::Inet | AddressFamily::Inet6)
        || h.ifindex != table.ifindex()
        || h.flags.contains(NeighbourFlags::Proxy)
    {
        return;
    }
    let mut destination = None;
    let mut lladdr = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => destination = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => destination = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = Some(l.as_slice()),
            _ => {}
        }
    }
    let Some(destination) = destination else {
        table.counters_mut().malformed += 1;
        return;
    };
    if !add {
        table.remove_neighbour(destination);
        return;
    }
    let mac = match lladdr {
        Some(l) => match <[u8; 6]>::try_from(l) {
            Ok(m) => Some(MacAddress(m)),
            Err(_) => {
                table.counters_mut().malformed += 1;
                None
            }
        },
        None => None,
    };
    table.set_neighbour(destination, nud(h.state), mac);
}

fn nud(state: NeighbourState) -> NudState {
    match state {
        NeighbourState::Incomplete => NudState::Incomplete,
        NeighbourState::Reachable => NudState::Reachable,
        NeighbourState::Stale => NudState::Stale,
        NeighbourState::Delay => NudState::Delay,
        NeighbourState::Probe => NudState::Probe,
        NeighbourState::Failed => NudState::Failed,
        NeighbourState::Noarp => NudState::NoArp,
        NeighbourState::Permanent => NudState::Permanent,
        _ => NudState::None,
    }
}
