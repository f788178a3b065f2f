//! Statistics of the running proxy: what workers share, the stats thread that merges it, and
//! the snapshot the admin endpoint exports (JSON here, Prometheus text in [`crate::observe::metrics`],
//! HdrHistogram logs in [`crate::observe::hlog`]).
//!
//! The fast path takes no lock that a reader could hold for long: a worker of any kind (AF_XDP
//! queue or kernel socket) records latencies into its own interval [`Latencies`] and calls
//! [`WorkerStats::send_interval`], which swaps the set for an empty spare and leaves the full one
//! in a bounded channel, never blocking (no spare or no room: keep accumulating and try later).
//! The stats thread ([`StatsThread`]) drains the channels every 100 ms into the cumulative
//! histograms (which the admin endpoint reads) and the current interval (which the interval log
//! writes every N seconds), and hands the emptied sets back as spares. Counters are small: a
//! worker copies them with [`WorkerStats::publish`] into a mutex it only ever `try_lock`s.
//!
//! This is not a metrics library: names and shapes of the export live in `metrics` and `hlog`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{Map, Value, json};
use sluice_tcp::Stats;

use crate::observe::counters::{Published, QueueCounters};
use crate::observe::latency::Latencies;

/// Takes a snapshot of the statistics on each request of the admin endpoint.
pub type StatsSource = std::sync::Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// A worker's share of the statistics: counters and latency hand-offs, never blocking it.
pub type SharedCounters = std::sync::Arc<WorkerStats>;

/// Full interval sets a worker may leave waiting for the stats thread.
const HANDOFF_SLOTS: usize = 2;
/// Interval sets a worker owns at most, counting the one it records into (about 1 MB each).
const SETS_PER_WORKER: usize = 4;
/// A worker hands its interval off at most this often.
pub const HANDOFF_PERIOD: Duration = Duration::from_millis(100);
/// `last_handoff_us` before the first hand-off.
const NEVER: u64 = u64::MAX;
/// How often the stats thread drains the workers' hand-offs.
const DRAIN_PERIOD: Duration = Duration::from_millis(100);

/// What one worker shares with the stats thread and the admin endpoint. Made with `default()`
/// by whoever spawns the worker; the worker calls [`publish`](Self::publish) and
/// [`send_interval`](Self::send_interval) (both non-blocking), the stats thread
/// [`take_interval`](Self::take_interval) and [`recycle`](Self::recycle).
pub struct WorkerStats {
    published: Mutex<Published>,
    full_tx: Sender<Latencies>,
    full_rx: Receiver<Latencies>,
    spare_tx: Sender<Latencies>,
    spare_rx: Receiver<Latencies>,
    /// Sets made so far (bounded by `SETS_PER_WORKER`).
    sets: AtomicUsize,
    created: Instant,
    last_handoff_us: AtomicU64,
    /// Values in the worker's current set at its last `send_interval`, and handed off but not
    /// merged yet.
    unsent: AtomicU64,
    in_flight: AtomicU64,
    /// What a stopping worker recorded last ([`WorkerStats::finish`]).
    leftover: Mutex<Option<Latencies>>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        let (full_tx, full_rx) = crossbeam_channel::bounded(HANDOFF_SLOTS);
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(SETS_PER_WORKER);
        Self {
            published: Mutex::default(),
            full_tx,
            full_rx,
            spare_tx,
            spare_rx,
            sets: AtomicUsize::new(1),
            created: Instant::now(),
            last_handoff_us: AtomicU64::new(NEVER),
            unsent: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            leftover: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for WorkerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerStats").field("sets", &self.sets).finish_non_exhaustive()
    }
}

impl WorkerStats {
    /// Copies the worker's counters for readers; skipped (the next call catches up) while a
    /// reader holds the lock.
    pub fn publish(&self, queue: &QueueCounters, tcp: &Stats) {
        if let Ok(mut p) = self.published.try_lock() {
            p.queue = *queue;
            p.tcp.clone_from(tcp);
        }
    }

    /// The counters last published, with the latency values still on their way
    /// (`latency_pending`; read before the cumulative histograms, 0 means they hold everything
    /// these counters count).
    pub fn snapshot(&self) -> Published {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner()).clone();
        p.latency_pending = self.pending();
        p
    }

    /// Hands `current` (the latencies recorded since the last hand-off) to the stats thread and
    /// leaves an empty set in its place. Never blocks: when the last hand-off was less than
    /// [`HANDOFF_PERIOD`] ago, nothing was recorded, the channel is full or no spare set is at
    /// hand, `current` keeps accumulating. Returns whether it was handed off.
    pub fn send_interval(&self, current: &mut Latencies) -> bool {
        let sent = self.try_send_interval(current);
        // Published after the hand-off, before the counters (the caller publishes them next):
        // a reader that sees these counters sees at least this much pending.
        self.unsent.store(current.count(), Ordering::SeqCst);
        sent
    }

    fn try_send_interval(&self, current: &mut Latencies) -> bool {
        let now_us = u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX);
        let last = self.last_handoff_us.load(Ordering::Relaxed);
        if (last != NEVER && now_us.saturating_sub(last) < HANDOFF_PERIOD.as_micros() as u64)
            || current.is_empty()
            || self.full_tx.is_full()
        {
            return false;
        }
        let spare = match self.spare_rx.try_recv() {
            Ok(s) => s,
            Err(_) if self.sets.load(Ordering::Relaxed) < SETS_PER_WORKER => {
                self.sets.fetch_add(1, Ordering::Relaxed);
                Latencies::default()
            }
            Err(_) => return false,
        };
        let full = std::mem::replace(current, spare);
        let n = full.count();
        self.in_flight.fetch_add(n, Ordering::SeqCst);
        match self.full_tx.try_send(full) {
            Ok(()) => {
                self.last_handoff_us.store(now_us, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(full) | TrySendError::Disconnected(full)) => {
                // Only this worker sends here, so this does not happen; stay correct anyway.
                self.in_flight.fetch_sub(n, Ordering::SeqCst);
                let spare = std::mem::replace(current, full);
                let _ = self.spare_tx.try_send(spare);
                false
            }
        }
    }

    /// Hands off what `current` holds whatever the period and the channel (a worker that
    /// stops calls this last; it may block briefly on a reader).
    pub fn finish(&self, current: &mut Latencies) {
        if !current.is_empty() {
            self.in_flight.fetch_add(current.count(), Ordering::SeqCst);
            let mut leftover = self.leftover.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *leftover {
                Some(l) => l.merge(current),
                None => *leftover = Some(current.clone()),
            }
            current.reset();
        }
        self.unsent.store(0, Ordering::SeqCst);
    }

    /// Values the worker recorded that are not in the cumulative histograms yet (still in its
    /// interval set, or handed off and not merged).
    pub fn pending(&self) -> u64 {
        self.unsent.load(Ordering::SeqCst) + self.in_flight.load(Ordering::SeqCst)
    }

    /// A set handed off by the worker, if one is waiting (stats thread).
    pub fn take_interval(&self) -> Option<Latencies> {
        self.full_rx.try_recv().ok().or_else(|| self.leftover.try_lock().ok()?.take())
    }

    /// Gives a set back to the worker once it is merged into the cumulative histograms (stats
    /// thread).
    pub fn recycle(&self, mut l: Latencies) {
        let _ = self.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_sub(l.count())));
        l.reset();
        if self.spare_tx.try_send(l).is_err() {
            let _ = self.sets.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

/// Where and how often the stats thread writes the interval log.
#[derive(Debug, Clone)]
pub struct IntervalLogSettings {
    pub path: PathBuf,
    pub every: Duration,
}

/// The interval log opened for a [`StatsThread`], and when statistics started.
pub struct OpenedLog {
    started: SystemTime,
    log: Option<(crate::observe::hlog::IntervalLog, IntervalLogSettings)>,
}

/// The stats thread: merges the workers' intervals into the cumulative histograms and writes
/// the interval log. Dropping it drains what is left, writes the last interval and joins.
pub struct StatsThread {
    cumulative: Arc<Mutex<Latencies>>,
    pub started: SystemTime,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatsThread {
    /// Opens (creates or truncates) the interval log, if there is one: before the privilege drop,
    /// as an operator's log directory may be root's.
    pub fn open_log(log: Option<IntervalLogSettings>) -> anyhow::Result<OpenedLog> {
        use anyhow::Context;
        let started = SystemTime::now();
        let log = match log {
            Some(s) => {
                let file = crate::observe::hlog::IntervalLog::create(&s.path, started)
                    .with_context(|| format!("interval log {}", s.path.display()))?;
                Some((file, s))
            }
            None => None,
        };
        Ok(OpenedLog { started, log })
    }

    /// Starts the thread over `workers`, writing to the log [`StatsThread::open_log`] opened.
    pub fn spawn(workers: Vec<Arc<WorkerStats>>, opened: OpenedLog) -> anyhow::Result<Self> {
        let OpenedLog { started, log } = opened;
        let cumulative = Arc::new(Mutex::new(Latencies::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (cumulative, stop) = (Arc::clone(&cumulative), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sluice-stats".into())
                .spawn(move || stats_loop(&workers, &cumulative, log, &stop))?
        };
        Ok(Self { cumulative, started, stop, thread: Some(thread) })
    }

    /// A copy of the cumulative histograms.
    pub fn latencies(&self) -> Latencies {
        self.cumulative.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The shared cumulative histograms (for readers that outlive a borrow of `self`).
    pub fn cumulative(&self) -> Arc<Mutex<Latencies>> {
        Arc::clone(&self.cumulative)
    }
}

impl Drop for StatsThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stats_loop(
    workers: &[Arc<WorkerStats>],
    cumulative: &Mutex<Latencies>,
    mut log: Option<(crate::observe::hlog::IntervalLog, IntervalLogSettings)>,
    stop: &AtomicBool,
) {
    let mut interval = Latencies::default();
    let mut interval_start = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        for w in workers {
            while let Some(l) = w.take_interval() {
                cumulative.lock().unwrap_or_else(|e| e.into_inner()).merge(&l);
                if log.is_some() {
                    interval.merge(&l);
                }
                w.recycle(l);
            }
        }
        if let Some((file, settings)) = &mut log
            && (stopping || interval_start.elapsed() >= settings.every)
        {
            let now = Instant::now();
            if let Err(e) = file.append(&interval, interval_start, now) {
                tracing::warn!(path = %settings.path.display(), "interval log: {e}");
            }
            interval.reset();
            interval_start = now;
        }
        if stopping {
            return;
        }
        std::thread::sleep(DRAIN_PERIOD);
    }
}

/// The admin endpoint's source for any transport: each request fills a [`Snapshot`] with
/// `fill` (transport, XDP counters, session caches), then the workers' counters, then the
/// stats thread's histograms (in that order, so that `latency_pending == 0` means the
/// histograms hold everything the counters count).
pub fn admin_source(
    thread: &StatsThread,
    workers: Vec<Arc<WorkerStats>>,
    fill: impl Fn(&mut Snapshot) + Send + Sync + 'static,
) -> StatsSource {
    let (cumulative, started) = (thread.cumulative(), thread.started);
    Arc::new(move || {
        let mut s = Snapshot::default();
        fill(&mut s);
        s.queues = workers.iter().map(|w| w.snapshot()).collect();
        s.latencies = cumulative.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.started = Some(started);
        s
    })
}

/// Everything the admin endpoint exports, taken at one request.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `xdp` (AF_XDP queues and sluice's TCP) or `kernel` (kernel sockets).
    pub transport: &'static str,
    /// The XDP program's mode and per-outcome counters (empty for a kernel-socket transport).
    pub xdp_mode: String,
    pub xdp: Vec<(&'static str, u64)>,
    /// The sum of the XDP program's `pass_truncated_*` and `pass_malformed_*` outcomes.
    pub xdp_pass_malformed: u64,
    /// One entry per worker.
    pub queues: Vec<Published>,
    /// Cumulative histograms merged over the workers.
    pub latencies: Latencies,
    /// Session caches by listener address.
    pub session_caches: Vec<(String, sluice_tls::CacheStats)>,
    /// When the stats started (the interval log's StartTime), and how long ago.
    pub started: Option<SystemTime>,
    /// More top-level members of `/stats.json` (reloads, backend pools).
    pub extra: Vec<(&'static str, Value)>,
}

impl Snapshot {
    /// The body of `/stats.json`.
    pub fn json(&self) -> Value {
        let mut xdp: Map<String, Value> = self.xdp.iter().map(|(n, v)| ((*n).to_owned(), (*v).into())).collect();
        if !self.xdp.is_empty() {
            xdp.insert("pass_malformed".into(), self.xdp_pass_malformed.into());
        }
        let xdp =
            if self.xdp_mode.is_empty() { Value::Null } else { json!({ "mode": self.xdp_mode, "counters": xdp }) };
        let mut v = json!({
            "transport": self.transport,
            "xdp": xdp,
            "queues": self.queues,
            "latency": crate::observe::latency::json(&self.latencies),
            "session_caches": self.session_caches.iter().map(|(addr, s)| json!({
                "listener": addr,
                "hits": s.hits, "misses": s.misses, "inserts": s.inserts, "rejected": s.rejected,
                "evicted_capacity": s.evicted_capacity, "evicted_bytes": s.evicted_bytes,
                "evicted_expired": s.evicted_expired, "entries": s.entries, "bytes": s.bytes,
                "policy_mismatch": s.policy_mismatch,
            })).collect::<Vec<_>>(),
        });
        for (name, value) in &self.extra {
            v[*name] = value.clone();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_json_shape() {
        let s = Stats { retransmits_rto: 4, drops: [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], ..Stats::default() };
        let v = crate::observe::counters::tcp_json(&s);
        assert_eq!(v["retransmits_rto"], 4);
        assert_eq!(v["segments_in"], 0);
        assert_eq!(v["drops"]["invalid_sequence"], 1);
        assert_eq!(v["drops"]["paws"], 2);
        assert_eq!(v["drops"]["after_fin"], 3);
        assert_eq!(v.as_object().unwrap().len(), s.iter().count() + 1);
        assert_eq!(v["drops"].as_object().unwrap().len(), sluice_tcp::DropReason::COUNT);
    }

    fn record(l: &mut Latencies, n: u64) {
        for i in 0..n {
            crate::observe::latency::record(&mut l.tls13_full, Duration::from_micros(100 + i));
        }
    }

    /// Hand-offs move every count exactly once, never block, and reuse a bounded set of sets.
    #[test]
    fn handoff_moves_every_count_once_and_recycles() {
        let w = WorkerStats::default();
        let mut current = Latencies::default();
        assert!(!w.send_interval(&mut current), "nothing recorded: nothing to hand off");
        let mut recorded = 0;
        let mut received = Latencies::default();
        for round in 0..20u64 {
            record(&mut current, round + 1);
            recorded += round + 1;
            // Pretend the period passed.
            w.last_handoff_us.store(NEVER, Ordering::Relaxed);
            let sent = w.send_interval(&mut current);
            if sent {
                assert!(current.is_empty());
            }
            // The stats thread drains only every other round: the channel fills up meanwhile.
            if round % 3 == 2 {
                while let Some(l) = w.take_interval() {
                    received.merge(&l);
                    w.recycle(l);
                }
            }
            assert!(w.sets.load(Ordering::Relaxed) <= SETS_PER_WORKER);
        }
        w.last_handoff_us.store(NEVER, Ordering::Relaxed);
        while let Some(l) = w.take_interval() {
            received.merge(&l);
            w.recycle(l);
        }
        record(&mut current, 5);
        recorded += 5;
        w.send_interval(&mut current); // too soon: stays unsent
        assert_eq!(w.pending(), 5);
        w.finish(&mut current);
        assert!(current.is_empty());
        assert_eq!(w.pending(), 5);
        while let Some(l) = w.take_interval() {
            received.merge(&l);
            w.recycle(l);
        }
        assert_eq!(received.tls13_full.len(), recorded);
        assert_eq!(w.pending(), 0);
    }

    #[test]
    fn handoff_waits_for_the_period() {
        let w = WorkerStats::default();
        let mut current = Latencies::default();
        record(&mut current, 1);
        w.last_handoff_us.store(NEVER, Ordering::Relaxed);
        assert!(w.send_interval(&mut current));
        record(&mut current, 1);
        assert!(!w.send_interval(&mut current), "too soon after the last hand-off");
        assert_eq!(current.tls13_full.len(), 1);
    }

    #[test]
    fn stats_thread_merges_and_drains_on_drop() {
        let workers: Vec<Arc<WorkerStats>> = (0..2).map(|_| Arc::default()).collect();
        let dir = std::env::temp_dir().join(format!("sluice-stats-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.hlog");
        let log = Some(IntervalLogSettings { path: path.clone(), every: Duration::from_secs(3600) });
        let t = StatsThread::spawn(workers.clone(), StatsThread::open_log(log).unwrap()).unwrap();
        for w in &workers {
            let mut l = Latencies::default();
            record(&mut l, 10);
            w.last_handoff_us.store(NEVER, Ordering::Relaxed);
            assert!(w.send_interval(&mut l));
        }
        let cumulative = t.cumulative();
        drop(t); // drains, writes the last interval
        assert_eq!(cumulative.lock().unwrap().tls13_full.len(), 20);
        let text = std::fs::read(&path).unwrap();
        let totals = crate::observe::hlog::read_totals(&text).unwrap();
        assert_eq!(totals.get("tls13_handshake_full"), Some(&20));
        assert_eq!(totals.get("tcp_handshake"), Some(&0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
