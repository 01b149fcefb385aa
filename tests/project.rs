//! A project made the usual way with the Functions tooling runs as under `func start`:
//! local.settings.json (Values, ConnectionStrings, Host.LocalHttpPort, Host.CORS) applies,
//! a timer function beside the HTTP ones is indexed but not served, and bad settings
//! stop Sluice with a clear error before anything is served.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use common::{Extras, Options, Sluice, TempDir, client, copy_dir};
use reqwest::{Method, StatusCode};

const ALLOWED: &str = "http://localhost:3000";

fn project_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/project")
}

/// A copy of the project whose local.settings.json asks for `port`.
fn project_on_port(port: u16) -> anyhow::Result<TempDir> {
    let dir = TempDir::new("sluice-project")?;
    copy_dir(&project_app(), dir.path())?;
    let path = dir.path().join("local.settings.json");
    let mut settings: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    settings["Host"]["LocalHttpPort"] = port.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&settings)?)?;
    Ok(dir)
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn local_settings_reach_the_function_and_set_port_and_cors() -> anyhow::Result<()> {
    let port = free_port()?;
    let app = project_on_port(port)?;
    let extras = Extras::default().env("SHADOWED", "from the environment");
    let sluice = Sluice::start_with(Options::new(app.path()).without_port_flag(), &extras).await?;
    assert_eq!(sluice.addr().port(), port, "Host.LocalHttpPort is the port");
    let http = client();

    let seen: serde_json::Value = http
        .get(sluice.url("/api/settings"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(seen["MY_SETTING"], "from the file");
    assert_eq!(
        seen["SHADOWED"], "from the environment",
        "the environment wins"
    );
    assert_eq!(seen["NUMBER"], "42");
    assert_eq!(
        seen["ConnectionStrings:Db"],
        "Server=localhost;Database=app"
    );

    // Preflight from the allowed origin: answered by Sluice, the function never runs.
    let preflight = http
        .request(Method::OPTIONS, sluice.url("/api/settings"))
        .header("origin", ALLOWED)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "content-type,x-requested-with",
        )
        .send()
        .await?;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert_eq!(
        header(&preflight, "access-control-allow-methods").as_deref(),
        Some("PUT")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-headers").as_deref(),
        Some("content-type,x-requested-with")
    );
    assert_eq!(
        header(&preflight, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        preflight.bytes().await?.is_empty(),
        "a preflight has no body"
    );

    // Preflight from another origin: 204 without any CORS header, so the browser refuses.
    let refused = http
        .request(Method::OPTIONS, sluice.url("/api/settings"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await?;
    assert_eq!(refused.status(), StatusCode::NO_CONTENT);
    assert_eq!(cors_headers(&refused), Vec::<String>::new());

    // Actual requests: the allowed origin gets the headers on the function's answer.
    let actual = http
        .get(sluice.url("/api/settings"))
        .header("origin", ALLOWED)
        .send()
        .await?;
    assert_eq!(actual.status(), StatusCode::OK);
    assert_eq!(
        header(&actual, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert_eq!(
        header(&actual, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    // Two origins configured: the answer depends on which one asked.
    assert_eq!(header(&actual, "vary").as_deref(), Some("Origin"));
    let other = http
        .get(sluice.url("/api/settings"))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "CORS never blocks on the server"
    );
    assert_eq!(cors_headers(&other), Vec::<String>::new());
    // Without Origin nothing changes, and errors carry the headers too.
    let plain = http.get(sluice.url("/api/settings")).send().await?;
    assert_eq!(cors_headers(&plain), Vec::<String>::new());
    let missing = http
        .get(sluice.url("/api/nothing-here"))
        .header("origin", ALLOWED)
        .send()
        .await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&missing, "access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    Ok(())
}

#[tokio::test]
async fn cors_flags_win_over_the_settings_file() -> anyhow::Result<()> {
    let app = project_on_port(0)?;
    let extras = Extras::default().arg("--cors").arg("*");
    let sluice = Sluice::start_with(Options::new(app.path()), &extras).await?;
    let preflight = client()
        .request(Method::OPTIONS, sluice.url("/api/settings"))
        .header("origin", "http://anywhere.example")
        .header("access-control-request-method", "GET")
        .send()
        .await?;
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(header(&preflight, "access-control-allow-credentials"), None);
    Ok(())
}

fn check(app: &Path, args: &[&str]) -> anyhow::Result<Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(app)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .context("sluice check runs")
}

#[test]
fn check_lists_setting_names_and_the_timer_function() -> anyhow::Result<()> {
    let app = project_on_port(0)?;
    let output = check(app.path(), &[])?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("local.settings.json"), "{text}");
    for name in ["MY_SETTING", "SHADOWED", "ConnectionStrings:Db"] {
        assert!(text.contains(name), "{name} listed:\n{text}");
    }
    for value in ["from the file", "Server=localhost"] {
        assert!(!text.contains(value), "values are never printed:\n{text}");
    }
    let timer = text
        .lines()
        .find(|l| l.contains("cleanup"))
        .with_context(|| format!("the timer function is listed:\n{text}"))?;
    assert!(
        timer.contains("timerTrigger") && timer.contains("not served over HTTP"),
        "{timer}"
    );
    assert!(
        text.contains(ALLOWED),
        "the CORS origins are listed:\n{text}"
    );
    Ok(())
}

/// Starts `serve` on `app` with `args` and expects it to stop before serving anything.
async fn refused(app: &Path, args: &[&str]) -> anyhow::Result<String> {
    let extras = args.iter().fold(Extras::default(), |e, a| e.arg(*a));
    let mut sluice = Sluice::spawn_with(Options::new(app), &extras)?;
    let status = sluice.wait_for_exit(Duration::from_secs(30)).await?;
    let output = sluice.output_tail();
    assert!(!status.success(), "exits non-zero\n{output}");
    assert!(
        !sluice.output_contains("listening"),
        "nothing served\n{output}"
    );
    Ok(output)
}

#[tokio::test]
async fn bad_settings_stop_sluice_with_a_clear_error() -> anyhow::Result<()> {
    let app = project_on_port(0)?;
    let settings = app.path().join("local.settings.json");

    std::fs::write(&settings, "{\n  \"Values\": {\n    \"A\": \"1\",\n  }\n}\n")?;
    let output = refused(app.path(), &[]).await?;
    assert!(
        output.contains("local.settings.json") && output.contains("line 4"),
        "{output}"
    );

    std::fs::write(
        &settings,
        r#"{"IsEncrypted": true, "Values": {"A": "MIIB=="}}"#,
    )?;
    let output = refused(app.path(), &[]).await?;
    assert!(
        output.contains("local.settings.json") && output.contains("encrypted"),
        "{output}"
    );

    // Skipped on request: the same broken file does not matter.
    std::fs::write(&settings, "{ not json")?;
    let check = check(app.path(), &["--no-local-settings"])?;
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    std::fs::write(&settings, r#"{"Host": {"CORS": "localhost:3000"}}"#)?;
    let output = refused(app.path(), &[]).await?;
    assert!(
        output.contains("localhost:3000") && output.contains("Host.CORS"),
        "{output}"
    );
    let output = refused(app.path(), &["--cors", "*", "--cors-credentials"]).await?;
    assert!(output.contains("credentials"), "{output}");
    let missing = app.path().join("elsewhere.json");
    let output = refused(
        app.path(),
        &["--settings", missing.to_str().expect("utf-8")],
    )
    .await?;
    assert!(output.contains("elsewhere.json"), "{output}");
    Ok(())
}
