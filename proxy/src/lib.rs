//! sluice: a TLS terminator for Linux that bypasses the kernel's TCP stack.
//!
//! An XDP program steers the packets of sluice's listeners into AF_XDP sockets, one per NIC
//! queue; a worker per queue runs sluice's own TCP stack on them. The layers, each a module or a
//! crate of its own:
//!
//! - [`sluice_wire`]: views and representations of Ethernet, IPv4 and TCP; checksums.
//! - [`sluice_tcp`]: the sans-IO TCP stack (RFC 9293 and friends).
//! - [`sluice_xsk`]: AF_XDP sockets and their rings: the only code of sluice with `unsafe`.
//! - [`loader`]: loads and attaches the XDP program (aya), fills its maps.
//! - [`worker`]: the per-queue loop that joins the above.
//! - [`kernel`]: the same TLS, relay and stats on kernel sockets (`transport = "kernel"`).
//! - [`config`]: the TOML configuration.
#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod flows;
pub mod kernel;
pub mod hlog;
pub mod latency;
pub mod limits;
pub mod privileges;
pub mod relay;
pub mod loader;
pub mod proxy_protocol;
pub mod metrics;
pub mod run;
pub mod stats;
pub mod stats_cli;
pub mod worker;
