//! A worker described the platform's way (a `worker.config.json`): the executable, its
//! arguments, the worker path and the worker's own arguments. With `--worker-config`
//! Sluice launches that instead of its own worker — e.g. the platform's Python worker, or
//! this repo's worker behind a wrapper — and drives it with the same start-up sequence.
//! Pure parsing and `%VAR%` expansion; launching is the supervisor's.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parts of a worker description Sluice honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerDescription {
    /// Directory of the description file: relative paths resolve against it, and it is
    /// the worker's FUNCTIONS_WORKER_DIRECTORY (as on the platform).
    pub dir: PathBuf,
    pub executable: PathBuf,
    /// Arguments for the executable, before the worker path.
    pub arguments: Vec<String>,
    /// `None`: the executable is the worker itself (no script path is passed).
    pub worker_path: Option<PathBuf>,
    /// Arguments after the worker path, before the transport flags.
    pub worker_arguments: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerConfigError {
    #[error("cannot read worker description {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("worker description {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Deserialize)]
struct File {
    description: Raw,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    default_executable_path: String,
    default_worker_path: Option<String>,
    #[serde(default)]
    arguments: Vec<String>,
    #[serde(default)]
    worker_arguments: Vec<String>,
}

impl WorkerDescription {
    /// Reads a description; `%VAR%` tokens are filled from `env`, and an argument with a
    /// token that stays unresolved is dropped (as the platform host does).
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, WorkerConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkerConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: File =
            serde_json::from_str(&text).map_err(|source| WorkerConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let raw = file.description;
        let expand_all = |args: &[String]| args.iter().filter_map(|a| expand(a, env)).collect();
        let executable = expand(&raw.default_executable_path, env).unwrap_or_default();
        // A relative executable next to the description wins; otherwise it is looked up on PATH.
        let local = dir.join(&executable);
        let executable = if Path::new(&executable).is_relative() && local.is_file() {
            local
        } else {
            PathBuf::from(executable)
        };
        let worker_path = raw
            .default_worker_path
            .as_deref()
            .and_then(|p| expand(p, env))
            .filter(|p| !p.is_empty())
            .map(|p| dir.join(p));
        Ok(WorkerDescription {
            executable,
            arguments: expand_all(&raw.arguments),
            worker_path,
            worker_arguments: expand_all(&raw.worker_arguments),
            dir,
        })
    }
}

/// Replaces every `%NAME%` with its value; `None` when one has no value.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(len) = after.find('%') else { break };
        let name = &after[..len];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push_str(&rest[..start + 1]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(&env(name)?);
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "FUNCTIONS_WORKER_RUNTIME_VERSION").then(|| "3.13".to_owned())
    }

    #[test]
    fn tokens_are_filled_and_unresolved_arguments_dropped() {
        assert_eq!(
            expand("%FUNCTIONS_WORKER_RUNTIME_VERSION%/LINUX", &env).as_deref(),
            Some("3.13/LINUX")
        );
        assert_eq!(expand("--flag=%UNSET%", &env), None);
        assert_eq!(expand("100%", &env).as_deref(), Some("100%"));
        assert_eq!(expand("a % b % c", &env).as_deref(), Some("a % b % c"));
    }

    #[test]
    fn description_paths_resolve_against_its_directory() {
        let dir = std::env::temp_dir().join(format!("sluice-wc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").expect("write");
        let path = dir.join("worker.config.json");
        std::fs::write(
            &path,
            r#"{"description":{"language":"python","defaultExecutablePath":"run.sh","defaultWorkerPath":"%FUNCTIONS_WORKER_RUNTIME_VERSION%/worker.py","arguments":["-X","no_debug_ranges","%NOPE%"],"workerArguments":["--verbose"]}}"#,
        )
        .expect("write");
        let d = WorkerDescription::load(&path, &env).expect("valid");
        assert_eq!(d.executable, dir.join("run.sh"));
        assert_eq!(d.worker_path, Some(dir.join("3.13/worker.py")));
        assert_eq!(d.arguments, ["-X", "no_debug_ranges"]);
        assert_eq!(d.worker_arguments, ["--verbose"]);
        std::fs::write(
            &path,
            r#"{"description":{"defaultExecutablePath":"python3"}}"#,
        )
        .expect("write");
        let bare = WorkerDescription::load(&path, &env).expect("valid");
        assert_eq!(bare.executable, PathBuf::from("python3"));
        assert_eq!(bare.worker_path, None);
        std::fs::write(&path, "{}").expect("write");
        assert!(matches!(
            WorkerDescription::load(&path, &env),
            Err(WorkerConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
