//! What sluice tells about itself while it runs: per-worker counters ([`counters`]), latency
//! histograms ([`latency`]) handed to a stats thread ([`stats`]), exported as OpenMetrics text
//! ([`metrics`]), JSON and HdrHistogram logs ([`hlog`]) by the admin endpoint ([`admin`]), and
//! read back by `sluice stats` ([`stats_cli`]). Nothing here knows which transport runs.

pub mod admin;
pub mod counters;
pub mod hlog;
pub mod latency;
pub mod metrics;
pub mod stats;
pub mod stats_cli;
