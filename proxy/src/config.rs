//! sluice's configuration: a TOML file, validated before anything is attached.
//!
//! Every error names the file, the field and what is wrong, e.g.
//! `configs/x.toml: listener[1].address: "198.51.100.2:99999" is not an IPv4 address and port`.
//! See `configs/netns.toml` for the test topology and `configs/example.toml` for every field.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration error: the file, the field (a dotted path), and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}{}{message}", file.display(), if field.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub datapath: Datapath,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub stats: Stats,
    #[serde(default)]
    pub tcp: Tcp,
    #[serde(default)]
    pub relay: Relay,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub process: Process,
    #[serde(default)]
    pub drain: Drain,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: Log,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Driver mode, falling back to generic (SKB) mode when the driver refuses.
    #[default]
    Auto,
    Native,
    Skb,
}

/// Which TCP stack serves the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// XDP steers the listeners' packets to AF_XDP sockets; sluice's own TCP stack serves them.
    #[default]
    Xdp,
    /// Kernel sockets (one SO_REUSEPORT listener per worker and listener): the same TLS, cache,
    /// relay and stats on Linux's TCP stack. The baseline, and the fallback without AF_XDP.
    Kernel,
}

/// Where and how sluice takes its packets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datapath {
    /// `xdp` (default) or `kernel`. With `kernel`, `interface` may be omitted and the XDP and
    /// AF_XDP fields below are not used.
    #[serde(default)]
    pub transport: Transport,
    /// Kernel transport: worker threads (pinned to cores in turn). Default: one per CPU.
    #[serde(default)]
    pub workers: Option<usize>,
    /// The interface whose traffic XDP steers (e.g. `px0`); required with the XDP transport.
    #[serde(default)]
    pub interface: String,
    #[serde(default)]
    pub xdp_mode: XdpModeSetting,
    /// Replace an XDP program that is already attached to the interface.
    #[serde(default)]
    pub force: bool,
    /// Queues to bind (one AF_XDP socket and one worker each). Default: every RX queue of the
    /// interface. Fewer than the interface has is refused: the XDP program would redirect to a
    /// queue without a socket and the kernel would answer sluice's flows itself.
    #[serde(default)]
    pub queues: Option<u32>,
    /// Ask for zero-copy AF_XDP; falls back to copy mode (logged) where the driver lacks it.
    #[serde(default)]
    pub zero_copy: bool,
    #[serde(default = "defaults::frames_per_queue")]
    pub frames_per_queue: u32,
    #[serde(default = "defaults::frame_size")]
    pub frame_size: u32,
    #[serde(default = "defaults::rx_ring_size")]
    pub rx_ring: u32,
    #[serde(default = "defaults::ring_size")]
    pub tx_ring: u32,
    #[serde(default = "defaults::rx_ring_size")]
    pub fill_ring: u32,
    #[serde(default = "defaults::ring_size")]
    pub completion_ring: u32,
    /// Verify IPv4 and TCP checksums of received frames (drop and count failures).
    #[serde(default = "defaults::yes")]
    pub verify_checksums: bool,
    /// How long a worker keeps polling its empty rings before it sleeps. A wake-up costs more
    /// than a few looks at the rings, but where cores are shared spinning costs the other
    /// threads: 0 (sleep at once) measured best on the 2-core test machine (half the CPU per
    /// connection at a fixed rate, the same latency); raise it on cores dedicated to sluice.
    #[serde(default = "defaults::busy_poll_us")]
    pub busy_poll_us: u64,
    /// Pin worker `i` to core `i` (modulo the cores). Best on a host whose cores serve sluice
    /// alone; where other busy processes share the cores, leaving placement to the scheduler
    /// keeps a worker from waiting behind them on its one core.
    #[serde(default = "defaults::yes")]
    pub pin_workers: bool,
}

/// sluice's TCP stack (every field optional; defaults follow Linux where RFCs leave a choice).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tcp {
    /// Receive buffer per connection (bytes): the largest window sluice advertises.
    pub recv_buffer: usize,
    /// Send buffer per connection (bytes).
    pub send_buffer: usize,
    /// Offer window scaling (RFC 7323), SACK (RFC 2018), timestamps (RFC 7323).
    pub window_scale: bool,
    pub sack: bool,
    pub timestamps: bool,
    /// Half-open connections per listener before SYN cookies answer.
    pub syn_queue: usize,
    pub syn_cookies: bool,
    /// TIME-WAIT, handshake timeout and idle timeout (0: none), in milliseconds.
    pub time_wait_ms: u64,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// `cubic` (RFC 9438) or `newreno` (RFC 5681, RFC 6582).
    pub congestion: Congestion,
    /// Keepalive (RFC 9293 3.8.4): idle time before the first probe (0: off), time between
    /// unanswered probes, and how many go unanswered before the connection is dropped.
    pub keepalive_idle_ms: u64,
    pub keepalive_interval_ms: u64,
    pub keepalive_probes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    Cubic,
    Newreno,
}

impl Default for Tcp {
    fn default() -> Self {
        Self {
            recv_buffer: 256 * 1024,
            send_buffer: 256 * 1024,
            window_scale: true,
            sack: true,
            timestamps: true,
            syn_queue: 1024,
            syn_cookies: true,
            time_wait_ms: 10_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            congestion: Congestion::Cubic,
            keepalive_idle_ms: 0,
            keepalive_interval_ms: 75_000,
            keepalive_probes: 9,
        }
    }
}

/// Relaying to backends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Bytes queued per direction and connection before the other side is paused.
    pub buffer: usize,
    /// Give up on a backend that has not accepted the connection after this long (the client
    /// is reset).
    pub backend_connect_timeout_ms: u64,
    /// Close a client that has not completed its TLS handshake this long after connecting.
    pub tls_handshake_timeout_ms: u64,
}

impl Default for Relay {
    fn default() -> Self {
        Self { buffer: 64 * 1024, backend_connect_timeout_ms: 5_000, tls_handshake_timeout_ms: 10_000 }
    }
}

/// The admin endpoint (a kernel socket): `/stats.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin endpoint listens; keep it on loopback or a management network.
    #[serde(default = "defaults::admin_address")]
    pub address: std::net::SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Self { address: defaults::admin_address() }
    }
}

/// The statistics export beyond the admin endpoint: an HdrHistogram interval log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Append every histogram's interval to this file (created anew at start; a relative path
    /// is taken from the configuration file's directory) every `interval_log_secs`.
    #[serde(default)]
    pub interval_log: Option<PathBuf>,
    #[serde(default = "defaults::interval_log_secs")]
    pub interval_log_secs: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self { interval_log: None, interval_log_secs: defaults::interval_log_secs() }
    }
}

impl Stats {
    /// The stats thread's interval log settings, if a log is configured.
    pub fn interval_log(&self) -> Option<crate::observe::stats::IntervalLogSettings> {
        self.interval_log.as_ref().map(|path| crate::observe::stats::IntervalLogSettings {
            path: path.clone(),
            every: std::time::Duration::from_secs(self.interval_log_secs),
        })
    }
}

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// Relay the connection's bytes to this backend over a kernel TCP socket.
    Relay(SocketAddrV4),
    /// Answer every SYN with a RST (connection refused): the listener is steered to sluice but
    /// serves nothing. The datapath's first form, and what tests of the datapath alone use.
    Refuse,
    /// TCP echo on sluice's own stack, no TLS, no backend (tests and benchmarks of the TCP stack).
    Echo,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port` that clients connect to; the IP must be an address of `datapath.interface`.
    pub address: String,
    /// Serve TCP echo (no TLS, no backend).
    #[serde(default)]
    pub echo: bool,
    /// Refuse every connection with a RST.
    #[serde(default)]
    pub refuse: bool,
    /// Relay accepted connections to this backend (`ip:port`, reached through the kernel).
    #[serde(default)]
    pub backend: Option<String>,
    /// Relay to several backends (`ip:port` each, at most 64): the one-backend form is `backend`.
    #[serde(default)]
    pub backends: Vec<String>,
    /// `round-robin` (default) or `least-connections`.
    #[serde(default)]
    pub balance: crate::session::backend::Balance,
    /// After a failed connect, skip that backend for this long (milliseconds).
    #[serde(default = "defaults::cooldown_ms")]
    pub cooldown_ms: u64,
    /// An active health check of the backends (a TCP connect each interval); absent: none.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Send a PROXY protocol v2 header first on every backend connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Routes by SNI and/or ALPN (first match wins; no match: the listener's backends).
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
    /// Terminate TLS on this listener (needs `backend`): certificates, versions, ALPN,
    /// resumption. Relative paths are taken from the configuration file's directory.
    #[serde(default)]
    pub tls: Option<sluice_tls::TlsSettings>,
}

/// `[listener.health_check]`: a TCP connect to every backend each `interval_ms`; one that does
/// not connect within `timeout_ms` is skipped until it does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "defaults::health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "defaults::health_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[[listener.route]]`: connections whose TLS handshake agreed on `sni` and/or `alpn` go to
/// `backends`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub alpn: Option<String>,
    pub backends: Vec<String>,
}

/// Parses a backend list (validated in `Config::validate`; unparsable entries are skipped).
fn addrs(list: &[String]) -> Vec<SocketAddrV4> {
    list.iter().filter_map(|b| b.parse().ok()).collect()
}

/// Checks a backend list: IPv4 `ip:port` each, concrete, no duplicates, 1 to 64 entries.
fn check_backends(field: &str, list: &[String]) -> Result<(), (String, String)> {
    if list.is_empty() || list.len() > crate::session::backend::MAX_BACKENDS {
        return Err((field.into(), format!("needs 1 to {} backends, not {}", crate::session::backend::MAX_BACKENDS, list.len())));
    }
    let mut seen = HashSet::new();
    for (j, b) in list.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let a: SocketAddrV4 =
            b.parse().map_err(|_| (f.clone(), format!("{b:?} is not an IPv4 address and port (ip:port)")))?;
        if a.port() == 0 || a.ip().is_unspecified() {
            return Err((f, format!("{a}: needs a concrete address and port")));
        }
        if !seen.insert(a) {
            return Err((f, format!("{a} is listed twice")));
        }
    }
    Ok(())
}

impl Listener {
    /// The default backends: `backend`, or `backends`.
    pub fn backend_addrs(&self) -> Vec<SocketAddrV4> {
        match &self.backend {
            Some(b) => addrs(std::slice::from_ref(b)),
            None => addrs(&self.backends),
        }
    }

    /// A route's backends.
    pub fn route_addrs(route: &Route) -> Vec<SocketAddrV4> {
        addrs(&route.backends)
    }

    pub fn socket_addr(&self) -> SocketAddrV4 {
        // Validated in `Config::validate`.
        self.address.parse().unwrap_or_else(|_| SocketAddrV4::new([0, 0, 0, 0].into(), 0))
    }

    /// `Relay` carries the first backend (all of them: [`Self::backend_addrs`]).
    pub fn mode(&self) -> ListenerMode {
        match self.backend_addrs().first() {
            // Validated in `Config::validate`.
            Some(b) => ListenerMode::Relay(*b),
            None if self.echo => ListenerMode::Echo,
            None => ListenerMode::Refuse,
        }
    }

    fn relays(&self) -> bool {
        self.backend.is_some() || !self.backends.is_empty()
    }
}

mod defaults {
    pub fn frames_per_queue() -> u32 {
        16384
    }
    pub fn frame_size() -> u32 {
        2048
    }
    pub fn ring_size() -> u32 {
        2048
    }
    /// RX and fill rings: what the kernel can queue for a worker that is busy for a moment. A
    /// frame that finds them full is dropped, and the client's retransmission timeout (200 ms
    /// and more; 1 s for a SYN) turns a short stall into a long one: deep rings queue instead.
    pub fn rx_ring_size() -> u32 {
        8192
    }
    pub fn admin_address() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9090))
    }
    pub fn interval_log_secs() -> u64 {
        10
    }
    pub fn busy_poll_us() -> u64 {
        0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn cooldown_ms() -> u64 {
        5_000
    }
    pub fn health_interval_ms() -> u64 {
        2_000
    }
    pub fn health_timeout_ms() -> u64 {
        1_000
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let err = |field: String, message: String| ConfigError { file: path.to_owned(), field, message };
        let config: Config = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| describe_position(text, s.start))
                .unwrap_or_default();
            err(field, e.message().to_owned())
        })?;
        config.validate().map_err(|(field, message)| err(field, message))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let d = &self.datapath;
        let f = |name: &str| format!("datapath.{name}");
        let xdp = d.transport == Transport::Xdp;
        if (xdp || !d.interface.is_empty())
            && (d.interface.is_empty() || d.interface.len() > 15 || d.interface.contains(['/', ' ']))
        {
            return Err((f("interface"), format!("{:?} is not an interface name", d.interface)));
        }
        if d.workers.is_some_and(|w| !(1..=1024).contains(&w)) {
            return Err((f("workers"), format!("{} must be from 1 to 1024", d.workers.unwrap_or(0))));
        }
        if d.queues == Some(0) {
            return Err((f("queues"), "must be at least 1".into()));
        }
        if !matches!(d.frame_size, 2048 | 4096) {
            return Err((f("frame_size"), format!("{} must be 2048 or 4096", d.frame_size)));
        }
        for (name, v) in [
            ("rx_ring", d.rx_ring),
            ("tx_ring", d.tx_ring),
            ("fill_ring", d.fill_ring),
            ("completion_ring", d.completion_ring),
        ] {
            if !v.is_power_of_two() || !(64..=16384).contains(&v) {
                return Err((f(name), format!("{v} must be a power of two from 64 to 16384")));
            }
        }
        if d.frames_per_queue < d.fill_ring + d.tx_ring || d.frames_per_queue > 1 << 20 {
            return Err((
                f("frames_per_queue"),
                format!(
                    "{} must be at least fill_ring + tx_ring ({}) and at most 1048576",
                    d.frames_per_queue,
                    d.fill_ring + d.tx_ring
                ),
            ));
        }
        let t = &self.tcp;
        if !(4096..=64 << 20).contains(&t.recv_buffer) {
            return Err(("tcp.recv_buffer".into(), format!("{} must be from 4096 to 67108864", t.recv_buffer)));
        }
        if !(4096..=64 << 20).contains(&t.send_buffer) {
            return Err(("tcp.send_buffer".into(), format!("{} must be from 4096 to 67108864", t.send_buffer)));
        }
        if t.syn_queue == 0 {
            return Err(("tcp.syn_queue".into(), "must be at least 1".into()));
        }
        if t.time_wait_ms > 240_000 {
            return Err(("tcp.time_wait_ms".into(), "at most 240000 (2 MSL of RFC 9293)".into()));
        }
        if t.keepalive_idle_ms > 0 && (t.keepalive_interval_ms == 0 || t.keepalive_probes == 0) {
            return Err((
                "tcp.keepalive_interval_ms".into(),
                "keepalive needs an interval and at least one probe".into(),
            ));
        }
        if t.handshake_timeout_ms == 0 {
            return Err(("tcp.handshake_timeout_ms".into(), "must be more than 0".into()));
        }
        if !(4096..=16 << 20).contains(&self.relay.buffer) {
            return Err(("relay.buffer".into(), format!("{} must be from 4096 to 16777216", self.relay.buffer)));
        }
        if self.relay.backend_connect_timeout_ms == 0 {
            return Err(("relay.backend_connect_timeout_ms".into(), "must be more than 0".into()));
        }
        if self.relay.tls_handshake_timeout_ms == 0 {
            return Err(("relay.tls_handshake_timeout_ms".into(), "must be more than 0".into()));
        }
        if !(1..=3600).contains(&self.stats.interval_log_secs) {
            return Err((
                "stats.interval_log_secs".into(),
                format!("{} must be from 1 to 3600", self.stats.interval_log_secs),
            ));
        }
        if self.stats.interval_log.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(("stats.interval_log".into(), "an empty path; leave it out for no log".into()));
        }
        if self.listeners.is_empty() {
            return Err(("listener".into(), "at least one [[listener]] is needed".into()));
        }
        if self.drain.deadline_ms > 3_600_000 {
            return Err(("drain.deadline_ms".into(), "at most 3600000 (an hour)".into()));
        }
        if self.process.user.as_deref() == Some("") {
            return Err(("process.user".into(), "empty; leave it out to keep the starting user".into()));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("{:?}: {e}", self.log.level)));
        }
        let mut seen = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let field = format!("listener[{i}].address");
            let addr: SocketAddrV4 = l
                .address
                .parse()
                .map_err(|_| (field.clone(), format!("{:?} is not an IPv4 address and port (ip:port)", l.address)))?;
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return Err((field, format!("{addr}: needs a concrete address and a port other than 0")));
            }
            if !seen.insert(addr) {
                return Err((field, format!("{addr} is listed twice")));
            }
            if l.backend.is_some() && !l.backends.is_empty() {
                return Err((format!("listener[{i}].backends"), "give either `backend` or `backends`, not both".into()));
            }
            if usize::from(l.echo) + usize::from(l.refuse) + usize::from(l.relays()) != 1 {
                return Err((
                    format!("listener[{i}]"),
                    "needs exactly one of `backend` (or `backends`), `echo`, `refuse`".into(),
                ));
            }
            if !l.backends.is_empty() {
                check_backends(&format!("listener[{i}].backends"), &l.backends)?;
            }
            if !l.relays() {
                for (set, name) in [
                    (l.proxy_protocol, "proxy_protocol"),
                    (l.health_check.is_some(), "health_check"),
                    (!l.routes.is_empty(), "route"),
                ] {
                    if set {
                        return Err((format!("listener[{i}].{name}"), "needs `backend` or `backends`".into()));
                    }
                }
            }
            if let Some(h) = &l.health_check {
                if h.interval_ms == 0 {
                    return Err((format!("listener[{i}].health_check.interval_ms"), "must be more than 0".into()));
                }
                if h.timeout_ms == 0 {
                    return Err((format!("listener[{i}].health_check.timeout_ms"), "must be more than 0".into()));
                }
            }
            for (j, r) in l.routes.iter().enumerate() {
                let f = format!("listener[{i}].route[{j}]");
                if r.sni.is_none() && r.alpn.is_none() {
                    return Err((f, "needs `sni` and/or `alpn` to match".into()));
                }
                if l.tls.is_none() {
                    return Err((f, "SNI and ALPN routes need `[listener.tls]`".into()));
                }
                if r.sni.as_deref() == Some("") || r.alpn.as_deref() == Some("") {
                    return Err((f, "`sni` and `alpn` must not be empty".into()));
                }
                if r.alpn.as_ref().is_some_and(|a| a.len() > 255) {
                    return Err((format!("{f}.alpn"), "at most 255 bytes (RFC 7301)".into()));
                }
                check_backends(&format!("{f}.backends"), &r.backends)?;
            }
            if l.tls.is_some() && !l.relays() {
                return Err((format!("listener[{i}].tls"), "TLS termination needs a `backend` to relay to".into()));
            }
            if let Some(tls) = &l.tls
                && tls.certificates.is_empty()
            {
                return Err((format!("listener[{i}].tls.certificates"), "at least one certificate is needed".into()));
            }
            if let Some(b) = &l.backend {
                let b: SocketAddrV4 = b.parse().map_err(|_| {
                    (format!("listener[{i}].backend"), format!("{b:?} is not an IPv4 address and port (ip:port)"))
                })?;
                if b.port() == 0 || b.ip().is_unspecified() {
                    return Err((format!("listener[{i}].backend"), format!("{b}: needs a concrete address and port")));
                }
            }
        }
        Ok(())
    }
}

/// `line L, column C` of a byte offset, for parse errors that have no field path.
fn describe_position(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
    format!("line {line}, column {column}")
}

impl fmt::Display for XdpModeSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[datapath]
interface = "px0"
xdp_mode = "native"

[[listener]]
address = "198.51.100.2:443"
refuse = true

[[listener]]
address = "198.51.100.2:7"
echo = true
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_good_file_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.datapath.interface, "px0");
        assert_eq!(c.datapath.xdp_mode, XdpModeSetting::Native);
        assert_eq!(c.datapath.frames_per_queue, 16384);
        assert_eq!((c.datapath.rx_ring, c.datapath.fill_ring, c.datapath.tx_ring), (8192, 8192, 2048));
        assert_eq!(c.tcp, Tcp::default());
        assert!(c.datapath.verify_checksums);
        assert_eq!(c.listeners[0].mode(), ListenerMode::Refuse);
        assert_eq!(c.listeners[1].mode(), ListenerMode::Echo);
        assert_eq!(c.listeners[1].socket_addr(), "198.51.100.2:7".parse().unwrap());
    }

    #[test]
    fn bad_address_names_file_field_and_value() {
        let e = error(&GOOD.replace("198.51.100.2:443", "198.51.100.2:99999"));
        assert!(e.starts_with("test.toml: listener[0].address: "), "{e}");
        assert!(e.contains("99999"), "{e}");
    }

    #[test]
    fn duplicate_listener_is_refused() {
        let e = error(&GOOD.replace("198.51.100.2:7", "198.51.100.2:443"));
        assert!(e.contains("listener[1].address") && e.contains("twice"), "{e}");
    }

    #[test]
    fn unknown_field_and_bad_enum_are_located() {
        let e = error(&GOOD.replace("xdp_mode = \"native\"", "xdp_mode = \"turbo\""));
        assert!(e.starts_with("test.toml: line 4"), "{e}");
        assert!(e.contains("turbo") || e.contains("variant"), "{e}");
        let e = error(&GOOD.replace("force", "forse").replace("interface = \"px0\"", "interface = \"px0\"\nfrobnicate = 1"));
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn ring_and_frame_sizes_are_checked() {
        let e = error(&GOOD.replace("xdp_mode = \"native\"", "rx_ring = 1000"));
        assert!(e.contains("datapath.rx_ring") && e.contains("power of two"), "{e}");
        let e = error(&GOOD.replace("xdp_mode = \"native\"", "frame_size = 1500"));
        assert!(e.contains("datapath.frame_size"), "{e}");
        let e = error(&GOOD.replace("xdp_mode = \"native\"", "frames_per_queue = 100"));
        assert!(e.contains("datapath.frames_per_queue"), "{e}");
        let e = error(&GOOD.replace("xdp_mode = \"native\"", "queues = 0"));
        assert!(e.contains("datapath.queues"), "{e}");
    }

    #[test]
    fn tcp_section_is_checked() {
        let c = parse(&format!("{GOOD}\n[tcp]\ncongestion = \"newreno\"\ntime_wait_ms = 500\n")).unwrap();
        assert_eq!(c.tcp.congestion, Congestion::Newreno);
        assert_eq!(c.tcp.time_wait_ms, 500);
        let e = error(&format!("{GOOD}\n[tcp]\nrecv_buffer = 10\n"));
        assert!(e.contains("tcp.recv_buffer"), "{e}");
        let e = error(&format!("{GOOD}\n[tcp]\ncongestion = \"bbr\"\n"));
        assert!(e.contains("bbr"), "{e}");
    }

    #[test]
    fn missing_sections_and_files() {
        let e = error("[datapath]\ninterface = \"px0\"\n");
        assert!(e.contains("listener") && e.contains("at least one"), "{e}");
        let e = error("[[listener]]\naddress = \"198.51.100.2:443\"\n");
        assert!(e.contains("datapath"), "{e}");
        let e = Config::load(Path::new("/nonexistent/sluice.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/sluice.toml: cannot read"), "{e}");
    }

    #[test]
    fn a_listener_does_exactly_one_thing() {
        let e = error(&GOOD.replace("refuse = true", "refuse = true\necho = true"));
        assert!(e.contains("listener[0]") && e.contains("exactly one"), "{e}");
        let e = error(&GOOD.replace("refuse = true", "backend = \"203.0.113.2:8080\"\nrefuse = true"));
        assert!(e.contains("listener[0]") && e.contains("exactly one"), "{e}");
        let e = error(&GOOD.replace("refuse = true", ""));
        assert!(e.contains("listener[0]") && e.contains("exactly one"), "{e}");
        let e = error(&GOOD.replace("refuse = true", "backend = \"backend:80\""));
        assert!(e.contains("listener[0].backend") && e.contains("backend:80"), "{e}");
        let c = parse(&GOOD.replace("refuse = true", "backend = \"203.0.113.2:8080\"")).unwrap();
        assert_eq!(c.listeners[0].mode(), ListenerMode::Relay("203.0.113.2:8080".parse().unwrap()));
    }

    #[test]
    fn tls_needs_a_backend_and_a_certificate() {
        let tls = "\n[listener.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n";
        let e = error(&GOOD.replace("refuse = true", &format!("refuse = true{tls}")));
        assert!(e.contains("listener[0].tls") && e.contains("backend"), "{e}");
        let e = error(&GOOD.replace("refuse = true", "backend = \"203.0.113.2:8080\"\n[listener.tls]\nalpn = [\"h2\"]\n"));
        assert!(e.contains("listener[0].tls.certificates"), "{e}");
        let c = parse(&GOOD.replace("refuse = true", &format!("backend = \"203.0.113.2:8080\"{tls}"))).unwrap();
        let t = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(t.certificates[0].cert, std::path::PathBuf::from("a.pem"));
        assert!(t.tls12 && t.tls13, "defaults");
    }

    #[test]
    fn kernel_transport_needs_no_interface() {
        let kernel = GOOD.replace("interface = \"px0\"\nxdp_mode = \"native\"", "transport = \"kernel\"");
        let c = parse(&kernel).unwrap();
        assert_eq!((c.datapath.transport, c.datapath.workers), (Transport::Kernel, None));
        assert_eq!(parse(GOOD).unwrap().datapath.transport, Transport::Xdp);
        let c = parse(&kernel.replace("transport", "workers = 3\ntransport")).unwrap();
        assert_eq!(c.datapath.workers, Some(3));
        let e = error(&kernel.replace("transport", "workers = 0\ntransport"));
        assert!(e.contains("datapath.workers"), "{e}");
        let e = error(&kernel.replace("\"kernel\"", "\"dpdk\""));
        assert!(e.contains("dpdk"), "{e}");
        let e = error("[datapath]\nxdp_mode = \"native\"\n[[listener]]\naddress = \"198.51.100.2:7\"\necho = true\n");
        assert!(e.contains("datapath.interface"), "{e}");
    }

    #[test]
    fn several_backends_routes_and_health_check() {
        let tls = "[listener.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n";
        let text = GOOD.replace(
            "refuse = true",
            &format!(
                "backends = [\"203.0.113.2:8080\", \"203.0.113.2:8081\"]\nbalance = \"least-connections\"\n\
                 proxy_protocol = true\n{tls}[listener.health_check]\ninterval_ms = 500\n\
                 [[listener.route]]\nsni = \"b.test\"\nbackends = [\"203.0.113.2:9000\"]\n\
                 [[listener.route]]\nalpn = \"h2\"\nbackends = [\"203.0.113.2:9001\"]\n"
            ),
        );
        let c = parse(&text).unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.backend_addrs(), ["203.0.113.2:8080".parse().unwrap(), "203.0.113.2:8081".parse().unwrap()]);
        assert_eq!(l.mode(), ListenerMode::Relay("203.0.113.2:8080".parse().unwrap()));
        assert_eq!(l.balance, crate::session::backend::Balance::LeastConnections);
        assert_eq!(l.cooldown_ms, 5_000, "default");
        assert!(l.proxy_protocol);
        assert_eq!(l.health_check, Some(HealthCheck { interval_ms: 500, timeout_ms: 1_000 }));
        assert_eq!(l.routes.len(), 2);
        assert_eq!(l.routes[0].sni.as_deref(), Some("b.test"));
        assert_eq!(Listener::route_addrs(&l.routes[1]), ["203.0.113.2:9001".parse::<SocketAddrV4>().unwrap()]);
        // The defaults of a one-backend listener.
        let c = parse(&GOOD.replace("refuse = true", "backend = \"203.0.113.2:8080\"")).unwrap();
        let l = &c.listeners[0];
        assert!(!l.proxy_protocol && l.health_check.is_none() && l.routes.is_empty());
        assert_eq!(l.balance, crate::session::backend::Balance::RoundRobin);
    }

    #[test]
    fn backend_lists_and_routes_are_checked() {
        let with = |extra: &str| error(&GOOD.replace("refuse = true", extra));
        let e = with("backend = \"203.0.113.2:1\"\nbackends = [\"203.0.113.2:2\"]");
        assert!(e.contains("listener[0].backends") && e.contains("not both"), "{e}");
        let e = with("backends = []");
        assert!(e.contains("listener[0]") && e.contains("exactly one"), "{e}");
        let e = with("backends = [\"203.0.113.2:1\", \"nope\"]");
        assert!(e.contains("listener[0].backends[1]") && e.contains("nope"), "{e}");
        let e = with("backends = [\"203.0.113.2:1\", \"203.0.113.2:1\"]");
        assert!(e.contains("listener[0].backends[1]") && e.contains("twice"), "{e}");
        let many: Vec<String> = (1..=65).map(|p| format!("\"203.0.113.2:{p}\"")).collect();
        let e = with(&format!("backends = [{}]", many.join(", ")));
        assert!(e.contains("listener[0].backends") && e.contains("65"), "{e}");
        let e = with("backend = \"203.0.113.2:1\"\nbalance = \"random\"");
        assert!(e.contains("random"), "{e}");
        let e = with("refuse = true\nproxy_protocol = true");
        assert!(e.contains("listener[0].proxy_protocol"), "{e}");
        let e = with("backend = \"203.0.113.2:1\"\n[listener.health_check]\ninterval_ms = 0");
        assert!(e.contains("listener[0].health_check.interval_ms"), "{e}");
        let e = with("backend = \"203.0.113.2:1\"\n[[listener.route]]\nsni = \"a.test\"\nbackends = [\"203.0.113.2:2\"]");
        assert!(e.contains("listener[0].route[0]") && e.contains("tls"), "{e}");
        let tls = "[listener.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n";
        let e = with(&format!("backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nbackends = [\"203.0.113.2:2\"]"));
        assert!(e.contains("listener[0].route[0]") && e.contains("sni"), "{e}");
        let e = with(&format!("backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nsni = \"a.test\"\nbackends = []"));
        assert!(e.contains("listener[0].route[0].backends"), "{e}");
        let e = with(&format!("backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nsni = \"a.test\"\nbackends = [\"x\"]"));
        assert!(e.contains("listener[0].route[0].backends[0]"), "{e}");
    }

    #[test]
    fn stats_section_is_checked() {
        assert_eq!(parse(GOOD).unwrap().stats, Stats::default());
        assert!(parse(GOOD).unwrap().stats.interval_log().is_none());
        let c = parse(&format!("{GOOD}\n[stats]\ninterval_log = \"/tmp/s.hlog\"\ninterval_log_secs = 5\n")).unwrap();
        let log = c.stats.interval_log().unwrap();
        assert_eq!((log.path, log.every), (PathBuf::from("/tmp/s.hlog"), std::time::Duration::from_secs(5)));
        let e = error(&format!("{GOOD}\n[stats]\ninterval_log_secs = 0\n"));
        assert!(e.contains("stats.interval_log_secs"), "{e}");
        let e = error(&format!("{GOOD}\n[stats]\ninterval_log = \"\"\n"));
        assert!(e.contains("stats.interval_log"), "{e}");
        let e = error(&format!("{GOOD}\n[stats]\ninterval = 3\n"));
        assert!(e.contains("interval"), "{e}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in ["netns.toml", "example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
