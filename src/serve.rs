//! `sluice serve`: wires the components together in explicit phases — environments,
//! keys, the FunctionRpc server, the HTTP listener, then the workers — and keeps each
//! worker slot running (restart with backoff) until a shutdown signal.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::ServeConfig;
use crate::dispatch::Dispatcher;
use crate::functions::{Catalog, CatalogError};
use crate::keys::{KeyError, KeyStore};
use crate::pool::Pool;
use crate::python::{self, Asset, PythonError};
use crate::rpc::session::Handshake;
use crate::rpc::{RpcError, RpcServer, Session};
use crate::supervisor::{SupervisorError, WorkerLaunch, WorkerProcess};

/// The worker package, embedded so the binary alone is enough to run an app.
const WORKER_ASSETS: &[Asset] = &[
    Asset {
        path: "worker.py",
        bytes: include_bytes!("../worker/worker.py"),
    },
    Asset {
        path: "sluice_worker/__init__.py",
        bytes: include_bytes!("../worker/sluice_worker/__init__.py"),
    },
    Asset {
        path: "sluice_worker/main.py",
        bytes: include_bytes!("../worker/sluice_worker/main.py"),
    },
    Asset {
        path: "sluice_worker/protos.py",
        bytes: include_bytes!("../worker/sluice_worker/protos.py"),
    },
    Asset {
        path: "sluice_worker/transport.py",
        bytes: include_bytes!("../worker/sluice_worker/transport.py"),
    },
    Asset {
        path: "sluice_worker/dispatcher.py",
        bytes: include_bytes!("../worker/sluice_worker/dispatcher.py"),
    },
    Asset {
        path: "sluice_worker/logs.py",
        bytes: include_bytes!("../worker/sluice_worker/logs.py"),
    },
    Asset {
        path: "FunctionRpc.desc",
        bytes: crate::proto::DESCRIPTOR_SET,
    },
];
const WORKER_LOCK: &str = include_str!("../worker/requirements.lock");

/// Restart backoff for a worker slot: doubles from the first value up to the cap.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// How long to wait for a worker whose stream closed to exit too.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// A slot that fails this many times within the window stops restarting (crash loop).
const CRASH_LOOP: (u32, Duration) = (5, Duration::from_secs(300));

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the app's functions cannot be routed: {0}")]
    Catalog(#[from] CatalogError),
    #[error("no worker could start: {0}")]
    NoWorker(StartError),
}

/// Why one worker did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Spawn(#[from] SupervisorError),
    #[error("worker {worker} exited during start-up ({status})")]
    Exited { worker: String, status: String },
    #[error("worker {worker} did not connect within {timeout:?}")]
    ConnectTimeout { worker: String, timeout: Duration },
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What every worker start needs.
struct Workers {
    launch: WorkerLaunch,
    rpc: RpcServer,
    pool: Arc<Pool>,
    catalog: Arc<OnceLock<Catalog>>,
    route_prefix: String,
    startup_timeout: Duration,
}

pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let env = |k: &str| std::env::var(k).ok();
    let python = python::find_python(config.python.as_deref(), &env).await?;
    info!(python = %python.path.display(), version = %python.version_string(), "using Python");
    let worker_env = python::ensure_worker_env(
        &python,
        &python::default_cache_dir(&env),
        WORKER_LOCK,
        WORKER_ASSETS,
    )
    .await?;
    let app_site = python::ensure_app_packages(&python, &config.app_dir).await?;
    let keys = match &config.secrets_file {
        Some(path) => KeyStore::load(path)?,
        None => KeyStore::default(),
    };

    let rpc = RpcServer::start().await?;
    let listener = crate::http::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    info!(%addr, app = %config.app_dir.display(), workers = config.workers.get(), "listening");

    let pool = Arc::new(Pool::default());
    let catalog = Arc::new(OnceLock::new());
    let dispatcher = Arc::new(Dispatcher {
        pool: pool.clone(),
        catalog: catalog.clone(),
        keys,
        body_limit: config.body_limit,
        startup_timeout: config.startup_timeout,
    });
    let _http = AbortOnDrop(tokio::spawn(crate::http::serve(listener, dispatcher)));

    let (major, minor, _) = python.version;
    let workers = Arc::new(Workers {
        launch: WorkerLaunch {
            python: python.path.clone(),
            worker_dir: worker_env.worker_dir.clone(),
            app_dir: config.app_dir.clone(),
            worker_site: worker_env.site_packages.clone(),
            app_site,
            python_version: format!("{major}.{minor}"),
        },
        rpc,
        pool: pool.clone(),
        catalog,
        route_prefix: config.host.route_prefix.clone(),
        startup_timeout: config.startup_timeout,
    });

    // Start every slot at once; the app is served as soon as the first is ready.
    let mut starts = JoinSet::new();
    for slot in 0..config.workers.get() {
        let workers = workers.clone();
        starts.spawn(async move { (slot, workers.start().await) });
    }
    let mut slots = JoinSet::new();
    let mut first_error = None;
    let mut started = 0;
    while let Some(joined) = starts.join_next().await {
        let Ok((slot, result)) = joined else { continue };
        let process = match result {
            Ok(process) => {
                started += 1;
                Some(process)
            }
            Err(StartError::Catalog(e)) => {
                pool.fail_startup();
                return Err(ServeError::Catalog(e));
            }
            Err(e) => {
                error!(slot, error = %e, "worker failed to start");
                first_error.get_or_insert(e);
                None
            }
        };
        slots.spawn(workers.clone().supervise(slot, process));
    }
    if started == 0 {
        pool.fail_startup();
        if let Some(e) = first_error {
            return Err(ServeError::NoWorker(e));
        }
    }

    shutdown_signal().await;
    info!("shutting down");
    slots.abort_all();
    Ok(())
}

impl Workers {
    /// Launches one worker and runs its start-up handshake; it is in the pool on success.
    async fn start(&self) -> Result<WorkerProcess, StartError> {
        let id = uuid::Uuid::new_v4().to_string();
        let connection = self.rpc.expect(&id);
        let mut process = self.launch.spawn(&id, self.rpc.addr().port())?;
        let exited = |status: std::io::Result<std::process::ExitStatus>| StartError::Exited {
            worker: id.clone(),
            status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
        };
        let connection = tokio::select! {
            conn = tokio::time::timeout(self.startup_timeout, connection) => match conn {
                Ok(Ok(conn)) => conn,
                _ => {
                    self.rpc.forget(&id);
                    return Err(StartError::ConnectTimeout { worker: id.clone(), timeout: self.startup_timeout });
                }
            },
            status = process.exited() => {
                self.rpc.forget(&id);
                return Err(exited(status));
            }
        };
        let handshake = Handshake {
            worker_id: &id,
            app_dir: &self.launch.app_dir,
            worker_dir: &self.launch.worker_dir,
            host_version: env!("CARGO_PKG_VERSION"),
            step_timeout: self.startup_timeout,
        };
        let (session, functions) = tokio::select! {
            started = Session::start(connection, handshake) => match started {
                Ok(started) => started,
                // A dying worker closes its stream first; report the exit, which says why.
                Err(e) => match tokio::time::timeout(EXIT_GRACE, process.exited()).await {
                    Ok(status) => return Err(exited(status)),
                    Err(_) => return Err(e.into()),
                },
            },
            status = process.exited() => return Err(exited(status)),
        };
        if self.catalog.get().is_none() {
            let built = Catalog::build(&self.route_prefix, &functions)?;
            let names: Vec<&str> = built.functions.iter().map(|f| &*f.name).collect();
            info!(functions = ?names, "functions indexed");
            let _ = self.catalog.set(built);
        }
        self.pool.add(session);
        info!(worker = %id, pid = process.child.id().unwrap_or(0), functions = functions.len(), "worker ready");
        Ok(process)
    }

    /// Keeps one slot running: restarts its worker with backoff when it exits, and
    /// gives up on the slot (logging why) when it crash-loops.
    async fn supervise(self: Arc<Self>, slot: usize, mut process: Option<WorkerProcess>) {
        let mut failures: Vec<Instant> = Vec::new();
        let mut backoff = RESTART_BACKOFF.0;
        loop {
            if let Some(mut running) = process.take() {
                let status = running.exited().await;
                self.pool.remove(&running.id);
                warn!(slot, worker = %running.id, status = ?status, "worker exited");
                backoff = RESTART_BACKOFF.0;
            }
            let now = Instant::now();
            failures.retain(|t| now.duration_since(*t) < CRASH_LOOP.1);
            failures.push(now);
            if failures.len() as u32 >= CRASH_LOOP.0 {
                error!(slot, failures = failures.len(), window = ?CRASH_LOOP.1, "worker keeps failing; slot stopped");
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RESTART_BACKOFF.1);
            match self.start().await {
                Ok(started) => process = Some(started),
                Err(e) => error!(slot, error = %e, "worker failed to start"),
            }
        }
    }
}

/// Aborts a background task when the owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
