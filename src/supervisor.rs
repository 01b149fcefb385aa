//! The Python worker processes: launched with the platform's argument set and
//! environment, their stdout/stderr relayed line by line into Sluice's log with the
//! worker id, and their exit observed. Does not route requests.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::config::Captured;
use crate::worker_config::WorkerDescription;

/// Set on placeholder workers, as the platform host does; never passed on after assignment.
const PLACEHOLDER_MODE_VAR: &str = "WEBSITE_PLACEHOLDER_MODE";

/// What workers are launched for.
#[derive(Debug, Clone)]
pub enum LaunchMode {
    /// The app in `app_dir`.
    App,
    /// Placeholders (`serve --placeholder`): initialised, waiting for an app; marked with
    /// `WEBSITE_PLACEHOLDER_MODE=1` as the platform host marks them.
    Placeholder,
    /// The app assigned to a placeholder Sluice: the assignment's variables are set last,
    /// over everything else.
    Assigned { environment: Vec<(String, String)> },
}

/// How to launch one worker.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    pub python: PathBuf,
    /// Directory holding `worker.py` and the `sluice_worker` package.
    pub worker_dir: PathBuf,
    pub app_dir: PathBuf,
    /// The worker's private site-packages.
    pub worker_site: PathBuf,
    /// `APP_DIR/.python_packages/lib/site-packages`, when the app has one.
    pub app_site: Option<PathBuf>,
    /// `major.minor` of the interpreter, for FUNCTIONS_WORKER_RUNTIME_VERSION.
    pub python_version: String,
    /// `--worker-config`: launch this described worker instead of Sluice's own.
    pub description: Option<WorkerDescription>,
    /// The app's settings (local.settings.json): environment variables the workers get as
    /// if Sluice's own environment had them, so Sluice's worker variables still win.
    pub app_settings: Vec<(String, String)>,
    pub mode: LaunchMode,
    /// Sluice's own environment (captured by `config`), which the workers inherit.
    pub inherited: Captured,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot launch worker {worker} with {python}: {source}")]
    Spawn {
        worker: String,
        python: PathBuf,
        source: std::io::Error,
    },
}

/// A launched worker process.
pub struct WorkerProcess {
    pub id: String,
    pub child: Child,
}

impl WorkerProcess {
    /// Waits for the process to exit (cancel-safe).
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

impl WorkerLaunch {
    /// Starts one worker that will connect to the FunctionRpc server on `grpc_port`.
    pub fn spawn(&self, worker_id: &str, grpc_port: u16) -> Result<WorkerProcess, SupervisorError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let port = grpc_port.to_string();
        // The same bound the host's server applies (the platform passes int.MaxValue).
        let max_message = crate::rpc::MAX_MESSAGE_BYTES.to_string();
        let uri = format!("http://127.0.0.1:{grpc_port}/");
        // The platform's order: executable, its arguments, worker path, worker arguments,
        // then the transport flags (both the classic and the prefixed forms).
        let own_worker = self.worker_script();
        let executable = match &self.description {
            Some(d) => d.executable.as_path(),
            None => self.python.as_path(),
        };
        let mut cmd = Command::new(executable);
        match &self.description {
            Some(d) => {
                cmd.args(&d.arguments);
                cmd.args(d.worker_path.as_ref());
                cmd.args(&d.worker_arguments);
            }
            None => {
                cmd.args(["-X", "no_debug_ranges"]).arg(&own_worker);
            }
        }
        cmd.args(["--host", "127.0.0.1", "--port", &port])
            .args(["--workerId", worker_id, "--requestId", &request_id])
            .args(["--grpcMaxMessageLength", &max_message])
            .args(["--functions-uri", &uri])
            .args(["--functions-worker-id", worker_id])
            .args(["--functions-request-id", &request_id])
            .args(["--functions-grpc-max-message-length", &max_message])
            .current_dir(&self.app_dir)
            .envs(self.app_settings.iter().cloned())
            .env_remove("PYTHONPATH")
            .envs(self.worker_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.app_site.is_none() {
            cmd.env_remove("SLUICE_APP_SITE");
        }
        let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
            worker: worker_id.to_owned(),
            python: executable.to_path_buf(),
            source,
        })?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(relay(worker_id.to_owned(), "stdout", out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(relay(worker_id.to_owned(), "stderr", err));
        }
        info!(worker = %worker_id, pid = child.id().unwrap_or(0), "worker process started");
        Ok(WorkerProcess {
            id: worker_id.to_owned(),
            child,
        })
    }

    /// Sluice's own worker entry point.
    fn worker_script(&self) -> std::path::PathBuf {
        self.worker_dir.join("worker.py")
    }

    /// The variables Sluice sets for a worker, on top of its own environment.
    fn worker_env(&self) -> Vec<(String, String)> {
        let worker_directory = match &self.description {
            Some(d) => d.dir.as_path(),
            None => self.worker_dir.as_path(),
        };
        let path = |p: &std::path::Path| p.display().to_string();
        let mut env = vec![
            (
                "FUNCTIONS_WORKER_DIRECTORY".to_owned(),
                path(worker_directory),
            ),
            (
                "FUNCTIONS_APPLICATION_DIRECTORY".to_owned(),
                path(&self.app_dir),
            ),
            ("FUNCTIONS_WORKER_RUNTIME".to_owned(), "python".to_owned()),
            (
                "FUNCTIONS_WORKER_RUNTIME_VERSION".to_owned(),
                self.python_version.clone(),
            ),
            ("SLUICE_WORKER_SITE".to_owned(), path(&self.worker_site)),
            // What a wrapper in a worker description needs to run Sluice's own worker.
            ("SLUICE_PYTHON_EXECUTABLE".to_owned(), path(&self.python)),
            (
                "SLUICE_WORKER_SCRIPT".to_owned(),
                path(&self.worker_script()),
            ),
            // Line-by-line relay of print() output needs unbuffered streams.
            ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ];
        // Set only where neither Sluice's environment nor the app's settings have it.
        let unset = |name: &str| {
            !self.inherited.contains(name) && !self.app_settings.iter().any(|(k, _)| k == name)
        };
        // The platform host sets this when it is unset (host DefaultConcurrencyLimit).
        const POOL_SIZE: &str = "PYTHON_THREADPOOL_THREAD_COUNT";
        if unset(POOL_SIZE) {
            env.push((POOL_SIZE.to_owned(), "1000".to_owned()));
        }
        // Large Python objects (a request body's `bytes`) then fault in 2 MiB pages instead
        // of 4 KiB ones: 100 MiB uploads ran ~1.5x faster. Never over the user's own tunables.
        const TUNABLES: &str = "GLIBC_TUNABLES";
        if unset(TUNABLES) {
            env.push((TUNABLES.to_owned(), "glibc.malloc.hugetlb=1".to_owned()));
        }
        if let Some(site) = &self.app_site {
            env.push(("SLUICE_APP_SITE".to_owned(), path(site)));
        }
        match &self.mode {
            LaunchMode::App => {}
            LaunchMode::Placeholder => env.push((PLACEHOLDER_MODE_VAR.to_owned(), "1".to_owned())),
            LaunchMode::Assigned { environment } => env.extend(environment.iter().cloned()),
        }
        env
    }

    /// The whole environment a specialised worker gets (FunctionEnvironmentReloadRequest):
    /// Sluice's own, then what it sets for workers, then the assignment's variables;
    /// placeholder-only and empty values left out, as the platform host does.
    pub fn reload_environment(&self) -> std::collections::HashMap<String, String> {
        let mut env: std::collections::HashMap<String, String> =
            self.inherited.iter().cloned().collect();
        env.extend(self.app_settings.iter().cloned());
        env.extend(self.worker_env());
        for gone in ["PYTHONPATH", PLACEHOLDER_MODE_VAR] {
            env.remove(gone);
        }
        if self.app_site.is_none() {
            env.remove("SLUICE_APP_SITE");
        }
        env.retain(|k, v| !k.is_empty() && !v.is_empty());
        env
    }
}

async fn relay(worker: String, stream: &'static str, pipe: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(pipe).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if stream == "stderr" => {
                warn!(target: "worker", worker = %worker, stream, "{line}")
            }
            Ok(Some(line)) => info!(target: "worker", worker = %worker, stream, "{line}"),
            Ok(None) => break,
            Err(error) => {
                warn!(worker = %worker, stream, %error, "cannot read worker output");
                break;
            }
        }
    }
}
