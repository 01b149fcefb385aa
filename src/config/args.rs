//! The command line (clap): `sluice serve` and `sluice check`, as parsed, before any
//! default, environment variable or file is applied (that is `ServeConfig::resolve`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Serve Azure Functions Python apps")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the function app in APP_DIR.
    Serve(Box<ServeArgs>),
    /// Resolve everything `serve` would (Python, runtime, functions, routes) and report it.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The function app directory.
    pub app_dir: PathBuf,
    /// Python ≥ 3.13 interpreter (also SLUICE_PYTHON).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Never run pip for the app.
    #[arg(long)]
    pub no_install: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Where the app's local.settings.json comes from (`serve` and `check`).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// The app settings file [default: APP_DIR/local.settings.json, when present].
    #[arg(long, value_name = "FILE", conflicts_with = "no_local_settings")]
    pub settings: Option<PathBuf>,
    /// Ignore APP_DIR/local.settings.json.
    #[arg(long)]
    pub no_local_settings: bool,
}

impl From<CheckArgs> for ServeArgs {
    fn from(args: CheckArgs) -> ServeArgs {
        ServeArgs {
            app_dir: Some(args.app_dir),
            placeholder: false,
            config: None,
            port: Some(0),
            bind: Some(IpAddr::from([127, 0, 0, 1])),
            workers: Some(1),
            python: args.python,
            secrets_file: None,
            drain_grace: None,
            no_install: args.no_install,
            worker_config: None,
            admin_port: Some(0),
            admin_bind: Some(IpAddr::from([127, 0, 0, 1])),
            admin_token_file: None,
            body_budget: None,
            io: None,
            threads: None,
            settings: args.settings,
            cors: None,
            cors_credentials: false,
            watch: false,
            log_format: None,
            access_log: false,
            otlp_endpoint: None,
            ready_file: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The function app directory (host.json, function_app.py, requirements.txt).
    #[arg(required_unless_present = "placeholder")]
    pub app_dir: Option<PathBuf>,
    /// Start workers against an empty placeholder app; `POST /admin/assign` on the admin
    /// listener specialises them for the real app (see README, "Placeholder mode").
    #[arg(long, conflicts_with = "app_dir")]
    pub placeholder: bool,
    /// A TOML config file (keys as in config/sluice.toml); flags and environment win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP port (0 picks a free one; the "listening" log line names it) [default: 7071].
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind the HTTP listener to [default: 0.0.0.0].
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Number of Python worker processes (also FUNCTIONS_WORKER_PROCESS_COUNT; max 10).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Python ≥ 3.13 interpreter for the workers (also SLUICE_PYTHON).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The platform's host secrets JSON (masterKey, functionKeys, systemKeys).
    #[arg(long)]
    pub secrets_file: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT (also SLUICE_DRAIN_GRACE; default 30).
    #[arg(long)]
    pub drain_grace: Option<u64>,
    /// Never run pip for the app: a missing or outdated dependency install is an error.
    #[arg(long)]
    pub no_install: bool,
    /// Launch the worker described by this platform-style worker.config.json instead of Sluice's own.
    #[arg(long)]
    pub worker_config: Option<PathBuf>,
    /// Admin port for /metrics, /healthz and /readyz (0 picks a free one; the
    /// "admin listening" log line names it) [default: 9091].
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Address to bind the admin listener to (keep it off the public network) [default: 127.0.0.1].
    #[arg(long)]
    pub admin_bind: Option<IpAddr>,
    /// File holding the token `POST /admin/assign` requires (`Authorization: Bearer …`)
    /// [default: env SLUICE_ADMIN_TOKEN; none].
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Bytes of request bodies held in memory at once; a body beyond it is answered 503
    /// with Retry-After [default: 536870912 = 512 MiB; env SLUICE_BODY_BUDGET].
    #[arg(long)]
    pub body_budget: Option<u64>,
    /// Socket I/O of the HTTP front end: epoll, io_uring, or auto (io_uring only where
    /// it runs and is not slower; today that is epoll) [default: auto].
    #[arg(long, value_enum)]
    pub io: Option<IoMode>,
    /// Threads of the host's async runtime (and io_uring front-end threads)
    /// [default: one per worker, at most the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Answer CORS for these origins (comma-separated; `*` for any) [default: Host.CORS
    /// in local.settings.json; none].
    #[arg(long, value_name = "ORIGINS")]
    pub cors: Option<String>,
    /// Allow credentials in CORS answers (Access-Control-Allow-Credentials: true).
    #[arg(long)]
    pub cors_credentials: bool,
    /// Local development: reload the app when its files change (Python files, function.json,
    /// host.json, requirements.txt, local.settings.json); new workers take over once ready.
    #[arg(long, conflicts_with = "placeholder")]
    pub watch: bool,
    /// Log lines as `text` (human-readable, values quoted where needed) or `json` (one
    /// object per line) [default: text; env SLUICE_LOG_FORMAT].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// One log line per answered request (target `access`): method, path without the
    /// query, status, duration, function, invocation id, bytes, trace id.
    #[arg(long)]
    pub access_log: bool,
    /// Export Sluice's request spans over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317 [default: off; env OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Keep this file up to date with the bound addresses and the workers in service (JSON,
    /// replaced atomically): what a supervising process or a test waits on.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// How the HTTP front end does socket I/O (`--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring where it is available and not slower, else epoll.
    #[default]
    Auto,
    Epoll,
    /// io_uring; falls back to epoll (with one warning) where the kernel refuses it.
    Uring,
}
