//! Starting, reloading and stopping sluice, for either transport: read the keys, let the
//! transport set itself up ([`crate::datapath::Transport`]: XDP attached and a socket per queue,
//! or listening sockets), start the stats thread and the admin endpoint, drop privileges, run
//! the workers on pinned threads; then SIGHUP reloads the configuration, SIGTERM or SIGINT
//! drains (a second one stops at once), and at the end the XDP program is detached.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_tcp::FourTuple;

use crate::config::{Config, DrainNew, Transport as TransportKind};
use crate::datapath::xdp::loader;
use crate::datapath::{Control, Controls, Services, Transport, Worker};
use crate::observe::admin::AdminServer;
use crate::observe::stats::SharedCounters;
use crate::observe::stats::{Snapshot, StatsThread};
use crate::session::FleetListener;
use crate::session::backend::{ListenerBackends, Pool, Route};
use crate::session::fleet::{FleetSettings, WriteQueue};

pub mod keyholder;
pub mod privileges;

/// Runs sluice with `config`, read from `config_path` (relative certificate paths are taken
/// from its directory; SIGHUP reads it again), on the transport it names.
pub fn run(config: Config, config_path: &Path) -> Result<()> {
    let config_dir = config_path.parent().unwrap_or(Path::new(""));
    // Workers stop when this is set (after a drain, or at once on a second signal).
    let stop = Arc::new(AtomicBool::new(false));
    // Certificates and keys first: a broken one stops sluice before anything is attached.
    let session_caches: SessionCaches = Default::default();
    let (services, health_checks) = services(&config, config_dir, &sluice_tls::Disk, &session_caches)?;
    let l = services.limits;
    tracing::info!(
        memory = l.memory.unwrap_or(0),
        max_connections = l.max_connections.unwrap_or(0),
        max_connections_per_worker = l.max_connections_per_worker,
        max_connections_per_client = l.max_connections_per_client,
        "connection limits ([limits]; 0: none)"
    );
    let transport = match config.datapath.transport {
        TransportKind::Kernel => crate::datapath::kernel::prepare(&config, &services)?,
        TransportKind::Xdp => crate::datapath::xdp::prepare(&config, &services)?,
    };
    let Transport { name, workers: bodies, controls, attached, keep } = transport;

    // Everything privileged is done: XDP attached, sockets open, keys read; the admin socket is
    // bound next. Privileges are dropped before any other thread starts, so every thread runs
    // with the dropped user, no capability and no_new_privs. Reloads read keys through the
    // keyholder (started while still privileged).
    let admin_listener = AdminServer::bind(config.admin.address)?;
    let stats_log = StatsThread::open_log(
        config
            .stats
            .interval_log()
            .map(|l| crate::observe::stats::IntervalLogSettings { path: config_dir.join(&l.path), ..l }),
    )?;
    let keyholder = match &config.process.user {
        Some(user) => {
            let keyholder = keyholder::Keyholder::spawn(config_path)?;
            let dropped = privileges::drop_to(user, config.process.group.as_deref(), keep)?;
            tracing::info!(user = %dropped.user, uid = dropped.uid, gid = dropped.gid, kept = ?dropped.kept, keyholder = keyholder.pid(), "privileges dropped");
            Some(keyholder)
        }
        None => None,
    };
    health_checks.start()?;

    let shared_counters: Vec<SharedCounters> = (0..bodies.len()).map(|_| SharedCounters::default()).collect();
    let reloads = Arc::new(Mutex::new(ReloadStats::default()));
    // The backend pools /stats.json shows: a reload stores its new pools here (the old ones,
    // once no worker holds them, are dropped and their health checkers end).
    let backend_view = Arc::new(Mutex::new(services.backends.clone()));
    let stats_thread = StatsThread::spawn(shared_counters.clone(), stats_log)?;
    let stats = {
        let (attached, caches) = (attached.clone(), Arc::clone(&session_caches.by_listener));
        let (reloads, backends) = (Arc::clone(&reloads), Arc::clone(&backend_view));
        crate::observe::stats::admin_source(&stats_thread, shared_counters.clone(), move |s| {
            snapshot(attached.as_deref(), &caches.lock().unwrap_or_else(|e| e.into_inner()), s);
            let reloads = serde_json::to_value(&*reloads.lock().unwrap_or_else(|e| e.into_inner()));
            s.extra.push(("reloads", reloads.unwrap_or_default()));
            let backends = backends.lock().unwrap_or_else(|e| e.into_inner());
            let backends = backends.iter().map(|(addr, b)| {
                let mut j = b.json();
                j["listener"] = addr.to_string().into();
                j
            });
            s.extra.push(("backends", backends.collect()));
        })
    };
    let admin_stop = Arc::new(AtomicBool::new(false));
    let admin = AdminServer::spawn(admin_listener, stats, config.admin.token.clone(), Arc::clone(&admin_stop))?;
    tracing::info!(address = %admin.local_addr, "admin endpoint serving /metrics, /stats.json, /histograms/");

    let clock = std::time::Instant::now();
    let cores =
        if config.datapath.pin_workers { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    // Test hook (integration tests only): the first worker dies after this many milliseconds
    // instead of serving, to prove that a dead worker stops sluice.
    let die_after = std::env::var("SLUICE_TEST_WORKER_DIES_AFTER_MS").ok().and_then(|v| v.parse().ok());
    let mut workers = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let worker = Worker { shared: Arc::clone(&shared_counters[i]), clock, stop: Arc::clone(&stop) };
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let spawned = std::thread::Builder::new().name(format!("sluice-{name}{i}")).spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            if let Some(ms) = die_after.filter(|_| i == 0) {
                std::thread::sleep(Duration::from_millis(ms));
                panic!("SLUICE_TEST_WORKER_DIES_AFTER_MS: worker {i} dies");
            }
            body(worker)
        });
        match spawned {
            Ok(t) => workers.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e).context("spawning a worker");
            }
        }
    }

    let mut supervisor = Supervisor {
        config,
        config_path: config_path.to_path_buf(),
        session_caches,
        attached: attached.clone(),
        controls,
        shared_counters,
        reloads,
        backend_view,
        retiring: Vec::new(),
        keyholder,
    };
    let served = supervisor.serve(&stop, &workers);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if w.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    drop(stats_thread); // takes the workers' last intervals, writes the last log interval
    admin_stop.store(true, Ordering::Relaxed);
    drop(admin);
    drop(supervisor);
    if attached.is_some() {
        drop(attached); // detaches the XDP program
        tracing::info!("XDP program detached");
    }
    tracing::info!("bye");
    served
}

/// Validates `config` (read from `config_path`) as a start would, attaching nothing: the user
/// to switch to, and every listener's certificates, keys and TLS settings.
pub fn check(config: &Config, config_path: &Path) -> Result<()> {
    if let Some(user) = &config.process.user {
        privileges::check(user, config.process.group.as_deref())?;
    }
    let config_dir = config_path.parent().unwrap_or(Path::new(""));
    // Built and dropped: the health checks are not started.
    let _built = services(config, config_dir, &sluice_tls::Disk, &Default::default())?;
    Ok(())
}

/// Reloads so far, for `/stats.json`.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadStats {
    ok: u64,
    refused: u64,
    /// Why the last refused reload was refused.
    last_error: Option<String>,
}

/// The main thread once workers run, for either transport: reacts to signals (SIGHUP reloads;
/// SIGTERM and SIGINT drain, a second one stops at once) and finishes listener removals.
pub(crate) struct Supervisor {
    pub config: Config,
    pub config_path: PathBuf,
    pub session_caches: SessionCaches,
    /// The XDP program (none with the kernel transport).
    pub attached: Option<Arc<Mutex<loader::Attached>>>,
    pub controls: Controls,
    pub shared_counters: Vec<SharedCounters>,
    pub reloads: Arc<Mutex<ReloadStats>>,
    /// The backend pools /stats.json shows.
    pub backend_view: Arc<Mutex<HashMap<SocketAddr, Arc<crate::session::backend::ListenerBackends>>>>,
    /// Listeners a reload removed, draining in the XDP program until then, with their flows.
    pub retiring: Vec<(SocketAddr, std::time::Instant, Vec<FourTuple>)>,
    /// Reads the configuration and its keys for a reload once sluice runs unprivileged.
    pub keyholder: Option<keyholder::Keyholder>,
}

impl Supervisor {
    /// Runs until sluice should stop: a drain finished or timed out, or a second signal came.
    /// A worker that ends before it is told to (a panic, a fatal error) stops sluice with an
    /// error, at once: its queue would go unserved while the XDP program still steers to it.
    pub fn serve(&mut self, stop: &AtomicBool, workers: &[std::thread::JoinHandle<()>]) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]).context("installing signal handlers")?;
        let mut drain_deadline: Option<std::time::Instant> = None;
        loop {
            for signal in signals.pending() {
                match signal {
                    SIGHUP if drain_deadline.is_none() => self.reload(),
                    SIGHUP => tracing::warn!("SIGHUP while draining: ignored"),
                    _ if drain_deadline.is_some() => {
                        tracing::warn!("second stop signal: stopping now");
                        return Ok(());
                    }
                    _ => {
                        let deadline = Duration::from_millis(self.config.drain.deadline_ms);
                        tracing::info!(deadline_ms = deadline.as_millis() as u64, new_connections = ?self.config.drain.new_connections, "draining");
                        self.start_drain();
                        drain_deadline = Some(std::time::Instant::now() + deadline);
                    }
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if let Some(dead) = workers.iter().position(std::thread::JoinHandle::is_finished) {
                tracing::error!(worker = dead, "a worker ended unexpectedly: stopping sluice");
                bail!("worker {dead} ended unexpectedly (see the log above); sluice stopped so that it is restarted");
            }
            if let Some(deadline) = drain_deadline {
                let active = self.active_connections();
                if active == 0 {
                    tracing::info!("drained: every connection finished");
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(connections = active, "drain deadline passed: resetting the rest");
                    self.controls.broadcast(|_| Control::Abort);
                    // Let the workers send their RSTs.
                    std::thread::sleep(Duration::from_millis(200));
                    return Ok(());
                }
            }
            self.retire_listeners();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connections of every worker that still carry a conversation (TIME-WAIT not counted), as
    /// last published; a worker that has not published since the drain began counts as busy.
    fn active_connections(&self) -> u64 {
        self.shared_counters
            .iter()
            .map(|q| {
                let q = q.snapshot().queue;
                if q.draining == 1 { q.connections_active } else { 1 }
            })
            .sum()
    }

    fn start_drain(&mut self) {
        let Some(attached) = self.attached.clone() else {
            // Kernel sockets: the workers close their listening sockets; the kernel answers SYNs
            // (a RST, or a successor's listener takes them): both settings mean the same here.
            self.controls.broadcast(|_| Control::Drain(None));
            return;
        };
        if self.config.drain.new_connections == DrainNew::Reset {
            self.controls.broadcast(|_| Control::Drain(None));
            return;
        }
        // Pass: the workers stop accepting and name their flows; those keep reaching sluice,
        // everything else to the listeners goes to the kernel.
        let (tx, rx) = crossbeam_channel::unbounded();
        self.controls.broadcast(|_| Control::Drain(Some(tx.clone())));
        let flows = self.collect_flows(&rx);
        let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
        add_drain_flows(&mut attached, &flows);
        for addr in self.config.listeners.iter().flat_map(|l| l.socket_addrs()) {
            if let Err(e) = attached.drain_listener(addr) {
                tracing::error!(%addr, "drain: {e}");
            }
        }
    }

    /// Every worker's answer to a `Drain` or `Reload` order (a worker that does not answer
    /// within 5 s is reported).
    fn collect_flows(&self, rx: &crossbeam_channel::Receiver<Vec<FourTuple>>) -> Vec<FourTuple> {
        let mut flows = Vec::new();
        for _ in 0..self.controls.senders.len() {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(f) => flows.extend(f),
                Err(_) => tracing::error!("a worker did not answer within 5 s"),
            }
        }
        flows
    }

    /// SIGHUP: read the configuration file again and serve it, or keep serving the old one and
    /// say why.
    fn reload(&mut self) {
        let result = self.try_reload();
        let mut stats = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(summary) => {
                stats.ok += 1;
                tracing::info!("configuration reloaded: {summary}");
            }
            Err(e) => {
                stats.refused += 1;
                let why = format!("{e:#}");
                tracing::error!("reload refused, still serving the previous configuration: {why}");
                stats.last_error = Some(why);
            }
        }
    }

    fn try_reload(&mut self) -> Result<String> {
        let bundle = match &mut self.keyholder {
            Some(keyholder) => Some(keyholder.read()?),
            None => None,
        };
        let new = match &bundle {
            Some(bundle) => bundle.parse(&self.config_path)?,
            None => Config::load(&self.config_path)?,
        };
        let old = &self.config;
        for (section, same) in [
            ("datapath", new.datapath == old.datapath),
            ("admin", new.admin == old.admin),
            ("tcp", new.tcp == old.tcp),
            ("process", new.process == old.process),
            ("log", new.log.level == old.log.level && new.log.format == old.log.format),
        ] {
            if !same {
                bail!("{}: [{section}] changed; that needs a restart", self.config_path.display());
            }
        }
        let dir = self.config_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let files: &dyn sluice_tls::FileSource = match &bundle {
            Some(bundle) => bundle,
            None => &sluice_tls::Disk,
        };
        let (services, health_checks) = services(&new, &dir, files, &self.session_caches)?;
        drop(bundle);
        if self.attached.is_none() {
            let mine: Vec<_> = old.listeners.iter().flat_map(|l| l.socket_addrs()).collect();
            crate::datapath::kernel::probe_listeners(&new, &mine)?;
        }
        let old_addrs: Vec<_> = old.listeners.iter().flat_map(|l| l.socket_addrs()).collect();
        let new_addrs: Vec<_> = new.listeners.iter().flat_map(|l| l.socket_addrs()).collect();
        // All or nothing: what can still fail (the XDP program's listener map is bounded) is
        // done before any worker switches, and undone if it fails. A SYN to a new listener that
        // reaches a worker before its reload order is dropped and counted; the client's SYN
        // retransmission finds it listening.
        let added: Vec<_> = new_addrs.iter().filter(|a| !old_addrs.contains(a)).copied().collect();
        if let Some(attached) = &self.attached {
            let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
            for (i, addr) in added.iter().enumerate() {
                if let Err(e) = attached.add_listener(*addr) {
                    for done in &added[..i] {
                        let retiring = self.retiring.iter().any(|(a, _, _)| a == done);
                        let undone =
                            if retiring { attached.drain_listener(*done) } else { attached.remove_listener(*done) };
                        if let Err(e) = undone {
                            tracing::error!(addr = %done, "undoing a listener of a refused reload: {e}");
                        }
                    }
                    bail!("listener {addr}: {e}; no worker switched");
                }
            }
        }
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        health_checks.start()?;
        self.controls.broadcast(|_| Control::Reload(Box::new(services.clone()), done_tx.clone()));
        let flows = self.collect_flows(&done_rx);
        *self.backend_view.lock().unwrap_or_else(|e| e.into_inner()) = services.backends.clone();
        let Some(attached) = self.attached.clone() else {
            let summary = format!("{} listeners", new.listeners.len());
            self.config = new;
            return Ok(summary);
        };
        let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
        self.retiring.retain(|(a, _, _)| !added.contains(a));
        let removed_addrs: Vec<_> = old_addrs.iter().filter(|a| !new_addrs.contains(a)).collect();
        // A removed listener's connections finish (their flows still reach sluice); everything
        // else to it goes to the kernel; at the drain deadline it is gone.
        add_drain_flows(&mut attached, &flows);
        let until = std::time::Instant::now() + Duration::from_millis(new.drain.deadline_ms);
        for addr in &removed_addrs {
            // An update of an entry the map holds: cannot run out of room.
            if let Err(e) = attached.drain_listener(**addr) {
                tracing::error!(%addr, "draining a removed listener: {e}");
            }
            let mine = flows.iter().filter(|t| t.local == **addr).copied().collect();
            self.retiring.push((**addr, until, mine));
        }
        drop(attached);
        let summary =
            format!("{} listeners ({} added, {} removed)", new.listeners.len(), added.len(), removed_addrs.len());
        self.config = new;
        Ok(summary)
    }

    /// Removed listeners whose time is up leave the XDP program's listener map.
    fn retire_listeners(&mut self) {
        let now = std::time::Instant::now();
        if !self.retiring.iter().any(|(_, t, _)| *t <= now) {
            return;
        }
        let Some(attached) = &self.attached else { return };
        let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
        self.retiring.retain(|(addr, until, flows)| {
            if *until > now {
                return true;
            }
            if let Err(e) = attached.remove_listener(*addr) {
                tracing::error!(%addr, "removing a retired listener: {e}");
            }
            for t in flows {
                let _ = attached.remove_drain_flow(t.remote, t.local.port());
            }
            false
        });
    }
}

/// The XDP program's counters (none on kernel sockets) and the session caches' (the workers'
/// and the latencies are added by [`crate::observe::stats::admin_source`]).
fn snapshot(
    attached: Option<&Mutex<loader::Attached>>,
    caches: &HashMap<SocketAddr, Arc<sluice_tls::SessionCache>>,
    s: &mut Snapshot,
) {
    s.transport = if attached.is_some() { "xdp" } else { "kernel" };
    match attached.map(Mutex::lock) {
        None => {}
        Some(Ok(a)) => {
            s.xdp_mode = a.mode().as_str().to_owned();
            if let Ok(c) = a.counters() {
                s.xdp = c.iter().collect();
                s.xdp_pass_malformed = c.pass_malformed();
            }
        }
        Some(Err(_)) => s.xdp_mode = "unknown".to_owned(),
    }
    s.session_caches = caches.iter().map(|(addr, c)| (addr.to_string(), c.stats())).collect();
}

/// Keeps `flows` steered to sluice while their listeners drain.
fn add_drain_flows(attached: &mut loader::Attached, flows: &[FourTuple]) {
    let mut failed = 0;
    for t in flows {
        if attached.add_drain_flow(t.remote, t.local.port()).is_err() {
            failed += 1;
        }
    }
    if failed > 0 {
        tracing::error!(failed, "drain: flows that did not fit the XDP program's map go to the kernel (reset)");
    }
}

/// The TLS listeners' session caches, kept across reloads (by listener address), and the queue
/// of sessions on their way to a fleet's store (the same across reloads too).
#[derive(Clone)]
pub struct SessionCaches {
    pub by_listener: Arc<Mutex<HashMap<std::net::SocketAddr, Arc<sluice_tls::SessionCache>>>>,
    pub writes: Arc<WriteQueue>,
}

impl Default for SessionCaches {
    fn default() -> Self {
        Self { by_listener: Default::default(), writes: WriteQueue::new(crate::session::fleet::WRITE_QUEUE) }
    }
}

/// What the workers serve, built from `config`: the listeners, a TLS ServerConfig per TLS
/// listener (its session cache taken from `caches`, or made and added there), the relay settings,
/// and the backend pools' health checks to start. Certificates and keys are read from `files`;
/// any error names the listener.
pub fn services(
    config: &Config,
    config_dir: &std::path::Path,
    files: &dyn sluice_tls::FileSource,
    caches: &SessionCaches,
) -> Result<(Services, HealthChecks)> {
    let listeners: HashMap<_, _> =
        config.listeners.iter().flat_map(|l| l.socket_addrs().into_iter().map(|a| (a, l.mode()))).collect();
    let mut tls = HashMap::new();
    let fleet = match &config.session_store {
        Some(store) => {
            let path = config_dir.join(&store.key_file);
            let keys = files.read(&path).with_context(|| format!("session_store.key_file {}", path.display()))?;
            let settings = FleetSettings::new(store, &keys, Arc::clone(&caches.writes))?;
            Some(Arc::new(settings))
        }
        None => None,
    };
    let write_behind = fleet.as_ref().map(|_| Arc::clone(&caches.writes) as Arc<dyn sluice_tls::WriteBehind>);
    let mut fleet_listeners = HashMap::new();
    let mut caches = caches.by_listener.lock().unwrap_or_else(|e| e.into_inner());
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(settings) = &l.tls {
            // Kept across reloads, so that sessions resume after one (if the TLS policy stays:
            // see `sluice_tls::PolicyStore`); new bounds make a new, empty cache.
            let wanted = settings.session_cache_config();
            // One configuration and cache per section, kept under its first address: a section
            // naming both families resumes IPv4 sessions over IPv6 and back.
            let addrs = l.socket_addrs();
            let Some(first) = addrs.first() else { continue };
            let cache = caches
                .entry(*first)
                .and_modify(|c| {
                    if c.config() != wanted {
                        *c = new_session_cache(wanted);
                    }
                })
                .or_insert_with(|| new_session_cache(wanted))
                .clone();
            let shared = settings.resumption == sluice_tls::Resumption::SessionId;
            cache.set_write_behind(write_behind.clone().filter(|_| shared));
            let in_fleet =
                (fleet.is_some() && shared).then(|| FleetListener { cache: Arc::clone(&cache), tls13: settings.tls13 });
            let server = sluice_tls::build_with(settings, config_dir, files, cache)
                .with_context(|| format!("listener[{i}] ({})", l.address))?;
            for a in addrs {
                tls.insert(a, Arc::clone(&server));
                if let Some(f) = &in_fleet {
                    fleet_listeners.insert(a, f.clone());
                }
            }
        }
    }
    let (backends, checks) = backend_pools(config);
    let services = Services {
        listeners,
        tls,
        relay: config.relay.clone(),
        limits: config.limits.resolved(crate::session::limits::memory_available()),
        access_log: config.log.access_log,
        backends,
        fleet,
        fleet_listeners,
    };
    Ok((services, checks))
}

fn new_session_cache(config: sluice_tls::SessionCacheConfig) -> Arc<sluice_tls::SessionCache> {
    sluice_tls::SessionCache::new(config, Arc::new(sluice_tls::rustls::time_provider::DefaultTimeProvider))
}

/// The backend pools of the relay listeners (and their routes), and their health checks, not
/// started yet ([`HealthChecks::start`]: after the privilege drop, so that their threads have
/// the dropped privileges too). A checker ends once its pool is dropped (a reload that replaces
/// the pools stops the old checkers).
fn backend_pools(config: &Config) -> (HashMap<std::net::SocketAddr, Arc<ListenerBackends>>, HealthChecks) {
    let epoch = std::time::Instant::now();
    let (mut out, mut checks) = (HashMap::new(), HealthChecks::default());
    for l in &config.listeners {
        let addrs = l.backend_addrs();
        if addrs.is_empty() {
            continue;
        }
        let cooldown = Duration::from_millis(l.cooldown_ms);
        let mut pool = |addrs: &[std::net::SocketAddr]| -> Arc<Pool> {
            let pool = Arc::new(Pool::new(addrs, l.balance, cooldown, epoch));
            if let Some(h) = &l.health_check {
                let (interval, timeout) = (Duration::from_millis(h.interval_ms), Duration::from_millis(h.timeout_ms));
                checks.0.push((Arc::clone(&pool), interval, timeout));
            }
            pool
        };
        let mut routes = Vec::new();
        for r in &l.routes {
            routes.push(Route {
                sni: r.sni.clone(),
                alpn: r.alpn.as_ref().map(|a| a.as_bytes().to_vec()),
                pool: pool(&crate::config::Listener::route_addrs(r)),
            });
        }
        let backends = ListenerBackends { default: pool(&addrs), routes, proxy_protocol: l.proxy_protocol };
        let backends = Arc::new(backends);
        for a in l.socket_addrs() {
            out.insert(a, Arc::clone(&backends));
        }
    }
    (out, checks)
}

/// Health checks of backend pools, to start once sluice runs unprivileged.
#[derive(Default)]
#[must_use = "health checks run only once started"]
pub struct HealthChecks(Vec<(Arc<Pool>, Duration, Duration)>);

impl HealthChecks {
    /// Starts a checker thread per pool.
    pub fn start(self) -> Result<()> {
        for (pool, interval, timeout) in self.0 {
            pool.spawn_health_check(interval, timeout).context("starting a backend health check thread")?;
        }
        Ok(())
    }
}
