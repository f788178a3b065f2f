//! The XDP transport: the XDP program and its maps ([`loader`]), one worker per NIC queue with
//! its AF_XDP socket and TCP stack ([`worker`]), who owns which flow ([`flows`]), and where replies
//! go ([`nexthop`]: the kernel's routes and neighbours).
//!
//! Order matters at start: every queue's socket is in the XSKMAP before any listener is in the
//! listener map, so no listener frame is ever redirected to a queue without a socket (which the
//! kernel would answer with its own RST).

pub mod flows;
pub mod loader;
pub mod nexthop;
pub mod pressure;
pub mod worker;

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sluice_xsk::{BindMode, Socket, XskConfig};

use crate::config::{Config, Congestion, XdpModeSetting};
use crate::datapath::{Services, Transport, Worker};
use loader::{Loader, XdpMode};
use worker::Dispatch;

/// Attaches the XDP program, binds an AF_XDP socket on every queue of `datapath.interface`,
/// puts the listeners in the XDP program's map and prepares a worker per queue serving
/// `services`. Needs the privileges of setup (see the README); the workers need none.
pub fn prepare(config: &Config, services: &Services) -> Result<Transport> {
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
    let want_cookies = config.tcp.syn_cookies && config.tcp.xdp_syn_cookies.wanted(&d.interface);
    if config.tcp.syn_cookies && !want_cookies && config.tcp.xdp_syn_cookies == crate::config::XdpSynCookies::Auto {
        tracing::info!(
            interface = %d.interface,
            "tcp.xdp_syn_cookies = \"auto\": a virtual interface (no device), where XDP_TX frames reach the peer \
             only if the peer runs an XDP program; SYN cookies are answered by sluice's own stack \
             (set tcp.xdp_syn_cookies = true to answer them in XDP)"
        );
    }
    let mut attached = Loader::attach(&d.interface, mode, d.force, want_cookies)?;
    tracing::info!(
        interface = %d.interface,
        mode = attached.mode().as_str(),
        load_ms = attached.load_time().as_millis() as u64,
        xdp_syn_cookies = attached.xdp_syn_cookies(),
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
    let workers_n = sockets.len();
    let tcp_config = tcp_config(config, &d.interface, workers_n, services.limits.memory.unwrap_or(0))?;
    tracing::info!(per_worker = tcp_config.max_connections, "TCP connection table (tcp.max_connections)");
    // SYN cookies in XDP: what its SYN-ACKs offer, the same as the TCP stack's, and a random
    // mark for the ACKs the kernel validated. Set before any listener is in the map.
    let cookie_mark = if attached.xdp_syn_cookies() {
        let mut mark = [0u8; 8];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut mark))
            .context("reading /dev/urandom for the SYN cookie mark")?;
        let mark = u64::from_le_bytes(mark);
        let mss = |v| u16::try_from(tcp_config.mss(v)).unwrap_or(u16::MAX);
        attached.configure_syn_cookies(&loader::CookieOffer {
            mss_v4: mss(sluice_wire::ip::Version::V4),
            mss_v6: mss(sluice_wire::ip::Version::V6),
            window_scale: tcp_config.window_scale.then(|| tcp_config.rcv_wscale()),
            window: u16::try_from(tcp_config.recv_buffer).unwrap_or(u16::MAX),
            sack: tcp_config.sack,
            timestamps: tcp_config.timestamps,
            mark,
        })?;
        Some(mark)
    } else {
        None
    };
    let listeners: Vec<_> = config.listeners.iter().flat_map(|l| l.socket_addrs()).collect();
    for addr in &listeners {
        attached.add_listener(*addr)?;
        tracing::info!(%addr, "listening");
    }

    let local_mac = interface_mac(&d.interface)?;
    let ifindex = interface_index(&d.interface)?;
    let (inboxes, peers, controls) = worker::inboxes(workers_n, 8192)?;
    let conn_counts = Arc::new(crate::session::limits::ConnCounts::default());
    let mut flow_index = flows::FlowIndex::new(workers_n * tcp_config.max_connections);
    if attached.xdp_syn_cookies() {
        // Under SYN-queue pressure the program drops ACKs of flows it does not know.
        flow_index = flow_index.with_mirror(Box::new(attached.open_flows()?));
    }
    let flows = Arc::new(flow_index);
    // Each relay holds one descriptor (its backend socket).
    let max_relays = crate::session::limits::descriptor_budget(workers_n, 1);
    let mut workers: Vec<Box<dyn FnOnce(Worker) + Send>> = Vec::new();
    for (i, (sock, inbox)) in sockets.into_iter().zip(inboxes).enumerate() {
        let endpoint = sluice_tcp::Endpoint::new(tcp_config.clone(), sluice_tcp::Instant::ZERO);
        // Each worker reads the kernel's routes and neighbours itself: no lock between workers.
        let mut table = nexthop::Table::new(ifindex, nexthop::Limits::default());
        let reader = nexthop::Reader::open(&mut table, Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("reading the kernel's routes and neighbours (rtnetlink): {e}"))?;
        let prober = nexthop::Prober::new(ifindex).context("a socket to trigger neighbour resolution")?;
        if i == 0 {
            let c = table.counters();
            tracing::info!(routes = c.routes, neighbours = c.neighbours, "next hops from the kernel's tables");
        }
        let mut dispatch = Dispatch::new(
            i,
            Arc::clone(&flows),
            services.clone(),
            Arc::clone(&conn_counts),
            d.verify_checksums,
            endpoint,
            worker::Link { mac: local_mac, next_hops: table },
        )?;
        dispatch.busy_poll = Duration::from_micros(d.busy_poll_us);
        dispatch.max_relays = max_relays;
        let peers = peers.clone();
        let next_hops = worker::NextHops { reader, prober };
        let cookies = match cookie_mark {
            Some(mark) => Some(worker::XdpCookies {
                flag: attached.pressure_flag(i as u32)?,
                mark,
                pressure: pressure::SynPressure::default(),
            }),
            None => None,
        };
        workers.push(Box::new(move |w: Worker| worker::run(sock, dispatch, inbox, peers, next_hops, cookies, w)));
    }
    // No capability is kept: the rings are mapped, the maps are reached through descriptors
    // held (no capability needed since Linux 6.5), the program goes when its link is closed.
    Ok(Transport { name: "q", workers, controls, attached: Some(Arc::new(Mutex::new(attached))), keep: &[] })
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

/// The interface's index (what netlink names it by).
fn interface_index(ifname: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{ifname}/ifindex");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.trim().parse().with_context(|| format!("{path}: {:?} is not an interface index", text.trim()))
}

/// The TCP stack's configuration: sluice's `[tcp]` section, the interface's MTU, a random
/// secret, each of `workers` workers' table size (from the `memory` limit unless set).
fn tcp_config(config: &Config, ifname: &str, workers: usize, memory: u64) -> Result<sluice_tcp::Config> {
    let t = &config.tcp;
    let mtu_path = format!("/sys/class/net/{ifname}/mtu");
    let mtu: usize = std::fs::read_to_string(&mtu_path)
        .with_context(|| format!("reading {mtu_path}"))?
        .trim()
        .parse()
        .with_context(|| format!("{mtu_path}: not a number"))?;
    // A segment goes out in one UMEM frame: the MSS advertised (MTU - 40 for IPv4, - 60 for
    // IPv6) must not promise more than a frame holds behind its Ethernet header.
    let fits = usize::try_from(config.datapath.frame_size)
        .unwrap_or(usize::MAX)
        .saturating_sub(sluice_wire::ethernet::HEADER_LEN);
    let mtu = if mtu > fits {
        tracing::warn!(
            interface = ifname,
            mtu,
            frame_size = config.datapath.frame_size,
            "the interface's MTU is larger than a UMEM frame holds: sluice's segments are capped at {fits} bytes \
             (raise datapath.frame_size to use the whole MTU)"
        );
        fits
    } else {
        mtu
    };
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
        max_connections: t.table_size(memory, workers),
        syn_queue_len: t.syn_queue,
        syn_cookies: t.syn_cookies,
        time_wait: ms(t.time_wait_ms),
        handshake_timeout: ms(t.handshake_timeout_ms),
        idle_timeout: (t.idle_timeout_ms > 0).then(|| ms(t.idle_timeout_ms)),
        user_timeout: (t.user_timeout_ms > 0).then(|| ms(t.user_timeout_ms)),
        fin_wait_2_timeout: (t.fin_wait_2_timeout_ms > 0).then(|| ms(t.fin_wait_2_timeout_ms)),
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
