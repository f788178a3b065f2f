//! `sluice-bench rst-rate`: how many frames per second ONE sluice worker receives and answers
//! with a RST (issue 2), against the proxy namespace's own kernel answering the same SYNs.
//!
//! What it does, on the standard topology under the prefix `sluice-rb-` (removed on exit, also
//! on error and on Ctrl-C):
//! - a SYN generator in `sluice-rb-client` sends as fast as it can through an AF_XDP socket
//!   (copy mode, `sluice-xsk`) bound to queue 0 of `cli0`. veth hands a frame sent on TX queue q
//!   to the peer's RX queue q, so every SYN arrives on px0's queue 0 and so at one worker.
//!   Frames are built with `sluice-wire` (complete IPv4 and TCP checksums), source ports cycle
//!   through 1024..=65535, the source MAC and IP are cli0's so that the answers are delivered to
//!   the client kernel (which counts them in `Tcp: InSegs` and, having no socket, stays silent).
//!   AF_XDP rather than AF_PACKET: its TX ring takes a batch per `sendto` (32 frames in copy
//!   mode) instead of one syscall per frame, and it is the socket type sluice itself uses.
//! - Baselines: no sluice; 198.51.100.2:443 is a closed port of the proxy namespace's kernel,
//!   which answers each SYN with its own RST (`Tcp: OutRsts`). `kernel`: veth delivers in the
//!   sender's softirq, so the generator's CPU does the kernel's whole answer. `kernel+rps`: RPS
//!   on px0 rx-0 moves the receive work to the CPU sluice's worker 0 is pinned to.
//! - `sluice`: sluice runs in the proxy namespace (XDP native mode) with a `refuse = true`
//!   listener on 198.51.100.2:443; its worker on queue 0 answers.
//!
//! Each run warms up, then measures counter deltas over a steady window: the generator's own
//! sent count (so a generator bottleneck shows), veth counters, `/stats.json` of sluice (XDP
//! `redirected`, per-queue `rx_frames`/`rst_sent`/drops), the SNMP counters of both kernels, and
//! CPU time (`/proc/stat` for the machine, `/proc/PID/task/*/stat` for sluice's threads and the
//! generator thread, ksoftirqd, and the top CPU users of the window: on a shared machine, what
//! the run competed with). It prints figures and ratios; it asserts nothing about time.
//! `--nice -10` renices the measured threads and this session's autogroup for the run.
//!
//! What it is not: a load test of TCP or TLS (no connection is ever established), or a
//! measurement of a real NIC (veth in copy mode; both namespaces share the machine's cores).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use sluice_bench::admin;
use sluice_bench::probe::{
    self, CpuTimes, DevCounters, USER_HZ, all_thread_ticks, net_dev, snmp_value, thread_ticks, threads_of, top_threads,
};
use sluice_testbed::{NsProcess, TopologyGuard, in_netns, in_ns, xdp_attached};
use sluice_wire::ethernet::{self, Address, EtherType};
use sluice_wire::ipv4::{self, Protocol};
use sluice_wire::tcp::{self, Flags};
use sluice_wire::{Error as WireError, emit_frame};
use sluice_xsk::{BindMode, KernelStats, Socket, XskConfig, XskStats};

/// The namespace prefix of this benchmark's topology.
pub const PREFIX: &str = "sluice-rb-";
const CLIENT_IF: &str = "cli0";
const PROXY_IF: &str = "px0";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const LISTENER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 443);

/// `sluice-bench rst-rate` options.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The sluice binary to run in the proxy namespace.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice: PathBuf,
    /// Length of the measured (steady) window of each run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Time the generator runs before the window opens, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Rounds to do; each runs the baselines, then sluice.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// CPU the generator thread is pinned to (sluice pins queue q's worker to CPU q, so the
    /// default, the last CPU, keeps the generator off worker 0's CPU on a 2-core machine).
    #[arg(long)]
    pub gen_cpu: Option<usize>,
    /// Frames the generator builds per loop before it flushes the TX ring.
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Kernel baselines to run before sluice in each round: `kernel` (the SYN is answered in
    /// the generator's own softirq context, so on the generator's CPU), `kernel-rps` (RPS on
    /// px0 queue 0 moves that work to the CPU sluice's worker 0 is pinned to, so the kernel gets
    /// the CPUs sluice gets).
    #[arg(long, value_delimiter = ',', default_values = ["kernel", "kernel-rps"])]
    pub baselines: Vec<Baseline>,
    /// Skip the kernel baselines (no ratios are printed then).
    #[arg(long)]
    pub no_baseline: bool,
    /// Nice value (-20..19) for the generator thread and every sluice thread (`renice`), and
    /// for this session's scheduler autogroup (`/proc/self/autogroup`, restored at exit: with
    /// autogroups on, a thread's nice only weighs against its own session's threads). On a
    /// machine shared with other work, -10 keeps the measured threads from being time-sliced
    /// with it. Default: leave priorities alone.
    #[arg(long, allow_hyphen_values = true)]
    pub nice: Option<i32>,
}

/// How the proxy kernel answers in a baseline run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// No RPS: px0's receive work runs where the sender's `sendto` runs.
    Kernel,
    /// RPS on px0 rx-0 to the CPU of sluice's worker 0.
    KernelRps,
}

impl Baseline {
    fn label(self) -> &'static str {
        match self {
            Baseline::Kernel => "kernel",
            Baseline::KernelRps => "kernel+rps",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The SYN frames.

/// The first source port the generator uses; ports cycle through `FIRST_PORT..=65535`.
pub const FIRST_PORT: u16 = 1024;

/// What every generated SYN has in common; [`SynTemplate::emit`] varies port and sequence number.
#[derive(Debug, Clone, Copy)]
pub struct SynTemplate {
    pub src_mac: Address,
    pub dst_mac: Address,
    pub src_ip: Ipv4Addr,
    pub dst: SocketAddrV4,
}

impl SynTemplate {
    /// The source port of the `i`-th SYN.
    pub fn src_port(i: u64) -> u16 {
        let span = u64::from(u16::MAX - FIRST_PORT) + 1;
        FIRST_PORT + (i % span) as u16
    }

    /// The initial sequence number of the `i`-th SYN (spread over the sequence space).
    pub fn seq(i: u64) -> u32 {
        (i as u32).wrapping_mul(2_654_435_761)
    }

    /// Writes the `i`-th SYN (Ethernet + IPv4 + TCP with MSS and SACK-permitted, complete
    /// checksums) into `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8], i: u64) -> Result<usize, WireError> {
        let eth = ethernet::Repr { src_addr: self.src_mac, dst_addr: self.dst_mac, ethertype: EtherType::Ipv4 };
        let tcp = tcp::Repr {
            src_port: Self::src_port(i),
            dst_port: self.dst.port(),
            seq_number: Self::seq(i),
            ack_number: 0,
            flags: Flags::SYN,
            window_len: 64240,
            max_seg_size: Some(1460),
            window_scale: None,
            sack_permitted: true,
            sack_blocks: [None; 4],
            timestamp: None,
            payload: &[],
        };
        let ip = ipv4::Repr {
            src_addr: self.src_ip,
            dst_addr: *self.dst.ip(),
            protocol: Protocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        };
        emit_frame(buf, &eth, &ip.into(), &tcp)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<Address> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(Address(mac))
}

// ---------------------------------------------------------------------------------------------
// Priorities, RPS, and the counters of sluice's /stats.json.

/// Sets the nice value of thread (or process) `id` with `renice`.
fn renice(id: u32, nice: i32) -> Result<()> {
    sluice_testbed::run("renice", &["-n", &nice.to_string(), "-p", &id.to_string()])
}

/// The nice value of an autogroup, from `/proc/PID/autogroup` (`/autogroup-25 nice 0`).
pub fn autogroup_nice(text: &str) -> Option<i32> {
    let mut it = text.split_whitespace();
    it.find(|w| *w == "nice")?;
    it.next()?.parse().ok()
}

/// Sets this session's autogroup nice value and restores the old one when dropped.
struct AutogroupNice {
    old: i32,
}

impl AutogroupNice {
    const PATH: &str = "/proc/self/autogroup";

    /// `None` where the kernel has no autogroups (nothing to do).
    fn set(nice: i32) -> Result<Option<Self>> {
        let Ok(text) = std::fs::read_to_string(Self::PATH) else {
            return Ok(None);
        };
        let old = autogroup_nice(&text).with_context(|| format!("{}: {text:?}", Self::PATH))?;
        std::fs::write(Self::PATH, nice.to_string()).with_context(|| format!("writing {}", Self::PATH))?;
        Ok(Some(Self { old }))
    }
}

impl Drop for AutogroupNice {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(Self::PATH, self.old.to_string()) {
            eprintln!("rst-rate: restoring the autogroup nice value {}: {e}", self.old);
        }
    }
}

/// Sets `rps_cpus` of px0's RX queue 0 in the proxy namespace (`ip netns exec` mounts that
/// namespace's /sys); `mask` 0 turns RPS off.
fn set_rps(proxy_ns: &str, mask: u64) -> Result<()> {
    let cmd = format!("echo {mask:x} > /sys/class/net/{PROXY_IF}/queues/rx-0/rps_cpus");
    in_ns(proxy_ns, "sh", &["-c", &cmd]).map(drop).context("setting RPS on px0 rx-0")
}

/// The counters of one sluice queue in `/stats.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSample {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rst_sent: u64,
    /// Sum of every `dropped_*` counter.
    pub dropped: u64,
    pub dropped_tx_full: u64,
    /// Worker loop iterations that slept in poll (found no work).
    pub idle_sleeps: u64,
}

/// What this benchmark reads from sluice's `/stats.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SluiceSample {
    pub mode: String,
    pub redirected: u64,
    pub redirect_failed: u64,
    pub queues: Vec<QueueSample>,
}

/// Reads the counters of a `/stats.json` document (`xdp.counters`, `queues[]`).
pub fn sluice_sample(v: &Value) -> Result<SluiceSample> {
    let counters = &v["xdp"]["counters"];
    let queues = v["queues"].as_array().context("stats.json: no queues array")?;
    let u = |q: &Value, k: &str| q[k].as_u64().unwrap_or(0);
    Ok(SluiceSample {
        mode: v["xdp"]["mode"].as_str().unwrap_or("?").to_owned(),
        redirected: counters["redirected"].as_u64().context("stats.json: no xdp.counters.redirected")?,
        redirect_failed: u(counters, "redirect_failed"),
        queues: queues
            .iter()
            .map(|q| QueueSample {
                rx_frames: u(q, "rx_frames"),
                tx_frames: u(q, "tx_frames"),
                rst_sent: u(q, "rst_sent"),
                dropped: q
                    .as_object()
                    .map(|o| o.iter().filter(|(k, _)| k.starts_with("dropped_")).filter_map(|(_, v)| v.as_u64()).sum())
                    .unwrap_or(0),
                dropped_tx_full: u(q, "dropped_tx_full"),
                idle_sleeps: u(q, "idle_sleeps"),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading the namespaces.

/// `/proc/net/snmp` and `/proc/net/dev` of namespace `ns`, read by a thread inside it.
fn ns_net(ns: &str) -> Result<(String, String)> {
    in_netns(ns, probe::net_snmp_and_dev)?.with_context(|| format!("reading /proc/net of {ns}"))
}

fn mac_of(ns: &str, dev: &str) -> Result<Address> {
    let out = in_ns(ns, "ip", &["-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("ip -j link")?;
    v[0]["address"].as_str().and_then(parse_mac).with_context(|| format!("no MAC address for {dev} in {ns}"))
}

// ---------------------------------------------------------------------------------------------
// The generator.

/// What the generator thread reports when it stops.
#[derive(Debug)]
struct GenReport {
    stats: XskStats,
    kernel: Option<KernelStats>,
}

/// A thread in the client namespace sending SYNs through an AF_XDP socket on cli0 queue 0.
/// Dropping it stops and joins the thread.
struct Generator {
    stop: Arc<AtomicBool>,
    /// Frames put on the TX ring so far (published every loop).
    sent: Arc<AtomicU64>,
    /// The thread's id, for its CPU time in /proc.
    tid: u32,
    handle: Option<JoinHandle<Result<GenReport>>>,
}

impl Generator {
    fn spawn(client_ns: &str, template: SynTemplate, cpu: Option<usize>, batch: u32) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<u32>>();
        let ns = client_ns.to_owned();
        let (stop_t, sent_t) = (Arc::clone(&stop), Arc::clone(&sent));
        let handle = std::thread::Builder::new().name("rb-generator".into()).spawn(move || -> Result<GenReport> {
            let setup = || -> Result<(Socket, u32)> {
                if let Some(cpu) = cpu {
                    ensure!(core_affinity::set_for_current(core_affinity::CoreId { id: cpu }), "pinning to CPU {cpu}");
                }
                sluice_xsk::enter_named_netns(&ns).with_context(|| format!("entering {ns}"))?;
                let cfg = XskConfig {
                    frame_size: 2048,
                    frame_count: 4096,
                    headroom: 0,
                    fill_size: 64,
                    comp_size: 4096,
                    rx_size: 64,
                    tx_size: 2048,
                    tx_reserve: 4096,
                    mode: BindMode::Copy,
                };
                // The previous run's socket on this queue is released asynchronously after close:
                // EBUSY for a moment.
                let deadline = Instant::now() + Duration::from_secs(5);
                let sock = loop {
                    match Socket::new(CLIENT_IF, 0, &cfg) {
                        Ok((sock, _)) => break sock,
                        Err(sluice_xsk::XskError::Bind { source, .. })
                            if source.kind() == std::io::ErrorKind::ResourceBusy && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(100))
                        }
                        Err(e) => return Err(e).context("AF_XDP socket on cli0 queue 0"),
                    }
                };
                let tid = probe::current_thread_id().context("reading /proc/thread-self")?;
                Ok((sock, tid))
            };
            let mut sock = match setup() {
                Ok((sock, tid)) => {
                    let _ = ready_tx.send(Ok(tid));
                    sock
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                    return Err(e);
                }
            };
            let mut i = 0u64;
            while !stop_t.load(Ordering::Relaxed) {
                sock.reap_completions();
                for _ in 0..batch {
                    let Some(mut frame) = sock.tx_frame() else {
                        break;
                    };
                    let len = template.emit(frame.buf_mut(), i).map_err(|e| anyhow::anyhow!("emit SYN: {e:?}"))?;
                    frame.submit(len).context("submit")?;
                    i += 1;
                }
                sock.flush_tx().context("TX wakeup")?;
                sent_t.store(sock.stats().tx_frames, Ordering::Relaxed);
            }
            Ok(GenReport { stats: sock.stats(), kernel: sock.kernel_stats().ok() })
        })?;
        let mut g = Generator { stop, sent, tid: 0, handle: Some(handle) };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(tid)) => g.tid = tid,
            Ok(Err(e)) => return Err(e.context("starting the generator")),
            Err(_) => bail!("the generator did not start within 10 s"),
        }
        Ok(g)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn cpu_ticks(&self) -> u64 {
        probe::own_thread_ticks(self.tid).unwrap_or(0)
    }

    fn finish(mut self) -> Result<GenReport> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().context("generator already joined")?;
        handle.join().map_err(|_| anyhow::anyhow!("the generator panicked"))?
    }

    fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling and measuring.

/// Everything read at one end of the window.
struct Sample {
    at: Instant,
    gen_sent: u64,
    gen_ticks: u64,
    client_insegs: u64,
    client_csum_errors: u64,
    cli0: DevCounters,
    proxy_outrsts: u64,
    px0: DevCounters,
    machine: CpuTimes,
    threads: BTreeMap<u32, (String, u64)>,
    sluice: Option<(SluiceSample, BTreeMap<String, u64>)>,
}

struct Ctx<'a> {
    args: &'a Args,
    client: String,
    proxy: String,
    template: SynTemplate,
    interrupted: Arc<AtomicBool>,
}

impl Ctx<'_> {
    fn sample(&self, generator: &Generator, sluice_pid: Option<u32>) -> Result<Sample> {
        let at = Instant::now();
        let gen_sent = generator.sent();
        let machine = probe::machine_cpu().context("reading /proc/stat")?;
        let gen_ticks = generator.cpu_ticks();
        let threads = all_thread_ticks();
        let sluice = match sluice_pid {
            Some(pid) => Some((sluice_sample(&admin::stats(&self.proxy)?)?, thread_ticks(pid))),
            None => None,
        };
        let (csnmp, cdev) = ns_net(&self.client)?;
        let (psnmp, pdev) = ns_net(&self.proxy)?;
        let snmp = |text: &str, name: &str| snmp_value(text, "Tcp", name).with_context(|| format!("no Tcp: {name}"));
        Ok(Sample {
            at,
            gen_sent,
            gen_ticks,
            client_insegs: snmp(&csnmp, "InSegs")?,
            client_csum_errors: snmp(&csnmp, "InCsumErrors")?,
            cli0: net_dev(&cdev, CLIENT_IF).context("no cli0 in /proc/net/dev")?,
            proxy_outrsts: snmp(&psnmp, "OutRsts")?,
            px0: net_dev(&pdev, PROXY_IF).context("no px0 in /proc/net/dev")?,
            machine,
            threads,
            sluice,
        })
    }

    /// Sleeps `d`, returning early with an error on Ctrl-C or SIGTERM.
    fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            ensure!(!self.interrupted.load(Ordering::Relaxed), "interrupted");
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
        }
        Ok(())
    }

    /// One run: generator on, warm-up, window, generator off.
    fn measure(&self, label: &'static str, sluice: Option<&mut NsProcess>) -> Result<Measurement> {
        let pid = sluice.as_ref().map(|p| p.pid());
        let generator = Generator::spawn(&self.client, self.template, self.gen_cpu(), self.args.batch)?;
        if let Some(nice) = self.args.nice {
            renice(generator.tid, nice)?;
        }
        self.sleep(Duration::from_secs_f64(self.args.warmup))?;
        ensure!(generator.is_running(), "the generator stopped during warm-up: {:?}", generator.finish());
        let s0 = self.sample(&generator, pid)?;
        self.sleep(Duration::from_secs(self.args.seconds))?;
        let s1 = self.sample(&generator, pid)?;
        let report = generator.finish()?;
        if let Some(p) = sluice
            && let Some(status) = p.try_wait()?
        {
            bail!("sluice exited ({status}) during the run:\n{}", p.log());
        }
        Ok(Measurement::new(label, &s0, &s1, report))
    }

    fn gen_cpu(&self) -> Option<usize> {
        self.args.gen_cpu.or_else(|| core_affinity::get_core_ids().and_then(|c| c.last().map(|c| c.id)))
    }
}

/// The deltas of one run, per second unless named otherwise.
#[derive(Debug)]
struct Measurement {
    label: &'static str,
    secs: f64,
    sent: f64,
    cli0_tx: f64,
    cli0_tx_dropped: f64,
    px0_rx: f64,
    px0_rx_dropped: f64,
    /// RSTs sent by whoever answers: sluice queue 0, or the proxy kernel.
    answered: f64,
    /// Segments that arrived in the client namespace (`Tcp: InSegs`).
    back: f64,
    client_csum_errors: u64,
    proxy_kernel_rsts: f64,
    sluice: Option<SluiceDelta>,
    cpu: CpuTimes,
    gen_cpu_s: f64,
    /// CPU of the kernel's softirq threads (where softirq work goes when it is deferred, e.g.
    /// RPS'd receive processing).
    ksoftirqd_s: f64,
    /// The threads that used the most CPU in the window (name, tid, seconds): on a shared
    /// machine, what the measured threads competed with.
    top: Vec<(String, u32, f64)>,
    report: GenReport,
}

#[derive(Debug)]
struct SluiceDelta {
    mode: String,
    redirected: f64,
    redirect_failed: f64,
    queues: Vec<QueueSample>,
    threads: BTreeMap<String, f64>,
}

impl Measurement {
    fn new(label: &'static str, s0: &Sample, s1: &Sample, report: GenReport) -> Self {
        let secs = (s1.at - s0.at).as_secs_f64();
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let sluice = match (&s0.sluice, &s1.sluice) {
            (Some((a, ta)), Some((b, tb))) => Some(SluiceDelta {
                mode: b.mode.clone(),
                redirected: rate(a.redirected, b.redirected),
                redirect_failed: rate(a.redirect_failed, b.redirect_failed),
                queues: a
                    .queues
                    .iter()
                    .zip(&b.queues)
                    .map(|(a, b)| QueueSample {
                        rx_frames: b.rx_frames.saturating_sub(a.rx_frames),
                        tx_frames: b.tx_frames.saturating_sub(a.tx_frames),
                        rst_sent: b.rst_sent.saturating_sub(a.rst_sent),
                        dropped: b.dropped.saturating_sub(a.dropped),
                        dropped_tx_full: b.dropped_tx_full.saturating_sub(a.dropped_tx_full),
                        idle_sleeps: b.idle_sleeps.saturating_sub(a.idle_sleeps),
                    })
                    .collect(),
                threads: tb
                    .iter()
                    .map(|(name, t)| (name.clone(), t.saturating_sub(*ta.get(name).unwrap_or(&0)) as f64 / USER_HZ))
                    .collect(),
            }),
            _ => None,
        };
        let proxy_kernel_rsts = rate(s0.proxy_outrsts, s1.proxy_outrsts);
        let answered = match &sluice {
            Some(s) => s.queues.first().map_or(0.0, |q| q.rst_sent as f64 / secs),
            None => proxy_kernel_rsts,
        };
        Measurement {
            label,
            secs,
            sent: rate(s0.gen_sent, s1.gen_sent),
            cli0_tx: rate(s0.cli0.tx_packets, s1.cli0.tx_packets),
            cli0_tx_dropped: rate(s0.cli0.tx_dropped, s1.cli0.tx_dropped),
            px0_rx: rate(s0.px0.rx_packets, s1.px0.rx_packets),
            px0_rx_dropped: rate(s0.px0.rx_dropped, s1.px0.rx_dropped),
            answered,
            back: rate(s0.client_insegs, s1.client_insegs),
            client_csum_errors: s1.client_csum_errors.saturating_sub(s0.client_csum_errors),
            proxy_kernel_rsts,
            sluice,
            cpu: s1.machine.delta(&s0.machine),
            gen_cpu_s: s1.gen_ticks.saturating_sub(s0.gen_ticks) as f64 / USER_HZ,
            ksoftirqd_s: top_threads(&s0.threads, &s1.threads, usize::MAX)
                .iter()
                .filter(|(name, _, _)| name.starts_with("ksoftirqd/"))
                .map(|(_, _, t)| *t as f64 / USER_HZ)
                .sum(),
            top: top_threads(&s0.threads, &s1.threads, 8)
                .into_iter()
                .map(|(name, tid, t)| (name, tid, t as f64 / USER_HZ))
                .collect(),
            report,
        }
    }

    fn machine_cpu_s(&self) -> f64 {
        self.cpu.busy() as f64 / USER_HZ
    }

    /// CPU-seconds per million answered frames.
    fn per_million(&self, cpu_s: f64) -> f64 {
        let answered = self.answered * self.secs;
        if answered > 0.0 { cpu_s / answered * 1e6 } else { f64::NAN }
    }

    fn sluice_cpu_s(&self) -> Option<f64> {
        self.sluice.as_ref().map(|s| s.threads.values().sum())
    }

    /// CPU of the threads doing this run's work: the generator (whose `sendto` also runs the
    /// receive softirqs it raises), sluice's threads, and ksoftirqd.
    fn own_threads_cpu_s(&self) -> f64 {
        self.gen_cpu_s + self.sluice_cpu_s().unwrap_or(0.0) + self.ksoftirqd_s
    }

    fn details(&self) -> String {
        let mut o = String::new();
        let secs = self.secs;
        let _ = writeln!(o, "[{}] window {secs:.2} s", self.label);
        let _ = writeln!(
            o,
            "  generator: {:>12} frames/s put on cli0's TX ring (queue 0); CPU {:.2} s",
            fmt_rate(self.sent),
            self.gen_cpu_s
        );
        let _ = writeln!(
            o,
            "  veth: cli0 tx {} /s (dropped {} /s), px0 rx {} /s (dropped {} /s)",
            fmt_rate(self.cli0_tx),
            fmt_rate(self.cli0_tx_dropped),
            fmt_rate(self.px0_rx),
            fmt_rate(self.px0_rx_dropped)
        );
        if let Some(s) = &self.sluice {
            let rx_all: u64 = s.queues.iter().map(|q| q.rx_frames).sum();
            let _ = writeln!(
                o,
                "  xdp ({}): redirected {} /s, redirect_failed {} /s; redirected but not received by a worker: {} /s",
                s.mode,
                fmt_rate(s.redirected),
                fmt_rate(s.redirect_failed),
                fmt_rate((s.redirected - rx_all as f64 / secs).max(0.0))
            );
            for (q, d) in s.queues.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  sluice q{q}: rx {} /s, rst_sent {} /s, tx {} /s, dropped {} /s (of which tx_full {} /s), idle sleeps {} /s",
                    fmt_rate(d.rx_frames as f64 / secs),
                    fmt_rate(d.rst_sent as f64 / secs),
                    fmt_rate(d.tx_frames as f64 / secs),
                    fmt_rate(d.dropped as f64 / secs),
                    fmt_rate(d.dropped_tx_full as f64 / secs),
                    fmt_rate(d.idle_sleeps as f64 / secs),
                );
            }
            let threads: Vec<String> = s.threads.iter().map(|(n, t)| format!("{n} {t:.2}")).collect();
            let _ = writeln!(o, "  sluice CPU s by thread: {}", threads.join(", "));
        }
        let _ = writeln!(
            o,
            "  proxy kernel: OutRsts {} /s; client kernel: InSegs {} /s, InCsumErrors {}",
            fmt_rate(self.proxy_kernel_rsts),
            fmt_rate(self.back),
            self.client_csum_errors
        );
        let c = &self.cpu;
        let _ = writeln!(
            o,
            "  machine CPU s: busy {:.2} of {:.2} (user {:.2}, system {:.2}, softirq {:.2}, irq {:.2}), idle {:.2}",
            self.machine_cpu_s(),
            c.total() as f64 / USER_HZ,
            (c.user + c.nice) as f64 / USER_HZ,
            c.system as f64 / USER_HZ,
            c.softirq as f64 / USER_HZ,
            c.irq as f64 / USER_HZ,
            (c.idle + c.iowait) as f64 / USER_HZ
        );
        let top: Vec<String> = self.top.iter().map(|(n, tid, t)| format!("{n}[{tid}] {t:.2}")).collect();
        let _ = writeln!(o, "  top threads, CPU s: {}", top.join(", "));
        let st = &self.report.stats;
        let _ = writeln!(
            o,
            "  generator socket (whole run): tx_frames {}, completed {}, tx_wakeups {}, ring full {}, no frame {}{}",
            st.tx_frames,
            st.tx_completed,
            st.tx_wakeups,
            st.tx_ring_full,
            st.tx_no_frame,
            self.report.kernel.map(|k| format!(", kernel tx_invalid_descs {}", k.tx_invalid_descs)).unwrap_or_default()
        );
        o
    }
}

/// `1234567.8` as `1,234,568`.
fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() { format!("{:.2}", a / b) } else { "-".into() }
}

fn table(runs: &[Measurement]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{:58}| CPU-s per million answered frames", "");
    let _ = writeln!(
        o,
        "{:<10} {:>12} {:>12} {:>7} {:>12} | {:>8} {:>8} {:>8} {:>8} {:>8}",
        "run", "sent/s", "answered/s", "ratio", "back@cli/s", "machine", "threads", "gen", "sluice", "ksoftirq"
    );
    for m in runs {
        let sluice = m.sluice_cpu_s().map(|s| format!("{:.2}", m.per_million(s))).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "{:<10} {:>12} {:>12} {:>7} {:>12} | {:>8.2} {:>8.2} {:>8.2} {:>8} {:>8.2}",
            m.label,
            fmt_rate(m.sent),
            fmt_rate(m.answered),
            ratio(m.answered, m.sent),
            fmt_rate(m.back),
            m.per_million(m.machine_cpu_s()),
            m.per_million(m.own_threads_cpu_s()),
            m.per_million(m.gen_cpu_s),
            sluice,
            m.per_million(m.ksoftirqd_s),
        );
    }
    o
}

// ---------------------------------------------------------------------------------------------
// Running it.

fn sluice_config() -> String {
    format!(
        "# written by sluice-bench rst-rate\n[datapath]\ninterface = \"{PROXY_IF}\"\nxdp_mode = \"native\"\n\
         frames_per_queue = 4096\n\n[[listener]]\naddress = \"{LISTENER}\"\nrefuse = true\n"
    )
}

fn start_sluice(ctx: &Ctx<'_>, binary: &Path, dir: &Path) -> Result<NsProcess> {
    let config = dir.join("sluice.toml");
    std::fs::write(&config, sluice_config())?;
    let mut p = NsProcess::spawn(
        &ctx.proxy,
        binary.to_str().context("sluice path is not UTF-8")?,
        &["--config", config.to_str().context("temp path is not UTF-8")?],
        dir.join("sluice.log"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = p.try_wait()? {
            bail!("sluice exited ({status}) before it was ready:\n{}", p.log());
        }
        if let Ok(v) = admin::stats(&ctx.proxy) {
            let s = sluice_sample(&v)?;
            ensure!(s.mode == "native", "sluice attached in {} mode, not native:\n{}", s.mode, p.log());
            if let Some(nice) = ctx.args.nice {
                for tid in threads_of(p.pid()) {
                    renice(tid, nice)?;
                }
            }
            return Ok(p);
        }
        ensure!(Instant::now() < deadline, "sluice not ready after 20 s:\n{}", p.log());
        ctx.sleep(Duration::from_millis(100))?;
    }
}

fn stop_sluice(ctx: &Ctx<'_>, mut p: NsProcess) -> Result<()> {
    let status = p.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))?;
    ensure!(status.success(), "sluice exited with {status} on SIGTERM:\n{}", p.log());
    let deadline = Instant::now() + Duration::from_secs(5);
    while xdp_attached(&ctx.proxy, PROXY_IF)? {
        ensure!(Instant::now() < deadline, "XDP still attached to px0 5 s after sluice exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    sluice_testbed::require_root()?;
    ensure!(args.seconds > 0 && args.batch > 0 && args.rounds > 0, "--seconds, --batch and --rounds must be > 0");
    let binary = std::fs::canonicalize(&args.sluice).with_context(|| {
        format!("sluice binary {}: build it with `cargo build --release -p sluice`", args.sluice.display())
    })?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted)).context("installing signal handlers")?;
    }
    let load_before = probe::loadavg();
    let _autogroup = match args.nice {
        Some(nice) => AutogroupNice::set(nice)?,
        None => None,
    };
    let topology = TopologyGuard::up(PREFIX)?;
    let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let t = &topology.topology;
    let template = SynTemplate {
        src_mac: mac_of(&t.client(), CLIENT_IF)?,
        dst_mac: mac_of(&t.proxy(), PROXY_IF)?,
        src_ip: CLIENT_IP,
        dst: LISTENER,
    };
    let ctx = Ctx { args, client: t.client(), proxy: t.proxy(), template, interrupted };
    let cpus = core_affinity::get_core_ids().map_or(0, |c| c.len());
    println!(
        "rst-rate: SYNs to {LISTENER} from cli0 TX queue 0 (AF_XDP copy mode), generator on CPU {}, {cpus} CPUs, \
         window {} s after {} s warm-up, {} round(s), nice {}; sluice {}",
        ctx.gen_cpu().map_or("any".into(), |c| c.to_string()),
        args.seconds,
        args.warmup,
        args.rounds,
        args.nice.map_or("unchanged".into(), |n| n.to_string()),
        binary.display()
    );
    println!("load average before: {load_before}");

    let baselines: &[Baseline] = if args.no_baseline { &[] } else { &args.baselines };
    // sluice pins worker q to the q-th CPU it is allowed; RPS sends the kernel's work there.
    let worker0_cpu = core_affinity::get_core_ids().and_then(|c| c.first().map(|c| c.id)).unwrap_or(0);
    ensure!(worker0_cpu < 64, "CPU {worker0_cpu}: RPS masks past 64 CPUs are not supported here");
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for b in baselines {
            if *b == Baseline::KernelRps {
                set_rps(&ctx.proxy, 1 << worker0_cpu)?;
            }
            let m = ctx.measure(b.label(), None);
            if *b == Baseline::KernelRps {
                set_rps(&ctx.proxy, 0)?;
            }
            let m = m?;
            print!("{}", m.details());
            runs.push(m);
        }
        let mut p = start_sluice(&ctx, &binary, &dir)?;
        let m = ctx.measure("sluice", Some(&mut p));
        stop_sluice(&ctx, p)?;
        let m = m?;
        print!("{}", m.details());
        runs.push(m);
        if args.rounds > 1 {
            println!("-- round {} done; load average {}", round + 1, probe::loadavg());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    print!("{}", table(&runs));
    let mean = |label: &str, f: &dyn Fn(&Measurement) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|m| m.label == label).map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    for b in baselines {
        let k = b.label();
        let (sa, ka) = (mean("sluice", &|m| m.answered), mean(k, &|m| m.answered));
        let (sc, kc) =
            (mean("sluice", &|m| m.per_million(m.machine_cpu_s())), mean(k, &|m| m.per_million(m.machine_cpu_s())));
        let (st, kt) = (
            mean("sluice", &|m| m.per_million(m.own_threads_cpu_s())),
            mean(k, &|m| m.per_million(m.own_threads_cpu_s())),
        );
        println!(
            "sluice / {k}: answered/s {} ({} vs {}); CPU-s per million answered: machine {}, threads {}{}",
            ratio(sa, ka),
            fmt_rate(sa),
            fmt_rate(ka),
            ratio(sc, kc),
            ratio(st, kt),
            if args.rounds > 1 { format!(" (means over {} rounds)", args.rounds) } else { String::new() }
        );
    }
    println!("load average after: {}", probe::loadavg());
    println!(
        "(sent/s: frames the generator put on cli0's TX ring; answered/s: RSTs sent by sluice queue 0, or by \
         the proxy kernel (Tcp OutRsts); back@cli/s: Tcp InSegs in the client namespace. CPU-seconds per \
         million answered frames: machine = /proc/stat busy time, includes anything else running; threads = \
         gen + sluice + ksoftirq; gen = the generator thread, whose sendto also runs the receive softirqs it \
         raises (in the kernel runs without RPS, the proxy kernel's whole answer); sluice = all sluice \
         threads; ksoftirq = the ksoftirqd threads (deferred softirq work, e.g. RPS'd receive processing))"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_wire::{Checksum, parse_frame, rst_reply};

    fn template() -> SynTemplate {
        SynTemplate {
            src_mac: Address([2, 0, 0, 0, 0, 1]),
            dst_mac: Address([2, 0, 0, 0, 0, 2]),
            src_ip: CLIENT_IP,
            dst: LISTENER,
        }
    }

    #[test]
    fn syn_frames_parse_back_with_verified_checksums() {
        let t = template();
        let mut buf = [0u8; 2048];
        for i in [0u64, 1, 2, 64_511, 64_512, 1 << 40] {
            let len = t.emit(&mut buf, i).unwrap();
            let seg = parse_frame(&buf[..len], Checksum::Verify).unwrap();
            assert_eq!(seg.eth.src_addr, t.src_mac);
            assert_eq!(seg.eth.dst_addr, t.dst_mac);
            assert_eq!(seg.ip.src_addr(), std::net::IpAddr::V4(CLIENT_IP));
            assert_eq!(seg.ip.dst_addr(), std::net::IpAddr::V4(*LISTENER.ip()));
            assert_eq!(seg.tcp.dst_port, 443);
            assert_eq!(seg.tcp.src_port, SynTemplate::src_port(i));
            assert_eq!(seg.tcp.seq_number, SynTemplate::seq(i));
            assert_eq!(seg.tcp.flags, Flags::SYN);
            assert_eq!(seg.tcp.max_seg_size, Some(1460));
            // What sluice answers: a RST,ACK acknowledging the SYN, back to the client.
            let rst = rst_reply(&seg).unwrap();
            assert_eq!(rst.tcp.flags, Flags::RST | Flags::ACK);
            assert_eq!(rst.tcp.ack_number, SynTemplate::seq(i).wrapping_add(1));
            assert_eq!(rst.eth.dst_addr, t.src_mac);
        }
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum() {
        let mut buf = [0u8; 2048];
        let len = template().emit(&mut buf, 7).unwrap();
        buf[len - 1] ^= 0x01; // last option byte
        assert!(parse_frame(&buf[..len], Checksum::Verify).is_err());
    }

    #[test]
    fn source_ports_cycle_through_every_unprivileged_port() {
        assert_eq!(SynTemplate::src_port(0), 1024);
        assert_eq!(SynTemplate::src_port(1), 1025);
        assert_eq!(SynTemplate::src_port(64_511), 65_535);
        assert_eq!(SynTemplate::src_port(64_512), 1024);
        let ports: std::collections::HashSet<u16> = (0..64_512).map(SynTemplate::src_port).collect();
        assert_eq!(ports.len(), 64_512);
        assert_ne!(SynTemplate::seq(1), SynTemplate::seq(2));
    }

    #[test]
    fn too_small_a_buffer_is_an_error() {
        let mut buf = [0u8; 40];
        assert!(template().emit(&mut buf, 0).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:0a:ff:00:10:01\n"), Some(Address([2, 0x0a, 0xff, 0, 0x10, 1])));
        assert_eq!(parse_mac("02:0a:ff:00:10"), None);
        assert_eq!(parse_mac("02:0a:ff:00:10:01:02"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:10:01"), None);
    }

    #[test]
    fn stats_json_counters() {
        let v: Value = serde_json::from_str(
            r#"{"xdp":{"mode":"native","counters":{"redirected":1000,"redirect_failed":2,"pass_arp":1}},
                "queues":[{"queue":0,"rx_frames":990,"tx_frames":980,"rst_sent":980,"dropped_tx_full":10,
                           "dropped_checksum":1,"handoff_out":5,"idle_sleeps":4,"tcp":{"x":1}},
                          {"queue":1,"rx_frames":0,"tx_frames":0,"rst_sent":0}]}"#,
        )
        .unwrap();
        let s = sluice_sample(&v).unwrap();
        assert_eq!(s.mode, "native");
        assert_eq!((s.redirected, s.redirect_failed), (1000, 2));
        assert_eq!(s.queues.len(), 2);
        assert_eq!(
            s.queues[0],
            QueueSample {
                rx_frames: 990,
                tx_frames: 980,
                rst_sent: 980,
                dropped: 11,
                dropped_tx_full: 10,
                idle_sleeps: 4
            }
        );
        assert_eq!(s.queues[1], QueueSample::default());
        // A whole /stats.json of sluice on AF_XDP (after a soak, so no RSTs).
        let captured: Value = serde_json::from_str(include_str!("testdata/stats.json")).unwrap();
        let s = sluice_sample(&captured).unwrap();
        assert_eq!((s.mode.as_str(), s.redirected), ("native", 7_563_709));
        assert_eq!(s.queues.len(), 2);
        assert_eq!(s.queues[0].rx_frames, 3_785_805);
        assert_eq!(s.queues[1].rst_sent, 0);
        assert!(sluice_sample(&serde_json::json!({"queues": []})).is_err());
        assert!(sluice_sample(&serde_json::json!({"xdp": {"counters": {"redirected": 1}}})).is_err());
    }

    #[test]
    fn autogroup_lines() {
        assert_eq!(autogroup_nice("/autogroup-25 nice 0\n"), Some(0));
        assert_eq!(autogroup_nice("/autogroup-3 nice -10\n"), Some(-10));
        assert_eq!(autogroup_nice("/autogroup-3\n"), None);
    }

    #[test]
    fn rates_print_with_thousands_separators() {
        assert_eq!(fmt_rate(0.0), "0");
        assert_eq!(fmt_rate(999.4), "999");
        assert_eq!(fmt_rate(1_234_567.8), "1,234,568");
        assert_eq!(fmt_rate(f64::NAN), "-");
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(ratio(3.0, 2.0), "1.50");
    }

    #[test]
    fn the_config_parses_as_toml_with_a_refusing_listener() {
        let text = sluice_config();
        assert!(text.contains("xdp_mode = \"native\""));
        assert!(text.contains("address = \"198.51.100.2:443\""));
        assert!(text.contains("refuse = true"));
        assert!(text.contains("interface = \"px0\""));
    }
}
