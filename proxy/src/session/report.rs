//! How a session reports itself: its latencies and handshakes into the worker's counters and
//! histograms while it runs, how it ended when it ends, and its access log line.

use sluice_tcp::Instant;

use crate::observe::counters::QueueCounters;
use crate::observe::latency::{self, Latencies};
use crate::session::limits::Refusal;
use crate::session::relay::{Backend, Relay, RelayEnd};

impl QueueCounters {
    /// A connection refused by a `[limits]` limit.
    pub fn count_refusal(&mut self, why: Refusal) {
        match why {
            Refusal::Total => self.refused_limit_total += 1,
            Refusal::Worker => self.refused_limit_worker += 1,
            Refusal::Client => self.refused_limit_client += 1,
            Refusal::Memory => self.refused_limit_memory += 1,
        }
    }

    /// What a relay learnt since the last look, into the counters and `latencies`: backend
    /// connect and first-byte times, a finished TLS handshake.
    pub fn relay_progress<B: Backend>(&mut self, r: &mut Relay<B>, latencies: &mut Latencies) {
        let (connect, first_byte) = r.take_timings();
        if let Some(d) = connect {
            latency::record(&mut latencies.backend_connect, d);
        }
        if let Some(d) = first_byte {
            latency::record(&mut latencies.first_backend_byte, d);
        }
        if let Some(hs) = r.take_handshake() {
            if hs.info.resumed {
                self.tls_handshakes_resumed += 1
            } else {
                self.tls_handshakes_full += 1
            }
            latency::record(latencies.tls_handshake(&hs.info), hs.duration);
        }
    }

    /// A relay ended: its bytes and how it ended; its access log line if asked.
    pub fn relay_ended<B: Backend>(&mut self, r: &Relay<B>, access_log: bool, now: Instant) {
        if access_log {
            self::access_log(r, now);
        }
        self.relay_bytes_to_backend += r.bytes_to_backend;
        self.relay_bytes_to_client += r.bytes_to_client;
        match r.end {
            Some(RelayEnd::Clean) => self.relays_clean += 1,
            Some(RelayEnd::BackendFailed) => self.relays_backend_failed += 1,
            Some(RelayEnd::BackendTimeout) => self.relays_backend_timeout += 1,
            Some(RelayEnd::TlsFailed) => {
                self.tls_failed += 1;
                if r.tls_session().is_some_and(|s| s.handshake_too_large()) {
                    self.tls_handshake_too_large += 1;
                }
            }
            Some(RelayEnd::HandshakeTimeout) => self.tls_handshake_timeouts += 1,
            Some(RelayEnd::IdleTimeout) => self.relays_idle_timeout += 1,
            Some(RelayEnd::ClientGone) | None => self.relays_client_gone += 1,
        }
    }
}

/// One line for a relayed connection that ended (target `sluice::access`).
pub fn access_log<B: Backend>(r: &Relay<B>, now: Instant) {
    let (client, listener) = r.peers.map_or((None, None), |(c, l)| (Some(c), Some(l)));
    let tls = r.tls_summary();
    let version = tls.and_then(|(i, _)| i.version.as_str()).unwrap_or("-");
    let sni = tls.and_then(|(i, _)| i.sni.as_deref()).unwrap_or("-");
    let end = match r.end {
        Some(RelayEnd::Clean) => "clean",
        Some(RelayEnd::BackendFailed) => "backend_failed",
        Some(RelayEnd::BackendTimeout) => "backend_timeout",
        Some(RelayEnd::IdleTimeout) => "idle_timeout",
        Some(RelayEnd::ClientGone) | None => "client_gone",
        Some(RelayEnd::TlsFailed) => "tls_failed",
        Some(RelayEnd::HandshakeTimeout) => "handshake_timeout",
    };
    tracing::info!(
        target: "sluice::access",
        client = %client.map_or("-".into(), |c| c.to_string()),
        listener = %listener.map_or("-".into(), |l| l.to_string()),
        sni,
        version,
        resumed = tls.is_some_and(|(i, _)| i.resumed),
        handshake_us = tls.map_or(0, |(_, d)| d.as_micros() as u64),
        bytes_in = r.bytes_to_backend,
        bytes_out = r.bytes_to_client,
        duration_ms = now.saturating_duration_since(r.started).as_millis() as u64,
        end,
    );
}
