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
        #[arg(long, default_value = "1s", value_parser = sluice::observe::stats_cli::parse_interval)]
        interval: std::time::Duration,
    },
    /// The privileged half of sluice's privilege separation, started by sluice itself: reads
    /// the configuration's certificates and keys for reloads (see `sluice::run::keyholder`).
    #[command(hide = true)]
    Keyholder {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.config) {
        (Some(Command::CheckConfig { file }), _) => {
            init_logging(&sluice::config::Log::default());
            check(&file).map(|()| println!("{}: ok", file.display()))
        }
        (None, Some(file)) => match Config::load(&file) {
            Ok(config) => {
                init_logging(&config.log);
                // No transparent huge pages for sluice's heap: connection buffers come and go by
                // the thousand, and with THP each fresh fault zeroes 2 MiB (measured: 80 % of a
                // worker's CPU under a handshake load went to clear_page).
                if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
                    tracing::warn!("PR_SET_THP_DISABLE: {e}");
                }
                sluice::run::run(config, &file)
            }
            Err(e) => Err(e.into()),
        },
        (Some(Command::Stats { admin, watch, interval }), _) => sluice::observe::stats_cli::run(admin, watch, interval),
        (Some(Command::Keyholder { config }), _) => {
            init_logging(&sluice::config::Log::default());
            sluice::run::keyholder::serve(&config)
        }
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

/// Everything `check-config` can check without attaching anything: the file, the user to switch
/// to, and every listener's certificates, keys and TLS settings (the validation a start and a
/// reload do).
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    sluice::run::check(&Config::load(file)?, file)
}

/// Logs to standard error: the level from `SLUICE_LOG` if set, else from the configuration.
fn init_logging(log: &sluice::config::Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        sluice::config::LogFormat::Json => builder.json().init(),
        sluice::config::LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
}
