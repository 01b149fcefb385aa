//! `--ready-file PATH`: Sluice's state for a supervising process, as one JSON document
//! rewritten (atomically: a sibling file renamed over it) whenever it changes. A test
//! harness, a container entrypoint or a load script reads the bound addresses and the
//! workers from it instead of parsing log lines:
//!
//! ```json
//! {"pid": 4242, "listen": "127.0.0.1:7071", "admin": "127.0.0.1:9091",
//!  "draining": false, "workers_started": 2, "placeholders_started": 0,
//!  "workers": [{"id": "…", "pid": 4250}]}
//! ```
//!
//! `workers` are the workers in the pool now; `workers_started` counts every worker that
//! became ready since Sluice started, restarts included, and `placeholders_started` every
//! placeholder worker initialised (`--placeholder`). The file appears once both listeners
//! are bound. A failed write is logged, never fatal: the file is a report, not a part of
//! serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use tracing::warn;

#[derive(Serialize, Default)]
struct State {
    pid: u32,
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    draining: bool,
    workers_started: u64,
    placeholders_started: u64,
    workers: Vec<Worker>,
}

#[derive(Serialize)]
struct Worker {
    id: String,
    pid: u32,
}

/// The ready file, or nothing when `--ready-file` is not given (every call a no-op).
pub struct ReadyFile {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl ReadyFile {
    pub fn new(path: Option<PathBuf>) -> ReadyFile {
        ReadyFile {
            path,
            state: Mutex::new(State {
                pid: std::process::id(),
                ..State::default()
            }),
        }
    }

    /// Both listeners are bound: the file's first version.
    pub fn listening(&self, listen: SocketAddr, admin: SocketAddr) {
        self.update(|s| {
            s.listen = Some(listen);
            s.admin = Some(admin);
        });
    }

    /// A placeholder worker is initialised and waits for its app.
    pub fn placeholder_ready(&self) {
        self.update(|s| s.placeholders_started += 1);
    }

    /// A worker joined the pool.
    pub fn worker_ready(&self, id: &str, pid: u32) {
        self.update(|s| {
            s.workers.push(Worker {
                id: id.to_owned(),
                pid,
            });
            s.workers_started += 1;
        });
    }

    /// A worker left the pool (exited, recycled, retired).
    pub fn worker_gone(&self, id: &str) {
        self.update(|s| s.workers.retain(|w| w.id != id));
    }

    pub fn draining(&self) {
        self.update(|s| s.draining = true);
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let Some(path) = &self.path else { return };
        // Written under the lock, so versions reach the file in order.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
        if state.listen.is_none() {
            return; // not before the addresses are known
        }
        let json = serde_json::to_vec(&*state).expect("the state serialises");
        let mut partial = path.clone().into_os_string();
        partial.push(".partial");
        let written = std::fs::write(&partial, json).and_then(|()| std::fs::rename(&partial, path));
        if let Err(error) = written {
            warn!(path = %path.display(), %error, "cannot write the ready file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &std::path::Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn written_once_listening_and_follows_the_workers() {
        let dir = std::env::temp_dir().join(format!("sluice-ready-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ready.json");
        let file = ReadyFile::new(Some(path.clone()));
        file.placeholder_ready();
        assert!(!path.exists(), "nothing before the addresses are known");
        file.listening(
            "127.0.0.1:7071".parse().unwrap(),
            "127.0.0.1:9091".parse().unwrap(),
        );
        let v = read(&path);
        assert_eq!(v["listen"], "127.0.0.1:7071");
        assert_eq!(v["admin"], "127.0.0.1:9091");
        assert_eq!(v["placeholders_started"], 1);
        assert_eq!(v["workers_started"], 0);
        file.worker_ready("a", 10);
        file.worker_ready("b", 11);
        file.worker_gone("a");
        file.draining();
        let v = read(&path);
        assert_eq!(v["workers_started"], 2);
        assert_eq!(v["workers"].as_array().unwrap().len(), 1);
        assert_eq!(v["workers"][0]["id"], "b");
        assert_eq!(v["workers"][0]["pid"], 11);
        assert_eq!(v["draining"], true);
        assert_eq!(v["pid"], std::process::id());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_a_path_nothing_is_written() {
        let file = ReadyFile::new(None);
        file.listening(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        file.worker_ready("a", 1);
        assert_eq!(file.state.lock().unwrap().workers_started, 0);
    }
}
