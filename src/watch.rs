//! `serve --watch`: watches APP_DIR for changes to the files an app is built from and
//! hands them on as debounced batches. Which paths count is a pure function
//! ([`triggers_reload`]); a burst of changes becomes one batch once the tree has been
//! quiet for [`DEBOUNCE`] ([`Changes`], bounded: it keeps a few paths and a count).
//! Knows nothing about workers: the reloader decides what a batch means.
//!
//! Directories the filter ignores at the top of APP_DIR (`.python_packages`, `.venv`, …)
//! are not watched at all, so a large installed environment costs no inotify watches and
//! a pip install into it no events.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

/// A batch is handed on once no change arrived for this long.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(300);
/// …or this long after its first change, if changes never stop (a tool rewriting files).
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3);
/// Paths a batch lists (for the log); further ones are only counted.
const LISTED: usize = 8;

/// Files whose change reloads the app, wherever they are (outside ignored directories).
const ANYWHERE: &[&str] = &["py"];
/// Files at the top of APP_DIR whose change reloads the app.
const TOP_LEVEL: &[&str] = &["host.json", "requirements.txt", "local.settings.json"];

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// Whether a change to `relative` (a path inside APP_DIR, relative to it) should reload
/// the app: Python files anywhere, `function.json` in a function folder, and `host.json`,
/// `requirements.txt`, `local.settings.json` at the top — never inside an ignored
/// directory, never an editor's temporary or backup file.
pub(crate) fn triggers_reload(relative: &Path) -> bool {
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            // Outside APP_DIR, or not relative at all.
            _ => return false,
        }
    }
    let Some((file, dirs)) = parts.split_last() else {
        return false;
    };
    if dirs.iter().any(|dir| is_ignored_dir(dir)) {
        return false;
    }
    let Some(name) = file.to_str() else {
        return false;
    };
    // Hidden files include editor swap and lock files (`.x.py.swp`, emacs's `.#x.py`).
    if name.starts_with('.') {
        return false;
    }
    match dirs.len() {
        0 if TOP_LEVEL.contains(&name) => true,
        1 if name == "function.json" => true,
        _ => Path::new(name)
            .extension()
            .and_then(OsStr::to_str)
            .is_some_and(|ext| ANYWHERE.contains(&ext)),
    }
}

/// Directories whose contents never reload the app: installed packages, virtual
/// environments, bytecode caches, and every dot-directory (`.git`, `.vscode`, …).
pub(crate) fn is_ignored_dir(name: &OsStr) -> bool {
    match name.to_str() {
        Some(name) => {
            name.starts_with('.') || matches!(name, "__pycache__" | "venv" | "node_modules")
        }
        None => true,
    }
}

/// Changed paths handed on together.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The first few changed paths, relative to APP_DIR.
    pub listed: BTreeSet<PathBuf>,
    /// Changes beyond those listed.
    pub more: usize,
}

impl Batch {
    fn add(&mut self, path: PathBuf) {
        if self.listed.len() < LISTED || self.listed.contains(&path) {
            self.listed.insert(path);
        } else {
            self.more += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.more == 0
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for path in &self.listed {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}", path.display())?;
        }
        if self.more > 0 {
            write!(f, " and {} more", self.more)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Pending {
    batch: Batch,
    /// When the batch's first and latest changes arrived.
    first: Option<Instant>,
    last: Option<Instant>,
    /// New top-level directories, to watch too.
    new_dirs: Vec<PathBuf>,
}

/// Changes not yet handed on: written by the watcher's thread, taken by the reloader.
/// Bounded (a batch keeps [`LISTED`] paths), and coalescing: changes that arrive while
/// the reloader is busy join the next batch.
#[derive(Default)]
pub(crate) struct Changes {
    pending: Mutex<Pending>,
    arrived: Notify,
}

impl Changes {
    /// Records one changed path (relative to APP_DIR).
    pub(crate) fn record(&self, path: PathBuf) {
        let now = Instant::now();
        let mut pending = self.lock();
        pending.batch.add(path);
        pending.first.get_or_insert(now);
        pending.last = Some(now);
        drop(pending);
        self.arrived.notify_one();
    }

    /// Whether changes are waiting (the reloader checks before making a reload current).
    pub(crate) fn pending(&self) -> bool {
        !self.lock().batch.is_empty()
    }

    /// Waits for a change, then until none arrived for [`DEBOUNCE`] (at most [`MAX_DELAY`]
    /// after the first), and takes every change recorded so far.
    pub(crate) async fn next(&self) -> Batch {
        loop {
            // Registered before the check, so a change recorded in between is not missed.
            let arrived = self.arrived.notified();
            let due = {
                let pending = self.lock();
                match (pending.first, pending.last) {
                    (Some(first), Some(last)) => Some((last + DEBOUNCE).min(first + MAX_DELAY)),
                    _ => None,
                }
            };
            match due {
                Some(due) if due <= Instant::now() => {
                    let mut pending = self.lock();
                    pending.first = None;
                    pending.last = None;
                    return std::mem::take(&mut pending.batch);
                }
                Some(due) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = arrived => {}
                    }
                }
                None => arrived.await,
            }
        }
    }

    fn new_dir(&self, dir: PathBuf) {
        self.lock().new_dirs.push(dir);
    }

    fn take_new_dirs(&self) -> Vec<PathBuf> {
        std::mem::take(&mut self.lock().new_dirs)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Poisoning only means a panic elsewhere; the batch itself is always consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running watcher over one app directory; stops when dropped.
pub(crate) struct Watcher {
    app_dir: PathBuf,
    watcher: RecommendedWatcher,
    changes: Arc<Changes>,
}

impl Watcher {
    /// Watches `app_dir` (its top level, and every directory under it that is not ignored).
    pub(crate) fn start(app_dir: &Path) -> Result<Watcher, WatchError> {
        let changes = Arc::new(Changes::default());
        let root = app_dir.to_path_buf();
        let sink = changes.clone();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => on_event(&root, &sink, event),
            Err(error) => warn!(%error, "file watcher error"),
        };
        let failed = |source| WatchError::Watch {
            path: app_dir.to_path_buf(),
            source,
        };
        let watcher = notify::recommended_watcher(handler).map_err(failed)?;
        let mut watching = Watcher {
            app_dir: app_dir.to_path_buf(),
            watcher,
            changes,
        };
        watching
            .watcher
            .watch(app_dir, RecursiveMode::NonRecursive)
            .map_err(failed)?;
        let entries = std::fs::read_dir(app_dir).map_err(|e| failed(e.into()))?;
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !is_ignored_dir(&entry.file_name()) {
                watching.watch_dir(&entry.path());
            }
        }
        Ok(watching)
    }

    /// The next debounced batch of changes.
    pub(crate) async fn next(&mut self) -> Batch {
        let batch = self.changes.next().await;
        for dir in self.changes.take_new_dirs() {
            self.watch_dir(&dir);
        }
        batch
    }

    /// Whether changes arrived that no batch has handed on yet.
    pub(crate) fn pending(&self) -> bool {
        self.changes.pending()
    }

    fn watch_dir(&mut self, dir: &Path) {
        match self.watcher.watch(dir, RecursiveMode::Recursive) {
            Ok(()) => debug!(dir = %dir.display(), app = %self.app_dir.display(), "watching"),
            // Gone again already, or out of inotify watches: changes there go unseen.
            Err(error) => warn!(dir = %dir.display(), %error, "cannot watch directory"),
        }
    }
}

/// One raw event from the watcher's thread: relevant paths become changes; a new
/// top-level directory is a change too, and gets watched.
fn on_event(root: &Path, changes: &Changes, event: notify::Event) {
    // Reads (a worker importing the app opens its files) change nothing.
    if matches!(event.kind, EventKind::Access(_)) {
        return;
    }
    for path in event.paths {
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let top_level_dir = relative.components().count() == 1
            && !is_ignored_dir(relative.as_os_str())
            && path.is_dir();
        if top_level_dir {
            changes.new_dir(path.clone());
            changes.record(relative.to_path_buf());
        } else if triggers_reload(relative) {
            changes.record(relative.to_path_buf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers(path: &str) -> bool {
        triggers_reload(Path::new(path))
    }

    #[test]
    fn app_files_trigger_a_reload() {
        for path in [
            "function_app.py",
            "blueprints/orders.py",
            "shared/deep/util.py",
            "HttpTrigger/__init__.py",
            "HttpTrigger/function.json",
            "host.json",
            "requirements.txt",
            "local.settings.json",
        ] {
            assert!(triggers(path), "{path} should trigger a reload");
        }
    }

    #[test]
    fn environments_caches_dot_directories_and_editor_files_do_not() {
        for path in [
            ".python_packages/lib/site-packages/azure/functions/__init__.py",
            ".venv/lib/python3.13/site-packages/x.py",
            "venv/lib/x.py",
            "__pycache__/function_app.cpython-313.pyc",
            "shared/__pycache__/util.cpython-313.py",
            ".git/hooks/pre-commit.py",
            ".vscode/settings.json",
            "function_app.pyc",
            "function_app.py~",
            ".function_app.py.swp",
            ".#function_app.py",
            "#function_app.py#",
            "4913",
            "function_app.py.tmp",
            "notes.txt",
            "README.md",
            // Only at the top of the app (a nested one is nobody's).
            "docs/host.json",
            "vendor/requirements.txt",
            // function.json only in a function folder.
            "function.json",
            "a/b/function.json",
            // Not inside APP_DIR.
            "../other/function_app.py",
            "/etc/host.json",
            "",
        ] {
            assert!(!triggers(path), "{path} should not trigger a reload");
        }
    }

    #[test]
    fn a_batch_lists_a_few_paths_and_counts_the_rest() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        for i in 0..LISTED + 3 {
            batch.add(PathBuf::from(format!("m{i}.py")));
        }
        batch.add(PathBuf::from("m0.py"));
        assert_eq!(batch.listed.len(), LISTED);
        assert_eq!(batch.more, 3);
        assert!(batch.to_string().ends_with(" and 3 more"), "{batch}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_becomes_one_batch_once_quiet() {
        let changes = Arc::new(Changes::default());
        let started = Instant::now();
        let taker = tokio::spawn({
            let changes = changes.clone();
            async move { (changes.next().await, Instant::now()) }
        });
        // Five changes 200 ms apart: each within the debounce of the one before.
        for i in 0..5 {
            changes.record(PathBuf::from(format!("f{i}.py")));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (batch, at) = taker.await.expect("taker");
        assert_eq!(batch.listed.len(), 5);
        // The last change came at 800 ms; the batch 300 ms later, not before.
        assert_eq!(at - started, Duration::from_millis(800) + DEBOUNCE);
        assert!(!changes.pending());
    }

    #[tokio::test(start_paused = true)]
    async fn endless_changes_are_handed_on_after_the_max_delay() {
        let changes = Arc::new(Changes::default());
        let started = Instant::now();
        let writer = tokio::spawn({
            let changes = changes.clone();
            async move {
                for _ in 0..100 {
                    changes.record(PathBuf::from("busy.py"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        changes.next().await;
        assert_eq!(started.elapsed(), MAX_DELAY);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn changes_while_busy_join_the_next_batch() {
        let changes = Changes::default();
        changes.record(PathBuf::from("a.py"));
        assert_eq!(changes.next().await.listed.len(), 1);
        // The reloader is busy meanwhile: two changes, one batch afterwards.
        changes.record(PathBuf::from("b.py"));
        changes.record(PathBuf::from("host.json"));
        assert!(changes.pending());
        tokio::time::sleep(Duration::from_secs(10)).await;
        let next = changes.next().await;
        assert_eq!(
            next.listed.into_iter().collect::<Vec<_>>(),
            [PathBuf::from("b.py"), PathBuf::from("host.json")]
        );
    }
}
