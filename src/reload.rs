//! `serve --watch`: turns batches of file changes into app generations. For each batch
//! it reads the app again the way a start does (`ServeConfig::reread_app_files`: host.json;
//! `launch::prepare`: the app's requirements and the worker launch), starts the new generation's first worker alone,
//! and once it is ready (functions loaded and routed) makes that generation current and
//! retires the previous one in the background; the new generation's other slots start
//! meanwhile. A change that breaks the app is logged once and the previous generation
//! keeps serving. One reload at a time: changes that arrive during one are coalesced
//! into the next, and a new generation that is already outdated when ready is dropped
//! for a fresh one. Wiring-level, like `serve`.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tracing::{error, info};

use crate::config::{ConfigError, ServeConfig};
use crate::generation::{Generation, Slots, Swap, all_done};
use crate::launch::{PrepareError, Prepared, prepare};
use crate::lifecycle::{Running, StartError, Workers};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::ready_file::ReadyFile;
use crate::rpc::RpcServer;
use crate::watch::Watcher;

/// Why a reload did not produce a new generation (the previous one keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    AppFiles(#[from] ConfigError),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What a reload needs besides the files.
pub(crate) struct Reloader {
    /// The configuration Sluice started with; a reload reads the app's parts again.
    pub config: ServeConfig,
    pub swap: Swap,
    pub rpc: RpcServer,
    pub metrics: Arc<Metrics>,
    pub ready_file: Arc<ReadyFile>,
    pub watcher: Watcher,
}

/// A new generation whose first worker is ready, not yet serving.
struct Candidate {
    config: ServeConfig,
    workers: Arc<Workers>,
    first: Running,
}

impl Candidate {
    /// Stops the candidate's worker (it never served).
    async fn discard(self) {
        let Candidate {
            workers, mut first, ..
        } = self;
        workers.leave_pool(&first.process.id);
        let _ = first.process.child.start_kill();
        let _ = first.process.exited().await;
    }
}

impl Reloader {
    /// Keeps `serving` (the current generation's slots) running and replaces it on every
    /// change. Runs until dropped; dropping it stops every worker it owns.
    pub(crate) async fn run(mut self, mut serving: Slots) {
        let mut retiring = JoinSet::new();
        let mut given_up = false;
        loop {
            let batch = tokio::select! {
                batch = self.watcher.next() => batch,
                _ = all_done(&mut serving.tasks), if !given_up => {
                    // Without --watch Sluice would exit here; a change may fix the app.
                    given_up = true;
                    error!("every worker slot failed; the next change to the app reloads it");
                    continue;
                }
                Some(_) = retiring.join_next(), if !retiring.is_empty() => continue,
            };
            info!(changed = %batch, "reloading");
            let started = Instant::now();
            let candidate = match self.start_candidate().await {
                Ok(candidate) => candidate,
                Err(e) => {
                    error!(error = %e, "reload failed; still serving the previous code");
                    continue;
                }
            };
            if self.watcher.pending() {
                info!("files changed again during the reload; reloading with the newest");
                candidate.discard().await;
                continue;
            }
            let Candidate {
                config,
                workers,
                first,
            } = candidate;
            let functions = workers.catalog.get().map_or(0, |c| c.functions.len());
            let (generation, released) = Generation::new(
                &config.host,
                config.cors.clone(),
                workers.pool.clone(),
                workers.catalog.clone(),
            );
            // From here on new requests go to the new workers; those that loaded the
            // previous generation finish on its workers.
            drop(self.swap.replace(generation));
            let fresh = Slots::spawn(workers, first, config.workers.get(), released);
            let previous = std::mem::replace(&mut serving, fresh);
            given_up = false;
            let wait = previous.workers.drain_cap();
            retiring.spawn(previous.retire(wait));
            info!(
                functions,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "reloaded"
            );
        }
    }

    /// Reads the app again as a start does and starts one worker on it.
    async fn start_candidate(&self) -> Result<Candidate, ReloadError> {
        let mut config = self.config.clone();
        config.reread_app_files()?;
        let Prepared { launch, .. } = prepare(&config).await?;
        let workers = Arc::new(Workers::new(
            config.slot_settings(&config.host),
            launch,
            self.rpc.clone(),
            Arc::new(Pool::default()),
            self.metrics.clone(),
            self.ready_file.clone(),
        ));
        let first = workers.start().await?;
        Ok(Candidate {
            config,
            workers,
            first,
        })
    }
}
