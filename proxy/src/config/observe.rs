//! `[admin]` (the admin endpoint's address) and `[stats]` (the HdrHistogram interval log).

use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;

/// The admin endpoint (a kernel socket): `/stats.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Where the admin endpoint listens; keep it on loopback or a management network.
    #[serde(default = "defaults::admin_address")]
    pub address: std::net::SocketAddr,
    /// If set, every request must carry `Authorization: Bearer <token>` (else 401). sluice warns
    /// at start when the endpoint listens on a non-loopback address without one.
    #[serde(default)]
    pub token: Option<String>,
}

impl Default for Admin {
    fn default() -> Self {
        Self { address: defaults::admin_address(), token: None }
    }
}

/// The statistics export beyond the admin endpoint: an HdrHistogram interval log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Append every histogram's interval to this file (created anew at start; a relative path
    /// is taken from the configuration file's directory) every `interval_log_secs`.
    #[serde(default)]
    pub interval_log: Option<PathBuf>,
    #[serde(default = "defaults::interval_log_secs")]
    pub interval_log_secs: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self { interval_log: None, interval_log_secs: defaults::interval_log_secs() }
    }
}

impl Stats {
    /// The stats thread's interval log settings, if a log is configured.
    pub fn interval_log(&self) -> Option<crate::observe::stats::IntervalLogSettings> {
        self.interval_log.as_ref().map(|path| crate::observe::stats::IntervalLogSettings {
            path: path.clone(),
            every: std::time::Duration::from_secs(self.interval_log_secs),
        })
    }
}
