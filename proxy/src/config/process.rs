//! The process sections: `[process]` (the user and group sluice switches to once set up),
//! `[log]`, `[limits]` (connection limits) and `[drain]` (what SIGTERM and SIGINT do).

use serde::Deserialize;

/// The process: who sluice runs as once it is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Process {
    /// After the XDP program is attached, the sockets are open and the keys are read, switch to
    /// this user (name or numeric id) and keep only the capabilities still needed (none with
    /// the XDP transport). Unset: keep running as started.
    pub user: Option<String>,
    /// The group to switch to; default: the user's primary group.
    pub group: Option<String>,
}

/// What SIGTERM and SIGINT do: stop accepting, let open connections finish, then close the rest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drain {
    /// How long open connections may take to finish; then they are reset and sluice exits.
    pub deadline_ms: u64,
    /// New connections while draining: `reset` (sluice answers the SYN with a RST) or `pass`
    /// (the XDP program passes SYNs to the kernel, e.g. to another server taking over).
    pub new_connections: DrainNew,
}

impl Default for Drain {
    fn default() -> Self {
        Self { deadline_ms: 30_000, new_connections: DrainNew::Reset }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainNew {
    Reset,
    Pass,
}

/// Connection limits; 0 means no limit. A connection past a limit is refused with a RST and
/// counted (`refused_limit_*`); connections already open are never touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections over all workers.
    pub max_connections: u64,
    /// Open connections of one worker.
    pub max_connections_per_worker: u64,
    /// Open connections from one client IPv4 address.
    pub max_connections_per_client: u64,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A `tracing` filter: `error`, `warn`, `info`, `debug`, `trace`, or per module
    /// (`info,sluice::datapath::xdp::worker=debug`). The environment variable `SLUICE_LOG` overrides it.
    pub level: String,
    /// One line per connection when it ends (target `sluice::access`): client, listener, SNI,
    /// TLS version, resumed, handshake time, bytes each way, duration, how it ended.
    pub access_log: bool,
    /// `text` or `json` lines on standard error.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self { level: "info".into(), access_log: false, format: LogFormat::Text }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
