//! Starting, reloading and stopping sluice: read the keys, attach XDP, open a socket per queue,
//! serve the admin endpoint, drop privileges, spawn the workers; then SIGHUP reloads the
//! configuration, SIGTERM or SIGINT drains (a second one stops at once), and at the end the
//! XDP program is detached.
//!
//! Order matters at start: every queue's socket is in the XSKMAP before any listener is in the
//! listener map, so no listener frame is ever redirected to a queue without a socket (which the
//! kernel would answer with its own RST).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_xsk::{BindMode, Socket, XskConfig};

use crate::admin::AdminServer;
use crate::backend::{ListenerBackends, Pool, Route};
use crate::config::{Config, DrainNew, XdpModeSetting};
use crate::loader::{self, Loader, XdpMode};
use crate::config::Congestion;
use crate::stats::{Snapshot, StatsThread};
use crate::worker::{self, Dispatch, SharedCounters};
use sluice_tcp::FourTuple;

/// Runs sluice with `config`, read from `config_path` (relative certificate paths are taken
/// from its directory; SIGHUP reads it again).
pub fn run(config: Config, config_path: &Path) -> Result<()> {
    let config_dir = config_path.parent().unwrap_or(Path::new(""));
    // Workers stop when this is set (after a drain, or at once on a second signal).
    let stop = Arc::new(AtomicBool::new(false));
    if config.datapath.transport == crate::config::Transport::Kernel {
        return crate::kernel::run(&config, config_path, stop);
    }
    let d = &config.datapath;
    let mode = match d.xdp_mode {
        XdpModeSetting::Auto => XdpMode::Auto,
        XdpModeSetting::Native => XdpMode::Native,
        XdpModeSetting::Skb => XdpMode::Skb,
    };
    let queues = loader::queue_count(&d.interface)?;
    let queues = u32::try_from(queues).context("queue count")?;
    if let Some(wanted) = d.queues
        && wanted != queues
    {
        bail!(
            "datapath.queues = {wanted} but {} has {queues} RX queues: every queue needs a socket \
             (or the kernel answers sluice's flows); set queues = {queues} or change the NIC's \
             queues with `ethtool -L`",
            d.interface
        );
    }
    // Certificates and keys first: a broken one stops sluice before anything is attached.
    let session_caches: SessionCaches = Default::default();
    let services = services(&config, config_dir, &session_caches)?;
    let mut attached = Loader::attach(&d.interface, mode, d.force)?;
    tracing::info!(
        interface = %d.interface,
        mode = attached.mode().as_str(),
        load_ms = attached.load_time().as_millis() as u64,
        "XDP program attached"
    );

    let xsk_config = XskConfig {
        frame_size: d.frame_size,
        frame_count: d.frames_per_queue,
        headroom: 0,
        fill_size: d.fill_ring,
        comp_size: d.completion_ring,
        rx_size: d.rx_ring,
        tx_size: d.tx_ring,
        tx_reserve: d.tx_ring.min(d.frames_per_queue - d.fill_ring),
        mode: if d.zero_copy { BindMode::Auto } else { BindMode::Copy },
    };
    let mut sockets = Vec::new();
    for q in 0..queues {
        let (sock, info) = Socket::new(&d.interface, q, &xsk_config)
            .with_context(|| format!("AF_XDP socket on {} queue {q}", d.interface))?;
        if let Some(why) = &info.zero_copy_refused {
            tracing::info!(queue = q, "zero-copy refused, using copy mode: {why}");
        }
        tracing::info!(queue = q, mode = %sock.mode(), "AF_XDP socket bound");
        attached.register_xsk(q, sock.as_fd())?;
        sockets.push(sock);
    }
    let listeners: Vec<_> = config.listeners.iter().map(|l| l.socket_addr()).collect();
    for addr in &listeners {
        attached.add_listener(*addr.ip(), addr.port())?;
        tracing::info!(%addr, "listening");
    }

    let local_mac = interface_mac(&d.interface)?;
    let tcp_config = tcp_config(&config, &d.interface)?;
    let workers_n = sockets.len();
    let (inboxes, peers, controls) = worker::inboxes(workers_n, 8192)?;
    let conn_counts = Arc::new(crate::limits::ConnCounts::default());
    let flows = Arc::new(crate::flows::FlowIndex::new(workers_n * tcp_config.max_connections));
    // Each relay holds one descriptor (its backend socket).
    let max_relays = descriptor_budget(workers_n, 1);
    let attached = Arc::new(Mutex::new(attached));
    let shared_counters: Vec<SharedCounters> = (0..workers_n).map(|_| SharedCounters::default()).collect();
    let reloads = Arc::new(Mutex::new(ReloadStats::default()));
    // The backend pools /stats.json shows: a reload stores its new pools here (the old ones,
    // once no worker holds them, are dropped and their health checkers end).
    let backend_view = Arc::new(Mutex::new(services.backends.clone()));
    let stats_thread = StatsThread::spawn(
        shared_counters.clone(),
        config.stats.interval_log().map(|l| crate::stats::IntervalLogSettings { path: config_dir.join(&l.path), ..l }),
    )?;
    let stats = {
        let (attached, caches) = (Arc::clone(&attached), Arc::clone(&session_caches));
        let (reloads, backends) = (Arc::clone(&reloads), Arc::clone(&backend_view));
        crate::stats::admin_source(&stats_thread, shared_counters.clone(), move |s| {
            snapshot(&attached, &caches.lock().unwrap_or_else(|e| e.into_inner()), s);
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
    let admin = AdminServer::spawn(config.admin.address, stats, Arc::clone(&admin_stop))?;
    tracing::info!(address = %admin.local_addr, "admin endpoint serving /metrics, /stats.json, /histograms/");

    // Everything privileged is done: XDP attached, sockets open, keys read, admin bound.
    if let Some(user) = &config.process.user {
        let dropped = crate::privileges::drop_to(user, config.process.group.as_deref(), &[])?;
        tracing::info!(user = %dropped.user, uid = dropped.uid, gid = dropped.gid, kept = ?dropped.kept, "privileges dropped");
    }

    let clock = std::time::Instant::now();
    let cores = if config.datapath.pin_workers { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let mut workers = Vec::new();
    for (i, (sock, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
        let shared = Arc::clone(&shared_counters[i]);
        let endpoint = sluice_tcp::Endpoint::new(tcp_config.clone(), sluice_tcp::Instant::ZERO);
        let mut dispatch = Dispatch::new(
            i,
            Arc::clone(&flows),
            services.clone(),
            Arc::clone(&conn_counts),
            d.verify_checksums,
            endpoint,
            local_mac,
        )?;
        dispatch.busy_poll = Duration::from_micros(d.busy_poll_us);
        dispatch.max_relays = max_relays;
        let (stop, peers) = (Arc::clone(&stop), peers.clone());
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        workers.push(std::thread::Builder::new().name(format!("sluice-q{i}")).spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            worker::run(sock, dispatch, inbox, peers, shared, clock, stop)
        })?);
    }

    let mut supervisor = Supervisor {
        config,
        config_path: config_path.to_path_buf(),
        session_caches,
        attached: Some(Arc::clone(&attached)),
        controls,
        shared_counters,
        reloads,
        backend_view,
        retiring: Vec::new(),
    };
    supervisor.serve(&stop)?;
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
    drop(attached); // detaches the XDP program
    tracing::info!("XDP program detached; bye");
    Ok(())
}

/// Raises the descriptor limit and returns how many connections, each holding `per_connection`
/// descriptors, one of `workers` may hold; logs both.
pub(crate) fn descriptor_budget(workers: usize, per_connection: u64) -> usize {
    let (limit, before) = crate::limits::raise_descriptor_limit();
    let per_worker = crate::limits::connections_per_worker(limit, workers, per_connection);
    tracing::info!(
        limit,
        raised_from = before,
        connections_per_worker = per_worker,
        "descriptors (RLIMIT_NOFILE): past this many connections a worker refuses new ones (refused_descriptors)"
    );
    usize::try_from(per_worker).unwrap_or(usize::MAX)
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
    pub controls: worker::Controls,
    pub shared_counters: Vec<SharedCounters>,
    pub reloads: Arc<Mutex<ReloadStats>>,
    /// The backend pools /stats.json shows.
    pub backend_view: Arc<Mutex<HashMap<SocketAddrV4, Arc<crate::backend::ListenerBackends>>>>,
    /// Listeners a reload removed, draining in the XDP program until then, with their flows.
    pub retiring: Vec<(SocketAddrV4, std::time::Instant, Vec<FourTuple>)>,
}

impl Supervisor {
    /// Runs until sluice should stop: a drain finished or timed out, or a second signal came.
    pub fn serve(&mut self, stop: &AtomicBool) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
            .context("installing signal handlers")?;
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
            if let Some(deadline) = drain_deadline {
                let active = self.active_connections();
                if active == 0 {
                    tracing::info!("drained: every connection finished");
                    return Ok(());
                }
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(connections = active, "drain deadline passed: resetting the rest");
                    self.controls.broadcast(|_| worker::Control::Abort);
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
            self.controls.broadcast(|_| worker::Control::Drain(None));
            return;
        };
        if self.config.drain.new_connections == DrainNew::Reset {
            self.controls.broadcast(|_| worker::Control::Drain(None));
            return;
        }
        // Pass: the workers stop accepting and name their flows; those keep reaching sluice,
        // everything else to the listeners goes to the kernel.
        let (tx, rx) = crossbeam_channel::unbounded();
        self.controls.broadcast(|_| worker::Control::Drain(Some(tx.clone())));
        let flows = self.collect_flows(&rx);
        let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
        add_drain_flows(&mut attached, &flows);
        for l in &self.config.listeners {
            let addr = l.socket_addr();
            if let Err(e) = attached.drain_listener(*addr.ip(), addr.port()) {
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
        let new = Config::load(&self.config_path)?;
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
        let services = services(&new, &dir, &self.session_caches)?;
        if self.attached.is_none() {
            crate::kernel::check(&new)?;
            let mine: Vec<_> = old.listeners.iter().map(|l| l.socket_addr()).collect();
            crate::kernel::probe_listeners(&new, &mine)?;
        }
        // Workers first, so that no SYN reaches a worker that does not listen yet.
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        self.controls.broadcast(|_| worker::Control::Reload(services.clone(), done_tx.clone()));
        let flows = self.collect_flows(&done_rx);
        *self.backend_view.lock().unwrap_or_else(|e| e.into_inner()) = services.backends.clone();
        let old_addrs: Vec<_> = old.listeners.iter().map(|l| l.socket_addr()).collect();
        let new_addrs: Vec<_> = new.listeners.iter().map(|l| l.socket_addr()).collect();
        let (mut added, mut removed) = (0, 0);
        let Some(attached) = self.attached.clone() else {
            let summary = format!("{} listeners", new.listeners.len());
            self.config = new;
            return Ok(summary);
        };
        let mut attached = attached.lock().unwrap_or_else(|e| e.into_inner());
        for addr in new_addrs.iter().filter(|a| !old_addrs.contains(a)) {
            attached.add_listener(*addr.ip(), addr.port())?;
            self.retiring.retain(|(a, _, _)| a != addr);
            added += 1;
        }
        // A removed listener's connections finish (their flows still reach sluice); everything
        // else to it goes to the kernel; at the drain deadline it is gone.
        add_drain_flows(&mut attached, &flows);
        let until = std::time::Instant::now() + Duration::from_millis(new.drain.deadline_ms);
        for addr in old_addrs.iter().filter(|a| !new_addrs.contains(a)) {
            attached.drain_listener(*addr.ip(), addr.port())?;
            let mine = flows.iter().filter(|t| t.local == *addr).copied().collect();
            self.retiring.push((*addr, until, mine));
            removed += 1;
        }
        drop(attached);
        let summary = format!("{} listeners ({added} added, {removed} removed)", new.listeners.len());
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
            if let Err(e) = attached.remove_listener(*addr.ip(), addr.port()) {
                tracing::error!(%addr, "removing a retired listener: {e}");
            }
            for t in flows {
                let _ = attached.remove_drain_flow(t.remote, t.local.port());
            }
            false
        });
    }
}

/// The XDP program's counters and the session caches' (the workers' and the latencies are
/// added by [`crate::stats::admin_source`]).
fn snapshot(
    attached: &Mutex<loader::Attached>,
    caches: &HashMap<SocketAddrV4, Arc<sluice_tls::SessionCache>>,
    s: &mut Snapshot,
) {
    s.transport = "xdp";
    match attached.lock() {
        Ok(a) => {
            s.xdp_mode = a.mode().as_str().to_owned();
            if let Ok(c) = a.counters() {
                s.xdp = c.iter().collect();
                s.xdp_pass_malformed = c.pass_malformed();
            }
        }
        Err(_) => s.xdp_mode = "unknown".to_owned(),
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

/// A TLS listener's session cache, kept across reloads (by listener address).
pub(crate) type SessionCaches = Arc<Mutex<HashMap<std::net::SocketAddrV4, Arc<sluice_tls::SessionCache>>>>;

/// What the workers serve, built from `config`: the listeners, a TLS ServerConfig per TLS
/// listener (its session cache taken from `caches`, or made and added there), the relay settings.
/// Certificates and keys are read here; any error names the listener.
pub fn services(config: &Config, config_dir: &std::path::Path, caches: &SessionCaches) -> Result<worker::Services> {
    let listeners: HashMap<_, _> = config.listeners.iter().map(|l| (l.socket_addr(), l.mode())).collect();
    let mut tls = HashMap::new();
    let mut caches = caches.lock().unwrap_or_else(|e| e.into_inner());
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(settings) = &l.tls {
            let cache = caches
                .entry(l.socket_addr())
                .or_insert_with(|| {
                    let clock = Arc::new(sluice_tls::rustls::time_provider::DefaultTimeProvider);
                    sluice_tls::SessionCache::new(settings.session_cache_config(), clock)
                })
                .clone();
            let server = sluice_tls::build(settings, config_dir, cache)
                .with_context(|| format!("listener[{i}] ({})", l.address))?;
            tls.insert(l.socket_addr(), server);
        }
    }
    Ok(worker::Services {
        listeners,
        tls,
        relay: config.relay.clone(),
        limits: config.limits,
        access_log: config.log.access_log,
        backends: backend_pools(config)?,
    })
}

/// The backend pools of the relay listeners (and their routes); starts their health checkers,
/// which end when the pools are dropped (a reload that replaces them stops the old checkers).
fn backend_pools(config: &Config) -> Result<HashMap<std::net::SocketAddrV4, Arc<ListenerBackends>>> {
    let epoch = std::time::Instant::now();
    let mut out = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let addrs = l.backend_addrs();
        if addrs.is_empty() {
            continue;
        }
        let cooldown = Duration::from_millis(l.cooldown_ms);
        let pool = |addrs: &[std::net::SocketAddrV4]| -> Result<Arc<Pool>> {
            let pool = Arc::new(Pool::new(addrs, l.balance, cooldown, epoch));
            if let Some(h) = &l.health_check {
                pool.spawn_health_check(Duration::from_millis(h.interval_ms), Duration::from_millis(h.timeout_ms))
                    .with_context(|| format!("listener[{i}] ({}): health check thread", l.address))?;
            }
            Ok(pool)
        };
        let mut routes = Vec::new();
        for r in &l.routes {
            routes.push(Route {
                sni: r.sni.clone(),
                alpn: r.alpn.as_ref().map(|a| a.as_bytes().to_vec()),
                pool: pool(&crate::config::Listener::route_addrs(r))?,
            });
        }
        let backends = ListenerBackends { default: pool(&addrs)?, routes, proxy_protocol: l.proxy_protocol };
        out.insert(l.socket_addr(), Arc::new(backends));
    }
    Ok(out)
}

/// The interface's MAC address: the source of every frame sluice sends.
fn interface_mac(ifname: &str) -> Result<sluice_wire::ethernet::Address> {
    let path = format!("/sys/class/net/{ifname}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .with_context(|| format!("{path}: {:?} is not a MAC address", text.trim()))?;
    }
    Ok(sluice_wire::ethernet::Address(mac))
}

/// The TCP stack's configuration: sluice's `[tcp]` section, the interface's MTU, a random secret.
fn tcp_config(config: &Config, ifname: &str) -> Result<sluice_tcp::Config> {
    let t = &config.tcp;
    let mtu_path = format!("/sys/class/net/{ifname}/mtu");
    let mtu: usize = std::fs::read_to_string(&mtu_path)
        .with_context(|| format!("reading {mtu_path}"))?
        .trim()
        .parse()
        .with_context(|| format!("{mtu_path}: not a number"))?;
    let mut secret = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .context("reading /dev/urandom for the ISN and SYN cookie secret")?;
    let ms = Duration::from_millis;
    Ok(sluice_tcp::Config {
        mtu,
        recv_buffer: t.recv_buffer,
        send_buffer: t.send_buffer,
        window_scale: t.window_scale,
        sack: t.sack,
        timestamps: t.timestamps,
        syn_queue_len: t.syn_queue,
        syn_cookies: t.syn_cookies,
        time_wait: ms(t.time_wait_ms),
        handshake_timeout: ms(t.handshake_timeout_ms),
        idle_timeout: (t.idle_timeout_ms > 0).then(|| ms(t.idle_timeout_ms)),
        congestion: match t.congestion {
            Congestion::Cubic => sluice_tcp::Algorithm::Cubic,
            Congestion::Newreno => sluice_tcp::Algorithm::NewReno,
        },
        keepalive: (t.keepalive_idle_ms > 0).then(|| sluice_tcp::Keepalive {
            idle: ms(t.keepalive_idle_ms),
            interval: ms(t.keepalive_interval_ms),
            probes: t.keepalive_probes,
        }),
        secret,
        ..sluice_tcp::Config::default()
    })
}
