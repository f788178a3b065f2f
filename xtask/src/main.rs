//! `cargo xtask`: sluice's orchestration. Everything a newcomer or CI runs goes through here.
//!
//! - `cargo xtask demo`: sluice in the test topology terminating TLS in front of a backend, a
//!   short load of full and resumed handshakes from the client namespace, the histograms.
//! - `cargo xtask netns up|down`: the test topology of ../shared/DESIGN.md (idempotent).
//! - `cargo xtask test`: builds everything (the XDP program included) and runs every test:
//!   unit, property, and the integration tests that need root and namespaces.
//! - `cargo xtask bench rst|tcp|wire|ceiling`: the benchmark programs (release builds); they print
//!   figures and ratios against a baseline measured in the same run.
//! - `cargo xtask bench compare [--quick]`: TLS loads against sluice (AF_XDP, kernel sockets),
//!   nginx and HAProxy in the test topology; one table, JSON and plots in target/bench-compare.
//!   Exits non-zero if any run FAILED (failed handshakes, counts that disagree, an error).
//! - `cargo xtask bench soak [-- --duration S ...]`: sluice on AF_XDP under a mixed TLS load at
//!   70 % of its measured maximum, sampled every second, drained, judged PASS or FAIL (non-zero
//!   exit); JSON and a plot in target/bench-soak.
#![forbid(unsafe_code)]

mod fleet;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sluice_testbed::Topology;

#[derive(Parser)]
#[command(about = "sluice's build, test and demo tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build sluice, bring up the topology, run a short TLS handshake load through sluice, print
    /// the latency histograms, tear everything down.
    Demo {
        /// Seconds of load per handshake kind.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
    },
    /// Create or remove the test topology (namespaces sluice-client, sluice-proxy, sluice-backend).
    Netns {
        #[command(subcommand)]
        action: NetnsAction,
    },
    /// Run a benchmark: `rst` (RSTs/s of one worker vs the kernel, in the test topology),
    /// `tcp` (sluice's TCP vs smoltcp in memory, simulator throughput), `wire` (parse/emit),
    /// `ceiling` (handshakes/s in memory: rustls alone vs through sluice's TCP).
    /// `compare` (TLS load: sluice on AF_XDP and on kernel sockets vs nginx vs HAProxy).
    /// `soak` (sluice under a mixed TLS load for minutes: RSS, connections, UMEM, failures).
    /// `fleet` (resumption through a shared Redis session store vs local only).
    Bench {
        #[arg(value_enum)]
        which: Bench,
        /// compare: short runs at two rates (under 3 minutes).
        #[arg(long)]
        quick: bool,
        /// Extra arguments for the benchmark program.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Build everything and run all tests (unit, property, root integration tests).
    Test {
        /// Extra arguments passed to every `cargo test` invocation after `--` (e.g. a test name filter).
        #[arg(last = true)]
        extra: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Bench {
    Rst,
    Tcp,
    Wire,
    Ceiling,
    Compare,
    Soak,
    Fleet,
}

#[derive(Subcommand)]
enum NetnsAction {
    /// Create the topology; repairs what a crashed run left behind.
    Up,
    /// Remove the topology's namespaces (and their veths); nothing else.
    Down,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Netns { action: NetnsAction::Up } => {
            let t = Topology::standard();
            t.up()?;
            println!("topology up: {} {} {}", t.client(), t.proxy(), t.backend());
        }
        Task::Netns { action: NetnsAction::Down } => {
            Topology::standard().down()?;
            println!("topology down");
        }
        Task::Test { extra } => test(&extra)?,
        Task::Demo { seconds } => demo(seconds)?,
        Task::Bench { which, quick, extra } => bench(which, quick, &extra)?,
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    sluice_testbed::require_root().context("`cargo xtask test` runs the integration tests")?;
    // One style and the workspace's lints, before anything runs.
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    // One build of everything first, so a compile error is reported once and early.
    cargo(&["build", "--workspace", "--all-targets"], &[])?;
    // Unit and property tests, in parallel.
    cargo(&["test", "--workspace", "--lib", "--bins"], extra)?;
    // Integration tests share the machine's two cores and create namespaces: one at a time.
    let mut serial = vec!["--test-threads=1".to_owned()];
    serial.extend_from_slice(extra);
    cargo(&["test", "--workspace", "--tests", "--exclude", "xtask"], &serial)?;
    Ok(())
}

fn target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())
}

/// Demo certificates in run/certs, made once (never overwritten; keys stay out of git in run/).
fn certs() -> Result<()> {
    std::fs::create_dir_all("run/certs")?;
    let status = Command::new(format!("{}/release/sluice-bench", target_dir()))
        .args(["certs", "--dir", "run/certs", "--names", "a.test,b.test"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("sluice-bench certs failed: {status}");
    }
    Ok(())
}

fn demo(seconds: u32) -> Result<()> {
    use sluice_testbed::{NsProcess, TopologyGuard};
    sluice_testbed::require_root().context("the demo runs sluice in network namespaces")?;
    cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
    let bin = |name: &str| format!("{}/release/{name}", target_dir());
    certs()?;
    // Field order = drop order: sluice and the backend stop before the namespaces go.
    struct Demo {
        sluice: NsProcess,
        _backend: NsProcess,
        topology: TopologyGuard,
    }
    let topology = TopologyGuard::up("sluice-")?;
    let backend = NsProcess::spawn(
        &topology.topology.backend(),
        &bin("sluice-bench"),
        &["backend", "--listen", "203.0.113.2:8080", "--id", "demo"],
        "run/backend.log".into(),
    )?;
    let sluice = NsProcess::spawn(
        &topology.topology.proxy(),
        &bin("sluice"),
        &["--config", "configs/netns.toml"],
        "run/sluice.log".into(),
    )?;
    let mut demo = Demo { sluice, _backend: backend, topology };
    let (proxy, client) = (demo.topology.topology.proxy(), demo.topology.topology.client());
    let stats = || sluice_testbed::get_json(&proxy, "http://127.0.0.1:9090/stats.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stats().is_err() {
        if let Some(status) = demo.sluice.try_wait()? {
            bail!("sluice exited ({status}):\n{}", demo.sluice.log());
        }
        if std::time::Instant::now() > deadline {
            bail!("sluice not ready after 20 s:\n{}", demo.sluice.log());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("sluice terminates TLS on 198.51.100.2:443 (namespace {proxy}), backend 203.0.113.2:8080\n");
    println!("load from {client}: openssl s_time -www /, {seconds} s per kind, one connection at a time");
    println!(
        "(a client's word is not proof: sluice's own counts below say which handshakes were full and which resumed)"
    );
    let secs = seconds.to_string();
    for (label, args) in [
        ("TLS 1.3 -new", &["-tls1_3", "-new"][..]),
        ("TLS 1.3 -reuse", &["-tls1_3", "-reuse"][..]),
        ("TLS 1.2 -new", &["-tls1_2", "-new"][..]),
        ("TLS 1.2 -reuse", &["-tls1_2", "-reuse"][..]),
    ] {
        let mut all =
            vec!["s_time", "-connect", "198.51.100.2:443", "-CAfile", "run/certs/ca.pem", "-www", "/", "-time", &secs];
        all.extend_from_slice(args);
        let out = sluice_testbed::in_ns(&client, "openssl", &all)?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains("connections in") && l.contains("real")).unwrap_or("(no result)");
        println!("  {label:<16} {line}");
    }
    // The histograms trail the counters by the workers' hand-off (at most a few hundred ms).
    let mut s = stats()?;
    for _ in 0..20 {
        let pending = s["queues"]
            .as_array()
            .map_or(0, |q| q.iter().map(|q| q["latency_pending"].as_u64().unwrap_or(0)).sum::<u64>());
        if pending == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        s = stats()?;
    }
    let total =
        |k: &str| s["queues"].as_array().map_or(0, |q| q.iter().map(|q| q[k].as_u64().unwrap_or(0)).sum::<u64>());
    println!(
        "\nsluice counted {} full and {} resumed TLS handshakes, {} TLS failures, {} relays\n",
        total("tls_handshakes_full"),
        total("tls_handshakes_resumed"),
        total("tls_failed"),
        total("relays_opened"),
    );
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    if let Some(hists) = s["latency"].as_object() {
        for (name, h) in hists {
            let f = |k: &str| h[k].as_u64().unwrap_or(0);
            println!(
                "{name:<26} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
                f("count"),
                f("p50_us"),
                f("p90_us"),
                f("p99_us"),
                f("p999_us"),
                f("max_us")
            );
        }
    }
    demo.sluice.signal_and_wait(nix::sys::signal::Signal::SIGTERM, std::time::Duration::from_secs(10))?;
    println!("\nsluice stopped; removing the topology");
    Ok(())
}

fn bench(which: Bench, quick: bool, extra: &[String]) -> Result<()> {
    match which {
        Bench::Rst => {
            sluice_testbed::require_root().context("the RST benchmark runs in network namespaces")?;
            cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
            let target = target_dir();
            let status = Command::new(format!("{target}/release/sluice-bench"))
                .args(["rst-rate", "--sluice", &format!("{target}/release/sluice")])
                .args(extra)
                .status()
                .context("running sluice-bench")?;
            if !status.success() {
                bail!("sluice-bench rst-rate failed: {status}");
            }
        }
        Bench::Compare => {
            sluice_testbed::require_root().context("the comparison runs servers in network namespaces")?;
            cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
            let target = target_dir();
            let out = format!("{target}/bench-compare");
            let default_out = (!extra.iter().any(|a| a.starts_with("--out"))).then_some(["--out", out.as_str()]);
            let status = Command::new(format!("{target}/release/sluice-bench"))
                .args(["compare", "--sluice", &format!("{target}/release/sluice")])
                .args(default_out.into_iter().flatten())
                .args((quick && !extra.iter().any(|a| a == "--quick")).then_some("--quick"))
                .args(extra)
                .status()
                .context("running sluice-bench compare")?;
            if !status.success() {
                bail!("sluice-bench compare failed: {status}");
            }
        }
        Bench::Soak => {
            sluice_testbed::require_root().context("the soak runs sluice in network namespaces")?;
            cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
            let target = target_dir();
            let out = format!("{target}/bench-soak/soak.json");
            let default_out = (!extra.iter().any(|a| a.starts_with("--out"))).then_some(["--out", out.as_str()]);
            let status = Command::new(format!("{target}/release/sluice-bench"))
                .args(["soak", "--sluice", &format!("{target}/release/sluice")])
                .args(default_out.into_iter().flatten())
                .args(extra)
                .status()
                .context("running sluice-bench soak")?;
            if !status.success() {
                bail!("sluice-bench soak failed: {status}");
            }
        }
        Bench::Fleet => {
            sluice_testbed::require_root().context("the fleet benchmark runs sluice in network namespaces")?;
            cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
            certs()?;
            fleet::run(&|name| format!("{}/release/{name}", target_dir()), extra)?;
        }
        Bench::Tcp => cargo(&["bench", "-p", "sluice-bench", "--bench", "tcp_endpoints"], extra)?,
        Bench::Wire => cargo(&["bench", "-p", "sluice-wire", "--bench", "parse"], extra)?,
        Bench::Ceiling => {
            cargo(&["build", "--release", "-p", "sluice-bench"], &[])?;
            let status = Command::new(format!("{}/release/sluice-bench", target_dir()))
                .arg("ceiling")
                .args(extra)
                .status()
                .context("running sluice-bench")?;
            if !status.success() {
                bail!("sluice-bench ceiling failed: {status}");
            }
        }
    }
    Ok(())
}

fn cargo(args: &[&str], test_args: &[String]) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    eprintln!("xtask: cargo {} {}", args.join(" "), test_args.join(" "));
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
