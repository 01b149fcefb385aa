//! What every worker of an app is launched from, resolved before any worker starts: the
//! Python found, the worker's private environment (built from the package embedded in the
//! binary), the app's installed requirements, and the resulting [`WorkerLaunch`]. Used by
//! `serve`, `check` and each `--watch` reload, so a reload sees every change.

use tracing::info;

use crate::config::ServeConfig;
use crate::python::{self, Asset, PythonError};
use crate::supervisor::{LaunchMode, WorkerLaunch};
use crate::worker_config::{WorkerConfigError, WorkerDescription};

/// One file of `worker/`, embedded under its path there.
macro_rules! worker_file {
    ($path:literal) => {
        Asset {
            path: $path,
            bytes: include_bytes!(concat!("../worker/", $path)),
        }
    };
}

/// The worker package, embedded so the binary alone is enough to run an app.
const WORKER_ASSETS: &[Asset] = &[
    worker_file!("worker.py"),
    worker_file!("sluice_worker/__init__.py"),
    worker_file!("sluice_worker/main.py"),
    worker_file!("sluice_worker/protos.py"),
    worker_file!("sluice_worker/transport.py"),
    worker_file!("sluice_worker/dispatcher.py"),
    worker_file!("sluice_worker/isolation.py"),
    worker_file!("sluice_worker/logs.py"),
    worker_file!("sluice_worker/fastpath.py"),
    worker_file!("sluice_worker/native_transport.py"),
    // The native EventStream client (build.rs builds native/); without it, grpcio is used.
    #[cfg(sluice_native)]
    Asset {
        path: "sluice_worker/_native.abi3.so",
        bytes: include_bytes!(concat!(env!("OUT_DIR"), "/sluice_native.abi3.so")),
    },
    Asset {
        path: "FunctionRpc.desc",
        bytes: crate::proto::DESCRIPTOR_SET,
    },
];
const WORKER_LOCK: &str = include_str!("../worker/requirements.lock");

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    WorkerConfig(#[from] WorkerConfigError),
}

/// What both `serve` and `check` resolve before any worker starts.
pub struct Prepared {
    pub python: python::PythonInfo,
    pub launch: WorkerLaunch,
}

/// Finds Python, builds (or reuses) the worker's environment, installs the app's
/// requirements when needed. Everything a worker launch is built from is read here, so a
/// `--watch` reload, which calls it again, sees every change.
pub async fn prepare(config: &ServeConfig) -> Result<Prepared, PrepareError> {
    let search = |k: &str| config.python_search.get(k);
    let python = python::find_python(config.python.as_deref(), &search).await?;
    info!(python = %python.path.display(), version = %python.version_string(), "using Python");
    let worker_env =
        python::ensure_worker_env(&python, &config.cache_dir, WORKER_LOCK, WORKER_ASSETS).await?;
    let app_site = python::ensure_app_packages(&python, &config.app_dir, config.install).await?;
    let (major, minor, _) = python.version;
    let python_version = format!("{major}.{minor}");
    let launch = WorkerLaunch {
        python: python.path.clone(),
        worker_dir: worker_env.worker_dir.clone(),
        app_dir: config.app_dir.clone(),
        worker_site: worker_env.site_packages.clone(),
        app_site,
        description: match &config.worker_config {
            Some(path) => {
                let lookup = |name: &str| match name {
                    "FUNCTIONS_WORKER_RUNTIME_VERSION" => Some(python_version.clone()),
                    _ => config.inherited.get(name),
                };
                let description = WorkerDescription::load(path, &lookup)?;
                info!(executable = %description.executable.display(), "using the described worker");
                Some(description)
            }
            None => None,
        },
        python_version,
        app_settings: config.app_settings.applied.clone(),
        inherited: config.inherited.clone(),
        mode: match config.placeholder {
            true => LaunchMode::Placeholder,
            false => LaunchMode::App,
        },
    };
    Ok(Prepared { python, launch })
}
