//! The `sluice` binary: `sluice --config FILE` runs the proxy, `sluice check-config FILE` validates,
//! `sluice stats [--watch]` shows a running sluice's latencies and counters.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "A TLS terminator that bypasses the kernel's TCP stack (XDP + AF_XDP)")]
struct Cli {
    /// The configuration file to run with.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0: valid; 1: the error, naming file and field).
    CheckConfig { file: PathBuf },
    /// Show a running sluice's latency percentiles and main counters (from its admin endpoint).
    Stats {
        /// The admin endpoint (run in sluice's network namespace for its loopback).
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
        /// Redraw the table in place every interval until interrupted.
        #[arg(long, short)]
        watch: bool,
        /// Refresh interval with --watch (e.g. 1s, 500ms).
        #[arg(long, default_value = "1s", value_parser = sluice::stats_cli::parse_interval)]
        interval: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => Config::load(&file).map(|_| {
            println!("{}: ok", file.display());
        }).map_err(anyhow::Error::from),
        (Some(Command::Stats { admin, watch, interval }), _) => sluice::stats_cli::run(admin, watch, interval),
        (None, Some(file)) => Config::load(&file).map_err(anyhow::Error::from).and_then(|config| {
            let dir = file.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            sluice::run::run(config, &dir)
        }),
        (None, None) => Err(anyhow::anyhow!("nothing to do: give --config FILE or a subcommand (see --help)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}
