//! The admin endpoint: a small HTTP/1.1 server on a kernel socket (default 127.0.0.1:9090).
//!
//! `GET /stats.json` (counters of every queue and of the XDP program, latency summaries),
//! `GET /metrics` (OpenMetrics text for Prometheus, [`crate::observe::metrics`]) and
//! `GET /histograms/<name>.hlog` (a cumulative histogram as an HdrHistogram log,
//! [`crate::observe::hlog`]). Read-only, no secrets. One request per connection; anything else gets
//! 404/405.

use std::io::{BufRead, BufReader, Write};
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

    /// Serves `listener` (from [`AdminServer::bind`]) on a thread until `stop` is set.
    pub fn spawn(listener: TcpListener, stats: StatsSource, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr()?;
        let thread = std::thread::Builder::new().name("sluice-admin".into()).spawn(move || {
            // Warned about a failing accept since the last one that worked.
            let mut warned = false;
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        warned = false;
                        if let Err(e) = serve(stream, &stats) {
                            tracing::debug!("admin: {e:#}");
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

fn serve(stream: TcpStream, stats: &StatsSource) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded).
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = route(method, path, stats)?;
    let mut stream = stream;
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
