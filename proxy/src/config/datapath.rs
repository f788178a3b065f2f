//! `[datapath]`: the transport (XDP or kernel sockets), the interface, XDP mode, AF_XDP rings
//! and workers; and `[tcp]`: sluice's TCP stack.

use std::fmt;

use serde::Deserialize;

use super::defaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Driver mode, falling back to generic (SKB) mode when the driver refuses.
    #[default]
    Auto,
    Native,
    Skb,
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
    /// `xdp` (default) or `kernel`. With `kernel`, `interface` may be omitted, and the XDP and
    /// AF_XDP fields below and the `[tcp]` section are refused (named in the error).
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
    /// TCBs per worker, in every state (TIME-WAIT recycled oldest first when full). 0: derived
    /// from `limits.memory` (its share per worker over [`crate::config::CONNECTION_BYTES`],
    /// between 1,024 and 1,048,576; 65,536 with no memory limit).
    pub max_connections: usize,
    /// Half-open connections per listener before SYN cookies answer.
    pub syn_queue: usize,
    pub syn_cookies: bool,
    /// XDP transport: while a worker's SYN queue is under pressure (90 % full, or a SYN found it
    /// full within the last second), the XDP program answers that queue's SYNs itself with the
    /// kernel's SYN cookies and checks the final ACKs with the kernel (Linux 6.0+; without the
    /// helpers sluice logs it and keeps its own cookies). Needs `syn_cookies`. `"auto"` (the
    /// default): on for a physical interface, off for a virtual one (veth and the like), where
    /// XDP_TX reaches the peer only if the peer runs an XDP program; `true` / `false` force it.
    pub xdp_syn_cookies: XdpSynCookies,
    /// TIME-WAIT, handshake timeout and idle timeout (0: none), in milliseconds.
    pub time_wait_ms: u64,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Data that waits this long without any of it being acknowledged (sent and lost for good,
    /// or behind a zero window that does not open, however often the client answers the
    /// probes) ends the connection with a RST, as Linux's TCP_USER_TIMEOUT (0: none).
    pub user_timeout_ms: u64,
    /// Our FIN acknowledged, the client silent this long (FIN-WAIT-2): a RST ends it, as Linux's
    /// `tcp_fin_timeout` for orphaned sockets (0: wait as long as the idle timeout allows).
    pub fin_wait_2_timeout_ms: u64,
    /// `cubic` (RFC 9438) or `newreno` (RFC 5681, RFC 6582).
    pub congestion: Congestion,
    /// Keepalive (RFC 9293 3.8.4): idle time before the first probe (0: off), time between
    /// unanswered probes, and how many go unanswered before the connection is dropped.
    pub keepalive_idle_ms: u64,
    pub keepalive_interval_ms: u64,
    pub keepalive_probes: u32,
}

/// `tcp.xdp_syn_cookies`: `"auto"`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpSynCookies {
    Auto,
    On,
    Off,
}

impl<'de> Deserialize<'de> for XdpSynCookies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Self::On),
            Raw::Bool(false) => Ok(Self::Off),
            Raw::Text(t) if t == "auto" => Ok(Self::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("{t:?}: expected \"auto\", true or false"))),
        }
    }
}

impl XdpSynCookies {
    /// Whether to answer SYN cookies in XDP on interface `ifname` (`auto`: only a physical one,
    /// which has a `device` in sysfs).
    #[must_use]
    pub fn wanted(self, ifname: &str) -> bool {
        match self {
            Self::On => true,
            Self::Off => false,
            Self::Auto => std::path::Path::new(&format!("/sys/class/net/{ifname}/device")).exists(),
        }
    }
}

impl Tcp {
    /// TCBs per worker: `max_connections`, or when 0 the share of `memory` (bytes, 0: no
    /// limit) of each of `workers` over [`crate::config::CONNECTION_BYTES`].
    #[must_use]
    pub fn table_size(&self, memory: u64, workers: usize) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        if memory == 0 {
            return 65_536;
        }
        let n = memory / crate::config::CONNECTION_BYTES / workers.max(1) as u64;
        usize::try_from(n).unwrap_or(usize::MAX).clamp(1024, 1 << 20)
    }
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
            max_connections: 0,
            syn_queue: 1024,
            syn_cookies: true,
            xdp_syn_cookies: XdpSynCookies::Auto,
            time_wait_ms: 10_000,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            user_timeout_ms: 60_000,
            fin_wait_2_timeout_ms: 60_000,
            congestion: Congestion::Cubic,
            keepalive_idle_ms: 0,
            keepalive_interval_ms: 75_000,
            keepalive_probes: 9,
        }
    }
}
