//! `sluice-bench`: sluice's benchmark programs. Each subcommand measures something and prints
//! figures, with a baseline measured in the same invocation and the ratio to it. Nothing here
//! asserts a timing: a benchmark reports, tests decide.
//!
//! Subcommands:
//! - `rst-rate`: frames/s that one sluice worker receives and answers with a RST, against the
//!   proxy namespace's own kernel answering the same SYNs (issue 2). Needs root.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod rst_rate;

#[derive(Parser)]
#[command(
    version,
    about = "sluice's benchmarks: figures and a ratio to a baseline run in the same invocation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SYNs at full rate from one client TX queue; RSTs/s from one sluice worker vs the kernel.
    RstRate(rst_rate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RstRate(args) => rst_rate::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
