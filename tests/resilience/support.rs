//! What the fault tests share: the fixture apps, requests and load loops, waits on Sluice's
//! output, and killing a worker only after checking it is this test's.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use crate::common::{Sluice, client, is_descendant_of, process_running, send_signal};

/// A request that has no answer after this long counts as hung.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// Poll interval inside deadline loops.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// What `slow` logs when it begins: `slow-start id=<request id> pid=<worker pid>`.
pub(crate) const SLOW_START: &str = "slow-start id=";

pub(crate) const EXITED: &str = "worker exited";

pub(crate) fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// Requests and load loops
// ---------------------------------------------------------------------------------------------

/// What one request got.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Status(StatusCode, String),
    /// A transport error, or no answer within [`REQUEST_DEADLINE`].
    Broken(String),
}

/// One request made by a load loop.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) id: String,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) reply: Reply,
}

impl Outcome {
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match &self.reply {
            Reply::Status(status, _) => Some(*status),
            Reply::Broken(_) => None,
        }
    }

    pub(crate) fn succeeded(&self) -> bool {
        self.status() == Some(StatusCode::OK)
    }

    /// The worker pid a successful `slow` or `pid` call reported.
    pub(crate) fn pid(&self) -> Option<u32> {
        match &self.reply {
            Reply::Status(StatusCode::OK, body) => body.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether the request was open at some moment of `[from, to]`.
    pub(crate) fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end >= from
    }
}

/// GETs `url` with a deadline; never fails, the reply says what happened.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> Reply {
    let request = async {
        let response = client.get(url).send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match timeout(REQUEST_DEADLINE, request).await {
        Ok(Ok((status, body))) => Reply::Status(status, body),
        Ok(Err(error)) => Reply::Broken(format!("{error:?}")),
        Err(_) => Reply::Broken(format!("no answer within {REQUEST_DEADLINE:?}")),
    }
}

/// What a load loop calls, over and over.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    /// `/api/slow?s=SECONDS` (in the `faults` app).
    Slow(f64),
    /// `/api/pid`, with a short pause between calls to keep two cores usable.
    Pid,
}

impl Call {
    pub(crate) fn path(self, id: &str) -> String {
        match self {
            Call::Slow(seconds) => format!("/api/slow?s={seconds}&id={id}"),
            Call::Pid => format!("/api/pid?id={id}"),
        }
    }

    pub(crate) fn pause(self) -> Duration {
        match self {
            Call::Slow(_) => Duration::ZERO,
            Call::Pid => Duration::from_millis(10),
        }
    }
}

#[derive(Default)]
pub(crate) struct LoadState {
    /// Request id → start, for requests sent and not yet answered.
    pub(crate) in_flight: HashMap<String, Instant>,
    pub(crate) done: Vec<Outcome>,
}

/// Client loops, one per [`Call`], running until stopped or a hard deadline.
pub(crate) struct Load {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) state: Arc<Mutex<LoadState>>,
    pub(crate) tasks: JoinSet<()>,
}

impl Load {
    pub(crate) fn start(sluice: &Sluice, calls: &[Call], hard_deadline: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(LoadState::default()));
        let until = Instant::now() + hard_deadline;
        let client = client();
        let mut tasks = JoinSet::new();
        for (index, call) in calls.iter().copied().enumerate() {
            let (client, stop, state) = (client.clone(), stop.clone(), state.clone());
            let base = sluice.base_url();
            tasks.spawn(async move {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let id = format!("c{index}-{seq}");
                    seq += 1;
                    let start = Instant::now();
                    state.lock().unwrap().in_flight.insert(id.clone(), start);
                    let reply = fetch(&client, &format!("{base}{}", call.path(&id))).await;
                    let end = Instant::now();
                    {
                        let mut state = state.lock().unwrap();
                        state.in_flight.remove(&id);
                        state.done.push(Outcome {
                            id,
                            start,
                            end,
                            reply,
                        });
                    }
                    if !call.pause().is_zero() {
                        sleep(call.pause()).await;
                    }
                }
            });
        }
        Load { stop, state, tasks }
    }

    pub(crate) fn in_flight(&self) -> HashMap<String, Instant> {
        self.state.lock().unwrap().in_flight.clone()
    }

    pub(crate) fn outcomes(&self) -> Vec<Outcome> {
        self.state.lock().unwrap().done.clone()
    }

    /// Waits (20 s at most) until `n` requests started after `since` have completed.
    pub(crate) async fn until_completed_since(
        &self,
        since: Instant,
        n: usize,
    ) -> anyhow::Result<()> {
        wait_until(
            &format!("{n} requests started after {since:?} completed"),
            Duration::from_secs(20),
            || self.outcomes().iter().filter(|o| o.start > since).count() >= n,
        )
        .await
    }

    /// Stops the loops and returns every outcome (bounded: each request has a deadline).
    pub(crate) async fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut self.state.lock().unwrap().done)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading Sluice's output, waiting, killing
// ---------------------------------------------------------------------------------------------

pub(crate) fn count(sluice: &Sluice, needle: &str) -> usize {
    sluice.output_lines_containing(needle).len()
}

/// Waits until at least `n` output lines contain `needle`; returns when that was seen.
pub(crate) async fn wait_for_count(
    sluice: &Sluice,
    needle: &str,
    n: usize,
    deadline: Duration,
) -> anyhow::Result<Instant> {
    let until = Instant::now() + deadline;
    loop {
        if count(sluice, needle) >= n {
            return Ok(Instant::now());
        }
        if Instant::now() >= until {
            bail!(
                "{} lines contain {needle:?} after {deadline:?}, wanted {n}\n{}",
                count(sluice, needle),
                sluice.output_tail()
            );
        }
        sleep(POLL).await;
    }
}

/// Polls `condition` until it holds, or fails after `deadline` with `what`.
pub(crate) async fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    while !condition() {
        if Instant::now() >= until {
            bail!("{what}: not the case after {deadline:?}");
        }
        sleep(POLL).await;
    }
    Ok(())
}

/// Polls `/metrics` until the host counts `n` requests in flight, or fails after `deadline`
/// with `what`.
pub(crate) async fn wait_for_in_flight(
    sluice: &Sluice,
    n: usize,
    what: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let want = format!("sluice_requests_in_flight {n}");
    let until = Instant::now() + deadline;
    while !sluice.metrics().await?.lines().any(|line| line == want) {
        if Instant::now() >= until {
            bail!("{what}: not the case after {deadline:?}");
        }
        sleep(POLL).await;
    }
    Ok(())
}

/// Request id → worker pid, for every `slow` call logged so far.
pub(crate) fn slow_starts(sluice: &Sluice) -> HashMap<String, u32> {
    sluice
        .output_lines_containing(SLOW_START)
        .iter()
        .filter_map(|line| parse_slow_start(line))
        .collect()
}

/// Parses `… slow-start id=c1-7 pid=1234 …` (the id may be followed by quotes or a space).
pub(crate) fn parse_slow_start(line: &str) -> Option<(String, u32)> {
    let rest = &line[line.find(SLOW_START)? + SLOW_START.len()..];
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let rest = &rest[rest.find("pid=")? + "pid=".len()..];
    let pid = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    (!id.is_empty()).then_some((id, pid))
}

/// SIGKILLs a worker, after checking that the pid belongs to this test's Sluice.
pub(crate) fn kill_worker(sluice: &Sluice, pid: u32) -> anyhow::Result<()> {
    let sluice_pid = sluice.pid()?;
    ensure!(
        is_descendant_of(pid, sluice_pid),
        "pid {pid} is not a live descendant of sluice ({sluice_pid}); not killing it"
    );
    send_signal(pid, "KILL")
}

/// Waits (bounded) for the given worker pids to be gone after Sluice exited; kills leftovers
/// (they are workers a function reported) and fails, since Sluice must not leak its workers.
pub(crate) async fn assert_workers_gone(pids: &HashSet<u32>) -> anyhow::Result<()> {
    assert_workers_gone_within(pids, Duration::from_secs(5)).await
}

/// As [`assert_workers_gone`], for workers that may first finish what they run.
pub(crate) async fn assert_workers_gone_within(
    pids: &HashSet<u32>,
    deadline: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + deadline;
    let alive = || {
        pids.iter()
            .copied()
            .filter(|p| process_running(*p))
            .collect::<Vec<_>>()
    };
    while !alive().is_empty() && Instant::now() < until {
        sleep(POLL).await;
    }
    let leaked = alive();
    for pid in &leaked {
        let _ = send_signal(*pid, "KILL");
    }
    ensure!(
        leaked.is_empty(),
        "worker processes outlived sluice: {leaked:?}"
    );
    Ok(())
}

/// Requests to `path`, `n` at once; returns each (reply, elapsed).
pub(crate) async fn concurrent_gets(
    sluice: &Sluice,
    path: &str,
    n: usize,
) -> Vec<(Reply, Duration)> {
    let client = client();
    let url = sluice.url(path);
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let start = Instant::now();
            (fetch(&client, &url).await, start.elapsed())
        });
    }
    tasks.join_all().await
}

/// Asserts `n` concurrent requests to `path` all answer 200; returns the pids they reported.
pub(crate) async fn all_succeed(
    sluice: &Sluice,
    path: &str,
    n: usize,
) -> anyhow::Result<HashSet<u32>> {
    let mut pids = HashSet::new();
    for (reply, _) in concurrent_gets(sluice, path, n).await {
        match reply {
            Reply::Status(StatusCode::OK, body) => {
                pids.extend(body.trim().parse::<u32>().ok());
            }
            other => bail!("GET {path}: {other:?}\n{}", sluice.output_tail()),
        }
    }
    Ok(pids)
}

/// Opens a new connection and sends a request: draining Sluice must refuse the connection,
/// close it without answering, or answer with `Connection: close`. Returns what happened.
pub(crate) async fn new_connection_is_turned_away(
    addr: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let mut stream = match timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Err(error)) => return Ok(format!("connect failed: {error}")),
        Err(_) => bail!("connect to {addr} neither succeeded nor failed within 2 s"),
        Ok(Ok(stream)) => stream,
    };
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        return Ok(format!("write failed: {error}"));
    }
    let mut answer = Vec::new();
    match timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await {
        Err(_) => bail!("a connection made while draining stayed open without an answer"),
        Ok(Err(error)) => Ok(format!("connection reset: {error}")),
        Ok(Ok(_)) if answer.is_empty() => Ok("connection closed without an answer".into()),
        Ok(Ok(_)) => {
            let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            let head = text.split("\r\n\r\n").next().unwrap_or("");
            ensure!(
                head.contains("connection: close"),
                "a connection made while draining was served without `Connection: close`:\n{head}"
            );
            Ok("answered with Connection: close".into())
        }
    }
}

#[test]
fn parse_slow_start_reads_plain_and_quoted_lines() {
    let line = "2025-01-01T00:00:00Z INFO worker: function=slow slow-start id=c3-17 pid=4242";
    assert_eq!(parse_slow_start(line), Some(("c3-17".to_owned(), 4242)));
    let quoted = r#"INFO message="slow-start id=drain-0 pid=7" invocation=abc"#;
    assert_eq!(parse_slow_start(quoted), Some(("drain-0".to_owned(), 7)));
    assert_eq!(parse_slow_start("slow-start id= pid=1"), None);
}
