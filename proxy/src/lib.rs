//! sluice: a TLS terminator for Linux that bypasses the kernel's TCP stack.
//!
//! An XDP program steers the packets of sluice's listeners into AF_XDP sockets, one per NIC
//! queue; a worker per queue runs sluice's own TCP stack on them. The layers, each a module or a
//! crate of its own, from the wire up:
//!
//! - [`sluice_wire`]: views and representations of Ethernet, IPv4 and TCP; checksums.
//! - [`sluice_tcp`]: the sans-IO TCP stack (RFC 9293 and friends).
//! - [`sluice_xsk`]: AF_XDP sockets and their rings: the only code of sluice with `unsafe`.
//! - [`sluice_tls`]: rustls settings, the shared session cache, the sans-IO `TlsSession`.
//! - [`session`]: one proxied connection, whatever carries it: TLS, the relay to a backend,
//!   backend pools and routes, the PROXY header, limits.
//! - [`datapath`]: the two transports that carry sessions: [`datapath::xdp`] (XDP, AF_XDP and
//!   sluice's TCP stack) and [`datapath::kernel`] (SO_REUSEPORT kernel sockets).
//! - [`observe`]: counters, latency histograms, `/metrics`, `/stats.json`, HdrHistogram logs,
//!   the admin endpoint and `sluice stats`; it knows neither transport.
//! - [`run`]: start, privileges, SIGHUP reload and SIGTERM drain, for either transport.
//! - [`config`]: the TOML configuration.
#![forbid(unsafe_code)]

pub mod config;
pub mod datapath;
pub mod observe;
pub mod run;
pub mod session;
