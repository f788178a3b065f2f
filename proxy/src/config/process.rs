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
/// counted (`refused_limit_*`); connections already open are never touched. On by default at
/// what the host can hold (see [`Limits::resolved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections over all workers (absent: the memory budget over
    /// [`BUSY_CONNECTION_BYTES`]).
    pub max_connections: Option<u64>,
    /// Open connections of one worker.
    pub max_connections_per_worker: u64,
    /// Open connections from one client (an IPv4 address or an IPv6 /64). 1,024 by default:
    /// more than a browser or an API client opens, fewer than a flood; raise it for large NATs.
    pub max_connections_per_client: u64,
    /// Bytes the connections may hold in all: their TCP buffers, relay queues and a fixed
    /// charge per connection for its TCP, TLS and relay state ([`CONNECTION_BYTES`]). Past it,
    /// new connections are refused (`refused_limit_memory`). An integer of bytes or a string
    /// with a unit (`"512MiB"`, `"4GiB"`); absent: half of the memory sluice may use (the
    /// smaller of the host's and its cgroup's limit); 0: no limit.
    #[serde(deserialize_with = "bytes")]
    pub memory: Option<u64>,
}

/// What one connection is charged for its state beside its buffers (the TCB, TLS and relay
/// state, table entries), about what an idle TLS connection was measured to cost.
pub const CONNECTION_BYTES: u64 = 16 * 1024;

/// What a busy connection is assumed to hold (its buffers partly filled): the default total
/// connection limit is the memory budget over this.
pub const BUSY_CONNECTION_BYTES: u64 = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self { max_connections: None, max_connections_per_worker: 0, max_connections_per_client: 1024, memory: None }
    }
}

impl Limits {
    /// The limits with every default worked out for this host (`memory_available` bytes):
    /// `memory` and `max_connections` are then `Some`.
    #[must_use]
    pub fn resolved(self, memory_available: u64) -> Self {
        let memory = self.memory.unwrap_or(memory_available / 2);
        let max_connections = self.max_connections.unwrap_or(match memory {
            0 => 0,
            m => (m / BUSY_CONNECTION_BYTES).max(1),
        });
        Self { memory: Some(memory), max_connections: Some(max_connections), ..self }
    }
}

/// A byte count: an integer, or a string with a unit (B, KiB, MiB, GiB, TiB; KB, MB, GB, TB in
/// powers of ten).
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Some(n)),
        Raw::Text(t) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?}: expected a number of bytes, such as \"512MiB\""))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        u => return Err(format!("{text:?}: unknown unit {u:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{text:?}: too large"))
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
