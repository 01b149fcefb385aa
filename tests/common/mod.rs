//! Test harness: starts the real `sluice` binary on 127.0.0.1 port 0, collects its output line by
//! line, and reads the bound addresses and the workers in service from its `--ready-file` (never
//! from log lines). The child is owned by the harness (`kill_on_drop`), so a failing test leaves
//! nothing behind.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The first start on a fresh machine builds the worker environment and pip-installs the app's
/// requirements, which can take minutes; later starts take about a second.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(600);

/// How long to wait for a log line that follows a request (the log travels worker → Sluice → pipe).
pub const LOG_DEADLINE: Duration = Duration::from_secs(30);

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Output lines of the child, shared with the reader tasks.
type Lines = Arc<Mutex<Vec<String>>>;

/// ESC bytes (0x1b) the child wrote, counted before lines are stripped of ANSI sequences.
type Escapes = Arc<std::sync::atomic::AtomicUsize>;

/// The example app in `examples/hello`.
pub fn hello_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello")
}

/// How to start Sluice.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_dir: PathBuf,
    /// Always passed explicitly so the number of workers to wait for is known
    /// (and `FUNCTIONS_WORKER_PROCESS_COUNT` in the caller's environment cannot change it).
    pub workers: usize,
    pub secrets_file: Option<PathBuf>,
    /// `serve --placeholder` (no app dir; `app_dir` is ignored).
    pub placeholder: bool,
    /// Pass `--port 0`; off when the test wants the port Sluice picks itself (e.g. from
    /// the app's local.settings.json).
    pub port_flag: bool,
}

impl Options {
    pub fn new(app_dir: impl Into<PathBuf>) -> Self {
        Self {
            app_dir: app_dir.into(),
            workers: 1,
            secrets_file: None,
            placeholder: false,
            port_flag: true,
        }
    }

    /// `sluice serve --placeholder` with `workers` workers.
    pub fn placeholder(workers: usize) -> Self {
        Self {
            placeholder: true,
            ..Self::new("").workers(workers)
        }
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// No `--port` flag: Sluice chooses the port from its own configuration.
    pub fn without_port_flag(mut self) -> Self {
        self.port_flag = false;
        self
    }

    pub fn secrets_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secrets_file = Some(path.into());
        self
    }
}

/// A running `sluice serve` child process.
pub struct Sluice {
    child: Child,
    lines: Lines,
    escapes: Escapes,
    readers: Vec<JoinHandle<()>>,
    addr: Option<SocketAddr>,
    /// Holds the `--ready-file` Sluice keeps up to date.
    ready_dir: TempDir,
}

/// What the `--ready-file` says (see `src/ready_file.rs`).
#[derive(Debug, serde::Deserialize)]
pub struct ReadyState {
    pub pid: u32,
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub draining: bool,
    /// Workers that became ready since start, restarts included.
    pub workers_started: usize,
    pub placeholders_started: usize,
    /// The workers ready now.
    pub workers: Vec<ReadyWorker>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ReadyWorker {
    pub id: String,
    pub pid: u32,
}

impl Sluice {
    /// Starts Sluice and waits until it listens and all workers are ready.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        Self::start_with(options, &Extras::default()).await
    }

    /// Starts Sluice without waiting for anything (for tests of start-up failures).
    pub fn spawn(options: Options) -> anyhow::Result<Self> {
        Self::spawn_with(options, &Extras::default())
    }

    /// `http://127.0.0.1:PORT` of the running server.
    pub fn base_url(&self) -> String {
        let addr = self
            .addr
            .expect("base_url is only available after Sluice::start");
        format!("http://{addr}")
    }

    /// `base_url()` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// ESC bytes in the raw output so far (lines are stored with ANSI sequences removed).
    pub fn escape_bytes(&self) -> usize {
        self.escapes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every output line so far.
    pub fn output_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether any output line so far contains `needle`.
    pub fn output_contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
    }

    /// Every output line so far that contains `needle`.
    pub fn output_lines_containing(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until an output line contains `needle`, or fails after `deadline`.
    pub async fn wait_for_output(&self, needle: &str, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        while !self.output_contains(needle) {
            if Instant::now() >= until {
                bail!(
                    "no output line contains {needle:?} after {deadline:?}\n{}",
                    self.output_tail()
                );
            }
            sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Waits for the process to exit, then for its output to be fully read.
    pub async fn wait_for_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let status = match timeout(deadline, self.child.wait()).await {
            Ok(status) => status.context("waiting for sluice")?,
            Err(_) => bail!(
                "sluice did not exit within {deadline:?}\n{}",
                self.output_tail()
            ),
        };
        // The pipes close when the last writer is gone; bounded, in case a grandchild holds one.
        for reader in self.readers.drain(..) {
            let _ = timeout(Duration::from_secs(10), reader).await;
        }
        Ok(status)
    }

    /// The ready file's current content; None before Sluice has written it.
    pub fn ready_state(&self) -> anyhow::Result<Option<ReadyState>> {
        let path = self.ready_dir.path().join("ready.json");
        match std::fs::read(&path) {
            // Replaced by a rename, so never read half-written.
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).context("the ready file")?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("reading the ready file"),
        }
    }

    /// Polls the ready file until `done` holds for it; fails after `deadline`, or at once if
    /// Sluice exits.
    pub async fn wait_for_state(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&ReadyState) -> bool,
    ) -> anyhow::Result<ReadyState> {
        let until = Instant::now() + deadline;
        loop {
            let state = self.ready_state()?;
            if let Some(state) = state.filter(|s| done(s)) {
                return Ok(state);
            }
            let gone = self.child.id().is_none_or(|pid| !process_running(pid));
            if gone || Instant::now() >= until {
                bail!(
                    "waited {deadline:?} for {what}; ready file: {:?}\n{}",
                    self.ready_state().ok().flatten(),
                    self.output_tail()
                );
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until `n` workers have become ready since start (restarts count); returns when.
    pub async fn wait_workers_started(
        &self,
        n: usize,
        deadline: Duration,
    ) -> anyhow::Result<Instant> {
        self.wait_for_state(&format!("{n} workers started"), deadline, |s| {
            s.workers_started >= n
        })
        .await?;
        Ok(Instant::now())
    }

    /// The pids of the workers ready now.
    pub fn worker_pids(&self) -> anyhow::Result<Vec<u32>> {
        let state = self.ready_state()?.context("no ready file yet")?;
        Ok(state.workers.iter().map(|w| w.pid).collect())
    }

    async fn wait_until_ready(&mut self, workers: usize, deadline: Duration) -> anyhow::Result<()> {
        let what = format!("listening with {workers} workers started");
        let waited = self
            .wait_for_state(&what, deadline, |s| {
                s.listen.is_some() && s.workers_started >= workers
            })
            .await;
        match waited {
            Ok(state) => {
                self.addr = state.listen;
                Ok(())
            }
            Err(error) => match self.child.try_wait().context("polling sluice")? {
                Some(status) => {
                    // Let the readers drain what the process wrote before it went away.
                    for reader in self.readers.drain(..) {
                        let _ = timeout(Duration::from_secs(10), reader).await;
                    }
                    bail!(
                        "sluice exited during start-up ({status})\n{}",
                        self.output_tail()
                    )
                }
                None => Err(error),
            },
        }
    }

    /// The last output lines, for failure messages.
    pub fn output_tail(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let start = lines.len().saturating_sub(40);
        format!("--- last sluice output ---\n{}", lines[start..].join("\n"))
    }
}

/// Reads `stream` line by line into `lines`, echoing each line to the test's stderr.
async fn collect_lines(
    stream: impl AsyncRead + Unpin,
    label: &'static str,
    lines: Lines,
    escapes: Escapes,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let esc = buf.iter().filter(|&&b| b == 0x1b).count();
                escapes.fetch_add(esc, std::sync::atomic::Ordering::Relaxed);
                let line = strip_ansi(String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']));
                eprintln!("[sluice {label}] {line}");
                lines.lock().unwrap().push(line);
            }
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ … letter`), in case colours are on despite `NO_COLOR`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The I/O backend the suite runs against: `SLUICE_TEST_IO` (`epoll`, `uring`, `auto`),
/// else Sluice's default.
pub fn test_io() -> Option<String> {
    std::env::var("SLUICE_TEST_IO")
        .ok()
        .filter(|io| !io.is_empty())
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A random lowercase hex string of `n` bytes of entropy.
pub fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the directory tree `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), random_hex(6)));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Keys written to a host secrets file in the platform's format.
pub struct Secrets {
    pub master_key: String,
    pub function_key: String,
    pub file: PathBuf,
    _dir: TempDir,
}

impl Secrets {
    pub fn generate() -> anyhow::Result<Self> {
        let dir = TempDir::new("sluice-e2e-secrets")?;
        let master_key = random_hex(20);
        let function_key = random_hex(20);
        let json = serde_json::json!({
            "masterKey": {"name": "master", "value": master_key, "encrypted": false},
            "functionKeys": [{"name": "default", "value": function_key, "encrypted": false}],
            "systemKeys": [],
        });
        let file = dir.path().join("host.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&json)?)?;
        Ok(Self {
            master_key,
            function_key,
            file,
            _dir: dir,
        })
    }
}

/// An HTTP/1.1 client that never goes through a proxy (tests only talk to 127.0.0.1).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain reqwest client builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(
            strip_ansi("\u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m1"),
            "addr=1"
        );
    }
}

// ===========================================================================================
// Fault-injection helpers (used by tests/resilience/): extra flags and environment for the
// child, its pid, signals by pid, and a guard that only lets a test kill Sluice's own workers.
// ===========================================================================================

/// Extra command-line arguments and environment variables for a Sluice child.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables the child must not inherit (`NO_COLOR`, set by default, included).
    pub env_remove: Vec<String>,
}

impl Extras {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }
}

impl Sluice {
    /// Like [`Sluice::start`], with extra flags and environment.
    pub async fn start_with(options: Options, extras: &Extras) -> anyhow::Result<Self> {
        let workers = options.workers;
        let mut sluice = Self::spawn_with(options, extras)?;
        sluice.wait_until_ready(workers, STARTUP_DEADLINE).await?;
        Ok(sluice)
    }

    /// Like [`Sluice::spawn`], with extra flags (after the usual ones) and environment.
    pub fn spawn_with(options: Options, extras: &Extras) -> anyhow::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command.arg("serve");
        if options.placeholder {
            command.arg("--placeholder");
        } else {
            command.arg(&options.app_dir);
        }
        if options.port_flag {
            command.args(["--port", "0"]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            // Every test's Sluice gets its own admin port (the default, 9091, is shared).
            .args(["--admin-port", "0"])
            .args(["--workers", &options.workers.to_string()]);
        if let Some(secrets) = &options.secrets_file {
            command.arg("--secrets-file").arg(secrets);
        }
        let ready_dir = TempDir::new("sluice-ready")?;
        command
            .arg("--ready-file")
            .arg(ready_dir.path().join("ready.json"));
        // The whole suite runs once per I/O backend (scripts/test.sh); a test that picks
        // its own backend keeps it.
        if let Some(io) = test_io()
            && !extras.args.iter().any(|arg| arg == "--io")
        {
            command.args(["--io", &io]);
        }
        command.args(&extras.args);
        command.env("NO_COLOR", "1");
        for key in &extras.env_remove {
            command.env_remove(key);
        }
        command
            .envs(extras.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("spawning the sluice binary")?;
        let lines = Lines::default();
        let escapes = Escapes::default();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let readers = vec![
            tokio::spawn(collect_lines(
                stdout,
                "stdout",
                lines.clone(),
                escapes.clone(),
            )),
            tokio::spawn(collect_lines(
                stderr,
                "stderr",
                lines.clone(),
                escapes.clone(),
            )),
        ];
        Ok(Self {
            child,
            lines,
            escapes,
            readers,
            addr: None,
            ready_dir,
        })
    }

    /// Waits until Sluice listens (not for workers), e.g. for an app that cannot load.
    pub async fn wait_until_listening(&mut self, deadline: Duration) -> anyhow::Result<SocketAddr> {
        self.wait_until_ready(0, deadline).await?;
        Ok(self
            .addr
            .expect("wait_until_ready returns once the address is known"))
    }

    /// The bound address (after `start*` or `wait_until_listening`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("addr is only available once Sluice listens")
    }

    /// The pid of the `sluice` process (until it has been waited for).
    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .context("the sluice process has already been reaped")
    }

    /// Sends `signal` (a `kill` name such as `TERM` or `INT`) to the sluice process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        send_signal(self.pid()?, signal)
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child.try_wait().context("polling sluice")
    }
}

/// Sends `signal` to `pid` through `kill(1)`. Only for processes the test started (the sluice
/// child) or that a function reported as its worker (see [`is_descendant_of`]).
pub fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

/// The parent pid and state letter of a live process, from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may contain spaces and parentheses, so split at the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn process_running(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((_, state)) if state != 'Z')
}

/// Whether `pid` is a child (or grandchild, …) of `ancestor`: the guard before killing a worker.
pub fn is_descendant_of(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..8 {
        match proc_stat(current) {
            Some((parent, _)) if parent == ancestor => return true,
            Some((parent, _)) if parent > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

// ===========================================================================================
// Admin listener helpers (used by tests/observability.rs).
// ===========================================================================================

impl Sluice {
    /// The admin listener's address, from the ready file (waits for it).
    pub async fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        let state = self
            .wait_for_state("the admin address", LOG_DEADLINE, |s| s.admin.is_some())
            .await?;
        state.admin.context("the ready file names no admin address")
    }

    /// `http://ADMIN_ADDR` + `path` (which starts with `/`).
    pub async fn admin_url(&self, path: &str) -> anyhow::Result<String> {
        Ok(format!("http://{}{path}", self.admin_addr().await?))
    }

    /// The text of `/metrics` on the admin listener.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = self.admin_url("/metrics").await?;
        Ok(client().get(url).send().await?.text().await?)
    }
}
