//! The HTTP front end's I/O backends: `--io uring` really serves over io_uring, and a
//! kernel that refuses io_uring (simulated with `SLUICE_URING_PROBE=fail`) falls back to
//! epoll with exactly one log line, still serving.

mod common;

use anyhow::{Context, ensure};
use common::{Extras, Options, Sluice, client, hello_app};

/// Whether process `pid` holds an io_uring instance (its descriptors link to
/// `anon_inode:[io_uring]`).
fn holds_io_uring(pid: u32) -> anyhow::Result<bool> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).context("listing fds")? {
        // A descriptor closed while listing is not an error.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        if target.to_string_lossy().contains("io_uring") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `GET /` (answered by Sluice itself) and `GET /api/hello` (a worker) both succeed.
async fn serves_host_and_function(sluice: &Sluice) -> anyhow::Result<()> {
    let client = client();
    for _ in 0..3 {
        let home = client.get(sluice.url("/")).send().await?;
        ensure!(home.status() == 200, "GET / answered {}", home.status());
        let hello = client
            .get(sluice.url("/api/hello?name=uring"))
            .send()
            .await?;
        ensure!(
            hello.status() == 200,
            "GET /api/hello answered {}",
            hello.status()
        );
        let text = hello.text().await?;
        ensure!(text.contains("uring"), "unexpected greeting {text:?}");
    }
    Ok(())
}

#[tokio::test]
async fn io_uring_serves_host_and_function_requests() -> anyhow::Result<()> {
    if std::env::consts::OS != "linux" {
        return Ok(());
    }
    let extras = Extras::default().arg("--io").arg("uring");
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    serves_host_and_function(&sluice).await?;
    let chosen = sluice.output_lines_containing("serving HTTP");
    ensure!(
        chosen.len() == 1 && chosen[0].contains("io=uring"),
        "expected one `serving HTTP io=uring` line, got {chosen:?}\n{}",
        sluice.output_tail()
    );
    ensure!(
        holds_io_uring(sluice.pid()?)?,
        "no io_uring instance in the sluice process"
    );
    ensure!(!sluice.output_contains("io_uring unavailable"));
    Ok(())
}

#[tokio::test]
async fn a_failing_io_uring_probe_falls_back_to_epoll_with_one_log_line() -> anyhow::Result<()> {
    let extras = Extras::default()
        .arg("--io")
        .arg("uring")
        .env("SLUICE_URING_PROBE", "fail");
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    serves_host_and_function(&sluice).await?;
    let fallback = sluice.output_lines_containing("io_uring unavailable");
    ensure!(
        fallback.len() == 1 && fallback[0].contains("WARN"),
        "expected exactly one fallback warning, got {fallback:?}\n{}",
        sluice.output_tail()
    );
    let chosen = sluice.output_lines_containing("serving HTTP");
    ensure!(
        chosen == fallback && chosen[0].contains("io=epoll"),
        "the fallback warning must be the only line about the backend, got {chosen:?}"
    );
    ensure!(
        !holds_io_uring(sluice.pid()?)?,
        "an io_uring instance is left behind after the fallback"
    );
    Ok(())
}

#[tokio::test]
async fn epoll_serves_without_io_uring() -> anyhow::Result<()> {
    let extras = Extras::default().arg("--io").arg("epoll");
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    serves_host_and_function(&sluice).await?;
    ensure!(!holds_io_uring(sluice.pid()?)?);
    ensure!(sluice.output_contains("io=epoll"));
    Ok(())
}
