//! Latency histograms of one worker (HdrHistogram, microseconds, 3 significant digits from
//! 1 µs to 60 s), and their merge across workers for the admin endpoint.
//!
//! Each worker records into its own interval histograms (no sharing on the fast path) and hands
//! them off to the stats thread now and then ([`crate::observe::stats::WorkerStats::send_interval`]),
//! which adds them to the cumulative set the admin endpoint exports. Values past 60 s are
//! clamped to 60 s and counted as such.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Highest trackable value: 60 s in microseconds.
pub const MAX_MICROS: u64 = 60_000_000;

/// The histograms a worker keeps, by name.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// TCP handshake on sluice's stack: SYN received to the handshake's final ACK.
    pub tcp_handshake: Histogram<u64>,
    /// Client connected to sluice to sluice's connection to the backend established.
    pub backend_connect: Histogram<u64>,
    /// Client connection established to the first byte from the backend.
    pub first_backend_byte: Histogram<u64>,
    /// TLS handshakes, first ClientHello byte to handshake complete, by version and kind.
    pub tls13_full: Histogram<u64>,
    pub tls13_resumed: Histogram<u64>,
    pub tls12_full: Histogram<u64>,
    pub tls12_resumed: Histogram<u64>,
    /// A fleet's session store (`[session_store]`): a lookup sent to its answer (a hit, a
    /// miss, an error or its timeout).
    pub session_store_lookup: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits always fits: the constructor cannot fail here.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| Histogram::new(3).expect("3 sigfig"))
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            tcp_handshake: histogram(),
            backend_connect: histogram(),
            first_backend_byte: histogram(),
            tls13_full: histogram(),
            tls13_resumed: histogram(),
            tls12_full: histogram(),
            tls12_resumed: histogram(),
            session_store_lookup: histogram(),
        }
    }
}

impl Latencies {
    /// Every histogram with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Histogram<u64>)> {
        Self::NAMES.into_iter().zip([
            &self.tcp_handshake,
            &self.backend_connect,
            &self.first_backend_byte,
            &self.tls13_full,
            &self.tls13_resumed,
            &self.tls12_full,
            &self.tls12_resumed,
            &self.session_store_lookup,
        ])
    }

    /// The names of the histograms, in [`Latencies::iter`] order.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::NAMES.into_iter()
    }

    const NAMES: [&'static str; 8] = [
        "tcp_handshake",
        "backend_connect",
        "first_backend_byte",
        "tls13_handshake_full",
        "tls13_handshake_resumed",
        "tls12_handshake_full",
        "tls12_handshake_resumed",
        "session_store_lookup",
    ];

    /// The histogram called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Histogram<u64>> {
        self.iter().find(|(n, _)| *n == name).map(|(_, h)| h)
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.iter().all(|(_, h)| h.is_empty())
    }

    /// Values recorded, over all histograms.
    pub fn count(&self) -> u64 {
        self.iter().map(|(_, h)| h.len()).sum()
    }

    /// Forgets every count (keeps the memory; an empty histogram is left as it is).
    pub fn reset(&mut self) {
        for h in self.iter_mut().filter(|h| !h.is_empty()) {
            h.reset();
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Histogram<u64>> {
        [
            &mut self.tcp_handshake,
            &mut self.backend_connect,
            &mut self.first_backend_byte,
            &mut self.tls13_full,
            &mut self.tls13_resumed,
            &mut self.tls12_full,
            &mut self.tls12_resumed,
            &mut self.session_store_lookup,
        ]
        .into_iter()
    }

    /// Adds `other`'s counts into `self` (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latencies) {
        for (mine, (_, theirs)) in self.iter_mut().zip(other.iter()) {
            let _ = mine.add(theirs);
        }
    }

    /// The histogram for a TLS handshake of this version and kind.
    pub fn tls_handshake(&mut self, info: &sluice_tls::HandshakeInfo) -> &mut Histogram<u64> {
        let tls13 = info.version == sluice_tls::rustls::ProtocolVersion::TLSv1_3;
        match (tls13, info.resumed) {
            (true, false) => &mut self.tls13_full,
            (true, true) => &mut self.tls13_resumed,
            (false, false) => &mut self.tls12_full,
            (false, true) => &mut self.tls12_resumed,
        }
    }
}

/// Records `d` into `h` in microseconds, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: std::time::Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_MICROS);
    let _ = h.record(us);
}

/// Count and percentiles of one histogram, in microseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
    json!({
        "count": h.len(),
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": if h.is_empty() { 0 } else { h.max() },
    })
}

/// All histograms of `l` as a JSON object of summaries.
pub fn json(l: &Latencies) -> Value {
    Value::Object(l.iter().map(|(name, h)| (name.to_owned(), summary(h))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_clamps_merges_and_summarises() {
        let mut a = Latencies::default();
        for us in 1..=1000 {
            record(&mut a.backend_connect, Duration::from_micros(us));
        }
        record(&mut a.backend_connect, Duration::from_secs(3600)); // clamped to 60 s
        record(&mut a.backend_connect, Duration::ZERO); // clamped to 1 µs
        let mut b = Latencies::default();
        record(&mut b.backend_connect, Duration::from_millis(5));
        a.merge(&b);
        let s = summary(&a.backend_connect);
        assert_eq!(s["count"], 1003);
        let p50 = s["p50_us"].as_u64().unwrap();
        assert!((495..=505).contains(&p50), "{s}");
        // 3 significant digits: the 60 s value reads back within 0.1 %.
        let max = s["max_us"].as_u64().unwrap();
        assert!(max.abs_diff(MAX_MICROS) <= MAX_MICROS / 1000, "{s}");
        assert_eq!(summary(&a.first_backend_byte)["count"], 0);
        assert_eq!(json(&a)["first_backend_byte"]["p99_us"], 0);
        assert_eq!(a.get("backend_connect").map(Histogram::len), Some(1003));
        assert!(a.get("nope").is_none());
        assert_eq!(Latencies::names().count(), a.iter().count());
        assert!(!a.is_empty());
        assert_eq!(a.count(), 1003);
        a.reset();
        assert!(a.is_empty());
    }
}
