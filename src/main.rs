//! The `sluice` command: parses the command line, resolves the configuration, sets up
//! logging and runs the chosen subcommand; maps the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use sluice::config::{Cli, Command, LogEnv, LogFormat, ServeConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_env = LogEnv::from_process();
    // The configuration names the log format, so it is resolved first (it logs nothing);
    // a configuration that does not resolve is reported in the default format.
    let (args, check) = match cli.command {
        Command::Serve(args) => (*args, false),
        Command::Check(args) => (args.into(), true),
    };
    let resolved = ServeConfig::from_process(args);
    let format = resolved
        .as_ref()
        .map_or(LogFormat::default(), |c| c.log_format);
    sluice::logging::init(
        format,
        log_env.filter.as_deref(),
        log_env.no_color.as_deref(),
    );
    let result = match (resolved, check) {
        (Err(e), _) => Err(anyhow::Error::from(e)),
        (Ok(config), false) => runtime(config.threads.get())
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime
                    .block_on(sluice::serve::run(config))
                    .map_err(Into::into)
            })
            .map(|()| ExitCode::SUCCESS),
        (Ok(config), true) => runtime(config.threads.get())
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime
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
