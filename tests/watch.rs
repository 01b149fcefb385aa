//! `sluice serve --watch` end to end: the real binary and real Python workers on a small v2
//! app copied into a temporary directory, edited while a client sends requests without pause.
//! An edit must show up without one failed request; a broken edit must leave the previous
//! code serving and be logged once; the replaced workers must exit.
//!
//! Every wait has a deadline; the client loops stop by themselves after a hard deadline.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{Extras, LOG_DEADLINE, Options, Sluice, TempDir, client, process_running};
use reqwest::StatusCode;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

/// How long an edit may take to be served (debounce + a worker start on a busy machine).
const RELOAD_DEADLINE: Duration = Duration::from_secs(60);
/// A request with no answer after this long counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);
/// The client loops stop by themselves after this long, whatever the test does.
const LOAD_DEADLINE: Duration = Duration::from_secs(240);
const POLL: Duration = Duration::from_millis(20);

const HOST_JSON: &str = r#"{"version": "2.0"}"#;

/// The app's code: `/api/answer` returns `answer`; `extra` adds a second route.
fn app_code(answer: &str, extra: bool) -> String {
    let mut code = format!(
        r#"import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="answer", methods=["GET"])
def answer(req: func.HttpRequest) -> str:
    return "{answer}"
"#
    );
    if extra {
        code.push_str(
            r#"

@app.route(route="added", methods=["GET"])
def added(req: func.HttpRequest) -> str:
    return "added by an edit"
"#,
        );
    }
    code
}

/// A fresh copy of the app with `code` as its function_app.py.
fn write_app(code: &str) -> anyhow::Result<TempDir> {
    let dir = TempDir::new("sluice-watch")?;
    std::fs::write(dir.path().join("host.json"), HOST_JSON)?;
    std::fs::write(dir.path().join("function_app.py"), code)?;
    Ok(dir)
}

/// Replaces function_app.py the way editors that save atomically do (write, then rename),
/// so no worker can ever read a half-written file.
fn edit(app: &Path, code: &str) -> anyhow::Result<()> {
    let tmp = app.join(".function_app.py.saving");
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, app.join("function_app.py")).context("renaming the edit into place")
}

async fn start(app: &Path, workers: usize) -> anyhow::Result<Sluice> {
    Sluice::start_with(
        Options::new(app).workers(workers),
        &Extras::default().arg("--watch"),
    )
    .await
}

/// GET `url`: the status and body, or why there was none.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(StatusCode, String), String> {
    let request = async {
        let response = client.get(url).send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    };
    match timeout(REQUEST_DEADLINE, request).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(format!("{error:?}")),
        Err(_) => Err(format!("no answer within {REQUEST_DEADLINE:?}")),
    }
}

/// Polls `url` until it answers 200 `want` (an edit was picked up); until then every answer
/// must pass `meanwhile`.
async fn wait_for_answer(
    sluice: &Sluice,
    http: &reqwest::Client,
    url: &str,
    want: &str,
    meanwhile: impl Fn(&(StatusCode, String)) -> bool,
) -> anyhow::Result<()> {
    let until = Instant::now() + RELOAD_DEADLINE;
    loop {
        match fetch(http, url).await {
            Ok((StatusCode::OK, body)) if body == want => return Ok(()),
            Ok(reply) if meanwhile(&reply) => {}
            other => bail!("{other:?}\n{}", sluice.output_tail()),
        }
        ensure!(
            Instant::now() < until,
            "{url} did not answer {want:?} within {RELOAD_DEADLINE:?}\n{}",
            sluice.output_tail()
        );
        sleep(POLL).await;
    }
}

/// One request of a client loop.
#[derive(Debug, Clone)]
struct Outcome {
    start: Instant,
    end: Instant,
    reply: Result<(StatusCode, String), String>,
}

impl Outcome {
    fn body(&self) -> Option<&str> {
        match &self.reply {
            Ok((StatusCode::OK, body)) => Some(body),
            _ => None,
        }
    }
}

/// Client loops sending `GET url` back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Outcome>>>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let until = Instant::now() + LOAD_DEADLINE;
        let mut tasks = JoinSet::new();
        for _ in 0..clients {
            let (stop, done, url, client) = (stop.clone(), done.clone(), url.clone(), client());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let start = Instant::now();
                    let reply = fetch(&client, &url).await;
                    let end = Instant::now();
                    done.lock().unwrap().push(Outcome { start, end, reply });
                }
            });
        }
        Load { stop, done, tasks }
    }

    fn outcomes(&self) -> Vec<Outcome> {
        self.done.lock().unwrap().clone()
    }

    /// Waits until some request answered 200 with `body`; returns when it ended.
    async fn wait_for_body(&self, body: &str, sluice: &Sluice) -> anyhow::Result<Instant> {
        let until = Instant::now() + RELOAD_DEADLINE;
        loop {
            if let Some(seen) = self.outcomes().iter().find(|o| o.body() == Some(body)) {
                return Ok(seen.end);
            }
            if Instant::now() >= until {
                bail!(
                    "no response {body:?} within {RELOAD_DEADLINE:?}\n{}",
                    sluice.output_tail()
                );
            }
            sleep(POLL).await;
        }
    }

    /// Waits until `n` more requests have completed.
    async fn wait_for_more(&self, n: usize) -> anyhow::Result<()> {
        let target = self.outcomes().len() + n;
        let until = Instant::now() + REQUEST_DEADLINE * 2;
        while self.outcomes().len() < target {
            ensure!(Instant::now() < until, "the client loops stalled");
            sleep(POLL).await;
        }
        Ok(())
    }

    async fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.done.lock().unwrap())
    }
}

/// Every request answered 200 with one of `bodies`; after the first `new` response,
/// every request that started later got `new` too (the switch is one-way).
fn assert_clean_switch(outcomes: &[Outcome], old: &str, new: &str) -> anyhow::Result<()> {
    ensure!(!outcomes.is_empty(), "the client sent no request");
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o.body(), Some(b) if b == old || b == new))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {} requests failed or got another answer, e.g. {:?}",
        failed.len(),
        outcomes.len(),
        failed.iter().take(3).map(|o| &o.reply).collect::<Vec<_>>()
    );
    let first_new = outcomes
        .iter()
        .filter(|o| o.body() == Some(new))
        .map(|o| o.end)
        .min()
        .context("no request got the new answer")?;
    let stale = outcomes
        .iter()
        .filter(|o| o.start > first_new && o.body() == Some(old))
        .count();
    ensure!(
        stale == 0,
        "{stale} requests got the old answer after the new one was served"
    );
    Ok(())
}

/// The pids of the workers ready now (the ready file's).
fn ready_pids(sluice: &Sluice) -> HashSet<u32> {
    sluice
        .worker_pids()
        .expect("the ready file is written once Sluice has started")
        .into_iter()
        .collect()
}

/// Waits until none of `pids` runs any more.
async fn wait_until_exited(pids: &HashSet<u32>, sluice: &Sluice) -> anyhow::Result<()> {
    let until = Instant::now() + RELOAD_DEADLINE;
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| process_running(*p))
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "replaced workers still run: {alive:?}\n{}",
                sluice.output_tail()
            );
        }
        sleep(POLL).await;
    }
}

/// SIGTERM: Sluice drains and exits 0 in watch mode too.
async fn stop(mut sluice: Sluice) -> anyhow::Result<()> {
    sluice.signal("TERM")?;
    let status = sluice.wait_for_exit(Duration::from_secs(60)).await?;
    ensure!(
        status.success(),
        "sluice exited with {status}\n{}",
        sluice.output_tail()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_under_watch_serves_new_code_with_no_failed_request() -> anyhow::Result<()> {
    const OLD: &str = "answer v1";
    const NEW: &str = "answer v2 after the edit";
    let app = write_app(&app_code(OLD, false))?;
    let sluice = start(app.path(), 2).await?;
    let http = client();
    let (status, body) = fetch(&http, &sluice.url("/api/answer"))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(status == StatusCode::OK && body == OLD, "{status} {body:?}");
    let added = fetch(&http, &sluice.url("/api/added")).await;
    ensure!(matches!(added, Ok((StatusCode::NOT_FOUND, _))), "{added:?}");
    let old_pids = ready_pids(&sluice);
    ensure!(old_pids.len() == 2, "worker pids: {old_pids:?}");

    let load = Load::start(sluice.url("/api/answer"), 3);
    load.wait_for_more(10).await?;
    edit(app.path(), &app_code(NEW, true))?;
    load.wait_for_body(NEW, &sluice).await?;
    // The old workers are retired while the clients keep going.
    wait_until_exited(&old_pids, &sluice).await?;
    load.wait_for_more(10).await?;
    let outcomes = load.finish().await;
    assert_clean_switch(&outcomes, OLD, NEW)?;

    // The functions were indexed again, not only the workers replaced.
    let added = fetch(&http, &sluice.url("/api/added")).await;
    ensure!(
        matches!(&added, Ok((StatusCode::OK, body)) if body == "added by an edit"),
        "{added:?}"
    );
    sluice.wait_for_output("reloaded", LOG_DEADLINE).await?;
    let reloading = sluice.output_lines_containing("reloading");
    ensure!(
        reloading.len() == 1 && reloading[0].contains("function_app.py"),
        "one reload naming the file: {reloading:?}"
    );
    let reloaded = sluice.output_lines_containing("reloaded");
    ensure!(
        reloaded.len() == 1 && reloaded[0].contains("functions=2"),
        "one `reloaded` line counting the functions: {reloaded:?}"
    );
    // Both slots of the new generation come up (the second starts after the switch).
    let until = Instant::now() + RELOAD_DEADLINE;
    let new_pids = loop {
        let new_pids: HashSet<u32> = ready_pids(&sluice).difference(&old_pids).copied().collect();
        if new_pids.len() >= 2 {
            break new_pids;
        }
        ensure!(
            Instant::now() < until,
            "new worker pids: {new_pids:?}\n{}",
            sluice.output_tail()
        );
        sleep(POLL).await;
    };
    ensure!(new_pids.len() == 2, "new worker pids: {new_pids:?}");
    ensure!(new_pids.iter().all(|p| process_running(*p)));
    stop(sluice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_edit_keeps_old_code_serving() -> anyhow::Result<()> {
    const OLD: &str = "answer v1";
    const FIXED: &str = "answer v3, fixed again";
    let app = write_app(&app_code(OLD, false))?;
    let sluice = start(app.path(), 1).await?;
    let old_pids = ready_pids(&sluice);

    let load = Load::start(sluice.url("/api/answer"), 2);
    load.wait_for_more(5).await?;
    let broken = format!(
        "{}\nraise RuntimeError(\"watch boom marker-wb-3\")\n",
        app_code("answer v2 never served", false)
    );
    edit(app.path(), &broken)?;
    sluice
        .wait_for_output("reload failed", RELOAD_DEADLINE)
        .await?;
    sluice.wait_for_output("marker-wb-3", LOG_DEADLINE).await?;
    // The old workers still answer with the old code.
    load.wait_for_more(10).await?;
    ensure!(
        load.outcomes().iter().all(|o| o.body() == Some(OLD)),
        "the broken edit changed an answer"
    );
    ensure!(old_pids.iter().all(|p| process_running(*p)));

    edit(app.path(), &app_code(FIXED, false))?;
    load.wait_for_body(FIXED, &sluice).await?;
    wait_until_exited(&old_pids, &sluice).await?;
    let outcomes = load.finish().await;
    assert_clean_switch(&outcomes, OLD, FIXED)?;
    // Logged once: the failed reload was not retried until the next change.
    let failures = sluice.output_lines_containing("reload failed");
    ensure!(failures.len() == 1, "reload failures logged: {failures:?}");
    stop(sluice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_during_a_reload_ends_on_the_newest_code() -> anyhow::Result<()> {
    const V1: &str = "answer v1";
    const V2: &str = "answer v2 (superseded quickly)";
    const V3: &str = "answer v3, the newest of all";
    let app = write_app(&app_code(V1, false))?;
    let sluice = start(app.path(), 1).await?;
    let load = Load::start(sluice.url("/api/answer"), 2);
    load.wait_for_more(5).await?;
    edit(app.path(), &app_code(V2, false))?;
    // The second edit lands while the first reload starts its worker.
    sluice.wait_for_output("reloading", RELOAD_DEADLINE).await?;
    edit(app.path(), &app_code(V3, false))?;
    let first_v3 = load.wait_for_body(V3, &sluice).await?;
    load.wait_for_more(10).await?;
    let outcomes = load.finish().await;
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o.body(), Some(V1 | V2 | V3)))
        .map(|o| &o.reply)
        .collect();
    ensure!(
        unexpected.is_empty(),
        "{} of {} requests failed: {:?}",
        unexpected.len(),
        outcomes.len(),
        unexpected.iter().take(3).collect::<Vec<_>>()
    );
    let stale = outcomes
        .iter()
        .filter(|o| o.start > first_v3 && o.body() != Some(V3))
        .count();
    ensure!(stale == 0, "{stale} requests got older code after {V3:?}");
    stop(sluice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_json_edit_applies_the_new_route_prefix() -> anyhow::Result<()> {
    let app = write_app(&app_code("prefixed", false))?;
    let sluice = start(app.path(), 1).await?;
    let http = client();
    let before = fetch(&http, &sluice.url("/api/answer")).await;
    ensure!(matches!(&before, Ok((StatusCode::OK, _))), "{before:?}");
    std::fs::write(
        app.path().join("host.json"),
        r#"{"version": "2.0", "extensions": {"http": {"routePrefix": "v2"}}}"#,
    )?;
    let url = sluice.url("/v2/answer");
    wait_for_answer(&sluice, &http, &url, "prefixed", |(status, _)| {
        *status == StatusCode::NOT_FOUND
    })
    .await?;
    let after = fetch(&http, &sluice.url("/api/answer")).await;
    ensure!(
        matches!(&after, Ok((StatusCode::NOT_FOUND, _))),
        "{after:?}"
    );
    stop(sluice).await
}

/// A local.settings.json with one value and one allowed CORS origin.
fn local_settings(greeting: &str, origin: &str) -> String {
    format!(
        r#"{{"IsEncrypted": false, "Values": {{"GREETING": "{greeting}"}}, "Host": {{"CORS": "{origin}"}}}}"#
    )
}

/// The allow-origin a preflight from `origin` gets.
async fn preflight(
    http: &reqwest::Client,
    url: &str,
    origin: &str,
) -> anyhow::Result<Option<String>> {
    let response = http
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .send()
        .await?;
    ensure!(response.status() == StatusCode::NO_CONTENT, "{response:?}");
    Ok(response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap_or_default().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_settings_edit_reaches_the_workers_and_cors() -> anyhow::Result<()> {
    let code = r#"import os
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="answer", methods=["GET"])
def answer(req: func.HttpRequest) -> str:
    return os.environ.get("GREETING", "unset")
"#;
    let app = write_app(code)?;
    let settings = app.path().join("local.settings.json");
    std::fs::write(&settings, local_settings("first", "http://one.test"))?;
    let sluice = start(app.path(), 1).await?;
    let http = client();
    let url = sluice.url("/api/answer");
    let before = fetch(&http, &url).await;
    ensure!(
        matches!(&before, Ok((StatusCode::OK, b)) if b == "first"),
        "{before:?}"
    );
    ensure!(preflight(&http, &url, "http://one.test").await?.as_deref() == Some("http://one.test"));

    std::fs::write(&settings, local_settings("second", "http://two.test"))?;
    wait_for_answer(&sluice, &http, &url, "second", |(status, body)| {
        *status == StatusCode::OK && body == "first"
    })
    .await?;
    // The same reload brought the file's new CORS origins.
    ensure!(preflight(&http, &url, "http://two.test").await?.as_deref() == Some("http://two.test"));
    ensure!(preflight(&http, &url, "http://one.test").await?.is_none());
    stop(sluice).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_an_app_that_failed_at_start_brings_it_up() -> anyhow::Result<()> {
    const FIXED: &str = "answer after the fix";
    let broken = format!(
        "{}\nraise RuntimeError(\"start boom marker-ws-5\")\n",
        app_code("never served", false)
    );
    let app = write_app(&broken)?;
    let mut sluice =
        Sluice::spawn_with(Options::new(app.path()), &Extras::default().arg("--watch"))?;
    sluice
        .wait_until_listening(common::STARTUP_DEADLINE)
        .await?;
    sluice
        .wait_for_output("worker failed to start", common::STARTUP_DEADLINE)
        .await?;
    let http = client();
    let before = fetch(&http, &sluice.url("/api/answer")).await;
    ensure!(
        matches!(before, Ok((StatusCode::SERVICE_UNAVAILABLE, _))),
        "{before:?}"
    );

    edit(app.path(), &app_code(FIXED, false))?;
    let until = Instant::now() + RELOAD_DEADLINE;
    loop {
        match fetch(&http, &sluice.url("/api/answer")).await {
            Ok((StatusCode::OK, body)) if body == FIXED => break,
            // The failed generation answers 503 until the fixed one takes over.
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {}
            other => bail!("{other:?}\n{}", sluice.output_tail()),
        }
        ensure!(
            Instant::now() < until,
            "the fixed app is not served after {RELOAD_DEADLINE:?}\n{}",
            sluice.output_tail()
        );
        sleep(POLL).await;
    }
    ensure!(sluice.try_exit_status()?.is_none(), "sluice exited");
    stop(sluice).await
}
