//! `sluice-bench compare` (run by `cargo xtask bench compare`): the same TLS loads against
//! (1) sluice on AF_XDP, (2) sluice on kernel sockets, (3) nginx (Debian, `stream` TLS
//! termination) and (4) HAProxy (Debian, `mode tcp`), one at a time in the test topology, all
//! with the same ECDSA P-256 certificate, TLS 1.2 + 1.3, X25519, a shared session cache and no
//! tickets, two workers each, relaying to the same `sluice-bench backend`.
//!
//! The client's word is not proof: after every run the server's own counts of full and resumed
//! handshakes (sluice's `/stats.json`; nginx's `$ssl_session_reused` in its stream access log;
//! HAProxy's `ssl_sess` and `ssl_reused_sess` on its stats socket) are compared with the load
//! generator's. A run with a mismatch, with any failed connection, or that ended in an error is
//! FAILED: its check column and its `compare.json` entry say why, and once the table and the JSON
//! are written the command exits non-zero. A FAILED run's figures are shown but are no result.
//!
//! Out: one Markdown table on stdout (handshakes/s, handshake latency p50/p99/p99.9 from the
//! intended start, whole-machine and server CPU per connection (keep-alive: per request), ratios
//! against nginx), `compare.json` (every run with its exact configuration and versions) and one
//! SVG percentile plot per fixed rate, under `--out`.
//!
//! What it is not: a NIC benchmark. Everything runs on one 2-core machine over veth; the load
//! generator and the server share the cores.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice_bench::load::{self, LoadArgs, LoadReport, Mode, TlsVersion};
use sluice_bench::{admin, probe};
use sluice_testbed::{NsProcess, TopologyGuard};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    SluiceXdp,
    SluiceKernel,
    Nginx,
    Haproxy,
}

impl Target {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::SluiceXdp => "sluice AF_XDP",
            Self::SluiceKernel => "sluice kernel",
            Self::Nginx => "nginx",
            Self::Haproxy => "HAProxy",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Short runs at two rates: finishes in under 3 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Results directory (JSON, plots).
    #[arg(long, default_value = "target/bench-compare")]
    pub out: PathBuf,
    /// The sluice binary.
    #[arg(long, default_value = "target/release/sluice")]
    pub sluice: PathBuf,
    /// Targets to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::SluiceXdp, Target::SluiceKernel, Target::Nginx, Target::Haproxy])]
    pub targets: Vec<Target>,
    /// Fixed rates (full TLS 1.3 handshakes/s); default 300,1000 (quick) or 250,500,1000,2000.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Seconds per run; default 3 (quick) or 10.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Connections at once in the max-rate (closed loop) runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Namespace prefix of the topology.
    #[arg(long, default_value = "scmp-")]
    pub prefix: String,
    /// sluice's `datapath.busy_poll_us` (how long an idle worker polls before it sleeps).
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// sluice's `datapath.pin_workers` (worker i on core i).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_workers: bool,
}

/// One load of the matrix.
#[derive(Clone, Debug)]
struct Run {
    name: String,
    mode: Mode,
    tls: TlsVersion,
    rate: Option<f64>,
}

fn runs(args: &Args) -> (Vec<Run>, f64) {
    let seconds = args.seconds.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    let rates = if !args.rates.is_empty() {
        args.rates.clone()
    } else if args.quick {
        vec![300.0, 1000.0]
    } else {
        vec![250.0, 500.0, 1000.0, 2000.0]
    };
    let run = |mode, tls, rate: Option<f64>| {
        let m = match mode {
            Mode::Full => "full",
            Mode::Resume => "resumed",
            Mode::Keepalive => "keepalive",
        };
        let v = if tls == TlsVersion::Tls12 { "1.2" } else { "1.3" };
        let r = rate.map_or("max".to_owned(), |r| format!("{r}/s"));
        Run { name: format!("{m} {v} @ {r}"), mode, tls, rate }
    };
    let mut out: Vec<Run> = rates.iter().map(|r| run(Mode::Full, TlsVersion::Tls13, Some(*r))).collect();
    out.push(run(Mode::Full, TlsVersion::Tls13, None));
    if !args.quick {
        out.push(run(Mode::Full, TlsVersion::Tls12, None));
    }
    out.push(run(Mode::Resume, TlsVersion::Tls12, None));
    out.push(run(Mode::Resume, TlsVersion::Tls13, None));
    if !args.quick {
        out.push(run(Mode::Keepalive, TlsVersion::Tls13, None));
    }
    (out, seconds)
}

/// sluice's datapath knobs that the benchmarks set from their command lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// `datapath.busy_poll_us`.
    pub busy_poll_us: u64,
    /// `datapath.pin_workers`.
    pub pin_workers: bool,
}

/// A server under test, running in the proxy namespace.
pub(crate) struct Server {
    target: Target,
    process: NsProcess,
    /// The configuration file it was started with (recorded in the JSON).
    config_text: String,
    /// nginx: the access log the counts come from; HAProxy: its stats socket.
    log: PathBuf,
    proxy_ns: String,
}

/// Where every server under test listens (in the proxy namespace).
pub(crate) const LISTEN: &str = "198.51.100.2:443";

impl Server {
    /// Writes `target`'s configuration under `dir`, starts it in `proxy_ns` and waits until its
    /// listener accepts a connection from `client_ns`.
    pub(crate) fn start(
        target: Target,
        sluice_bin: &Path,
        dir: &Path,
        certs: &Path,
        proxy_ns: &str,
        client_ns: &str,
        sluice: Tuning,
    ) -> Result<Self> {
        let d = certs.display();
        let log = dir.join(format!("{target:?}.log").to_lowercase());
        let (program, args, config_text, conn_log): (String, Vec<String>, String, PathBuf) = match target {
            Target::SluiceXdp | Target::SluiceKernel => {
                let datapath = if target == Target::SluiceXdp {
                    format!(
                        "[datapath]\ninterface = \"px0\"\nxdp_mode = \"native\"\nframes_per_queue = 16384\n\
                             busy_poll_us = {}\npin_workers = {}\n",
                        sluice.busy_poll_us, sluice.pin_workers
                    )
                } else {
                    format!("[datapath]\ntransport = \"kernel\"\npin_workers = {}\n", sluice.pin_workers)
                };
                let text = format!(
                    "{datapath}\n[[listener]]\naddress = \"{LISTEN}\"\nbackend = \"203.0.113.2:8080\"\n\n[listener.tls]\n\
                     certificates = [{{ cert = \"{d}/a.test.pem\", key = \"{d}/a.test.key\", sni = [\"a.test\"], default = true }}]\n\
                     alpn = [\"http/1.1\"]\ngroups = [\"x25519\"]\nresumption = \"session_id\"\n"
                );
                let file = dir.join(format!("{target:?}.toml").to_lowercase());
                std::fs::write(&file, &text)?;
                (
                    sluice_bin.display().to_string(),
                    vec!["--config".into(), file.display().to_string()],
                    text,
                    log.clone(),
                )
            }
            Target::Nginx => {
                let dir_s = dir.display();
                let access = dir.join("nginx-access.log");
                let text = format!(
                    "# nginx from Debian: stream TLS termination, 2 workers, shared session cache, no tickets.\n\
                     load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
                     worker_processes 2;\nworker_rlimit_nofile 65536;\npid {dir_s}/nginx.pid;\n\
                     error_log {dir_s}/nginx-error.log warn;\n\
                     events {{ worker_connections 20000; }}\n\
                     stream {{\n\
                     \x20   log_format sess '$ssl_session_reused $ssl_protocol $ssl_cipher';\n\
                     \x20   access_log {} sess;\n\
                     \x20   server {{\n\
                     \x20       listen {LISTEN} ssl reuseport backlog=4096;\n\
                     \x20       ssl_certificate {d}/a.test.pem;\n\
                     \x20       ssl_certificate_key {d}/a.test.key;\n\
                     \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
                     \x20       ssl_ecdh_curve X25519;\n\
                     \x20       ssl_session_cache shared:SSL:64m;\n\
                     \x20       ssl_session_timeout 2h;\n\
                     \x20       ssl_session_tickets off;\n\
                     \x20       proxy_pass 203.0.113.2:8080;\n\
                     \x20   }}\n\
                     }}\n",
                    access.display()
                );
                let file = dir.join("nginx.conf");
                std::fs::write(&file, &text)?;
                (
                    "nginx".into(),
                    vec![
                        "-p".into(),
                        dir.display().to_string(),
                        "-c".into(),
                        file.display().to_string(),
                        "-g".into(),
                        "daemon off;".into(),
                    ],
                    text,
                    access,
                )
            }
            Target::Haproxy => {
                let pem = dir.join("haproxy.pem");
                std::fs::write(
                    &pem,
                    format!(
                        "{}{}",
                        std::fs::read_to_string(certs.join("a.test.pem"))?,
                        std::fs::read_to_string(certs.join("a.test.key"))?
                    ),
                )?;
                let text = format!(
                    "# HAProxy from Debian: mode tcp TLS termination, 2 threads, shared session cache, no tickets.\n\
                     global\n    nbthread 2\n    maxconn 9000\n    tune.ssl.cachesize 200000\n    tune.ssl.lifetime 7200\n\
                     \x20   ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets\n\
                     \x20   log stdout format raw local0 info\n\
                     \x20   stats socket {} mode 600 level admin\n\
                     defaults\n    mode tcp\n    log global\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
                     frontend tls\n    bind {LISTEN} ssl crt {} curves X25519 no-tls-tickets alpn http/1.1\n\
                     \x20   log-format \"%[ssl_fc_is_resumed] %[ssl_fc_protocol] %[ssl_fc_cipher]\"\n\
                     \x20   default_backend be\n\
                     backend be\n    server b1 203.0.113.2:8080\n",
                    dir.join("haproxy.sock").display(),
                    pem.display()
                );
                let file = dir.join("haproxy.cfg");
                std::fs::write(&file, &text)?;
                (
                    "haproxy".into(),
                    vec!["-f".into(), file.display().to_string(), "-db".into()],
                    text,
                    dir.join("haproxy.sock"),
                )
            }
        };
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = NsProcess::spawn(proxy_ns, &program, &argv, log)?;
        // Ready when the listener accepts a TCP connection from the client namespace.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = process.try_wait()? {
                bail!("{} exited ({status}) before it was ready:\n{}", target.label(), tail(&process.log(), 15));
            }
            let ok = sluice_testbed::in_netns(client_ns, || {
                std::net::TcpStream::connect_timeout(
                    &LISTEN.parse::<SocketAddr>().expect("static"),
                    Duration::from_millis(300),
                )
                .is_ok()
            })?;
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 20 s:\n{}", target.label(), tail(&process.log(), 15));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { target, process, config_text, log: conn_log, proxy_ns: proxy_ns.to_owned() })
    }

    /// The server's own cumulative count of (full, resumed) TLS handshakes.
    pub(crate) fn handshakes(&self) -> Result<(u64, u64)> {
        match self.target {
            Target::SluiceXdp | Target::SluiceKernel => Ok(admin::handshakes(&self.stats()?)),
            // HAProxy's own counters (stats socket, `show stat`, the frontend's row): `ssl_sess`
            // counts new sessions (full handshakes), `ssl_reused_sess` resumed ones. Its
            // connection log (`%[ssl_fc_is_resumed]`) lost a few lines per run under load.
            Target::Haproxy => {
                let stat = haproxy_command(&self.log, "show stat")?;
                let mut lines = stat.lines();
                let header: Vec<&str> =
                    lines.next().context("show stat: empty")?.trim_start_matches("# ").split(',').collect();
                let col = |name: &str| {
                    header.iter().position(|h| *h == name).with_context(|| format!("show stat: no {name}"))
                };
                let (sess, reused) = (col("ssl_sess")?, col("ssl_reused_sess")?);
                let row: Vec<&str> = lines
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .find(|r| r.first() == Some(&"tls") && r.get(1) == Some(&"FRONTEND"))
                    .context("show stat: no FRONTEND row for tls")?;
                let num = |i: usize| row.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                Ok((num(sess), num(reused)))
            }
            Target::Nginx => {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let (mut full, mut resumed) = (0, 0);
                for line in text.lines() {
                    let mut f = line.split_whitespace();
                    let (Some(reused), Some(proto)) = (f.next(), f.next()) else {
                        continue;
                    };
                    if !proto.starts_with("TLSv") {
                        continue;
                    }
                    match reused {
                        "r" => resumed += 1,
                        "." => full += 1,
                        _ => {}
                    }
                }
                Ok((full, resumed))
            }
        }
    }

    /// CPU seconds of the server's process tree (nginx's master and workers).
    fn cpu_seconds(&self) -> f64 {
        probe::process_tree(self.process.pid()).into_iter().filter_map(probe::process_cpu_seconds).sum()
    }

    /// sluice's `/stats.json` now (sluice targets only).
    pub(crate) fn stats(&self) -> Result<Value> {
        admin::stats(&self.proxy_ns)
    }

    /// The configuration file it was started with.
    pub(crate) fn config_text(&self) -> &str {
        &self.config_text
    }

    /// The server's process id (its main process: nginx's master).
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub(crate) fn stop(mut self) -> Result<()> {
        self.process.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))?;
        Ok(())
    }
}

/// One command on HAProxy's stats socket; the whole answer.
fn haproxy_command(socket: &Path, command: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One measured run against one target.
struct Outcome {
    target: Target,
    run: Run,
    result: Result<Measured, String>,
}

struct Measured {
    report: LoadReport,
    server_full: u64,
    server_resumed: u64,
    server_cpu_s: f64,
    /// sluice's /stats.json after the run (its TCP, drop and latency counters).
    server_stats: Option<Value>,
}

impl Measured {
    /// Client and server agree on every handshake (priming included) and on their kinds.
    fn agrees(&self) -> bool {
        self.server_full == self.report.handshakes_full() && self.server_resumed == self.report.handshakes_resumed()
    }
    /// Why this run is FAILED, if it is: see [`run_failure`].
    fn failure(&self) -> Option<String> {
        run_failure(
            self.report.measured.failed_total(),
            self.report.priming.failed_total(),
            (self.server_full, self.server_resumed),
            (self.report.handshakes_full(), self.report.handshakes_resumed()),
        )
    }
    /// Handshakes/s; requests/s for a keep-alive run (its handshakes happen before the clock).
    fn hs_per_s(&self) -> f64 {
        let m = &self.report.measured;
        let n = if self.report.args.mode == Mode::Keepalive { m.requests } else { m.handshakes() };
        n as f64 / m.elapsed.as_secs_f64().max(1e-9)
    }
    /// Handshake latency (keep-alive: request latency) at quantile `q`, in milliseconds.
    fn pct_ms(&self, q: f64) -> f64 {
        let m = &self.report.measured;
        let h = if self.report.args.mode == Mode::Keepalive { &m.request } else { &m.handshake };
        h.value_at_quantile(q) as f64 / 1000.0
    }
    /// Whole-machine CPU (server, load generator, kernel) per connection; per request for a
    /// keep-alive run, as [`Self::server_cpu_us_per_conn`].
    fn cpu_us_per_conn(&self) -> Option<f64> {
        let n = self.per_what();
        (n > 0).then(|| self.report.machine_cpu_s * 1e6 / n as f64)
    }
    /// Server CPU per connection; per request for a keep-alive run.
    fn server_cpu_us_per_conn(&self) -> Option<f64> {
        let n = self.per_what();
        (n > 0).then(|| self.server_cpu_s * 1e6 / n as f64)
    }
    /// What CPU is divided by: completed connections; requests for a keep-alive run.
    fn per_what(&self) -> u64 {
        let m = &self.report.measured;
        if self.report.args.mode == Mode::Keepalive { m.requests } else { m.completed }
    }
}

/// Why a run is FAILED, or `None` when it is not: any failed connection of the load generator
/// (measured phase or priming), or the server's own counts of (full, resumed) handshakes
/// differing from the client's. A number that comes with failures is not a result.
fn run_failure(failed: u64, failed_priming: u64, server: (u64, u64), client: (u64, u64)) -> Option<String> {
    let mut why = Vec::new();
    if failed + failed_priming > 0 {
        let priming = if failed_priming > 0 { format!(" ({failed_priming} while priming)") } else { String::new() };
        let n = failed + failed_priming;
        let s = if n == 1 { "" } else { "s" };
        why.push(format!("{n} failed handshake{s}{priming}"));
    }
    if server != client {
        why.push(format!("server counts {}/{} vs client {}/{}", server.0, server.1, client.0, client.1));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Why an outcome is FAILED: its error, or [`Measured::failure`].
fn outcome_failure(result: &Result<Measured, String>) -> Option<String> {
    match result {
        Ok(m) => m.failure(),
        Err(e) => Some(format!("error: {}", first_line(e))),
    }
}

pub(crate) fn versions(sluice: &Path) -> Value {
    let out = |p: &str, a: &[&str]| -> String {
        std::process::Command::new(p)
            .args(a)
            .output()
            .map(|o| {
                let s = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                s.lines().next().unwrap_or("").trim().to_owned()
            })
            .unwrap_or_else(|e| format!("unavailable: {e}"))
    };
    json!({
        "sluice": out(&sluice.display().to_string(), &["--version"]),
        "sluice_git": out("git", &["rev-parse", "HEAD"]),
        "nginx": out("nginx", &["-v"]),
        "haproxy": out("haproxy", &["-v"]),
        "openssl": out("openssl", &["version"]),
        "kernel": out("uname", &["-r"]),
        "load_generator": "sluice-bench load: rustls 0.23 (aws-lc-rs), mio",
    })
}

/// The results directory of a benchmark: `out` made absolute, the certificates (`a.test` and
/// its CA, made once and never overwritten) in `certs/`, working files in `run/`.
pub(crate) struct Dirs {
    pub out: PathBuf,
    pub certs: PathBuf,
    pub work: PathBuf,
}

impl Dirs {
    pub(crate) fn make(out: &Path) -> Result<Self> {
        std::fs::create_dir_all(out)?;
        let out = std::fs::canonicalize(out)?;
        let certs = out.join("certs");
        let work = out.join("run");
        std::fs::create_dir_all(&work)?;
        crate::backend::certs::run(&crate::backend::certs::Args { dir: certs.clone(), names: vec!["a.test".into()] })?;
        Ok(Self { out, certs, work })
    }
}

/// The test topology of prefix `prefix` with `sluice-bench backend` running in its backend
/// namespace on 203.0.113.2:8080. Dropping it stops the backend, then removes the namespaces.
pub(crate) struct Bed {
    // Field order = drop order: the backend stops before the namespaces go.
    _backend: NsProcess,
    topology: TopologyGuard,
}

impl Bed {
    /// `id` names the backend in its responses; its log goes to `work/backend.log`.
    pub(crate) fn up(prefix: &str, id: &str, work: &Path) -> Result<Self> {
        let topology = TopologyGuard::up(prefix)?;
        let (client, proxy, backend_ns) =
            (topology.topology.client(), topology.topology.proxy(), topology.topology.backend());
        // Ephemeral ports: tens of thousands of connections per run from one client address.
        for ns in [&client, &proxy] {
            sluice_testbed::in_ns(
                ns,
                "sysctl",
                &["-q", "-w", "net.ipv4.ip_local_port_range=10000 65000", "net.ipv4.tcp_tw_reuse=1"],
            )?;
        }
        let exe = std::env::current_exe()?;
        let backend = NsProcess::spawn(
            &backend_ns,
            &exe.display().to_string(),
            &["backend", "--listen", "203.0.113.2:8080", "--id", id, "--max-connections", "30000"],
            work.join("backend.log"),
        )?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { _backend: backend, topology })
    }

    pub(crate) fn client(&self) -> String {
        self.topology.topology.client()
    }

    pub(crate) fn proxy(&self) -> String {
        self.topology.topology.proxy()
    }
}

pub fn run(args: &Args) -> Result<()> {
    sluice_testbed::require_root().context("compare runs servers in network namespaces")?;
    let started = Instant::now();
    let Dirs { out, certs, work } = Dirs::make(&args.out)?;
    let sluice_bin =
        std::fs::canonicalize(&args.sluice).with_context(|| format!("sluice binary {}", args.sluice.display()))?;
    let (matrix, seconds) = runs(args);
    let versions = versions(&sluice_bin);
    eprintln!(
        "compare: {} targets x {} runs of {seconds} s; results in {}",
        args.targets.len(),
        matrix.len(),
        out.display()
    );
    let bed = Bed::up(&args.prefix, "compare", &work)?;
    let (client, proxy) = (bed.client(), bed.proxy());
    let tuning = Tuning { busy_poll_us: args.busy_poll_us, pin_workers: args.pin_workers };

    let mut outcomes = Vec::new();
    let mut configs = serde_json::Map::new();
    for &target in &args.targets {
        let dir = work.join(format!("{target:?}").to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        eprintln!("compare: {}", target.label());
        let server = match Server::start(target, &sluice_bin, &dir, &certs, &proxy, &client, tuning) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("compare: {} did not start: {msg}", target.label());
                for run in &matrix {
                    outcomes.push(Outcome {
                        target,
                        run: run.clone(),
                        result: Err(format!("did not start: {}", first_line(&msg))),
                    });
                }
                continue;
            }
        };
        configs.insert(target.label().to_owned(), json!(server.config_text));
        for run in &matrix {
            let result = measure(&server, run, args, seconds, &client).map_err(|e| format!("{e:#}"));
            match &result {
                Ok(m) => eprintln!(
                    "  {:<22} {:>8.0} hs/s  p99 {:>7.2} ms  client {}/{} server {}/{} (full/resumed){}",
                    run.name,
                    m.hs_per_s(),
                    m.pct_ms(0.99),
                    m.report.handshakes_full(),
                    m.report.handshakes_resumed(),
                    m.server_full,
                    m.server_resumed,
                    m.failure().map_or(String::new(), |f| format!("  FAILED: {f}"))
                ),
                Err(e) => eprintln!("  {:<22} failed: {e}", run.name),
            }
            outcomes.push(Outcome { target, run: run.clone(), result });
        }
        if let Err(e) = server.stop() {
            eprintln!("compare: stopping {}: {e:#}", target.label());
        }
    }
    drop(bed);

    let table = table(&outcomes, &matrix);
    println!("{table}");
    // One plot per fixed rate: handshake latency percentiles, one line per target.
    let mut plots = Vec::new();
    for run in matrix.iter().filter(|r| r.rate.is_some()) {
        let series: Vec<(String, Vec<(f64, u64)>)> = outcomes
            .iter()
            .filter(|o| o.run.name == run.name)
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .ok()
                    .map(|m| (o.target.label().to_owned(), load::percentile_points(&m.report.measured.handshake)))
            })
            .collect();
        let file = out.join(format!("handshake-latency-{}.svg", run.rate.unwrap_or(0.0)));
        let title = format!("TLS 1.3 full handshake latency at {}/s (from intended start)", run.rate.unwrap_or(0.0));
        sluice_bench::plot::write_svg(&file, &title, &series)?;
        plots.push(file.display().to_string());
    }
    let results: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let failure = outcome_failure(&o.result);
            let mut v = json!({
                "target": o.target.label(), "run": o.run.name,
                "failed": failure.is_some(), "failure": failure,
            });
            match &o.result {
                Ok(m) => {
                    v["load"] = m.report.to_json();
                    v["server"] = json!({
                        "handshakes_full": m.server_full, "handshakes_resumed": m.server_resumed,
                        "agrees_with_client": m.agrees(), "cpu_s": m.server_cpu_s,
                        "stats_after": m.server_stats,
                    });
                    v["cpu_us_per_connection"] = json!(m.cpu_us_per_conn());
                    v["server_cpu_us_per_connection"] = json!(m.server_cpu_us_per_conn());
                }
                Err(e) => v["error"] = json!(e),
            }
            v
        })
        .collect();
    let failed_runs = outcomes.iter().filter(|o| outcome_failure(&o.result).is_some()).count();
    let doc = json!({
        "failed_runs": failed_runs,
        "quick": args.quick, "seconds_per_run": seconds, "concurrency": args.concurrency, "threads": args.threads,
        "versions": versions, "server_configs": configs, "plots": plots, "table_markdown": table,
        "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "results": results, "wall_s": started.elapsed().as_secs_f64(),
    });
    let json_path = out.join("compare.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    println!("results: {} and {}", json_path.display(), plots.join(", "));
    println!("compare took {:.0} s", started.elapsed().as_secs_f64());
    if failed_runs > 0 {
        bail!("{failed_runs} of {} runs FAILED (see the check column)", outcomes.len());
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
}

fn measure(server: &Server, run: &Run, args: &Args, seconds: f64, client: &str) -> Result<Measured> {
    let before = server.handshakes()?;
    let cpu0 = server.cpu_seconds();
    let mut load = LoadArgs::new(LISTEN.parse()?, PathBuf::new());
    load.ca = std::fs::canonicalize(&args.out)?.join("certs/ca.pem");
    load.mode = run.mode;
    load.tls = run.tls;
    load.rate = run.rate;
    load.duration = seconds;
    load.concurrency = args.concurrency;
    load.threads = args.threads;
    load.netns = Some(client.to_owned());
    load.timeout_ms = 5_000;
    let report = load::run(&load)?;
    let server_cpu_s = server.cpu_seconds() - cpu0;
    // Handshakes still in flight at the server (abandoned by a timed-out client) and logs
    // written when a connection closes: wait until the server's counts stand still.
    // A TLS 1.3 client counts its handshake when it sends its Finished, the server when it has
    // read it: a connection the client abandoned right then (a timeout in an overloaded run) is
    // one the server never counts, and the table says how many failed.
    let mut after = server.handshakes()?;
    let (deadline, mut still) = (Instant::now() + Duration::from_secs(15), 0);
    while still < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(400));
        let now = server.handshakes()?;
        still = if now == after { still + 1 } else { 0 };
        after = now;
    }
    let server_stats = match server.target {
        Target::SluiceXdp | Target::SluiceKernel => server.stats().ok(),
        _ => None,
    };
    Ok(Measured {
        report,
        server_full: after.0 - before.0,
        server_resumed: after.1 - before.1,
        server_cpu_s,
        server_stats,
    })
}

fn table(outcomes: &[Outcome], matrix: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| run | target | handshakes/s (keep-alive: requests/s) | x nginx | p50 ms | p99 ms | p99.9 ms | x nginx (p99) | machine CPU µs/conn (keep-alive: /request) | x nginx | server CPU µs/conn (keep-alive: /request) | server full/resumed | check |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for run in matrix {
        let nginx = outcomes
            .iter()
            .find(|o| o.run.name == run.name && o.target == Target::Nginx)
            .and_then(|o| o.result.as_ref().ok());
        for o in outcomes.iter().filter(|o| o.run.name == run.name) {
            let m = match &o.result {
                Ok(m) => m,
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "| {} | {} | error: {} | | | | | | | | | | FAILED: error |",
                        run.name,
                        o.target.label(),
                        e.replace('|', "/").replace('\n', " ")
                    );
                    continue;
                }
            };
            let ratio =
                |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map_or("".to_owned(), |b| format!("{:.2}", a / b));
            let cpu = m.cpu_us_per_conn();
            let mut check = match m.failure() {
                Some(why) => format!("FAILED: {why}"),
                None => "ok".to_owned(),
            };
            for f in &m.report.flagged {
                check += &format!(", {f}");
            }
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {}/{} | {} |",
                run.name,
                o.target.label(),
                m.hs_per_s(),
                ratio(m.hs_per_s(), nginx.map(|n| n.hs_per_s())),
                m.pct_ms(0.5),
                m.pct_ms(0.99),
                m.pct_ms(0.999),
                ratio(m.pct_ms(0.99), nginx.map(|n| n.pct_ms(0.99))),
                cpu.map_or("".to_owned(), |c| format!("{c:.0}")),
                cpu.map_or("".to_owned(), |c| ratio(c, nginx.and_then(|n| n.cpu_us_per_conn()))),
                m.server_cpu_us_per_conn().map_or("".to_owned(), |c| format!("{c:.0}")),
                m.server_full,
                m.server_resumed,
                check.replace('|', "/"),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_bench::load::Tally;

    /// A measured full-handshake run: `full` handshakes the client saw, `failed` failed
    /// connections, and the server's count of full handshakes.
    fn measured(full: u64, failed: u64, server_full: u64) -> Measured {
        let measured = Tally {
            started: full + failed,
            completed: full,
            failed: [0, 0, 0, 0, 0, failed],
            handshakes_full: full,
            elapsed: Duration::from_secs(1),
            ..Tally::default()
        };
        Measured {
            report: LoadReport {
                args: LoadArgs::new(LISTEN.parse().expect("static"), PathBuf::new()),
                priming: Tally::default(),
                measured,
                machine_cpu_s: 0.5,
                generator_cpu_s: 0.1,
                no_ticket_offered: 0,
                flagged: Vec::new(),
            },
            server_full,
            server_resumed: 0,
            server_cpu_s: 0.2,
            server_stats: None,
        }
    }

    fn outcome(result: Result<Measured, String>) -> (Outcome, Run) {
        let run = Run { name: "full 1.3 @ max".into(), mode: Mode::Full, tls: TlsVersion::Tls13, rate: None };
        let o = Outcome { target: Target::SluiceXdp, run: run.clone(), result };
        (o, run)
    }

    /// The check column of the table's only row.
    fn check_column(result: Result<Measured, String>) -> String {
        let (o, run) = outcome(result);
        let t = table(&[o], &[run]);
        let row = t.lines().nth(2).expect("one row");
        row.trim_end_matches(" |").rsplit(" | ").next().expect("columns").to_owned()
    }

    #[test]
    fn a_clean_run_is_ok() {
        assert_eq!(run_failure(0, 0, (100, 7), (100, 7)), None);
        assert_eq!(measured(100, 0, 100).failure(), None);
        assert_eq!(check_column(Ok(measured(100, 0, 100))), "ok");
    }

    #[test]
    fn failed_handshakes_fail_the_run() {
        assert_eq!(run_failure(13_833, 0, (100, 0), (100, 0)).as_deref(), Some("13833 failed handshakes"));
        assert_eq!(run_failure(2, 1, (5, 0), (5, 0)).as_deref(), Some("3 failed handshakes (1 while priming)"));
        assert_eq!(check_column(Ok(measured(100, 13_833, 100))), "FAILED: 13833 failed handshakes");
    }

    #[test]
    fn disagreeing_counts_fail_the_run() {
        assert_eq!(run_failure(0, 0, (100, 0), (99, 0)).as_deref(), Some("server counts 100/0 vs client 99/0"));
        assert_eq!(
            check_column(Ok(measured(99, 1, 100))),
            "FAILED: 1 failed handshake; server counts 100/0 vs client 99/0"
        );
    }

    #[test]
    fn an_error_fails_the_run_and_is_never_ok() {
        let e = Err("priming: no connection completed\nmore".to_owned());
        assert_eq!(outcome_failure(&e).as_deref(), Some("error: priming: no connection completed"));
        let col = check_column(e);
        assert!(col.starts_with("FAILED"), "{col}");
    }

    #[test]
    fn machine_cpu_is_shown_for_closed_loop_runs() {
        // 0.5 s of machine CPU over 100 connections: 5000 µs each, in a max-rate row.
        let (o, run) = outcome(Ok(measured(100, 0, 100)));
        let t = table(&[o], &[run]);
        let row: Vec<&str> = t.lines().nth(2).expect("one row").split(" | ").collect();
        assert_eq!(row[8], "5000");
        assert_eq!(row[10], "2000");
    }
}
