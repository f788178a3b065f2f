//! Where the XDP transport sends a reply: the next hop of a destination from the kernel's
//! routing table (table main) and its MAC address from the kernel's neighbour table, both read
//! through rtnetlink and kept current from their change notifications. sluice follows the host's
//! configuration, gateways included, and no received frame can redirect anyone's replies:
//! nothing here is learned from frames.
//!
//! It is not a resolver of its own: ARP (RFC 826) and Neighbor Discovery (RFC 4861) stay the
//! kernel's. sluice only asks the kernel to resolve a next hop it has no entry for ([`Prober`]).
//!
//! # Pieces
//! - [`Table`], sans-IO: routes of both families with longest-prefix match, usable neighbours
//!   (`NUD_VALID`: REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT) of one interface, the
//!   per-next-hop trigger rate limit, and [`Counters`]. Bounded by [`Limits`]: past the caps,
//!   entries are not stored and counted (`routes_overflow`, `neighbours_overflow`).
//! - [`Reader`]: a non-blocking rtnetlink socket; dumps at [`Reader::open`], then
//!   [`Reader::poll`] applies notifications and re-dumps when notifications were lost (ENOBUFS).
//! - [`Prober`]: triggers resolution with an empty UDP datagram to the next hop (see
//!   `trigger.rs` for why that and not `RTM_NEWNEIGH`), rate-limited per next hop.
//!
//! # Use (one set per worker, or one shared behind the worker's own lock)
//! ```text
//! // At start, in the proxy's namespace (no privilege needed):
//! let mut table = Table::new(ifindex, Limits::default());
//! let mut reader = Reader::open(&mut table, Duration::from_secs(5))?;
//! let prober = Prober::new(ifindex)?;
//! // In the worker's loop: poll `reader.as_fd()` with the AF_XDP socket, then
//! reader.poll(&mut table)?;
//! // Per frame out:
//! match table.resolve(client_ip) {
//!     Resolution::Ready(mac) => { /* Ethernet destination = mac */ }
//!     Resolution::Pending(next_hop) => { prober.trigger(&mut table, now, next_hop); /* hold */ }
//!     Resolution::Unreachable => { /* count, drop */ }
//! }
//! // Export table.counters().
//! ```
//! A held frame is the caller's: re-ask `resolve` after the next `poll` that applied a
//! neighbour change, and give up after a short while (the kernel's own resolution gives up
//! after `mcast_solicit` probes, 3 s by default, and reports the entry FAILED).

mod messages;
mod reader;
mod routes;
mod table;
mod trigger;

#[cfg(test)]
mod tests;

pub use reader::{Reader, ReaderError};
pub use routes::{Hop, Route};
pub use table::{Counters, Limits, NudState, Resolution, Table};
pub use trigger::Prober;
