//! The stats export against a running sluice (issue 5): full and resumed TLS handshakes from a
//! rustls client in `{p}client`, then `/metrics` (parsed by a Prometheus text parser),
//! `/histograms/<name>.hlog` and the `[stats] interval_log` file (read back with the hdrhistogram
//! crate's log reader) must count exactly those handshakes, and `sluice stats` run in the proxy
//! namespace must print them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::{Sluice, certificates, config, handshakes, http_backend};
use sluice_testbed::{in_netns, in_ns};
use sluice_tls::rustls::{self, ClientConfig, RootCertStore};

const ADMIN: &str = "127.0.0.1:9090";

fn stats_config(dir: &Path, log: &Path) -> String {
    let d = dir.display();
    config(
        "native",
        &format!(
            "[[listener]]\naddress = \"198.51.100.2:443\"\nbackend = \"203.0.113.2:8080\"\n\n\
             [listener.tls]\ncertificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\" }}]\n\n\
             [tcp]\ntime_wait_ms = 1000\n\n[stats]\ninterval_log = \"{}\"\ninterval_log_secs = 1\n",
            log.display()
        ),
    )
}

/// `GET path` from the admin endpoint, from inside the proxy namespace.
fn admin_get(sluice: &Sluice, path: &str) -> Result<Vec<u8>> {
    let path = path.to_owned();
    in_netns(&sluice.proxy(), move || sluice::observe::stats_cli::fetch(ADMIN.parse().expect("address"), &path))?
}

/// Histogram name -> how many handshakes of that kind the clients made.
type Expected = BTreeMap<&'static str, u64>;

/// TLS 1.3 and 1.2 clients, with and without resumption; returns what the clients saw.
fn make_handshakes(sluice: &Sluice, ca: rustls::pki_types::CertificateDer<'static>) -> Result<Expected> {
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let mut expected = Expected::new();
    for (version, tag, fresh, resuming) in
        [(&rustls::version::TLS13, "tls13", 2, 5), (&rustls::version::TLS12, "tls12", 1, 4)]
    {
        let base = || {
            ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots.clone())
                .with_no_client_auth()
        };
        let mut no_resumption = base();
        no_resumption.resumption = rustls::client::Resumption::disabled();
        let mut kinds = handshakes(sluice, no_resumption, fresh)?;
        // One full handshake, then resumptions of its session.
        let mut with_resumption = base();
        with_resumption.resumption = rustls::client::Resumption::in_memory_sessions(16);
        kinds.extend(handshakes(sluice, with_resumption, resuming)?);
        let full = kinds.iter().filter(|k| **k == rustls::HandshakeKind::Full).count() as u64;
        let resumed = kinds.iter().filter(|k| **k == rustls::HandshakeKind::Resumed).count() as u64;
        ensure!(full + resumed == kinds.len() as u64, "{tag}: unexpected kinds {kinds:?}");
        ensure!(resumed >= 1 && full >= 2, "{tag}: the clients did not both resume and not: {kinds:?}");
        expected.insert(if tag == "tls13" { "tls13_handshake_full" } else { "tls12_handshake_full" }, full);
        expected.insert(if tag == "tls13" { "tls13_handshake_resumed" } else { "tls12_handshake_resumed" }, resumed);
    }
    Ok(expected)
}

/// A value of a parsed sample (counters, gauges and untyped `_count` lines alike).
fn sample_value(s: &prometheus_parse::Sample) -> Option<f64> {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => Some(v),
        _ => None,
    }
}

/// `/metrics` parsed; every line is a comment or a sample.
fn scrape(sluice: &Sluice) -> Result<(String, Vec<prometheus_parse::Sample>)> {
    let text = String::from_utf8(admin_get(sluice, "/metrics")?)?;
    for line in text.lines() {
        let info = prometheus_parse::LineInfo::parse(line);
        ensure!(
            line.starts_with('#') || matches!(info, prometheus_parse::LineInfo::Sample { .. }),
            "/metrics: a line that is neither a comment nor a sample: {line:?}"
        );
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    Ok((text, scrape.samples))
}

/// The sum of one metric's samples (over its label sets).
fn total(samples: &[prometheus_parse::Sample], metric: &str) -> Result<f64> {
    let values: Vec<f64> = samples.iter().filter(|s| s.metric == metric).filter_map(sample_value).collect();
    ensure!(!values.is_empty(), "no {metric} in /metrics");
    Ok(values.iter().sum())
}

/// Total count per tag of an HdrHistogram log, read with the hdrhistogram crate's reader and
/// V2 deserializer.
fn log_totals(log: &[u8]) -> Result<BTreeMap<String, u64>> {
    use base64::Engine;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut totals = BTreeMap::new();
    let (mut start_time, mut base_time) = (false, false);
    for entry in IntervalLogIterator::new(log) {
        match entry.map_err(|e| anyhow::anyhow!("log entry: {e:?}"))? {
            LogEntry::StartTime(_) => start_time = true,
            LogEntry::BaseTime(_) => base_time = true,
            LogEntry::Interval(i) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(i.encoded_histogram())?;
                let h: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| anyhow::anyhow!("V2 deserializer: {e:?}"))?;
                let tag = i.tag().context("an interval without a tag")?.as_str().to_owned();
                *totals.entry(tag).or_insert(0) += h.len();
            }
        }
    }
    ensure!(start_time && base_time, "no StartTime or BaseTime header");
    Ok(totals)
}

#[test]
fn metrics_hlog_interval_log_and_sluice_stats_count_the_handshakes() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("st-m1-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certificates(&dir)?;
    let log_path = dir.join("sluice.hlog");
    let mut sluice = Sluice::start("st-m1-", &stats_config(&dir, &log_path))?;
    http_backend(&sluice.topology.topology.backend())?;

    let expected = make_handshakes(&sluice, ca)?;
    let handshakes: u64 = expected.values().sum();
    sluice.wait_idle()?;

    // wait_idle waited for `latency_pending` to reach 0: the histograms hold every handshake.
    let (text, samples) = scrape(&sluice)?;
    for (name, n) in &expected {
        let count = total(&samples, &format!("sluice_{name}_seconds_count"))?;
        ensure!(count == *n as f64, "{name}: /metrics counts {count}, the clients made {n}:\n{text}");
        // The histogram's +Inf bucket holds every handshake too.
        let h = samples
            .iter()
            .find(|s| s.metric == format!("sluice_{name}_seconds"))
            .with_context(|| format!("no histogram sluice_{name}_seconds"))?;
        let prometheus_parse::Value::Histogram(buckets) = &h.value else { bail!("{name}: not a histogram") };
        ensure!(buckets.last().map(|b| b.count) == Some(*n as f64), "{name}: +Inf bucket {buckets:?}");
        let p99 = samples
            .iter()
            .find(|s| s.metric == format!("sluice_{name}_quantile_seconds") && s.labels.get("quantile") == Some("0.99"))
            .and_then(sample_value)
            .with_context(|| format!("no p99 of {name}"))?;
        ensure!(p99 > 0.0 && p99 < 10.0, "{name}: p99 {p99} s");
    }
    let full = expected["tls13_handshake_full"] + expected["tls12_handshake_full"];
    let resumed = expected["tls13_handshake_resumed"] + expected["tls12_handshake_resumed"];
    ensure!(total(&samples, "sluice_tls_handshakes_full_total")? == full as f64, "{text}");
    ensure!(total(&samples, "sluice_tls_handshakes_resumed_total")? == resumed as f64, "{text}");
    ensure!(total(&samples, "sluice_relays_opened_total")? == handshakes as f64, "{text}");
    ensure!(total(&samples, "sluice_tcp_handshake_seconds_count")? == handshakes as f64, "{text}");
    ensure!(total(&samples, "sluice_xdp_packets_total")? > 0.0, "{text}");
    ensure!(total(&samples, "sluice_session_cache_hits_total")? >= resumed as f64, "{text}");
    ensure!(text.contains("sluice_drops_total{") && text.contains("sluice_tcp_retransmits_total{"), "{text}");

    // /histograms/<name>.hlog: the cumulative histogram as a log; unknown names are 404.
    for (name, n) in &expected {
        let path = format!("/histograms/{name}.hlog");
        let totals = log_totals(&admin_get(&sluice, &path)?)?;
        ensure!(totals.get(*name) == Some(n), "{path}: {totals:?}, the clients made {n}");
    }
    let missing = admin_get(&sluice, "/histograms/nope.hlog").unwrap_err();
    ensure!(format!("{missing:#}").contains("404"), "{missing:#}");

    // `sluice stats` in the proxy namespace: the table has every histogram with its count.
    let out = in_ns(&sluice.proxy(), env!("CARGO_BIN_EXE_sluice"), &["stats"])?;
    let table = String::from_utf8(out.stdout)?;
    for (name, n) in &expected {
        let line = table.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name} in:\n{table}"))?;
        let count: u64 = line.split_whitespace().nth(1).context("no count")?.parse()?;
        ensure!(count == *n, "{name}: `sluice stats` shows {count}, the clients made {n}:\n{table}");
    }
    let line = table.lines().find(|l| l.starts_with("tls handshakes resumed")).context(table.clone())?;
    ensure!(line.split_whitespace().nth(3) == Some(resumed.to_string().as_str()), "{table}");

    // --watch redraws in place (home, clear) every interval until stopped.
    let cmd = format!("timeout 1.5 {} stats --watch --interval 200ms; true", env!("CARGO_BIN_EXE_sluice"));
    let out = in_ns(&sluice.proxy(), "sh", &["-c", &cmd])?;
    let watched = String::from_utf8_lossy(&out.stdout);
    let redraws = watched.matches("\x1b[H\x1b[2J").count();
    ensure!(redraws >= 2, "--watch drew {redraws} times:\n{watched}");
    ensure!(watched.matches("tls13_handshake_full").count() == redraws, "{watched}");

    // The interval log, after a clean stop (which writes the last interval): every handshake
    // is in exactly one interval.
    let status = sluice.process.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))?;
    ensure!(status.success(), "sluice: {status}\n{}", sluice.process.log());
    let log = std::fs::read(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let text = String::from_utf8_lossy(&log);
    ensure!(text.contains("#[Histogram log format version 1.3]") && text.contains("\"StartTimestamp\""), "{text}");
    let totals = log_totals(&log)?;
    for (name, n) in &expected {
        ensure!(totals.get(*name) == Some(n), "interval log: {name}: {totals:?}, the clients made {n}");
    }
    ensure!(totals.get("tcp_handshake") == Some(&handshakes), "{totals:?}");
    let intervals = text.lines().filter(|l| l.starts_with("Tag=tcp_handshake,")).count();
    ensure!(intervals >= 2, "one interval per second expected, got {intervals}:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
