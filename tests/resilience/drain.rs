//! SIGTERM: in-flight requests drain, new connections are turned away, a second signal
//! exits at once, and the grace period caps the wait. SIGKILL: the workers run nothing more
//! than what had started.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::ensure;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::common::{Extras, LOG_DEADLINE, Options, Sluice, TempDir, client};
use crate::support::*;

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

#[tokio::test]
async fn sigterm_while_the_workers_start_exits_zero_and_stops_them() -> anyhow::Result<()> {
    // A container stopped during a slow cold start: Sluice handles the signal at once
    // (exit 0, not killed by it) and takes the half-started worker with it.
    let mut sluice = Sluice::spawn_with(Options::new(app("slow_start")), &Extras::default())?;
    sluice.wait_until_listening(LOG_DEADLINE).await?;
    let sluice_pid = sluice.pid()?;
    let mut starting = HashSet::new();
    wait_until("a worker process started", LOG_DEADLINE, || {
        starting = children_of(sluice_pid);
        !starting.is_empty()
    })
    .await?;
    ensure!(
        sluice.ready_state()?.is_some_and(|s| s.workers.is_empty()),
        "the worker was ready before the signal; the app should import for 3 s"
    );
    sluice.signal("TERM")?;
    let status = sluice.wait_for_exit(Duration::from_secs(5)).await?;
    ensure!(
        status.success(),
        "exited {status} on SIGTERM during start-up\n{}",
        sluice.output_tail()
    );
    assert_workers_gone(&starting).await
}

#[tokio::test]
async fn sigterm_while_a_request_waits_for_the_first_worker_still_answers_it() -> anyhow::Result<()>
{
    // The drain lets requests in flight finish, including one that waits for the worker
    // still starting: the start goes on through the drain and the request gets its answer.
    let mut sluice = Sluice::spawn_with(Options::new(app("slow_start")), &Extras::default())?;
    sluice.wait_until_listening(LOG_DEADLINE).await?;
    let request = tokio::spawn({
        let (client, url) = (client(), sluice.url("/api/hello"));
        async move { fetch(&client, &url).await }
    });
    wait_for_in_flight(&sluice, 1, "the request waiting for a worker", LOG_DEADLINE).await?;
    ensure!(
        sluice.ready_state()?.is_some_and(|s| s.workers.is_empty()),
        "the worker was ready before the signal; the app should import for 3 s"
    );
    sluice.signal("TERM")?;
    let reply = request.await?;
    ensure!(
        matches!(&reply, Reply::Status(status, body) if status.is_success() && body == "ready now"),
        "the waiting request got {reply:?}\n{}",
        sluice.output_tail()
    );
    let status = sluice.wait_for_exit(Duration::from_secs(10)).await?;
    ensure!(status.success(), "exited {status}");
    Ok(())
}

#[tokio::test]
async fn sigterm_while_the_worker_environment_installs_exits_zero_and_stops_pip()
-> anyhow::Result<()> {
    // An empty cache: Sluice first installs the worker's environment with pip. A signal
    // then stops the install, leaves no environment that looks built (only the temporary
    // directory, removed by the next start), and Sluice exits 0 without serving.
    let cache = TempDir::new("sluice-cache")?;
    let extras = Extras::default().env("SLUICE_CACHE_DIR", cache.path().to_string_lossy());
    let mut sluice = Sluice::spawn_with(Options::new(app("faults")), &extras)?;
    let sluice_pid = sluice.pid()?;
    let mut installers = HashSet::new();
    wait_until("pip running", LOG_DEADLINE, || {
        installers = children_of(sluice_pid)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("pip"))
            })
            .collect();
        !installers.is_empty()
    })
    .await?;
    sluice.signal("TERM")?;
    let status = sluice.wait_for_exit(Duration::from_secs(5)).await?;
    ensure!(
        status.success(),
        "exited {status} on SIGTERM during the install\n{}",
        sluice.output_tail()
    );
    ensure!(
        sluice.ready_state()?.is_none(),
        "nothing was served, so no ready file"
    );
    for entry in std::fs::read_dir(cache.path())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        ensure!(
            !entry.file_type()?.is_dir() || name.contains(".tmp-"),
            "{name}: an interrupted install left an environment in place"
        );
    }
    assert_workers_gone(&installers).await
}

#[tokio::test]
async fn sync_invocations_still_queued_when_the_host_is_killed_never_run() -> anyhow::Result<()> {
    let dir = TempDir::new("marks")?;
    let marks = dir.path().join("marks");
    let extras = Extras::default()
        .env("FAULTS_MARKS", marks.display().to_string())
        .env("PYTHON_THREADPOOL_THREAD_COUNT", "1");
    let sluice = Sluice::start_with(Options::new(app("faults")), &extras).await?;
    let host = sluice.pid()?;
    let workers = children_of(host);
    // One pool thread: the first call holds it for 2 s, the other two wait in its queue.
    let mut calls = JoinSet::new();
    for id in 0..3 {
        let url = sluice.url(&format!("/api/mark?id={id}&s=2"));
        calls.spawn(async move { client().get(url).send().await });
    }
    wait_for_in_flight(&sluice, 3, "three calls in flight", LOG_DEADLINE).await?;
    wait_until("the first call started", LOG_DEADLINE, || {
        std::fs::read_to_string(&marks).is_ok_and(|started| started.lines().count() == 1)
    })
    .await?;
    sluice.signal("KILL")?;
    // The worker sees its stream end and exits once the running call is done.
    assert_workers_gone_within(&workers, Duration::from_secs(20)).await?;
    let started = std::fs::read_to_string(&marks)?;
    ensure!(
        started.lines().count() == 1,
        "calls that had not started ran after the host was killed: {started:?}"
    );
    calls.abort_all();
    Ok(())
}

/// The pids of `parent`'s direct children.
fn children_of(parent: u32) -> HashSet<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return HashSet::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}
