//! Which workers are ready and how many invocations each holds; picks the ready worker
//! with the fewest in flight. Does not spawn or restart processes (the worker slots in
//! `lifecycle` do, and tell the pool through [`Pool::add`] / [`Pool::remove`]).
//!
//! It also counts the slots that can still bring a worker ([`Pool::expect_slots`],
//! [`Pool::slot_gone`]): while one is starting or restarting, a request that finds no
//! ready worker waits for it ([`Pool::lease`]) instead of failing — a crashed or recycled
//! worker costs its own in-flight requests, not a burst of 503s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

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
    #[error("no worker is available: every worker slot has stopped (see the log)")]
    NoWorker,
    #[error("no worker became available within {0:?}")]
    NoWorkerWithin(Duration),
}

struct Slot {
    session: Arc<Session>,
    in_flight: AtomicUsize,
}

/// The ready workers.
pub struct Pool {
    workers: RwLock<Vec<Arc<Slot>>>,
    state: watch::Sender<PoolState>,
    /// Worker slots not given up or stopped: each has a worker or is bringing one.
    live_slots: AtomicUsize,
    /// Wakes requests waiting for a worker: one was added, or a slot went away.
    changed: Notify,
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
            live_slots: AtomicUsize::new(0),
            changed: Notify::new(),
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
        self.changed.notify_waiters();
    }

    /// `n` more worker slots will bring workers into this pool.
    pub fn expect_slots(&self, n: usize) {
        self.live_slots.fetch_add(n, Ordering::AcqRel);
    }

    /// A slot stopped for good (given up after a crash loop, or retired): it brings no
    /// more workers. Waiting requests re-check whether any slot still can.
    pub fn slot_gone(&self) {
        let _ = self
            .live_slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.changed.notify_waiters();
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

    /// A ready worker, waiting up to `wait` (in arrival order) while none is ready but a
    /// slot is starting or restarting one. Fails at once when no slot can bring one.
    pub async fn lease(&self, wait: Duration) -> Result<Lease, PoolError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an `add` between the look and the wait wakes it.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.pick() {
                Ok(lease) => return Ok(lease),
                Err(e) if self.live_slots.load(Ordering::Acquire) == 0 => return Err(e),
                Err(_) => {}
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return Err(PoolError::NoWorkerWithin(wait));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_slot_left_fails_at_once() {
        let pool = Pool::default();
        assert!(matches!(
            pool.lease(Duration::from_secs(60)).await,
            Err(PoolError::NoWorker)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_lease_times_out_while_a_slot_is_still_coming() {
        let pool = Pool::default();
        pool.expect_slots(1);
        assert!(matches!(
            pool.lease(Duration::from_secs(5)).await,
            Err(PoolError::NoWorkerWithin(_))
        ));
    }

    #[tokio::test]
    async fn a_waiting_lease_fails_as_soon_as_the_last_slot_goes() {
        let pool = Arc::new(Pool::default());
        pool.expect_slots(2);
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { pool.lease(Duration::from_secs(60)).await.map(|_| ()) }
        });
        pool.slot_gone();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one slot can still bring a worker");
        pool.slot_gone();
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken at once")
            .expect("joined");
        assert!(matches!(result, Err(PoolError::NoWorker)));
    }
}
