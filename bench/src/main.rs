//! `sluice-bench`: sluice's benchmark programs. Each subcommand measures something and prints
//! figures, with a baseline measured in the same invocation and the ratio to it. Nothing here
//! asserts a timing: a benchmark reports, tests decide.
//!
//! Subcommands:
//! - `rst-rate`: frames/s that one sluice worker receives and answers with a RST, against the
//!   proxy namespace's own kernel answering the same SYNs (issue 2). Needs root.
//! - `backend`: the plaintext backend for tests, the demo and benchmarks: an HTTP/1.1 responder
//!   or an echo server, optionally behind a PROXY protocol v2 header (issue 4).
//! - `certs`: a demo CA and leaf certificates (rcgen), never overwriting existing files.
//! - `ceiling`: handshakes/s in memory, rustls alone vs through sluice's TCP, per handshake kind.
//! - `load`: a TLS load generator (open or closed loop; full, resumed, keep-alive) with
//!   client-side HdrHistograms, JSON and an SVG percentile plot (issue 5).
//! - `compare`: the same loads against sluice (AF_XDP and kernel sockets), nginx and HAProxy in
//!   the test topology; one table, JSON and a plot (issue 5). A run with failures is FAILED and
//!   the command exits non-zero. Needs root.
//! - `soak`: sluice on AF_XDP under a mixed TLS load at 70 % of its measured maximum for minutes,
//!   sampled every second (RSS, connections, UMEM frames, failures), drained, and a PASS/FAIL
//!   verdict; JSON and a plot. Needs root.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod ceiling;
mod compare;
mod rst_rate;
mod soak;

use sluice_bench::load;

#[derive(Parser)]
#[command(version, about = "sluice's benchmarks: figures and a ratio to a baseline run in the same invocation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SYNs at full rate from one client TX queue; RSTs/s from one sluice worker vs the kernel.
    RstRate(rst_rate::Args),
    /// A plaintext HTTP/1.1 or echo backend on kernel sockets; final counters as JSON on exit.
    Backend(backend::Args),
    /// A demo CA and ECDSA P-256 (and one RSA-2048) leaf certificates; never overwrites.
    Certs(backend::certs::Args),
    /// In-memory ceilings: handshakes/s of rustls alone vs through sluice's TCP, and the ratio.
    Ceiling(ceiling::Args),
    /// TLS handshakes/requests at a fixed rate (open loop) or flat out (closed loop).
    Load(load::LoadArgs),
    /// sluice (AF_XDP, kernel sockets) vs nginx vs HAProxy under the same loads; one table.
    Compare(compare::Args),
    /// sluice under a steady mixed TLS load for minutes: RSS, connections, UMEM, failures; a verdict.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RstRate(args) => rst_rate::run(&args),
        Command::Backend(args) => backend::run(&args),
        Command::Certs(args) => backend::certs::run(&args),
        Command::Ceiling(args) => ceiling::run(&args),
        Command::Load(args) => load::main(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Soak(args) => soak::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
