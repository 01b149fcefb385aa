//! App generations: one set of worker slots on one version of the app's files, and
//! what requests read from it — its pool, its functions, its host.json behaviour. The
//! dispatcher reads the current generation once per request through [`Current`]; a
//! `--watch` reload builds a new generation and swaps it in whole ([`Swap`]), so a
//! request sees one version from routing to response. A replaced generation is retired only once the
//! requests that picked it have finished ([`Slots::retire`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::error;

use crate::admission::Admission;
use crate::config::HostJson;
use crate::cors::CorsPolicy;
use crate::functions::Catalog;
use crate::lifecycle::{Running, StartOrder, Workers};
use crate::pool::Pool;

/// What a request reads from the generation serving it.
pub struct Generation {
    pub pool: Arc<Pool>,
    /// Set once, from the first ready worker's index.
    pub catalog: Arc<OnceLock<Catalog>>,
    /// host.json's throttles.
    pub admission: Admission,
    /// host.json's functionTimeout; `None` = unbounded.
    pub function_timeout: Option<Duration>,
    /// CORS answered before routing; `None` leaves responses as the function made them.
    pub cors: Option<CorsPolicy>,
    /// Fires when the last holder lets go (see [`Released`]).
    released: Option<oneshot::Sender<()>>,
}

impl Generation {
    /// A generation serving from `pool` and `catalog` with `host`'s settings, and the
    /// signal that tells when no request holds it any more.
    pub fn new(
        host: &HostJson,
        cors: Option<CorsPolicy>,
        pool: Arc<Pool>,
        catalog: Arc<OnceLock<Catalog>>,
    ) -> (Generation, Released) {
        let (tx, rx) = oneshot::channel();
        let generation = Generation {
            pool,
            catalog,
            admission: Admission::new(host.max_concurrent_requests, host.outstanding_cap()),
            function_timeout: host.function_timeout,
            cors,
            released: Some(tx),
        };
        (generation, Released(rx))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some(released) = self.released.take() {
            let _ = released.send(());
        }
    }
}

/// Resolves once a generation is gone: replaced, and every request that held it done.
pub struct Released(oneshot::Receiver<()>);

impl Released {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// The generation new requests go to; cloned handles share it. Without `--watch` it is
/// fixed and reading it costs nothing; with `--watch` it can be replaced through a
/// [`Swap`], and each request holds the generation it loaded.
#[derive(Clone)]
pub struct Current(Source);

#[derive(Clone)]
enum Source {
    Fixed(Arc<Generation>),
    Swappable(Arc<ArcSwap<Generation>>),
}

/// Replaces the current generation (`--watch` reloads only).
pub struct Swap(Arc<ArcSwap<Generation>>);

/// One request's generation: borrowed when it can never be replaced, else held.
pub enum Held<'a> {
    Fixed(&'a Generation),
    Loaded(Arc<Generation>),
}

impl Current {
    /// A generation that is never replaced.
    pub fn fixed(generation: Generation) -> Current {
        Current(Source::Fixed(Arc::new(generation)))
    }

    /// A generation that `Swap::replace` can replace.
    pub fn swappable(generation: Generation) -> (Current, Swap) {
        let shared = Arc::new(ArcSwap::from_pointee(generation));
        (Current(Source::Swappable(shared.clone())), Swap(shared))
    }

    /// The generation for one request. Holding it keeps a replaced generation's
    /// workers serving: they are retired only once every holder has let go.
    pub fn load(&self) -> Held<'_> {
        match &self.0 {
            Source::Fixed(generation) => Held::Fixed(generation),
            Source::Swappable(shared) => Held::Loaded(shared.load_full()),
        }
    }

    /// Ready workers in the current generation (for `/readyz`).
    pub fn ready_count(&self) -> usize {
        self.load().pool.ready_count()
    }
}

impl Swap {
    /// Makes `next` current; returns the generation it replaced.
    pub fn replace(&self, next: Generation) -> Arc<Generation> {
        self.0.swap(Arc::new(next))
    }
}

impl Held<'_> {
    /// A hold on the generation for a response body that outlives the request's handler
    /// (`None` when the generation is fixed: nothing to hold).
    pub fn keep(&self) -> Option<Arc<Generation>> {
        match self {
            Held::Fixed(_) => None,
            Held::Loaded(generation) => Some(generation.clone()),
        }
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Generation;

    fn deref(&self) -> &Generation {
        match self {
            Held::Fixed(generation) => generation,
            Held::Loaded(generation) => generation,
        }
    }
}

/// A generation's worker slots, owned by the wiring: its workers, one supervision task
/// per slot, and the signal that its [`Generation`] is gone.
pub struct Slots {
    pub workers: Arc<Workers>,
    pub tasks: JoinSet<()>,
    pub released: Released,
}

impl Slots {
    /// Supervises `first` (already ready) in slot 0 and starts slots 1..`count` in the
    /// start order.
    pub fn spawn(workers: Arc<Workers>, first: Running, count: usize, released: Released) -> Slots {
        let mut tasks = JoinSet::new();
        workers.pool.expect_slots(count);
        tasks.spawn(workers.clone().supervise(0, Some(first)));
        let order = StartOrder::after_first();
        for slot in 1..count {
            let workers = workers.clone();
            let order = order.clone();
            tasks.spawn(async move {
                let running = match order.in_turn(workers.start()).await {
                    Ok(running) => Some(running),
                    Err(e) => {
                        error!(slot, error = %e, "worker failed to start");
                        None
                    }
                };
                workers.supervise(slot, running).await;
            });
        }
        Slots {
            workers,
            tasks,
            released,
        }
    }

    /// Retires a generation that is no longer current: waits (at most `wait`) until no
    /// request holds it, then stops its slots — each worker leaves its pool, finishes
    /// what it still runs (bounded) and exits; none restarts. Returns once they have.
    pub async fn retire(mut self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.released.wait()).await;
        self.workers.stop();
        all_done(&mut self.tasks).await;
    }
}

/// Resolves once every task in the set has finished.
pub async fn all_done(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation() -> (Generation, Released) {
        Generation::new(
            &HostJson::default(),
            None,
            Arc::new(Pool::default()),
            Arc::new(OnceLock::new()),
        )
    }

    #[test]
    fn a_replaced_generation_is_released_once_its_last_request_lets_go() {
        let (first, mut released) = generation();
        let (current, swap) = Current::swappable(first);
        let request = current.load();
        let streaming = request.keep().expect("a replaceable generation is held");
        let (second, _) = generation();
        drop(swap.replace(second));
        assert!(released.0.try_recv().is_err(), "requests still hold it");
        drop(request);
        assert!(
            released.0.try_recv().is_err(),
            "a response body still holds it"
        );
        drop(streaming);
        assert!(released.0.try_recv().is_ok());
    }

    #[test]
    fn a_fixed_generation_is_borrowed_not_held() {
        let (only, _released) = generation();
        let current = Current::fixed(only);
        assert!(matches!(current.load(), Held::Fixed(_)));
        assert!(current.load().keep().is_none());
        assert_eq!(current.ready_count(), 0);
    }
}
