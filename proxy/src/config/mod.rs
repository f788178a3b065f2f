//! sluice's configuration: a TOML file, validated before anything is attached.
//!
//! Every error names the file, the field and what is wrong, e.g.
//! `configs/x.toml: listener[1].address: "198.51.100.2:99999" is not an address and port`.
//! See `configs/netns.toml` for the test topology and `configs/example.toml` for every field.
//!
//! This file holds [`Config`] itself, loading ([`Config::load`], [`Config::parse`]) and the
//! validation of every section, with their tests. The sections live in files by concern, each
//! re-exported here (callers name them `crate::config::X`):
//! - `process`: `[process]` (who sluice runs as), `[log]`, `[limits]` and `[drain]`.
//! - `datapath`: `[datapath]` (transport, XDP and AF_XDP settings) and `[tcp]` (sluice's stack).
//! - `listener`: `[[listener]]` with its backends, `[[listener.route]]` and
//!   `[listener.health_check]`; `[relay]`.
//! - `observe`: `[admin]` and `[stats]`.
//! - `defaults`: the values serde gives absent fields.

mod datapath;
mod defaults;
mod listener;
mod observe;
mod process;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use listener::ADDRESS_FORMS;
use serde::Deserialize;

pub use datapath::{Congestion, Datapath, Tcp, Transport, XdpModeSetting, XdpSynCookies};
use listener::check_backends;
pub use listener::{HealthCheck, Listener, ListenerMode, Relay, Route};
pub use observe::{Admin, Stats};
pub use process::{
    BUSY_CONNECTION_BYTES, CONNECTION_BYTES, Drain, DrainNew, Limits, Log, LogFormat, Process, parse_bytes,
};

/// `[datapath]` fields that only the XDP transport uses.
/// The `[tcp]` settings the kernel transport applies to Linux's sockets.
const KERNEL_TCP: &[&str] = &["user_timeout_ms"];

const XDP_ONLY: [&str; 12] = [
    "xdp_mode",
    "force",
    "queues",
    "zero_copy",
    "frames_per_queue",
    "frame_size",
    "rx_ring",
    "tx_ring",
    "fill_ring",
    "completion_ring",
    "verify_checksums",
    "busy_poll_us",
];

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
    /// Sessions shared with a fleet through Redis (issue 14); absent: this process's cache only.
    #[serde(default)]
    pub session_store: Option<sluice_store::SessionStoreConfig>,
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
            let field = e.span().map(|s| describe_position(text, s.start)).unwrap_or_default();
            err(field, e.message().to_owned())
        })?;
        config.validate().map_err(|(field, message)| err(field, message))?;
        // Fields one transport cannot honour are refused, not silently ignored. `text` parsed
        // above, so it parses as a table again.
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        config.transport_fields(&table).map_err(|(field, message)| err(field, message))?;
        Ok(config)
    }

    /// Refuses a field that the chosen transport does not use: on kernel sockets, `[tcp]` (the
    /// kernel's TCP serves the connections) and the XDP and AF_XDP settings; on XDP,
    /// `datapath.workers` (a worker per queue).
    fn transport_fields(&self, table: &toml::Table) -> Result<(), (String, String)> {
        let given = |section: &str, key: &str| {
            table.get(section).and_then(toml::Value::as_table).is_some_and(|t| t.contains_key(key))
        };
        match self.datapath.transport {
            Transport::Kernel => {
                // Linux's TCP serves the connections; of [tcp] only the user timeout applies
                // (TCP_USER_TIMEOUT on every client socket).
                let tcp = table.get("tcp").and_then(toml::Value::as_table);
                if let Some(key) = tcp.and_then(|t| t.keys().find(|k| !KERNEL_TCP.contains(&k.as_str()))) {
                    return Err((
                        format!("tcp.{key}"),
                        "sluice's TCP stack serves only the XDP transport; with transport = \"kernel\" \
                         Linux's TCP serves the connections (its sysctls net.ipv4.tcp_* apply) and of [tcp] \
                         only user_timeout_ms is used"
                            .into(),
                    ));
                }
                for key in XDP_ONLY {
                    if given("datapath", key) {
                        return Err((
                            format!("datapath.{key}"),
                            "an XDP and AF_XDP setting: not used with transport = \"kernel\"".into(),
                        ));
                    }
                }
            }
            Transport::Xdp => {
                if given("datapath", "workers") {
                    return Err((
                        "datapath.workers".into(),
                        "the XDP transport runs a worker per queue (datapath.queues); workers is for \
                         transport = \"kernel\""
                            .into(),
                    ));
                }
            }
        }
        Ok(())
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
        if !(4096..=1 << 20).contains(&self.relay.tls_max_handshake_bytes) {
            return Err((
                "relay.tls_max_handshake_bytes".into(),
                format!("{} must be from 4096 to 1048576", self.relay.tls_max_handshake_bytes),
            ));
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
            let texts = l.address.texts();
            if texts.is_empty() {
                return Err((format!("listener[{i}].address"), "needs at least one address".into()));
            }
            for (j, text) in texts.iter().enumerate() {
                let field = match l.address {
                    listener::Addresses::One(_) => format!("listener[{i}].address"),
                    listener::Addresses::Many(_) => format!("listener[{i}].address[{j}]"),
                };
                let addr: SocketAddr = text
                    .parse()
                    .map_err(|_| (field.clone(), format!("{text:?} is not an address and port ({ADDRESS_FORMS})")))?;
                if addr.port() == 0 {
                    return Err((field, format!("{addr}: needs a port other than 0")));
                }
                if let Err(why) = listener::check_listener_ip(addr.ip()) {
                    return Err((field, format!("{addr}: {why}")));
                }
                if !seen.insert(addr) {
                    return Err((field, format!("{addr} is listed twice")));
                }
            }
            if l.backend.is_some() && !l.backends.is_empty() {
                return Err((
                    format!("listener[{i}].backends"),
                    "give either `backend` or `backends`, not both".into(),
                ));
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
                let b: SocketAddr = b.parse().map_err(|_| {
                    (format!("listener[{i}].backend"), format!("{b:?} is not an address and port ({ADDRESS_FORMS})"))
                })?;
                if b.port() == 0 || b.ip().is_unspecified() {
                    return Err((format!("listener[{i}].backend"), format!("{b}: needs a concrete address and port")));
                }
            }
        }
        if let Some(store) = &self.session_store {
            // The error names its field (`session_store.url ...`); the URL shows no password.
            store.validate().map_err(|e| {
                let text = e.to_string();
                match text.split_once(": ") {
                    Some((field, why)) => (field.to_owned(), why.to_owned()),
                    None => ("session_store".to_owned(), text),
                }
            })?;
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
        assert_eq!(c.listeners[1].socket_addrs(), ["198.51.100.2:7".parse().unwrap()]);
    }

    #[test]
    fn bad_address_names_file_field_and_value() {
        let e = error(&GOOD.replace("198.51.100.2:443", "198.51.100.2:99999"));
        assert!(e.starts_with("test.toml: listener[0].address: "), "{e}");
        assert!(e.contains("99999"), "{e}");
    }

    #[test]
    fn one_listener_section_may_name_both_families_and_wildcards() {
        let c = parse(&GOOD.replace(
            "address = \"198.51.100.2:7\"",
            "address = [\"198.51.100.2:7\", \"[2001:db8:100::2]:7\", \"[::]:8\", \"0.0.0.0:8\"]",
        ))
        .unwrap();
        let want: Vec<SocketAddr> = ["198.51.100.2:7", "[2001:db8:100::2]:7", "[::]:8", "0.0.0.0:8"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c.listeners[1].socket_addrs(), want);
        let e =
            error(&GOOD.replace("address = \"198.51.100.2:7\"", "address = [\"198.51.100.2:7\", \"[2001:db8::1]:0\"]"));
        assert!(e.contains("listener[1].address[1]") && e.contains("port other than 0"), "{e}");
        let e = error(&GOOD.replace("address = \"198.51.100.2:7\"", "address = [\"198.51.100.2:7\", \"[ff02::1]:7\"]"));
        assert!(e.contains("listener[1].address[1]") && e.contains("unicast"), "{e}");
        let e = error(
            &GOOD.replace("address = \"198.51.100.2:7\"", "address = [\"198.51.100.2:7\", \"198.51.100.2:443\"]"),
        );
        assert!(e.contains("twice"), "{e}");
        let e = error(&GOOD.replace("address = \"198.51.100.2:7\"", "address = []"));
        assert!(e.contains("at least one address"), "{e}");
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
        let e = error(
            &GOOD.replace("force", "forse").replace("interface = \"px0\"", "interface = \"px0\"\nfrobnicate = 1"),
        );
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
    fn tls_max_handshake_bytes_defaults_and_is_checked() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.relay.tls_max_handshake_bytes, sluice_tls::DEFAULT_MAX_HANDSHAKE_IN);
        let c = parse(&format!("{GOOD}\n[relay]\ntls_max_handshake_bytes = 32768\n")).unwrap();
        assert_eq!(c.relay.tls_max_handshake_bytes, 32768);
        for bad in [100, 2 << 20] {
            let e = error(&format!("{GOOD}\n[relay]\ntls_max_handshake_bytes = {bad}\n"));
            assert!(e.contains("relay.tls_max_handshake_bytes") && e.contains("4096 to 1048576"), "{e}");
        }
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
        let e =
            error(&GOOD.replace("refuse = true", "backend = \"203.0.113.2:8080\"\n[listener.tls]\nalpn = [\"h2\"]\n"));
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
    fn xdp_syn_cookies_is_auto_or_a_bool() {
        assert_eq!(parse(GOOD).unwrap().tcp.xdp_syn_cookies, XdpSynCookies::Auto);
        for (text, want) in
            [("\"auto\"", XdpSynCookies::Auto), ("true", XdpSynCookies::On), ("false", XdpSynCookies::Off)]
        {
            let c = parse(&format!("{GOOD}\n[tcp]\nxdp_syn_cookies = {text}\n")).unwrap();
            assert_eq!(c.tcp.xdp_syn_cookies, want, "{text}");
        }
        let e = error(&format!("{GOOD}\n[tcp]\nxdp_syn_cookies = \"maybe\"\n"));
        assert!(e.contains("\"maybe\": expected \"auto\", true or false"), "{e}");
        // `auto` answers in XDP on a physical interface only: loopback has no device.
        assert!(!XdpSynCookies::Auto.wanted("lo"));
        assert!(XdpSynCookies::On.wanted("lo") && !XdpSynCookies::Off.wanted("lo"));
    }

    #[test]
    fn a_field_the_transport_does_not_use_is_refused_by_name() {
        let kernel = GOOD.replace("interface = \"px0\"\nxdp_mode = \"native\"", "transport = \"kernel\"");
        let e = error(&format!("{kernel}\n[tcp]\ntime_wait_ms = 1000\n"));
        assert!(e.contains(": tcp.time_wait_ms: ") && e.contains("Linux's TCP"), "{e}");
        let e = error(&format!("{kernel}\n[tcp]\nuser_timeout_ms = 1000\nsack = false\n"));
        assert!(e.contains("tcp.sack"), "{e}");
        assert_eq!(parse(&format!("{kernel}\n[tcp]\nuser_timeout_ms = 1000\n")).unwrap().tcp.user_timeout_ms, 1000);
        let e = error(&kernel.replace("transport", "rx_ring = 4096\ntransport"));
        assert!(e.contains("datapath.rx_ring") && e.contains("kernel"), "{e}");
        let e = error(&GOOD.replace("xdp_mode", "workers = 2\nxdp_mode"));
        assert!(e.contains("datapath.workers") && e.contains("queues"), "{e}");
        // Shared fields stay: pinning, and [tcp] on XDP.
        parse(&kernel.replace("transport", "pin_workers = false\ntransport")).unwrap();
        parse(&format!("{GOOD}\n[tcp]\ntime_wait_ms = 1000\n")).unwrap();
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
        assert_eq!(Listener::route_addrs(&l.routes[1]), ["203.0.113.2:9001".parse::<SocketAddr>().unwrap()]);
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
        let e =
            with("backend = \"203.0.113.2:1\"\n[[listener.route]]\nsni = \"a.test\"\nbackends = [\"203.0.113.2:2\"]");
        assert!(e.contains("listener[0].route[0]") && e.contains("tls"), "{e}");
        let tls = "[listener.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n";
        let e = with(&format!("backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nbackends = [\"203.0.113.2:2\"]"));
        assert!(e.contains("listener[0].route[0]") && e.contains("sni"), "{e}");
        let e = with(&format!("backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nsni = \"a.test\"\nbackends = []"));
        assert!(e.contains("listener[0].route[0].backends"), "{e}");
        let e = with(&format!(
            "backend = \"203.0.113.2:1\"\n{tls}[[listener.route]]\nsni = \"a.test\"\nbackends = [\"x\"]"
        ));
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
    fn session_store_is_optional_checked_and_names_its_field() {
        assert_eq!(parse(GOOD).unwrap().session_store, None);
        let ok = format!(
            "{GOOD}\n[session_store]\nurl = [\"redis://:pw@192.0.2.20:6379\", \"redis://192.0.2.21\"]\nkey_file = \"k\"\n"
        );
        let store = parse(&ok).unwrap().session_store.unwrap();
        assert_eq!((store.timeout_ms, store.prefix.as_str(), store.max_in_flight), (5, "sluice:", 256));
        let e = error(&format!("{GOOD}\n[session_store]\nurl = \"rediss://192.0.2.20\"\nkey_file = \"k\"\n"));
        assert!(e.contains("session_store.url") && e.contains("rediss"), "{e}");
        let e =
            error(&format!("{GOOD}\n[session_store]\nurl = \"redis://:secret@192.0.2.20:99999\"\nkey_file = \"k\"\n"));
        assert!(e.contains("session_store.url") && !e.contains("secret"), "the password must not be shown: {e}");
        let e = error(&format!(
            "{GOOD}\n[session_store]\nurl = \"redis://192.0.2.20\"\nkey_file = \"k\"\ntimeout_ms = 0\n"
        ));
        assert!(e.contains("session_store.timeout_ms"), "{e}");
        let e = error(&format!("{GOOD}\n[session_store]\nurl = \"redis://192.0.2.20\"\n"));
        assert!(e.contains("key_file"), "{e}");
        let e = error(&format!("{GOOD}\n[session_store]\nurl = \"redis://192.0.2.20\"\nkey_file = \"k\"\nttl = 3\n"));
        assert!(e.contains("ttl"), "{e}");
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in ["netns.toml", "example.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(f);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
