//! The admin endpoint: a small HTTP/1.1 server on a kernel socket (default 127.0.0.1:9090).
//!
//! `GET /stats.json` returns the counters of every queue and of the XDP program. It is
//! read-only and serves no secrets. One request per connection; anything else gets 404/405.
//! (Prometheus text and histograms come with the stats export.)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// Produces the body of `/stats.json` on each request.
pub type StatsSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub struct AdminServer {
    pub local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` and serves until `stop` is set.
    pub fn spawn(addr: SocketAddr, stats: StatsSource, stop: Arc<AtomicBool>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).with_context(|| format!("admin endpoint: binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let thread = std::thread::Builder::new().name("sluice-admin".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve(stream, &stats) {
                            tracing::debug!("admin: {e:#}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Wait for a connection (or 250 ms, to notice a stop request).
                        let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
                        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16));
                    }
                    Err(e) => tracing::warn!("admin: accept: {e}"),
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
    let (status, content_type, body) = match (method, path) {
        ("GET", "/stats.json") => {
            ("200 OK", "application/json", serde_json::to_string_pretty(&stats())? + "\n")
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found; try /stats.json\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}
