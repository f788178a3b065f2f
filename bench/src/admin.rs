//! sluice's admin endpoint as the benchmark programs read it: `GET /stats.json` over a plain TCP
//! socket (from inside the proxy namespace, where sluice runs), the JSON parsed, and its
//! counters summed over the worker queues.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// Where sluice's admin endpoint listens: its default (127.0.0.1:9090), which the benchmarks'
/// configurations keep.
pub fn address() -> SocketAddr {
    sluice::config::Admin::default().address
}

/// Connect and read timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The body of an HTTP/1.x response, which must have status 200.
pub fn http_body(response: &[u8]) -> Result<&[u8]> {
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").context("HTTP response without a header end")?;
    let status = String::from_utf8_lossy(&response[..at]);
    let code = status.lines().next().and_then(|l| l.split_whitespace().nth(1));
    ensure!(code == Some("200"), "HTTP status line {:?}", status.lines().next().unwrap_or(""));
    Ok(&response[at + 4..])
}

/// `GET /stats.json` from the admin endpoint at `addr`, reached from the calling thread's
/// network namespace.
pub fn fetch_stats(addr: SocketAddr) -> Result<Value> {
    let get = || -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        write!(s, "GET /stats.json HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", addr.ip())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    };
    let response = get().context("GET /stats.json")?;
    serde_json::from_slice(http_body(&response)?).context("parsing /stats.json")
}

/// sluice's `/stats.json` now, from its admin endpoint ([`address`]) in network namespace `ns`.
pub fn stats(ns: &str) -> Result<Value> {
    let addr = address();
    sluice_testbed::in_netns(ns, move || fetch_stats(addr))?
}

/// Counter `key` of each of `stats`'s queues, in queue order (0 where a queue lacks it).
pub fn per_queue(stats: &Value, key: &str) -> Vec<u64> {
    stats["queues"].as_array().map_or(Vec::new(), |q| q.iter().map(|q| q[key].as_u64().unwrap_or(0)).collect())
}

/// Counter `key` summed over `stats`'s queues.
pub fn queue_total(stats: &Value, key: &str) -> u64 {
    per_queue(stats, key).iter().sum()
}

/// sluice's own count of (full, resumed) TLS handshakes, over all its queues.
pub fn handshakes(stats: &Value) -> (u64, u64) {
    (queue_total(stats, "tls_handshakes_full"), queue_total(stats, "tls_handshakes_resumed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A `/stats.json` of sluice on AF_XDP with two queues, after a soak (captured from
    /// `bench/results/soak.json`).
    const CAPTURED: &str = include_str!("testdata/stats.json");

    #[test]
    fn http_bodies() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(http_body(ok).unwrap(), b"{\"a\":1}");
        assert!(http_body(b"HTTP/1.1 404 Not Found\r\n\r\nno").is_err());
        assert!(http_body(b"HTTP/1.1 200 OK\r\nContent-Type: x").is_err());
    }

    #[test]
    fn a_captured_stats_json_sums_over_its_queues() {
        let v: Value = serde_json::from_str(CAPTURED).unwrap();
        assert_eq!(handshakes(&v), (205_493 + 206_039, 256_441 + 255_751));
        assert_eq!(per_queue(&v, "rx_frames"), [3_785_805, 3_777_904]);
        assert_eq!(queue_total(&v, "rx_frames"), 7_563_709);
        assert_eq!(per_queue(&v, "umem_frames_free"), [8192, 8192]);
        assert_eq!(per_queue(&v, "umem_frames_total"), [16_384, 16_384]);
        assert_eq!(queue_total(&v, "connections_open"), 0);
        // Absent counters count 0; no queues, no counters.
        assert_eq!(per_queue(&v, "no_such_counter"), [0, 0]);
        assert_eq!(queue_total(&serde_json::json!({}), "rx_frames"), 0);
        assert!(per_queue(&serde_json::json!({"queues": 1}), "rx_frames").is_empty());
    }

    /// An admin endpoint that answers one request with `response`; returns its address and
    /// the request it got.
    fn one_shot(response: Vec<u8>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&buf[..n]);
            }
            s.write_all(&response).unwrap();
            String::from_utf8(request).unwrap()
        });
        (addr, server)
    }

    #[test]
    fn stats_json_comes_over_a_socket() {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            CAPTURED.len()
        )
        .into_bytes();
        response.extend_from_slice(CAPTURED.as_bytes());
        let (addr, server) = one_shot(response);
        let v = fetch_stats(addr).unwrap();
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /stats.json HTTP/1.1\r\n"), "{request:?}");
        assert_eq!(v, serde_json::from_str::<Value>(CAPTURED).unwrap());
    }

    #[test]
    fn errors_are_errors() {
        let (addr, server) = one_shot(b"HTTP/1.1 404 Not Found\r\n\r\nnot found\n".to_vec());
        assert!(fetch_stats(addr).is_err());
        server.join().unwrap();
        let (addr, server) = one_shot(b"HTTP/1.1 200 OK\r\n\r\n{\"queues\": [".to_vec());
        let e = fetch_stats(addr).unwrap_err();
        assert!(format!("{e:#}").contains("parsing /stats.json"), "{e:#}");
        server.join().unwrap();
        // Nothing listening.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = fetch_stats(addr).unwrap_err();
        assert!(format!("{e:#}").contains("GET /stats.json"), "{e:#}");
    }
}
