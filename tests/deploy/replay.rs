//! The replay: the image's own steps run against the real binary in a throwaway directory
//! that stands for the image's root filesystem, then its entrypoint and health check.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, ensure};
use globset::GlobSet;

use crate::context::{dockerignore, files_under, is_ignored};
use crate::dockerfile::*;

const STARTUP_DEADLINE: Duration = Duration::from_secs(300);
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Stops the child (if still running) when the test ends, pass or fail.
struct ChildGuard(Child);

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("sluice-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// A container path (`/opt/sluice/cache`) inside this stand-in root filesystem.
    fn map(&self, container_path: &str) -> PathBuf {
        self.0.join(container_path.trim_start_matches('/'))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a build-context source to a destination as COPY does: a directory's contents, or a
/// file into a directory destination (ending in `/`) or to a file path.
fn replay_copy(
    source: &str,
    dest: &Path,
    dest_is_dir: bool,
    patterns: &GlobSet,
) -> anyhow::Result<()> {
    let root = repo();
    if root.join(source).is_file() {
        let target = if dest_is_dir {
            dest.join(Path::new(source).file_name().context("file name")?)
        } else {
            dest.to_path_buf()
        };
        std::fs::create_dir_all(target.parent().context("parent")?)?;
        std::fs::copy(root.join(source), target)?;
        return Ok(());
    }
    for file in files_under(&root, source)? {
        if is_ignored(&file, patterns) {
            continue;
        }
        let relative = Path::new(&file).strip_prefix(source.trim_end_matches('/'))?;
        let target = dest.join(relative);
        std::fs::create_dir_all(target.parent().context("parent")?)?;
        std::fs::copy(root.join(&file), target)?;
    }
    Ok(())
}

/// Paths (with size and mtime) of every file under `dir`, `__pycache__` left out: Python
/// writes those where it can and skips them silently on a read-only filesystem.
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if entry.file_name() != "__pycache__" {
                    stack.push(entry.path());
                }
            } else {
                out.insert(entry.path(), (meta.len(), meta.modified()?));
            }
        }
    }
    Ok(out)
}

/// Runs a command to completion; its output is returned for the failure message.
fn run(command: &mut Command) -> anyhow::Result<(ExitStatus, String)> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status, text))
}

/// The public and admin addresses from Sluice's `--ready-file`, once it names both.
fn ready_addrs(path: &Path) -> anyhow::Result<Option<(SocketAddr, SocketAddr)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading the ready file"),
    };
    let state: serde_json::Value = serde_json::from_slice(&bytes).context("the ready file")?;
    let addr = |key: &str| state[key].as_str().and_then(|a| a.parse().ok());
    Ok(addr("listen").zip(addr("admin")))
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn image_steps_prebuild_the_worker_env_and_serve_without_network() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let patterns = dockerignore()?;
    let rootfs = TempDir::new("image")?;
    let sluice = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let map_word = |word: &str| -> String {
        if word.starts_with('/') {
            rootfs.map(word).display().to_string()
        } else {
            word.to_owned()
        }
    };

    // Replay the runtime and example stages: COPYs from the context, `sluice check` steps.
    let mut env = BTreeMap::new();
    let mut workdir = "/".to_owned();
    let mut checks = 0;
    for stage in dockerfile.chain(dockerfile.stage("example")?) {
        stage.walk(
            &dockerfile.global_args,
            &mut BTreeMap::new(),
            &mut env,
            |instruction, vars, image| {
                match &instruction.step {
                    Step::Workdir(dir) => workdir = expand(dir, vars),
                    Step::Copy(copy) => {
                        let copy = copy.expanded(vars);
                        if copy.from.is_none() {
                            for source in &copy.sources {
                                replay_copy(
                                    source,
                                    &rootfs.map(&copy.dest),
                                    copy.dest.ends_with('/'),
                                    &patterns,
                                )?;
                            }
                        }
                    }
                    Step::Run(script) => {
                        for command in script.commands()? {
                            // Only Sluice's own steps are replayed (apt-get, useradd, chmod are not).
                            if command.first().map(String::as_str) != Some("sluice") {
                                continue;
                            }
                            std::fs::create_dir_all(rootfs.map(&workdir))?;
                            let (status, output) = run(Command::new(&sluice)
                                .args(command[1..].iter().map(|w| map_word(&expand(w, vars))))
                                .envs(image_env(image, &map_word))
                                .env_remove("SLUICE_PYTHON")
                                .env_remove("PIP_NO_CACHE_DIR")
                                .current_dir(rootfs.map(&workdir)))?;
                            ensure!(
                                status.success(),
                                "`{}` failed ({status}):\n{output}",
                                command.join(" ")
                            );
                            ensure!(
                                output.contains("\nOK"),
                                "`{}` did not report OK:\n{output}",
                                command.join(" ")
                            );
                            checks += 1;
                        }
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
    }
    ensure!(
        checks == 2,
        "expected the worker pre-build and the app install steps, found {checks}"
    );
    let cache = rootfs.map(env.get("SLUICE_CACHE_DIR").context("SLUICE_CACHE_DIR")?);
    let built: Vec<_> = std::fs::read_dir(&cache)?
        .filter_map(Result::ok)
        .filter(|e| e.path().join(".complete").is_file())
        .collect();
    ensure!(
        built.len() == 1,
        "one finished worker environment in the image's cache, found {}",
        built.len()
    );
    let app = rootfs.map(
        env.get("AzureWebJobsScriptRoot")
            .context("AzureWebJobsScriptRoot")?,
    );
    ensure!(
        app.join(".python_packages/lib/site-packages").is_dir(),
        "the app's requirements were installed at build time"
    );

    // The health check fails when nothing answers (it can fail at all).
    let (health, entrypoint) = healthcheck_and_entrypoint(&dockerfile)?;
    let unused_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (status, _) = run(Command::new(&health[0])
        .args(&health[1..])
        .env("SLUICE_ADMIN_PORT", unused_port.to_string()))?;
    ensure!(
        !status.success(),
        "the health check passed with nothing listening"
    );

    // Run the entrypoint (tini left out) as a container would, with pip unable to reach any
    // index; extra arguments as after `docker run IMAGE`.
    let before = (snapshot(&cache)?, snapshot(&app)?);
    let bin_dir = sluice.parent().context("binary directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ready_dir = TempDir::new("ready")?;
    let ready_file = ready_dir.map("ready.json");
    let mut child = ChildGuard(
        Command::new(&entrypoint[2])
            .args(&entrypoint[3..])
            .args(["--bind", "127.0.0.1", "--workers", "1"])
            .arg("--ready-file")
            .arg(&ready_file)
            .envs(image_env(&env, &map_word))
            .env_remove("SLUICE_PYTHON")
            .env_remove("PIP_NO_CACHE_DIR")
            .env("PATH", path)
            .env("SLUICE_PORT", "0")
            .env("SLUICE_ADMIN_PORT", "0")
            .env("PIP_NO_INDEX", "1")
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("NO_COLOR", "1")
            .current_dir(&app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the entrypoint")?,
    );
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.0.stderr.take().context("stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The addresses come from the ready file, never from log lines.
    let mut log = Vec::new();
    let started = Instant::now();
    let (public, admin) = loop {
        log.extend(lines.try_iter());
        if let Some(addrs) = ready_addrs(&ready_file)? {
            break addrs;
        }
        ensure!(
            child.0.try_wait()?.is_none(),
            "sluice exited:\n{}",
            log.join("\n")
        );
        ensure!(
            started.elapsed() < STARTUP_DEADLINE,
            "no addresses in the ready file:\n{}",
            log.join("\n")
        );
        std::thread::sleep(POLL_INTERVAL);
    };

    // Poll /readyz directly; once it answers 200 (a worker is ready, and nothing makes it
    // unready again before shutdown) the health check must pass too. Asking the health check
    // first and /readyz after would race the worker becoming ready in between.
    let mut ready = false;
    while started.elapsed() < STARTUP_DEADLINE {
        if http_get(admin, "/readyz")?.starts_with("HTTP/1.1 200") {
            let (status, output) = run(Command::new(&health[0])
                .args(&health[1..])
                .env("SLUICE_ADMIN_PORT", admin.port().to_string()))?;
            ensure!(
                status.success(),
                "/readyz answers 200 but the health check fails:\n{output}"
            );
            ready = true;
            break;
        }
        ensure!(
            child.0.try_wait()?.is_none(),
            "sluice exited:\n{}",
            log.join("\n")
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    log.extend(lines.try_iter());
    ensure!(ready, "the health check never passed:\n{}", log.join("\n"));
    let response = http_get(public, "/api/hello?name=Docker")?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("Hello, Docker!"),
        "{response}"
    );

    // SIGTERM goes to sluice itself (the script execs it): it drains and exits 0.
    let (status, output) = run(Command::new("kill").args(["-TERM", &child.0.id().to_string()]))?;
    ensure!(status.success(), "kill: {output}");
    let stopping = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait()? {
            break exit;
        }
        ensure!(
            stopping.elapsed() < EXIT_DEADLINE,
            "sluice did not exit after SIGTERM"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    log.extend(lines.try_iter());
    ensure!(
        exit.success(),
        "exit after SIGTERM: {exit}\n{}",
        log.join("\n")
    );
    ensure!(
        !log.iter()
            .any(|l| l.contains("installing") || l.contains("building worker environment")),
        "serve installed something:\n{}",
        log.join("\n")
    );

    // Nothing was written to the cache or the app: a read-only root filesystem works.
    let after = (snapshot(&cache)?, snapshot(&app)?);
    ensure!(
        before == after,
        "serve wrote into the image's cache or app directory:\nbefore {before:?}\nafter {after:?}"
    );
    Ok(())
}

/// The image's ENV as a process environment: absolute paths moved into the stand-in root.
/// Left out: `SLUICE_PYTHON` (the image's interpreter path; here Sluice finds Python 3.13 as it
/// does on a developer machine) and `PIP_NO_CACHE_DIR` (keeps image layers small; here pip's
/// cache keeps the test fast).
fn image_env(
    env: &BTreeMap<String, String>,
    map_word: &dyn Fn(&str) -> String,
) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "SLUICE_PYTHON" | "PIP_NO_CACHE_DIR"))
        .map(|(k, v)| (k.clone(), map_word(v)))
        .collect()
}
