//! Repeated request-path warnings, folded: when many requests fail the same way at once
//! (every in-flight request of a crashed worker, every 503 while no worker is ready), the
//! first one is logged in full and the rest are counted; once per interval one line says
//! how many more there were. A failure kind that stays quiet for a whole interval is
//! forgotten, so its next occurrence is logged in full again. The log stays bounded by
//! the number of distinct failures, not the request rate.
//!
//! Knows nothing about HTTP: callers name the failure (a kind and a function).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::metrics::FunctionName;
use std::time::Duration;

use tracing::{Level, info, warn};

/// How often the counts are reported.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// One kind of failure: what went wrong, on which function (`-` before routing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) kind: &'static str,
    pub(crate) function: FunctionName,
}

#[derive(Debug)]
struct Seen {
    /// Occurrences not yet reported (the first one was logged in full).
    repeats: u64,
    /// What the first one's line said, and at which level, for the summary.
    message: &'static str,
    level: Level,
    /// Still in the interval that logged the first one: kept even without repeats.
    fresh: bool,
}

/// The failures seen in the current interval.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Repeats {
    /// A fold whose counts are reported every [`INTERVAL`] by a task on the current
    /// runtime (it ends when the fold is dropped). Outside a runtime nothing reports the
    /// counts; only tests build one there.
    pub(crate) fn start() -> Arc<Repeats> {
        let repeats = Arc::new(Repeats::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(report_every(Arc::downgrade(&repeats), INTERVAL));
        }
        repeats
    }

    /// `true` when this occurrence should be logged in full (the first of its kind in
    /// this interval); otherwise it is counted for the summary. `message` and `level` are
    /// the full line's; the summary says the same at the same level (`warn` or `info`).
    pub(crate) fn first(&self, key: Key, message: &'static str, level: Level) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(&key) {
            Some(entry) => {
                entry.repeats += 1;
                false
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        repeats: 0,
                        message,
                        level,
                        fresh: true,
                    },
                );
                true
            }
        }
    }

    /// Logs one line per failure kind that repeated since the last report, and forgets
    /// kinds that stayed quiet for a whole interval. Returns how many lines it logged.
    pub(crate) fn report(&self, interval: Duration) -> usize {
        let mut lines = 0;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|key, entry| {
            if entry.repeats > 0 {
                macro_rules! summary {
                    ($level:ident) => {
                        $level!(
                            kind = key.kind,
                            function = %key.function,
                            repeated = entry.repeats,
                            interval_secs = interval.as_secs_f64(),
                            "{} (the same again; repeats counted per interval)",
                            entry.message
                        )
                    };
                }
                if entry.level == Level::WARN {
                    summary!(warn);
                } else {
                    summary!(info);
                }
                lines += 1;
                entry.repeats = 0;
                entry.fresh = false;
                true
            } else {
                std::mem::take(&mut entry.fresh)
            }
        });
        lines
    }
}

async fn report_every(repeats: Weak<Repeats>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match repeats.upgrade() {
            Some(repeats) => {
                repeats.report(interval);
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &'static str) -> Key {
        Key {
            kind,
            function: FunctionName::of(&"hello".into()),
        }
    }

    #[test]
    fn the_first_is_logged_the_rest_counted_and_reported_once_per_interval() {
        let repeats = Repeats::default();
        assert!(repeats.first(key("worker_gone"), "request failed", Level::WARN));
        for _ in 0..63 {
            assert!(!repeats.first(key("worker_gone"), "request failed", Level::WARN));
        }
        // Another kind is logged on its own.
        assert!(repeats.first(key("no_worker"), "request failed", Level::WARN));
        assert_eq!(repeats.report(INTERVAL), 1, "one summary for 63 repeats");
        // Still known after its interval: more repeats are counted, not logged in full.
        assert!(!repeats.first(key("worker_gone"), "request failed", Level::WARN));
        assert_eq!(repeats.report(INTERVAL), 1);
        // Quiet for a whole interval: forgotten, so the next one is logged in full.
        assert_eq!(repeats.report(INTERVAL), 0);
        assert_eq!(repeats.report(INTERVAL), 0);
        assert!(repeats.first(key("worker_gone"), "request failed", Level::WARN));
        assert!(repeats.first(key("no_worker"), "request failed", Level::WARN));
    }

    #[tokio::test(start_paused = true)]
    async fn counts_are_reported_by_the_runtime_and_the_task_ends_with_the_fold() {
        let repeats = Repeats::start();
        assert!(repeats.first(key("worker_gone"), "request failed", Level::WARN));
        assert!(!repeats.first(key("worker_gone"), "request failed", Level::WARN));
        tokio::time::sleep(INTERVAL + Duration::from_millis(10)).await;
        // Reported (and reset) by the background task: nothing is left to report.
        assert_eq!(repeats.report(INTERVAL), 0);
        let weak = Arc::downgrade(&repeats);
        drop(repeats);
        tokio::time::sleep(INTERVAL * 2).await;
        assert!(weak.upgrade().is_none());
    }
}
