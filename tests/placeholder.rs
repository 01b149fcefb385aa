//! Placeholder mode: `sluice serve --placeholder` starts real Python workers against an
//! empty placeholder app; `POST /admin/assign` specialises them (FunctionEnvironmentReload)
//! for a v2 or a v1 app, which is then served with its own routes, host.json and
//! environment. Before assignment and after a failed one, requests get 503 and Sluice stays up.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use common::{LOG_DEADLINE, Options, STARTUP_DEADLINE, Sluice, client};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

/// Starts placeholder Sluice and waits until every placeholder worker is initialised.
async fn start_placeholder(workers: usize) -> anyhow::Result<Sluice> {
    let mut sluice = Sluice::spawn(Options::placeholder(workers))?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    sluice
        .wait_for_state("placeholder workers", STARTUP_DEADLINE, |s| {
            s.placeholders_started >= workers
        })
        .await?;
    Ok(sluice)
}

async fn assign(sluice: &Sluice, body: Value) -> anyhow::Result<(StatusCode, String)> {
    let response = client()
        .post(sluice.admin_url("/admin/assign").await?)
        .body(body.to_string())
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

async fn status(url: &str) -> anyhow::Result<StatusCode> {
    Ok(client().get(url).send().await?.status())
}

async fn env_of(sluice: &Sluice, path: &str, names: &str) -> anyhow::Result<Value> {
    let response = client()
        .get(sluice.url(&format!("{path}?names={names}")))
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::OK,
        "{path}: {}",
        response.status()
    );
    response.json().await.context("JSON body")
}

#[tokio::test]
async fn v2_app_is_served_after_assignment_with_its_environment_and_host_json() -> anyhow::Result<()>
{
    let mut sluice = start_placeholder(2).await?;
    // Nothing assigned: 503 with a short body, not ready.
    let early = client().get(sluice.url("/api/hello")).send().await?;
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(early.text().await?, "no app assigned yet\n");
    assert!(sluice.output_contains("503: no app assigned yet"));
    assert_eq!(
        status(&sluice.admin_url("/readyz").await?).await?,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let app = fixture("placeholder_v2");
    let (code, body) = assign(
        &sluice,
        json!({"app_dir": app, "environment": {"ASSIGNED_SETTING": "yes-v2", "EMPTY_ONE": ""}}),
    )
    .await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let functions: Value = serde_json::from_str(&body)?;
    assert_eq!(functions["functions"], json!(["env", "hello"]));
    assert_eq!(
        status(&sluice.admin_url("/readyz").await?).await?,
        StatusCode::OK
    );

    // host.json of the assigned app: routePrefix "assigned".
    assert_eq!(
        status(&sluice.url("/api/hello")).await?,
        StatusCode::NOT_FOUND
    );
    let names =
        "ASSIGNED_SETTING,WEBSITE_PLACEHOLDER_MODE,EMPTY_ONE,FUNCTIONS_APPLICATION_DIRECTORY";
    // Every worker was specialised: ask more times than there are workers.
    for _ in 0..6 {
        let seen = env_of(&sluice, "/assigned/env", names).await?;
        let env = &seen["env"];
        assert_eq!(env["ASSIGNED_SETTING"], "yes-v2");
        assert_eq!(
            env["WEBSITE_PLACEHOLDER_MODE"],
            Value::Null,
            "placeholder flag gone"
        );
        assert_eq!(env["EMPTY_ONE"], Value::Null, "empty values are left out");
        let canonical = std::fs::canonicalize(&app)?;
        assert_eq!(
            env["FUNCTIONS_APPLICATION_DIRECTORY"],
            canonical.display().to_string()
        );
        assert_eq!(seen["cwd"], canonical.display().to_string());
        assert_eq!(seen["runtime"][0], "azure_functions_runtime");
    }
    assert_eq!(
        sluice.output_lines_containing("environment reloaded").len(),
        2
    );

    // One assignment per process.
    let (code, body) = assign(&sluice, json!({"app_dir": app})).await?;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(sluice.try_exit_status()?.is_none());
    Ok(())
}

#[tokio::test]
async fn v1_app_is_served_by_the_v1_runtime_after_assignment() -> anyhow::Result<()> {
    let sluice = start_placeholder(1).await?;
    let (code, body) = assign(
        &sluice,
        json!({"app_dir": fixture("placeholder_v1"), "environment": {"ASSIGNED_SETTING": "yes-v1"}}),
    )
    .await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let seen = env_of(
        &sluice,
        "/api/Env",
        "ASSIGNED_SETTING,WEBSITE_PLACEHOLDER_MODE",
    )
    .await?;
    assert_eq!(seen["env"]["ASSIGNED_SETTING"], "yes-v1");
    assert_eq!(seen["env"]["WEBSITE_PLACEHOLDER_MODE"], Value::Null);
    assert_eq!(seen["v1"], true, "{seen}");
    sluice
        .wait_for_output("runtime=azure-functions-runtime-v1", LOG_DEADLINE)
        .await?;
    Ok(())
}

#[tokio::test]
async fn broken_app_is_reported_then_a_good_assignment_succeeds() -> anyhow::Result<()> {
    let mut sluice = start_placeholder(1).await?;

    // Bad requests: no JSON, no such directory.
    let (code, _) = assign(&sluice, json!("not an object")).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = assign(&sluice, json!({"app_dir": "/nonexistent/sluice-app"})).await?;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("does not exist"), "{body}");

    // The app raises while being imported: the error comes back, Sluice stays up with 503s.
    let (code, body) = assign(&sluice, json!({"app_dir": fixture("import_error")})).await?;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("marker-imp-7"), "{body}");
    sluice
        .wait_for_output("assignment failed", LOG_DEADLINE)
        .await?;
    assert_eq!(
        status(&sluice.url("/api/hello")).await?,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(sluice.try_exit_status()?.is_none(), "still running");
    assert_eq!(
        status(&sluice.admin_url("/readyz").await?).await?,
        StatusCode::SERVICE_UNAVAILABLE
    );

    // Fresh placeholder workers replace the tainted ones; a good app is then served.
    let (code, body) = assign(&sluice, json!({"app_dir": fixture("placeholder_v2")})).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let hello = client().get(sluice.url("/assigned/hello")).send().await?;
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text().await?, "Hello from the assigned v2 app");
    Ok(())
}

#[tokio::test]
async fn assigned_app_gets_its_own_pinned_sdk_over_the_preimported_one() -> anyhow::Result<()> {
    // The placeholder pre-imports the bundled azure-functions; this app pins another
    // version (and its own protobuf and grpcio): after assignment it must see its own.
    let sluice = start_placeholder(1).await?;
    let (code, body) = assign(&sluice, json!({"app_dir": fixture("isolation")})).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let seen: Value = client()
        .get(sluice.url("/api/versions"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(seen["azure-functions"], "2.0.0");
    assert_eq!(seen["protobuf"], "5.29.5");
    assert_eq!(seen["grpcio"], "1.70.0");
    // And the worker still answers on its own transport.
    let again = client().get(sluice.url("/api/versions")).send().await?;
    assert_eq!(again.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn assignment_needs_the_admin_token_when_one_is_set() -> anyhow::Result<()> {
    const TOKEN: &str = "a-test-admin-token-0123456789";
    let extras = common::Extras::default().env("SLUICE_ADMIN_TOKEN", TOKEN);
    let mut sluice = Sluice::spawn_with(Options::placeholder(1), &extras)?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    let url = sluice.admin_url("/admin/assign").await?;
    let body = json!({"app_dir": fixture("placeholder_v2")}).to_string();
    let post = |authorization: Option<String>| {
        let mut request = client().post(&url).body(body.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    for authorization in [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
    ] {
        let refused = post(authorization.clone()).await?;
        assert_eq!(
            refused.status(),
            StatusCode::UNAUTHORIZED,
            "{authorization:?}"
        );
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    }
    sluice
        .wait_for_output(
            "assignment refused: missing or wrong admin token",
            LOG_DEADLINE,
        )
        .await?;
    // Nothing was assigned: the app's route still answers 503.
    let early = client().get(sluice.url("/assigned/hello")).send().await?;
    assert_eq!(early.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Probes and metrics stay open.
    assert_eq!(
        status(&sluice.admin_url("/metrics").await?).await?,
        StatusCode::OK
    );

    let accepted = post(Some(format!("Bearer {TOKEN}"))).await?;
    assert_eq!(
        accepted.status(),
        StatusCode::OK,
        "{:?}",
        accepted.text().await
    );
    let hello = client().get(sluice.url("/assigned/hello")).send().await?;
    assert_eq!(hello.text().await?, "Hello from the assigned v2 app");
    Ok(())
}

#[tokio::test]
async fn placeholder_off_loopback_without_a_token_refuses_to_start() -> anyhow::Result<()> {
    let extras = common::Extras::default()
        .arg("--admin-bind")
        .arg("0.0.0.0")
        .env_remove("SLUICE_ADMIN_TOKEN");
    let mut sluice = Sluice::spawn_with(Options::placeholder(1), &extras)?;
    // Waits for the output too: the refusal is read only once the pipes are drained.
    let exit = sluice.wait_for_exit(STARTUP_DEADLINE).await?;
    ensure!(!exit.success(), "exit {exit}");
    ensure!(
        sluice.output_contains("needs a token (SLUICE_ADMIN_TOKEN or --admin-token-file)"),
        "{}",
        sluice.output_tail()
    );
    ensure!(
        !sluice.output_contains("listening"),
        "something was served\n{}",
        sluice.output_tail()
    );
    Ok(())
}

#[tokio::test]
async fn assignment_completes_when_its_client_hangs_up() -> anyhow::Result<()> {
    // An orchestrator that times out and closes the connection must not leave half the
    // workers specialised: the assignment runs to the end, and the app is served.
    use tokio::io::AsyncWriteExt;
    let sluice = start_placeholder(2).await?;
    let body = json!({"app_dir": fixture("placeholder_v2")}).to_string();
    let mut stream = tokio::net::TcpStream::connect(sluice.admin_addr().await?).await?;
    let request = format!(
        "POST /admin/assign HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    drop(stream);

    sluice
        .wait_for_state("both assigned workers", STARTUP_DEADLINE, |s| {
            s.workers.len() == 2
        })
        .await?;
    let hello = client().get(sluice.url("/assigned/hello")).send().await?;
    assert_eq!(hello.status(), StatusCode::OK);
    assert_eq!(hello.text().await?, "Hello from the assigned v2 app");
    Ok(())
}

#[tokio::test]
async fn concurrent_assignments_one_wins_the_other_is_refused() -> anyhow::Result<()> {
    // Two orchestrators (or a retry racing the first try): the assignments run one after
    // the other; the first specialises the workers, the second gets 409.
    let sluice = start_placeholder(2).await?;
    let body = json!({"app_dir": fixture("placeholder_v2")});
    let (first, second) = tokio::join!(assign(&sluice, body.clone()), assign(&sluice, body));
    let mut codes = [first?.0, second?.0];
    codes.sort();
    assert_eq!(codes, [StatusCode::OK, StatusCode::CONFLICT]);
    sluice
        .wait_for_state("both assigned workers", STARTUP_DEADLINE, |s| {
            s.workers.len() == 2
        })
        .await?;
    assert_eq!(
        sluice.output_lines_containing("environment reloaded").len(),
        2,
        "each placeholder worker specialised once"
    );
    Ok(())
}

#[tokio::test]
async fn an_assignment_before_the_placeholders_are_up_waits_for_them() -> anyhow::Result<()> {
    // The orchestrator assigns as soon as the admin port answers: the assignment waits for
    // the placeholder workers still starting, then specialises them all.
    let mut sluice = Sluice::spawn(Options::placeholder(2))?;
    sluice.wait_until_listening(STARTUP_DEADLINE).await?;
    let (code, body) = assign(&sluice, json!({"app_dir": fixture("placeholder_v2")})).await?;
    assert_eq!(code, StatusCode::OK, "{body}");
    let state = sluice.ready_state()?.context("ready file")?;
    assert_eq!(state.placeholders_started, 2, "{state:?}");
    assert_eq!(state.workers.len(), 2, "{state:?}");
    assert_eq!(
        sluice.output_lines_containing("environment reloaded").len(),
        2
    );
    Ok(())
}
