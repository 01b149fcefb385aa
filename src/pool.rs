//! Which workers are ready and how many invocations each holds; picks the ready worker
//! with the fewest in flight. Does not spawn or restart processes (the supervisor
//! loop in `serve` does, and tells the pool through [`Pool::add`] / [`Pool::remove`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::rpc::Session;

/// Start-up progress as requests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// No worker has been ready yet; requests wait (bounded by the start-up timeout).
    Starting,
    /// At least one worker was ready once.
    Serving,
    /// Start-up failed for good; requests get 503 at once.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no worker became ready within {0:?}")]
    StartupTimeout(Duration),
    #[error("the workers failed to start")]
    StartupFailed,
    #[error("no worker is available")]
    NoWorker,
}

struct Slot {
    session: Arc<Session>,
    in_flight: AtomicUsize,
}

/// The ready workers.
pub struct Pool {
    workers: RwLock<Vec<Arc<Slot>>>,
    state: watch::Sender<PoolState>,
}

/// One invocation's hold on a worker; releases its count when dropped.
pub struct Lease {
    slot: Arc<Slot>,
}

impl Lease {
    pub fn session(&self) -> &Session {
        &self.slot.session
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            workers: RwLock::default(),
            state: watch::Sender::new(PoolState::Starting),
        }
    }
}

impl Pool {
    pub fn add(&self, session: Arc<Session>) {
        self.write().push(Arc::new(Slot {
            session,
            in_flight: AtomicUsize::new(0),
        }));
        self.state.send_replace(PoolState::Serving);
    }

    pub fn remove(&self, worker: &str) {
        self.write().retain(|s| s.session.worker() != worker);
    }

    /// Marks start-up as failed for good, waking every waiting request.
    pub fn fail_startup(&self) {
        self.state.send_if_modified(|s| {
            let changed = *s == PoolState::Starting;
            if changed {
                *s = PoolState::Failed;
            }
            changed
        });
    }

    pub fn ready_count(&self) -> usize {
        self.read()
            .iter()
            .filter(|s| !s.session.is_closed())
            .count()
    }

    /// Waits until start-up is over: Ok once a worker has been ready.
    pub async fn wait_started(&self, timeout: Duration) -> Result<(), PoolError> {
        let mut rx = self.state.subscribe();
        let outcome =
            tokio::time::timeout(timeout, rx.wait_for(|s| *s != PoolState::Starting)).await;
        match outcome {
            Ok(Ok(state)) if *state == PoolState::Serving => Ok(()),
            Ok(_) => Err(PoolError::StartupFailed),
            Err(_) => Err(PoolError::StartupTimeout(timeout)),
        }
    }

    /// The ready worker with the fewest invocations in flight.
    pub fn pick(&self) -> Result<Lease, PoolError> {
        let workers = self.read();
        let slot = workers
            .iter()
            .filter(|s| s.session.is_available())
            .min_by_key(|s| s.in_flight.load(Ordering::Acquire))
            .ok_or(PoolError::NoWorker)?;
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Lease { slot: slot.clone() })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Slot>>> {
        // Poisoning only means a panic elsewhere; the list itself is always consistent.
        self.workers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Slot>>> {
        self.workers.write().unwrap_or_else(|e| e.into_inner())
    }
}
