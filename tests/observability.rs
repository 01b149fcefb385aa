//! Observability: the admin listener (`/metrics`, `/healthz`, `/readyz`) of the real `sluice`
//! binary with real Python workers, the metric families and their label values after traffic,
//! throttling and drain; and the shipped Grafana dashboard and Prometheus config against what
//! `/metrics` exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{Extras, LOG_DEADLINE, Options, Sluice, client};
use reqwest::StatusCode;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(20);

/// Every family the issue asks for, as its samples are named.
const FAMILIES: &[&str] = &[
    "sluice_http_requests_total",
    "sluice_http_request_duration_seconds_bucket",
    "sluice_invocation_duration_seconds_bucket",
    "sluice_queue_wait_seconds_bucket",
    "sluice_requests_in_flight",
    "sluice_requests_queued",
    "sluice_throttled_total",
    "sluice_function_timeouts_total",
    "sluice_client_disconnects_total",
    "sluice_workers",
    "sluice_rpc_bytes_received_total",
    "sluice_rpc_bytes_sent_total",
    "sluice_cold_start_seconds",
    "sluice_runtime_info",
    "sluice_build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// GET on the admin listener: (status, content type, body).
async fn admin_get(sluice: &Sluice, path: &str) -> anyhow::Result<(StatusCode, String, String)> {
    let response = client()
        .get(sluice.admin_url(path).await?)
        .timeout(DEADLINE)
        .send()
        .await
        .with_context(|| format!("GET {path} on the admin port"))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.text().await?))
}

async fn scrape(sluice: &Sluice) -> anyhow::Result<String> {
    let (status, content_type, body) = admin_get(sluice, "/metrics").await?;
    ensure!(status == StatusCode::OK, "/metrics answered {status}");
    ensure!(
        content_type == OPENMETRICS,
        "/metrics content type {content_type:?}"
    );
    Ok(body)
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Names of every sample in an exposition, plus the sample names each `# TYPE` line
/// promises (so a family with no labelled child yet still counts as exported).
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            if end > 0 {
                names.insert(line[..end].to_owned());
            }
        }
    }
    names
}

/// Every `sluice_*` / `process_*` metric name in the dashboard's queries.
fn dashboard_metric_names() -> anyhow::Result<BTreeSet<String>> {
    let path = repo_file("config/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).context("dashboard is JSON")?;
    let mut queries = Vec::new();
    collect_queries(&json, &mut queries);
    ensure!(queries.len() >= 10, "only {} queries found", queries.len());
    let name = regex::Regex::new(r"\b(?:sluice|process)_[a-z0-9_]+").expect("valid regex");
    Ok(queries
        .iter()
        .flat_map(|q| name.find_iter(q).map(|m| m.as_str().to_owned()))
        .collect())
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

fn check_dashboard_against(exported: &BTreeSet<String>) -> anyhow::Result<()> {
    let used = dashboard_metric_names()?;
    let missing: Vec<&String> = used.difference(exported).collect();
    ensure!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}"
    );
    for wanted in [
        "sluice_http_requests_total",
        "sluice_http_request_duration_seconds_bucket",
        "sluice_requests_in_flight",
        "sluice_requests_queued",
        "sluice_workers",
        "sluice_worker_restarts_total",
        "sluice_rpc_bytes_sent_total",
    ] {
        ensure!(used.contains(wanted), "the dashboard shows no {wanted}");
    }
    Ok(())
}

async fn get_status(url: &str) -> anyhow::Result<StatusCode> {
    Ok(client().get(url).timeout(DEADLINE).send().await?.status())
}

#[tokio::test]
async fn metrics_count_requests_by_function_method_and_status_class() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(common::hello_app())).await?;

    let (status, _, body) = admin_get(&sluice, "/healthz").await?;
    ensure!(
        status == StatusCode::OK && body == "ok",
        "/healthz: {status} {body:?}"
    );
    let (status, _, _) = admin_get(&sluice, "/readyz").await?;
    ensure!(
        status == StatusCode::OK,
        "/readyz answered {status} with a ready worker"
    );
    let (status, _, _) = admin_get(&sluice, "/nope").await?;
    ensure!(status == StatusCode::NOT_FOUND);

    const N: usize = 5;
    for _ in 0..N {
        let status = get_status(&sluice.url("/api/hello?name=metrics")).await?;
        ensure!(status == StatusCode::OK, "hello answered {status}");
    }
    for path in ["/api/no-such-function", "/raw/path/12345"] {
        let status = get_status(&sluice.url(path)).await?;
        ensure!(status == StatusCode::NOT_FOUND, "{path} answered {status}");
    }

    let text = scrape(&sluice).await?;
    ensure!(text.ends_with("# EOF\n"), "no OpenMetrics EOF marker");
    let names = exported_names(&text);
    for family in FAMILIES {
        ensure!(names.contains(*family), "{family} missing from\n{text}");
    }
    let value = |series: &str| {
        sample(&text, series).with_context(|| format!("no sample {series} in\n{text}"))
    };
    let hello_2xx =
        value(r#"sluice_http_requests_total{function="hello",method="GET",status_class="2xx"}"#)?;
    ensure!(hello_2xx >= N as f64, "hello 2xx counted {hello_2xx}");
    let unrouted =
        value(r#"sluice_http_requests_total{function="-",method="GET",status_class="4xx"}"#)?;
    ensure!(unrouted >= 2.0, "404s counted {unrouted}");
    ensure!(
        !text.contains("no-such-function") && !text.contains("12345"),
        "a raw path leaked into a label"
    );
    ensure!(value(r#"sluice_http_request_duration_seconds_count{function="hello"}"#)? >= N as f64);
    ensure!(value(r#"sluice_invocation_duration_seconds_count{function="hello"}"#)? >= N as f64);
    ensure!(value(r#"sluice_workers{state="ready"}"#)? == 1.0);
    ensure!(value(r#"sluice_workers{state="starting"}"#)? == 0.0);
    ensure!(value("sluice_requests_in_flight")? == 0.0);
    ensure!(value("sluice_rpc_bytes_received_total")? > 0.0);
    ensure!(value("sluice_rpc_bytes_sent_total")? > 0.0);
    ensure!(value("sluice_cold_start_seconds")? > 0.0);
    ensure!(value("process_resident_memory_bytes")? > 0.0);
    ensure!(value("process_open_fds")? > 0.0);
    ensure!(
        text.lines().any(|l| l.starts_with("sluice_runtime_info{")
            && l.contains(r#"package="azure-functions-runtime""#)
            && l.ends_with(" 1")),
        "no runtime info in\n{text}"
    );
    ensure!(text.contains(&format!(
        "sluice_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // The shipped dashboard only queries what this Sluice exports.
    check_dashboard_against(&names)?;
    Ok(())
}

#[tokio::test]
async fn throttled_and_queued_requests_are_counted() -> anyhow::Result<()> {
    // host.json: maxConcurrentRequests 2, maxOutstandingRequests 4.
    let sluice = Sluice::start(Options::new(app("throttled"))).await?;
    let url = sluice.url("/api/slow?s=4");
    let mut requests = JoinSet::new();
    for _ in 0..6 {
        let url = url.clone();
        requests.spawn(async move { get_status(&url).await });
    }
    // While they run: 2 execute, 2 wait in the queue, 2 were refused.
    let until = Instant::now() + DEADLINE;
    loop {
        let text = scrape(&sluice).await?;
        if sample(&text, "sluice_requests_queued") == Some(2.0)
            && sample(&text, "sluice_throttled_total") == Some(2.0)
        {
            ensure!(
                sample(&text, "sluice_requests_in_flight") == Some(4.0),
                "{text}"
            );
            break;
        }
        if Instant::now() >= until {
            bail!("never saw 2 queued and 2 throttled:\n{text}");
        }
        sleep(POLL).await;
    }
    let mut refused = 0;
    while let Some(status) = requests.join_next().await {
        match status?? {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => bail!("unexpected {other}"),
        }
    }
    ensure!(refused == 2, "{refused} requests were refused");
    let text = scrape(&sluice).await?;
    let value = |series: &str| sample(&text, series).unwrap_or(-1.0);
    ensure!(value("sluice_throttled_total") == 2.0, "{text}");
    ensure!(
        value(r#"sluice_http_requests_total{function="slow",method="GET",status_class="4xx"}"#)
            == 2.0,
        "{text}"
    );
    ensure!(value("sluice_queue_wait_seconds_count") == 4.0, "{text}");
    // The two queued requests waited for a running one: at least ~4 s in total.
    ensure!(value("sluice_queue_wait_seconds_sum") >= 6.0, "{text}");
    ensure!(value("sluice_requests_queued") == 0.0, "{text}");
    ensure!(value("sluice_requests_in_flight") == 0.0, "{text}");
    Ok(())
}

#[tokio::test]
async fn readyz_fails_while_draining() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("faults"))).await?;
    let admin = sluice.admin_url("/readyz").await?;
    ensure!(get_status(&admin).await? == StatusCode::OK);

    let slow = {
        let url = sluice.url("/api/slow?s=5&id=drain");
        tokio::spawn(async move { get_status(&url).await })
    };
    sluice
        .wait_for_output("slow-start id=drain", LOG_DEADLINE)
        .await?;
    sluice.signal("TERM")?;
    sluice
        .wait_for_state("draining", LOG_DEADLINE, |s| s.draining)
        .await?;

    // The slow request keeps Sluice draining for seconds: /readyz must say 503 meanwhile,
    // while /healthz still says the process is alive.
    let until = Instant::now() + DEADLINE;
    loop {
        let status = get_status(&admin).await?;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        ensure!(
            Instant::now() < until,
            "/readyz still {status} during the drain"
        );
        sleep(POLL).await;
    }
    let (health, _, _) = admin_get(&sluice, "/healthz").await?;
    ensure!(
        health == StatusCode::OK,
        "/healthz {health} during the drain"
    );
    ensure!(
        !slow.is_finished(),
        "the slow request ended before /readyz was checked"
    );
    ensure!(slow.await?? == StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn client_disconnect_is_counted() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("faults"))).await?;
    let gone = client()
        .get(sluice.url("/api/slow?s=3&id=gone"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    ensure!(
        gone.is_err(),
        "the request should have timed out client-side"
    );
    let until = Instant::now() + DEADLINE;
    loop {
        let text = scrape(&sluice).await?;
        if sample(&text, "sluice_client_disconnects_total") == Some(1.0) {
            ensure!(sample(&text, "sluice_requests_in_flight") == Some(0.0));
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("the disconnect was not counted:\n{text}");
        }
        sleep(POLL).await;
    }
}

/// Fast and offline: the dashboard against the families the library registers.
#[test]
fn dashboard_queries_only_exported_metrics() -> anyhow::Result<()> {
    use sluice::metrics::{FunctionName, HttpMethod, Metrics};
    let metrics = Metrics::new();
    // Families keyed by function appear with their first request.
    let function: std::sync::Arc<str> = "hello".into();
    metrics.request_answered(
        FunctionName::of(&function),
        HttpMethod::Get,
        StatusCode::OK,
        Duration::from_millis(1),
    );
    metrics.invocation_took(&function, Duration::from_millis(1));
    let text = metrics.encode().context("encoding")?;
    check_dashboard_against(&exported_names(&text))
}

/// `promtool` checks the scrape config and a real exposition, where it is installed
/// (it is not installed by the test suite; the test says so and passes without it).
#[tokio::test]
async fn promtool_accepts_config_and_exposition() -> anyhow::Result<()> {
    let Ok(version) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: promtool is not installed");
        return Ok(());
    };
    eprintln!("{}", String::from_utf8_lossy(&version.stdout));
    let config = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(repo_file("config/prometheus.yml"))
        .output()?;
    ensure!(
        config.status.success(),
        "promtool check config: {}",
        String::from_utf8_lossy(&config.stderr)
    );
    let sluice = Sluice::start_with(Options::new(common::hello_app()), &Extras::default()).await?;
    get_status(&sluice.url("/api/hello")).await?;
    let text = scrape(&sluice).await?;
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    // promtool lints in the Prometheus text format, where HELP names the sample; OpenMetrics
    // names the family (`# HELP sluice_throttled` for `sluice_throttled_total`). Exit 3 with
    // only that finding is the format difference; anything else is a real problem.
    let findings =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let format_difference = |line: &str| {
        line.strip_suffix("_total no help text")
            .is_some_and(|family| text.contains(&format!("# HELP {family} ")))
    };
    let real: Vec<&str> = findings
        .lines()
        .filter(|l| !l.trim().is_empty() && !format_difference(l))
        .collect();
    ensure!(
        matches!(out.status.code(), Some(0 | 3)) && real.is_empty(),
        "promtool check metrics ({}): {real:?}",
        out.status
    );
    Ok(())
}

#[tokio::test]
async fn readyz_fails_until_a_worker_is_ready() -> anyhow::Result<()> {
    let mut sluice = Sluice::spawn_with(Options::new(app("slow_start")), &Extras::default())?;
    sluice
        .wait_until_listening(common::STARTUP_DEADLINE)
        .await?;
    let admin = sluice.admin_url("/readyz").await?;
    // The app sleeps 3 s at import: the first answer comes before any worker is ready.
    let started = |sluice: &Sluice| {
        sluice
            .ready_state()
            .ok()
            .flatten()
            .map(|s| s.workers_started)
    };
    ensure!(
        started(&sluice) == Some(0),
        "the worker was ready too early for this test"
    );
    ensure!(get_status(&admin).await? == StatusCode::SERVICE_UNAVAILABLE);
    sluice
        .wait_workers_started(1, common::STARTUP_DEADLINE)
        .await?;
    ensure!(get_status(&admin).await? == StatusCode::OK);
    Ok(())
}
