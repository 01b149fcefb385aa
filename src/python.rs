//! Python discovery and the two environments Sluice prepares on disk before any worker starts.
//!
//! Owns: finding a Python ≥ 3.13 ([`find_python`], `python/discover.rs`); building the worker's
//! private environment, keyed by content under the cache directory ([`ensure_worker_env`]);
//! installing the app's `requirements.txt` into `APP_DIR/.python_packages/lib/site-packages`
//! ([`ensure_app_packages`], `python/app_packages.rs`).
//! Both builds take a file lock, so several Sluice processes can start together safely. Both are
//! built in a temporary directory and moved into place with a rename, so a half-built
//! environment is never used.
//!
//! Must not: start workers or run functions (the supervisor does that), read the process
//! environment for its own decisions (callers pass `env`), or install anything after startup.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::Command;
use tracing::{debug, info};

mod app_packages;
mod discover;
pub use app_packages::{Install, ensure_app_packages};
pub use discover::find_python;
use discover::*;

/// How much of pip's output an install error keeps: the end, where pip puts its reason.
const OUTPUT_TAIL: usize = 4096;
/// Written last into a finished worker environment; its presence is the "ready" signal.
const COMPLETE_MARKER: &str = ".complete";

/// Errors from discovering Python and preparing environments.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(
        "{} needs installing but --no-install was given; ship .python_packages with the app or drop --no-install",
        requirements.display()
    )]
    InstallDisabled { requirements: PathBuf },
    #[error(
        "the Python given with --python / SLUICE_PYTHON ({}) cannot be used: {reason}; \
         point --python or SLUICE_PYTHON at Python 3.13 or newer",
        path.display()
    )]
    ExplicitUnusable { path: PathBuf, reason: Rejection },
    #[error("{}", not_found_message(tried))]
    NotFound {
        /// One line per candidate (or place searched), with why it was rejected.
        tried: Vec<String>,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("installing the {what} failed (pip {status}):\n{output}")]
    Install {
        what: &'static str,
        status: ExitStatus,
        /// The end of pip's stdout followed by its stderr.
        output: String,
    },
    #[error("worker asset path {path:?} must be relative and stay inside the worker directory")]
    InvalidAsset { path: &'static str },
    #[error("background task for {what} failed: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Why a Python candidate was not used.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("not found on PATH")]
    NotOnPath,
    #[error("cannot run it: {0}")]
    Spawn(#[source] io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("it exited with {status}: {message}")]
    Failed { status: ExitStatus, message: String },
    #[error("unexpected version output {0:?}")]
    BadOutput(String),
    #[error("version {}.{}.{} is older than 3.13", version.0, version.1, version.2)]
    TooOld { version: (u32, u32, u32) },
}

/// A usable interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonInfo {
    /// The interpreter's own `sys.executable` when it reports one (so shims are bypassed).
    pub path: PathBuf,
    pub version: (u32, u32, u32),
}

/// One file of the worker package, embedded in the sluice binary.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Relative to the worker directory, e.g. `sluice_worker/__main__.py`.
    pub path: &'static str,
    pub bytes: &'static [u8],
}

/// A finished worker environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    pub root: PathBuf,
    /// `root/site-packages`: the worker's pinned dependencies.
    pub site_packages: PathBuf,
    /// `root/worker`: the embedded worker package files.
    pub worker_dir: PathBuf,
}

impl PythonInfo {
    /// The version as `major.minor.micro`, e.g. `3.13.0`.
    pub fn version_string(&self) -> String {
        let (major, minor, micro) = self.version;
        format!("{major}.{minor}.{micro}")
    }
}

impl WorkerEnv {
    fn at(root: PathBuf) -> Self {
        Self {
            site_packages: root.join("site-packages"),
            worker_dir: root.join("worker"),
            root,
        }
    }
}

/// Builds (once, cached) the worker's private environment under `cache_dir`.
///
/// The directory is `cache_dir/worker-<key>`, where the key hashes the Python version, `lock`
/// (a pip requirements text) and every asset; a finished environment returns at once without
/// running pip. Otherwise, under a file lock shared with other Sluice processes, it installs
/// `lock` with pip into `site-packages`, writes the assets into `worker`, byte-compiles both and
/// moves the result into place. Errors: [`PythonError::Install`] with pip's message, or I/O.
pub async fn ensure_worker_env(
    python: &PythonInfo,
    cache_dir: &Path,
    lock: &str,
    assets: &[Asset],
) -> Result<WorkerEnv, PythonError> {
    if let Some(bad) = assets.iter().find(|a| !is_plain_relative(a.path)) {
        return Err(PythonError::InvalidAsset { path: bad.path });
    }
    let key = worker_env_key(python, lock, assets);
    let env = WorkerEnv::at(cache_dir.join(format!("worker-{key}")));
    let marker = env.root.join(COMPLETE_MARKER);
    if exists(&marker).await? {
        debug!(root = %env.root.display(), "worker environment cached");
        return Ok(env);
    }

    create_dir_all(cache_dir).await?;
    let _lock = lock_exclusive(cache_dir.join(format!("worker-{key}.lock"))).await?;
    if exists(&marker).await? {
        return Ok(env);
    }
    let started = Instant::now();
    info!(
        python = %python.version_string(),
        path = %python.path.display(),
        root = %env.root.display(),
        "building worker environment"
    );
    // Holding the lock, any other temp dir for this key is left over from a crashed build.
    let tmp_prefix = format!("worker-{key}.tmp-");
    remove_leftovers(cache_dir, &tmp_prefix).await?;
    if exists(&env.root).await? {
        remove_dir_all(&env.root).await?;
    }
    let tmp = cache_dir.join(format!("{tmp_prefix}{}", std::process::id()));
    if let Err(error) = build_worker_env(python, &tmp, lock, assets).await {
        discard(&tmp).await;
        return Err(error);
    }
    if let Err(source) = tokio::fs::rename(&tmp, &env.root).await {
        discard(&tmp).await;
        if !exists(&marker).await? {
            return Err(io_error(
                "moving worker environment into",
                &env.root,
                source,
            ));
        }
    }
    info!(elapsed = ?started.elapsed(), root = %env.root.display(), "worker environment ready");
    Ok(env)
}

/// The default cache directory: `$SLUICE_CACHE_DIR`, else `$XDG_CACHE_HOME/sluice`, else
/// `$HOME/.cache/sluice`, else `sluice-cache` in the system temp directory.
pub fn default_cache_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = non_empty(env, "SLUICE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    // The XDG spec says to ignore relative values.
    if let Some(dir) = non_empty(env, "XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
    {
        return dir.join("sluice");
    }
    match non_empty(env, "HOME") {
        Some(home) => Path::new(&home).join(".cache").join("sluice"),
        None => std::env::temp_dir().join("sluice-cache"),
    }
}

async fn build_worker_env(
    python: &PythonInfo,
    tmp: &Path,
    lock: &str,
    assets: &[Asset],
) -> Result<(), PythonError> {
    let site_packages = tmp.join("site-packages");
    let worker_dir = tmp.join("worker");
    create_dir_all(&site_packages).await?;
    let lock_file = tmp.join("requirements.lock");
    write_file(&lock_file, lock.as_bytes()).await?;
    pip_install(
        python,
        "worker environment",
        &site_packages,
        &lock_file,
        false,
        tmp,
    )
    .await?;
    for asset in assets {
        let path = worker_dir.join(asset.path);
        if let Some(parent) = path.parent() {
            create_dir_all(parent).await?;
        }
        write_file(&path, asset.bytes).await?;
    }
    create_dir_all(&worker_dir).await?;
    compile_bytecode(python, &[&worker_dir, &site_packages], tmp).await;
    write_file(&tmp.join(COMPLETE_MARKER), b"").await
}

/// Byte-compiles `dirs` at install time, so no worker start compiles (and a read-only
/// deployment, where Python cannot write `__pycache__`, does not compile on every start).
/// It only saves start-up time: a failure is logged at debug level and ignored.
async fn compile_bytecode(python: &PythonInfo, dirs: &[&Path], cwd: &Path) {
    let mut compile = python_command(python);
    compile
        .args(["-m", "compileall", "-q"])
        .args(dirs)
        .current_dir(cwd);
    match compile.output().await {
        Ok(out) if out.status.success() => {}
        Ok(out) => debug!(status = %out.status, output = %combined_tail(&out), "compileall failed"),
        Err(error) => debug!(%error, "compileall could not run"),
    }
}

/// Byte-compiles the app's code (not `.python_packages`), best effort.
fn non_empty(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    env(key).filter(|value| !value.is_empty())
}

/// An interpreter command for installs: no stdin, output captured, and no caller `PYTHONPATH`
/// leaking into what gets installed.
fn python_command(python: &PythonInfo) -> Command {
    let mut cmd = Command::new(&python.path);
    cmd.env_remove("PYTHONPATH")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn pip_install(
    python: &PythonInfo,
    what: &'static str,
    target: &Path,
    requirements: &Path,
    upgrade: bool,
    cwd: &Path,
) -> Result<(), PythonError> {
    let mut cmd = python_command(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .arg("--no-warn-script-location");
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.arg("--target")
        .arg(target)
        .arg("-r")
        .arg(requirements)
        .current_dir(cwd);
    let out = cmd.output().await.map_err(|source| PythonError::Spawn {
        program: python.path.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(PythonError::Install {
            what,
            status: out.status,
            output: combined_tail(&out),
        });
    }
    debug!(what, output = %combined_tail(&out), "pip install finished");
    Ok(())
}

/// The end of stdout followed by stderr, trimmed to [`OUTPUT_TAIL`] bytes on a char boundary.
fn combined_tail(out: &Output) -> String {
    let combined = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    tail(&String::from_utf8_lossy(&combined), OUTPUT_TAIL)
}

fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

fn worker_env_key(python: &PythonInfo, lock: &str, assets: &[Asset]) -> String {
    let mut hasher = Sha256::new();
    // Length prefixes keep field boundaries unambiguous.
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(python.version_string().as_bytes());
    field(lock.as_bytes());
    for asset in assets {
        field(asset.path.as_bytes());
        field(asset.bytes);
    }
    let digest = hex(&hasher.finalize());
    digest[..16].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn is_plain_relative(path: &str) -> bool {
    let path = Path::new(path);
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

async fn is_up_to_date(
    hash_file: &Path,
    wanted: &str,
    site_packages: &Path,
) -> Result<bool, PythonError> {
    let recorded = match tokio::fs::read_to_string(hash_file).await {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_error("reading", hash_file, source)),
    };
    Ok(recorded.trim() == wanted && exists(site_packages).await?)
}

/// Opens (creating) `path` and waits for an exclusive lock on it; dropping the file unlocks.
async fn lock_exclusive(path: PathBuf) -> Result<File, PythonError> {
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| io_error("opening lock file", &path, source))?;
        file.lock()
            .map_err(|source| io_error("locking", &path, source))?;
        Ok(file)
    })
    .await
    .map_err(|source| PythonError::Task {
        what: "taking a file lock",
        source,
    })?
}

/// Removes entries of `dir` whose names start with `prefix`: builds that never finished.
async fn remove_leftovers(dir: &Path, prefix: &str) -> Result<(), PythonError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|source| io_error("listing", dir, source))?;
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|source| io_error("listing", dir, source))?
    {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix))
        {
            debug!(path = %entry.path().display(), "removing unfinished build");
            remove_dir_all(&entry.path()).await?;
        }
    }
    Ok(())
}

/// Best-effort removal of a failed build; the next build removes it anyway.
async fn discard(dir: &Path) {
    if let Err(error) = tokio::fs::remove_dir_all(dir).await {
        debug!(path = %dir.display(), %error, "could not remove unfinished build");
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> PythonError {
    PythonError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

async fn exists(path: &Path) -> Result<bool, PythonError> {
    tokio::fs::try_exists(path)
        .await
        .map_err(|source| io_error("checking", path, source))
}

async fn create_dir_all(path: &Path) -> Result<(), PythonError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| io_error("creating directory", path, source))
}

async fn remove_dir_all(path: &Path) -> Result<(), PythonError> {
    tokio::fs::remove_dir_all(path)
        .await
        .map_err(|source| io_error("removing", path, source))
}

async fn remove_file_if_exists(path: &Path) -> Result<(), PythonError> {
    match tokio::fs::remove_file(path).await {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_error("removing", path, error))
        }
        _ => Ok(()),
    }
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PythonError> {
    tokio::fs::write(path, bytes)
        .await
        .map_err(|source| io_error("writing", path, source))
}

#[cfg(test)]
mod tests;
