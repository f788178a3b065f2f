//! The admin endpoint: a small HTTP/1.1 server on a kernel socket (default 127.0.0.1:9090).
//!
//! `GET /stats.json` (counters of every queue and of the XDP program, latency summaries),
//! `GET /metrics` (OpenMetrics text for Prometheus, [`crate::observe::metrics`]) and
//! `GET /histograms/<name>.hlog` (a cumulative histogram as an HdrHistogram log,
//! [`crate::observe::hlog`]). Read-only, no secrets. One request per connection; anything else gets
//! 404/405.
//!
//! Hostile or slow clients cannot block it: each connection is served on its own short-lived
//! thread (at most [`MAX_CONNECTIONS`] at once; past that a connection is closed at once), a
//! request has [`REQUEST_DEADLINE`] in all to arrive and its head is bounded
//! ([`MAX_REQUEST_HEAD`], else 431). With a token configured, requests without
//! `Authorization: Bearer <token>` get 401.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use crate::observe::stats::StatsSource;

/// How long the admin thread waits after a failed `accept` (out of descriptors) before retrying.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The time a request has to arrive whole, and a response to be written.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The largest request line plus headers accepted.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

pub struct AdminServer {
    pub local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (while sluice may still be privileged: a port below 1024 is allowed).
    pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        let listener = TcpListener::bind(addr).with_context(|| format!("admin endpoint: binding {addr}"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// Serves `listener` (from [`AdminServer::bind`]) on a thread until `stop` is set; with
    /// `token`, only requests that carry it.
    pub fn spawn(
        listener: TcpListener,
        stats: StatsSource,
        token: Option<String>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr()?;
        if token.is_none() && !local_addr.ip().is_loopback() {
            tracing::warn!(address = %local_addr, "the admin endpoint listens on a non-loopback address without admin.token: anyone who reaches it reads sluice's statistics");
        }
        let token: Option<Arc<str>> = token.map(Into::into);
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = std::thread::Builder::new().name("sluice-admin".into()).spawn(move || {
            // Warned about a failing accept since the last one that worked.
            let mut warned = false;
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        warned = false;
                        if busy.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                            busy.fetch_sub(1, Ordering::Relaxed);
                            drop(stream);
                            continue;
                        }
                        let (stats, token, busy) = (Arc::clone(&stats), token.clone(), Arc::clone(&busy));
                        let spawned = std::thread::Builder::new().name("sluice-admin-req".into()).spawn(move || {
                            if let Err(e) = serve(stream, &stats, token.as_deref()) {
                                tracing::debug!("admin: {e:#}");
                            }
                            busy.fetch_sub(1, Ordering::Relaxed);
                        });
                        if let Err(e) = spawned {
                            tracing::warn!("admin: cannot start a request thread: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Wait for a connection (or 250 ms, to notice a stop request).
                        let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
                        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16));
                    }
                    Err(e) => {
                        // EMFILE and the like: the listener stays readable, so wait instead of
                        // spinning; warn once until an accept works again.
                        if !std::mem::replace(&mut warned, true) {
                            tracing::warn!("admin: accept: {e}; retrying every {ACCEPT_RETRY:?}");
                        }
                        std::thread::sleep(ACCEPT_RETRY);
                    }
                }
            }
        })?;
        Ok(Self { local_addr, thread: Some(thread) })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head (request line and headers) within the deadline and the size bound.
/// `Ok(None)`: the head was too large.
fn read_head(stream: &mut TcpStream, deadline: std::time::Instant) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        anyhow::ensure!(!left.is_zero(), "request not complete within {REQUEST_DEADLINE:?}");
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn serve(mut stream: TcpStream, stats: &StatsSource, token: Option<&str>) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    let (status, content_type, body) = match read_head(&mut stream, deadline)? {
        None => ("431 Request Header Fields Too Large", "text/plain", b"request head too large\n".to_vec()),
        Some(head) => {
            let mut lines = head.lines();
            let mut parts = lines.next().unwrap_or("").split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let authorized = token.is_none_or(|t| {
                lines.any(|l| {
                    l.split_once(':').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("authorization")
                            && value.trim().strip_prefix("Bearer ").is_some_and(|v| v.trim() == t)
                    })
                })
            });
            if authorized {
                route(method, path, stats)?
            } else {
                ("401 Unauthorized", "text/plain", b"admin.token required: Authorization: Bearer <token>\n".to_vec())
            }
        }
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    Ok(())
}

/// Status line, content type and body for one request.
fn route(method: &str, path: &str, stats: &StatsSource) -> anyhow::Result<(&'static str, &'static str, Vec<u8>)> {
    const NOT_FOUND: &str = "not found; try /metrics, /stats.json or /histograms/<name>.hlog\n";
    if method != "GET" {
        return Ok(("405 Method Not Allowed", "text/plain", b"GET only\n".to_vec()));
    }
    let path = path.split('?').next().unwrap_or(path);
    Ok(match path {
        "/stats.json" => {
            ("200 OK", "application/json", (serde_json::to_string_pretty(&stats().json())? + "\n").into_bytes())
        }
        "/metrics" => {
            ("200 OK", crate::observe::metrics::CONTENT_TYPE, crate::observe::metrics::encode(stats()).into_bytes())
        }
        _ => match path.strip_prefix("/histograms/").and_then(|p| p.strip_suffix(".hlog")) {
            Some(name) if crate::observe::latency::Latencies::names().any(|n| n == name) => {
                let s = stats();
                let h = s.latencies.get(name).context("histogram")?;
                let now = std::time::SystemTime::now();
                let log = crate::observe::hlog::histogram_log(name, h, s.started.unwrap_or(now), now)?;
                ("200 OK", "text/plain; charset=utf-8", log)
            }
            Some(_) => {
                let names: Vec<&str> = crate::observe::latency::Latencies::names().collect();
                (
                    "404 Not Found",
                    "text/plain",
                    format!("no such histogram; there are: {}\n", names.join(", ")).into_bytes(),
                )
            }
            None => ("404 Not Found", "text/plain", NOT_FOUND.as_bytes().to_vec()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> StatsSource {
        Arc::new(|| {
            let mut s =
                crate::observe::stats::Snapshot { started: Some(std::time::SystemTime::now()), ..Default::default() };
            s.latencies.tcp_handshake.record(42).unwrap();
            s
        })
    }

    /// One GET on a fresh connection to `addr`: the response's status line and the time it took.
    fn get(addr: SocketAddr, path: &str, extra: &str) -> (String, Duration) {
        use std::io::Read;
        let started = std::time::Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
        let mut response = String::new();
        c.read_to_string(&mut response).unwrap();
        (response.lines().next().unwrap_or("").to_owned(), started.elapsed())
    }

    /// A running admin server that stops when dropped, a failed assertion's unwinding included
    /// (the server's own drop waits for its thread, which only a stop request ends).
    struct Running {
        stop: Arc<AtomicBool>,
        server: Option<AdminServer>,
        local_addr: SocketAddr,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            drop(self.server.take());
        }
    }

    fn start(token: Option<&str>) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = AdminServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let server = AdminServer::spawn(listener, source(), token.map(str::to_owned), Arc::clone(&stop)).unwrap();
        Running { stop, local_addr: server.local_addr, server: Some(server) }
    }

    #[test]
    fn a_silent_client_and_a_huge_request_do_not_hold_up_a_third() {
        let server = start(None);
        let addr = server.local_addr;
        // One connection that sends nothing, and one that sends a 10 MiB request line.
        let _silent = TcpStream::connect(addr).unwrap();
        let huge = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let line = vec![b'a'; 10 << 20];
            let _ = c.write_all(b"GET /");
            let _ = c.write_all(&line); // cut off by the server after MAX_REQUEST_HEAD
            let mut response = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c, &mut response);
            String::from_utf8_lossy(&response).lines().next().unwrap_or("").to_owned()
        });
        std::thread::sleep(Duration::from_millis(50));
        let (status, took) = get(addr, "/metrics", "");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
        let huge = huge.join().unwrap();
        // A 431, or the connection cut before all of it arrived (the server closes with the rest
        // of the 10 MiB unread: its RST may overtake the status line).
        assert!(huge.contains("431") || "HTTP/1.1 431".starts_with(huge.trim_end()), "{huge}");
    }

    #[test]
    fn a_token_is_required_when_configured() {
        let server = start(Some("s3cret"));
        let addr = server.local_addr;
        assert_eq!(get(addr, "/metrics", "").0, "HTTP/1.1 401 Unauthorized");
        assert_eq!(get(addr, "/metrics", "Authorization: Bearer wrong\r\n").0, "HTTP/1.1 401 Unauthorized");
        assert_eq!(get(addr, "/metrics", "authorization: Bearer s3cret\r\n").0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn routes() {
        let s = source();
        let (status, ct, body) = route("GET", "/metrics", &s).unwrap();
        assert_eq!((status, ct), ("200 OK", crate::observe::metrics::CONTENT_TYPE));
        assert!(String::from_utf8(body).unwrap().contains("sluice_tcp_handshake_seconds_count 1"));
        let (status, _, body) = route("GET", "/stats.json", &s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, v["latency"]["tcp_handshake"]["count"].as_u64()), ("200 OK", Some(1)));
        let (status, _, body) = route("GET", "/histograms/tcp_handshake.hlog", &s).unwrap();
        assert_eq!(status, "200 OK");
        assert_eq!(crate::observe::hlog::read_totals(&body).unwrap().get("tcp_handshake"), Some(&1));
        assert_eq!(route("GET", "/histograms/nope.hlog", &s).unwrap().0, "404 Not Found");
        assert_eq!(route("GET", "/histograms/../etc/passwd", &s).unwrap().0, "404 Not Found");
        assert_eq!(route("GET", "/", &s).unwrap().0, "404 Not Found");
        assert_eq!(route("GET", "/metrics?name[]=x", &s).unwrap().0, "200 OK");
        assert_eq!(route("POST", "/metrics", &s).unwrap().0, "405 Method Not Allowed");
    }
}
