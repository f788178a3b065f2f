//! sluice's TLS layer: rustls glue for the bypass path.
//!
//! - [`config`]: `TlsSettings` (the per-listener TOML table) and [`config::build`], which makes
//!   the rustls `ServerConfig`: SNI certificate choice, ALPN, versions, groups, suites, mTLS,
//!   resumption mode.
//! - [`cache`]: [`SessionCache`], the sharded, bounded session store shared by every worker
//!   (TLS 1.2 session IDs and TLS 1.3 stateful resumption).
//! - [`tickets`]: [`tickets::KeyFileTicketer`], stateless tickets under keys from nginx-format
//!   ticket key files, so that a fleet resumes each other's tickets.
//! - [`session`]: [`TlsSession`], one server connection driven sans-IO from the TCP byte stream,
//!   with handshake timestamps and [`HandshakeInfo`].
//! - `testcerts` (feature `testcerts`): demo and test certificates; `testhello` (same
//!   feature): hand-built ClientHellos of any size, for the large-handshake tests.
//!
//! Provider: rustls 0.23 with aws-lc-rs. Nothing here reads a clock except through the
//! `TimeProvider` given to the cache (and rustls's own validity checks).

#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod session;
#[cfg(any(test, feature = "testcerts"))]
pub mod testcerts;
#[cfg(any(test, feature = "testcerts"))]
pub mod testhello;
pub mod tickets;

#[cfg(test)]
mod tests;

pub use cache::{CacheStats, ManualClock, PolicyStore, SessionCache, SessionCacheConfig, WriteBehind};
pub use config::{
    CertSettings, Disk, FileSource, Resumption, TlsConfigError, TlsSettings, build, build_with, files_named,
};
pub use rustls;
pub use session::{
    DEFAULT_BUFFER_LIMIT, DEFAULT_MAX_HANDSHAKE_IN, HandshakeInfo, RUSTLS_MAX_HANDSHAKE_BUFFER, TlsError, TlsSession,
};
