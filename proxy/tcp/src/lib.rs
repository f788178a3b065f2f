//! sluice's TCP: a sans-IO implementation of RFC 9293 with the extensions a Linux peer
//! expects (window scale, timestamps and PAWS per RFC 7323 with Linux's leniency for reordering,
//! SACK per RFC 2018 and RFC 6675, loss probes after RFC 8985 RACK-TLP, NewReno and CUBIC
//! congestion control, SYN cookies, RFC 5961 hardening).
//!
//! Nothing here reads a clock, touches a socket, spawns a thread or allocates per packet on the
//! fast path: buffers are allocated once per connection, sized by [`Config`] (and recycled). The
//! entry point is [`Endpoint`]; see the `endpoint` module for the order of calls.
//!
//! Modules: `seq` (sequence arithmetic), `time` (the caller's clock), `rtt` (RFC 6298),
//! `congestion` (NewReno, CUBIC, RFC 6928 IW), `ranges`/`recv_buffer` (reassembly, SACK blocks),
//! `ring` (stream buffers), `sack` (RFC 6675 scoreboard), `rack` (RFC 8985 loss-probe timer), `isn` (RFC 6528, SipHash-2-4),
//! `syncookie`, `timer` (the endpoint's timer heap), `connection` (one TCB, the RFC 9293 state
//! machine), `endpoint` (demultiplexing, listeners, SYN queue and cookies). `sim` (feature
//! `sim`) is a deterministic two-endpoint simulator; `fuzz` (feature `fuzzing`) the fuzz body.
#![forbid(unsafe_code)]

pub mod config;
pub mod congestion;
pub mod connection;
pub mod endpoint;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod isn;
pub mod rack;
pub mod ranges;
pub mod recv_buffer;
pub mod ring;
pub mod rtt;
pub mod sack;
pub mod seq;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod syncookie;
pub mod time;
pub mod timer;

pub use config::{
    Config, ConnectError, ConnectionHandle, DropReason, Event, FourTuple, Keepalive, ListenError, PathMtuIgnored,
    RateLimiter, Stats, StreamError,
};
pub use congestion::Algorithm;
pub use connection::State;
pub use endpoint::Endpoint;
pub use seq::SeqNumber;
pub use time::Instant;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;
