//! End-to-end tests: the real `sluice` binary serving `examples/hello` with real Python workers.
//! Each test starts its own Sluice on 127.0.0.1 port 0 (see `common`) and checks one group of
//! behaviours of the Functions host against it.

mod common;

use std::collections::HashSet;

use anyhow::{Context, ensure};
use common::{
    LOG_DEADLINE, Options, STARTUP_DEADLINE, Secrets, Sluice, TempDir, client, hello_app,
    random_bytes,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Ways a log line may spell "exit status 3" (std's `ExitStatus` display, or a field).
const EXIT_STATUS_3: [&str; 5] = [
    "exit status: 3",
    "status=3",
    "status: 3",
    "code=3",
    "code: 3",
];

async fn start_hello() -> anyhow::Result<Sluice> {
    Sluice::start(Options::new(hello_app())).await
}

async fn get(sluice: &Sluice, path: &str) -> anyhow::Result<Response> {
    client()
        .get(sluice.url(path))
        .send()
        .await
        .with_context(|| format!("GET {path}"))
}

async fn post(sluice: &Sluice, path: &str, body: Vec<u8>) -> anyhow::Result<Response> {
    client()
        .post(sluice.url(path))
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {path}"))
}

/// GETs `path`, asserts the status and returns the body as text.
async fn get_text(sluice: &Sluice, path: &str, status: StatusCode) -> anyhow::Result<String> {
    expect_text(get(sluice, path).await?, status).await
}

fn content_type(response: &Response) -> &str {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Asserts the status and returns the body as text.
async fn expect_text(response: Response, status: StatusCode) -> anyhow::Result<String> {
    let url = response.url().clone();
    let got = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading body of {url}"))?;
    ensure!(
        got == status,
        "{url}: expected {status}, got {got} with body {body:?}"
    );
    Ok(body)
}

#[tokio::test]
async fn responses_are_shaped_like_the_functions_host() -> anyhow::Result<()> {
    let sluice = start_hello().await?;

    // A `str` return is 200 text/plain.
    let response = get(&sluice, "/api/hello").await?;
    assert_eq!(content_type(&response), TEXT_PLAIN);
    assert_eq!(
        expect_text(response, StatusCode::OK).await?,
        "Hello, world!"
    );

    // HttpResponse: status, custom header, mimetype + charset, Set-Cookie and body.
    let response = get(&sluice, "/api/respond").await?;
    assert_eq!(
        response.headers().get("x-custom").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    // The SDK appends `; charset=…` only to `text/*` mimetypes (azure/functions/http.py).
    assert_eq!(content_type(&response), "application/xml");
    let cookie = response
        .headers()
        .get("set-cookie")
        .context("no Set-Cookie header")?
        .to_str()?
        .to_owned();
    assert!(cookie.starts_with("session=abc"), "Set-Cookie: {cookie}");
    assert!(
        cookie.to_ascii_lowercase().contains("httponly"),
        "Set-Cookie: {cookie}"
    );
    assert_eq!(
        expect_text(response, StatusCode::CREATED).await?,
        "<greeting>created</greeting>"
    );

    // The host's home page.
    get_text(&sluice, "/", StatusCode::OK).await?;
    Ok(())
}

#[tokio::test]
async fn request_parts_reach_the_function() -> anyhow::Result<()> {
    let sluice = start_hello().await?;

    let body = get_text(&sluice, "/api/hello?name=Sluice", StatusCode::OK).await?;
    assert_eq!(body, "Hello, Sluice!");

    let response = get(&sluice, "/api/items/42").await?;
    assert!(
        content_type(&response).starts_with("application/json"),
        "{}",
        content_type(&response)
    );
    let item: Value = serde_json::from_str(&expect_text(response, StatusCode::OK).await?)?;
    assert_eq!(item, json!({"id": 42}));

    let response = client()
        .get(sluice.url("/api/echo_headers"))
        .header("x-test-header", "value-1")
        .send()
        .await?;
    let headers: Value = serde_json::from_str(&expect_text(response, StatusCode::OK).await?)?;
    assert_eq!(
        headers["x-test-header"], "value-1",
        "echoed headers: {headers}"
    );

    let sent = json!({"name": "sluice", "count": 3, "nested": {"list": [1, 2, 3]}});
    let response = client()
        .post(sluice.url("/api/json_echo"))
        .json(&sent)
        .send()
        .await?;
    assert!(
        content_type(&response).starts_with("application/json"),
        "{}",
        content_type(&response)
    );
    let echoed: Value = serde_json::from_str(&expect_text(response, StatusCode::OK).await?)?;
    let mut expected = sent.clone();
    expected["echoed"] = json!(true);
    assert_eq!(echoed, expected);
    Ok(())
}

#[tokio::test]
async fn one_mib_binary_body_round_trips_byte_exact() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let payload = random_bytes(1024 * 1024);

    let response = post(&sluice, "/api/binary_echo", payload.clone()).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(content_type(&response), "application/octet-stream");
    assert!(response.headers().contains_key("x-worker-pid"));
    let echoed = response.bytes().await?;
    assert_eq!(echoed.len(), payload.len());
    assert!(
        echoed[..] == payload[..],
        "echoed body differs from the payload"
    );
    Ok(())
}

#[tokio::test]
async fn async_and_sync_functions_both_answer() -> anyhow::Result<()> {
    let sluice = start_hello().await?;

    let response = get(&sluice, "/api/async_hello").await?;
    assert_eq!(content_type(&response), TEXT_PLAIN);
    assert_eq!(
        expect_text(response, StatusCode::OK).await?,
        "Hello from async!"
    );

    let response = get(&sluice, "/api/sync_hello").await?;
    assert_eq!(content_type(&response), TEXT_PLAIN);
    assert_eq!(
        expect_text(response, StatusCode::OK).await?,
        "Hello from sync!"
    );
    Ok(())
}

#[tokio::test]
async fn unmatched_route_constraint_or_method_is_404() -> anyhow::Result<()> {
    let sluice = start_hello().await?;

    get_text(&sluice, "/api/no_such_function", StatusCode::NOT_FOUND).await?;
    // `{id:int}` rejects a non-integer segment, so no route matches.
    get_text(&sluice, "/api/items/abc", StatusCode::NOT_FOUND).await?;
    // json_echo is POST-only; the method is a route constraint, so 404 rather than 405.
    get_text(&sluice, "/api/json_echo", StatusCode::NOT_FOUND).await?;
    // Routes live under the prefix only.
    get_text(&sluice, "/hello", StatusCode::NOT_FOUND).await?;
    Ok(())
}

#[tokio::test]
async fn raising_function_returns_empty_500_and_logs_traceback() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    assert!(
        !sluice.output_contains("marker-fail-42"),
        "marker in output before the request"
    );

    let body = get_text(&sluice, "/api/fail", StatusCode::INTERNAL_SERVER_ERROR).await?;
    assert_eq!(body, "");
    sluice
        .wait_for_output("marker-fail-42", LOG_DEADLINE)
        .await?;
    sluice.wait_for_output("Traceback", LOG_DEADLINE).await?;

    // The worker survives a raising function.
    get_text(&sluice, "/api/sync_hello", StatusCode::OK).await?;
    Ok(())
}

#[tokio::test]
async fn function_log_records_appear_in_sluice_output() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    assert!(
        !sluice.output_contains("marker-123"),
        "marker in output before the request"
    );

    assert_eq!(
        get_text(&sluice, "/api/log_marker", StatusCode::OK).await?,
        "logged"
    );
    sluice.wait_for_output("marker-123", LOG_DEADLINE).await?;
    Ok(())
}

#[tokio::test]
async fn keys_gate_function_and_admin_auth_levels() -> anyhow::Result<()> {
    use StatusCode as S;
    let secrets = Secrets::generate()?;
    let sluice = Sluice::start(Options::new(hello_app()).secrets_file(&secrets.file)).await?;
    let master = Some(secrets.master_key.as_str());
    let function_key = Some(secrets.function_key.as_str());
    let code = format!("/api/secure?code={}", secrets.function_key);

    // (path, x-functions-key, expected status, expected body); failures answer 401 with no body.
    let cases = [
        ("/api/secure", None, S::UNAUTHORIZED, ""),
        ("/api/secure", function_key, S::OK, "secret"),
        (code.as_str(), None, S::OK, "secret"),
        ("/api/secure", Some("not-a-key"), S::UNAUTHORIZED, ""),
        ("/api/secure?code=not-a-key", None, S::UNAUTHORIZED, ""),
        // The master key passes every level.
        ("/api/secure", master, S::OK, "secret"),
        ("/api/privileged", None, S::UNAUTHORIZED, ""),
        ("/api/privileged", master, S::OK, "admin"),
        ("/api/privileged", function_key, S::UNAUTHORIZED, ""),
        // Anonymous functions stay open when keys exist.
        ("/api/hello", None, S::OK, "Hello, world!"),
    ];
    for (path, key, status, body) in cases {
        let mut request = client().get(sluice.url(path));
        if let Some(key) = key {
            request = request.header("x-functions-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let got = (response.status(), response.text().await?);
        assert_eq!(
            got,
            (status, body.to_owned()),
            "GET {path} with key {key:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn two_workers_share_concurrent_requests_and_echo_each_payload() -> anyhow::Result<()> {
    const REQUESTS: usize = 200;
    const PAYLOAD: usize = 8 * 1024;
    let sluice = Sluice::start(Options::new(hello_app()).workers(2)).await?;
    let client = client();
    let url = sluice.url("/api/binary_echo");

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        // The index prefix makes every payload distinct, whatever the random bytes.
        let mut payload = format!("request-{i:04}:").into_bytes();
        payload.extend(random_bytes(PAYLOAD - payload.len()));
        let request = client.post(&url).body(payload.clone());
        tasks.spawn(async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("request {i}"))?;
            ensure!(
                response.status() == StatusCode::OK,
                "request {i}: status {}",
                response.status()
            );
            let pid = response
                .headers()
                .get("x-worker-pid")
                .context("no x-worker-pid")?
                .to_str()?
                .to_owned();
            let echoed = response.bytes().await?;
            ensure!(
                echoed[..] == payload[..],
                "request {i}: response is not its own payload"
            );
            Ok(pid)
        });
    }
    let mut pids = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        pids.insert(result??);
    }
    assert_eq!(pids.len(), 2, "requests went to workers {pids:?}");
    Ok(())
}

/// A worker is picked once the request body is in: an upload still arriving holds no worker,
/// so it does not steer other requests away from the one it would have held.
#[tokio::test]
async fn a_slow_upload_holds_no_worker_while_its_body_arrives() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sluice = Sluice::start(Options::new(hello_app()).workers(2)).await?;
    async fn pids(sluice: &Sluice) -> anyhow::Result<HashSet<String>> {
        let mut pids = HashSet::new();
        for _ in 0..6 {
            pids.insert(get_text(sluice, "/api/whoami", StatusCode::OK).await?);
        }
        Ok(pids)
    }
    // One request at a time: the least-loaded worker is the same one every time.
    let before = pids(&sluice).await?;
    ensure!(
        before.len() == 1,
        "sequential requests spread over {before:?}"
    );

    let mut upload = tokio::net::TcpStream::connect(sluice.addr()).await?;
    let head = format!(
        "POST /api/binary_echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 10\r\n\r\nfirst",
        sluice.addr()
    );
    upload.write_all(head.as_bytes()).await?;
    // Sluice has the upload once it counts it in flight (the same step that picked a
    // worker before the body was read).
    let metrics = sluice.admin_url("/metrics").await?;
    let deadline = tokio::time::Instant::now() + LOG_DEADLINE;
    loop {
        let text = client().get(&metrics).send().await?.text().await?;
        if text.lines().any(|l| l == "sluice_requests_in_flight 1") {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the upload never arrived:\n{text}"
        );
    }
    let during = pids(&sluice).await?;
    assert_eq!(during, before, "requests during the upload went elsewhere");

    upload.write_all(b"-last").await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).ends_with("first-last") {
        let n = tokio::time::timeout(LOG_DEADLINE, upload.read(&mut buf)).await??;
        ensure!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()?;

    let response = h2.get(sluice.url("/api/hello?name=h2")).send().await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(content_type(&response), TEXT_PLAIN);
    assert_eq!(expect_text(response, StatusCode::OK).await?, "Hello, h2!");
    Ok(())
}

#[tokio::test]
async fn worker_exiting_during_startup_makes_sluice_exit_with_error() -> anyhow::Result<()> {
    let app = TempDir::new("sluice-e2e-exiting-app")?;
    std::fs::write(app.path().join("host.json"), r#"{"version": "2.0"}"#)?;
    std::fs::write(
        app.path().join("function_app.py"),
        "import os\nos._exit(3)\n",
    )?;

    let mut sluice = Sluice::spawn(Options::new(app.path()))?;
    let status = sluice.wait_for_exit(STARTUP_DEADLINE).await?;
    assert!(!status.success(), "sluice exited with {status}");

    // The error says the worker exited and names its status (3).
    let exit_lines = sluice.output_lines_containing("exited");
    let names_status = |line: &String| EXIT_STATUS_3.iter().any(|s| line.contains(s));
    assert!(
        exit_lines.iter().any(names_status),
        "no line says the worker exited with status 3\n{}",
        sluice.output_tail()
    );
    Ok(())
}
