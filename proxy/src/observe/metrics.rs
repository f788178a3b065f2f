//! `/metrics`: a [`Snapshot`] in the OpenMetrics text format (which Prometheus scrapes), encoded
//! by the `prometheus-client` crate.
//!
//! Latencies: one histogram per HdrHistogram, `sluice_<name>_seconds` (buckets [`BUCKETS_US`],
//! 50 µs to 10 s, about three per decade), and a gauge family
//! `sluice_<name>_quantile_seconds{quantile="0.5"|"0.9"|"0.99"|"0.999"|"1"}` read from the
//! HdrHistogram (`1` is the maximum). Counters per queue carry a `queue` label and are named
//! after their field: every `QueueCounters` field becomes `sluice_<field>_total` (but `dropped_*`,
//! which become `sluice_drops_total{layer="worker",reason}`, and the gauges `*_open`,
//! `umem_frames_free`, `umem_frames_capacity`); every TCP counter `sluice_tcp_<name>_total` (retransmissions as
//! `sluice_tcp_retransmits_total{kind}`, drops as `sluice_drops_total{layer="tcp",reason}`).
//! XDP outcomes: `sluice_xdp_packets_total{outcome}`; session caches per `listener`.
//!
//! Not an instrumentation library: the values are the snapshot's, encoded at each scrape.

use std::fmt;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::observe::stats::Snapshot;

/// The Content-Type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in microseconds (exported in seconds).
pub const BUCKETS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// The quantiles exported per histogram, with their label value.
pub const QUANTILES: [(f64, &str); 5] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999"), (1.0, "1")];

/// The body of `/metrics`.
pub fn encode(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Export(snapshot)));
    let mut out = String::new();
    // Writing into a String does not fail; an encoder error would leave a partial body.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!("encoding /metrics: {e}");
    }
    out
}

/// Sum (seconds), count and per-bucket (not cumulative) counts of `h` for an OpenMetrics
/// histogram: a value goes to the first bucket whose bound is at least the lowest value
/// HdrHistogram cannot tell it from; the last bucket is `+Inf`.
pub fn buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out: Vec<(f64, u64)> = BUCKETS_US.iter().map(|&b| (b as f64 / 1e6, 0)).collect();
    out.push((f64::INFINITY, 0));
    let mut sum_us = 0.0;
    for v in h.iter_recorded() {
        let value = h.lowest_equivalent(v.value_iterated_to());
        let n = v.count_at_value();
        sum_us += h.median_equivalent(value) as f64 * n as f64;
        let i = BUCKETS_US.iter().position(|&b| value <= b).unwrap_or(BUCKETS_US.len());
        out[i].1 += n;
    }
    (sum_us / 1e6, h.len(), out)
}

#[derive(Debug)]
struct Export(Snapshot);

impl Collector for Export {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        latencies(s, &mut enc)?;
        queue_counters(s, &mut enc)?;
        tcp_counters(s, &mut enc)?;
        family(
            &mut enc,
            "sluice_xdp_packets",
            "Packets by the XDP program's outcome (summed over CPUs)",
            MetricType::Counter,
            s.xdp.iter().map(|(outcome, v)| ([("outcome", *outcome)], *v)),
        )?;
        session_caches(s, &mut enc)?;
        if let Some(started) = s.started {
            let up = started.elapsed().unwrap_or_default().as_secs_f64();
            let m = enc.encode_descriptor(
                "sluice_uptime",
                "Time since sluice started",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(up).encode(m)?;
        }
        Ok(())
    }
}

/// One metric family of counters or gauges: a descriptor, then one sample per label set.
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in samples {
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(m.encode_family(&labels)?)?,
            _ => ConstGauge::new(v).encode(m.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

fn latencies(s: &Snapshot, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    for (name, h) in s.latencies.iter() {
        let full = format!("sluice_{name}");
        let help = format!("Latency of {}, from sluice's HdrHistogram", name.replace('_', " "));
        let (sum, count, b) = buckets(h);
        let mut m = enc.encode_descriptor(&full, &help, Some(&Unit::Seconds), MetricType::Histogram)?;
        m.encode_histogram::<NoLabelSet>(sum, count, &b, None)?;

        let qname = format!("sluice_{name}_quantile");
        let qhelp = format!("Quantiles of {} (quantile 1 is the maximum)", name.replace('_', " "));
        let mut m = enc.encode_descriptor(&qname, &qhelp, Some(&Unit::Seconds), MetricType::Gauge)?;
        for (q, label) in QUANTILES {
            let us = if h.is_empty() {
                0
            } else if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            };
            ConstGauge::new(us as f64 / 1e6).encode(m.encode_family(&[("quantile", label)])?)?;
        }
    }
    Ok(())
}

/// `QueueCounters` fields that are levels, not counts.
fn is_gauge(field: &str) -> bool {
    field.ends_with("_open")
        || field.ends_with("_now")
        || field.starts_with("umem_frames_")
        || matches!(field, "connections_active" | "draining")
}

fn queue_counters(s: &Snapshot, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    // The fields by name, in the order serde gives them (the same for every queue).
    let per_queue: Vec<(String, Vec<(String, u64)>)> = s
        .queues
        .iter()
        .map(|q| {
            let fields = match serde_json::to_value(q.queue) {
                Ok(serde_json::Value::Object(m)) => {
                    m.into_iter().filter_map(|(k, v)| Some((k, v.as_u64()?))).filter(|(k, _)| k != "queue").collect()
                }
                _ => Vec::new(),
            };
            (q.queue.queue.to_string(), fields)
        })
        .collect();
    let Some((_, first)) = per_queue.first() else { return Ok(()) };
    let names: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
    let value = |fields: &[(String, u64)], name: &str| fields.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
    for name in names.iter().filter(|n| !n.starts_with("dropped_")) {
        // OpenMetrics keeps `_total` for counters.
        let metric = format!("sluice_{}", if *name == "umem_frames_total" { "umem_frames_capacity" } else { name });
        let kind = if is_gauge(name) { MetricType::Gauge } else { MetricType::Counter };
        let help = format!("Per-queue {} `{name}`", if is_gauge(name) { "level" } else { "counter" });
        family(
            enc,
            &metric,
            &help,
            kind,
            per_queue.iter().map(|(q, fields)| ([("queue", q.as_str())], value(fields, name))),
        )?;
    }
    let mut m = enc.encode_descriptor(
        "sluice_drops",
        "Frames and segments dropped, by layer (worker, tcp) and reason",
        None,
        MetricType::Counter,
    )?;
    for (q, fields) in &per_queue {
        for name in names.iter().filter(|n| n.starts_with("dropped_")) {
            let reason = name.trim_start_matches("dropped_");
            let labels = [("queue", q.as_str()), ("layer", "worker"), ("reason", reason)];
            ConstCounter::new(value(fields, name)).encode(m.encode_family(&labels)?)?;
        }
    }
    for q in &s.queues {
        let queue = q.queue.queue.to_string();
        for (reason, v) in q.tcp.drops_iter() {
            let labels = [("queue", queue.as_str()), ("layer", "tcp"), ("reason", reason)];
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn tcp_counters(s: &Snapshot, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let Some(first) = s.queues.first() else { return Ok(()) };
    let queues: Vec<String> = s.queues.iter().map(|q| q.queue.queue.to_string()).collect();
    for (name, _) in first.tcp.iter().filter(|(n, _)| !n.starts_with("retransmits_")) {
        family(
            enc,
            &format!("sluice_tcp_{name}"),
            &format!("sluice's TCP stack: `{name}`"),
            MetricType::Counter,
            s.queues.iter().zip(&queues).map(|(q, id)| {
                ([("queue", id.as_str())], q.tcp.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| v))
            }),
        )?;
    }
    let mut m = enc.encode_descriptor(
        "sluice_tcp_retransmits",
        "Segments retransmitted by sluice's TCP stack, by trigger (rto, fast, sack, rack, tlp)",
        None,
        MetricType::Counter,
    )?;
    for (q, id) in s.queues.iter().zip(&queues) {
        for (name, v) in q.tcp.iter().filter(|(n, _)| n.starts_with("retransmits_")) {
            let labels = [("queue", id.as_str()), ("kind", name.trim_start_matches("retransmits_"))];
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn session_caches(s: &Snapshot, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let c = &s.session_caches;
    for (name, help, get) in [
        ("hits", "Session cache lookups that found a live entry", (|s| s.hits) as fn(&sluice_tls::CacheStats) -> u64),
        ("misses", "Session cache lookups that found nothing", |s| s.misses),
        ("inserts", "Sessions stored", |s| s.inserts),
        ("rejected", "Sessions refused (larger than a shard's byte budget)", |s| s.rejected),
        ("policy_mismatch", "Sessions not resumed: made under another TLS policy (before a reload)", |s| {
            s.policy_mismatch
        }),
    ] {
        family(
            enc,
            &format!("sluice_session_cache_{name}"),
            help,
            MetricType::Counter,
            c.iter().map(|(l, st)| ([("listener", l.as_str())], get(st))),
        )?;
    }
    let mut m = enc.encode_descriptor(
        "sluice_session_cache_evictions",
        "Sessions evicted, by reason (capacity, bytes, expired)",
        None,
        MetricType::Counter,
    )?;
    for (l, st) in c {
        for (reason, v) in
            [("capacity", st.evicted_capacity), ("bytes", st.evicted_bytes), ("expired", st.evicted_expired)]
        {
            ConstCounter::new(v).encode(m.encode_family(&[("listener", l.as_str()), ("reason", reason)])?)?;
        }
    }
    family(
        enc,
        "sluice_session_cache_entries",
        "Live sessions in the cache",
        MetricType::Gauge,
        c.iter().map(|(l, st)| ([("listener", l.as_str())], st.entries)),
    )?;
    family(
        enc,
        "sluice_session_cache_bytes",
        "Bytes held by the session cache",
        MetricType::Gauge,
        c.iter().map(|(l, st)| ([("listener", l.as_str())], st.bytes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::counters::{Published, QueueCounters};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot { xdp_mode: "native".into(), ..Snapshot::default() };
        for q in 0..2u32 {
            let mut p = Published {
                queue: QueueCounters {
                    queue: q,
                    rx_frames: 10 + u64::from(q),
                    dropped_checksum: 3,
                    connections_open: 1,
                    ..Default::default()
                },
                ..Default::default()
            };
            p.tcp.retransmits_rto = 4;
            p.tcp.syn_cookies_sent = 7;
            p.tcp.drops[0] = 2;
            s.queues.push(p);
        }
        for us in [40, 60, 150, 999, 1000, 20_000, 70_000_000] {
            crate::observe::latency::record(&mut s.latencies.tls13_full, Duration::from_micros(us));
        }
        crate::observe::latency::record(&mut s.latencies.tls13_resumed, Duration::from_micros(300));
        s.xdp = vec![("redirected", 5), ("pass_arp", 1)];
        s.session_caches = vec![(
            "198.51.100.2:443".into(),
            sluice_tls::CacheStats { hits: 3, evicted_bytes: 1, ..Default::default() },
        )];
        s.started = Some(std::time::SystemTime::now());
        s
    }

    fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap().samples
    }

    fn value(samples: &[prometheus_parse::Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
        let s = samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {metric} {labels:?}"));
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{metric}: {other:?}"),
        }
    }

    #[test]
    fn buckets_are_per_bucket_counts_with_an_inf_bucket() {
        let s = snapshot();
        let (sum, count, b) = buckets(&s.latencies.tls13_full);
        assert_eq!(count, 7);
        assert_eq!(b.len(), BUCKETS_US.len() + 1);
        assert_eq!(b[0], (0.00005, 1)); // 40 µs
        assert_eq!(b[1].1, 1); // 60
        assert_eq!(b[2].1, 1); // 150
        assert_eq!(b[4].1, 2); // 999, 1000 (le 1 ms)
        assert_eq!(b[8].1, 1); // 20 ms
        assert_eq!(b.last().unwrap(), &(f64::INFINITY, 1)); // 60 s (clamped)
        assert!((sum - 60.022).abs() < 0.1, "{sum}");
    }

    #[test]
    fn every_line_parses_and_values_are_right() {
        let text = encode(snapshot());
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines() {
            let info = prometheus_parse::LineInfo::parse(line);
            assert!(
                line.starts_with('#') || matches!(info, prometheus_parse::LineInfo::Sample { .. }),
                "not a sample: {line}"
            );
        }
        let s = samples(&text);
        assert_eq!(value(&s, "sluice_tls13_handshake_full_seconds_count", &[]), 7.0);
        assert_eq!(value(&s, "sluice_tls13_handshake_resumed_seconds_count", &[]), 1.0);
        assert_eq!(value(&s, "sluice_tls12_handshake_full_seconds_count", &[]), 0.0);
        let h = s.iter().find(|x| x.metric == "sluice_tls13_handshake_full_seconds").unwrap();
        let prometheus_parse::Value::Histogram(buckets) = &h.value else { panic!("{h:?}") };
        assert_eq!(buckets.len(), BUCKETS_US.len() + 1);
        assert_eq!(buckets.iter().find(|b| b.less_than == 0.001).unwrap().count, 5.0, "cumulative");
        assert_eq!(buckets.last().unwrap().count, 7.0);
        let p50 = value(&s, "sluice_tls13_handshake_full_quantile_seconds", &[("quantile", "0.5")]);
        assert!((p50 - 0.000999).abs() < 0.000002, "{p50}");
        let max = value(&s, "sluice_tls13_handshake_full_quantile_seconds", &[("quantile", "1")]);
        assert!((max - 60.0).abs() < 0.1, "{max}");
        assert_eq!(value(&s, "sluice_rx_frames_total", &[("queue", "1")]), 11.0);
        assert_eq!(value(&s, "sluice_connections_open", &[("queue", "0")]), 1.0);
        assert_eq!(
            value(&s, "sluice_drops_total", &[("queue", "0"), ("layer", "worker"), ("reason", "checksum")]),
            3.0
        );
        assert_eq!(
            value(&s, "sluice_drops_total", &[("queue", "1"), ("layer", "tcp"), ("reason", "invalid_sequence")]),
            2.0
        );
        assert_eq!(value(&s, "sluice_tcp_retransmits_total", &[("queue", "0"), ("kind", "rto")]), 4.0);
        assert_eq!(value(&s, "sluice_tcp_syn_cookies_sent_total", &[("queue", "1")]), 7.0);
        assert_eq!(value(&s, "sluice_xdp_packets_total", &[("outcome", "redirected")]), 5.0);
        assert_eq!(value(&s, "sluice_session_cache_hits_total", &[("listener", "198.51.100.2:443")]), 3.0);
        assert_eq!(value(&s, "sluice_session_cache_evictions_total", &[("reason", "bytes")]), 1.0);
        assert!(text.contains("# TYPE sluice_tls13_handshake_full_seconds histogram"), "{text}");
        assert!(text.contains("# TYPE sluice_handoff_out counter"), "{text}");
        assert!(text.contains("# TYPE sluice_umem_frames_capacity gauge"), "{text}");
        assert!(!text.contains("sluice_umem_frames_total"), "{text}");
    }
}
