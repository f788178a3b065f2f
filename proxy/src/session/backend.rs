//! Backend pools: the backends one listener (or one of its routes) relays to, and how the next
//! connection picks one.
//!
//! What it is: a [`Pool`] of backend addresses with per-backend state that every worker reads and
//! writes without a lock (atomics): connections active now, connect attempts and failures, the
//! end of a cool-down after a failed connect, and a health flag set by an optional active check.
//! [`Pool::pick`] chooses round-robin or least-connections among the backends that are healthy
//! and not cooling down, skipping those this connection already tried; when every untried backend
//! is cooling down or unhealthy it picks the one that failed least recently rather than refusing
//! the client. A [`Lease`] counts one connection as active on its backend until dropped.
//! [`ListenerBackends`] adds the routes (first match on SNI and/or ALPN, else the default pool)
//! and whether a PROXY v2 header goes first.
//!
//! Time is an argument (`std::time::Instant`); the only thread is the health checker
//! ([`Pool::spawn_health_check`]), which holds a `Weak` reference and ends once the pool is
//! dropped, so a reload that replaces the pools stops the old checkers.
//!
//! What it is not: a resolver (addresses are IPv4 literals), an HTTP-level balancer, or a
//! retry policy for bytes already sent (the worker retries only connects that failed before any
//! byte reached the backend).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a pool spreads connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each backend in turn.
    #[default]
    RoundRobin,
    /// The backend with the fewest active connections (ties in turn).
    LeastConnections,
}

/// The most backends a pool holds: a connection's tried set is a `u64` bit mask.
pub const MAX_BACKENDS: usize = 64;

/// One backend and its shared state.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    active: AtomicU64,
    connects: AtomicU64,
    failures: AtomicU64,
    /// Milliseconds since the pool's epoch, plus one (0: never): until then the backend is
    /// skipped; and when it last failed (connect or health check).
    cooldown_until: AtomicU64,
    last_failed: AtomicU64,
    healthy: AtomicBool,
}

/// What `/stats.json` shows of a backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    pub address: String,
    pub connects: u64,
    pub failures: u64,
    pub active: u64,
    pub healthy: bool,
}

/// The backends of one listener or route.
#[derive(Debug)]
pub struct Pool {
    backends: Box<[Backend]>,
    balance: Balance,
    cooldown: Duration,
    next: AtomicUsize,
    epoch: Instant,
}

impl Pool {
    /// At most [`MAX_BACKENDS`] addresses are used (the configuration refuses more).
    pub fn new(addrs: &[SocketAddr], balance: Balance, cooldown: Duration, epoch: Instant) -> Self {
        let backends = addrs
            .iter()
            .take(MAX_BACKENDS)
            .map(|&addr| Backend {
                addr,
                active: AtomicU64::new(0),
                connects: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                cooldown_until: AtomicU64::new(0),
                last_failed: AtomicU64::new(0),
                healthy: AtomicBool::new(true),
            })
            .collect();
        Self { backends, balance, cooldown, next: AtomicUsize::new(0), epoch }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        self.backends.get(i).map(|b| b.addr)
    }

    /// `now` as stored: milliseconds since the epoch, plus one.
    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    fn usable(&self, b: &Backend, now: u64) -> bool {
        b.healthy.load(Relaxed) && b.cooldown_until.load(Relaxed) <= now
    }

    /// The backend for a connection's next attempt, `None` once every backend is in `tried`
    /// (bit `i` for backend `i`). Healthy backends out of their cool-down first, by the pool's
    /// balance; else the untried backend that failed least recently.
    pub fn pick(&self, now: Instant, tried: u64) -> Option<usize> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let stamp = self.stamp(now);
        let untried = |i: usize| tried & (1 << i) == 0;
        let start = self.next.fetch_add(1, Relaxed) % n;
        let in_turn = (0..n).map(|k| (start + k) % n);
        let choice = match self.balance {
            Balance::RoundRobin => in_turn.clone().find(|&i| untried(i) && self.usable(&self.backends[i], stamp)),
            Balance::LeastConnections => in_turn
                .clone()
                .filter(|&i| untried(i) && self.usable(&self.backends[i], stamp))
                .min_by_key(|&i| self.backends[i].active.load(Relaxed)),
        };
        choice.or_else(|| in_turn.filter(|&i| untried(i)).min_by_key(|&i| self.backends[i].last_failed.load(Relaxed)))
    }

    /// Counts a connect attempt to backend `i` and holds it active until the lease is dropped.
    pub fn lease(self: &Arc<Self>, i: usize) -> Lease {
        if let Some(b) = self.backends.get(i) {
            b.connects.fetch_add(1, Relaxed);
            b.active.fetch_add(1, Relaxed);
        }
        Lease { pool: Arc::clone(self), index: i }
    }

    /// Backend `i` failed a connect (refused, reset, timed out): skip it for the cool-down.
    pub fn connect_failed(&self, i: usize, now: Instant) {
        let Some(b) = self.backends.get(i) else { return };
        let stamp = self.stamp(now);
        b.failures.fetch_add(1, Relaxed);
        b.last_failed.store(stamp, Relaxed);
        b.cooldown_until.store(stamp + self.cooldown.as_millis() as u64, Relaxed);
    }

    /// The health check's verdict on backend `i`.
    pub fn set_healthy(&self, i: usize, healthy: bool, now: Instant) {
        let Some(b) = self.backends.get(i) else { return };
        if !healthy {
            b.last_failed.store(self.stamp(now), Relaxed);
        }
        b.healthy.store(healthy, Relaxed);
    }

    pub fn stats(&self) -> Vec<BackendStats> {
        self.backends
            .iter()
            .map(|b| BackendStats {
                address: b.addr.to_string(),
                connects: b.connects.load(Relaxed),
                failures: b.failures.load(Relaxed),
                active: b.active.load(Relaxed),
                healthy: b.healthy.load(Relaxed),
            })
            .collect()
    }

    /// Starts the active health check: every `interval`, a TCP connect to each backend (from
    /// this thread, blocking up to `timeout`) sets its health flag. The thread holds only a weak
    /// reference between rounds and ends once the pool is gone.
    pub fn spawn_health_check(self: &Arc<Self>, interval: Duration, timeout: Duration) -> std::io::Result<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new().name("sluice-health".into()).spawn(move || {
            loop {
                let Some(pool) = weak.upgrade() else { return };
                let addrs: Vec<_> = pool.backends.iter().map(|b| b.addr).collect();
                drop(pool);
                for (i, addr) in addrs.into_iter().enumerate() {
                    let ok = TcpStream::connect_timeout(&addr, timeout).is_ok();
                    let Some(pool) = weak.upgrade() else { return };
                    pool.set_healthy(i, ok, Instant::now());
                }
                std::thread::sleep(interval);
            }
        })?;
        Ok(())
    }
}

/// One connection's claim on a backend: counted active until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    index: usize,
}

impl Lease {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.pool.addr(self.index)
    }

    /// The connect failed: cool the backend down and give up the claim.
    pub fn failed(self, now: Instant) {
        self.pool.connect_failed(self.index, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = self.pool.backends.get(self.index) {
            b.active.fetch_sub(1, Relaxed);
        }
    }
}

/// A route: connections whose TLS handshake agreed on this SNI and/or ALPN go to `pool`.
#[derive(Debug)]
pub struct Route {
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    pub pool: Arc<Pool>,
}

impl Route {
    fn matches(&self, sni: Option<&str>, alpn: Option<&[u8]>) -> bool {
        self.sni.as_deref().is_none_or(|s| sni.is_some_and(|n| n.eq_ignore_ascii_case(s)))
            && self.alpn.as_deref().is_none_or(|a| alpn == Some(a))
    }
}

/// Everything a relay listener knows about its backends.
#[derive(Debug)]
pub struct ListenerBackends {
    pub default: Arc<Pool>,
    pub routes: Vec<Route>,
    /// Send a PROXY protocol v2 header first on every backend connection.
    pub proxy_protocol: bool,
}

impl ListenerBackends {
    /// One backend, round-robin, no routes, no PROXY header (the `backend = "ip:port"` form).
    pub fn single(addr: SocketAddr, epoch: Instant) -> Self {
        Self {
            default: Arc::new(Pool::new(&[addr], Balance::RoundRobin, Duration::from_secs(5), epoch)),
            routes: Vec::new(),
            proxy_protocol: false,
        }
    }

    /// The pool for a connection whose handshake agreed on `sni` and `alpn`: the first route
    /// that matches, else the default.
    pub fn route(&self, sni: Option<&str>, alpn: Option<&[u8]>) -> &Arc<Pool> {
        self.routes.iter().find(|r| r.matches(sni, alpn)).map_or(&self.default, |r| &r.pool)
    }

    /// Whether the backend can only be chosen (or its first byte written) after the TLS
    /// handshake: a route needs SNI/ALPN, a PROXY header the TLS facts.
    pub fn needs_handshake(&self) -> bool {
        self.proxy_protocol || !self.routes.is_empty()
    }

    /// `/stats.json`: every pool's backends, the default pool first.
    pub fn json(&self) -> serde_json::Value {
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "sni": r.sni,
                    "alpn": r.alpn.as_deref().map(String::from_utf8_lossy),
                    "backends": r.pool.stats(),
                })
            })
            .collect();
        serde_json::json!({ "backends": self.default.stats(), "routes": routes })
    }
}

/// `backends`, plus a one-backend pool for each relay listener it lacks.
pub fn with_single_backends(
    listeners: &HashMap<SocketAddr, crate::config::ListenerMode>,
    mut backends: HashMap<SocketAddr, Arc<ListenerBackends>>,
) -> HashMap<SocketAddr, Arc<ListenerBackends>> {
    for (addr, mode) in listeners {
        if let crate::config::ListenerMode::Relay(backend) = mode {
            backends
                .entry(*addr)
                .or_insert_with(|| Arc::new(ListenerBackends::single(*backend, std::time::Instant::now())));
        }
    }
    backends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::new([203, 0, 113, 2].into(), 8080 + i)).collect()
    }

    fn pool(n: u16, balance: Balance) -> (Arc<Pool>, Instant) {
        let t0 = Instant::now();
        (Arc::new(Pool::new(&addrs(n), balance, Duration::from_secs(1), t0)), t0)
    }

    #[test]
    fn round_robin_takes_each_backend_in_turn() {
        let (p, t0) = pool(3, Balance::RoundRobin);
        let order: Vec<_> = (0..6).map(|_| p.pick(t0, 0).unwrap()).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn tried_backends_are_skipped_and_then_none_is_left() {
        let (p, t0) = pool(3, Balance::RoundRobin);
        let mut tried = 0u64;
        let mut seen = Vec::new();
        while let Some(i) = p.pick(t0, tried) {
            tried |= 1 << i;
            seen.push(i);
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2], "each backend once, then none");
    }

    #[test]
    fn least_connections_prefers_the_idlest() {
        let (p, t0) = pool(3, Balance::LeastConnections);
        let _a = p.lease(0);
        let _b = p.lease(0);
        let c = p.lease(1);
        assert_eq!(p.pick(t0, 0), Some(2));
        assert_eq!(p.pick(t0, 0), Some(2), "still the idlest");
        let _d = p.lease(2);
        let _e = p.lease(2);
        assert_eq!(p.pick(t0, 0), Some(1));
        drop(c);
        assert_eq!(p.stats()[1].active, 0, "a dropped lease is no longer active");
        assert_eq!(p.pick(t0, 0), Some(1));
        let other = p.pick(t0, 1 << 1).unwrap();
        assert!(other == 0 || other == 2, "1 was tried: {other}");
        // Ties go in turn: with no connections anywhere, all three get picked.
        let (p, t0) = pool(3, Balance::LeastConnections);
        let mut seen: Vec<_> = (0..3).map(|_| p.pick(t0, 0).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn a_failed_backend_cools_down_then_returns() {
        let (p, t0) = pool(2, Balance::RoundRobin);
        p.lease(0).failed(t0);
        assert_eq!(p.stats()[0].failures, 1);
        assert_eq!(p.stats()[0].connects, 1);
        for _ in 0..4 {
            assert_eq!(p.pick(t0 + Duration::from_millis(500), 0), Some(1), "0 cools down");
        }
        let later = t0 + Duration::from_millis(1001);
        let order: Vec<_> = (0..4).map(|_| p.pick(later, 0).unwrap()).collect();
        assert!(order.contains(&0) && order.contains(&1), "both again: {order:?}");
    }

    #[test]
    fn all_cooling_down_picks_the_least_recently_failed() {
        let (p, t0) = pool(3, Balance::RoundRobin);
        p.connect_failed(1, t0);
        p.connect_failed(2, t0 + Duration::from_millis(10));
        p.connect_failed(0, t0 + Duration::from_millis(20));
        let now = t0 + Duration::from_millis(30);
        for _ in 0..3 {
            assert_eq!(p.pick(now, 0), Some(1), "not refused: the oldest failure is tried");
        }
        assert_eq!(p.pick(now, 1 << 1), Some(2));
        assert_eq!(p.pick(now, 0b111), None);
    }

    #[test]
    fn unhealthy_backends_are_skipped_until_healthy() {
        let (p, t0) = pool(2, Balance::LeastConnections);
        p.set_healthy(0, false, t0);
        assert!(!p.stats()[0].healthy);
        for _ in 0..4 {
            assert_eq!(p.pick(t0, 0), Some(1));
        }
        assert_eq!(p.pick(t0, 1 << 1), Some(0), "unhealthy, but the only one left");
        p.set_healthy(0, true, t0);
        let mut seen: Vec<_> = (0..2).map(|_| p.pick(t0, 0).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, [0, 1]);
    }

    #[test]
    fn health_check_marks_a_closed_port_down_and_ends_with_the_pool() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [open.local_addr().unwrap(), closed.local_addr().unwrap()];
        drop(closed);
        let p = Arc::new(Pool::new(&addrs, Balance::RoundRobin, Duration::from_secs(1), Instant::now()));
        p.spawn_health_check(Duration::from_millis(10), Duration::from_millis(500)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.stats()[1].healthy && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = p.stats();
        assert!(s[0].healthy && !s[1].healthy, "{s:?}");
        let weak = Arc::downgrade(&p);
        drop(p);
        std::thread::sleep(Duration::from_millis(100));
        assert!(weak.upgrade().is_none(), "the checker holds no strong reference between rounds");
    }

    #[test]
    fn routes_match_sni_and_alpn_first_match_wins() {
        let t0 = Instant::now();
        let mk = |a: &[SocketAddr]| Arc::new(Pool::new(a, Balance::RoundRobin, Duration::ZERO, t0));
        let all = addrs(4);
        let lb = ListenerBackends {
            default: mk(&all[..1]),
            routes: vec![
                Route { sni: Some("a.test".into()), alpn: Some(b"h2".to_vec()), pool: mk(&all[1..2]) },
                Route { sni: Some("a.test".into()), alpn: None, pool: mk(&all[2..3]) },
                Route { sni: None, alpn: Some(b"h2".to_vec()), pool: mk(&all[3..4]) },
            ],
            proxy_protocol: false,
        };
        let first = |sni, alpn| lb.route(sni, alpn).addr(0).unwrap();
        assert_eq!(first(Some("a.test"), Some(&b"h2"[..])), all[1]);
        assert_eq!(first(Some("A.TEST"), Some(&b"http/1.1"[..])), all[2], "SNI is case-insensitive");
        assert_eq!(first(Some("b.test"), Some(&b"h2"[..])), all[3]);
        assert_eq!(first(None, None), all[0], "no match: the listener's backends");
        assert!(lb.needs_handshake());
        assert!(!ListenerBackends::single(all[0], t0).needs_handshake());
    }
}
