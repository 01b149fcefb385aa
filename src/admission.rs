//! Admission control with the host's throttle semantics (host.json
//! `extensions.http.maxConcurrentRequests` / `maxOutstandingRequests`): outstanding
//! counts queued + executing function requests; a request that would exceed it is
//! refused at once (429); at most `max_concurrent` execute, the rest wait in FIFO order.
//! Pure bookkeeping: no I/O, no knowledge of HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The gate every function request passes before it is dispatched.
pub struct Admission {
    /// Shared with every [`Ticket`], so a ticket can outlive the call that took it (a
    /// streamed response keeps its request outstanding until its body ends).
    outstanding: Arc<AtomicUsize>,
    max_outstanding: usize,
    /// `None` when concurrency is unbounded.
    concurrency: Option<Arc<Semaphore>>,
}

/// Refused: outstanding requests are at the cap.
#[derive(Debug, thiserror::Error)]
#[error("too many outstanding requests (limit {limit})")]
pub struct Throttled {
    pub limit: usize,
}

/// A request counted as outstanding; dropping it releases its place.
pub struct Ticket {
    outstanding: Arc<AtomicUsize>,
    _running: Option<OwnedSemaphorePermit>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_concurrent: Option<usize>, max_outstanding: usize) -> Admission {
        Admission {
            outstanding: Arc::new(AtomicUsize::new(0)),
            max_outstanding,
            concurrency: max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
        }
    }

    /// Counts the request as outstanding (or refuses it), then waits for an execution
    /// slot when concurrency is bounded. Dropping the future while it waits frees its place.
    pub async fn admit(&self) -> Result<Ticket, Throttled> {
        let previous = self.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut ticket = Ticket {
            outstanding: self.outstanding.clone(),
            _running: None,
        };
        if previous >= self.max_outstanding {
            return Err(Throttled {
                limit: self.max_outstanding,
            });
        }
        if let Some(semaphore) = &self.concurrency {
            // The semaphore is never closed, so acquiring can only succeed.
            ticket._running = semaphore.clone().acquire_owned().await.ok();
        }
        Ok(ticket)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_outstanding_and_releases_on_drop() {
        let admission = Admission::new(None, 2);
        let a = admission.admit().await.expect("first");
        let b = admission.admit().await.expect("second");
        assert!(admission.admit().await.is_err());
        assert_eq!(
            admission.outstanding(),
            2,
            "a refused request leaves no trace"
        );
        drop(a);
        let c = admission.admit().await.expect("room again");
        drop((b, c));
        assert_eq!(admission.outstanding(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_requests_count_as_outstanding_and_run_in_turn() {
        let admission = Arc::new(Admission::new(Some(1), 3));
        let running = admission.admit().await.expect("runs");
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move {
                let _t = admission.admit().await.expect("queued, then runs");
            })
        };
        tokio::task::yield_now().await;
        assert_eq!(admission.outstanding(), 2);
        let mut also_queued = Box::pin(admission.admit());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(10), &mut also_queued)
                .await
                .is_err(),
            "third waits behind the first"
        );
        drop(also_queued);
        assert_eq!(
            admission.outstanding(),
            2,
            "a cancelled waiter frees its place"
        );
        drop(running);
        waiter.await.expect("waiter finished");
        assert_eq!(admission.outstanding(), 0);
    }
}
