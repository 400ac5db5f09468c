//! `dingo`: the command-line face of a Dingo node. Thin by design: it parses arguments, talks to
//! the running node's local API when one is running (or opens the home itself when not), and
//! prints. Data goes to stdout, diagnostics to stderr; exit 0 on success, 1 on a failure the
//! message explains, 2 on bad usage (clap's convention).

mod cli;
mod commands;
mod demo;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: the store and network threads allocate and free many
/// small buffers across threads, where glibc's arenas cost a fifth of all CPU in the throughput
/// benchmark (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = if matches!(cli.command, cli::Command::Run(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("{default_level},libp2p=warn"))
            }),
        )
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
