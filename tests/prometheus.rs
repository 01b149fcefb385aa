//! A real Prometheus server (Debian's `prometheus`, installed by scripts/test.sh) scrapes
//! Sluice's admin listener on 127.0.0.1 while traffic flows; its HTTP API must see a
//! positive request rate and compute a latency quantile from Sluice's histogram — proof
//! that the exposition is really scrapable and the histograms are well-formed.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{Options, Sluice, TempDir, client, hello_app};
use serde_json::Value;
use tokio::process::Command;

/// A free port on 127.0.0.1 for Prometheus' own web listener (it cannot report port 0).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs an instant query; returns the first sample's value, if any.
async fn query(base: &str, expr: &str) -> anyhow::Result<Option<f64>> {
    let body: Value = client()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await?
        .json()
        .await?;
    let value = body["data"]["result"][0]["value"][1].as_str();
    Ok(value.and_then(|v| v.parse().ok()))
}

#[tokio::test]
async fn prometheus_scrapes_sluice_and_computes_rates_and_quantiles() -> anyhow::Result<()> {
    if which("prometheus").is_none() {
        // scripts/test.sh installs it and sets this, so CI cannot skip silently.
        if std::env::var_os("SLUICE_REQUIRE_PROMETHEUS").is_some() {
            bail!("`prometheus` is not installed");
        }
        eprintln!("SKIPPED: `prometheus` is not installed (scripts/test.sh installs it)");
        return Ok(());
    }
    let sluice = Sluice::start(Options::new(hello_app())).await?;
    let admin = sluice.admin_addr().await?;
    let dir = TempDir::new("sluice-prometheus")?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )?;
    let port = free_port()?;
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting prometheus")?;
    let base = format!("http://127.0.0.1:{port}");

    // Traffic, and polling until Prometheus has two scrapes of it (bounded).
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut rate = None;
    while Instant::now() < deadline {
        for _ in 0..20 {
            let r = http.get(sluice.url("/api/hello")).send().await?;
            anyhow::ensure!(r.status() == 200);
        }
        if let Some(status) = server.try_wait()? {
            bail!("prometheus exited: {status}");
        }
        rate = query(
            &base,
            "sum(rate(sluice_http_requests_total{function=\"hello\"}[10s]))",
        )
        .await
        .ok()
        .flatten()
        .filter(|r| *r > 0.0);
        if rate.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rate = rate.context("Prometheus never saw a positive request rate")?;
    let p99 = query(
        &base,
        "histogram_quantile(0.99, sum by (le) (rate(sluice_http_request_duration_seconds_bucket[10s])))",
    )
    .await?
    .context("no quantile from the duration histogram")?;
    assert!(rate > 0.0, "rate {rate}");
    assert!(p99.is_finite() && p99 > 0.0, "p99 {p99}");
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
