//! Tests of the table fed the way the reader feeds it: netlink messages built in memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteScope, RouteType,
};
use sluice_tcp::Instant;
use sluice_wire::ethernet::Address as MacAddress;

use super::messages::{apply_neighbour, apply_route};
use super::*;

const IF: u32 = 4;
const OTHER_IF: u32 = 5;
const MAC_A: MacAddress = MacAddress([2, 0, 0, 0, 0, 0xa]);
const MAC_B: MacAddress = MacAddress([2, 0, 0, 0, 0, 0xb]);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn table() -> Table {
    Table::new(IF, Limits::default())
}

/// `RTM_NEWROUTE`: `dst/len [via gw] dev oif metric m`, table main, unicast.
fn route(dst: &str, len: u8, gw: Option<&str>, oif: u32, metric: u32) -> RouteMessage {
    let dst = ip(dst);
    let mut m = RouteMessage::default();
    m.header.address_family = if dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.destination_prefix_length = len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.kind = RouteType::Unicast;
    m.header.scope = if gw.is_some() { RouteScope::Universe } else { RouteScope::Link };
    if len > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(gw) = gw {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(ip(gw))));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    m.attributes.push(RouteAttribute::Priority(metric));
    m
}

/// `RTM_NEWNEIGH`: `ip lladdr mac dev ifindex nud state`.
fn neighbour(addr: &str, mac: Option<MacAddress>, state: NeighbourState, ifindex: u32) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    let addr = ip(addr);
    m.header.family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.ifindex = ifindex;
    m.header.state = state;
    m.attributes.push(NeighbourAttribute::Destination(match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    if let Some(mac) = mac {
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    }
    m
}

// Tests for routes.

#[test]
fn default_route_via_gateway_and_connected_prefix() {
    let mut t = table();
    apply_route(&mut t, &route("0.0.0.0", 0, Some("198.51.100.254"), IF, 0), true);
    apply_route(&mut t, &route("198.51.100.0", 24, None, IF, 0), true);
    assert_eq!(t.resolve(ip("192.0.2.9")), Resolution::Pending(ip("198.51.100.254")));
    assert_eq!(t.resolve(ip("198.51.100.7")), Resolution::Pending(ip("198.51.100.7")), "on-link");
    apply_neighbour(&mut t, &neighbour("198.51.100.254", Some(MAC_A), NeighbourState::Reachable, IF), true);
    apply_neighbour(&mut t, &neighbour("198.51.100.7", Some(MAC_B), NeighbourState::Stale, IF), true);
    assert_eq!(t.resolve(ip("192.0.2.9")), Resolution::Ready(MAC_A));
    assert_eq!(t.resolve(ip("203.0.113.200")), Resolution::Ready(MAC_A));
    assert_eq!(t.resolve(ip("198.51.100.7")), Resolution::Ready(MAC_B));
    let c = t.counters();
    assert_eq!((c.lookups_pending, c.lookups_ready, c.routes, c.neighbours), (2, 3, 2, 2));
}

#[test]
fn no_route_other_interface_and_reject_are_unreachable() {
    let mut t = table();
    assert_eq!(t.resolve(ip("192.0.2.1")), Resolution::Unreachable, "empty table");
    apply_route(&mut t, &route("0.0.0.0", 0, Some("198.51.100.254"), IF, 0), true);
    apply_route(&mut t, &route("203.0.113.0", 24, None, OTHER_IF, 0), true);
    let mut blackhole = route("192.0.2.0", 24, None, IF, 0);
    blackhole.header.kind = RouteType::BlackHole;
    apply_route(&mut t, &blackhole, true);
    apply_neighbour(&mut t, &neighbour("198.51.100.254", Some(MAC_A), NeighbourState::Permanent, IF), true);
    assert_eq!(t.resolve(ip("203.0.113.2")), Resolution::Unreachable, "more specific, elsewhere");
    assert_eq!(t.resolve(ip("192.0.2.1")), Resolution::Unreachable, "blackhole");
    assert_eq!(t.resolve(ip("198.18.0.1")), Resolution::Ready(MAC_A));
    assert_eq!(t.counters().lookups_unreachable, 3);
}

#[test]
fn ipv6_default_via_link_local_and_on_link() {
    let mut t = table();
    apply_route(&mut t, &route("::", 0, Some("fe80::1"), IF, 1024), true);
    apply_route(&mut t, &route("2001:db8:100::", 64, None, IF, 256), true);
    assert_eq!(t.resolve(ip("2001:db8:203::2")), Resolution::Pending(ip("fe80::1")));
    assert_eq!(t.resolve(ip("2001:db8:100::1")), Resolution::Pending(ip("2001:db8:100::1")));
    apply_neighbour(&mut t, &neighbour("fe80::1", Some(MAC_A), NeighbourState::Reachable, IF), true);
    apply_neighbour(&mut t, &neighbour("2001:db8:100::1", Some(MAC_B), NeighbourState::Delay, IF), true);
    assert_eq!(t.resolve(ip("2001:db8:203::2")), Resolution::Ready(MAC_A));
    assert_eq!(t.resolve(ip("2001:db8:100::1")), Resolution::Ready(MAC_B));
    // The IPv4 table is separate: no IPv4 route.
    assert_eq!(t.resolve(ip("198.51.100.1")), Resolution::Unreachable);
}

#[test]
fn route_delete_and_metric() {
    let mut t = table();
    apply_route(&mut t, &route("192.0.2.0", 24, Some("198.51.100.1"), IF, 100), true);
    apply_route(&mut t, &route("192.0.2.0", 24, Some("198.51.100.2"), IF, 50), true);
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Pending(ip("198.51.100.2")), "lowest metric");
    apply_route(&mut t, &route("192.0.2.0", 24, None, IF, 50), false);
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Pending(ip("198.51.100.1")));
    apply_route(&mut t, &route("192.0.2.0", 24, None, IF, 100), false);
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Unreachable);
    assert_eq!(t.counters().routes, 0);
}

#[test]
fn routes_outside_main_or_with_tos_are_ignored() {
    let mut t = table();
    let mut local = route("198.51.100.2", 32, None, IF, 0);
    local.header.table = 255;
    local.header.kind = RouteType::Local;
    apply_route(&mut t, &local, true);
    let mut other_table = route("192.0.2.0", 24, Some("198.51.100.1"), IF, 0);
    other_table.header.table = 0;
    other_table.attributes.push(RouteAttribute::Table(100));
    apply_route(&mut t, &other_table, true);
    let mut tos = route("203.0.113.0", 24, Some("198.51.100.1"), IF, 0);
    tos.header.tos = 0x10;
    apply_route(&mut t, &tos, true);
    assert_eq!(t.counters().routes, 0);
    // RTA_TABLE wins over the header's 8-bit field.
    let mut main = route("192.0.2.0", 24, Some("198.51.100.1"), IF, 0);
    main.header.table = 0;
    main.attributes.push(RouteAttribute::Table(254));
    apply_route(&mut t, &main, true);
    assert_eq!(t.counters().routes, 1);
}

#[test]
fn multipath_takes_the_hop_on_our_interface() {
    let mut t = table();
    let mut m = route("192.0.2.0", 24, None, IF, 0);
    m.attributes.retain(|a| !matches!(a, RouteAttribute::Oif(_)));
    let hop = |ifindex: u32, gw: &str| {
        let mut h = RouteNextHop::default();
        h.interface_index = ifindex;
        h.attributes.push(RouteAttribute::Gateway(RouteAddress::from(ip(gw))));
        h
    };
    m.attributes.push(RouteAttribute::MultiPath(vec![hop(OTHER_IF, "203.0.113.9"), hop(IF, "198.51.100.9")]));
    apply_route(&mut t, &m, true);
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Pending(ip("198.51.100.9")));
}

#[test]
fn malformed_routes_are_counted() {
    let mut t = table();
    apply_route(&mut t, &route("192.0.2.0", 33, None, IF, 0), true);
    let mut mixed = route("192.0.2.0", 24, None, IF, 0);
    mixed.header.address_family = AddressFamily::Inet6;
    apply_route(&mut t, &mixed, true);
    assert_eq!((t.counters().malformed, t.counters().routes), (2, 0));
}

// Tests for neighbours.

#[test]
fn neighbour_states_usable_or_not() {
    let mut t = table();
    apply_route(&mut t, &route("198.51.100.0", 24, None, IF, 0), true);
    let dst = ip("198.51.100.1");
    let set = |t: &mut Table, state, mac| apply_neighbour(t, &neighbour("198.51.100.1", mac, state, IF), true);
    set(&mut t, NeighbourState::Incomplete, None);
    assert_eq!(t.peek(dst), Resolution::Pending(dst));
    for state in [NeighbourState::Reachable, NeighbourState::Stale, NeighbourState::Delay, NeighbourState::Probe] {
        set(&mut t, state, Some(MAC_A));
        assert_eq!(t.peek(dst), Resolution::Ready(MAC_A), "{state:?}");
    }
    // FAILED: the kernel keeps the old address in the message, but it is not to be used.
    set(&mut t, NeighbourState::Failed, Some(MAC_A));
    assert_eq!(t.peek(dst), Resolution::Pending(dst));
    set(&mut t, NeighbourState::Permanent, Some(MAC_B));
    assert_eq!(t.peek(dst), Resolution::Ready(MAC_B));
    set(&mut t, NeighbourState::None, Some(MAC_B));
    assert_eq!(t.peek(dst), Resolution::Pending(dst));
    set(&mut t, NeighbourState::Reachable, Some(MAC_A));
    apply_neighbour(&mut t, &neighbour("198.51.100.1", None, NeighbourState::Reachable, IF), false);
    assert_eq!(t.peek(dst), Resolution::Pending(dst), "deleted");
    assert_eq!(t.counters().neighbours, 0);
}

#[test]
fn neighbours_of_other_interfaces_proxies_and_bad_addresses_are_ignored() {
    let mut t = table();
    apply_route(&mut t, &route("198.51.100.0", 24, None, IF, 0), true);
    apply_neighbour(&mut t, &neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Reachable, OTHER_IF), true);
    let mut proxy = neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Reachable, IF);
    proxy.header.flags = NeighbourFlags::Proxy;
    apply_neighbour(&mut t, &proxy, true);
    let mut bridge = neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Reachable, IF);
    bridge.header.family = AddressFamily::Bridge;
    apply_neighbour(&mut t, &bridge, true);
    let mut short = neighbour("198.51.100.1", None, NeighbourState::Reachable, IF);
    short.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![1, 2, 3]));
    apply_neighbour(&mut t, &short, true);
    assert_eq!(t.peek(ip("198.51.100.1")), Resolution::Pending(ip("198.51.100.1")));
    assert_eq!((t.counters().neighbours, t.counters().malformed), (0, 1));
}

#[test]
fn caps_hold_and_are_counted() {
    let limits = Limits { max_routes: 2, max_neighbours: 2, ..Limits::default() };
    let mut t = Table::new(IF, limits);
    apply_route(&mut t, &route("198.51.100.0", 24, None, IF, 0), true);
    apply_route(&mut t, &route("2001:db8:100::", 64, None, IF, 0), true);
    apply_route(&mut t, &route("192.0.2.0", 24, None, IF, 0), true);
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Unreachable, "over the cap (both families)");
    for (i, addr) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"].iter().enumerate() {
        let mac = MacAddress([2, 0, 0, 0, 0, i as u8]);
        apply_neighbour(&mut t, &neighbour(addr, Some(mac), NeighbourState::Reachable, IF), true);
    }
    assert_eq!(t.peek(ip("198.51.100.3")), Resolution::Pending(ip("198.51.100.3")));
    // An update of a stored neighbour still applies when full.
    apply_neighbour(&mut t, &neighbour("198.51.100.1", Some(MAC_B), NeighbourState::Stale, IF), true);
    assert_eq!(t.peek(ip("198.51.100.1")), Resolution::Ready(MAC_B));
    let c = t.counters();
    assert_eq!((c.routes, c.routes_overflow, c.neighbours, c.neighbours_overflow), (2, 1, 2, 1));
}

// Tests for dumps.

#[test]
fn a_dump_sweeps_what_it_did_not_see() {
    let mut t = table();
    apply_route(&mut t, &route("192.0.2.0", 24, Some("198.51.100.1"), IF, 0), true);
    apply_route(&mut t, &route("203.0.113.0", 24, Some("198.51.100.1"), IF, 0), true);
    apply_neighbour(&mut t, &neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Reachable, IF), true);
    apply_neighbour(&mut t, &neighbour("198.51.100.9", Some(MAC_B), NeighbourState::Reachable, IF), true);
    // Notifications lost; the re-dump sees one route and one neighbour.
    t.begin_route_dump();
    apply_route(&mut t, &route("192.0.2.0", 24, Some("198.51.100.1"), IF, 0), true);
    t.end_route_dump();
    t.begin_neighbour_dump();
    apply_neighbour(&mut t, &neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Stale, IF), true);
    t.end_neighbour_dump();
    assert_eq!(t.peek(ip("192.0.2.1")), Resolution::Ready(MAC_A));
    assert_eq!(t.peek(ip("203.0.113.1")), Resolution::Unreachable);
    let c = t.counters();
    assert_eq!((c.routes, c.neighbours), (1, 1));
}

// Tests for the trigger rate limit.

#[test]
fn triggers_are_limited_per_next_hop() {
    let limits = Limits { trigger_interval: Duration::from_secs(1), max_triggered: 2, ..Limits::default() };
    let mut t = Table::new(IF, limits);
    let (a, b, c) = (ip("198.51.100.1"), ip("198.51.100.2"), ip("2001:db8:100::3"));
    let t0 = Instant::from_millis(10_000);
    assert!(t.may_trigger(t0, a));
    assert!(!t.may_trigger(t0 + Duration::from_millis(999), a), "within the interval");
    assert!(t.may_trigger(t0 + Duration::from_millis(100), b));
    assert!(!t.may_trigger(t0 + Duration::from_millis(200), c), "two next hops remembered, both recent");
    assert!(t.may_trigger(t0 + Duration::from_millis(1000), a), "interval over");
    assert!(t.may_trigger(t0 + Duration::from_millis(1150), c), "b's slot is old and forgotten");
    assert_eq!(t.counters().triggers_limited, 2);
}

#[test]
fn a_resolved_next_hop_may_be_triggered_again_at_once_after_it_fails() {
    let mut t = table();
    let a = ip("198.51.100.1");
    assert!(t.may_trigger(Instant::ZERO, a));
    apply_neighbour(&mut t, &neighbour("198.51.100.1", Some(MAC_A), NeighbourState::Reachable, IF), true);
    apply_neighbour(&mut t, &neighbour("198.51.100.1", None, NeighbourState::Failed, IF), true);
    assert!(t.may_trigger(Instant::from_millis(1), a));
}

#[test]
fn nud_usable_is_the_kernels_nud_valid() {
    use NudState::*;
    let usable: Vec<_> =
        [Incomplete, Reachable, Stale, Delay, Probe, Failed, NoArp, Permanent, None].map(NudState::usable).to_vec();
    assert_eq!(usable, [false, true, true, true, true, false, true, true, false]);
}

#[test]
fn v6_addresses_stay_apart_from_v4_ones() {
    // ::c633:6401 has the same low 32 bits as 198.51.100.1: the families must not mix.
    let mut t = table();
    apply_route(&mut t, &route("198.51.100.0", 24, None, IF, 0), true);
    let mapped = IpAddr::V6(Ipv6Addr::from(u128::from(u32::from(Ipv4Addr::new(198, 51, 100, 1)))));
    assert_eq!(t.peek(mapped), Resolution::Unreachable);
}
