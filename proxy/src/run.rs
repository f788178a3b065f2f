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
use crate::config::{Config, XdpModeSetting};
use crate::loader::{self, Loader, XdpMode};
use crate::config::Congestion;
use crate::stats::{Snapshot, StatsThread};
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
    let listeners: HashMap<_, _> = config.listeners.iter().map(|l| (l.socket_addr(), l.mode())).collect();
    for addr in listeners.keys() {
        attached.add_listener(*addr.ip(), addr.port())?;
        tracing::info!(%addr, "listening");
    }

    // TLS: one ServerConfig per listener, its session cache shared by every worker.
    let mut tls_configs = HashMap::new();
    let mut session_caches = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(settings) = &l.tls {
            let clock = Arc::new(sluice_tls::rustls::time_provider::DefaultTimeProvider);
            let cache = sluice_tls::SessionCache::new(settings.session_cache_config(), clock);
            let server = sluice_tls::build(settings, config_dir, Arc::clone(&cache))
                .with_context(|| format!("listener[{i}] ({})", l.address))?;
            tls_configs.insert(l.socket_addr(), server);
            session_caches.push((l.socket_addr(), cache));
        }
    }
    let services =
        worker::Services { listeners: listeners.clone(), tls: tls_configs, relay: config.relay.clone() };
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
    let stats_thread = StatsThread::spawn(
        shared_counters.clone(),
        config.stats.interval_log().map(|l| crate::stats::IntervalLogSettings { path: config_dir.join(&l.path), ..l }),
    )?;
    let stats = {
        let attached = Arc::clone(&attached);
        crate::stats::admin_source(&stats_thread, shared_counters.clone(), move |s| {
            snapshot(&attached, &session_caches, s)
        })
    };
    let admin = AdminServer::spawn(config.admin.address, stats, Arc::clone(&stop))?;
    tracing::info!(address = %admin.local_addr, "admin endpoint serving /metrics, /stats.json, /histograms/");

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::info!("stopping");
    for w in workers {
        if w.join().is_err() {
            tracing::error!("a worker panicked");
        }
    }
    drop(stats_thread); // takes the workers' last intervals, writes the last log interval
    drop(admin);
    drop(attached); // detaches the XDP program
    tracing::info!("XDP program detached; bye");
    Ok(())
}

/// The XDP program's counters and the session caches' (the workers' and the latencies are
/// added by [`crate::stats::admin_source`]).
fn snapshot(
    attached: &Mutex<loader::Attached>,
    caches: &[(std::net::SocketAddrV4, Arc<sluice_tls::SessionCache>)],
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
