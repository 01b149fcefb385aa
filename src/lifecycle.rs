//! Worker slots: start one worker (launch → connect → handshake → ready in the pool),
//! watch it (exit, health pings, recycle requests), replace it — at once when Sluice
//! recycles it on purpose, with backoff after a crash — and give a crash-looping slot
//! up; retire every slot of a generation that a `--watch` reload replaced ([`Workers::stop`]).
//! Wiring-level: it knows the supervisor, the rpc sessions, the pool and the catalog.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::config::SlotSettings;
use crate::functions::{Catalog, CatalogError};
use crate::metrics::{Metrics, RestartReason, RuntimeLabels};
use crate::pool::Pool;
use crate::ready_file::ReadyFile;
use crate::rpc::{Handshake, Initialised, Recycle, RpcError, RpcServer, Session};
use crate::supervisor::{SupervisorError, WorkerLaunch, WorkerProcess};

/// Restart backoff for a slot: doubles from the first value up to the cap.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// A slot that fails this many times within the window stops restarting (crash loop).
/// Failures count since the slot's last healthy worker (see `Running::healthy`).
const CRASH_LOOP: (usize, Duration) = (5, Duration::from_secs(300));
/// A worker up this long, or that answered an invocation, was healthy: its exit is a
/// fault (killed, OOM), not a crash loop, and clears the slot's failure count.
const HEALTHY_UPTIME: Duration = Duration::from_secs(30);
/// How long to wait for a worker whose stream closed to exit too.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// WorkerStatus health pings: how often, how long to wait, how many misses mean stuck.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);
const PINGS_MISSED: u32 = 2;
/// Recycling waits at most this long for a worker's other invocations to finish.
const RECYCLE_WAIT_CAP: Duration = Duration::from_secs(300);

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

impl StartError {
    /// The app itself failed (its code raised while loading), as opposed to a worker
    /// that cannot run at all. Sluice keeps serving (503s) and retrying on app failures.
    pub fn is_app_failure(&self) -> bool {
        matches!(self, StartError::Rpc(RpcError::Failed { .. }))
    }
}

/// A ready worker: its process and its stream.
pub struct Running {
    pub process: WorkerProcess,
    pub session: Arc<Session>,
    ready_at: Instant,
}

impl Running {
    fn healthy(&self) -> bool {
        self.session.answered() > 0 || self.ready_at.elapsed() >= HEALTHY_UPTIME
    }
}

/// What every worker start needs.
pub struct Workers {
    pub launch: WorkerLaunch,
    pub rpc: RpcServer,
    pub pool: Arc<Pool>,
    pub catalog: Arc<OnceLock<Catalog>>,
    settings: SlotSettings,
    /// Worker counts, restarts, runtime info and EventStream bytes are recorded here.
    pub metrics: Arc<Metrics>,
    /// Workers joining and leaving the pool are reported here too.
    pub ready_file: Arc<ReadyFile>,
    /// `true` once a newer generation replaced these workers: every slot retires its
    /// worker and stops (see [`Workers::stop`]).
    stopping: watch::Sender<bool>,
}

enum Ended {
    Exited(String),
    Recycle(Recycle),
    /// The generation was replaced ([`Workers::stop`]).
    Stopped,
}

impl Workers {
    /// Launches one worker and runs its start-up handshake; it is in the pool on success.
    pub async fn start(&self) -> Result<Running, StartError> {
        let _starting = self.metrics.worker_starting();
        let started = self.launch_one().await;
        if started.is_err() {
            self.metrics.worker_restart(RestartReason::StartFailed);
        }
        started
    }

    async fn launch_one(&self) -> Result<Running, StartError> {
        let (process, initialised) = self.launch_initialised().await?;
        self.finish(process, initialised).await
    }

    fn handshake<'a>(
        &'a self,
        id: &'a str,
        index: &'a (dyn Fn() -> Result<Vec<crate::rpc::FunctionMeta>, String> + Sync),
    ) -> Handshake<'a> {
        Handshake {
            worker_id: id,
            app_dir: &self.launch.app_dir,
            worker_dir: &self.launch.worker_dir,
            host_version: env!("CARGO_PKG_VERSION"),
            step_timeout: self.settings.startup_timeout,
            host_index: index,
            traffic: self.metrics.rpc_traffic(),
        }
    }

    /// Launch → StartStream → WorkerInit. Placeholder workers stop here until assignment.
    pub async fn launch_initialised(&self) -> Result<(WorkerProcess, Initialised), StartError> {
        let id = uuid::Uuid::new_v4().to_string();
        let connection = self.rpc.expect(&id);
        let mut process = self.launch.spawn(&id, self.rpc.addr().port())?;
        let connection = tokio::select! {
            conn = tokio::time::timeout(self.settings.startup_timeout, connection) => match conn {
                Ok(Ok(conn)) => conn,
                _ => {
                    self.rpc.forget(&id);
                    return Err(StartError::ConnectTimeout { worker: id.clone(), timeout: self.settings.startup_timeout });
                }
            },
            status = process.exited() => {
                self.rpc.forget(&id);
                return Err(exited(&id, status));
            }
        };
        info!(worker = %id, "worker connected");
        let no_index = || Err("not indexed at init".to_owned());
        let handshake = self.handshake(&id, &no_index);
        let initialised =
            until_exit(&mut process, Initialised::init(connection, &handshake)).await?;
        Ok((process, initialised))
    }

    /// FunctionsMetadata → FunctionLoad → in the pool, against this launch's app.
    pub async fn finish(
        &self,
        mut process: WorkerProcess,
        initialised: Initialised,
    ) -> Result<Running, StartError> {
        let id = process.id.clone();
        let index =
            || crate::app::index_function_json(&self.launch.app_dir).map_err(|e| e.to_string());
        let handshake = self.handshake(&id, &index);
        let (session, functions) = until_exit(
            &mut process,
            crate::rpc::Session::load(initialised, &handshake),
        )
        .await?;
        if self.catalog.get().is_none() {
            let built = Catalog::build(
                &self.settings.route_prefix,
                &functions,
                session.http().is_some(),
            )?;
            let names: Vec<&str> = built.functions.iter().map(|f| &*f.name).collect();
            info!(functions = ?names, "functions indexed");
            let _ = self.catalog.set(built);
        }
        self.pool.add(session.clone());
        let runtime = session.runtime();
        self.metrics.worker_ready(RuntimeLabels {
            package: runtime.package.clone(),
            version: runtime.version.clone(),
            source: runtime.source.clone(),
        });
        let pid = process.child.id().unwrap_or(0);
        self.ready_file.worker_ready(&id, pid);
        info!(worker = %id, pid, functions = functions.len(), "worker ready");
        Ok(Running {
            process,
            session,
            ready_at: Instant::now(),
        })
    }

    /// Takes a worker that [`Workers::finish`] put in the pool out again.
    pub fn leave_pool(&self, worker: &str) {
        self.pool.remove(worker);
        self.metrics.worker_removed();
        self.ready_file.worker_gone(worker);
    }

    /// Retires every slot of these workers (a newer generation serves instead): each
    /// worker leaves the pool, gets time to finish its invocations (bounded as a recycle
    /// after a function timeout is) and is stopped; no slot restarts. Idempotent.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Keeps one slot running until it crash-loops or [`Workers::stop`] is called;
    /// returns when the slot is given up or stopped. The slot was counted in the pool
    /// ([`Pool::expect_slots`]) by whoever created it; it leaves the count here.
    pub async fn supervise(self: Arc<Self>, slot: usize, mut running: Option<Running>) {
        let _gone = SlotGone(&self.pool);
        let mut stopping = self.stopping.subscribe();
        let mut failures: Vec<Instant> = Vec::new();
        let mut backoff = RESTART_BACKOFF.0;
        loop {
            if let Some(mut current) = running.take() {
                let Running {
                    process, session, ..
                } = &mut current;
                let ended = tokio::select! {
                    ended = watch(process, session) => ended,
                    _ = stopped(&mut stopping) => Ended::Stopped,
                };
                self.leave_pool(&process.id);
                match ended {
                    Ended::Stopped => {
                        self.retire(process, session, self.drain_cap()).await;
                        info!(slot, worker = %process.id, "worker retired: a newer generation serves");
                        return;
                    }
                    Ended::Recycle(reason) => {
                        self.metrics.worker_restart(RestartReason::Recycled);
                        let wait = match reason {
                            // A worker that ignores pings will not finish anything either.
                            Recycle::Unresponsive => Duration::ZERO,
                            Recycle::FunctionTimeout => self.drain_cap(),
                        };
                        self.retire(process, session, wait).await;
                        info!(worker = %process.id, %reason, "worker recycled");
                        // A deliberate replacement: start the new worker at once.
                        match self.start_unless_stopped(&mut stopping).await {
                            Some(Ok(started)) => {
                                running = Some(started);
                                continue;
                            }
                            Some(Err(e)) => error!(slot, error = %e, "worker failed to start"),
                            None => return,
                        }
                    }
                    Ended::Exited(status) => {
                        self.metrics.worker_restart(RestartReason::Exited);
                        warn!(slot, worker = %process.id, %status, "worker exited");
                        if current.healthy() {
                            failures.clear();
                        }
                        backoff = RESTART_BACKOFF.0;
                    }
                }
            }
            let now = Instant::now();
            failures.retain(|t| now.duration_since(*t) < CRASH_LOOP.1);
            failures.push(now);
            if failures.len() >= CRASH_LOOP.0 {
                error!(slot, failures = failures.len(), window = ?CRASH_LOOP.1, "worker keeps failing; slot stopped");
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stopping) => return,
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF.1);
            match self.start_unless_stopped(&mut stopping).await {
                Some(Ok(started)) => running = Some(started),
                Some(Err(e)) => error!(slot, error = %e, "worker failed to start"),
                None => return,
            }
        }
    }

    /// [`Workers::start`], abandoned (the half-started process killed) once the
    /// generation is stopped: `None` then.
    async fn start_unless_stopped(
        &self,
        stopping: &mut watch::Receiver<bool>,
    ) -> Option<Result<Running, StartError>> {
        tokio::select! {
            started = self.start() => Some(started),
            _ = stopped(stopping) => None,
        }
    }

    /// How long a worker replaced on purpose may take to finish its invocations:
    /// host.json's functionTimeout, at most [`RECYCLE_WAIT_CAP`].
    pub(crate) fn drain_cap(&self) -> Duration {
        self.settings
            .function_timeout
            .unwrap_or(RECYCLE_WAIT_CAP)
            .min(RECYCLE_WAIT_CAP)
    }

    /// Replaces a worker on purpose: it already takes no new invocations; its other
    /// invocations get up to `wait` to finish, then the process is killed.
    async fn retire(&self, process: &mut WorkerProcess, session: &Session, wait: Duration) {
        // Whatever is still running after `wait` is lost with the process.
        let _ = tokio::time::timeout(wait, session.drained()).await;
        let _ = process.child.start_kill();
        let _ = process.exited().await;
    }
}

/// Takes a slot out of the pool's count however its supervision ends.
struct SlotGone<'a>(&'a Pool);

impl Drop for SlotGone<'_> {
    fn drop(&mut self) {
        self.0.slot_gone();
    }
}

impl Workers {
    /// Everything a worker start needs, for these settings.
    pub fn new(
        settings: SlotSettings,
        launch: WorkerLaunch,
        rpc: RpcServer,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        ready_file: Arc<ReadyFile>,
    ) -> Workers {
        Workers {
            launch,
            rpc,
            pool,
            catalog: Arc::new(OnceLock::new()),
            settings,
            metrics,
            ready_file,
            stopping: watch::Sender::new(false),
        }
    }
}

/// The order every mode starts a set of worker slots in: `serve`, a `--watch` reload and
/// a placeholder's assignment. A worker's start is CPU work (interpreter, imports,
/// indexing): started together on a small machine, they share the cores and the first is
/// ready only when all are. So the caller starts the first alone — the app is served as
/// soon as it is ready — and only then the others, each in its turn here: at most
/// cores − 1 at a time, leaving a core to the traffic the first one now takes.
#[derive(Clone)]
pub struct StartOrder {
    at_once: Arc<Semaphore>,
}

impl StartOrder {
    /// For the slots after the first, once the first is done.
    pub fn after_first() -> StartOrder {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        StartOrder {
            at_once: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))),
        }
    }

    /// Runs one slot's start when its turn comes; the turn ends with the start.
    pub async fn in_turn<T>(&self, start: impl std::future::Future<Output = T>) -> T {
        // Never closed, so the turn always comes.
        let _turn = self.at_once.acquire().await;
        start.await
    }
}

/// Resolves once the generation is stopped (never, while its [`Workers`] live unstopped).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The sender lives in `Workers`, which the caller holds: no error while it waits.
    let _ = stopping.wait_for(|stop| *stop).await;
}

fn exited(worker: &str, status: std::io::Result<std::process::ExitStatus>) -> StartError {
    StartError::Exited {
        worker: worker.to_owned(),
        status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
    }
}

/// Runs one handshake step while watching the process: a worker that dies mid-step is
/// reported by its exit status, which says why (it closes its stream first).
pub async fn until_exit<T>(
    process: &mut WorkerProcess,
    step: impl std::future::Future<Output = Result<T, RpcError>>,
) -> Result<T, StartError> {
    let id = process.id.clone();
    tokio::select! {
        done = step => match done {
            Ok(done) => Ok(done),
            Err(e @ RpcError::StreamClosed { .. }) => {
                match tokio::time::timeout(EXIT_GRACE, process.exited()).await {
                    Ok(status) => Err(exited(&id, status)),
                    Err(_) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        },
        status = process.exited() => Err(exited(&id, status)),
    }
}

/// Waits until the worker exits or Sluice wants it replaced; pings it meanwhile.
async fn watch(process: &mut WorkerProcess, session: &Session) -> Ended {
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut missed = 0;
    loop {
        tokio::select! {
            status = process.exited() => {
                return Ended::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
            }
            reason = session.recycle_requested() => return Ended::Recycle(reason),
            _ = ticker.tick() => {
                if session.ping(PING_TIMEOUT).await {
                    missed = 0;
                } else if !session.is_closed() {
                    missed += 1;
                    if missed >= PINGS_MISSED {
                        session.request_recycle(Recycle::Unresponsive);
                    }
                }
            }
        }
    }
}
