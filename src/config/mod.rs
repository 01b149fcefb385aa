//! Configuration: the command line, the environment and the app's `host.json`, resolved
//! once into typed structs. Precedence: built-in defaults → environment → flags.
//! Reads files but never binds ports or starts anything.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::logging::LogFormat;

mod admin_token;
mod app_settings;
mod args;
mod file;
mod host_json;
mod local_settings;
mod settings;

pub use admin_token::AdminToken;
pub use app_settings::{AppSettings, CorsSources, SettingsSources};
pub use args::{CheckArgs, Cli, Command, IoMode, ServeArgs, SettingsArgs};
pub use host_json::{DEFAULT_FUNCTION_TIMEOUT, DEFAULT_MAX_OUTSTANDING, HostJson, HostJsonError};
pub use settings::{Captured, DispatchSettings, LogEnv, SlotSettings};

use app_settings::{PLATFORM_CORS_CREDENTIALS, PLATFORM_CORS_ORIGINS};
use file::FileConfig;
use local_settings::LocalSettingsError;

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
    /// Where worker environments are kept: SLUICE_CACHE_DIR, else the XDG cache directory.
    pub cache_dir: PathBuf,
    /// The variables Python is searched with (PATH, HOME, PYENV_ROOT).
    pub python_search: Captured,
    /// PYTHON_SCRIPT_FILE_NAME: a v2 app's script [default: function_app.py].
    pub script_file: String,
    /// Sluice's own environment, which the workers inherit ([`ServeConfig::from_process`];
    /// empty when resolved from a lookup alone, as in tests).
    pub inherited: Captured,
    /// The app's settings from local.settings.json.
    pub app_settings: AppSettings,
    /// CORS answered by Sluice; `None` = no CORS (responses unchanged).
    pub cors: Option<CorsPolicy>,
    /// Where the app settings and CORS came from, so a reload reads them again alike.
    pub sources: SettingsSources,
    /// `--watch`: reload the app when its files change (local development).
    pub watch: bool,
}

impl ServeConfig {
    /// Reads again the settings that come from the app's own files (host.json,
    /// local.settings.json's values and CORS), for a `--watch` reload. The worker launch is
    /// rebuilt separately (`launch::prepare`). Settings Sluice itself took from the file at
    /// start (worker count, body limits) stay as they were.
    pub fn reread_app_files(&mut self) -> Result<(), ConfigError> {
        self.host = HostJson::load(&self.app_dir)?;
        let local = self.sources.read_local(false)?;
        let inherited = &self.inherited;
        self.app_settings = AppSettings::resolve(local.as_ref(), &|k| inherited.get(k));
        self.cors = self.sources.cors.resolve(local.as_ref())?;
        Ok(())
    }

    /// [`ServeConfig::resolve`] against this process's environment, which is captured for
    /// the workers too: the one place Sluice reads its environment.
    pub fn from_process(args: ServeArgs) -> Result<ServeConfig, ConfigError> {
        let inherited = Captured::all(std::env::vars());
        let mut config = ServeConfig::resolve(args, &|k| inherited.get(k))?;
        config.inherited = inherited;
        Ok(config)
    }

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
        // Read from the real environment only (not local.settings.json's values).
        let cache_dir = crate::python::default_cache_dir(env);
        let python_search = Captured::of(&["PATH", "HOME", "PYENV_ROOT"], env);
        let script_file = env("PYTHON_SCRIPT_FILE_NAME")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "function_app.py".to_owned());
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
            cache_dir,
            python_search,
            script_file,
            inherited: Captured::default(),
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
