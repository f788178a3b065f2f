//! `sluice-bench soak` (run by `cargo xtask bench soak`): sluice on AF_XDP under a steady mixed
//! TLS load for minutes, watched every second, then drained, then judged.
//!
//! The mix: five parts at once, each its own open-loop load ([`sluice_bench::load`]) on its own
//! thread from the client namespace: full TLS 1.3, full TLS 1.2, resumed TLS 1.3 (tickets),
//! resumed TLS 1.2 (session IDs), and TLS 1.3 keep-alive requests on `--concurrency` persistent
//! connections. Each part runs at `--fraction` (70 %) of the rate it reached in a short
//! closed-loop run of the same five parts at once (`--measure-seconds`, printed first), so the
//! mix keeps the proportions sluice itself showed; `--rate R` skips that run and gives each
//! part R/5 per second instead.
//!
//! Why slices: the load library reports when a run ends, not during it. Each part is therefore a
//! sequence of `--slice`-second open-loop runs back to back. The rate holds across them (a slice
//! starts as soon as the last one's connections are done, milliseconds later), a failure shows in
//! the samples at most one slice late, and each slice's start adds a little of what a real client
//! population does anyway: a resumed TLS 1.3 part primes a few tickets with full handshakes, a
//! keep-alive part opens its connections anew. Parallel parts rather than one part after the
//! other, so that every kind of connection is in sluice at every moment of the soak.
//!
//! Every second: sluice's RSS (`/proc/<pid>/status`), its open connections and relays, its UMEM
//! frames free and in total per queue (`/stats.json` in the proxy namespace), and the failures so
//! far: the load generator's failed connections (and slices that ended in an error), and sluice's
//! own TLS failures, handshake timeouts, backend failures and limit refusals since the soak began.
//! After the load: a drain (connections back to zero once TIME-WAIT ends, up to
//! `--drain-seconds`), then the verdict: no failure; RSS flat (the last minute's mean within 10 %
//! of the second minute's; under 3 minutes the last fifth's against the second fifth's); every
//! UMEM frame back on every queue (as many free as when sluice was idle before the load: the
//! fill ring always owns some, so free never equals total while sluice runs); no connection or
//! relay open. PASS only when all four hold, and
//! the command exits non-zero otherwise.
//!
//! Out: the samples, the rates, each part's totals and the verdict in `--out` (JSON), and an SVG
//! plot beside it (RSS and open connections over time, failures marked).
//!
//! What it is not: a capacity benchmark (that is `compare`), nor a proof of the absence of leaks:
//! a slow leak can hide under a short soak's noise. Everything shares the machine's cores.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sluice_bench::load::{self, LoadArgs, LoadReport, Mode, TlsVersion};
use sluice_bench::{admin, probe};

use crate::compare::{Bed, Dirs, LISTEN, Server, Target, Tuning};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of load (the drain comes after).
    #[arg(long, default_value_t = 300.0)]
    pub duration: f64,
    /// Total rate (connections and keep-alive requests per second), R/5 for each of the five
    /// parts. Absent: measure the mix's maximum first and run at `--fraction` of it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Share of the measured maximum to run at.
    #[arg(long, default_value_t = 0.7)]
    pub fraction: f64,
    /// Seconds of the closed-loop run that measures the mix's maximum.
    #[arg(long, default_value_t = 5.0)]
    pub measure_seconds: f64,
    /// Seconds per load slice (see the module doc).
    #[arg(long, default_value_t = 5.0)]
    pub slice: f64,
    /// Connections at once per part in the measuring run; the keep-alive part's connections.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to wait after the load for every connection to close (sluice's TIME-WAIT is 10 s).
    #[arg(long, default_value_t = 30.0)]
    pub drain_seconds: f64,
    /// The JSON report; the SVG plot goes beside it, the certificates and logs in its folder.
    #[arg(long, default_value = "target/bench-soak/soak.json")]
    pub out: PathBuf,
    /// The sluice binary.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice: PathBuf,
    /// sluice's transport.
    #[arg(long, value_enum, default_value_t = Transport::SluiceXdp)]
    pub target: Transport,
    /// Namespace prefix of the topology.
    #[arg(long, default_value = "ssoak-")]
    pub prefix: String,
    /// sluice's `datapath.busy_poll_us`.
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// sluice's `datapath.pin_workers`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_workers: bool,
}

/// The sluice under test: the compare targets that have a `/stats.json`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// AF_XDP (the soak's point: UMEM frames are watched).
    SluiceXdp,
    /// Kernel sockets (no UMEM).
    SluiceKernel,
}

impl Transport {
    fn target(self) -> Target {
        match self {
            Self::SluiceXdp => Target::SluiceXdp,
            Self::SluiceKernel => Target::SluiceKernel,
        }
    }
}

/// One part of the mix.
#[derive(Clone, Copy, Debug)]
struct Part {
    name: &'static str,
    mode: Mode,
    tls: TlsVersion,
}

const PARTS: [Part; 5] = [
    Part { name: "full 1.3", mode: Mode::Full, tls: TlsVersion::Tls13 },
    Part { name: "full 1.2", mode: Mode::Full, tls: TlsVersion::Tls12 },
    Part { name: "resumed 1.3", mode: Mode::Resume, tls: TlsVersion::Tls13 },
    Part { name: "resumed 1.2", mode: Mode::Resume, tls: TlsVersion::Tls12 },
    Part { name: "keep-alive 1.3", mode: Mode::Keepalive, tls: TlsVersion::Tls13 },
];

impl Part {
    /// What this part's rate counts: connections, or requests for keep-alive.
    fn unit(self) -> &'static str {
        if self.mode == Mode::Keepalive { "requests/s" } else { "connections/s" }
    }

    /// Items per second of a finished run: connections completed, or requests.
    fn per_s(self, r: &LoadReport) -> f64 {
        let m = &r.measured;
        let n = if self.mode == Mode::Keepalive { m.requests } else { m.completed };
        n as f64 / m.elapsed.as_secs_f64().max(1e-9)
    }
}

/// sluice's counters (summed over its queues) that count a failure. A counter this sluice does
/// not have counts zero.
const SERVER_FAILURES: [&str; 8] = [
    "tls_failed",
    "tls_handshake_timeouts",
    "relays_backend_failed",
    "relays_backend_timeout",
    "refused_limit_total",
    "refused_limit_worker",
    "refused_limit_client",
    "refused_descriptors",
];

/// One second of the soak.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    /// Seconds since the load began.
    pub t_s: f64,
    /// Taken after the load stopped.
    pub draining: bool,
    /// sluice's resident set (`VmRSS`), KiB; `None` if it could not be read.
    pub rss_kib: Option<u64>,
    /// From `/stats.json`; `None` if it could not be fetched.
    pub server: Option<ServerSample>,
    /// Load generator: connections started so far (slices finished), and of them failed,
    /// slices that ended in an error included.
    pub client_connections: u64,
    pub client_failed: u64,
}

/// What `/stats.json` said at one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ServerSample {
    /// Sums over the queues: TCBs (TIME-WAIT included), TCBs not in TIME-WAIT, relays.
    pub connections_open: u64,
    pub connections_active: u64,
    pub relays_open: u64,
    /// Per queue.
    pub umem_free: Vec<u64>,
    pub umem_total: Vec<u64>,
    /// [`SERVER_FAILURES`] summed, since the soak began.
    pub failures: u64,
}

fn server_failures(stats: &Value) -> u64 {
    SERVER_FAILURES.iter().map(|k| admin::queue_total(stats, k)).sum()
}

impl ServerSample {
    /// From one `/stats.json`, failures counted from `failures_before` (the soak's start).
    pub(crate) fn from_stats(stats: &Value, failures_before: u64) -> Self {
        Self {
            connections_open: admin::queue_total(stats, "connections_open"),
            connections_active: admin::queue_total(stats, "connections_active"),
            relays_open: admin::queue_total(stats, "relays_open"),
            umem_free: admin::per_queue(stats, "umem_frames_free"),
            umem_total: admin::per_queue(stats, "umem_frames_total"),
            failures: server_failures(stats).saturating_sub(failures_before),
        }
    }

    /// Every queue has at least as many UMEM frames free as `idle` says it had before the load
    /// (trivially so without a UMEM). Not `free == total`: while sluice runs, its fill ring
    /// owns `datapath.fill_ring` frames of every queue, and `/stats.json` counts only the free
    /// list.
    fn umem_back(&self, idle: &[u64]) -> bool {
        self.umem_free.len() == idle.len() && self.umem_free.iter().zip(idle).all(|(f, i)| f >= i)
    }

    fn drained(&self, umem_idle: &[u64]) -> bool {
        self.connections_open == 0 && self.relays_open == 0 && self.umem_back(umem_idle)
    }
}

/// One check of the verdict, with the figures it was decided on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    pub pass: bool,
    pub checks: Vec<Check>,
}

impl Verdict {
    fn to_json(&self) -> Value {
        json!({
            "pass": self.pass,
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name, "pass": c.pass, "detail": c.detail,
            })).collect::<Vec<_>>(),
        })
    }

    /// The verdict for a person: one line, then one per check.
    pub(crate) fn text(&self) -> String {
        let mut s = format!("soak verdict: {}\n", if self.pass { "PASS" } else { "FAIL" });
        for c in &self.checks {
            let _ = writeln!(s, "  [{}] {}: {}", if c.pass { "ok" } else { "FAIL" }, c.name, c.detail);
        }
        s
    }
}

/// The two windows (seconds since the load began) whose mean RSS must agree, and how to say
/// which they are: the second minute and the last one; under 3 minutes of load, the second
/// fifth and the last one.
pub(crate) fn rss_windows(load_s: f64) -> ((f64, f64), (f64, f64), &'static str) {
    if load_s >= 180.0 {
        ((60.0, 120.0), (load_s - 60.0, load_s), "last minute vs second minute")
    } else {
        (
            (load_s / 5.0, 2.0 * load_s / 5.0),
            (4.0 * load_s / 5.0, load_s),
            "last fifth vs second fifth (load under 3 minutes)",
        )
    }
}

/// RSS may move this much (a fraction of the earlier window's mean) between the two windows.
const RSS_TOLERANCE: f64 = 0.10;

/// The verdict on a soak whose load lasted `load_s` seconds, from its samples in time order
/// (the last one taken after the drain): no failure, RSS flat, every UMEM frame back (as many
/// free on every queue as `umem_idle`, the free counts of the idle sluice before any load), no
/// connection left open.
pub(crate) fn verdict(samples: &[Sample], load_s: f64, umem_idle: &[u64]) -> Verdict {
    let last = samples.last();
    let last_server = last.and_then(|s| s.server.as_ref());
    let mut checks = Vec::new();

    // No failure: the client's (cumulative, so the last sample has them all) and sluice's.
    checks.push(match (last, last_server) {
        (Some(l), Some(srv)) => Check {
            name: "zero failures",
            pass: l.client_failed == 0 && srv.failures == 0,
            detail: format!(
                "client {} failed of {} connections; sluice {} (TLS failures, handshake timeouts, backend failures, limit refusals)",
                l.client_failed, l.client_connections, srv.failures
            ),
        },
        (Some(l), None) => Check {
            name: "zero failures",
            pass: false,
            detail: format!(
                "client {} failed of {} connections; sluice's counts could not be read",
                l.client_failed, l.client_connections
            ),
        },
        (None, _) => Check {
            name: "zero failures",
            pass: false,
            detail: "no samples".into(),
        },
    });

    // RSS flat.
    let (early, late, which) = rss_windows(load_s);
    let mean_rss = |(from, to): (f64, f64)| {
        let v: Vec<u64> =
            samples.iter().filter(|s| !s.draining && s.t_s >= from && s.t_s < to).filter_map(|s| s.rss_kib).collect();
        (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64)
    };
    checks.push(match (mean_rss(early), mean_rss(late)) {
        (Some(a), Some(b)) => {
            let change = (b - a) / a.max(1.0);
            Check {
                name: "RSS flat",
                pass: change.abs() <= RSS_TOLERANCE,
                detail: format!(
                    "{which}: {:.1} MiB vs {:.1} MiB ({:+.1} %, limit ±{:.0} %)",
                    b / 1024.0,
                    a / 1024.0,
                    change * 100.0,
                    RSS_TOLERANCE * 100.0
                ),
            }
        }
        _ => Check {
            name: "RSS flat",
            pass: false,
            detail: format!(
                "{which}: no RSS samples in [{:.0}, {:.0}) s or [{:.0}, {:.0}) s",
                early.0, early.1, late.0, late.1
            ),
        },
    });

    // Every UMEM frame back, on every queue.
    checks.push(match last_server {
        Some(srv) if srv.umem_total.is_empty() => {
            Check { name: "UMEM frames back", pass: false, detail: "no queues in /stats.json".into() }
        }
        Some(srv) if srv.umem_total.iter().all(|t| *t == 0) => {
            Check { name: "UMEM frames back", pass: true, detail: "no UMEM (kernel sockets)".into() }
        }
        Some(srv) => Check {
            name: "UMEM frames back",
            pass: srv.umem_back(umem_idle),
            detail: format!(
                "free/total after the drain {} (idle before the load: {} free, the rest in the fill ring)",
                srv.umem_free
                    .iter()
                    .zip(&srv.umem_total)
                    .enumerate()
                    .map(|(q, (f, t))| format!("queue {q} {f}/{t}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                umem_idle.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
            ),
        },
        None => Check { name: "UMEM frames back", pass: false, detail: "no /stats.json after the drain".into() },
    });

    // No connection left.
    checks.push(match (last, last_server) {
        (Some(l), Some(srv)) => Check {
            name: "connections drained",
            pass: srv.connections_open == 0 && srv.relays_open == 0,
            detail: format!(
                "{} connections ({} not in TIME-WAIT), {} relays open {:.0} s after the load",
                srv.connections_open,
                srv.connections_active,
                srv.relays_open,
                (l.t_s - load_s).max(0.0)
            ),
        },
        _ => Check { name: "connections drained", pass: false, detail: "no /stats.json after the drain".into() },
    });
    Verdict { pass: checks.iter().all(|c| c.pass), checks }
}

/// One part's totals over the soak's slices.
struct PartTotals {
    slices: u64,
    /// Slices that ended in an error (each counted as one failure).
    errors: Vec<String>,
    started: u64,
    completed: u64,
    failed: u64,
    handshakes_full: u64,
    handshakes_resumed: u64,
    requests: u64,
    first_error: Option<String>,
    flagged: Vec<String>,
    /// Failed connections by kind (the load generator's names: connect, tls, timeout, ...).
    failed_by_kind: std::collections::BTreeMap<String, u64>,
    handshake: Histogram<u64>,
    request: Histogram<u64>,
}

impl PartTotals {
    fn new() -> Self {
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        Self {
            slices: 0,
            errors: Vec::new(),
            started: 0,
            completed: 0,
            failed: 0,
            handshakes_full: 0,
            handshakes_resumed: 0,
            requests: 0,
            first_error: None,
            flagged: Vec::new(),
            failed_by_kind: Default::default(),
            handshake: hist(),
            request: hist(),
        }
    }

    /// A finished slice: its measured phase and its priming.
    fn add(&mut self, r: Result<LoadReport>) {
        self.slices += 1;
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                self.errors.push(format!("{e:#}"));
                return;
            }
        };
        for t in [&r.priming, &r.measured] {
            self.started += t.started;
            self.completed += t.completed;
            self.failed += t.failed_total();
            self.handshakes_full += t.handshakes_full;
            self.handshakes_resumed += t.handshakes_resumed;
            self.requests += t.requests;
            if self.first_error.is_none() {
                self.first_error = t.first_error.clone();
            }
        }
        if r.measured.failed_total() + r.priming.failed_total() > 0 {
            let j = r.to_json();
            for phase in ["priming", "measured"] {
                for (kind, n) in j[phase]["failed"].as_object().into_iter().flatten() {
                    let n = n.as_u64().unwrap_or(0);
                    if n > 0 {
                        *self.failed_by_kind.entry(kind.clone()).or_default() += n;
                    }
                }
            }
        }
        let _ = self.handshake.add(&r.measured.handshake);
        let _ = self.request.add(&r.measured.request);
        // The same warning slice after slice: keep the first few.
        if self.flagged.len() < 5 {
            self.flagged.extend(r.flagged);
        }
    }

    fn failures(&self) -> u64 {
        self.failed + self.errors.len() as u64
    }

    fn to_json(&self, part: Part, rate: f64) -> Value {
        json!({
            "part": part.name, "rate": rate, "unit": part.unit(), "slices": self.slices,
            "slice_errors": self.errors.iter().take(10).collect::<Vec<_>>(),
            "slice_errors_total": self.errors.len(),
            "started": self.started, "completed": self.completed, "failed": self.failed,
            "failed_by_kind": self.failed_by_kind,
            "handshakes_full": self.handshakes_full, "handshakes_resumed": self.handshakes_resumed,
            "requests": self.requests, "first_error": self.first_error, "flagged": self.flagged,
            "latency_us": {
                "handshake": load::hist_json(&self.handshake),
                "request": load::hist_json(&self.request),
            },
        })
    }
}

/// Every queue's free UMEM frames while sluice is idle (just started, before any load): what a
/// drained sluice must have again. Two equal readings 300 ms apart, so that no refill of the
/// fill ring is in progress.
fn idle_umem_free(server: &Server) -> Result<Vec<u64>> {
    let read = || -> Result<Vec<u64>> { Ok(ServerSample::from_stats(&server.stats()?, 0).umem_free) };
    let mut last = read()?;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    bail!("sluice's free UMEM frames did not settle while idle: {last:?}")
}

/// The load arguments of `part` against sluice from `client_ns`.
fn part_args(part: Part, ca: &Path, client_ns: &str, concurrency: usize) -> Result<LoadArgs> {
    let mut a = LoadArgs::new(LISTEN.parse()?, ca.to_owned());
    a.mode = part.mode;
    a.tls = part.tls;
    a.concurrency = concurrency;
    a.threads = 1;
    a.netns = Some(client_ns.to_owned());
    a.timeout_ms = 5_000;
    // A resumed TLS 1.3 part: a few tickets to start from; every resumption brings new ones.
    if part.mode == Mode::Resume && part.tls == TlsVersion::Tls13 {
        a.prime = Some(2 * concurrency as u64);
    }
    Ok(a)
}

/// The five parts closed-loop at once for `seconds`: each part's reports.
fn measure_max(base: &[LoadArgs], seconds: f64) -> Vec<Result<LoadReport>> {
    let threads: Vec<_> = base
        .iter()
        .map(|a| {
            let a = LoadArgs { rate: None, duration: seconds, ..a.clone() };
            std::thread::spawn(move || load::run(&a))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked")))).collect()
}

/// Runs `args` open loop at `rate` in slices of `slice` seconds until `end`, adding each slice
/// to `totals`.
fn run_part(args: LoadArgs, rate: f64, slice: f64, end: Instant, totals: &Mutex<PartTotals>) {
    loop {
        let left = end.saturating_duration_since(Instant::now()).as_secs_f64();
        if left < 0.5 {
            break;
        }
        let a = LoadArgs { rate: Some(rate), duration: left.min(slice), ..args.clone() };
        let r = load::run(&a);
        let failed = r.is_err();
        totals.lock().unwrap_or_else(|e| e.into_inner()).add(r);
        if failed {
            // An error ends a slice at once (sluice gone, nothing accepted): do not spin.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    sluice_testbed::require_root().context("the soak runs sluice in network namespaces")?;
    if !(args.duration >= 10.0 && args.duration.is_finite()) {
        bail!("--duration: at least 10 s");
    }
    if !(args.fraction > 0.0 && args.fraction <= 1.0) {
        bail!("--fraction: in (0, 1]");
    }
    if args.slice < 1.0 || args.concurrency == 0 {
        bail!("--slice: at least 1 s; --concurrency: at least 1");
    }
    let started = Instant::now();
    let json_path = args.out.clone();
    let dir = json_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Dirs { out, certs, work } = Dirs::make(dir)?;
    let svg_path = out.join(json_path.with_extension("svg").file_name().context("--out: a file name")?);
    let json_path = out.join(json_path.file_name().context("--out: a file name")?);
    let sluice_bin =
        std::fs::canonicalize(&args.sluice).with_context(|| format!("sluice binary {}", args.sluice.display()))?;
    let versions = crate::compare::versions(&sluice_bin);

    let bed = Bed::up(&args.prefix, "soak", &work)?;
    let (client, proxy) = (bed.client(), bed.proxy());
    let sdir = work.join(format!("soak-{:?}", args.target.target()).to_lowercase());
    let _ = std::fs::remove_dir_all(&sdir);
    std::fs::create_dir_all(&sdir)?;
    let tuning = Tuning { busy_poll_us: args.busy_poll_us, pin_workers: args.pin_workers };
    let server = Server::start(args.target.target(), &sluice_bin, &sdir, &certs, &proxy, &client, tuning)?;
    let pid = server.pid();
    let umem_idle = idle_umem_free(&server)?;
    let ca = certs.join("ca.pem");
    let base: Vec<LoadArgs> =
        PARTS.iter().map(|p| part_args(*p, &ca, &client, args.concurrency)).collect::<Result<_>>()?;

    // The rates: measured (the mix closed loop), or given.
    let (rates, max_json) = match args.rate {
        Some(r) => {
            eprintln!("soak: --rate {r}/s, {:.1}/s for each of the five parts", r / 5.0);
            (vec![r / 5.0; PARTS.len()], Value::Null)
        }
        None => {
            eprintln!(
                "soak: measuring the mix's maximum: the five parts at once, closed loop, {} connections each, {} s",
                args.concurrency, args.measure_seconds
            );
            let reports = measure_max(&base, args.measure_seconds);
            let mut rates = Vec::new();
            let mut parts = Vec::new();
            for (part, r) in PARTS.iter().zip(&reports) {
                let r = r.as_ref().map_err(|e| anyhow::anyhow!("measuring {}: {e:#}", part.name))?;
                let max = part.per_s(r);
                let failed = r.measured.failed_total() + r.priming.failed_total();
                println!(
                    "  max {:<15} {max:>8.0} {}{}",
                    part.name,
                    part.unit(),
                    if failed > 0 {
                        format!("  ({failed} failed: the measuring run overloads on purpose)")
                    } else {
                        String::new()
                    }
                );
                parts.push(json!({ "part": part.name, "per_s": max, "unit": part.unit(), "failed": failed }));
                rates.push(max * args.fraction);
            }
            if rates.iter().any(|r| *r <= 0.0) {
                bail!("measuring the mix: a part reached no rate at all ({rates:?})");
            }
            let total: f64 = rates.iter().sum::<f64>() / args.fraction;
            println!("  max of the mix: {total:.0}/s (connections + keep-alive requests)");
            (
                rates,
                json!({ "seconds": args.measure_seconds, "concurrency": args.concurrency, "parts": parts, "total_per_s": total }),
            )
        }
    };
    println!(
        "soak: {} s at {}: {}",
        args.duration,
        match args.rate {
            Some(r) => format!("{r}/s (given)"),
            None => format!("{:.0} % of the maximum", args.fraction * 100.0),
        },
        PARTS.iter().zip(&rates).map(|(p, r)| format!("{} {r:.0} {}", p.name, p.unit())).collect::<Vec<_>>().join(", ")
    );

    // The measuring run's connections may still be closing; failures count from here.
    let stats0 = server.stats().context("sluice's /stats.json before the soak")?;
    let failures0 = server_failures(&stats0);
    let handshakes0 = admin::handshakes(&stats0);
    let totals: Arc<Vec<Mutex<PartTotals>>> = Arc::new(PARTS.iter().map(|_| Mutex::new(PartTotals::new())).collect());
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.duration);
    let threads: Vec<_> = base
        .iter()
        .zip(&rates)
        .enumerate()
        .map(|(i, (a, &rate))| {
            let (a, totals, slice) = (a.clone(), totals.clone(), args.slice);
            std::thread::spawn(move || run_part(a, rate, slice, end, &totals[i]))
        })
        .collect();

    let sample = |draining: bool| -> Sample {
        let (mut connections, mut failed) = (0, 0);
        for t in totals.iter() {
            let t = t.lock().unwrap_or_else(|e| e.into_inner());
            connections += t.started + t.errors.len() as u64;
            failed += t.failures();
        }
        Sample {
            t_s: t0.elapsed().as_secs_f64(),
            draining,
            rss_kib: probe::rss_kib(pid),
            server: server.stats().ok().map(|s| ServerSample::from_stats(&s, failures0)),
            client_connections: connections,
            client_failed: failed,
        }
    };
    let mut samples = Vec::new();
    let mut tick = t0;
    while threads.iter().any(|t| !t.is_finished()) {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let s = sample(false);
        if samples.len() % 10 == 9 {
            eprintln!("  {}", progress_line(&s));
        }
        samples.push(s);
    }
    for t in threads {
        let _ = t.join();
    }
    let load_end = t0.elapsed().as_secs_f64();
    eprintln!("soak: load stopped at {load_end:.0} s; draining (up to {} s)", args.drain_seconds);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_seconds);
    loop {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let s = sample(true);
        let done = s.server.as_ref().is_some_and(|v| v.drained(&umem_idle));
        samples.push(s);
        if done || Instant::now() >= drain_deadline {
            break;
        }
    }
    if let Some(s) = samples.last() {
        eprintln!("  {}", progress_line(s));
    }
    let stats_after = server.stats().ok();

    let verdict = verdict(&samples, args.duration, &umem_idle);
    let parts: Vec<Value> = totals
        .iter()
        .zip(PARTS)
        .zip(&rates)
        .map(|((t, p), r)| t.lock().unwrap_or_else(|e| e.into_inner()).to_json(p, *r))
        .collect();
    println!("\nsoak: what each part did");
    for p in &parts {
        let h = &p["latency_us"]["handshake"];
        println!(
            "  {:<15} {:>5} slices {:>8} connections {:>9} requests {:>6} failed  handshake p50 {} p99 {} max {} µs{}",
            p["part"].as_str().unwrap_or(""),
            p["slices"],
            p["started"],
            p["requests"],
            p["failed"].as_u64().unwrap_or(0) + p["slice_errors_total"].as_u64().unwrap_or(0),
            h["p50"],
            h["p99"],
            h["max"],
            p["first_error"].as_str().map_or(String::new(), |e| format!("  first error: {e}")),
        );
        let kinds = p["failed_by_kind"].as_object().cloned().unwrap_or_default();
        let errors = p["slice_errors_total"].as_u64().unwrap_or(0);
        if !kinds.is_empty() || errors > 0 {
            println!(
                "  {:<15} failed: {}{}",
                "",
                kinds.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "),
                if errors > 0 {
                    format!("; {errors} slices ended in an error, first: {}", p["slice_errors"][0])
                } else {
                    String::new()
                }
            );
        }
    }
    let client_hs = parts.iter().fold((0, 0), |(f, r), p| {
        (f + p["handshakes_full"].as_u64().unwrap_or(0), r + p["handshakes_resumed"].as_u64().unwrap_or(0))
    });
    let server_hs = stats_after.as_ref().map(|s| {
        let (full, resumed) = admin::handshakes(s);
        (full - handshakes0.0, resumed - handshakes0.1)
    });
    println!(
        "  handshakes full/resumed: client {}/{}, sluice {}",
        client_hs.0,
        client_hs.1,
        server_hs.map_or("unknown".into(), |(f, r)| format!("{f}/{r}"))
    );
    println!("\n{}", verdict.text().trim_end());

    let failure_breakdown: serde_json::Map<String, Value> = SERVER_FAILURES
        .iter()
        .map(|k| {
            let now = stats_after.as_ref().map_or(0, |s| admin::queue_total(s, k));
            ((*k).to_owned(), json!(now.saturating_sub(admin::queue_total(&stats0, k))))
        })
        .collect();
    let (early, late, which) = rss_windows(args.duration);
    let doc = json!({
        "verdict": {
            "pass": verdict.pass, "checks": verdict.to_json()["checks"],
            "rss_windows": { "which": which, "early_s": [early.0, early.1], "late_s": [late.0, late.1] },
        },
        "config": {
            "duration_s": args.duration, "rate": args.rate, "fraction": args.fraction,
            "measure_seconds": args.measure_seconds, "slice_s": args.slice,
            "concurrency": args.concurrency, "drain_seconds": args.drain_seconds,
            "target": args.target.target().label(), "prefix": args.prefix,
            "sluice_config": server.config_text(),
            "loads": base.iter().map(|a| format!("{:?} {} timeout {} ms prime {:?}", a.mode, a.tls.name(), a.timeout_ms, a.prime)).collect::<Vec<_>>(),
        },
        "versions": versions,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "max_of_mix": max_json,
        "umem_frames_free_idle": umem_idle,
        "parts": parts,
        "load_stopped_s": load_end,
        "server": {
            "pid": pid,
            "handshakes_full": server_hs.map(|h| h.0), "handshakes_resumed": server_hs.map(|h| h.1),
            "failures": failure_breakdown, "stats_after": stats_after,
        },
        "samples": samples.iter().map(sample_json).collect::<Vec<_>>(),
        "plot": svg_path.display().to_string(),
        "wall_s": started.elapsed().as_secs_f64(),
    });
    std::fs::write(&svg_path, svg(&samples, args.duration))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("results: {} and {}", json_path.display(), svg_path.display());
    if let Err(e) = server.stop() {
        eprintln!("soak: stopping sluice: {e:#}");
    }
    drop(bed);
    println!("soak took {:.0} s", started.elapsed().as_secs_f64());
    if !verdict.pass {
        let failed: Vec<&str> = verdict.checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
        bail!("soak FAILED: {}", failed.join(", "));
    }
    Ok(())
}

fn progress_line(s: &Sample) -> String {
    let rss = s.rss_kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    match &s.server {
        Some(srv) => format!(
            "t {:>4.0} s  RSS {rss}  {} connections ({} not in TIME-WAIT), {} relays  UMEM free {}/{}  failures: client {}, sluice {}",
            s.t_s,
            srv.connections_open,
            srv.connections_active,
            srv.relays_open,
            srv.umem_free.iter().sum::<u64>(),
            srv.umem_total.iter().sum::<u64>(),
            s.client_failed,
            srv.failures
        ),
        None => format!("t {:>4.0} s  RSS {rss}  /stats.json unavailable  failures: client {}", s.t_s, s.client_failed),
    }
}

fn sample_json(s: &Sample) -> Value {
    let srv = s.server.as_ref();
    json!({
        "t_s": (s.t_s * 1000.0).round() / 1000.0,
        "phase": if s.draining { "drain" } else { "load" },
        "rss_kib": s.rss_kib,
        "connections_open": srv.map(|v| v.connections_open),
        "connections_active": srv.map(|v| v.connections_active),
        "relays_open": srv.map(|v| v.relays_open),
        "umem_frames_free": srv.map(|v| v.umem_free.clone()),
        "umem_frames_total": srv.map(|v| v.umem_total.clone()),
        "client_connections": s.client_connections,
        "client_failed": s.client_failed,
        "server_failures": srv.map(|v| v.failures),
    })
}

// The plot: SVG by hand, in the manner of `sluice_bench::plot`.
const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// A round step (1, 2 or 5 times a power of ten) that cuts `[0, max]` into about five.
pub(crate) fn nice_step(max: f64) -> f64 {
    if !(max > 0.0 && max.is_finite()) {
        return 1.0;
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * pow).find(|s| *s >= raw).unwrap_or(10.0 * pow)
}

/// The soak over time: RSS (MiB, left axis), connections and relays open (right axis), the end
/// of the load, and a red mark wherever the failure count rose.
pub(crate) fn svg(samples: &[Sample], load_s: f64) -> String {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let t_max = samples.iter().map(|s| s.t_s).fold(load_s, f64::max).max(1.0);
    let rss = |s: &Sample| s.rss_kib.map(|k| k as f64 / 1024.0);
    let conns = |s: &Sample| s.server.as_ref().map(|v| v.connections_open as f64);
    let relays = |s: &Sample| s.server.as_ref().map(|v| v.relays_open as f64);
    let max_of = |f: &dyn Fn(&Sample) -> Option<f64>| samples.iter().filter_map(f).fold(0.0, f64::max);
    let rss_step = nice_step(max_of(&rss) * 1.1);
    let rss_top = (max_of(&rss) * 1.1 / rss_step).ceil().max(1.0) * rss_step;
    let conn_max = max_of(&conns).max(max_of(&relays));
    let conn_step = nice_step(conn_max * 1.1).max(1.0);
    let conn_top = (conn_max * 1.1 / conn_step).ceil().max(1.0) * conn_step;
    let x = |t: f64| LEFT + t / t_max * pw;
    let y = |v: f64, top: f64| TOP + ph - (v / top).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">sluice soak: RSS and open connections over time</text>"#,
        LEFT + pw / 2.0
    );
    // Grid: time ticks, RSS ticks on the left, connection ticks on the right.
    let t_step = nice_step(t_max);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let xp = x(t);
        let _ = writeln!(s, r##"<line x1="{xp:.1}" y1="{TOP}" x2="{xp:.1}" y2="{:.1}" stroke="#ddd"/>"##, TOP + ph);
        let _ = writeln!(s, r#"<text x="{xp:.1}" y="{:.1}" text-anchor="middle">{t}</text>"#, TOP + ph + 18.0);
        t += t_step;
    }
    let mut v = 0.0;
    while v <= rss_top + 1e-9 {
        let yp = y(v, rss_top);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#ddd"/>"##, LEFT + pw);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"#, LEFT - 6.0, yp + 4.0);
        v += rss_step;
    }
    let mut c = 0.0;
    while c <= conn_top + 1e-9 {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{c}</text>"#, LEFT + pw + 6.0, y(c, conn_top) + 4.0);
        c += conn_step;
    }
    sluice_bench::plot::frame(&mut s, pw, ph, "seconds since the load began", "RSS (MiB)");
    // The load's end.
    let xe = x(load_s);
    let _ = writeln!(
        s,
        r##"<line x1="{xe:.1}" y1="{TOP}" x2="{xe:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="6 4"/>"##,
        TOP + ph
    );
    let _ =
        writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">load stops, drain</text>"#, xe - 4.0, TOP + 14.0);
    let series: [(&str, &str, SeriesOf<'_>, f64); 3] = [
        ("RSS (MiB, left)", "#1f77b4", &rss, rss_top),
        ("connections open (right)", "#2ca02c", &conns, conn_top),
        ("relays open (right, dashed)", "#ff7f0e", &relays, conn_top),
    ];
    for (i, (label, color, f, top)) in series.iter().enumerate() {
        let points: Vec<String> =
            samples.iter().filter_map(|smp| f(smp).map(|v| format!("{:.1},{:.1}", x(smp.t_s), y(v, *top)))).collect();
        // Relays often equal connections: the relays' line is dashed so both show.
        let style = match i {
            1 => r#"stroke-width="4""#,
            2 => r#"stroke-width="2" stroke-dasharray="6 4""#,
            _ => r#"stroke-width="2""#,
        };
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" {style} points="{}"/>"#, points.join(" "));
        legend(&mut s, i, label, color, pw);
    }
    // Failures: a mark wherever a count rose, with the count so far: the load generator's at
    // the bottom, sluice's at the top (one failure is often seen by both).
    let marks: [(&str, &str, f64, CountOf<'_>); 2] = [
        ("client failures", "#d62728", TOP + ph - 6.0, &|smp| smp.client_failed),
        ("sluice failures", "#8c1c13", TOP + 6.0, &|smp| smp.server.as_ref().map_or(0, |v| v.failures)),
    ];
    for (k, (label, color, my, count)) in marks.iter().enumerate() {
        let mut before = 0;
        let mut marked = 0;
        for smp in samples {
            let now = count(smp);
            if now > before {
                let xp = x(smp.t_s);
                let ty =
                    if k == 0 { my - 6.0 - 14.0 * (marked % 3) as f64 } else { my + 14.0 + 14.0 * (marked % 3) as f64 };
                let _ = writeln!(
                    s,
                    r##"<line x1="{xp:.1}" y1="{TOP}" x2="{xp:.1}" y2="{:.1}" stroke="{color}" stroke-width="1" stroke-opacity="0.5"/>"##,
                    TOP + ph
                );
                let _ = writeln!(
                    s,
                    r##"<circle cx="{xp:.1}" cy="{my:.1}" r="4" fill="{color}"/><text x="{:.1}" y="{ty:.1}" fill="{color}">{now}</text>"##,
                    xp + 5.0,
                );
                marked += 1;
            }
            before = now;
        }
        let text = if marked > 0 { format!("{label} (count so far)") } else { format!("{label}: none") };
        legend(&mut s, series.len() + k, &text, color, pw);
    }
    s.push_str("</svg>\n");
    s
}

/// What one line of the plot draws from a sample.
type SeriesOf<'a> = &'a dyn Fn(&Sample) -> Option<f64>;
/// A failure count the plot marks.
type CountOf<'a> = &'a dyn Fn(&Sample) -> u64;

fn legend(s: &mut String, i: usize, label: &str, color: &str, pw: f64) {
    let ly = TOP + 10.0 + 20.0 * i as f64;
    let lx = LEFT + pw + 60.0;
    let _ =
        writeln!(s, r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#, lx + 22.0);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}">{}</text>"#,
        lx + 28.0,
        ly + 4.0,
        label.replace('&', "&amp;").replace('<', "&lt;")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Free UMEM frames per queue of an idle sluice: 8192 less a fill ring of 2048.
    const IDLE: &[u64] = &[6144, 6144];

    /// A quiet second of an AF_XDP soak: two queues, `open` connections, RSS `rss_kib`.
    fn sample(t_s: f64, rss_kib: u64, open: u64) -> Sample {
        Sample {
            t_s,
            draining: false,
            rss_kib: Some(rss_kib),
            server: Some(ServerSample {
                connections_open: open,
                connections_active: open / 2,
                relays_open: open / 2,
                umem_free: vec![5000, 5100],
                umem_total: vec![8192, 8192],
                failures: 0,
            }),
            client_connections: 100 * t_s as u64,
            client_failed: 0,
        }
    }

    /// `load_s` seconds of load at a flat RSS, then a drain that ends with everything back.
    fn clean_soak(load_s: u64) -> Vec<Sample> {
        let mut v: Vec<Sample> = (1..=load_s).map(|t| sample(t as f64, 50_000 + t % 7, 120)).collect();
        let mut last = sample(load_s as f64 + 11.0, 49_000, 0);
        last.draining = true;
        last.server.as_mut().unwrap().umem_free = IDLE.to_vec();
        v.push(last);
        v
    }

    fn check<'a>(v: &'a Verdict, name: &str) -> &'a Check {
        v.checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_clean_soak_passes_every_check() {
        let v = verdict(&clean_soak(300), 300.0, IDLE);
        assert!(v.pass, "{}", v.text());
        assert_eq!(v.checks.len(), 4);
        assert!(check(&v, "RSS flat").detail.starts_with("last minute vs second minute"));
        assert_eq!(
            check(&v, "UMEM frames back").detail,
            "free/total after the drain queue 0 6144/8192, queue 1 6144/8192 (idle before the load: 6144/6144 free, the rest in the fill ring)"
        );
        assert!(v.text().starts_with("soak verdict: PASS\n  [ok] zero failures: client 0 failed"));
    }

    #[test]
    fn any_failure_fails() {
        let mut s = clean_soak(60);
        s.last_mut().unwrap().client_failed = 1;
        let v = verdict(&s, 60.0, IDLE);
        assert!(!v.pass && !check(&v, "zero failures").pass);
        assert!(check(&v, "RSS flat").pass && check(&v, "connections drained").pass);

        let mut s = clean_soak(60);
        s.last_mut().unwrap().server.as_mut().unwrap().failures = 3;
        let v = verdict(&s, 60.0, IDLE);
        assert!(!check(&v, "zero failures").pass);
        assert!(check(&v, "zero failures").detail.contains("sluice 3"));
    }

    #[test]
    fn rss_growth_past_ten_percent_fails() {
        // 300 s: RSS grows 50 MB -> 65 MB linearly; the second minute's mean is ~54.5, the
        // last minute's ~63.5: +16 %.
        let mut s = clean_soak(300);
        for x in s.iter_mut().filter(|x| !x.draining) {
            x.rss_kib = Some(50_000 + (x.t_s * 50.0) as u64);
        }
        let v = verdict(&s, 300.0, IDLE);
        let c = check(&v, "RSS flat");
        assert!(!c.pass && !v.pass, "{}", c.detail);
        assert!(c.detail.contains("+16."), "{}", c.detail);
        // A drop past 10 % is not flat either; within 10 % is.
        for x in s.iter_mut().filter(|x| !x.draining) {
            x.rss_kib = Some(if x.t_s < 150.0 { 60_000 } else { 50_000 });
        }
        assert!(!check(&verdict(&s, 300.0, IDLE), "RSS flat").pass);
        for x in s.iter_mut().filter(|x| !x.draining) {
            x.rss_kib = Some(if x.t_s < 150.0 { 60_000 } else { 55_000 });
        }
        assert!(check(&verdict(&s, 300.0, IDLE), "RSS flat").pass);
    }

    #[test]
    fn a_short_soak_compares_fifths_and_ignores_the_drain() {
        assert_eq!(rss_windows(40.0), ((8.0, 16.0), (32.0, 40.0), "last fifth vs second fifth (load under 3 minutes)"));
        assert_eq!(rss_windows(300.0).0, (60.0, 120.0));
        assert_eq!(rss_windows(300.0).1, (240.0, 300.0));
        // The first fifth (warm-up) may grow; the drain's samples may shrink: neither counts.
        let mut s = clean_soak(40);
        for x in s.iter_mut().filter(|x| x.t_s < 8.0) {
            x.rss_kib = Some(10_000);
        }
        s.last_mut().unwrap().rss_kib = Some(1_000);
        let v = verdict(&s, 40.0, IDLE);
        assert!(v.pass, "{}", v.text());
        assert!(check(&v, "RSS flat").detail.starts_with("last fifth vs second fifth"));
        // No samples in a window: not a pass.
        let v = verdict(&s[30..], 40.0, IDLE);
        assert!(!check(&v, "RSS flat").pass);
    }

    #[test]
    fn frames_and_connections_must_come_back() {
        let mut s = clean_soak(60);
        s.last_mut().unwrap().server.as_mut().unwrap().umem_free = vec![6144, 6142];
        let v = verdict(&s, 60.0, IDLE);
        let c = check(&v, "UMEM frames back");
        assert!(!c.pass && !v.pass);
        assert!(c.detail.contains("queue 1 6142/8192"), "{}", c.detail);
        // More free than when idle (the fill ring not yet topped up) is every frame back.
        s.last_mut().unwrap().server.as_mut().unwrap().umem_free = vec![6144, 6200];
        assert!(check(&verdict(&s, 60.0, IDLE), "UMEM frames back").pass);

        let mut s = clean_soak(60);
        s.last_mut().unwrap().server.as_mut().unwrap().relays_open = 2;
        let v = verdict(&s, 60.0, IDLE);
        let c = check(&v, "connections drained");
        assert!(!c.pass, "{}", c.detail);
        assert_eq!(c.detail, "0 connections (0 not in TIME-WAIT), 2 relays open 11 s after the load");

        // sluice gone at the end: nothing can be said to have come back.
        let mut s = clean_soak(60);
        s.last_mut().unwrap().server = None;
        let v = verdict(&s, 60.0, IDLE);
        assert_eq!(v.checks.iter().filter(|c| c.pass).count(), 1);
        assert!(check(&v, "RSS flat").pass);
        // No samples at all.
        assert!(verdict(&[], 60.0, IDLE).checks.iter().all(|c| !c.pass));
    }

    #[test]
    fn kernel_sockets_have_no_umem_to_return() {
        let mut s = clean_soak(60);
        let srv = s.last_mut().unwrap().server.as_mut().unwrap();
        srv.umem_free = vec![0, 0];
        srv.umem_total = vec![0, 0];
        let v = verdict(&s, 60.0, &[0, 0]);
        assert!(v.pass);
        assert_eq!(check(&v, "UMEM frames back").detail, "no UMEM (kernel sockets)");
    }

    #[test]
    fn stats_json_is_read() {
        let stats = json!({ "queues": [
            { "connections_open": 5, "connections_active": 2, "relays_open": 2,
              "umem_frames_free": 8000, "umem_frames_total": 8192,
              "tls_failed": 4, "relays_backend_failed": 1, "relays_client_gone": 9 },
            { "connections_open": 1, "connections_active": 1, "relays_open": 1,
              "umem_frames_free": 8192, "umem_frames_total": 8192, "refused_limit_client": 2 },
        ]});
        let s = ServerSample::from_stats(&stats, 3);
        assert_eq!(
            s,
            ServerSample {
                connections_open: 6,
                connections_active: 3,
                relays_open: 3,
                umem_free: vec![8000, 8192],
                umem_total: vec![8192, 8192],
                // 4 + 1 + 2 failures, 3 of them before the soak; a client gone is no failure.
                failures: 4,
            }
        );
        assert!(!s.drained(&[8000, 8192]));
        let idle = ServerSample { connections_open: 0, relays_open: 0, ..s };
        assert!(idle.drained(&[8000, 8192]) && !idle.drained(&[8001, 8192]));
    }

    #[test]
    fn plot_marks_failures_and_the_load_end() {
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert_eq!(nice_step(0.0), 1.0);
        let mut s = clean_soak(40);
        let svg_clean = svg(&s, 40.0);
        assert_eq!(svg_clean.matches("<polyline").count(), 3);
        assert!(svg_clean.contains("client failures: none") && !svg_clean.contains("<circle"));
        // Failures rise at 10 s and 20 s: two marks.
        for x in s.iter_mut() {
            x.client_failed = if x.t_s >= 20.0 {
                5
            } else if x.t_s >= 10.0 {
                2
            } else {
                0
            };
        }
        let svg_failed = svg(&s, 40.0);
        assert_eq!(svg_failed.matches("<circle").count(), 2);
        assert!(svg_failed.contains("load stops") && svg_failed.ends_with("</svg>\n"));
    }
}
