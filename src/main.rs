//! The `sluice` command: parses the command line, sets up logging, resolves the
//! configuration and runs the chosen subcommand; maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use sluice::config::{Cli, Command, ServeConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = |k: &str| std::env::var(k).ok();
    let result = match cli.command {
        Command::Serve(args) => ServeConfig::resolve(args, &env)
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                runtime(config.threads.get())?
                    .block_on(sluice::serve::run(config))
                    .map_err(Into::into)
            })
            .map(|()| ExitCode::SUCCESS),
        Command::Check(args) => ServeConfig::resolve(args.into(), &env)
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                runtime(config.threads.get())?
                    .block_on(sluice::check::run(config))
                    .map_err(Into::into)
            })
            .map(|report| {
                print!("{}", report.text);
                if report.valid {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }),
    };
    result.unwrap_or_else(|error| {
        tracing::error!("{error:#}");
        ExitCode::FAILURE
    })
}

/// The host's runtime, sized by `--threads`. One thread is a current-thread runtime: no
/// work-stealing queues or idle-worker wake-ups (1.12× the async requests per second of a
/// one-worker multi-thread runtime, loadtest/results/2026-11-29-threads.md).
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()
}
