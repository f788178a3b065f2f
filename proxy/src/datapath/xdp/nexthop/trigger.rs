//! Triggering the kernel's neighbour resolution (ARP, RFC 826; Neighbor Discovery, RFC 4861
//! 7.2) for a next hop that has no usable entry, the way an unprivileged program can: send the
//! kernel a datagram for that next hop. The kernel creates the entry (INCOMPLETE), queues the
//! datagram, sends the ARP request or Neighbor Solicitation, and announces the answer as an
//! `RTM_NEWNEIGH` that [`super::Reader`] applies.
//!
//! Why not `RTM_NEWNEIGH` with `NTF_USE` (what `ip neigh ... use` sends, neigh_event_send in
//! the kernel): it needs CAP_NET_ADMIN, checked on every message against the sender and the
//! socket's opener, and sluice's workers run with no capability. A UDP datagram needs none.
//!
//! The datagram: zero bytes of UDP to port 9 (discard, RFC 863) of the next hop itself, never
//! of the destination behind it, from one unconnected socket per family bound to sluice's
//! interface (`SO_BINDTOIFINDEX`, allowed unprivileged on an unbound socket since Linux 5.7),
//! IPv4 with `MSG_DONTROUTE` (only on-link destinations). So nothing leaves the link: the
//! next hop gets an empty datagram it discards or answers with an ICMP port unreachable,
//! which an unconnected socket does not report. A next hop is triggered at most once per
//! [`super::Limits::trigger_interval`] ([`Table::may_trigger`]).

use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::num::NonZeroU32;

use sluice_tcp::Instant;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::table::Table;

/// The discard port (RFC 863).
const DISCARD_PORT: u16 = 9;

/// Sends resolution triggers on sluice's interface; see the module docs.
#[derive(Debug)]
pub struct Prober {
    ifindex: NonZeroU32,
    v4: Socket,
    v6: Option<Socket>,
}

impl Prober {
    /// Opens the two sockets, bound to interface `ifindex` (in the calling thread's network
    /// namespace). A host without IPv6 gets an IPv4 prober only.
    pub fn new(ifindex: u32) -> std::io::Result<Self> {
        let ifindex = NonZeroU32::new(ifindex)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "interface index 0"))?;
        let v4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        v4.set_nonblocking(true)?;
        v4.bind_device_by_index_v4(Some(ifindex))?;
        let v6 = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
            Ok(s) => {
                s.set_nonblocking(true)?;
                s.bind_device_by_index_v6(Some(ifindex))?;
                Some(s)
            }
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => None,
            Err(e) => return Err(e),
        };
        Ok(Self { ifindex, v4, v6 })
    }

    /// Triggers resolution of `next_hop` (a [`super::Resolution::Pending`]'s address) unless
    /// the rate limit says it was triggered recently; whether a datagram was handed to the
    /// kernel. Counted in `triggers`, `triggers_limited`, `trigger_errors`.
    pub fn trigger(&self, table: &mut Table, now: Instant, next_hop: IpAddr) -> bool {
        if !table.may_trigger(now, next_hop) {
            return false;
        }
        let sent = match next_hop {
            IpAddr::V4(a) => {
                let to = SockAddr::from(SocketAddr::new(IpAddr::V4(a), DISCARD_PORT));
                self.v4.send_to_with_flags(&[], &to, libc::MSG_DONTROUTE)
            }
            IpAddr::V6(a) => match &self.v6 {
                Some(s) => {
                    // A link-local next hop (the usual IPv6 gateway) needs its link named.
                    let scope = if a.is_unicast_link_local() { self.ifindex.get() } else { 0 };
                    let to = SockAddr::from(SocketAddrV6::new(a, DISCARD_PORT, 0, scope));
                    s.send_to(&[], &to)
                }
                None => Err(std::io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            },
        };
        let counters = table.counters_mut();
        match sent {
            Ok(_) => {
                counters.triggers += 1;
                true
            }
            Err(_) => {
                counters.trigger_errors += 1;
                false
            }
        }
    }
}
