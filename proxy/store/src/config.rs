//! `SessionStoreConfig`: the `[session_store]` table sluice's config embeds, and the parsing of
//! its `redis://` URLs.
//!
//! ```toml
//! [session_store]                    # present = enabled
//! url = ["redis://:secret@198.51.100.20:6379", "redis://sluice:secret@[2001:db8::20]:6379"]
//! key_file = "/etc/sluice/store.keys"
//! timeout_ms = 5                     # lookup budget
//! prefix = "sluice:"
//! max_in_flight = 256                # per node connection
//! ```
//!
//! What it is: the settings and [`RedisUrl::parse`] (`redis://[[user]:password@]host:port`,
//! IPv4, `[IPv6]` or a name; port defaults to 6379; no path, query or TLS). What it is not:
//! the reader of `key_file` ([`crate::seal::KeySet::parse`] is) or of the rest of the config.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Redis's default port.
pub const DEFAULT_PORT: u16 = 6379;

/// The `[session_store]` table. The proxy enables the store when the table is present
/// (`Option<SessionStoreConfig>` in its config).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionStoreConfig {
    /// One node or a list; sessions are spread over them by rendezvous hashing.
    pub url: Urls,
    /// The sealing keys ([`crate::seal`]): the first seals, every one opens.
    pub key_file: PathBuf,
    /// Lookup budget in milliseconds: a lookup not answered by then is a miss.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Prepended to every store key (and hashed with the ID).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Requests in flight per node connection.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
}

fn default_timeout_ms() -> u64 {
    5
}
fn default_prefix() -> String {
    "sluice:".to_owned()
}
fn default_max_in_flight() -> usize {
    256
}

/// `url = "..."` or `url = ["...", ...]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// A single node.
    One(String),
    /// Several nodes.
    Many(Vec<String>),
}

/// A setting that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL that does not parse.
    #[error("session_store.url {url:?}: {reason}")]
    Url {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `url = []`.
    #[error("session_store.url: no node")]
    NoNodes,
    /// The same node twice.
    #[error("session_store.url: {0} is listed twice")]
    DuplicateNode(String),
    /// A numeric setting out of range.
    #[error("session_store.{field}: {reason}")]
    Range {
        /// The setting.
        field: &'static str,
        /// What is allowed.
        reason: &'static str,
    },
}

impl SessionStoreConfig {
    /// The nodes' URLs, parsed and checked, and the other settings' ranges.
    pub fn validate(&self) -> Result<Vec<RedisUrl>, ConfigError> {
        if self.timeout_ms == 0 || self.timeout_ms > 10_000 {
            return Err(ConfigError::Range { field: "timeout_ms", reason: "1..=10000" });
        }
        if self.max_in_flight == 0 || self.max_in_flight > 65_536 {
            return Err(ConfigError::Range { field: "max_in_flight", reason: "1..=65536" });
        }
        if self.prefix.len() > 256 {
            return Err(ConfigError::Range { field: "prefix", reason: "at most 256 bytes" });
        }
        let list: Vec<&str> = match &self.url {
            Urls::One(u) => vec![u.as_str()],
            Urls::Many(v) => v.iter().map(String::as_str).collect(),
        };
        if list.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut out: Vec<RedisUrl> = Vec::with_capacity(list.len());
        for u in list {
            let parsed = RedisUrl::parse(u)?;
            if out.iter().any(|o| o.node_name() == parsed.node_name()) {
                return Err(ConfigError::DuplicateNode(parsed.node_name()));
            }
            out.push(parsed);
        }
        Ok(out)
    }
}

impl SessionStoreConfig {
    /// The Redis client's settings for one node: `AUTH` from its URL, `timeout_ms` as the
    /// request budget, `max_in_flight` in flight and as many again waiting, a connection
    /// declared stalled after 200 budgets (at least 1 s).
    pub fn client_config(&self, node: &RedisUrl) -> crate::resp::ClientConfig {
        let timeout = std::time::Duration::from_millis(self.timeout_ms);
        crate::resp::ClientConfig {
            auth: node.auth(),
            max_in_flight: self.max_in_flight,
            max_queued: self.max_in_flight,
            timeout,
            stall_reset: (timeout * 200).max(std::time::Duration::from_secs(1)),
            ..crate::resp::ClientConfig::default()
        }
    }
}

/// Where a node is and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// A host name, an IPv4 address, or an IPv6 address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `AUTH username password` when set (Redis 6 ACL); `AUTH password` when only the
    /// password is.
    pub username: Option<String>,
    /// The password for `AUTH`.
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl RedisUrl {
    /// Parses `redis://[[user]:password@]host[:port]`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let err = |reason| ConfigError::Url { url: redact(url), reason };
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            if url.starts_with("rediss://") {
                err("TLS to the store (rediss://) is not supported")
            } else {
                err("must start with redis://")
            }
        })?;
        // The authority ends at the first '/', '?' or '#'; nothing may follow it except a
        // bare "/" or "/0" (database 0).
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if !(tail.is_empty() || tail == "/" || tail == "/0") {
            return Err(err("no path, database, query or fragment allowed (database 0 only)"));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (user, pass) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                let Some(pass) = pass else {
                    return Err(err("user without password: write redis://user:password@host"));
                };
                if pass.is_empty() {
                    return Err(err("empty password"));
                }
                let user = percent_decode(user).ok_or_else(|| err("bad %-escape in user"))?;
                let pass = percent_decode(pass).ok_or_else(|| err("bad %-escape in password"))?;
                ((!user.is_empty()).then_some(user), Some(pass))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| err("IPv6 address without closing ']'"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("not an IPv6 address between [ and ]"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("expected ':port' after ']'"))?),
            };
            (addr, port)
        } else {
            if hostport.matches(':').count() > 1 {
                return Err(err("an IPv6 address must be written in brackets: [2001:db8::1]:6379"));
            }
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')) {
            return Err(err("bad character in host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Err(err("port 0")),
                Ok(p) => p,
                Err(_) => return Err(err("port is not a number in 1..=65535")),
            },
        };
        Ok(Self { host: host.to_owned(), port, username, password })
    }

    /// `host:port` (`[v6]:port`): the node's name for rendezvous hashing and logs.
    pub fn node_name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `AUTH` to send, if any: `(username, password)`.
    pub fn auth(&self) -> Option<crate::resp::Auth> {
        self.password.as_ref().map(|p| crate::resp::Auth { username: self.username.clone(), password: p.clone() })
    }
}

/// The URL with the password hidden, for error messages.
fn redact(url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return url.to_owned() };
    let scheme_len = url.len() - rest.len();
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{}{}:***{}", &url[..scheme_len], user, &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// `%XX` escapes (RFC 3986 §2.1); `None` on a bad one or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RedisUrl {
        RedisUrl::parse(s).unwrap()
    }

    fn reason(s: &str) -> &'static str {
        match RedisUrl::parse(s) {
            Err(ConfigError::Url { reason, url }) => {
                assert!(!url.contains("hunter2"), "password leaked into {url}");
                reason
            }
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn urls_that_parse() {
        let u = url("redis://198.51.100.20:6380");
        assert_eq!(
            (u.host.as_str(), u.port, u.username.as_deref(), u.password.as_deref()),
            ("198.51.100.20", 6380, None, None)
        );
        assert_eq!(u.node_name(), "198.51.100.20:6380");
        assert!(u.auth().is_none());
        let u = url("redis://:hunter2@198.51.100.20");
        assert_eq!((u.port, u.username.as_deref(), u.password.as_deref()), (6379, None, Some("hunter2")));
        let a = u.auth().unwrap();
        assert_eq!((a.username, a.password.as_str()), (None, "hunter2"));
        let u = url("redis://sluice:p%40ss@[2001:db8::20]:7000/");
        assert_eq!(u.host, "2001:db8::20");
        assert_eq!((u.port, u.username.as_deref(), u.password.as_deref()), (7000, Some("sluice"), Some("p@ss")));
        assert_eq!(u.node_name(), "[2001:db8::20]:7000");
        let u = url("redis://store.example/0");
        assert_eq!((u.host.as_str(), u.port), ("store.example", 6379));
        // A password may hold '@' and ':' unescaped: the last '@' ends the user info.
        let u = url("redis://u:a:b@c@192.0.2.1:1");
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref(), u.host.as_str()),
            (Some("u"), Some("a:b@c"), "192.0.2.1")
        );
        assert!(!format!("{u:?}").contains("a:b@c"));
    }

    #[test]
    fn urls_that_do_not_parse_say_why() {
        assert_eq!(reason("http://192.0.2.1"), "must start with redis://");
        assert_eq!(reason("rediss://192.0.2.1"), "TLS to the store (rediss://) is not supported");
        assert_eq!(reason("redis://"), "no host");
        assert_eq!(reason("redis://:hunter2@"), "no host");
        assert_eq!(reason("redis://192.0.2.1:0"), "port 0");
        assert_eq!(reason("redis://192.0.2.1:65536"), "port is not a number in 1..=65535");
        assert_eq!(reason("redis://192.0.2.1:x"), "port is not a number in 1..=65535");
        assert_eq!(
            reason("redis://2001:db8::1:6379"),
            "an IPv6 address must be written in brackets: [2001:db8::1]:6379"
        );
        assert_eq!(reason("redis://[2001:db8::1:6379"), "IPv6 address without closing ']'");
        assert_eq!(reason("redis://[192.0.2.1]:6379"), "not an IPv6 address between [ and ]");
        assert_eq!(reason("redis://[2001:db8::1]6379"), "expected ':port' after ']'");
        assert_eq!(reason("redis://192.0.2.1/3"), "no path, database, query or fragment allowed (database 0 only)");
        assert_eq!(
            reason("redis://u:hunter2@192.0.2.1/?x"),
            "no path, database, query or fragment allowed (database 0 only)"
        );
        assert_eq!(reason("redis://user@192.0.2.1"), "user without password: write redis://user:password@host");
        assert_eq!(reason("redis://u:@192.0.2.1"), "empty password");
        assert_eq!(reason("redis://u:hunter2%zz@192.0.2.1"), "bad %-escape in password");
        assert_eq!(reason("redis://ho st:1"), "bad character in host");
    }

    #[derive(Deserialize)]
    struct Outer {
        session_store: Option<SessionStoreConfig>,
    }

    #[test]
    fn toml_defaults_and_lists() {
        let o: Outer = toml::from_str("").unwrap();
        assert!(o.session_store.is_none(), "absent table: store disabled");
        let o: Outer = toml::from_str("[session_store]\nurl = \"redis://192.0.2.1\"\nkey_file = \"k\"\n").unwrap();
        let c = o.session_store.unwrap();
        assert_eq!((c.timeout_ms, c.prefix.as_str(), c.max_in_flight), (5, "sluice:", 256));
        assert_eq!(c.validate().unwrap().len(), 1);
        let o: Outer = toml::from_str(
            "[session_store]\nurl = [\"redis://192.0.2.1\", \"redis://[2001:db8::1]:6379\"]\nkey_file = \"k\"\n\
             timeout_ms = 3\nprefix = \"p:\"\nmax_in_flight = 16\n",
        )
        .unwrap();
        let c = o.session_store.unwrap();
        let nodes = c.validate().unwrap();
        assert_eq!(nodes.iter().map(RedisUrl::node_name).collect::<Vec<_>>(), ["192.0.2.1:6379", "[2001:db8::1]:6379"]);
        assert_eq!((c.timeout_ms, c.prefix.as_str(), c.max_in_flight), (3, "p:", 16));
        let cc = c.client_config(&nodes[0]);
        assert_eq!((cc.max_in_flight, cc.max_queued), (16, 16));
        assert_eq!((cc.timeout.as_millis(), cc.stall_reset.as_millis()), (3, 1000));
        assert!(cc.auth.is_none());
        let cc = c.client_config(&RedisUrl::parse("redis://u:pw@192.0.2.1").unwrap());
        assert_eq!(cc.auth.map(|a| (a.username, a.password)), Some((Some("u".into()), "pw".into())));
    }

    #[test]
    fn toml_errors() {
        assert!(toml::from_str::<Outer>("[session_store]\nkey_file = \"k\"\n").is_err(), "url is required");
        assert!(toml::from_str::<Outer>("[session_store]\nurl = \"redis://a\"\n").is_err(), "key_file is required");
        assert!(
            toml::from_str::<Outer>("[session_store]\nurl = \"redis://a\"\nkey_file = \"k\"\nbogus = 1\n").is_err()
        );
        let c = |extra: &str| {
            toml::from_str::<Outer>(&format!("[session_store]\nkey_file = \"k\"\n{extra}\n"))
                .unwrap()
                .session_store
                .unwrap()
                .validate()
        };
        assert_eq!(c("url = []"), Err(ConfigError::NoNodes));
        assert_eq!(
            c("url = [\"redis://192.0.2.1\", \"redis://:x@192.0.2.1:6379\"]"),
            Err(ConfigError::DuplicateNode("192.0.2.1:6379".into()))
        );
        assert!(matches!(
            c("url = \"redis://a\"\ntimeout_ms = 0"),
            Err(ConfigError::Range { field: "timeout_ms", .. })
        ));
        assert!(matches!(
            c("url = \"redis://a\"\nmax_in_flight = 0"),
            Err(ConfigError::Range { field: "max_in_flight", .. })
        ));
    }
}
