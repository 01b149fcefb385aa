//! `sluice serve` in two phases. [`build`] does everything that can fail before serving —
//! environments, keys, the FunctionRpc server, the watcher, both listeners — and returns
//! the bound [`App`]. [`App::run`] serves: the admin listener, the front end, then the
//! workers (in the `StartOrder`: the first alone, then the rest), each slot kept running
//! (restart with backoff) until shutdown; with `--watch` the running generation goes to the
//! reloader (`reload`); with `--placeholder` the placeholder's workers wait for an app
//! instead. Then the drain, through which the workers keep serving.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::admin::Admin;
use crate::config::ServeConfig;
use crate::dispatch::Dispatcher;
use crate::functions::CatalogError;
use crate::generation::{Current, Generation, Slots, all_done};
use crate::http::HttpLimits;
use crate::keys::{KeyError, KeyStore};
use crate::launch::{PrepareError, Prepared, prepare};
use crate::lifecycle::{Running, StartError, StartOrder, Workers};
use crate::metrics::Metrics;
use crate::placeholder::Placeholder;
use crate::pool::Pool;
use crate::python::PythonInfo;
use crate::ready_file::ReadyFile;
use crate::rpc::{RpcError, RpcServer};
pub use crate::shutdown::Shutdown;
use crate::supervisor::WorkerLaunch;
use crate::watch::{WatchError, Watcher};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the app's functions cannot be routed")]
    Catalog(#[from] CatalogError),
    #[error("no worker could start: {0}")]
    NoWorker(StartError),
    #[error("every worker slot crash-looped; no worker can run")]
    AllSlotsFailed,
    #[error("second shutdown signal: exited without waiting for requests in flight")]
    Interrupted,
    #[error("cannot handle shutdown signals: {0}")]
    Signals(std::io::Error),
}

/// `sluice serve`: [`build`], then [`App::run`] until SIGTERM or SIGINT. The signals are
/// handled from the start: one during `build` stops it (exit 0, nothing served).
pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let shutdown = Shutdown::listen().map_err(ServeError::Signals)?;
    let app = tokio::select! {
        app = build(config) => app?,
        _ = shutdown.received() => {
            info!("shutdown signal during start-up; exiting");
            return Ok(());
        }
    };
    app.run(shutdown).await
}

/// Phase 1 of serving: everything that can fail before anything is served — the Python
/// and worker environments, the keys, the FunctionRpc server, the file watcher and both
/// listeners. The addresses are known (and in the ready file) once it returns.
pub async fn build(config: ServeConfig) -> Result<App, ServeError> {
    // First, so that the cold start counts from here.
    let metrics = Arc::new(Metrics::new());
    let Prepared { launch, python } = prepare(&config).await?;
    let keys = match &config.secrets_file {
        Some(path) => KeyStore::load(path)?,
        None => KeyStore::default(),
    };
    let rpc = RpcServer::start().await?;
    // Before listening: a watch that cannot start is a start-up error.
    let watcher = match config.watch {
        true => Some(crate::watch::Watcher::start(&config.app_dir)?),
        false => None,
    };
    let bind_error = |addr| move |source| ServeError::Bind { addr, source };
    let listener = crate::http::bind(config.listen)
        .await
        .map_err(bind_error(config.listen))?;
    let addr = listener.local_addr().map_err(bind_error(config.listen))?;
    info!(%addr, app = %config.app_dir.display(), workers = config.workers.get(), "listening");
    // Logged after the public `listening` line: tools take the first `addr=` as the public one.
    let admin_listener = crate::admin::bind(config.admin)
        .await
        .map_err(bind_error(config.admin))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(bind_error(config.admin))?;
    info!(addr = %admin_addr, "admin listening");
    let ready_file = Arc::new(ReadyFile::new(config.ready_file.clone()));
    ready_file.listening(addr, admin_addr);
    Ok(App {
        config,
        metrics,
        launch,
        python,
        keys,
        rpc,
        watcher,
        listener,
        admin_listener,
        ready_file,
    })
}

/// A built server, bound and not yet serving.
pub struct App {
    config: ServeConfig,
    metrics: Arc<Metrics>,
    launch: WorkerLaunch,
    python: PythonInfo,
    keys: KeyStore,
    rpc: RpcServer,
    watcher: Option<Watcher>,
    listener: TcpListener,
    admin_listener: TcpListener,
    ready_file: Arc<ReadyFile>,
}

impl App {
    /// Phase 2: the admin listener, the front end and the workers, until a shutdown
    /// signal (one received while building counts); then the drain, which another
    /// signal cuts short.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ServeError> {
        let App {
            config,
            metrics,
            launch,
            python,
            keys,
            rpc,
            watcher,
            listener,
            admin_listener,
            ready_file,
        } = self;
        let pool = Arc::new(Pool::default());
        let (drain_tx, drain_rx) = watch::channel(false);
        let workers = Arc::new(Workers::new(
            config.slot_settings(&config.host),
            launch,
            rpc.clone(),
            pool.clone(),
            metrics.clone(),
            ready_file.clone(),
        ));
        let (generation, released) = Generation::new(
            &config.host,
            config.cors.clone(),
            pool.clone(),
            workers.catalog.clone(),
        );
        let (current, swap) = match config.watch {
            true => {
                let (current, swap) = Current::swappable(generation);
                (current, Some(swap))
            }
            false => (Current::fixed(generation), None),
        };
        // Its workers start now, before the admin listener can take an assignment.
        let placeholder = config.placeholder.then(|| {
            Placeholder::start(
                config.clone(),
                python,
                workers.clone(),
                keys.clone(),
                metrics.clone(),
            )
        });
        let admin = admin_service(&config, &metrics, &current, &drain_rx, placeholder.as_ref());
        // Answers until exit, so probes see /readyz 503 for the whole drain.
        let _admin = AbortOnDrop(tokio::spawn(crate::admin::serve(
            admin_listener,
            Arc::new(admin),
        )));
        let front_end = crate::http::FrontEnd {
            io: config.io,
            threads: config.threads,
            simulate_uring_failure: config.simulate_uring_failure,
        };
        let drain = Drain {
            config: &config,
            ready_file: &ready_file,
            shutdown: &shutdown,
            sender: drain_tx,
        };
        if let Some(placeholder) = placeholder {
            let result =
                serve_placeholder(placeholder, listener, front_end, drain_rx, &drain).await;
            // The empty placeholder directory made for this process (left if not empty).
            let _ = std::fs::remove_dir(&config.app_dir);
            return result;
        }
        let dispatcher = Arc::new(Dispatcher::new(
            config.dispatch_settings(),
            current.clone(),
            keys,
            metrics.clone(),
        ));
        let http = AbortOnDrop(tokio::spawn(crate::http::serve(
            listener,
            dispatcher,
            HttpLimits::default(),
            front_end,
            drain_rx,
        )));
        // The workers: their start, then serving (reloads included) until dropped, which
        // stops them (and a start still under way). It ends only on a start-up failure,
        // or when every slot has stopped.
        let mut keep_serving = Box::pin(async {
            let tasks = match start_slots(&config, &workers, &pool).await {
                Ok(tasks) => tasks,
                Err(e) => return e,
            };
            let mut serving = Slots {
                workers,
                tasks,
                released,
            };
            match watcher.zip(swap) {
                Some((watcher, swap)) => {
                    let reloader = crate::reload::Reloader {
                        config: config.clone(),
                        swap,
                        rpc,
                        metrics,
                        ready_file: ready_file.clone(),
                        watcher,
                    };
                    reloader.run(serving).await;
                }
                None => all_done(&mut serving.tasks).await,
            }
            ServeError::AllSlotsFailed
        });
        tokio::select! {
            _ = shutdown.received() => {}
            stopped = &mut keep_serving => {
                if matches!(stopped, ServeError::AllSlotsFailed) {
                    // Requests waiting for a worker were just told none is coming (503):
                    // let their answers out before exiting for the process manager to
                    // restart Sluice.
                    error!("every worker slot has stopped; answering the requests in flight, then exiting");
                    let _ = drain.run(http).await;
                }
                return Err(stopped);
            }
        }
        // The workers keep starting and serving through the drain: a request in flight
        // may be waiting for one. If they stop meanwhile, the drain goes on without them.
        let serving_on = async {
            let _ = (&mut keep_serving).await;
            std::future::pending::<()>().await
        };
        let result = tokio::select! {
            result = drain.run(http) => result,
            () = serving_on => unreachable!("pending forever"),
        };
        drop(keep_serving);
        result
    }
}

/// Starts every worker slot of the app in the start order (`StartOrder`: the first
/// alone, then the others) and hands each to its supervision. Returns once every first
/// start is done; fails if the app cannot be routed, or if no worker started and one
/// cannot run at all.
async fn start_slots(
    config: &ServeConfig,
    workers: &Arc<Workers>,
    pool: &Pool,
) -> Result<JoinSet<()>, ServeError> {
    // Each slot is supervised once its start is done (`Workers::supervise`).
    pool.expect_slots(config.workers.get());
    let mut started = Started::default();
    let first = workers.start().await;
    let mut slots = JoinSet::new();
    slots.spawn(
        workers
            .clone()
            .supervise(0, started.settle(config, pool, 0, first)?),
    );
    let order = StartOrder::after_first();
    let mut others = JoinSet::new();
    for slot in 1..config.workers.get() {
        let workers = workers.clone();
        let order = order.clone();
        others.spawn(async move { (slot, order.in_turn(workers.start()).await) });
    }
    while let Some(joined) = others.join_next().await {
        let Ok((slot, result)) = joined else { continue };
        let running = started.settle(config, pool, slot, result)?;
        slots.spawn(workers.clone().supervise(slot, running));
    }
    if started.count == 0 {
        // Requests get 503 at once instead of waiting out the start-up timeout.
        pool.fail_startup();
        // A worker that cannot run at all will not run on retry; an app that raised
        // while loading might (a file fixed, a dependency back): keep serving 503s.
        if let Some(e) = started.fatal {
            return Err(ServeError::NoWorker(e));
        }
    }
    Ok(slots)
}

/// The outcome of the slots' first starts so far.
#[derive(Default)]
struct Started {
    count: usize,
    /// The first failure of a worker that cannot run at all.
    fatal: Option<StartError>,
}

impl Started {
    /// Counts one slot's first start; the worker to supervise, if it started.
    fn settle(
        &mut self,
        config: &ServeConfig,
        pool: &Pool,
        slot: usize,
        result: Result<Running, StartError>,
    ) -> Result<Option<Running>, ServeError> {
        match result {
            Ok(running) => {
                self.count += 1;
                Ok(Some(running))
            }
            Err(StartError::Catalog(e)) => {
                pool.fail_startup();
                if !config.watch {
                    return Err(ServeError::Catalog(e));
                }
                // Watching: an edit may fix the routes.
                error!(slot, error = %e, "the app's functions cannot be routed");
                Ok(None)
            }
            Err(e) => {
                error!(slot, error = %e, "worker failed to start");
                if !e.is_app_failure() {
                    self.fatal.get_or_insert(e);
                }
                Ok(None)
            }
        }
    }
}

/// The admin listener's service: metrics, probes (`/readyz`: a worker ready and not
/// draining) and, in placeholder mode, assignments.
fn admin_service(
    config: &ServeConfig,
    metrics: &Arc<Metrics>,
    current: &Current,
    draining: &watch::Receiver<bool>,
    placeholder: Option<&Arc<Placeholder>>,
) -> Admin {
    let current = current.clone();
    let draining = draining.clone();
    Admin {
        metrics: metrics.clone(),
        ready: Box::new(move || !*draining.borrow() && current.ready_count() > 0),
        assign: placeholder.map(|p| p.assign_fn()),
        token: config.admin_token.clone(),
    }
}

/// Placeholder mode: every request goes to the placeholder (503 until an app is
/// assigned) until shutdown; then the drain.
async fn serve_placeholder(
    placeholder: Arc<Placeholder>,
    listener: TcpListener,
    front_end: crate::http::FrontEnd,
    draining: watch::Receiver<bool>,
    drain: &Drain<'_>,
) -> Result<(), ServeError> {
    let handler = {
        let placeholder = placeholder.clone();
        move |request| {
            let placeholder = placeholder.clone();
            async move { placeholder.handle(request).await }
        }
    };
    let http = AbortOnDrop(tokio::spawn(crate::http::serve_with(
        listener,
        handler,
        HttpLimits::default(),
        front_end,
        draining,
    )));
    drain.shutdown.received().await;
    drain.run(http).await
}

/// The drain: what it tells (the front end, the ready file) and what cuts it short.
struct Drain<'a> {
    config: &'a ServeConfig,
    ready_file: &'a ReadyFile,
    shutdown: &'a Shutdown,
    sender: watch::Sender<bool>,
}

impl Drain<'_> {
    /// Stops accepting, lets requests in flight finish within the grace period; another
    /// shutdown signal cuts it short.
    async fn run(&self, mut http: AbortOnDrop) -> Result<(), ServeError> {
        let interrupted = self.shutdown.another();
        info!(grace = ?self.config.drain_grace, "draining");
        let _ = self.sender.send(true);
        self.ready_file.draining();
        tokio::select! {
            _ = &mut http.0 => info!("drained"),
            _ = tokio::time::sleep(self.config.drain_grace) => warn!("drain grace period over; exiting with requests in flight"),
            _ = interrupted => return Err(ServeError::Interrupted),
        }
        Ok(())
    }
}

/// Aborts a background task when the owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
