//! `cargo xtask`: sluice's orchestration. Everything a newcomer or CI runs goes through here.
//!
//! - `cargo xtask netns up|down`: the test topology of ../shared/DESIGN.md (idempotent).
//! - `cargo xtask test`: builds everything (the XDP program included) and runs every test:
//!   unit, property, and the integration tests that need root and namespaces.
//! - `cargo xtask bench rst|tcp|wire`: the benchmark programs (release builds); they print
//!   figures and ratios against a baseline measured in the same run.

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
    /// Create or remove the test topology (namespaces sluice-client, sluice-proxy, sluice-backend).
    Netns {
        #[command(subcommand)]
        action: NetnsAction,
    },
    /// Run a benchmark: `rst` (RSTs/s of one worker vs the kernel, in the test topology),
    /// `tcp` (sluice's TCP vs smoltcp in memory, simulator throughput), `wire` (parse/emit).
    Bench {
        #[arg(value_enum)]
        which: Bench,
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
        Task::Bench { which, extra } => bench(which, &extra)?,
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    sluice_testbed::require_root().context("`cargo xtask test` runs the integration tests")?;
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

fn bench(which: Bench, extra: &[String]) -> Result<()> {
    match which {
        Bench::Rst => {
            sluice_testbed::require_root().context("the RST benchmark runs in network namespaces")?;
            cargo(&["build", "--release", "-p", "sluice", "-p", "sluice-bench"], &[])?;
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            let status = Command::new(format!("{target}/release/sluice-bench"))
                .args(["rst-rate", "--sluice", &format!("{target}/release/sluice")])
                .args(extra)
                .status()
                .context("running sluice-bench")?;
            if !status.success() {
                bail!("sluice-bench rst-rate failed: {status}");
            }
        }
        Bench::Tcp => cargo(&["bench", "-p", "sluice-bench", "--bench", "tcp_endpoints"], extra)?,
        Bench::Wire => cargo(&["bench", "-p", "sluice-wire", "--bench", "parse"], extra)?,
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
