//! Starting and stopping sluice: attach XDP, open a socket per queue, spawn the workers, serve
//! the admin endpoint; on SIGINT or SIGTERM stop the workers and detach.
//!
//! Order matters at start: every queue's socket is in the XSKMAP before any listener is in the
//! listener map, so no listener frame is ever redirected to a queue without a socket (which the
//! kernel would answer with its own RST).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_xsk::{BindMode, Socket, XskConfig};

use crate::admin::AdminServer;
use crate::backend::{ListenerBackends, Pool, Route};
use crate::config::{Config, XdpModeSetting};
use crate::loader::{self, Loader, XdpMode};
use crate::config::Congestion;
use crate::worker::{self, Dispatch, SharedCounters};

/// `config` was read from `config_dir` (relative certificate paths are taken from there).
pub fn run(config: Config, config_dir: &std::path::Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
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
    let (inboxes, peers) = worker::inboxes(workers_n, 8192)?;
    let clock = std::time::Instant::now();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = Vec::new();
    let mut shared_counters: Vec<SharedCounters> = Vec::new();
    for (i, (sock, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
        let shared = SharedCounters::default();
        shared_counters.push(Arc::clone(&shared));
        let endpoint = sluice_tcp::Endpoint::new(tcp_config.clone(), sluice_tcp::Instant::ZERO);
        let dispatch = Dispatch::new(i, workers_n, services.clone(), d.verify_checksums, endpoint, local_mac)?;
        let (stop, peers) = (Arc::clone(&stop), peers.clone());
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        workers.push(std::thread::Builder::new().name(format!("sluice-q{i}")).spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            worker::run(sock, dispatch, inbox, peers, shared, clock, stop)
        })?);
    }

    let attached = Arc::new(Mutex::new(attached));
    // The backend pools /stats.json shows: a reload must store its new pools here (the old
    // ones, once no worker holds them, are dropped and their health checkers end).
    let backend_view = Arc::new(Mutex::new(services.backends.clone()));
    let stats = {
        let attached = Arc::clone(&attached);
        let shared_counters = shared_counters.clone();
        let backends = Arc::clone(&backend_view);
        Arc::new(move || {
            let mut json = stats_json(&attached, &shared_counters, &session_caches.lock().unwrap_or_else(|e| e.into_inner()));
            let backends = backends.lock().unwrap_or_else(|e| e.into_inner());
            json["backends"] = backends.iter().map(|(addr, b)| {
                let mut j = b.json();
                j["listener"] = addr.to_string().into();
                j
            }).collect();
            json
        }) as crate::admin::StatsSource
    };
    let admin = AdminServer::spawn(config.admin.address, stats, Arc::clone(&stop))?;
    tracing::info!(address = %admin.local_addr, "admin endpoint serving /stats.json");

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::info!("stopping");
    for w in workers {
        if w.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    drop(admin);
    drop(attached); // detaches the XDP program
    tracing::info!("XDP program detached; bye");
    Ok(())
}

fn stats_json(
    attached: &Mutex<loader::Attached>,
    queues: &[SharedCounters],
    caches: &HashMap<std::net::SocketAddrV4, Arc<sluice_tls::SessionCache>>,
) -> serde_json::Value {
    let (mode, counters) = match attached.lock() {
        Ok(a) => (
            a.mode().as_str(),
            a.counters().map(|c| {
                let mut m: serde_json::Map<String, serde_json::Value> =
                    c.iter().map(|(name, v)| (name.to_owned(), v.into())).collect();
                m.insert("pass_malformed".into(), c.pass_malformed().into());
                m
            }),
        ),
        Err(_) => ("unknown", Ok(Default::default())),
    };
    let queues: Vec<worker::Published> =
        queues.iter().map(|q| q.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
    let mut latencies = crate::latency::Latencies::default();
    for q in &queues {
        latencies.merge(&q.latencies);
    }
    serde_json::json!({
        "xdp": {
            "mode": mode,
            "counters": counters.unwrap_or_default(),
        },
        "queues": queues,
        "latency": crate::latency::json(&latencies),
        "session_caches": caches.iter().map(|(addr, c)| {
            let s = c.stats();
            serde_json::json!({
                "listener": addr.to_string(),
                "hits": s.hits, "misses": s.misses, "inserts": s.inserts, "rejected": s.rejected,
                "evicted_capacity": s.evicted_capacity, "evicted_bytes": s.evicted_bytes,
                "evicted_expired": s.evicted_expired, "entries": s.entries, "bytes": s.bytes,
            })
        }).collect::<Vec<_>>(),
    })
}

/// A TLS listener's session cache, kept across reloads (by listener address).
type SessionCaches = Arc<Mutex<HashMap<std::net::SocketAddrV4, Arc<sluice_tls::SessionCache>>>>;

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
    let backends = backend_pools(config)?;
    Ok(worker::Services { listeners, tls, relay: config.relay.clone(), backends })
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
