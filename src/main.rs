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
    let result = match cli.command {
        Command::Serve(args) => ServeConfig::resolve(args, &|k| std::env::var(k).ok())
            .map_err(anyhow::Error::from)
            .and_then(|config| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?
                    .block_on(sluice::serve::run(config))
                    .map_err(anyhow::Error::from)
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
