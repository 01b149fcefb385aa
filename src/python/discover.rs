//! Finding a Python ≥ 3.13 for the workers: an explicit `--python`/`SLUICE_PYTHON`, else
//! `python3.1x` on `PATH`, else the newest pyenv interpreter; each candidate is probed by
//! running it (version and real executable), and pyenv shims are tried last because each
//! one runs `pyenv exec` first.

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{PythonError, PythonInfo, Rejection, non_empty};

/// The oldest Python the worker supports.
pub(super) const MIN_VERSION: (u32, u32) = (3, 13);
/// Interpreter names looked up on `PATH`, in order of preference.
pub(super) const PATH_NAMES: [&str; 3] = ["python3.13", "python3.14", "python3.15"];
/// A probe only prints two lines; a hang means a broken interpreter or shim.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const PROBE_SCRIPT: &str =
    "import sys; print('%d %d %d' % tuple(sys.version_info[:3])); print(sys.executable)";
/// Finds a Python ≥ 3.13.
///
/// `explicit` (from `--python` or `SLUICE_PYTHON`) wins and must work: a bare name is looked up on
/// `PATH`, and any problem is [`PythonError::ExplicitUnusable`]. Otherwise the first working
/// `python3.13`, `python3.14`, `python3.15` on `PATH`, then the highest pyenv interpreter
/// `$PYENV_ROOT/versions/*/bin/python3.N` (N ≥ 13; `PYENV_ROOT` defaults to `$HOME/.pyenv`).
/// `env` supplies `PATH`, `HOME` and `PYENV_ROOT`. With no candidate left, returns
/// [`PythonError::NotFound`] listing every candidate and why it was rejected.
pub async fn find_python(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PythonInfo, PythonError> {
    if let Some(given) = explicit {
        let unusable = |reason| PythonError::ExplicitUnusable {
            path: given.to_path_buf(),
            reason,
        };
        let mut parts = given.components();
        let is_bare_name = matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        );
        let resolved = if is_bare_name {
            on_path(given.as_os_str(), env)
                .into_iter()
                .next()
                .ok_or_else(|| unusable(Rejection::NotOnPath))?
        } else {
            given.to_path_buf()
        };
        return probe(&resolved).await.map_err(unusable);
    }

    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    for name in PATH_NAMES {
        candidates.extend(on_path(OsStr::new(name), env));
    }
    if candidates.is_empty() {
        tried.push(format!("PATH: no {}", PATH_NAMES.join(", ")));
    }
    // A pyenv shim runs `pyenv exec` (a shell script, 0.1–1 s) just to find the same
    // interpreters the pyenv scan below probes directly: try shims only as a last resort.
    let (shims, candidates): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| is_shim(c));
    for candidate in candidates {
        match probe(&candidate).await {
            Ok(info) => return Ok(info),
            Err(reason) => tried.push(format!("{}: {reason}", candidate.display())),
        }
    }

    let pyenv_root = non_empty(env, "PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| non_empty(env, "HOME").map(|home| Path::new(&home).join(".pyenv")));
    let Some(pyenv_root) = pyenv_root else {
        tried.push("pyenv: neither PYENV_ROOT nor HOME is set".to_owned());
        return probe_shims(shims, tried).await;
    };
    let versions = pyenv_root.join("versions");
    let candidates = match pyenv_candidates(&versions) {
        Ok(found) if found.is_empty() => {
            let place = versions.display();
            tried.push(format!("pyenv: no python3.13 or newer under {place}"));
            found
        }
        Ok(found) => found,
        Err(error) => {
            tried.push(format!("pyenv: {}: {error}", versions.display()));
            Vec::new()
        }
    };
    let mut best: Option<PythonInfo> = None;
    for candidate in candidates {
        match probe(&candidate).await {
            Ok(info) if best.as_ref().is_none_or(|b| info.version > b.version) => best = Some(info),
            Ok(_) => {}
            Err(reason) => tried.push(format!("{}: {reason}", candidate.display())),
        }
    }
    match best {
        Some(best) => Ok(best),
        None => probe_shims(shims, tried).await,
    }
}

/// A pyenv (or pyenv plugin) shim: an executable in a directory named `shims`.
pub(super) fn is_shim(path: &Path) -> bool {
    path.parent()
        .and_then(Path::file_name)
        .is_some_and(|dir| dir == "shims")
}

pub(super) async fn probe_shims(
    shims: Vec<PathBuf>,
    mut tried: Vec<String>,
) -> Result<PythonInfo, PythonError> {
    for candidate in shims {
        match probe(&candidate).await {
            Ok(info) => return Ok(info),
            Err(reason) => tried.push(format!("{}: {reason}", candidate.display())),
        }
    }
    Err(PythonError::NotFound { tried })
}

/// Runs the interpreter and checks it is Python ≥ 3.13.
pub(super) async fn probe(path: &Path) -> Result<PythonInfo, Rejection> {
    let mut cmd = Command::new(path);
    // -I -S: no site import or user paths; the version and path need neither.
    cmd.args(["-I", "-S", "-c", PROBE_SCRIPT])
        .env_remove("PYTHONPATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
        Err(_) => return Err(Rejection::TimedOut(PROBE_TIMEOUT)),
        Ok(Err(error)) => return Err(Rejection::Spawn(error)),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(Rejection::Failed {
            status: out.status,
            message: message.chars().take(200).collect(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let version = lines
        .next()
        .and_then(parse_version)
        .ok_or_else(|| Rejection::BadOutput(stdout.trim().chars().take(200).collect()))?;
    if (version.0, version.1) < MIN_VERSION {
        return Err(Rejection::TooOld { version });
    }
    let executable = lines
        .next()
        .map(|line| PathBuf::from(line.trim()))
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| path.to_path_buf());
    Ok(PythonInfo {
        path: executable,
        version,
    })
}

pub(super) fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    let mut parts = line.split_whitespace().map(str::parse::<u32>);
    let version = (
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    );
    parts.next().is_none().then_some(version)
}

/// Every executable file called `name` in the `PATH` from `env`, in `PATH` order, without duplicates.
pub(super) fn on_path(name: &OsStr, env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(path_var) = env("PATH") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for dir in std::env::split_paths(&path_var).filter(|d| !d.as_os_str().is_empty()) {
        let candidate = dir.join(name);
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        // /bin and /usr/bin are often the same directory; probe each interpreter once.
        let real = std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone());
        if executable && !seen.contains(&real) {
            seen.push(real);
            found.push(candidate);
        }
    }
    found
}

/// `versions/*/bin/python3.N` with N ≥ 13, sorted for a deterministic probe order.
pub(super) fn pyenv_candidates(versions: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for version in std::fs::read_dir(versions)? {
        let bin = version?.path().join("bin");
        let Ok(entries) = std::fs::read_dir(&bin) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let minor = name
                .to_str()
                .and_then(|n| n.strip_prefix("python3."))
                .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|m| m.parse::<u32>().ok());
            if minor.is_some_and(|m| m >= MIN_VERSION.1) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn not_found_message(tried: &[String]) -> String {
    let mut message = String::from("no Python 3.13 or newer found; tried:");
    for line in tried {
        message.push_str("\n  - ");
        message.push_str(line);
    }
    message.push_str(
        "\ninstall Python 3.13 or newer, or pass its path with --python PATH or SLUICE_PYTHON=PATH",
    );
    message
}
