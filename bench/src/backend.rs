//! `sluice-bench backend`: the plaintext backend that sluice relays to in tests, the demo and
//! benchmarks (issue 4), and `sluice-bench certs`, the demo certificates.
//!
//! What it is: a server on kernel sockets with two modes.
//! - `http`: HTTP/1.1 (RFC 9112) with keep-alive and pipelining (answered in order).
//!   `GET /` names the backend (`--id`) and echoes the Host header; `GET /bytes/N` streams N
//!   deterministic pseudo-random bytes ([`prng`]); `POST /upload` consumes a body (Content-Length
//!   or chunked, RFC 9112 §7.1) and answers its length and sha256; `GET /stats` answers the
//!   counters as JSON. A malformed request gets 400 and a close, a head over 16 KiB 431 and a close.
//! - `echo`: bytes come back as they arrive; when the client shuts down its write side the backend
//!   finishes echoing and shuts down its own (half-close passes through).
//!
//! With `--accept-proxy`, every connection must start with a PROXY protocol v2 header
//! (haproxy.org proxy-protocol.txt §2.2), parsed strictly by [`proxy_v2`]; the last one seen is at
//! `/stats`, a malformed one closes the connection and is counted.
//!
//! What it is not: a fast server or a general one. It is a fixed, checkable peer.
//!
//! Concurrency: one thread per connection, bounded by `--max-connections` (a connection past the
//! bound is accepted, counted and closed), and `--threads` acceptor threads on one listening socket.
//! Why not an event loop: the load it must carry is a few thousand connections (the acceptance test
//! runs 500), which threads with small stacks carry easily; blocking code makes the half-close,
//! back-pressure (a slow reader blocks our write, which stops our read) and the 1 GiB streams
//! obviously right; and the kernel scheduler, not this program, is what a benchmark of sluice should
//! not be measuring anyway: the backend is never the bottleneck at these rates (see the report).
//!
//! SIGTERM/SIGINT: stop accepting, wait up to 2 s for connections to end, print the counters as
//! one JSON line on stdout, exit 0.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Http,
    Echo,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to listen on, e.g. 203.0.113.2:8080.
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub mode: Mode,
    /// Acceptor threads (each connection then gets its own thread).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// `GET /` bodies are padded with '.' to at least this many bytes.
    #[arg(long, default_value_t = 0)]
    pub response_bytes: usize,
    /// The name `GET /` and `/stats` report.
    #[arg(long, default_value = "backend")]
    pub id: String,
    /// Connections served at once; one past this is accepted, counted and closed.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: u64,
    /// Require a PROXY protocol v2 header at the start of every connection.
    #[arg(long)]
    pub accept_proxy: bool,
    /// A connection with nothing to read or unable to write for this long is closed.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout_secs: u64,
}

/// Request heads (request line and header fields) larger than this get 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// More header fields than this get 431.
pub const MAX_HEADERS: usize = 100;
const OUT_CAP: usize = 32 * 1024;
const IN_CAP: usize = 32 * 1024;

#[derive(Default)]
struct Stats {
    connections_accepted: AtomicU64,
    connections_active: AtomicU64,
    connections_rejected: AtomicU64,
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// 400/505/501: malformed requests, each followed by a close.
    bad_requests: AtomicU64,
    /// 431: heads over [`MAX_HEAD`] or [`MAX_HEADERS`].
    heads_too_large: AtomicU64,
    /// Connections that ended in the middle of a request.
    truncated_requests: AtomicU64,
    proxy_headers: AtomicU64,
    proxy_rejected: AtomicU64,
    /// Resets, broken pipes and other socket errors (idle timeouts apart).
    io_errors: AtomicU64,
    idle_timeouts: AtomicU64,
    last_proxy: Mutex<Option<serde_json::Value>>,
}

struct Shared {
    args: Args,
    stats: Stats,
}

impl Shared {
    fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let last_proxy = s.last_proxy.lock().map(|g| g.clone()).unwrap_or(None);
        json!({
            "id": self.args.id,
            "mode": match self.args.mode { Mode::Http => "http", Mode::Echo => "echo" },
            "connections_accepted": s.connections_accepted.load(Relaxed),
            "connections_active": s.connections_active.load(Relaxed),
            "connections_rejected": s.connections_rejected.load(Relaxed),
            "requests": s.requests.load(Relaxed),
            "bytes_in": s.bytes_in.load(Relaxed),
            "bytes_out": s.bytes_out.load(Relaxed),
            "bad_requests": s.bad_requests.load(Relaxed),
            "heads_too_large": s.heads_too_large.load(Relaxed),
            "truncated_requests": s.truncated_requests.load(Relaxed),
            "proxy_headers": s.proxy_headers.load(Relaxed),
            "proxy_rejected": s.proxy_rejected.load(Relaxed),
            "io_errors": s.io_errors.load(Relaxed),
            "idle_timeouts": s.idle_timeouts.load(Relaxed),
            "last_proxy": last_proxy,
        })
    }
}

pub fn run(args: &Args) -> Result<()> {
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&term)).context("registering a signal handler")?;
    }
    let listener = listen(args.listen)?;
    let shared = Arc::new(Shared { args: args.clone(), stats: Stats::default() });
    eprintln!(
        "sluice-bench backend: {:?} mode on {} (id {}, {} acceptors, max {} connections{})",
        args.mode,
        args.listen,
        args.id,
        args.threads.max(1),
        args.max_connections,
        if args.accept_proxy { ", PROXY v2 required" } else { "" }
    );
    let mut acceptors = Vec::new();
    for i in 0..args.threads.max(1) {
        let listener = listener.try_clone().context("cloning the listener")?;
        let (shared, term) = (Arc::clone(&shared), Arc::clone(&term));
        acceptors.push(
            std::thread::Builder::new()
                .name(format!("accept-{i}"))
                .spawn(move || accept_loop(&listener, &shared, &term))
                .context("spawning an acceptor")?,
        );
    }
    for a in acceptors {
        let _ = a.join();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.stats.connections_active.load(Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{}", shared.stats_json());
    Ok(())
}

/// A listening socket with a long backlog (500 clients connect at once in the acceptance test)
/// and SO_RCVTIMEO, which Linux applies to accept(2): acceptors wake up to see the signal flag.
fn listen(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).context("socket")?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).with_context(|| format!("binding {addr}"))?;
    socket.listen(4096).context("listen")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket.into())
}

fn accept_loop(listener: &std::net::TcpListener, shared: &Arc<Shared>, term: &AtomicBool) {
    let stats = &shared.stats;
    while !term.load(Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                // EMFILE and friends: count, back off a little, keep serving.
                stats.io_errors.fetch_add(1, Relaxed);
                eprintln!("sluice-bench backend: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        stats.connections_accepted.fetch_add(1, Relaxed);
        if stats.connections_active.fetch_add(1, Relaxed) >= shared.args.max_connections {
            stats.connections_active.fetch_sub(1, Relaxed);
            stats.connections_rejected.fetch_add(1, Relaxed);
            continue;
        }
        let conn_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new().stack_size(256 * 1024).spawn(move || {
            let shared = conn_shared;
            match serve(stream, &shared) {
                Ok(()) => {}
                // SO_RCVTIMEO/SO_SNDTIMEO expired: --idle-timeout-secs.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    shared.stats.idle_timeouts.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    shared.stats.io_errors.fetch_add(1, Relaxed);
                    if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
                        eprintln!("sluice-bench backend: connection: {e}");
                    }
                }
            }
            shared.stats.connections_active.fetch_sub(1, Relaxed);
        });
        if spawned.is_err() {
            stats.connections_active.fetch_sub(1, Relaxed);
            stats.connections_rejected.fetch_add(1, Relaxed);
        }
    }
}

/// Bytes read from the connection and not yet consumed: `data[head..tail]`.
struct InBuf {
    data: Vec<u8>,
    head: usize,
    tail: usize,
}

enum Fill {
    Read,
    Eof,
    /// The buffer is at its limit and holds nothing consumable.
    Full,
}

impl InBuf {
    fn new() -> Self {
        Self { data: vec![0; IN_CAP], head: 0, tail: 0 }
    }
    fn bytes(&self) -> &[u8] {
        &self.data[self.head..self.tail]
    }
    fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.tail);
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }
    /// Reads more, growing the buffer up to `limit` bytes if it is full.
    fn fill(&mut self, stream: &mut TcpStream, stats: &Stats, limit: usize) -> io::Result<Fill> {
        if self.tail == self.data.len() && self.head > 0 {
            self.data.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        if self.tail == self.data.len() {
            if self.data.len() >= limit {
                return Ok(Fill::Full);
            }
            let len = (self.data.len() * 2).min(limit);
            self.data.resize(len, 0);
        }
        loop {
            match stream.read(&mut self.data[self.tail..]) {
                Ok(0) => return Ok(Fill::Eof),
                Ok(n) => {
                    self.tail += n;
                    stats.bytes_in.fetch_add(n as u64, Relaxed);
                    return Ok(Fill::Read);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Buffered writes, flushed before every blocking read so that pipelined answers go out together.
struct Out<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stats: &'a Stats,
}

impl Out<'_> {
    fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > OUT_CAP {
            self.flush()?;
            if data.len() >= OUT_CAP {
                self.stream.write_all(data)?;
                self.stats.bytes_out.fetch_add(data.len() as u64, Relaxed);
                return Ok(());
            }
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf)?;
            self.stats.bytes_out.fetch_add(self.buf.len() as u64, Relaxed);
            self.buf.clear();
        }
        Ok(())
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let idle = Duration::from_secs(shared.args.idle_timeout_secs.max(1));
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    stream.set_nodelay(true)?;
    let mut inbuf = InBuf::new();
    if shared.args.accept_proxy && !read_proxy_header(&mut stream, &mut inbuf, shared)? {
        return Ok(());
    }
    match shared.args.mode {
        Mode::Http => serve_http(stream, inbuf, shared),
        Mode::Echo => serve_echo(stream, inbuf, shared),
    }
}

/// Reads and records the PROXY v2 header; `false` when the connection was rejected (and closed).
fn read_proxy_header(stream: &mut TcpStream, inbuf: &mut InBuf, shared: &Shared) -> io::Result<bool> {
    let stats = &shared.stats;
    loop {
        match proxy_v2::Header::parse(inbuf.bytes()) {
            Ok(Some((header, len))) => {
                inbuf.consume(len);
                let value = header.to_json();
                eprintln!("sluice-bench backend: PROXY v2 {value}");
                stats.proxy_headers.fetch_add(1, Relaxed);
                if let Ok(mut last) = stats.last_proxy.lock() {
                    *last = Some(value);
                }
                return Ok(true);
            }
            Ok(None) => match inbuf.fill(stream, stats, proxy_v2::MAX_LEN)? {
                Fill::Read => {}
                // Connected and closed without a byte (a port probe): nothing to reject.
                Fill::Eof if inbuf.bytes().is_empty() => return Ok(false),
                Fill::Eof | Fill::Full => {
                    stats.proxy_rejected.fetch_add(1, Relaxed);
                    eprintln!("sluice-bench backend: PROXY v2 header truncated");
                    return Ok(false);
                }
            },
            Err(e) => {
                stats.proxy_rejected.fetch_add(1, Relaxed);
                eprintln!("sluice-bench backend: PROXY v2 header rejected: {e}");
                return Ok(false);
            }
        }
    }
}

fn serve_echo(mut stream: TcpStream, inbuf: InBuf, shared: &Shared) -> io::Result<()> {
    let stats = &shared.stats;
    // Whatever followed the PROXY header.
    if !inbuf.bytes().is_empty() {
        stream.write_all(inbuf.bytes())?;
        stats.bytes_out.fetch_add(inbuf.bytes().len() as u64, Relaxed);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stats.bytes_in.fetch_add(n as u64, Relaxed);
        stream.write_all(&buf[..n])?;
        stats.bytes_out.fetch_add(n as u64, Relaxed);
    }
    // The client's FIN: everything it sent has been echoed; pass the half-close on.
    stream.shutdown(Shutdown::Write)
}

/// Sends a final response, then closes without resetting: half-close, then read and drop what the
/// client still sends for a moment, so that unread input does not turn our close into a RST that
/// could destroy the response before the client reads it.
fn reject(out: &mut Out<'_>, status: u16, reason: &str, detail: &str) -> io::Result<()> {
    let body = format!("{status} {reason}: {detail}\n");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.push(head.as_bytes())?;
    out.push(body.as_bytes())?;
    out.flush()?;
    lingering_close(&mut out.stream)
}

fn lingering_close(stream: &mut TcpStream) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut sink = [0u8; 8192];
    let mut total = 0usize;
    while total < 1 << 20 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    Ok(())
}

fn serve_http(mut stream: TcpStream, mut inbuf: InBuf, shared: &Shared) -> io::Result<()> {
    let stats = &shared.stats;
    let mut out = Out { stream: stream.try_clone()?, buf: Vec::with_capacity(OUT_CAP), stats };
    loop {
        let head = loop {
            match http::parse_head(inbuf.bytes()) {
                Ok(Some((head, len))) => {
                    inbuf.consume(len);
                    break head;
                }
                Ok(None) => {
                    out.flush()?;
                    match inbuf.fill(&mut stream, stats, IN_CAP.max(MAX_HEAD))? {
                        Fill::Read => {}
                        Fill::Eof => {
                            if !inbuf.bytes().is_empty() {
                                stats.truncated_requests.fetch_add(1, Relaxed);
                            }
                            return Ok(());
                        }
                        // parse_head reports TooLarge before the buffer can fill up.
                        Fill::Full => {
                            stats.heads_too_large.fetch_add(1, Relaxed);
                            return reject(&mut out, 431, "Request Header Fields Too Large", "request head too large");
                        }
                    }
                }
                Err(e) => {
                    let (status, reason) = e.status();
                    if status == 431 {
                        stats.heads_too_large.fetch_add(1, Relaxed);
                    } else {
                        stats.bad_requests.fetch_add(1, Relaxed);
                    }
                    return reject(&mut out, status, reason, &e.to_string());
                }
            }
        };
        stats.requests.fetch_add(1, Relaxed);
        if let Err(e) = head.check_host() {
            stats.bad_requests.fetch_add(1, Relaxed);
            let (status, reason) = e.status();
            return reject(&mut out, status, reason, &e.to_string());
        }
        let mut body = match head.body() {
            Ok(body) => body,
            Err(e) => {
                stats.bad_requests.fetch_add(1, Relaxed);
                let (status, reason) = e.status();
                return reject(&mut out, status, reason, &e.to_string());
            }
        };
        let upload = head.method == "POST" && head.path() == "/upload";
        if head.expects_continue() && !body.is_done() {
            // RFC 9110 §10.1.1: curl waits for this before sending a large body.
            out.push(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut hasher = Sha256::new();
        let mut body_len = 0u64;
        while !body.is_done() {
            let used = match body.decode(inbuf.bytes(), &mut |chunk| {
                body_len += chunk.len() as u64;
                if upload {
                    hasher.update(chunk);
                }
            }) {
                Ok(used) => used,
                Err(e) => {
                    stats.bad_requests.fetch_add(1, Relaxed);
                    let (status, reason) = e.status();
                    return reject(&mut out, status, reason, &e.to_string());
                }
            };
            inbuf.consume(used);
            if body.is_done() {
                break;
            }
            out.flush()?;
            match inbuf.fill(&mut stream, stats, IN_CAP)? {
                Fill::Read => {}
                Fill::Eof | Fill::Full => {
                    stats.truncated_requests.fetch_add(1, Relaxed);
                    return Ok(());
                }
            }
        }
        let close = !head.keep_alive();
        respond(&mut out, shared, &head, close, body_len, upload.then(|| hasher.finalize()))?;
        if close {
            out.flush()?;
            return lingering_close(&mut stream);
        }
    }
}

fn respond(
    out: &mut Out<'_>,
    shared: &Shared,
    head: &http::RequestHead,
    close: bool,
    body_len: u64,
    digest: Option<sha2::digest::Output<Sha256>>,
) -> io::Result<()> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut simple = |status: &str, ctype: &str, body: &[u8]| -> io::Result<()> {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Backend-Id: {}\r\n{connection}\r\n",
            body.len(),
            shared.args.id
        );
        out.push(head.as_bytes())?;
        out.push(body)
    };
    let path = head.path();
    let get = head.method == "GET";
    match path {
        "/" if get => {
            let host = head.header("host").unwrap_or("");
            let mut body = format!("backend {}\nhost {}\n", shared.args.id, host).into_bytes();
            if body.len() < shared.args.response_bytes {
                body.resize(shared.args.response_bytes, b'.');
            }
            simple("200 OK", "text/plain", &body)
        }
        "/stats" if get => {
            let body = format!("{}\n", shared.stats_json());
            simple("200 OK", "application/json", body.as_bytes())
        }
        "/upload" if head.method == "POST" => {
            let hex: String = digest.map(|d| d.iter().map(|b| format!("{b:02x}")).collect()).unwrap_or_default();
            let body = format!("{}\n", json!({ "bytes": body_len, "sha256": hex }));
            simple("200 OK", "application/json", body.as_bytes())
        }
        _ if get && path.starts_with("/bytes/") => {
            let Ok(n) = path["/bytes/".len()..].parse::<u64>() else {
                return simple("400 Bad Request", "text/plain", b"bad byte count\n");
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nX-Backend-Id: {}\r\n{connection}\r\n",
                shared.args.id
            );
            out.push(head.as_bytes())?;
            let mut rng = prng::ByteStream::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let mut left = n;
            while left > 0 {
                let len = left.min(chunk.len() as u64) as usize;
                rng.fill(&mut chunk[..len]);
                out.push(&chunk[..len])?;
                left -= len as u64;
            }
            Ok(())
        }
        "/" | "/stats" | "/upload" => simple("405 Method Not Allowed", "text/plain", b"method not allowed\n"),
        _ if path.starts_with("/bytes/") => simple("405 Method Not Allowed", "text/plain", b"method not allowed\n"),
        _ => simple("404 Not Found", "text/plain", b"not found\n"),
    }
}

/// The bytes of `GET /bytes/N`: the first N bytes of the SplitMix64 sequence with state 0
/// (Steele, Lea, Flood 2014; the generator of `java.util.SplittableRandom`): for each 8 bytes,
/// `state += 0x9E3779B97F4A7C15; z = state; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
/// z = (z ^ (z >> 27)) * 0x94D049BB133111EB; z ^= z >> 31`, written little-endian.
/// A client computes the same sequence to check a sha256 of what it received.
pub mod prng {
    pub struct ByteStream {
        state: u64,
        word: [u8; 8],
        used: usize,
    }

    impl Default for ByteStream {
        fn default() -> Self {
            Self::new()
        }
    }

    impl ByteStream {
        pub fn new() -> Self {
            Self { state: 0, word: [0; 8], used: 8 }
        }

        pub fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// The next `buf.len()` bytes of the stream.
        pub fn fill(&mut self, buf: &mut [u8]) {
            let mut i = 0;
            while i < buf.len() && self.used < 8 {
                buf[i] = self.word[self.used];
                self.used += 1;
                i += 1;
            }
            let mut chunks = buf[i..].chunks_exact_mut(8);
            for c in &mut chunks {
                c.copy_from_slice(&self.next_u64().to_le_bytes());
            }
            let rest = chunks.into_remainder();
            if !rest.is_empty() {
                self.word = self.next_u64().to_le_bytes();
                let n = rest.len();
                rest.copy_from_slice(&self.word[..n]);
                self.used = n;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn splitmix64_reference_values() {
            // SplittableRandom(0).nextLong() in Java: 0xe220a8397b1dcdaf, then 0x6e789e6aa1b965f4.
            let mut s = ByteStream::new();
            assert_eq!(s.next_u64(), 0xe220_a839_7b1d_cdaf);
            assert_eq!(s.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        }

        #[test]
        fn fill_is_independent_of_how_it_is_cut() {
            let mut whole = vec![0u8; 1000];
            ByteStream::new().fill(&mut whole);
            let mut pieces = vec![0u8; 1000];
            let mut s = ByteStream::new();
            let mut at = 0;
            for len in [3, 8, 1, 13, 64, 5, 906] {
                s.fill(&mut pieces[at..at + len]);
                at += len;
            }
            assert_eq!(at, 1000);
            assert_eq!(whole, pieces);
            assert_eq!(&whole[..8], &0xe220_a839_7b1d_cdafu64.to_le_bytes());
        }
    }
}

/// HTTP/1.1 request heads and bodies (RFC 9112), sans-IO: functions over byte slices.
///
/// Strict where the RFC allows a server to be: CRLF line endings only, no whitespace between a
/// field name and its colon (§5.1), no obsolete line folding (§5.2), no request with both
/// Transfer-Encoding and Content-Length (§6.3), no transfer coding other than `chunked`.
/// Not a general parser: no absolute-form targets beyond keeping them as they are, no trailers kept.
pub mod http {
    use thiserror::Error;

    use super::{MAX_HEAD, MAX_HEADERS};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RequestHead {
        pub method: String,
        pub target: String,
        /// The minor version of HTTP/1.x.
        pub minor: u8,
        pub headers: Vec<(String, String)>,
    }

    #[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
    pub enum HeadError {
        #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
        TooLarge,
        #[error("malformed request line")]
        RequestLine,
        #[error("unsupported HTTP version")]
        Version,
        #[error("malformed header field")]
        Field,
        #[error("bare LF or CR in the head")]
        LineEnding,
        #[error("no Host header, more than one, or an invalid one (RFC 9112 §3.2)")]
        Host,
    }

    #[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
    pub enum BodyError {
        #[error("both Transfer-Encoding and Content-Length")]
        Ambiguous,
        #[error("invalid Content-Length")]
        ContentLength,
        #[error("transfer coding other than chunked")]
        UnsupportedCoding,
        #[error("malformed chunked body")]
        Chunk,
    }

    impl HeadError {
        pub fn status(self) -> (u16, &'static str) {
            match self {
                HeadError::TooLarge => (431, "Request Header Fields Too Large"),
                HeadError::Version => (505, "HTTP Version Not Supported"),
                _ => (400, "Bad Request"),
            }
        }
    }

    impl BodyError {
        pub fn status(self) -> (u16, &'static str) {
            match self {
                BodyError::UnsupportedCoding => (501, "Not Implemented"),
                _ => (400, "Bad Request"),
            }
        }
    }

    /// RFC 9110 §5.6.2: tchar.
    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    /// Parses one request head from the start of `buf`: `Ok(None)` while incomplete,
    /// `Ok(Some((head, bytes consumed)))` once the empty line has arrived.
    pub fn parse_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line.
        let mut start = 0;
        while buf[start..].starts_with(b"\r\n") {
            start += 2;
        }
        let window = &buf[start..buf.len().min(start + MAX_HEAD)];
        let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
            // Reject early what can no longer become valid.
            if window.len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            if let Some(first) = window.iter().position(|&b| b == b'\n') {
                if first == 0 || window[first - 1] != b'\r' {
                    return Err(HeadError::LineEnding);
                }
                parse_request_line(&window[..first - 1])?;
            }
            return Ok(None);
        };
        let text = &window[..end];
        let mut lines = Lines(text);
        let request_line = lines.next().ok_or(HeadError::RequestLine)??;
        let (method, target, minor) = parse_request_line(request_line)?;
        let mut headers = Vec::new();
        for line in lines {
            let line = line?;
            if headers.len() == MAX_HEADERS {
                return Err(HeadError::TooLarge);
            }
            headers.push(parse_field(line)?);
        }
        Ok(Some((RequestHead { method, target, minor, headers }, start + end + 4)))
    }

    /// Lines separated by CRLF; a CR or LF on its own is an error.
    struct Lines<'a>(&'a [u8]);

    impl<'a> Iterator for Lines<'a> {
        type Item = Result<&'a [u8], HeadError>;
        fn next(&mut self) -> Option<Self::Item> {
            if self.0.is_empty() {
                return None;
            }
            let (line, rest) = match self.0.windows(2).position(|w| w == b"\r\n") {
                Some(i) => (&self.0[..i], &self.0[i + 2..]),
                None => (self.0, &[][..]),
            };
            self.0 = rest;
            if line.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Some(Err(HeadError::LineEnding));
            }
            Some(Ok(line))
        }
    }

    /// RFC 9112 §3: `method SP request-target SP HTTP-version`.
    fn parse_request_line(line: &[u8]) -> Result<(String, String, u8), HeadError> {
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HeadError::RequestLine);
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::RequestLine);
        }
        if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
            return Err(HeadError::RequestLine);
        }
        let minor = match version {
            b"HTTP/1.1" => 1,
            b"HTTP/1.0" => 0,
            v if v.len() == 8
                && v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit() =>
            {
                return Err(HeadError::Version);
            }
            _ => return Err(HeadError::RequestLine),
        };
        // Both are ASCII by the checks above.
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok((s(method), s(target), minor))
    }

    /// RFC 9112 §5: `field-name ":" OWS field-value OWS`.
    fn parse_field(line: &[u8]) -> Result<(String, String), HeadError> {
        // §5.2: obs-fold (a line starting with whitespace) is rejected.
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Field)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // §5.1: no whitespace between name and colon; the name is a token.
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Field);
        }
        let value = value.trim_ascii();
        // RFC 9110 §5.5: field-vchar, SP, HTAB, obs-text; no other CTL (NUL in particular).
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Field);
        }
        Ok((String::from_utf8_lossy(name).to_ascii_lowercase(), String::from_utf8_lossy(value).into_owned()))
    }

    impl RequestHead {
        /// The first value of header `name` (lower case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }

        fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
            self.headers
                .iter()
                .filter(move |(n, _)| n == name)
                .flat_map(|(_, v)| v.split(','))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        }

        /// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any
        /// HTTP/1.1 request message that lacks a Host header field and to any request message that
        /// contains more than one Host header field line or a Host header field with an invalid
        /// field value." (An empty value is valid: RFC 9110 §7.2.)
        pub fn check_host(&self) -> Result<(), HeadError> {
            let hosts: Vec<&str> = self.headers.iter().filter(|(n, _)| n == "host").map(|(_, v)| v.as_str()).collect();
            let valid = |h: &str| !h.bytes().any(|b| b.is_ascii_whitespace() || b == b',');
            match hosts.as_slice() {
                [] if self.minor == 0 => Ok(()),
                [h] if valid(h) => Ok(()),
                _ => Err(HeadError::Host),
            }
        }

        /// The target without its query.
        pub fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or("")
        }

        /// RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        pub fn keep_alive(&self) -> bool {
            let has = |t: &str| self.values("connection").any(|v| v.eq_ignore_ascii_case(t));
            if self.minor >= 1 { !has("close") } else { has("keep-alive") }
        }

        pub fn expects_continue(&self) -> bool {
            self.minor >= 1 && self.values("expect").any(|v| v.eq_ignore_ascii_case("100-continue"))
        }

        /// RFC 9112 §6.3: how the body of this request is delimited.
        pub fn body(&self) -> Result<Body, BodyError> {
            let te: Vec<&str> = self.values("transfer-encoding").collect();
            let has_cl = self.headers.iter().any(|(n, _)| n == "content-length");
            if !te.is_empty() || self.headers.iter().any(|(n, _)| n == "transfer-encoding") {
                if has_cl {
                    return Err(BodyError::Ambiguous);
                }
                // Only `chunked`, once: other codings (and HTTP/1.0 with TE) are not served.
                if self.minor == 0 || te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
                    return Err(BodyError::UnsupportedCoding);
                }
                return Ok(Body::Chunked(Chunked::default()));
            }
            // §6.3 item 5: a list of identical values is that value; anything else is an error.
            let mut length = None;
            for (n, v) in &self.headers {
                if n != "content-length" {
                    continue;
                }
                for item in v.split(',').map(str::trim) {
                    if item.is_empty() || item.len() > 19 || !item.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(BodyError::ContentLength);
                    }
                    let value: u64 = item.parse().map_err(|_| BodyError::ContentLength)?;
                    if length.is_some_and(|l| l != value) {
                        return Err(BodyError::ContentLength);
                    }
                    length = Some(value);
                }
            }
            Ok(Body::Length(length.unwrap_or(0)))
        }
    }

    /// A request body being decoded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Body {
        /// Bytes still to come.
        Length(u64),
        Chunked(Chunked),
    }

    impl Body {
        pub fn is_done(&self) -> bool {
            match self {
                Body::Length(n) => *n == 0,
                Body::Chunked(c) => c.state == ChunkState::Done,
            }
        }

        /// Decodes from `input`, handing body bytes to `sink`; returns how much of `input` it used.
        /// Never reads past the end of the body (the next pipelined request starts there).
        pub fn decode(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<usize, BodyError> {
            match self {
                Body::Length(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    if n > 0 {
                        sink(&input[..n]);
                    }
                    *left -= n as u64;
                    Ok(n)
                }
                Body::Chunked(c) => c.decode(input, sink),
            }
        }
    }

    /// Chunk-size lines (with extensions) and trailer sections longer than this are rejected.
    pub const MAX_CHUNK_LINE: usize = 4096;
    pub const MAX_TRAILERS: usize = MAX_HEAD;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    enum ChunkState {
        /// In the hex digits of chunk-size.
        #[default]
        Size,
        /// After chunk-size: BWS and chunk-ext up to CR.
        Ext,
        SizeLf,
        Data(u64),
        DataCr,
        DataLf,
        /// At the start of a trailer line (or the final empty line).
        TrailerStart,
        TrailerLine,
        TrailerLf,
        FinalLf,
        Done,
    }

    /// RFC 9112 §7.1: `*chunk last-chunk trailer-section CRLF`, as a byte state machine.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Chunked {
        state: ChunkState,
        size: u64,
        digits: u32,
        line: usize,
        trailers: usize,
    }

    impl Chunked {
        fn decode(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<usize, BodyError> {
            use ChunkState::*;
            let mut i = 0;
            while i < input.len() && self.state != Done {
                if let Data(left) = self.state {
                    let n = left.min((input.len() - i) as u64) as usize;
                    sink(&input[i..i + n]);
                    i += n;
                    self.state = if left == n as u64 { DataCr } else { Data(left - n as u64) };
                    continue;
                }
                let b = input[i];
                i += 1;
                self.state = match self.state {
                    Size => match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            self.digits += 1;
                            if self.digits > 15 {
                                return Err(BodyError::Chunk);
                            }
                            self.size = self.size * 16 + (b as char).to_digit(16).unwrap_or(0) as u64;
                            Size
                        }
                        _ if self.digits == 0 => return Err(BodyError::Chunk),
                        b'\r' => SizeLf,
                        b';' | b' ' | b'\t' => {
                            self.line = 0;
                            Ext
                        }
                        _ => return Err(BodyError::Chunk),
                    },
                    Ext => match b {
                        b'\r' => SizeLf,
                        b'\n' => return Err(BodyError::Chunk),
                        _ if b < 0x20 && b != b'\t' => return Err(BodyError::Chunk),
                        _ => {
                            self.line += 1;
                            if self.line > MAX_CHUNK_LINE {
                                return Err(BodyError::Chunk);
                            }
                            Ext
                        }
                    },
                    SizeLf if b == b'\n' => {
                        let size = std::mem::take(&mut self.size);
                        self.digits = 0;
                        if size == 0 { TrailerStart } else { Data(size) }
                    }
                    DataCr if b == b'\r' => DataLf,
                    DataLf if b == b'\n' => Size,
                    TrailerStart => match b {
                        b'\r' => FinalLf,
                        b'\n' => return Err(BodyError::Chunk),
                        _ => {
                            self.trailers += 1;
                            TrailerLine
                        }
                    },
                    TrailerLine => match b {
                        b'\r' => TrailerLf,
                        b'\n' => return Err(BodyError::Chunk),
                        _ => {
                            self.trailers += 1;
                            if self.trailers > MAX_TRAILERS {
                                return Err(BodyError::Chunk);
                            }
                            TrailerLine
                        }
                    },
                    TrailerLf if b == b'\n' => TrailerStart,
                    FinalLf if b == b'\n' => Done,
                    _ => return Err(BodyError::Chunk),
                };
            }
            Ok(i)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn head(s: &str) -> RequestHead {
            let (h, n) = parse_head(s.as_bytes()).unwrap().unwrap();
            assert_eq!(n, s.len());
            h
        }

        /// Decodes a whole body fed in pieces of `step` bytes; returns (body, bytes used).
        fn decode_all(body: &mut Body, input: &[u8], step: usize) -> Result<(Vec<u8>, usize), BodyError> {
            let mut out = Vec::new();
            let mut at = 0;
            // The caller feeds what it has buffered: everything up to `end`, not consumed yet.
            let mut end = 0;
            while !body.is_done() {
                if end == input.len() && at == end {
                    break;
                }
                end = (end + step).min(input.len());
                let used = body.decode(&input[at..end], &mut |c| out.extend_from_slice(c))?;
                at += used;
            }
            Ok((out, at))
        }

        #[test]
        fn simple_get() {
            let h = head("GET /bytes/10?x=1 HTTP/1.1\r\nHost: a.test\r\nX-Thing:  v  \r\n\r\n");
            assert_eq!(h.method, "GET");
            assert_eq!(h.path(), "/bytes/10");
            assert_eq!(h.header("host"), Some("a.test"));
            assert_eq!(h.header("x-thing"), Some("v"));
            assert!(h.keep_alive());
            assert_eq!(h.body(), Ok(Body::Length(0)));
        }

        #[test]
        fn incomplete_heads_wait() {
            let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
            for n in 0..full.len() {
                assert_eq!(parse_head(&full[..n]), Ok(None), "prefix of {n} bytes");
            }
        }

        #[test]
        fn pipelined_requests_parse_one_after_another() {
            let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /upload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\n\r\n";
            let (a, n) = parse_head(input).unwrap().unwrap();
            assert_eq!(a.target, "/a");
            let rest = &input[n..];
            let (b, n) = parse_head(rest).unwrap().unwrap();
            assert_eq!(b.target, "/upload");
            let mut body = b.body().unwrap();
            let mut got = Vec::new();
            let used = body.decode(&rest[n..], &mut |c| got.extend_from_slice(c)).unwrap();
            assert_eq!((got.as_slice(), used, body.is_done()), (&b"hello"[..], 5, true));
            let (c, n2) = parse_head(&rest[n + used..]).unwrap().unwrap();
            assert_eq!(c.target, "/c");
            assert_eq!(n + used + n2, rest.len());
        }

        #[test]
        fn host_is_required_once_in_http_1_1() {
            assert_eq!(head("GET / HTTP/1.1\r\nHost: a.test:443\r\n\r\n").check_host(), Ok(()));
            assert_eq!(head("GET / HTTP/1.1\r\nHost:\r\n\r\n").check_host(), Ok(()));
            assert_eq!(head("GET / HTTP/1.0\r\n\r\n").check_host(), Ok(()));
            for bad in [
                "GET / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
                "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            ] {
                assert_eq!(head(bad).check_host(), Err(HeadError::Host), "{bad:?}");
            }
            assert_eq!(HeadError::Host.status().0, 400);
        }

        #[test]
        fn leading_empty_lines_are_ignored() {
            let (h, n) = parse_head(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
            assert_eq!((h.target.as_str(), n), ("/", 22));
        }

        #[test]
        fn connection_persistence() {
            assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive());
            assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
            assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        }

        #[test]
        fn malformed_heads() {
            let cases: &[(&[u8], HeadError)] = &[
                (b"GET /\r\n\r\n", HeadError::RequestLine),
                (b"GET  / HTTP/1.1\r\n\r\n", HeadError::RequestLine),
                (b"GET / HTTP/1.1 x\r\n\r\n", HeadError::RequestLine),
                (b"G(T / HTTP/1.1\r\n\r\n", HeadError::RequestLine),
                (b"GET / HTTP/2.0\r\n\r\n", HeadError::Version),
                (b"GET / HTTP/1.1x\r\n\r\n", HeadError::RequestLine),
                (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeadError::Field),
                (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", HeadError::Field),
                (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HeadError::Field),
                (b"GET / HTTP/1.1\r\n: b\r\n\r\n", HeadError::Field),
                (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", HeadError::Field),
                (b"GET / HTTP/1.1\r\nA: b\nB: c\r\n\r\n", HeadError::LineEnding),
                (b"GET / HTTP/1.1\r\nA: b\rB: c\r\n\r\n", HeadError::LineEnding),
                // Rejected before the head is complete.
                (b"GET / HTTP/1.1\n", HeadError::LineEnding),
                (b"GARBAGE\r\n", HeadError::RequestLine),
                (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", HeadError::RequestLine),
            ];
            for (input, want) in cases {
                assert_eq!(parse_head(input), Err(*want), "{:?}", String::from_utf8_lossy(input));
            }
        }

        #[test]
        fn size_limits() {
            // Exactly at the limit: accepted.
            let mut s = String::from("GET / HTTP/1.1\r\nX: ");
            s.push_str(&"a".repeat(MAX_HEAD - s.len() - 4));
            s.push_str("\r\n\r\n");
            assert_eq!(s.len(), MAX_HEAD);
            assert!(parse_head(s.as_bytes()).unwrap().is_some());
            // One byte over, complete or not: 431.
            let mut over = String::from("GET / HTTP/1.1\r\nX: ");
            over.push_str(&"a".repeat(MAX_HEAD));
            assert_eq!(parse_head(over.as_bytes()), Err(HeadError::TooLarge));
            over.push_str("\r\n\r\n");
            assert_eq!(parse_head(over.as_bytes()), Err(HeadError::TooLarge));
            // Too many fields.
            let mut many = String::from("GET / HTTP/1.1\r\n");
            for i in 0..=MAX_HEADERS {
                many.push_str(&format!("X{i}: y\r\n"));
            }
            many.push_str("\r\n");
            assert_eq!(parse_head(many.as_bytes()), Err(HeadError::TooLarge));
            assert_eq!(HeadError::TooLarge.status().0, 431);
        }

        #[test]
        fn body_framing() {
            let te = |v: &str| head(&format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n\r\n")).body();
            assert!(matches!(te("chunked"), Ok(Body::Chunked(_))));
            assert!(matches!(te("Chunked"), Ok(Body::Chunked(_))));
            assert_eq!(te("gzip, chunked"), Err(BodyError::UnsupportedCoding));
            assert_eq!(te("gzip"), Err(BodyError::UnsupportedCoding));
            let cl = |v: &str| head(&format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n")).body();
            assert_eq!(cl("42"), Ok(Body::Length(42)));
            assert_eq!(cl("42, 42"), Ok(Body::Length(42)));
            for bad in ["42, 43", "-1", "+1", "4 2", "0x10", "99999999999999999999", ""] {
                assert_eq!(cl(bad), Err(BodyError::ContentLength), "{bad:?}");
            }
            assert_eq!(
                head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").body(),
                Err(BodyError::ContentLength)
            );
            assert_eq!(
                head("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").body(),
                Err(BodyError::Ambiguous)
            );
            assert_eq!(
                head("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").body(),
                Err(BodyError::UnsupportedCoding)
            );
        }

        #[test]
        fn chunked_bodies_in_every_split() {
            let input =
                b"5\r\nhello\r\n1A;name=value;x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: t\r\n\r\nGET /next";
            let body_end = input.len() - b"GET /next".len();
            for step in [1, 2, 3, 7, 64, input.len()] {
                let mut body = Body::Chunked(Chunked::default());
                let (out, used) = decode_all(&mut body, input, step).unwrap();
                assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
                assert_eq!(used, body_end, "step {step}");
                assert!(body.is_done());
            }
        }

        #[test]
        fn chunked_last_chunk_without_trailers() {
            let mut body = Body::Chunked(Chunked::default());
            assert_eq!(decode_all(&mut body, b"0\r\n\r\n", 1), Ok((vec![], 5)));
            assert!(body.is_done());
        }

        #[test]
        fn malformed_chunked_bodies() {
            let cases: &[&[u8]] = &[
                b"\r\n",                  // no size
                b"g\r\n",                 // not hex
                b"-1\r\n",                // sign
                b"5\nhello\r\n0\r\n\r\n", // bare LF after size
                b"5\r\nhelloX\r\n",       // no CRLF after data
                b"5\r\nhello\rX",         // CR without LF
                b"1000000000000000\r\n",  // 16 hex digits: over 2^60
                b"0\r\nA: b\n\r\n",       // bare LF in a trailer
                b"0\r\n\n",               // bare LF as the final line
                b"0\r\n\rX",              // CR without LF at the end
                b"5;a\x00b\r\nhello\r\n", // CTL in an extension
            ];
            for input in cases {
                let mut body = Body::Chunked(Chunked::default());
                assert_eq!(
                    decode_all(&mut body, input, 1),
                    Err(BodyError::Chunk),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
            // Bounded extension and trailer lengths.
            let mut long_ext = b"1;".to_vec();
            long_ext.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 1));
            let mut body = Body::Chunked(Chunked::default());
            assert_eq!(decode_all(&mut body, &long_ext, 4096), Err(BodyError::Chunk));
            let mut long_trailer = b"0\r\nX: ".to_vec();
            long_trailer.extend(std::iter::repeat_n(b'x', MAX_TRAILERS + 1));
            let mut body = Body::Chunked(Chunked::default());
            assert_eq!(decode_all(&mut body, &long_trailer, 4096), Err(BodyError::Chunk));
        }

        #[test]
        fn content_length_body_stops_at_its_end() {
            let mut body = Body::Length(3);
            let (out, used) = decode_all(&mut body, b"abcdef", 2).unwrap();
            assert_eq!((out.as_slice(), used), (&b"abc"[..], 3));
        }
    }
}

/// The PROXY protocol version 2 header (haproxy.org, doc/proxy-protocol.txt §2.2), parsed strictly.
///
/// `\r\n\r\n\0\r\nQUIT\n`, version/command, family/transport, a 16-bit length, the addresses, then
/// TLVs (§2.2.7). Rejected: a wrong signature (as soon as the first bytes differ), a version other
/// than 2, a command other than LOCAL/PROXY, a family/transport byte the spec does not list, a
/// length shorter than the addresses, a TLV that overruns the header, known TLVs with invalid
/// values (ALPN 1..=255 bytes, AUTHORITY and NETNS UTF-8, CRC32C 4 bytes and matching, UNIQUE_ID at
/// most 128 bytes, SSL with its 5-byte head and well-formed sub-TLVs). Unknown TLV types are kept.
/// A LOCAL header's address block is skipped unread, as §2.2 requires.
pub mod proxy_v2 {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use serde_json::json;
    use thiserror::Error;

    pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    /// The longest header: 16 fixed bytes and a 16-bit length.
    pub const MAX_LEN: usize = 16 + 0xffff;

    pub const PP2_TYPE_ALPN: u8 = 0x01;
    pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
    pub const PP2_TYPE_CRC32C: u8 = 0x03;
    pub const PP2_TYPE_NOOP: u8 = 0x04;
    pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
    pub const PP2_TYPE_SSL: u8 = 0x20;
    pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
    pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
    pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
    pub const PP2_SUBTYPE_SSL_SIG_ALG: u8 = 0x24;
    pub const PP2_SUBTYPE_SSL_KEY_ALG: u8 = 0x25;
    pub const PP2_TYPE_NETNS: u8 = 0x30;

    #[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
    pub enum ProxyError {
        #[error("not a PROXY v2 signature")]
        Signature,
        #[error("version {0}, not 2")]
        Version(u8),
        #[error("command {0:#x}, neither LOCAL nor PROXY")]
        Command(u8),
        #[error("address family/transport byte {0:#04x} is not one the spec lists")]
        Family(u8),
        #[error("length {len} shorter than the {need}-byte address block")]
        Length { len: u16, need: u16 },
        #[error("TLV at offset {0} overruns the header")]
        TlvTruncated(usize),
        #[error("TLV type {0:#04x} has an invalid value")]
        TlvValue(u8),
        #[error("CRC32C mismatch")]
        Crc32c,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Command {
        Local,
        Proxy,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Transport {
        Unspec,
        Stream,
        Dgram,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Addresses {
        Unspec,
        Inet { src: SocketAddr, dst: SocketAddr },
        Unix { src: Vec<u8>, dst: Vec<u8> },
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Tlv {
        pub kind: u8,
        pub value: Vec<u8>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Header {
        pub command: Command,
        pub transport: Transport,
        pub addresses: Addresses,
        pub tlvs: Vec<Tlv>,
    }

    impl Header {
        /// `Ok(None)` while more bytes are needed; `Ok(Some((header, length)))` once complete.
        pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
            let sig = buf.len().min(12);
            if buf[..sig] != SIGNATURE[..sig] {
                return Err(ProxyError::Signature);
            }
            if buf.len() < 16 {
                return Ok(None);
            }
            let (ver_cmd, fam) = (buf[12], buf[13]);
            if ver_cmd >> 4 != 2 {
                return Err(ProxyError::Version(ver_cmd >> 4));
            }
            let command = match ver_cmd & 0x0f {
                0 => Command::Local,
                1 => Command::Proxy,
                c => return Err(ProxyError::Command(c)),
            };
            // §2.2: "Other values are unspecified and must not be emitted in version 2 of this
            // protocol and must be rejected as invalid by receivers."
            let (need, transport) = match fam {
                0x00 => (0u16, Transport::Unspec),
                0x11 => (12, Transport::Stream),
                0x12 => (12, Transport::Dgram),
                0x21 => (36, Transport::Stream),
                0x22 => (36, Transport::Dgram),
                0x31 => (216, Transport::Stream),
                0x32 => (216, Transport::Dgram),
                f => return Err(ProxyError::Family(f)),
            };
            let len = u16::from_be_bytes([buf[14], buf[15]]);
            let total = 16 + len as usize;
            if buf.len() < total {
                return Ok(None);
            }
            let header = &buf[..total];
            if command == Command::Local {
                // §2.2: LOCAL: "the receiver must accept this connection as valid and must use the
                // real connection endpoints and discard the protocol block including the family".
                let h = Header { command, transport: Transport::Unspec, addresses: Addresses::Unspec, tlvs: vec![] };
                return Ok(Some((h, total)));
            }
            if len < need {
                return Err(ProxyError::Length { len, need });
            }
            let a = &header[16..16 + need as usize];
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            let addresses = match fam >> 4 {
                1 => {
                    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                    Addresses::Inet {
                        src: SocketAddr::new(ip(&a[0..4]).into(), port(&a[8..10])),
                        dst: SocketAddr::new(ip(&a[4..8]).into(), port(&a[10..12])),
                    }
                }
                2 => {
                    let ip = |b: &[u8]| {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(b);
                        Ipv6Addr::from(o)
                    };
                    Addresses::Inet {
                        src: SocketAddr::new(ip(&a[0..16]).into(), port(&a[32..34])),
                        dst: SocketAddr::new(ip(&a[16..32]).into(), port(&a[34..36])),
                    }
                }
                3 => {
                    let path = |b: &[u8]| b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())].to_vec();
                    Addresses::Unix { src: path(&a[..108]), dst: path(&a[108..216]) }
                }
                _ => Addresses::Unspec,
            };
            let tlvs = parse_tlvs(header, 16 + need as usize, false)?;
            Ok(Some((Header { command, transport, addresses, tlvs }, total)))
        }

        pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
            self.tlvs.iter().find(|t| t.kind == kind).map(|t| t.value.as_slice())
        }

        /// What `/stats` shows as `last_proxy`.
        pub fn to_json(&self) -> serde_json::Value {
            let (family, src, dst) = match &self.addresses {
                Addresses::Unspec => ("UNSPEC", None, None),
                Addresses::Inet { src, dst } => {
                    (if src.is_ipv4() { "INET" } else { "INET6" }, Some(src.to_string()), Some(dst.to_string()))
                }
                Addresses::Unix { src, dst } => (
                    "UNIX",
                    Some(String::from_utf8_lossy(src).into_owned()),
                    Some(String::from_utf8_lossy(dst).into_owned()),
                ),
            };
            let tlvs: Vec<_> = self
                .tlvs
                .iter()
                .map(|t| {
                    let hex: String = t.value.iter().map(|b| format!("{b:02x}")).collect();
                    let text = std::str::from_utf8(&t.value).ok().filter(|s| s.chars().all(|c| !c.is_control()));
                    json!({ "type": t.kind, "hex": hex, "text": text })
                })
                .collect();
            let text = |k| self.tlv(k).map(|v| String::from_utf8_lossy(v).into_owned());
            json!({
                "command": match self.command { Command::Local => "LOCAL", Command::Proxy => "PROXY" },
                "family": family,
                "transport": match self.transport {
                    Transport::Unspec => "UNSPEC", Transport::Stream => "STREAM", Transport::Dgram => "DGRAM",
                },
                "src": src,
                "dst": dst,
                "alpn": text(PP2_TYPE_ALPN),
                "authority": text(PP2_TYPE_AUTHORITY),
                "tlvs": tlvs,
            })
        }
    }

    /// TLVs of `header[from..]` (§2.2.7); `nested` for the sub-TLVs of PP2_TYPE_SSL.
    fn parse_tlvs(header: &[u8], from: usize, nested: bool) -> Result<Vec<Tlv>, ProxyError> {
        let mut tlvs = Vec::new();
        let mut at = from;
        while at < header.len() {
            if header.len() - at < 3 {
                return Err(ProxyError::TlvTruncated(at));
            }
            let kind = header[at];
            let len = u16::from_be_bytes([header[at + 1], header[at + 2]]) as usize;
            let start = at + 3;
            if header.len() - start < len {
                return Err(ProxyError::TlvTruncated(at));
            }
            let value = &header[start..start + len];
            let utf8 = std::str::from_utf8(value).is_ok();
            let valid = match kind {
                PP2_TYPE_ALPN => (1..=255).contains(&len),
                PP2_TYPE_AUTHORITY | PP2_TYPE_NETNS => len > 0 && utf8,
                PP2_TYPE_CRC32C => len == 4 && !nested,
                PP2_TYPE_UNIQUE_ID => len <= 128,
                PP2_TYPE_NOOP => true,
                PP2_TYPE_SSL => !nested && len >= 5 && parse_tlvs(&header[..start + len], start + 5, true).is_ok(),
                PP2_SUBTYPE_SSL_VERSION
                | PP2_SUBTYPE_SSL_CN
                | PP2_SUBTYPE_SSL_CIPHER
                | PP2_SUBTYPE_SSL_SIG_ALG
                | PP2_SUBTYPE_SSL_KEY_ALG => nested && len > 0 && utf8,
                _ => true,
            };
            if !valid {
                return Err(ProxyError::TlvValue(kind));
            }
            if kind == PP2_TYPE_CRC32C {
                // §2.2.7: the CRC32C of the whole header with this field's value taken as zeros.
                let mut copy = header.to_vec();
                copy[start..start + 4].fill(0);
                if crc32c(&copy).to_be_bytes() != value {
                    return Err(ProxyError::Crc32c);
                }
            }
            tlvs.push(Tlv { kind, value: value.to_vec() });
            at = start + len;
        }
        Ok(tlvs)
    }

    /// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: headers are small.
    pub fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A header: version/command byte, family byte, body (addresses and TLVs).
        fn build(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
            let mut h = SIGNATURE.to_vec();
            h.push(ver_cmd);
            h.push(fam);
            h.extend_from_slice(&(body.len() as u16).to_be_bytes());
            h.extend_from_slice(body);
            h
        }

        fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
            let mut t = vec![kind];
            t.extend_from_slice(&(value.len() as u16).to_be_bytes());
            t.extend_from_slice(value);
            t
        }

        fn inet4() -> Vec<u8> {
            // 198.51.100.1:40000 -> 198.51.100.2:443
            let mut a = vec![198, 51, 100, 1, 198, 51, 100, 2];
            a.extend_from_slice(&40000u16.to_be_bytes());
            a.extend_from_slice(&443u16.to_be_bytes());
            a
        }

        fn parse_all(h: &[u8]) -> Result<Header, ProxyError> {
            let (header, len) = Header::parse(h)?.expect("complete");
            assert_eq!(len, h.len());
            Ok(header)
        }

        #[test]
        fn crc32c_check_value() {
            assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        }

        #[test]
        fn ipv4_proxy_with_tlvs() {
            let mut body = inet4();
            body.extend(tlv(PP2_TYPE_ALPN, b"h2"));
            body.extend(tlv(PP2_TYPE_AUTHORITY, b"a.test"));
            body.extend(tlv(PP2_TYPE_NOOP, b""));
            body.extend(tlv(0xE0, b"\x00\xff"));
            let h = build(0x21, 0x11, &body);
            let p = parse_all(&h).unwrap();
            assert_eq!(p.command, Command::Proxy);
            assert_eq!(p.transport, Transport::Stream);
            assert_eq!(
                p.addresses,
                Addresses::Inet {
                    src: "198.51.100.1:40000".parse().unwrap(),
                    dst: "198.51.100.2:443".parse().unwrap()
                }
            );
            assert_eq!(p.tlv(PP2_TYPE_ALPN), Some(&b"h2"[..]));
            assert_eq!(p.tlv(PP2_TYPE_AUTHORITY), Some(&b"a.test"[..]));
            assert_eq!(p.tlvs.len(), 4);
            let j = p.to_json();
            assert_eq!(j["src"], "198.51.100.1:40000");
            assert_eq!(j["authority"], "a.test");
            assert_eq!(j["family"], "INET");
        }

        #[test]
        fn ipv6_proxy() {
            let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
            let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
            let mut body = src.octets().to_vec();
            body.extend_from_slice(&dst.octets());
            body.extend_from_slice(&1234u16.to_be_bytes());
            body.extend_from_slice(&443u16.to_be_bytes());
            let p = parse_all(&build(0x21, 0x21, &body)).unwrap();
            assert_eq!(
                p.addresses,
                Addresses::Inet {
                    src: "[2001:db8::1]:1234".parse().unwrap(),
                    dst: "[2001:db8::2]:443".parse().unwrap()
                }
            );
            assert_eq!(p.to_json()["family"], "INET6");
        }

        #[test]
        fn unix_and_unspec_and_local() {
            let mut body = vec![0u8; 216];
            body[..4].copy_from_slice(b"/a.s");
            body[108..112].copy_from_slice(b"/b.s");
            let p = parse_all(&build(0x21, 0x31, &body)).unwrap();
            assert_eq!(p.addresses, Addresses::Unix { src: b"/a.s".to_vec(), dst: b"/b.s".to_vec() });
            let p = parse_all(&build(0x21, 0x00, &[])).unwrap();
            assert_eq!(p.addresses, Addresses::Unspec);
            // LOCAL (a health check): the block is discarded whatever it holds.
            let p = parse_all(&build(0x20, 0x11, &[1, 2, 3])).unwrap();
            assert_eq!((p.command, p.addresses), (Command::Local, Addresses::Unspec));
        }

        #[test]
        fn ssl_tlv_and_crc32c() {
            let mut ssl = vec![0x07, 0, 0, 0, 0];
            ssl.extend(tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"));
            ssl.extend(tlv(PP2_SUBTYPE_SSL_CN, b"client"));
            let mut body = inet4();
            body.extend(tlv(PP2_TYPE_SSL, &ssl));
            body.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
            let mut h = build(0x21, 0x11, &body);
            let crc = crc32c(&h);
            let at = h.len() - 4;
            h[at..].copy_from_slice(&crc.to_be_bytes());
            let p = parse_all(&h).unwrap();
            assert_eq!(p.tlv(PP2_TYPE_SSL), Some(&ssl[..]));
            // One bit off anywhere: the checksum fails.
            let mut bad = h.clone();
            bad[17] ^= 1;
            assert_eq!(Header::parse(&bad), Err(ProxyError::Crc32c));
            let mut bad = h.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert_eq!(Header::parse(&bad), Err(ProxyError::Crc32c));
        }

        #[test]
        fn incomplete_headers_wait_and_trailing_data_is_left() {
            let mut body = inet4();
            body.extend(tlv(PP2_TYPE_ALPN, b"http/1.1"));
            let h = build(0x21, 0x11, &body);
            for n in 0..h.len() {
                assert_eq!(Header::parse(&h[..n]), Ok(None), "prefix of {n}");
            }
            let mut more = h.clone();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(Header::parse(&more).unwrap().unwrap().1, h.len());
        }

        #[test]
        fn every_malformed_field() {
            let good = build(0x21, 0x11, &inet4());
            // Signature: wrong anywhere, and detected from the first differing byte.
            for i in 0..12 {
                let mut bad = good.clone();
                bad[i] ^= 0x40;
                assert_eq!(Header::parse(&bad), Err(ProxyError::Signature), "byte {i}");
                assert_eq!(Header::parse(&bad[..=i]), Err(ProxyError::Signature), "prefix to byte {i}");
            }
            assert_eq!(Header::parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Signature));
            assert_eq!(Header::parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), Err(ProxyError::Signature));
            // Version.
            for v in [0x01, 0x11, 0x31, 0xf1] {
                let mut bad = good.clone();
                bad[12] = v;
                assert_eq!(Header::parse(&bad), Err(ProxyError::Version(v >> 4)));
            }
            // Command.
            for c in 2..16u8 {
                let mut bad = good.clone();
                bad[12] = 0x20 | c;
                assert_eq!(Header::parse(&bad), Err(ProxyError::Command(c)));
            }
            // Family/transport: everything but the seven listed values.
            for f in 0..=255u8 {
                if [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32].contains(&f) {
                    continue;
                }
                let mut bad = good.clone();
                bad[13] = f;
                assert_eq!(Header::parse(&bad), Err(ProxyError::Family(f)), "{f:#x}");
            }
            // Length shorter than the addresses.
            assert_eq!(
                Header::parse(&build(0x21, 0x11, &inet4()[..11])),
                Err(ProxyError::Length { len: 11, need: 12 })
            );
            assert_eq!(Header::parse(&build(0x21, 0x21, &[0; 35])), Err(ProxyError::Length { len: 35, need: 36 }));
            assert_eq!(Header::parse(&build(0x21, 0x31, &[0; 215])), Err(ProxyError::Length { len: 215, need: 216 }));
            // TLVs: 1 or 2 stray bytes, a length past the end.
            for tail in [&[0x04][..], &[0x04, 0x00], &[0x04, 0x00, 0x02, 0xaa]] {
                let mut body = inet4();
                body.extend_from_slice(tail);
                assert_eq!(Header::parse(&build(0x21, 0x11, &body)), Err(ProxyError::TlvTruncated(28)), "{tail:?}");
            }
            // Known TLVs with invalid values.
            let invalid: &[(u8, &[u8])] = &[
                (PP2_TYPE_ALPN, b""),
                (PP2_TYPE_ALPN, &[b'a'; 256]),
                (PP2_TYPE_AUTHORITY, b""),
                (PP2_TYPE_AUTHORITY, b"\xff\xfe"),
                (PP2_TYPE_CRC32C, b"\0\0\0"),
                (PP2_TYPE_UNIQUE_ID, &[7; 129]),
                (PP2_TYPE_SSL, b"\x01\0\0\0"),
                (PP2_TYPE_SSL, b"\x01\0\0\0\0\x21\x00\x05TLS"), // sub-TLV overruns
                (PP2_TYPE_SSL, b"\x01\0\0\0\0\x20\x00\x00"),    // SSL inside SSL
                (PP2_TYPE_NETNS, b"\xc3"),
                (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3"), // sub-type outside SSL
            ];
            for (kind, value) in invalid {
                let mut body = inet4();
                body.extend(tlv(*kind, value));
                assert_eq!(
                    Header::parse(&build(0x21, 0x11, &body)),
                    Err(ProxyError::TlvValue(*kind)),
                    "type {kind:#x} value {value:?}"
                );
            }
            // And the edges that are valid.
            for (kind, value) in
                [(PP2_TYPE_ALPN, &[b'a'; 255][..]), (PP2_TYPE_UNIQUE_ID, &[7; 128]), (PP2_TYPE_UNIQUE_ID, b"")]
            {
                let mut body = inet4();
                body.extend(tlv(kind, value));
                assert!(parse_all(&build(0x21, 0x11, &body)).is_ok(), "type {kind:#x}");
            }
        }

        #[test]
        fn never_panics_on_arbitrary_input() {
            // Every prefix and one-byte corruption of a rich header, and random bytes after a
            // valid fixed part: each parse returns, whatever it says.
            let mut body = inet4();
            body.extend(tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0\x21\x00\x03TLS"));
            body.extend(tlv(PP2_TYPE_ALPN, b"h2"));
            let h = build(0x21, 0x11, &body);
            for i in 0..h.len() {
                for x in [0x01, 0x80, 0xff] {
                    let mut bad = h.clone();
                    bad[i] ^= x;
                    for n in [i + 1, bad.len()] {
                        let _ = Header::parse(&bad[..n]);
                    }
                }
            }
            let mut s = super::super::prng::ByteStream::new();
            for _ in 0..2000 {
                let mut r = [0u8; 48];
                s.fill(&mut r);
                let mut bad = h[..16].to_vec();
                bad[14..16].copy_from_slice(&((r[0] % 40) as u16).to_be_bytes());
                bad.extend_from_slice(&r[1..]);
                let _ = Header::parse(&bad);
            }
        }
    }
}

/// `sluice-bench certs`: a demo CA and leaf certificates for sluice's tests and demo (rcgen).
///
/// In `--dir`: `ca.pem` and `ca.key` (ECDSA P-256, CN "sluice test CA"); for each name an ECDSA
/// P-256 leaf `NAME.pem` (leaf then CA: the chain sluice serves) and `NAME.key`; for the first name
/// also an RSA-2048 leaf `NAME-rsa.pem` / `NAME-rsa.key`. Keys are PKCS#8 PEM, mode 0600.
/// Existing files are never overwritten (each skip is reported); when only leaves are missing,
/// they are signed with the existing `ca.key`. Not for production: these are test credentials.
pub mod certs {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    use anyhow::{Context, Result, bail};
    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
    };

    pub const CA_COMMON_NAME: &str = "sluice test CA";

    #[derive(clap::Args, Debug)]
    pub struct Args {
        /// Directory to write into (created if missing).
        #[arg(long)]
        pub dir: PathBuf,
        /// Comma-separated DNS names, one ECDSA leaf each; the first also gets an RSA leaf.
        #[arg(long, value_delimiter = ',', required = true)]
        pub names: Vec<String>,
    }

    fn ca_params() -> Result<CertificateParams> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ok(params)
    }

    /// Writes `contents` to a new file; `false` (and a message) if the file already exists.
    fn write_new(path: &Path, contents: &str, mode: u32) -> Result<bool> {
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(path) {
            Ok(mut f) => {
                f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                println!("exists, kept: {}", path.display());
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    pub fn run(args: &Args) -> Result<()> {
        let names: Vec<&str> = args.names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
        if names.is_empty() {
            bail!("--names: no names given");
        }
        for n in &names {
            if n.contains('/') || n.starts_with('.') {
                bail!("--names: {n:?} is not a usable file name");
            }
        }
        fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
        let path = |f: &str| args.dir.join(f);
        // (file stem, RSA?) for every leaf; only the missing ones are made.
        let mut leaves: Vec<(String, &str, bool)> = names.iter().map(|n| (n.to_string(), *n, false)).collect();
        leaves.push((format!("{}-rsa", names[0]), names[0], true));
        let missing: Vec<_> = leaves
            .iter()
            .filter(|(stem, _, _)| {
                let (pem, key) = (path(&format!("{stem}.pem")), path(&format!("{stem}.key")));
                match (pem.exists(), key.exists()) {
                    (true, true) => {
                        println!("exists, kept: {} and {}", pem.display(), key.display());
                        false
                    }
                    (false, false) => true,
                    _ => {
                        println!(
                            "only one of {} and {} exists: left alone (remove it to regenerate)",
                            pem.display(),
                            key.display()
                        );
                        false
                    }
                }
            })
            .collect();

        let (ca_pem_path, ca_key_path) = (path("ca.pem"), path("ca.key"));
        let (ca_cert, ca_key, ca_pem): (Certificate, KeyPair, String) =
            match (ca_pem_path.exists(), ca_key_path.exists()) {
                (false, false) => {
                    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
                    let cert = ca_params()?.self_signed(&key)?;
                    let pem = cert.pem();
                    write_new(&ca_key_path, &key.serialize_pem(), 0o600)?;
                    write_new(&ca_pem_path, &pem, 0o644)?;
                    (cert, key, pem)
                }
                (true, true) => {
                    println!("exists, kept: {} and {}", ca_pem_path.display(), ca_key_path.display());
                    if missing.is_empty() {
                        return Ok(());
                    }
                    let key_pem = fs::read_to_string(&ca_key_path)?;
                    let key = KeyPair::from_pem(&key_pem).context("reading ca.key")?;
                    // Same name and key as ca.pem (both made here): what a leaf's issuer needs.
                    let cert = ca_params()?.self_signed(&key)?;
                    (cert, key, fs::read_to_string(&ca_pem_path)?)
                }
                _ if missing.is_empty() => return Ok(()),
                _ => bail!(
                    "only one of {} and {} exists: cannot sign new leaves (remove both, or add the missing one)",
                    ca_pem_path.display(),
                    ca_key_path.display()
                ),
            };

        for (stem, name, rsa) in missing {
            let key = if *rsa {
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?
            } else {
                KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?
            };
            let mut params = CertificateParams::new(vec![name.to_string()])?;
            params.distinguished_name.push(DnType::CommonName, *name);
            params.is_ca = IsCa::NoCa;
            params.use_authority_key_identifier_extension = true;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = if *rsa {
                vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment]
            } else {
                vec![KeyUsagePurpose::DigitalSignature]
            };
            let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
            write_new(&path(&format!("{stem}.key")), &key.serialize_pem(), 0o600)?;
            write_new(&path(&format!("{stem}.pem")), &format!("{}{}", cert.pem(), ca_pem), 0o644)?;
        }
        Ok(())
    }
}
