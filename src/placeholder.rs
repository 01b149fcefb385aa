//! Placeholder mode (`sluice serve --placeholder`): workers start and initialise against
//! an empty placeholder app while no app is known; an assignment (`POST /admin/assign`)
//! specialises them with FunctionEnvironmentReloadRequest, then metadata → load → ready
//! runs as on a normal start and the assigned app is served. Until then every request
//! answers 503. A failed assignment leaves Sluice serving 503s with fresh placeholders,
//! so a later assignment can succeed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::body::{self, Body};
use http::{Response, StatusCode, header};
use serde::Deserialize;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::admin::AssignFn;
use crate::config::{ConfigError, HostJson, ServeConfig};
use crate::dispatch::Dispatcher;
use crate::generation::{Current, Generation};
use crate::keys::KeyStore;
use crate::lifecycle::{Running, StartError, StartOrder, Workers};
use crate::metrics::{FunctionName, Metrics};
use crate::pool::Pool;
use crate::python::{self, PythonError, PythonInfo};
use crate::repeats::{self, Repeats};
use crate::rpc::Initialised;
use crate::supervisor::{LaunchMode, WorkerProcess};

/// The body of `POST /admin/assign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The function app directory (host.json, function_app.py or function.json folders).
    pub app_dir: PathBuf,
    /// App settings: the workers' environment becomes Sluice's own plus these.
    #[serde(default)]
    pub environment: HashMap<String, String>,
}

/// Why an assignment was refused or failed; the cause is kept as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("bad assignment: invalid JSON body: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("bad assignment: app directory {0} does not exist or is not a directory")]
    NotADirectory(PathBuf),
    #[error("already assigned to {0}")]
    AlreadyAssigned(PathBuf),
    #[error("the assigned app cannot be served: {0}")]
    HostJson(#[source] ConfigError),
    #[error("the assigned app cannot be served: {0}")]
    Packages(#[source] PythonError),
    #[error("the assigned app cannot be served: {0}")]
    AppFailed(#[source] StartError),
    #[error("the assigned app cannot be served: no function was indexed")]
    NoFunctions,
    #[error("no placeholder worker could start: {0}")]
    NoWorker(#[source] StartError),
    #[error(
        "no placeholder worker could start: every placeholder worker failed to start; see the log"
    )]
    NoPlaceholder,
}

impl AssignError {
    pub fn status(&self) -> StatusCode {
        match self {
            AssignError::InvalidJson(_) | AssignError::NotADirectory(_) => StatusCode::BAD_REQUEST,
            AssignError::AlreadyAssigned(_) => StatusCode::CONFLICT,
            AssignError::HostJson(_)
            | AssignError::Packages(_)
            | AssignError::AppFailed(_)
            | AssignError::NoFunctions => StatusCode::UNPROCESSABLE_ENTITY,
            AssignError::NoWorker(_) | AssignError::NoPlaceholder => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

type Idle = Vec<(WorkerProcess, Initialised)>;

/// Where the placeholder is. Held locked while placeholder workers start and while an
/// assignment runs, so an assignment waits for starting workers instead of finding none,
/// and a second one waits for the first and is then refused.
enum State {
    /// No app yet: the initialised placeholder workers.
    Waiting(Idle),
    /// One app per process: assigned for good, its slots supervised.
    Assigned {
        app_dir: PathBuf,
        _slots: JoinSet<()>,
    },
}

/// The log line for a request before assignment.
const NOT_ASSIGNED: &str = "503: no app assigned yet";

/// The placeholder workers and, once assigned, the dispatcher of the assigned app.
pub struct Placeholder {
    config: ServeConfig,
    python: PythonInfo,
    /// Launches workers against the placeholder directory.
    base: Arc<Workers>,
    keys: KeyStore,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    state: Arc<tokio::sync::Mutex<State>>,
    /// The assigned app's dispatcher, set once the assignment succeeded: read by every
    /// request without a lock.
    dispatcher: OnceLock<Dispatcher>,
    /// The unassigned 503s, one line and then a count per interval.
    repeats: Arc<Repeats>,
}

impl Placeholder {
    /// The placeholder, its workers starting (all at once) in the background. Its state
    /// is locked until they are up, so an assignment that comes in meanwhile, even before
    /// this returns to the caller, waits for them.
    pub fn start(
        config: ServeConfig,
        python: PythonInfo,
        base: Arc<Workers>,
        keys: KeyStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Placeholder> {
        let state = Arc::new(tokio::sync::Mutex::new(State::Waiting(Vec::new())));
        let starting = state
            .clone()
            .try_lock_owned()
            .expect("a new mutex is unlocked");
        let placeholder = Arc::new(Placeholder {
            pool: base.pool.clone(),
            config,
            python,
            base,
            keys,
            metrics,
            state,
            dispatcher: OnceLock::new(),
            repeats: Repeats::start(),
        });
        placeholder.start_workers(starting);
        placeholder
    }

    /// Starts placeholder workers with the state held: fresh placeholders replace
    /// whatever idle workers there were, and the lock is released once they are up.
    fn start_workers(&self, mut state: tokio::sync::OwnedMutexGuard<State>) {
        let base = self.base.clone();
        let count = self.config.workers.get();
        tokio::spawn(async move {
            let mut idle = Vec::new();
            let mut starts = JoinSet::new();
            for _ in 0..count {
                let base = base.clone();
                starts.spawn(async move { base.launch_initialised().await });
            }
            while let Some(joined) = starts.join_next().await {
                match joined {
                    Ok(Ok((process, initialised))) => {
                        base.ready_file.placeholder_ready();
                        info!(worker = %process.id, "placeholder worker ready");
                        idle.push((process, initialised));
                    }
                    Ok(Err(e)) => error!(error = %e, "placeholder worker failed to start"),
                    Err(e) => error!(error = %e, "placeholder worker start panicked"),
                }
            }
            *state = State::Waiting(idle);
        });
    }

    /// The request handler for the public listener: the assigned app, or 503.
    pub async fn handle(&self, request: http::Request<hyper::body::Incoming>) -> Response<Body> {
        match self.dispatcher.get() {
            Some(dispatcher) => dispatcher.handle(request).await,
            None => {
                let key = repeats::Key {
                    kind: "no_app_assigned",
                    function: FunctionName::default(),
                };
                if self.repeats.first(key, NOT_ASSIGNED, tracing::Level::INFO) {
                    info!(method = %request.method(), path = %request.uri().path(), "{NOT_ASSIGNED}");
                }
                let mut response =
                    Response::new(body::full(Bytes::from_static(b"no app assigned yet\n")));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
        }
    }

    /// The admin listener's handler for `POST /admin/assign`. Each assignment runs in its
    /// own task: a client that hangs up (hyper then drops the handler's future) must not
    /// stop it halfway through.
    pub fn assign_fn(self: &Arc<Self>) -> AssignFn {
        let placeholder = self.clone();
        Box::new(move |body| {
            let placeholder = placeholder.clone();
            let assignment = tokio::spawn(async move { placeholder.assign_request(body).await });
            Box::pin(async move {
                assignment.await.unwrap_or_else(|e| {
                    error!(error = %e, "assignment task failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "assignment failed; see the log\n".to_owned(),
                    )
                })
            })
        })
    }

    /// `POST /admin/assign`: parses the body and specialises the placeholder workers.
    /// Answers with the status and a short text, and logs the outcome.
    async fn assign_request(self: &Arc<Self>, body: Bytes) -> (StatusCode, String) {
        let received = Instant::now();
        let outcome = match serde_json::from_slice::<Assignment>(&body) {
            Ok(assignment) => {
                info!(app = %assignment.app_dir.display(), variables = assignment.environment.len(), "assignment received");
                self.assign(assignment).await
            }
            Err(e) => Err(AssignError::InvalidJson(e)),
        };
        match outcome {
            Ok(functions) => {
                info!(elapsed = ?received.elapsed(), functions = functions.len(), "app assigned");
                (
                    StatusCode::OK,
                    serde_json::json!({ "functions": functions }).to_string() + "\n",
                )
            }
            Err(e) => {
                error!(error = %e, "assignment failed");
                (e.status(), format!("{e}\n"))
            }
        }
    }

    async fn assign(self: &Arc<Self>, assignment: Assignment) -> Result<Vec<String>, AssignError> {
        let mut state = self.state.clone().lock_owned().await;
        if let State::Assigned { app_dir, .. } = &*state {
            return Err(AssignError::AlreadyAssigned(app_dir.clone()));
        }
        let app_dir = std::fs::canonicalize(&assignment.app_dir)
            .ok()
            .filter(|d| d.is_dir())
            .ok_or_else(|| AssignError::NotADirectory(assignment.app_dir.clone()))?;
        let host = HostJson::load(&app_dir).map_err(AssignError::HostJson)?;
        let app_site = python::ensure_app_packages(&self.python, &app_dir, self.config.install)
            .await
            .map_err(AssignError::Packages)?;

        let mut launch = self.base.launch.clone();
        launch.app_dir = app_dir.clone();
        launch.app_site = app_site;
        launch.mode = LaunchMode::Assigned {
            environment: assignment.environment.into_iter().collect(),
        };
        let environment = launch.reload_environment();
        let workers = Arc::new(Workers::new(
            self.config.slot_settings(&host),
            launch,
            self.base.rpc.clone(),
            self.pool.clone(),
            self.metrics.clone(),
            self.base.ready_file.clone(),
        ));

        let mut idle = match std::mem::replace(&mut *state, State::Waiting(Vec::new())) {
            State::Waiting(idle) => idle,
            State::Assigned { .. } => unreachable!("checked above, under the same lock"),
        };
        // The first worker alone (see `StartOrder`). A broken app fails here, and the
        // others are not tried; a placeholder that died meanwhile is skipped.
        let mut failure = None;
        let mut first = None;
        while let Some((process, initialised)) = idle.pop() {
            match specialise(&workers, process, initialised, &environment).await {
                Ok(running) if workers.catalog.get().is_some() => {
                    first = Some(running);
                    break;
                }
                Ok(running) => {
                    workers.leave_pool(&running.process.id);
                    failure = Some(AssignError::NoFunctions);
                    break;
                }
                Err(e) if e.is_app_failure() || matches!(e, StartError::Catalog(_)) => {
                    failure = Some(AssignError::AppFailed(e));
                    break;
                }
                Err(e) => {
                    error!(error = %e, "placeholder worker lost; trying the next");
                    failure = Some(AssignError::NoWorker(e));
                }
            }
        }
        let Some(first) = first else {
            // Their modules and environment are the placeholder's or the broken app's:
            // replace every worker with a clean placeholder.
            drop(idle);
            self.start_workers(state);
            return Err(failure.unwrap_or(AssignError::NoPlaceholder));
        };
        let functions = workers
            .catalog
            .get()
            .map(|c| c.functions.iter().map(|f| f.name.to_string()).collect())
            .unwrap_or_default();
        // One app per process: this generation is never replaced.
        let (generation, _released) = Generation::new(
            &host,
            self.config.cors.clone(),
            self.pool.clone(),
            workers.catalog.clone(),
        );
        let dispatcher = Dispatcher::new(
            self.config.dispatch_settings(),
            Current::fixed(generation),
            self.keys.clone(),
            self.metrics.clone(),
        );
        if self.dispatcher.set(dispatcher).is_err() {
            unreachable!("set once, under the state lock, by the only successful assignment");
        }
        // Every slot is supervised below, whatever its placeholder's fate.
        self.pool.expect_slots(self.config.workers.get());
        let mut slots = JoinSet::new();
        slots.spawn(workers.clone().supervise(0, Some(first)));

        // The others next, in the start order; the answer waits for them so it can say
        // how many run.
        let order = StartOrder::after_first();
        let mut specialising = JoinSet::new();
        for (slot, (process, initialised)) in (1..).zip(idle) {
            let workers = workers.clone();
            let environment = environment.clone();
            let order = order.clone();
            specialising.spawn(async move {
                let specialised = order
                    .in_turn(specialise(&workers, process, initialised, &environment))
                    .await;
                (slot, specialised)
            });
        }
        let mut unstarted: Vec<usize> = (1..self.config.workers.get()).collect();
        while let Some(joined) = specialising.join_next().await {
            let Ok((slot, result)) = joined else { continue };
            unstarted.retain(|s| *s != slot);
            let running = result
                .inspect_err(|e| error!(slot, error = %e, "worker failed to specialise; starting it on the app"))
                .ok();
            slots.spawn(workers.clone().supervise(slot, running));
        }
        // Slots whose placeholder never started start now, against the assigned app.
        for slot in unstarted {
            slots.spawn(workers.clone().supervise(slot, None));
        }
        *state = State::Assigned {
            app_dir,
            _slots: slots,
        };
        Ok(functions)
    }
}

/// One placeholder worker: environment reload, then metadata → load → in the pool.
async fn specialise(
    workers: &Workers,
    mut process: WorkerProcess,
    mut initialised: Initialised,
    environment: &HashMap<String, String>,
) -> Result<Running, StartError> {
    let app_dir = workers.launch.app_dir.clone();
    let reloaded = crate::lifecycle::until_exit(
        &mut process,
        initialised.reload_environment(environment, &app_dir),
    )
    .await;
    if let Err(e) = reloaded {
        warn!(worker = %process.id, "stopping the worker that failed to specialise");
        let _ = process.child.start_kill();
        return Err(e);
    }
    workers.finish(process, initialised).await
}
