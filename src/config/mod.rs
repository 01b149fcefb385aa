//! Configuration: the command line, the environment and the app's `host.json`, resolved
//! once into typed structs. Precedence: built-in defaults → environment → flags.
//! Reads files but never binds ports or starts anything.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub mod file;

use file::FileConfig;

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
    Serve(ServeArgs),
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
            body_budget: None,
            io: None,
            threads: None,
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
    /// Bytes of request bodies held in memory at once; a body beyond it is answered 503
    /// with Retry-After [default: 536870912 = 512 MiB; env SLUICE_BODY_BUDGET].
    #[arg(long)]
    pub body_budget: Option<u64>,
    /// Socket I/O of the HTTP front end: epoll, io_uring, or auto (io_uring only where
    /// it runs and is not slower; today that is epoll) [default: auto].
    #[arg(long, value_enum)]
    pub io: Option<IoMode>,
    /// Threads of the host's async runtime (and io_uring front-end threads)
    /// [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
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
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub app_dir: PathBuf,
    pub listen: SocketAddr,
    /// The admin listener (/metrics, /healthz, /readyz); never the public port.
    pub admin: SocketAddr,
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
        let given = match args.app_dir {
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
            None => default_threads(),
        };
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
        Ok(ServeConfig {
            io: args.io.or(file.io).unwrap_or_default(),
            threads,
            simulate_uring_failure,
            listen: SocketAddr::new(
                args.bind.or(file.bind).unwrap_or(DEFAULT_BIND),
                args.port.or(file.port).unwrap_or(DEFAULT_PORT),
            ),
            admin: SocketAddr::new(
                args.admin_bind
                    .or(file.admin_bind)
                    .unwrap_or(DEFAULT_ADMIN_BIND),
                args.admin_port
                    .or(file.admin_port)
                    .unwrap_or(DEFAULT_ADMIN_PORT),
            ),
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
        })
    }
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

/// The runtime's default size: one thread per CPU (the CPUs the process may use). On
/// 2 cores, 2 threads served the worker path ~30% faster than 1 (loadtest/results);
/// `--threads 1` leaves more of a small pod to the Python workers.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
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
mod tests {
    use super::*;

    fn args(dir: &Path) -> ServeArgs {
        ServeArgs {
            app_dir: Some(dir.to_path_buf()),
            placeholder: false,
            config: None,
            port: None,
            bind: None,
            workers: None,
            python: None,
            secrets_file: None,
            drain_grace: None,
            no_install: false,
            worker_config: None,
            admin_port: None,
            admin_bind: None,
            body_budget: None,
            io: None,
            threads: None,
        }
    }

    #[test]
    fn body_limit_and_budget_defaults_sources_and_bounds() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let cfg = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
        assert_eq!(cfg.body_limit, DEFAULT_BODY_LIMIT);
        assert_eq!(cfg.body_budget, DEFAULT_BODY_BUDGET);

        let env = |k: &str| match k {
            "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" => Some("1000".to_owned()),
            "SLUICE_BODY_BUDGET" => Some("5000".to_owned()),
            _ => None,
        };
        let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
        assert_eq!((cfg.body_limit, cfg.body_budget), (1000, 5000));
        let mut flag = args(&dir);
        flag.body_budget = Some(7000);
        let cfg = ServeConfig::resolve(flag, &env).expect("valid");
        assert_eq!(cfg.body_budget, 7000, "flag over environment");

        let small = |k: &str| (k == "SLUICE_BODY_BUDGET").then(|| "1000".to_owned());
        let err = ServeConfig::resolve(args(&dir), &small).expect_err("budget below the limit");
        assert!(err.to_string().contains("SLUICE_BODY_BUDGET"), "{err}");
        let huge = |k: &str| {
            (k == "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT").then(|| (MAX_BODY_LIMIT + 1).to_string())
        };
        let err = ServeConfig::resolve(args(&dir), &huge).expect_err("over one gRPC message");
        assert!(err.to_string().contains("gRPC"), "{err}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn file_sits_between_defaults_and_environment_and_flags() {
        let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("sluice.toml");
        std::fs::write(
            &file,
            "port = 8080\nworkers = 3\ndrain_grace_secs = 5\nadmin_port = 9999\n",
        )
        .expect("write");
        let mut a = args(&dir);
        a.config = Some(file.clone());
        a.admin_port = Some(1234);
        let env = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "2".to_owned());
        let cfg = ServeConfig::resolve(a, &env).expect("valid");
        assert_eq!(cfg.listen.port(), 8080, "file over default");
        assert_eq!(cfg.listen.ip(), DEFAULT_BIND, "default when nobody says");
        assert_eq!(cfg.workers.get(), 2, "environment over file");
        assert_eq!(cfg.admin.port(), 1234, "flag over file");
        assert_eq!(cfg.drain_grace, Duration::from_secs(5));
        std::fs::write(&file, "portt = 1\n").expect("write");
        let mut bad = args(&dir);
        bad.config = Some(file.clone());
        let err = ServeConfig::resolve(bad, &|_| None).expect_err("unknown key");
        assert!(err.to_string().contains("sluice.toml"), "{err}");
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn route_prefix_defaults_to_api_and_can_be_empty() {
        assert_eq!(HostJson::parse("{}").expect("json").route_prefix, "api");
        let host = HostJson::parse(r#"{"extensions":{"http":{"routePrefix":""}}}"#).expect("json");
        assert_eq!(host.route_prefix, "");
    }

    #[test]
    fn function_timeout_and_throttles() {
        let host = HostJson::parse(
            r#"{"functionTimeout":"00:00:02","extensions":{"http":{"maxConcurrentRequests":2,"maxOutstandingRequests":4}}}"#,
        )
        .expect("valid");
        assert_eq!(host.function_timeout, Some(Duration::from_secs(2)));
        assert_eq!(host.max_concurrent_requests, Some(2));
        assert_eq!(host.outstanding_cap(), 4);
        let d = HostJson::parse(r#"{"functionTimeout":"1.02:03:04.5"}"#).expect("valid");
        assert_eq!(d.function_timeout, Some(Duration::from_secs_f64(93_784.5)));
        assert_eq!(
            HostJson::parse(r#"{"functionTimeout":"-1"}"#)
                .expect("valid")
                .function_timeout,
            None
        );
        assert_eq!(
            HostJson::parse(r#"{"functionTimeout":-1}"#)
                .expect("valid")
                .function_timeout,
            None
        );
        let defaults = HostJson::parse("{}").expect("valid");
        assert_eq!(defaults.function_timeout, Some(DEFAULT_FUNCTION_TIMEOUT));
        assert_eq!(defaults.outstanding_cap(), DEFAULT_MAX_OUTSTANDING);
        assert!(HostJson::parse(r#"{"functionTimeout":"soon"}"#).is_err());
        assert!(HostJson::parse(r#"{"functionTimeout":"00:61:00"}"#).is_err());
        let unbounded = HostJson::parse(r#"{"extensions":{"http":{"maxConcurrentRequests":-1}}}"#)
            .expect("valid");
        assert_eq!(unbounded.max_concurrent_requests, None);
    }

    #[test]
    fn worker_count_from_env_is_capped_and_flag_wins() {
        let dir = std::env::temp_dir();
        let env = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "3".to_owned());
        let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
        assert_eq!(cfg.workers.get(), 3);
        let mut a = args(&dir);
        a.workers = Some(2);
        assert_eq!(
            ServeConfig::resolve(a, &env).expect("valid").workers.get(),
            2
        );
        let too_many = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "11".to_owned());
        assert!(ServeConfig::resolve(args(&dir), &too_many).is_err());
    }

    #[test]
    fn admin_listener_defaults_to_loopback_9091() {
        let dir = std::env::temp_dir();
        let cli = Cli::try_parse_from(["sluice", "serve", &dir.display().to_string()])
            .expect("valid command line");
        let Command::Serve(serve) = cli.command else {
            panic!("serve subcommand")
        };
        let cfg = ServeConfig::resolve(serve, &|_| None).expect("valid");
        assert_eq!(cfg.admin, "127.0.0.1:9091".parse().expect("literal"));
        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            &dir.display().to_string(),
            "--admin-port",
            "0",
            "--admin-bind",
            "0.0.0.0",
        ])
        .expect("valid command line");
        let Command::Serve(serve) = cli.command else {
            panic!("serve subcommand")
        };
        let cfg = ServeConfig::resolve(serve, &|_| None).expect("valid");
        assert_eq!(cfg.admin, "0.0.0.0:0".parse().expect("literal"));
    }

    #[test]
    fn io_backend_and_threads_come_from_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("sluice-io-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("sluice.toml");
        std::fs::write(&file, "io = \"uring\"\nthreads = 3\n").expect("write");
        let mut a = args(&dir);
        a.config = Some(file.clone());
        let cfg = ServeConfig::resolve(a, &|_| None).expect("valid");
        assert_eq!((cfg.io, cfg.threads.get()), (IoMode::Uring, 3));
        assert!(!cfg.simulate_uring_failure);

        let mut a = args(&dir);
        a.config = Some(file.clone());
        a.io = Some(IoMode::Epoll);
        a.threads = Some(1);
        let probe = |k: &str| (k == "SLUICE_URING_PROBE").then(|| "fail".to_owned());
        let cfg = ServeConfig::resolve(a, &probe).expect("valid");
        assert_eq!((cfg.io, cfg.threads.get()), (IoMode::Epoll, 1), "flags win");
        assert!(cfg.simulate_uring_failure);

        let defaults = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
        assert_eq!(defaults.io, IoMode::Auto);
        assert_eq!(defaults.threads, default_threads());

        let mut zero = args(&dir);
        zero.threads = Some(0);
        assert!(ServeConfig::resolve(zero, &|_| None).is_err());
        let bogus = |k: &str| (k == "SLUICE_URING_PROBE").then(|| "maybe".to_owned());
        assert!(ServeConfig::resolve(args(&dir), &bogus).is_err());
        std::fs::write(&file, "io = \"kqueue\"\n").expect("write");
        let mut bad = args(&dir);
        bad.config = Some(file);
        assert!(ServeConfig::resolve(bad, &|_| None).is_err());
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn missing_app_dir_is_an_error() {
        let err = ServeConfig::resolve(args(Path::new("/nonexistent/sluice")), &|_| None);
        assert!(matches!(err, Err(ConfigError::NoAppDir { .. })));
    }
}
