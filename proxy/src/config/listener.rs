//! `[[listener]]`: what each listener serves (relay, echo or refuse), its backends,
//! `[[listener.route]]` (SNI and ALPN routes) and `[listener.health_check]`; and `[relay]`, the
//! relaying to backends. The backend lists' checks used by `Config::validate` live here.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use super::defaults;

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
    /// The most TLS ciphertext a client may send before its handshake completes (its
    /// ClientHello, and its second flight with client certificates); past it, or past rustls's
    /// own bound on one handshake message (0xffff bytes with its record framing), the client
    /// gets a fatal `decode_error` alert and is closed (counted `tls_handshake_too_large`).
    pub tls_max_handshake_bytes: usize,
    /// End a relay through which no byte moved, either way, for this long: the client and the
    /// backend are reset (0: never).
    pub idle_timeout_ms: u64,
}

impl Default for Relay {
    fn default() -> Self {
        Self {
            buffer: 64 * 1024,
            backend_connect_timeout_ms: 5_000,
            tls_handshake_timeout_ms: 10_000,
            tls_max_handshake_bytes: sluice_tls::DEFAULT_MAX_HANDSHAKE_IN,
            idle_timeout_ms: 300_000,
        }
    }
}

/// What a listener does with the connections it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerMode {
    /// Relay the connection's bytes to this backend over a kernel TCP socket.
    Relay(SocketAddr),
    /// Answer every SYN with a RST (connection refused): the listener is steered to sluice but
    /// serves nothing. The datapath's first form, and what tests of the datapath alone use.
    Refuse,
    /// TCP echo on sluice's own stack, no TLS, no backend (tests and benchmarks of the TCP stack).
    Echo,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `ip:port` or `[ipv6]:port` that clients connect to: an address of `datapath.interface`,
    /// or `0.0.0.0:port` / `[::]:port` for every address of that family on it; or a list of
    /// them (one section for both families: one TLS configuration and session cache).
    pub address: Addresses,
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

/// A listener section's `address`: one, or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Addresses {
    One(String),
    Many(Vec<String>),
}

impl Addresses {
    /// The addresses as written.
    pub fn texts(&self) -> &[String] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(list) => list,
        }
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.texts().join(", "))
    }
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

/// How addresses are written, for error messages.
pub const ADDRESS_FORMS: &str = "ip:port, or [ipv6]:port";

/// Whether `ip` can be a listener's address: a unicast address of the host, or the family's
/// unspecified address (every address of that family on the interface).
pub(super) fn check_listener_ip(ip: std::net::IpAddr) -> Result<(), &'static str> {
    if ip.is_multicast() || ip == std::net::IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return Err("a listener needs a unicast address (or 0.0.0.0 / [::] for all of a family)");
    }
    if let std::net::IpAddr::V6(v6) = ip
        && v6.to_ipv4_mapped().is_some()
    {
        return Err("an IPv4-mapped IPv6 address: write the IPv4 address instead");
    }
    Ok(())
}

/// Parses a backend list (validated in `Config::validate`; unparsable entries are skipped).
fn addrs(list: &[String]) -> Vec<SocketAddr> {
    list.iter().filter_map(|b| b.parse().ok()).collect()
}

/// Checks a backend list: `ip:port` or `[ipv6]:port` each, concrete, no duplicates, 1 to 64 entries.
pub(super) fn check_backends(field: &str, list: &[String]) -> Result<(), (String, String)> {
    if list.is_empty() || list.len() > crate::session::backend::MAX_BACKENDS {
        return Err((
            field.into(),
            format!("needs 1 to {} backends, not {}", crate::session::backend::MAX_BACKENDS, list.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (j, b) in list.iter().enumerate() {
        let f = format!("{field}[{j}]");
        let a: SocketAddr =
            b.parse().map_err(|_| (f.clone(), format!("{b:?} is not an address and port ({ADDRESS_FORMS})")))?;
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
    pub fn backend_addrs(&self) -> Vec<SocketAddr> {
        match &self.backend {
            Some(b) => addrs(std::slice::from_ref(b)),
            None => addrs(&self.backends),
        }
    }

    /// A route's backends.
    pub fn route_addrs(route: &Route) -> Vec<SocketAddr> {
        addrs(&route.backends)
    }

    /// The addresses this listener serves (validated in `Config::validate`).
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        addrs(self.address.texts())
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

    pub(super) fn relays(&self) -> bool {
        self.backend.is_some() || !self.backends.is_empty()
    }
}
