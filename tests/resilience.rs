//! Fault-injection tests: the real `sluice` binary with real Python workers, under killed
//! workers, apps that cannot import, host.json throttles and timeouts, and SIGTERM.
//!
//! The fixture apps live in `tests/apps/<name>/`. Workers are killed only by a pid that a function
//! reported (`os.getpid()`), and only after checking that the pid descends from this test's Sluice.
//! Every wait has a deadline; load loops are bounded in time and stop by themselves.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{
    Extras, LOG_DEADLINE, Options, STARTUP_DEADLINE, Sluice, TempDir, client, is_descendant_of,
    process_running, send_signal,
};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

/// A request that has no answer after this long counts as hung.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// Poll interval inside deadline loops.
const POLL: Duration = Duration::from_millis(20);

/// What `slow` logs when it begins: `slow-start id=<request id> pid=<worker pid>`.
const SLOW_START: &str = "slow-start id=";

const EXITED: &str = "worker exited";

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// Requests and load loops
// ---------------------------------------------------------------------------------------------

/// What one request got.
#[derive(Debug, Clone)]
enum Reply {
    Status(StatusCode, String),
    /// A transport error, or no answer within [`REQUEST_DEADLINE`].
    Broken(String),
}

/// One request made by a load loop.
#[derive(Debug, Clone)]
struct Outcome {
    id: String,
    start: Instant,
    end: Instant,
    reply: Reply,
}

impl Outcome {
    fn status(&self) -> Option<StatusCode> {
        match &self.reply {
            Reply::Status(status, _) => Some(*status),
            Reply::Broken(_) => None,
        }
    }

    fn succeeded(&self) -> bool {
        self.status() == Some(StatusCode::OK)
    }

    /// The worker pid a successful `slow` or `pid` call reported.
    fn pid(&self) -> Option<u32> {
        match &self.reply {
            Reply::Status(StatusCode::OK, body) => body.trim().parse().ok(),
            _ => None,
        }
    }

    /// Whether the request was open at some moment of `[from, to]`.
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end >= from
    }
}

/// GETs `url` with a deadline; never fails, the reply says what happened.
async fn fetch(client: &reqwest::Client, url: &str) -> Reply {
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
enum Call {
    /// `/api/slow?s=SECONDS` (in the `faults` app).
    Slow(f64),
    /// `/api/pid`, with a short pause between calls to keep two cores usable.
    Pid,
}

impl Call {
    fn path(self, id: &str) -> String {
        match self {
            Call::Slow(seconds) => format!("/api/slow?s={seconds}&id={id}"),
            Call::Pid => format!("/api/pid?id={id}"),
        }
    }

    fn pause(self) -> Duration {
        match self {
            Call::Slow(_) => Duration::ZERO,
            Call::Pid => Duration::from_millis(10),
        }
    }
}

#[derive(Default)]
struct LoadState {
    /// Request id → start, for requests sent and not yet answered.
    in_flight: HashMap<String, Instant>,
    done: Vec<Outcome>,
}

/// Client loops, one per [`Call`], running until stopped or a hard deadline.
struct Load {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<LoadState>>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(sluice: &Sluice, calls: &[Call], hard_deadline: Duration) -> Load {
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

    fn in_flight(&self) -> HashMap<String, Instant> {
        self.state.lock().unwrap().in_flight.clone()
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.state.lock().unwrap().done.clone()
    }

    /// Waits (20 s at most) until `n` requests started after `since` have completed.
    async fn until_completed_since(&self, since: Instant, n: usize) -> anyhow::Result<()> {
        wait_until(
            &format!("{n} requests started after {since:?} completed"),
            Duration::from_secs(20),
            || self.outcomes().iter().filter(|o| o.start > since).count() >= n,
        )
        .await
    }

    /// Stops the loops and returns every outcome (bounded: each request has a deadline).
    async fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut self.state.lock().unwrap().done)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading Sluice's output, waiting, killing
// ---------------------------------------------------------------------------------------------

fn count(sluice: &Sluice, needle: &str) -> usize {
    sluice.output_lines_containing(needle).len()
}

/// Waits until at least `n` output lines contain `needle`; returns when that was seen.
async fn wait_for_count(
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
async fn wait_until(
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

/// Request id → worker pid, for every `slow` call logged so far.
fn slow_starts(sluice: &Sluice) -> HashMap<String, u32> {
    sluice
        .output_lines_containing(SLOW_START)
        .iter()
        .filter_map(|line| parse_slow_start(line))
        .collect()
}

/// Parses `… slow-start id=c1-7 pid=1234 …` (the id may be followed by quotes or a space).
fn parse_slow_start(line: &str) -> Option<(String, u32)> {
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
fn kill_worker(sluice: &Sluice, pid: u32) -> anyhow::Result<()> {
    let sluice_pid = sluice.pid()?;
    ensure!(
        is_descendant_of(pid, sluice_pid),
        "pid {pid} is not a live descendant of sluice ({sluice_pid}); not killing it"
    );
    send_signal(pid, "KILL")
}

/// Waits (bounded) for the given worker pids to be gone after Sluice exited; kills leftovers
/// (they are workers a function reported) and fails, since Sluice must not leak its workers.
async fn assert_workers_gone(pids: &HashSet<u32>) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(5);
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
async fn concurrent_gets(sluice: &Sluice, path: &str, n: usize) -> Vec<(Reply, Duration)> {
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
async fn all_succeed(sluice: &Sluice, path: &str, n: usize) -> anyhow::Result<HashSet<u32>> {
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
async fn new_connection_is_turned_away(addr: std::net::SocketAddr) -> anyhow::Result<String> {
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn kill_worker_mid_request_only_fails_its_in_flight_requests() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("faults")).workers(2)).await?;
    let calls = [
        Call::Slow(2.0),
        Call::Slow(2.0),
        Call::Slow(2.0),
        Call::Slow(2.0),
        Call::Slow(2.0),
        Call::Slow(2.0),
        Call::Pid,
        Call::Pid,
    ];
    let load = Load::start(&sluice, &calls, Duration::from_secs(60));

    // Pick a victim once both workers run slow calls and one has a fresh slow call in flight
    // (started < 1 s ago, so it cannot finish on its own before the kill).
    let (victim, survivor, victim_in_flight) = {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let started = slow_starts(&sluice);
            let in_flight = load.in_flight();
            let mut fresh: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for (id, pid) in &started {
                if in_flight
                    .get(id)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                {
                    fresh.entry(*pid).or_default().push(id.clone());
                }
            }
            let pids: HashSet<u32> = started.values().copied().collect();
            if pids.len() == 2
                && let Some((victim, ids)) = fresh.into_iter().max_by_key(|(_, ids)| ids.len())
            {
                let survivor = *pids.iter().find(|p| **p != victim).expect("two pids");
                break (victim, survivor, ids);
            }
            ensure!(
                Instant::now() < until,
                "no worker had a fresh slow call in flight (workers seen: {pids:?})\n{}",
                sluice.output_tail()
            );
            sleep(POLL).await;
        }
    };

    let killed_at = Instant::now();
    kill_worker(&sluice, victim)?;
    let exit_seen = wait_for_count(&sluice, EXITED, 1, LOG_DEADLINE).await?;
    let recovered_at = sluice.wait_workers_started(3, LOG_DEADLINE).await?;
    // Keep the load on the restarted pool until a few more slow calls have completed.
    load.until_completed_since(recovered_at, 10).await?;
    let outcomes = load.finish().await;
    let started = slow_starts(&sluice);

    let broken: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o.reply, Reply::Broken(_)))
        .collect();
    ensure!(
        broken.is_empty(),
        "requests without an HTTP answer: {broken:#?}"
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.succeeded()).collect();
    for o in &failed {
        let status = o.status().expect("no broken replies");
        ensure!(
            status.is_server_error(),
            "{} failed with {status}, not 5xx",
            o.id
        );
        ensure!(
            started.get(&o.id).is_none_or(|pid| *pid == victim),
            "{} failed ({status}) although it ran on the surviving worker {}",
            o.id,
            started[&o.id]
        );
        ensure!(
            o.overlaps(killed_at, exit_seen),
            "{} failed ({status}) but was not open between the kill and the exit being logged",
            o.id
        );
    }
    // The victim's in-flight calls all fail, at once (well before their 2 s sleep would end).
    for id in &victim_in_flight {
        let o = outcomes
            .iter()
            .find(|o| &o.id == id)
            .context("an in-flight request has no outcome")?;
        ensure!(
            !o.succeeded(),
            "{id} was in flight on the killed worker but succeeded"
        );
        ensure!(
            o.end.duration_since(killed_at) < Duration::from_secs(1),
            "{id} on the killed worker took {:?} after the kill to fail",
            o.end.duration_since(killed_at)
        );
    }
    let open_at_kill = outcomes
        .iter()
        .filter(|o| o.overlaps(killed_at, exit_seen))
        .count();
    ensure!(
        failed.len() <= open_at_kill,
        "{} failures but only {open_at_kill} requests were open around the kill",
        failed.len()
    );
    // The survivor never failed, and everything after the restart succeeded.
    let late_failures: Vec<_> = outcomes
        .iter()
        .filter(|o| o.start >= recovered_at && !o.succeeded())
        .collect();
    ensure!(
        late_failures.is_empty(),
        "failures after the new worker was ready: {late_failures:#?}"
    );
    let pids = all_succeed(&sluice, "/api/slow?s=0.5&id=after", 8).await?;
    ensure!(
        !pids.contains(&victim),
        "the killed worker {victim} still answers"
    );
    eprintln!(
        "killed {victim} (survivor {survivor}) with {} slow calls in flight on it; {} of {} requests failed; pids after: {pids:?}",
        victim_in_flight.len(),
        failed.len(),
        outcomes.len()
    );
    Ok(())
}

/// The `faults` app with its later imports (the second worker, restarts) made `later`:
/// `slow:<seconds>` or `fail`. The marker directory must outlive the test's Sluice.
fn faults_with_later_imports(later: &str) -> anyhow::Result<(Extras, TempDir)> {
    let marker = TempDir::new("sluice-faults")?;
    let extras = Extras::default()
        .env(
            "FAULTS_MARKER",
            marker.path().join("imported").display().to_string(),
        )
        .env("FAULTS_LATER_IMPORTS", later);
    Ok((extras, marker))
}

#[tokio::test]
async fn requests_wait_for_a_coming_worker_when_the_only_ready_one_dies() -> anyhow::Result<()> {
    // The second worker takes 6 s to import: the first is the only ready one for that long.
    let (extras, _marker) = faults_with_later_imports("slow:6")?;
    let mut sluice = Sluice::spawn_with(Options::new(app("faults")).workers(2), &extras)?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    sluice.wait_workers_started(1, STARTUP_DEADLINE).await?;
    let calls = [Call::Slow(0.05); 32];
    let load = Load::start(&sluice, &calls, Duration::from_secs(60));
    wait_until("20 requests served", Duration::from_secs(10), || {
        load.outcomes().iter().filter(|o| o.succeeded()).count() >= 20
    })
    .await?;
    let victim = load
        .outcomes()
        .iter()
        .find_map(Outcome::pid)
        .context("no pid reported")?;
    ensure!(
        sluice.ready_state()?.map(|s| s.workers_started) == Some(1),
        "the second worker was ready before the kill: the test needs it still starting\n{}",
        sluice.output_tail()
    );
    let killed_at = Instant::now();
    kill_worker(&sluice, victim)?;
    let exit_seen = wait_for_count(&sluice, EXITED, 1, LOG_DEADLINE).await?;
    let recovered_at = sluice
        .wait_workers_started(2, Duration::from_secs(30))
        .await?;
    load.until_completed_since(recovered_at, 100).await?;
    let outcomes = load.finish().await;
    let started = slow_starts(&sluice);

    // Only the killed worker's in-flight requests fail (502: their worker is gone).
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.succeeded()).collect();
    for o in &failed {
        ensure!(
            o.status() == Some(StatusCode::BAD_GATEWAY)
                // (A call the worker had not logged yet when it died has no line.)
                && started.get(&o.id).is_none_or(|pid| *pid == victim)
                && o.overlaps(killed_at, exit_seen),
            "{} failed but was not in flight on the killed worker: {o:?}",
            o.id
        );
    }
    ensure!(
        failed.len() <= calls.len(),
        "{} failures with {} clients",
        failed.len(),
        calls.len()
    );
    // Requests that arrived with no worker ready waited for one (seconds) and succeeded.
    let waited: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.start > killed_at && o.start < recovered_at && o.succeeded())
        .collect();
    let longest = waited.iter().map(|o| o.end.duration_since(o.start)).max();
    ensure!(
        longest.is_some_and(|d| d > Duration::from_secs(1)),
        "no request waited for the coming worker: {waited:#?}"
    );
    eprintln!(
        "{} requests; {} failed (in flight on the killed worker); {} arrived with no worker ready and waited {longest:?} at most",
        outcomes.len(),
        failed.len(),
        waited.len(),
    );
    Ok(())
}

#[tokio::test]
async fn waiting_requests_get_503_with_a_reason_once_every_slot_gave_up() -> anyhow::Result<()> {
    // Restarts fail to import: after the kill the only slot crash-loops and gives up.
    let (extras, _marker) = faults_with_later_imports("fail")?;
    let mut sluice = Sluice::spawn_with(Options::new(app("faults")), &extras)?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    sluice.wait_workers_started(1, STARTUP_DEADLINE).await?;
    let http = client();
    let victim = match fetch(&http, &sluice.url("/api/pid")).await {
        Reply::Status(StatusCode::OK, body) => body.trim().parse::<u32>()?,
        other => bail!("before the kill: {other:?}"),
    };
    kill_worker(&sluice, victim)?;
    wait_for_count(&sluice, EXITED, 1, LOG_DEADLINE).await?;
    // Sent with no worker ready while the slot still tries: it waits, then gets the reason.
    let started = Instant::now();
    let response = timeout(
        Duration::from_secs(90),
        http.get(sluice.url("/api/pid")).send(),
    )
    .await
    .context("no answer within 90 s")??;
    let waited = started.elapsed();
    let status = response.status();
    let body = response.text().await?;
    ensure!(
        status == StatusCode::SERVICE_UNAVAILABLE && body.contains("every worker slot has stopped"),
        "{status} {body:?}\n{}",
        sluice.output_tail()
    );
    ensure!(
        count(&sluice, "worker failed to start") >= 2,
        "answered before the slot had retried\n{}",
        sluice.output_tail()
    );
    // With no slot left Sluice exits non-zero (for its supervisor to restart it).
    let until = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = sluice.try_exit_status()? {
            break status;
        }
        ensure!(
            Instant::now() < until,
            "sluice still running after every slot stopped"
        );
        sleep(POLL).await;
    };
    ensure!(!exit.success(), "exit {exit}");
    eprintln!("the waiting request got 503 after {waited:?}: {body}");
    Ok(())
}

#[tokio::test]
async fn crash_looping_app_backs_off_and_keeps_answering() -> anyhow::Result<()> {
    const FAILED: &str = "worker failed to start";
    let mut sluice = Sluice::spawn_with(Options::new(app("import_error")), &Extras::default())?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    wait_for_count(&sluice, FAILED, 1, STARTUP_DEADLINE).await?;
    sluice.wait_for_output("marker-imp-7", LOG_DEADLINE).await?;

    // Until Sluice gives up: `/` answers 200, a function URL 503 quickly; note when each
    // failed start is logged.
    let client = client();
    let mut failure_times = vec![Instant::now()];
    let mut checks = 0;
    let mut next_check = Instant::now();
    let give_up = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = sluice.try_exit_status()? {
            break status;
        }
        ensure!(
            Instant::now() < give_up,
            "sluice still running 90 s after the first failed start\n{}",
            sluice.output_tail()
        );
        while count(&sluice, FAILED) > failure_times.len() {
            failure_times.push(Instant::now());
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(500);
            let home = fetch(&client, &sluice.url("/")).await;
            let started = Instant::now();
            let function = fetch(&client, &sluice.url("/api/hello")).await;
            let elapsed = started.elapsed();
            if sluice.try_exit_status()?.is_some() {
                continue; // exited while we asked: connection errors are expected
            }
            // Giving up, Sluice closes its listeners a moment before its process exits.
            if matches!(home, Reply::Broken(_)) || matches!(function, Reply::Broken(_)) {
                let deadline = Instant::now() + Duration::from_secs(5);
                while sluice.try_exit_status()?.is_none() && Instant::now() < deadline {
                    sleep(POLL).await;
                }
                if sluice.try_exit_status()?.is_some() {
                    continue;
                }
            }
            match home {
                Reply::Status(StatusCode::OK, _) => {}
                other => bail!("GET / in degraded mode: {other:?}"),
            }
            match function {
                Reply::Status(StatusCode::SERVICE_UNAVAILABLE, body) => {
                    ensure!(
                        !body.trim().is_empty() && body.len() < 1024,
                        "503 body should be a short reason: {body:?}"
                    );
                }
                other => bail!("GET /api/hello in degraded mode: {other:?}"),
            }
            ensure!(
                elapsed < Duration::from_secs(2),
                "503 took {elapsed:?} in degraded mode"
            );
            checks += 1;
        }
        sleep(POLL).await;
    };
    while count(&sluice, FAILED) > failure_times.len() {
        failure_times.push(Instant::now());
    }

    ensure!(!status.success(), "sluice gave up but exited with {status}");
    ensure!(
        checks >= 3,
        "only {checks} degraded-mode checks before exit"
    );
    // Backoff: never more than 5 failed starts within 5 s, and the delays grow.
    for (i, t) in failure_times.iter().enumerate() {
        let within = failure_times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(5))
            .count();
        ensure!(
            within <= 5,
            "{within} failed starts within 5 s: a tight loop"
        );
    }
    let gaps: Vec<Duration> = failure_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect();
    eprintln!(
        "{} failed starts, gaps {gaps:?}, exit {status}",
        failure_times.len()
    );
    ensure!(
        gaps.len() >= 2,
        "only {} failed starts before giving up",
        failure_times.len()
    );
    ensure!(
        gaps[gaps.len() - 1] >= gaps[0] + Duration::from_secs(1),
        "restart delays do not grow: {gaps:?}"
    );
    Ok(())
}

#[tokio::test]
async fn throttles_return_429_with_scaleout_header_exactly() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("throttled"))).await?;
    let client = client();
    let url = sluice.url("/api/slow?s=2");

    // 10 at once; the 6 refused come back at once, the 4 admitted after 2 s (2 run, 2 queue).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let answer = match timeout(REQUEST_DEADLINE, client.get(&url).send()).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let scaleout = response
                        .headers()
                        .get("x-function-scaleout")
                        .map(|v| v.to_str().unwrap_or("?").to_owned());
                    let body = response.bytes().await.map(|b| b.len());
                    Ok((status, scaleout, body.map_err(|e| e.to_string())))
                }
                Ok(Err(error)) => Err(format!("{error:?}")),
                Err(_) => Err("no answer".to_owned()),
            };
            let _ = tx.send((answer, start.elapsed()));
        });
    }
    drop(tx);

    let mut answers = Vec::new();
    // While outstanding is at its cap: the first 6 answers arrive, `/` is not throttled.
    while answers.len() < 6 {
        match timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(answer)) => answers.push(answer),
            _ => bail!("only {} answers within 5 s: {answers:?}", answers.len()),
        }
    }
    let home = fetch(&client, &sluice.url("/")).await;
    ensure!(
        matches!(home, Reply::Status(StatusCode::OK, _)),
        "GET / while throttled: {home:?}"
    );
    while let Some(answer) = timeout(REQUEST_DEADLINE, rx.recv()).await? {
        answers.push(answer);
    }

    let mut ok = 0;
    let mut throttled = 0;
    for (answer, elapsed) in &answers {
        let (status, scaleout, body) = answer
            .as_ref()
            .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
        match *status {
            StatusCode::OK => {
                ok += 1;
                ensure!(
                    *elapsed >= Duration::from_millis(1900),
                    "a 200 came after {elapsed:?}, before the 2 s sleep"
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                ensure!(
                    scaleout.as_deref() == Some("1"),
                    "429 with X-FUNCTION-SCALEOUT {scaleout:?}"
                );
                ensure!(body.as_ref() == Ok(&0), "429 with body {body:?}");
                ensure!(
                    *elapsed < Duration::from_secs(1),
                    "a 429 took {elapsed:?}: it must be immediate"
                );
            }
            other => bail!("unexpected status {other}"),
        }
    }
    ensure!(
        (ok, throttled) == (4, 6),
        "expected 4×200 and 6×429, got {ok}×200 and {throttled}×429: {answers:?}"
    );
    // Once they are done the function is admitted again.
    let after = fetch(&client, &sluice.url("/api/slow?s=0")).await;
    ensure!(
        matches!(after, Reply::Status(StatusCode::OK, _)),
        "after the burst: {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn max_concurrent_queues_without_rejecting() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("queued"))).await?;
    let started = Instant::now();
    let answers = concurrent_gets(&sluice, "/api/slow?s=1", 6).await;
    let total = started.elapsed();

    let mut elapsed = Vec::new();
    for (reply, took) in &answers {
        ensure!(
            matches!(reply, Reply::Status(StatusCode::OK, _)),
            "a queued request got {reply:?}"
        );
        elapsed.push(*took);
    }
    elapsed.sort();
    eprintln!("6 requests with maxConcurrentRequests=2: total {total:?}, each {elapsed:?}");
    ensure!(
        total >= Duration::from_millis(2800),
        "6 one-second calls, 2 at a time, took only {total:?} (want 3 waves)"
    );
    ensure!(
        total < Duration::from_secs(10),
        "6 one-second calls took {total:?}"
    );
    ensure!(
        elapsed[1] < Duration::from_millis(1800),
        "the first wave took {:?}",
        elapsed[1]
    );
    Ok(())
}

#[tokio::test]
async fn function_timeout_answers_500_and_recycles_the_worker() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("timeout")).workers(2)).await?;
    let client = client();
    let url = sluice.url("/api/sleepy?s=10");
    let sleeper = tokio::spawn({
        let client = client.clone();
        async move {
            let start = Instant::now();
            (fetch(&client, &url).await, start.elapsed())
        }
    });

    // The fast function keeps answering while the sleeper runs.
    for _ in 0..5 {
        let start = Instant::now();
        let reply = fetch(&client, &sluice.url("/api/pid")).await;
        ensure!(
            matches!(reply, Reply::Status(StatusCode::OK, _)),
            "fast call during the long one: {reply:?}"
        );
        ensure!(
            start.elapsed() < Duration::from_secs(1),
            "fast call took {:?}",
            start.elapsed()
        );
    }

    let (reply, elapsed) = sleeper.await?;
    ensure!(
        matches!(reply, Reply::Status(StatusCode::INTERNAL_SERVER_ERROR, _)),
        "a call past functionTimeout got {reply:?}"
    );
    ensure!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(3),
        "the timeout answer came after {elapsed:?} (timeout 2 s, allowed up to 3 s)"
    );
    // The other worker serves while the stuck one is replaced.
    let reply = fetch(&client, &sluice.url("/api/pid")).await;
    ensure!(
        matches!(reply, Reply::Status(StatusCode::OK, _)),
        "fast call right after the timeout: {reply:?}"
    );

    wait_for_count(&sluice, "worker recycled", 1, LOG_DEADLINE).await?;
    sluice.wait_workers_started(3, LOG_DEADLINE).await?;
    all_succeed(&sluice, "/api/pid", 4).await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() -> anyhow::Result<()> {
    const GRACE: Duration = Duration::from_secs(10);
    let extras = Extras::default()
        .arg("--drain-grace")
        .arg(GRACE.as_secs().to_string());
    let mut sluice = Sluice::start_with(Options::new(app("faults")), &extras).await?;
    let client = client();
    let ids: Vec<String> = (0..5).map(|i| format!("drain-{i}")).collect();
    let mut requests = JoinSet::new();
    for id in &ids {
        let (client, url) = (client.clone(), sluice.url(&Call::Slow(2.0).path(id)));
        requests.spawn(async move { fetch(&client, &url).await });
    }
    // All five are running in the worker before the signal.
    wait_until("all 5 slow calls started", LOG_DEADLINE, || {
        let started = slow_starts(&sluice);
        ids.iter().all(|id| started.contains_key(id))
    })
    .await?;
    let workers: HashSet<u32> = slow_starts(&sluice).values().copied().collect();

    let signalled = Instant::now();
    sluice.signal("TERM")?;
    sluice
        .wait_for_state("draining", Duration::from_secs(5), |s| s.draining)
        .await?;
    let turned_away = new_connection_is_turned_away(sluice.addr()).await?;

    let replies = requests.join_all().await;
    for reply in &replies {
        ensure!(
            matches!(reply, Reply::Status(status, _) if status.is_success()),
            "an in-flight request during drain got {reply:?}\n{}",
            sluice.output_tail()
        );
    }
    let status = sluice
        .wait_for_exit(GRACE.saturating_sub(signalled.elapsed()) + Duration::from_secs(2))
        .await?;
    eprintln!(
        "drain: new connection {turned_away}; exited {status} after {:?}",
        signalled.elapsed()
    );
    ensure!(
        status.success(),
        "sluice exited with {status} after draining"
    );
    ensure!(
        signalled.elapsed() < GRACE,
        "exit took {:?}, longer than the grace period",
        signalled.elapsed()
    );
    assert_workers_gone(&workers).await
}

#[tokio::test]
async fn second_sigterm_exits_at_once() -> anyhow::Result<()> {
    // The grace (30 s, from the environment) is far longer than the test allows.
    let extras = Extras::default().env("SLUICE_DRAIN_GRACE", "30");
    let mut sluice = Sluice::start_with(Options::new(app("faults")), &extras).await?;
    let (client, url) = (client(), sluice.url(&Call::Slow(20.0).path("stuck")));
    let request = tokio::spawn(async move { fetch(&client, &url).await });
    wait_until("the slow call started", LOG_DEADLINE, || {
        slow_starts(&sluice).contains_key("stuck")
    })
    .await?;
    let workers: HashSet<u32> = slow_starts(&sluice).values().copied().collect();

    sluice.signal("TERM")?;
    sluice
        .wait_for_state("draining", Duration::from_secs(5), |s| s.draining)
        .await?;
    let second = Instant::now();
    sluice.signal("TERM")?;
    let status = sluice.wait_for_exit(Duration::from_secs(3)).await?;
    eprintln!(
        "second SIGTERM: exited {status} after {:?}",
        second.elapsed()
    );
    request.abort();
    assert_workers_gone(&workers).await
}

#[tokio::test]
async fn drain_grace_caps_shutdown_when_requests_outlast_it() -> anyhow::Result<()> {
    let extras = Extras::default().env("SLUICE_DRAIN_GRACE", "2");
    let mut sluice = Sluice::start_with(Options::new(app("faults")), &extras).await?;
    let (client, url) = (client(), sluice.url(&Call::Slow(30.0).path("outlasts")));
    let request = tokio::spawn(async move { fetch(&client, &url).await });
    wait_until("the slow call started", LOG_DEADLINE, || {
        slow_starts(&sluice).contains_key("outlasts")
    })
    .await?;
    let workers: HashSet<u32> = slow_starts(&sluice).values().copied().collect();

    let signalled = Instant::now();
    sluice.signal("TERM")?;
    let status = sluice.wait_for_exit(Duration::from_secs(6)).await?;
    let took = signalled.elapsed();
    eprintln!("grace 2 s: exited {status} after {took:?}");
    ensure!(
        took >= Duration::from_millis(1800),
        "exited after {took:?}, before the 2 s grace with a request in flight"
    );
    request.abort();
    assert_workers_gone(&workers).await
}

/// One SIGKILL during the soak.
#[derive(Debug)]
struct Kill {
    pid: u32,
    at: Instant,
    /// When the test saw the matching `worker exited` line.
    exit_seen: Instant,
}

/// Explains a slot that stayed down: Sluice stopped it as crash-looping after kills of
/// workers that had been ready (the contract counts only failed starts).
fn slot_stopped_hint(sluice: &Sluice, kills: usize) -> String {
    if sluice.output_contains("slot stopped") {
        format!(
            "after {kills} kills Sluice stopped a slot although every killed worker had been ready"
        )
    } else {
        format!("after {kills} kills a slot did not come back")
    }
}

#[tokio::test]
async fn soak_under_faults() -> anyhow::Result<()> {
    const WORKERS: usize = 2;
    const KILL_EVERY: Duration = Duration::from_secs(5);
    let duration = Duration::from_secs(
        std::env::var("SLUICE_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let sluice = Sluice::start(Options::new(app("faults")).workers(WORKERS)).await?;
    let calls = [
        Call::Slow(0.5),
        Call::Slow(0.5),
        Call::Slow(0.5),
        Call::Slow(0.5),
        Call::Pid,
        Call::Pid,
        Call::Pid,
        Call::Pid,
    ];
    let began = Instant::now();
    let load = Load::start(&sluice, &calls, duration + Duration::from_secs(60));

    let mut kills: Vec<Kill> = Vec::new();
    let mut first_seen: HashMap<u32, Instant> = HashMap::new();
    let mut next_kill = began + KILL_EVERY;
    while began.elapsed() < duration {
        for o in load.outcomes() {
            if let Some(pid) = o.pid() {
                first_seen.entry(pid).or_insert(o.end);
            }
        }
        if Instant::now() >= next_kill && began.elapsed() + Duration::from_secs(2) < duration {
            // Both slots up again before the next kill, so traffic always has a worker.
            sluice
                .wait_workers_started(WORKERS + kills.len(), LOG_DEADLINE)
                .await
                .with_context(|| slot_stopped_hint(&sluice, kills.len()))?;
            // The longest-serving live worker that answered within the last second: this
            // alternates between the slots.
            let recent: HashSet<u32> = load
                .outcomes()
                .iter()
                .rev()
                .take_while(|o| o.end.elapsed() < Duration::from_secs(1))
                .filter_map(Outcome::pid)
                .collect();
            let victim = recent
                .iter()
                .copied()
                .filter(|p| !kills.iter().any(|k| k.pid == *p) && process_running(*p))
                .min_by_key(|p| first_seen.get(p).copied().unwrap_or_else(Instant::now))
                .with_context(|| format!("no live worker answered recently ({recent:?})"))?;
            let at = Instant::now();
            kill_worker(&sluice, victim)?;
            let exit_seen = wait_for_count(&sluice, EXITED, kills.len() + 1, LOG_DEADLINE).await?;
            kills.push(Kill {
                pid: victim,
                at,
                exit_seen,
            });
            next_kill = at + KILL_EVERY;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let outcomes = load.finish().await;
    let elapsed = began.elapsed();

    // After the storm: every slot back, every request answered.
    sluice
        .wait_workers_started(WORKERS + kills.len(), LOG_DEADLINE)
        .await
        .with_context(|| slot_stopped_hint(&sluice, kills.len()))?;
    all_succeed(&sluice, "/api/pid", 8).await?;

    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.succeeded()).collect();
    let bound: usize = kills
        .iter()
        .map(|k| {
            outcomes
                .iter()
                .filter(|o| o.overlaps(k.at, k.exit_seen))
                .count()
        })
        .sum();
    let rps = outcomes.len() as f64 / elapsed.as_secs_f64();
    println!(
        "soak: duration={:.1}s requests={} rps={rps:.1} kills={} failed={} (bound {bound})",
        elapsed.as_secs_f64(),
        outcomes.len(),
        kills.len(),
        failed.len()
    );
    ensure!(
        !kills.is_empty() || duration < KILL_EVERY,
        "no worker was killed"
    );
    for o in &failed {
        match &o.reply {
            Reply::Status(status, _) if status.is_server_error() => {}
            Reply::Status(status, body) => bail!("{} failed with {status}: {body:?}", o.id),
            Reply::Broken(error) => bail!("{} got no HTTP answer: {error}", o.id),
        }
        ensure!(
            kills.iter().any(|k| o.overlaps(k.at, k.exit_seen)),
            "{} failed ({:?}) outside every kill window",
            o.id,
            o.status()
        );
    }
    ensure!(
        failed.len() <= bound,
        "{} failures exceed the {bound} requests open around the kills",
        failed.len()
    );
    Ok(())
}

#[test]
fn parse_slow_start_reads_plain_and_quoted_lines() {
    let line = "2025-01-01T00:00:00Z INFO worker: function=slow slow-start id=c3-17 pid=4242";
    assert_eq!(parse_slow_start(line), Some(("c3-17".to_owned(), 4242)));
    let quoted = r#"INFO message="slow-start id=drain-0 pid=7" invocation=abc"#;
    assert_eq!(parse_slow_start(quoted), Some(("drain-0".to_owned(), 7)));
    assert_eq!(parse_slow_start("slow-start id= pid=1"), None);
}
