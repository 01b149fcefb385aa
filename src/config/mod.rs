//! Configuration: the command line, the environment and the app's `host.json`, resolved
//! once into typed structs. Precedence: built-in defaults → environment → flags.
//! Reads files but never binds ports or starts anything.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sha2::{Digest, Sha256};

pub use crate::logging::LogFormat;

mod file;
mod local_settings;

use file::FileConfig;
use local_settings::{LocalSettings, LocalSettingsError};

use crate::cors::{CorsError, CorsPolicy};

/// Built-in defaults (documented, with every other key, in config/sluice.toml).
pub const DEFAULT_PORT: u16 = 7071;
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_ADMIN_PORT: u16 = 9091;
pub const DEFAULT_ADMIN_BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const DEFAULT_DRAIN_GRACE_SECS: u64 = 30;
/// Platform cap on `FUNCTIONS_WORKER_PROCESS_COUNT`.
pub const MAX_WORKERS: usize = 10;
/// Platform default request body limit (Kestrel's MaxRequestBodySize), 100 MB.
pub const DEFAULT_BODY_LIMIT: u64 = 104_857_600;
/// Default body budget: request bodies held in memory at once, 512 MiB (five bodies at
/// the default limit).
pub const DEFAULT_BODY_BUDGET: u64 = 512 * 1024 * 1024;
/// A body must fit one gRPC message with room for the rest of the invocation.
pub const MAX_BODY_LIMIT: u64 = crate::rpc::MAX_MESSAGE_BYTES as u64 - MESSAGE_HEADROOM;
/// Room in a gRPC message for everything but the body (headers, query, metadata).
const MESSAGE_HEADROOM: u64 = 16 * 1024 * 1024;

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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("app directory {path} does not exist or is not a directory")]
    NoAppDir { path: PathBuf },
    #[error("{name}={value} is not valid: {reason}")]
    BadSetting {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("config file {path}: {source}")]
    File {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    HostJson {
        path: PathBuf,
        source: HostJsonError,
    },
    #[error(transparent)]
    LocalSettings(#[from] LocalSettingsError),
    /// `from` names the setting: `--cors`, the config file, or local.settings.json.
    #[error("{from}")]
    Cors { from: String, source: CorsError },
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub app_dir: PathBuf,
    pub listen: SocketAddr,
    /// The admin listener (/metrics, /healthz, /readyz); never the public port.
    pub admin: SocketAddr,
    /// Required by `POST /admin/assign` (placeholder mode); `None` = no token.
    pub admin_token: Option<AdminToken>,
    pub workers: NonZeroUsize,
    pub python: Option<PathBuf>,
    pub secrets_file: Option<PathBuf>,
    pub host: HostJson,
    pub body_limit: u64,
    /// Request bodies held in memory at once, in bytes (≥ `body_limit`).
    pub body_budget: u64,
    /// How long a request waits for the first ready worker, and how long a worker may
    /// take from launch to ready (platform: 60 s to connect + 2 min to initialise).
    pub startup_timeout: Duration,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before Sluice exits.
    pub drain_grace: Duration,
    pub install: crate::python::Install,
    pub worker_config: Option<PathBuf>,
    pub io: IoMode,
    /// Worker threads of the host's runtime, and io_uring front-end threads.
    pub threads: NonZeroUsize,
    /// `SLUICE_URING_PROBE=fail`: the io_uring probe fails as on a kernel that refuses
    /// io_uring (EPERM), to test the fallback to epoll.
    pub simulate_uring_failure: bool,
    /// `--placeholder`: `app_dir` is an empty placeholder directory until assignment.
    pub placeholder: bool,
    pub log_format: LogFormat,
    /// `--access-log`: one `access` line per answered request.
    pub access_log: bool,
    /// OTLP/gRPC collector for Sluice's request spans (`http://host:port`); `None` = off.
    pub otlp_endpoint: Option<String>,
    /// `--ready-file`.
    pub ready_file: Option<PathBuf>,
    /// The app's settings from local.settings.json.
    pub app_settings: AppSettings,
    /// CORS answered by Sluice; `None` = no CORS (responses unchanged).
    pub cors: Option<CorsPolicy>,
    /// Where the app settings and CORS came from, so a reload reads them again alike.
    pub sources: SettingsSources,
    /// `--watch`: reload the app when its files change (local development).
    pub watch: bool,
}

/// What a `--watch` reload needs to read the app's settings again as a start does.
#[derive(Debug, Clone, Default)]
pub struct SettingsSources {
    /// The local.settings.json to read (it may not exist); `None` = not read.
    pub local_settings: Option<PathBuf>,
    /// CORS given by flags or the config file, which win over the file's `Host.CORS`.
    pub cors: CorsSources,
}

/// The CORS settings outside local.settings.json.
#[derive(Debug, Clone, Default)]
pub struct CorsSources {
    pub flag: Option<String>,
    pub flag_credentials: bool,
    pub file: Option<String>,
    pub file_credentials: Option<bool>,
    /// The platform host's app settings: `CORS_ALLOWED_ORIGINS` (a JSON array of origins)
    /// and `CORS_SUPPORT_CREDENTIALS`, as the Linux host reads them.
    pub platform: Option<String>,
    pub platform_credentials: Option<String>,
}

/// The app settings local.settings.json contributes, resolved against the environment.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    /// The file they came from.
    pub file: Option<PathBuf>,
    /// Variables the workers get on top of Sluice's environment (`Values` and
    /// `ConnectionStrings` not already set in the environment).
    pub applied: Vec<(String, String)>,
    /// Names the file sets that the environment already sets (the environment wins).
    pub overridden: Vec<String>,
}

/// Sluice's default functionTimeout (the platform's Premium/Dedicated default).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Cap on queued + executing function requests when host.json sets none: the
/// platform leaves it unbounded, Sluice bounds it so overload cannot grow memory.
pub const DEFAULT_MAX_OUTSTANDING: usize = 4096;

/// The parts of the app's host.json Sluice honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostJson {
    pub route_prefix: String,
    /// `None` when host.json says `-1` (unbounded).
    pub function_timeout: Option<Duration>,
    /// `extensions.http.maxConcurrentRequests`; `None` = unbounded.
    pub max_concurrent_requests: Option<usize>,
    /// `extensions.http.maxOutstandingRequests`; `None` = unset (Sluice's default cap applies).
    pub max_outstanding_requests: Option<usize>,
}

impl Default for HostJson {
    fn default() -> Self {
        HostJson {
            route_prefix: "api".to_owned(),
            function_timeout: Some(DEFAULT_FUNCTION_TIMEOUT),
            max_concurrent_requests: None,
            max_outstanding_requests: None,
        }
    }
}

impl HostJson {
    /// Reads `APP_DIR/host.json`; a missing file means platform defaults.
    pub fn load(app_dir: &Path) -> Result<HostJson, ConfigError> {
        let path = app_dir.join("host.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostJson::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text).map_err(|source| ConfigError::HostJson { path, source })
    }

    pub fn parse(text: &str) -> Result<HostJson, HostJsonError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let mut host = HostJson::default();
        if let Some(prefix) = value
            .pointer("/extensions/http/routePrefix")
            .and_then(|v| v.as_str())
        {
            host.route_prefix = prefix.to_owned();
        }
        if let Some(timeout) = value.get("functionTimeout").filter(|v| !v.is_null()) {
            host.function_timeout = parse_timeout(timeout)?;
        }
        // The platform treats -1 (its default) as "no limit".
        let limit = |key: &str| -> Result<Option<usize>, HostJsonError> {
            match value.pointer(&format!("/extensions/http/{key}")) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n < 0 => Ok(None),
                    Some(n) => Ok(Some(n as usize)),
                    None => Err(HostJsonError::Setting {
                        key: key.to_owned(),
                        value: v.to_string(),
                    }),
                },
            }
        };
        host.max_concurrent_requests = limit("maxConcurrentRequests")?;
        host.max_outstanding_requests = limit("maxOutstandingRequests")?;
        Ok(host)
    }
}

/// Why host.json cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostJsonError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{key} = {value} is not valid")]
    Setting { key: String, value: String },
}

/// `functionTimeout`: a TimeSpan string `[d.]hh:mm:ss[.fff]`, or -1 / "-1" for unbounded.
fn parse_timeout(value: &serde_json::Value) -> Result<Option<Duration>, HostJsonError> {
    let bad = || HostJsonError::Setting {
        key: "functionTimeout".into(),
        value: value.to_string(),
    };
    let text = match value {
        serde_json::Value::Number(n) if n.as_i64() == Some(-1) => return Ok(None),
        serde_json::Value::String(s) => s.trim(),
        _ => return Err(bad()),
    };
    if text == "-1" {
        return Ok(None);
    }
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().map_err(|_| bad())?, rest),
        _ => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(bad());
    };
    let hours: u64 = h.parse().map_err(|_| bad())?;
    let minutes: u64 = m.parse().map_err(|_| bad())?;
    let seconds: f64 = s.parse().map_err(|_| bad())?;
    if minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return Err(bad());
    }
    let whole = (days * 24 + hours) * 3600 + minutes * 60;
    Ok(Some(
        Duration::from_secs(whole) + Duration::from_secs_f64(seconds),
    ))
}

impl ServeConfig {
    /// Reads again the settings that come from the app's own files (host.json,
    /// local.settings.json's values and CORS), for a `--watch` reload. The worker launch is
    /// rebuilt separately (`launch::prepare`). Settings Sluice itself took from the file at
    /// start (worker count, body limits) stay as they were.
    pub fn reread_app_files(&mut self) -> Result<(), ConfigError> {
        self.host = HostJson::load(&self.app_dir)?;
        let local = self.sources.read_local(false)?;
        self.app_settings = AppSettings::resolve(local.as_ref(), &|k| std::env::var(k).ok());
        self.cors = self.sources.cors.resolve(local.as_ref())?;
        Ok(())
    }
}

impl HostJson {
    /// The outstanding-request cap in force: host.json's, else Sluice's default.
    pub fn outstanding_cap(&self) -> usize {
        self.max_outstanding_requests
            .unwrap_or(DEFAULT_MAX_OUTSTANDING)
    }
}

impl ServeConfig {
    /// Resolves flags over environment over defaults. `env` reads one variable (tests
    /// pass a map instead of touching the process environment).
    pub fn resolve(
        args: ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig, ConfigError> {
        let given = match args.app_dir.clone() {
            Some(dir) => dir,
            None => placeholder_dir()?,
        };
        if !given.is_dir() {
            return Err(ConfigError::NoAppDir { path: given });
        }
        let app_dir = std::fs::canonicalize(&given).map_err(|source| ConfigError::Read {
            path: given.clone(),
            source,
        })?;
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut sources = SettingsSources {
            local_settings: match (&args.settings, args.placeholder) {
                (
                    SettingsArgs {
                        no_local_settings: true,
                        ..
                    },
                    _,
                ) => None,
                (
                    SettingsArgs {
                        settings: Some(path),
                        ..
                    },
                    _,
                ) => Some(path.clone()),
                // Placeholder workers start with no app, so with no app settings.
                (_, true) => None,
                (_, false) => Some(app_dir.join(local_settings::FILE_NAME)),
            },
            cors: CorsSources {
                flag: args.cors.clone(),
                flag_credentials: args.cors_credentials,
                file: file.cors.clone(),
                file_credentials: file.cors_credentials,
                platform: None,
                platform_credentials: None,
            },
        };
        // A file named by --settings must exist.
        let local = sources.read_local(args.settings.settings.is_some())?;
        let app_settings = AppSettings::resolve(local.as_ref(), env);
        // The file's values are environment variables for Sluice too (as for the host under
        // `func start`), below the real environment.
        let env = &|k: &str| env(k).or_else(|| app_settings.get(k).map(str::to_owned));
        sources.cors.platform = env(PLATFORM_CORS_ORIGINS);
        sources.cors.platform_credentials = env(PLATFORM_CORS_CREDENTIALS);
        let cors = sources.cors.resolve(local.as_ref())?;
        let workers = match args.workers {
            Some(n) => check_workers("--workers", n.to_string())?,
            None => match env("FUNCTIONS_WORKER_PROCESS_COUNT") {
                Some(v) => check_workers("FUNCTIONS_WORKER_PROCESS_COUNT", v)?,
                None => match file.workers {
                    Some(n) => check_workers("workers (config file)", n.to_string())?,
                    None => NonZeroUsize::MIN,
                },
            },
        };
        let body_limit = match env("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT") {
            Some(v) => parse_bytes("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", v)?,
            None => file.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
        };
        if body_limit > MAX_BODY_LIMIT {
            return Err(ConfigError::BadSetting {
                name: "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT",
                value: body_limit.to_string(),
                reason: format!("bodies travel in one gRPC message: at most {MAX_BODY_LIMIT}"),
            });
        }
        let body_budget = match args.body_budget {
            Some(n) => n,
            None => match env("SLUICE_BODY_BUDGET") {
                Some(v) => parse_bytes("SLUICE_BODY_BUDGET", v)?,
                None => file.body_budget_bytes.unwrap_or(DEFAULT_BODY_BUDGET),
            },
        };
        if body_budget < body_limit {
            return Err(ConfigError::BadSetting {
                name: "SLUICE_BODY_BUDGET",
                value: body_budget.to_string(),
                reason: format!(
                    "smaller than the {body_limit}-byte body limit, so a body at the limit could never be served"
                ),
            });
        }
        let host = HostJson::load(&app_dir)?;
        let drain_grace = match args.drain_grace {
            Some(secs) => secs,
            None => match env("SLUICE_DRAIN_GRACE") {
                Some(v) => v.trim().parse().map_err(|e: std::num::ParseIntError| {
                    ConfigError::BadSetting {
                        name: "SLUICE_DRAIN_GRACE",
                        value: v.clone(),
                        reason: e.to_string(),
                    }
                })?,
                None => file.drain_grace_secs.unwrap_or(DEFAULT_DRAIN_GRACE_SECS),
            },
        };
        let threads = match args.threads.or(file.threads) {
            Some(n) => NonZeroUsize::new(n).ok_or(ConfigError::BadSetting {
                name: "threads",
                value: n.to_string(),
                reason: "must be at least 1".into(),
            })?,
            None => default_threads(workers),
        };
        let watch = args.watch || file.watch == Some(true);
        // Clap refuses `--watch --placeholder`; this catches `watch = true` in the file.
        if watch && args.placeholder {
            return Err(ConfigError::BadSetting {
                name: "watch",
                value: "true".into(),
                reason: "a placeholder has no app to watch; not with --placeholder".into(),
            });
        }
        let admin = SocketAddr::new(
            args.admin_bind
                .or(file.admin_bind)
                .unwrap_or(DEFAULT_ADMIN_BIND),
            args.admin_port
                .or(file.admin_port)
                .unwrap_or(DEFAULT_ADMIN_PORT),
        );
        let admin_token = match args.admin_token_file.or(file.admin_token_file) {
            Some(path) => Some(AdminToken::read(&path)?),
            None => env("SLUICE_ADMIN_TOKEN")
                .map(|t| AdminToken::new("SLUICE_ADMIN_TOKEN", &t))
                .transpose()?,
        };
        // An unauthenticated assignment endpoint reachable from the network would run any
        // code anyone points it at, with any environment.
        if args.placeholder && admin_token.is_none() && !admin.ip().is_loopback() {
            return Err(ConfigError::BadSetting {
                name: "--admin-bind",
                value: admin.ip().to_string(),
                reason: "placeholder mode serves POST /admin/assign on the admin listener: off \
                         loopback it needs a token (SLUICE_ADMIN_TOKEN or --admin-token-file)"
                    .into(),
            });
        }
        let simulate_uring_failure = match env("SLUICE_URING_PROBE").as_deref() {
            None | Some("") => false,
            Some("fail") => true,
            Some(other) => {
                return Err(ConfigError::BadSetting {
                    name: "SLUICE_URING_PROBE",
                    value: other.to_owned(),
                    reason: "the only value is `fail`".into(),
                });
            }
        };
        let log_format = match args.log_format {
            Some(format) => format,
            None => match env("SLUICE_LOG_FORMAT") {
                Some(v) => parse_log_format(v)?,
                None => file.log_format.unwrap_or_default(),
            },
        };
        let otlp_endpoint = match args.otlp_endpoint {
            Some(url) => Some(check_otlp_endpoint("--otlp-endpoint", url)?),
            None => match env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.trim().is_empty()) {
                Some(url) => Some(check_otlp_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", url)?),
                None => match file.otlp_endpoint {
                    Some(url) => Some(check_otlp_endpoint("otlp_endpoint (config file)", url)?),
                    None => None,
                },
            },
        };
        Ok(ServeConfig {
            otlp_endpoint,
            ready_file: args.ready_file,
            log_format,
            access_log: args.access_log || file.access_log == Some(true),
            io: args.io.or(file.io).unwrap_or_default(),
            threads,
            simulate_uring_failure,
            listen: SocketAddr::new(
                args.bind.or(file.bind).unwrap_or(DEFAULT_BIND),
                args.port
                    .or(file.port)
                    .or(local.as_ref().and_then(|l| l.port))
                    .unwrap_or(DEFAULT_PORT),
            ),
            admin,
            admin_token,
            workers,
            python: args
                .python
                .or_else(|| env("SLUICE_PYTHON").map(PathBuf::from))
                .or(file.python),
            secrets_file: args.secrets_file.or(file.secrets_file),
            host,
            body_limit,
            body_budget,
            startup_timeout: Duration::from_secs(180),
            drain_grace: Duration::from_secs(drain_grace),
            worker_config: args.worker_config.or(file.worker_config),
            install: if args.no_install || file.no_install == Some(true) {
                crate::python::Install::Never
            } else {
                crate::python::Install::Auto
            },
            app_dir,
            placeholder: args.placeholder,
            app_settings,
            cors,
            sources,
            watch,
        })
    }
}

impl AppSettings {
    /// What the file adds to the environment `env` already has: a variable set there wins.
    fn resolve(local: Option<&LocalSettings>, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let Some(local) = local else {
            return AppSettings::default();
        };
        let mut settings = AppSettings {
            file: Some(local.path.clone()),
            ..AppSettings::default()
        };
        for (name, value) in local.values.iter().chain(&local.connection_strings) {
            if env(name).is_some() {
                settings.overridden.push(name.clone());
            } else {
                settings.applied.push((name.clone(), value.clone()));
            }
        }
        settings
    }

    /// A variable the file applies.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.applied
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl SettingsSources {
    /// The local.settings.json in force, if any; a missing file is no settings unless
    /// `must_exist`.
    fn read_local(&self, must_exist: bool) -> Result<Option<LocalSettings>, ConfigError> {
        let Some(path) = &self.local_settings else {
            return Ok(None);
        };
        match LocalSettings::load(path)? {
            None if must_exist => Err(ConfigError::Read {
                path: path.clone(),
                source: std::io::ErrorKind::NotFound.into(),
            }),
            local => Ok(local),
        }
    }
}

impl CorsSources {
    /// CORS origins from the first source that names them: `--cors`, the config file,
    /// the platform's `CORS_ALLOWED_ORIGINS`, local.settings.json's `Host.CORS`;
    /// credentials when that source or `--cors-credentials` asks for them.
    fn resolve(&self, local: Option<&LocalSettings>) -> Result<Option<CorsPolicy>, ConfigError> {
        let local_from = local.map(|l| format!("Host.CORS in {}", l.path.display()));
        let platform_credentials = match &self.platform_credentials {
            None => None,
            Some(v) => Some(parse_bool(PLATFORM_CORS_CREDENTIALS, v.clone())?),
        };
        let origins = [
            (self.flag.clone(), Some("--cors".to_owned()), None),
            (
                self.file.clone(),
                Some("cors (config file)".to_owned()),
                self.file_credentials,
            ),
            (
                self.platform.clone().map(platform_origins).transpose()?,
                Some(PLATFORM_CORS_ORIGINS.to_owned()),
                platform_credentials,
            ),
            (
                local.and_then(|l| l.cors.clone()),
                local_from,
                local.and_then(|l| l.cors_credentials),
            ),
        ]
        .into_iter()
        .find_map(|(list, from, credentials)| Some((list?, from?, credentials)));
        let Some((list, from, credentials)) = origins else {
            if self.flag_credentials {
                return Err(ConfigError::BadSetting {
                    name: "--cors-credentials",
                    value: "true".into(),
                    reason: "needs the allowed origins (--cors ORIGINS)".into(),
                });
            }
            return Ok(None);
        };
        let credentials = self.flag_credentials || credentials == Some(true);
        CorsPolicy::parse(&list, credentials)
            .map(Some)
            .map_err(|source| ConfigError::Cors { from, source })
    }
}

/// The secret `POST /admin/assign` requires. Kept as its SHA-256 digest, compared in
/// constant time; never printed.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// Shortest accepted token: guessing must be hopeless.
    const MIN_LEN: usize = 16;

    fn new(name: &'static str, token: &str) -> Result<AdminToken, ConfigError> {
        let token = token.trim();
        if token.len() < Self::MIN_LEN {
            return Err(ConfigError::BadSetting {
                name,
                value: "(hidden)".into(),
                reason: format!(
                    "the admin token must be at least {} characters",
                    Self::MIN_LEN
                ),
            });
        }
        Ok(AdminToken(Sha256::digest(token.as_bytes()).into()))
    }

    fn read(path: &Path) -> Result<AdminToken, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        AdminToken::new("--admin-token-file", &text)
    }

    /// Whether `given` is the token; takes the same time wherever they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(given).into();
        digest
            .iter()
            .zip(&self.0)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}

/// The platform host's CORS app settings (Linux; a JSON array, and a boolean).
const PLATFORM_CORS_ORIGINS: &str = "CORS_ALLOWED_ORIGINS";
const PLATFORM_CORS_CREDENTIALS: &str = "CORS_SUPPORT_CREDENTIALS";

/// `CORS_ALLOWED_ORIGINS` (`["https://a.example", …]`) as a comma-separated list.
fn platform_origins(value: String) -> Result<String, ConfigError> {
    serde_json::from_str::<Vec<String>>(&value)
        .map(|origins| origins.join(","))
        .map_err(|e| ConfigError::BadSetting {
            name: PLATFORM_CORS_ORIGINS,
            value,
            reason: format!(
                "must be a JSON array of origins, e.g. [\"https://app.example.com\"] ({e})"
            ),
        })
}

/// `true` or `false`, in any case (as .NET reads a boolean setting).
fn parse_bool(name: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::BadSetting {
            name,
            value,
            reason: "must be true or false".into(),
        }),
    }
}

/// An OTLP/gRPC endpoint Sluice can reach without TLS: `http://host:port`.
fn check_otlp_endpoint(name: &'static str, value: String) -> Result<String, ConfigError> {
    let url = value.trim().trim_end_matches('/').to_owned();
    let ok = url
        .parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("http") && u.authority().is_some());
    if ok {
        Ok(url)
    } else {
        Err(ConfigError::BadSetting {
            name,
            value,
            reason: "must be an http://host:port URL (OTLP over gRPC without TLS, e.g. a collector on the same host)".into(),
        })
    }
}

fn parse_log_format(value: String) -> Result<LogFormat, ConfigError> {
    <LogFormat as clap::ValueEnum>::from_str(value.trim(), true).map_err(|_| {
        ConfigError::BadSetting {
            name: "SLUICE_LOG_FORMAT",
            value,
            reason: "must be `text` or `json`".into(),
        }
    })
}

fn parse_bytes(name: &'static str, value: String) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|e: std::num::ParseIntError| ConfigError::BadSetting {
            name,
            value: value.clone(),
            reason: e.to_string(),
        })
}

/// The runtime's default size: one thread per Python worker, at most one per CPU (the CPUs
/// the process may use). The workers need those CPUs too, and a function request crosses the
/// front end and the worker's session: on one thread that is no cross-thread wake-up. On 2
/// cores with 1 worker, 1 thread served 1.14× the requests of 2; with 2 workers, 2 threads
/// served 1.10× those of 1 (loadtest/results/2026-11-29-threads.md).
pub fn default_threads(workers: NonZeroUsize) -> NonZeroUsize {
    let cpus = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    workers.min(cpus)
}

/// The empty app directory placeholder workers start against (one per Sluice process).
fn placeholder_dir() -> Result<PathBuf, ConfigError> {
    let dir = std::env::temp_dir().join(format!("sluice-placeholder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| ConfigError::Read {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn check_workers(name: &'static str, value: String) -> Result<NonZeroUsize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => {
            NonZeroUsize::new(n).ok_or(ConfigError::BadSetting {
                name,
                value,
                reason: "must be at least 1".into(),
            })
        }
        Ok(_) => Err(ConfigError::BadSetting {
            name,
            value,
            reason: format!("must be between 1 and {MAX_WORKERS}"),
        }),
        Err(e) => Err(ConfigError::BadSetting {
            name,
            value,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests;
