//! `sluice stats`: reads `/stats.json` from a running sluice's admin endpoint (plain HTTP over a
//! kernel socket, so it works inside the proxy's namespace) and prints a compact table: each
//! latency histogram's count and percentiles, then the main counters, totals and per queue.
//! `--watch` redraws it in place every interval until interrupted.
//!
//! A client only: it knows the JSON's shape, not sluice's internals.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The counters shown, summed over queues unless per queue: (label, what to add up).
const COUNTERS: &[(&str, Source)] = &[
    ("connections established", Source::Queue("connections_established")),
    ("connections closed", Source::Queue("connections_closed")),
    ("connections open", Source::Queue("connections_open")),
    ("tls handshakes full", Source::Queue("tls_handshakes_full")),
    ("tls handshakes resumed", Source::Queue("tls_handshakes_resumed")),
    ("tls failed", Source::Queue("tls_failed")),
    ("relays opened", Source::Queue("relays_opened")),
    ("relays open", Source::Queue("relays_open")),
    ("rx frames", Source::Queue("rx_frames")),
    ("tx frames", Source::Queue("tx_frames")),
    ("hand-offs out", Source::Queue("handoff_out")),
    ("hand-offs in", Source::Queue("handoff_in")),
    ("drops (worker)", Source::QueuePrefix("dropped_")),
    ("drops (tcp)", Source::TcpDrops),
    ("tcp retransmits", Source::TcpPrefix("retransmits_")),
    ("syn cookies sent", Source::Tcp("syn_cookies_sent")),
    ("syn cookies validated", Source::Tcp("syn_cookies_validated")),
];

#[derive(Clone, Copy)]
enum Source {
    Queue(&'static str),
    QueuePrefix(&'static str),
    Tcp(&'static str),
    TcpPrefix(&'static str),
    TcpDrops,
}

impl Source {
    fn of(self, q: &Value) -> u64 {
        let sum_prefix = |o: &Value, prefix: &str| {
            o.as_object()
                .map_or(0, |m| m.iter().filter(|(k, _)| k.starts_with(prefix)).filter_map(|(_, v)| v.as_u64()).sum())
        };
        match self {
            Source::Queue(name) => q[name].as_u64().unwrap_or(0),
            Source::QueuePrefix(prefix) => sum_prefix(q, prefix),
            Source::Tcp(name) => q["tcp"][name].as_u64().unwrap_or(0),
            Source::TcpPrefix(prefix) => sum_prefix(&q["tcp"], prefix),
            Source::TcpDrops => sum_prefix(&q["tcp"]["drops"], ""),
        }
    }
}

/// The table for one `/stats.json` document.
pub fn render(stats: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    if let Some(latency) = stats["latency"].as_object() {
        // sluice's order first (TCP, backend, TLS), then any other.
        let known: Vec<&str> = crate::observe::latency::Latencies::names().collect();
        let mut names: Vec<&String> = latency.keys().collect();
        names.sort_by_key(|n| known.iter().position(|k| k == n).unwrap_or(usize::MAX));
        for name in names {
            let h = &latency[name];
            let v = |k: &str| h[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name:<26}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                v("count"),
                v("p50_us"),
                v("p90_us"),
                v("p99_us"),
                v("p999_us"),
                v("max_us")
            );
        }
    }
    let queues: &[Value] = stats["queues"].as_array().map_or(&[], Vec::as_slice);
    let _ = write!(out, "\n{:<26}{:>10}", "counters", "total");
    for q in queues {
        let _ = write!(out, "{:>10}", format!("q{}", q["queue"].as_u64().unwrap_or(0)));
    }
    out.push('\n');
    for (label, source) in COUNTERS {
        let per_queue: Vec<u64> = queues.iter().map(|q| source.of(q)).collect();
        let _ = write!(out, "{label:<26}{:>10}", per_queue.iter().sum::<u64>());
        for v in per_queue {
            let _ = write!(out, "{v:>10}");
        }
        out.push('\n');
    }
    if let Some(caches) = stats["session_caches"].as_array() {
        for c in caches {
            let v = |k: &str| c[k].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "session cache {}: {} hits, {} misses, {} entries, {} evicted",
                c["listener"].as_str().unwrap_or("?"),
                v("hits"),
                v("misses"),
                v("entries"),
                v("evicted_capacity") + v("evicted_bytes") + v("evicted_expired")
            );
        }
    }
    if let Some(xdp) = stats["xdp"]["counters"].as_object() {
        let v = |k: &str| xdp.get(k).and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "xdp ({}): {} redirected, {} redirect failed, {} passed (no listener)",
            stats["xdp"]["mode"].as_str().unwrap_or("?"),
            v("redirected"),
            v("redirect_failed"),
            v("pass_no_listener")
        );
    }
    out
}

/// `GET path` from the admin endpoint at `addr`; the body of a 200 answer.
pub fn fetch(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the admin endpoint {addr} (is sluice running here?)"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.take(64 << 20).read_to_end(&mut answer).context("reading the answer")?;
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").context("no end of the HTTP header")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}{path}: {status}");
    }
    Ok(answer[end + 4..].to_vec())
}

/// Parses `1s`, `500ms`, `2` (seconds), `0.5s`.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let (number, scale) =
        if let Some(ms) = s.strip_suffix("ms") { (ms, 1e-3) } else { (s.strip_suffix('s').unwrap_or(s), 1.0) };
    let secs: f64 = number.trim().parse().map_err(|_| format!("{s:?} is not a duration like 1s or 500ms"))?;
    if !(secs * scale >= 0.05 && secs * scale <= 3600.0) {
        return Err(format!("{s:?}: from 50ms to 3600s"));
    }
    Ok(Duration::from_secs_f64(secs * scale))
}

/// Prints the table once, or with `watch` redraws it every `interval` (until interrupted).
pub fn run(admin: SocketAddr, watch: bool, interval: Duration) -> Result<()> {
    let table = || -> Result<String> {
        let body = fetch(admin, "/stats.json")?;
        let stats: Value = serde_json::from_slice(&body).context("/stats.json is not JSON")?;
        Ok(render(&stats))
    };
    if !watch {
        print!("{}", table()?);
        return Ok(());
    }
    let mut stdout = std::io::stdout();
    loop {
        let text = match table() {
            Ok(t) => t,
            Err(e) => format!("sluice stats: {e:#}\n"),
        };
        // Home, clear the screen, draw.
        write!(stdout, "\x1b[H\x1b[2J{text}\n(every {interval:?}; Ctrl-C to stop)\n")?;
        stdout.flush()?;
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_and_counters() {
        let stats = serde_json::json!({
            "xdp": { "mode": "native", "counters": { "redirected": 9, "pass_no_listener": 2 } },
            "queues": [
                { "queue": 0, "rx_frames": 5, "tls_handshakes_full": 1, "dropped_checksum": 2, "dropped_tx_full": 1,
                  "tcp": { "retransmits_rto": 1, "retransmits_tlp": 2, "syn_cookies_sent": 0, "drops": { "paws": 4 } } },
                { "queue": 1, "rx_frames": 7, "tls_handshakes_full": 2, "tcp": { "drops": {} } },
            ],
            "latency": {
                "tls13_handshake_full": { "count": 3, "p50_us": 1052, "p90_us": 1372, "p99_us": 1755, "p999_us": 5235, "max_us": 6987 },
                "backend_connect": { "count": 1 },
                "tcp_handshake": { "count": 2 },
            },
            "session_caches": [ { "listener": "198.51.100.2:443", "hits": 4, "misses": 1, "entries": 2 } ],
        });
        let t = render(&stats);
        let line = |prefix: &str| {
            t.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}:\n{t}")).to_owned()
        };
        assert_eq!(
            line("tls13_handshake_full").split_whitespace().collect::<Vec<_>>(),
            ["tls13_handshake_full", "3", "1052", "1372", "1755", "5235", "6987"]
        );
        let pos = |name: &str| t.find(&format!("\n{name} ")).unwrap_or_else(|| panic!("{name}:\n{t}"));
        assert!(
            pos("tcp_handshake") < pos("backend_connect") && pos("backend_connect") < pos("tls13_handshake_full"),
            "{t}"
        );
        assert_eq!(line("counters").split_whitespace().collect::<Vec<_>>(), ["counters", "total", "q0", "q1"]);
        assert!(line("rx frames").ends_with("        12         5         7"), "{t}");
        assert!(line("tls handshakes full").contains(" 3 "), "{t}");
        assert!(line("drops (worker)").contains(" 3 "), "{t}");
        assert!(line("drops (tcp)").contains(" 4 "), "{t}");
        assert!(line("tcp retransmits").contains(" 3 "), "{t}");
        assert!(t.contains("session cache 198.51.100.2:443: 4 hits, 1 misses"), "{t}");
        assert!(t.contains("xdp (native): 9 redirected"), "{t}");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("fast").is_err());
    }
}
