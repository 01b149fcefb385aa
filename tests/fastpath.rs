//! The worker's Datum fast path (the request decoded and the response encoded in Rust, the
//! runtime's protobuf entry bypassed) answers exactly as the runtime's protobuf entry does.
//! One app runs twice, once per path (`SLUICE_WORKER_FASTPATH=0`); every request must get the
//! same status, headers and body from both, and the same log lines for failures. It runs on
//! each runtime version the fast path mirrors: pinned to azure-functions-runtime 1.3.0 (the
//! first with a protobuf-free seam), and on the bundled runtime (1.2.1), whose invocation
//! sets up its context later.

mod common;

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::{Extras, LOG_DEADLINE, Options, Sluice, client};
use reqwest::Method;

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

/// A client's W3C trace context, sent with every request.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// `(method, path, body)`; every request also carries an `x-one` header and a
/// `traceparent`.
const REQUESTS: &[(&str, &str, &str)] = &[
    ("GET", "/api/hello", ""),
    ("GET", "/api/hello?name=Sluice", ""),
    ("POST", "/api/echo/7?a=1&b=two%20words&a=3", "some body"),
    ("PUT", "/api/echo/x?", ""),
    ("GET", "/api/echo/%C3%A9t%C3%A9", ""),
    ("POST", "/api/aecho/8?q=1", "{\"json\": true}"),
    ("GET", "/api/binary", ""),
    ("GET", "/api/cookies", ""),
    ("GET", "/api/fails", ""),
    ("GET", "/api/sync_fails", ""),
    ("GET", "/api/returns_str", ""),
    ("GET", "/api/logs?who=fastpath", ""),
    ("GET", "/api/context", ""),
    ("DELETE", "/api/echo/7", ""),
];

/// Status, headers (without `date`; sorted, as RpcHttp carries them in a map) and body,
/// with the server's own address replaced.
async fn answer(sluice: &Sluice, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let response = client()
        .request(Method::from_bytes(method.as_bytes())?, sluice.url(path))
        .header("x-one", "1")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .body(body.to_owned())
        .send()
        .await
        .with_context(|| format!("{method} {path}"))?;
    let mut text = format!("{}\n", response.status());
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("<binary>")))
        .collect();
    headers.sort();
    text.extend(headers);
    let bytes = response.bytes().await?;
    text.push_str(&String::from_utf8_lossy(&bytes));
    Ok(text.replace(&sluice.base_url(), "BASE"))
}

async fn get_text(sluice: &Sluice, path: &str) -> anyhow::Result<String> {
    Ok(client().get(sluice.url(path)).send().await?.text().await?)
}

#[tokio::test]
async fn the_datum_path_answers_exactly_as_the_protobuf_entry() -> anyhow::Result<()> {
    both_paths_answer_alike("fastpath", "1.3.0").await
}

#[tokio::test]
async fn on_the_bundled_runtime_too() -> anyhow::Result<()> {
    both_paths_answer_alike("fastpath_bundled", "1.2.1").await
}

async fn both_paths_answer_alike(app_name: &str, runtime: &str) -> anyhow::Result<()> {
    // One after the other: the first start installs the app's requirements.
    let fast = Sluice::start(Options::new(app(app_name))).await?;
    let classic = Sluice::start_with(
        Options::new(app(app_name)),
        &Extras::default().env("SLUICE_WORKER_FASTPATH", "0"),
    )
    .await?;
    for sluice in [&fast, &classic] {
        assert_eq!(get_text(sluice, "/api/which_runtime").await?, runtime);
    }
    assert_eq!(get_text(&fast, "/api/path").await?, "datum");
    assert_eq!(get_text(&classic, "/api/path").await?, "protobuf");

    let mut answers = Vec::new();
    for (method, path, body) in REQUESTS {
        let expected = answer(&classic, method, path, body).await?;
        let got = answer(&fast, method, path, body).await?;
        assert_eq!(got, expected, "{method} {path}");
        answers.push(got);
    }
    // A few answers that the comparison alone would not pin down.
    assert!(answers[1].starts_with("200 OK") && answers[1].ends_with("Hello, Sluice!"));
    // Cookies as the host writes them: empty domain/path sent by the SDK written as such,
    // the value percent-encoded, an expiry (a Timestamp built by the runtime) in RFC 1123.
    for cookie in [
        "set-cookie: a=1; domain=; path=/; httponly",
        "set-cookie: c=x%20y; expires=Sat, 05 Jun 2027 10:18:14 GMT; domain=example.com; path=; secure",
    ] {
        assert!(answers[7].contains(cookie), "{cookie}\n{}", answers[7]);
    }
    assert!(answers[8].starts_with("500"), "{}", answers[8]);
    // The trace context reached the function on both paths.
    for needle in [
        r#""trace_id": "0af7651916cd43dd8448eb211c80319c""#,
        r#""span_id_ok": true"#,
        r#""trace_state": "congo=t61rcWkgMzE""#,
        r#""invocation_attribute_ok": true"#,
    ] {
        assert!(answers[12].contains(needle), "{needle}: {}", answers[12]);
    }

    // Failures (in the host's words) and user logs reach Sluice's log the same way.
    for needle in [
        "Exception: ValueError: no such thing",
        "Exception: KeyError: 'missing'",
        "Executed 'Functions.fails' (Failed, Id=",
        "user log from fastpath",
    ] {
        for sluice in [&fast, &classic] {
            sluice.wait_for_output(needle, LOG_DEADLINE).await?;
        }
        assert_eq!(
            fast.output_lines_containing(needle).len(),
            classic.output_lines_containing(needle).len(),
            "{needle}"
        );
    }
    // The failure block as the host logs it: the Executed line, then Result/Exception/Stack.
    let lines = fast.output_lines();
    let at = lines
        .iter()
        .position(|l| l.contains("Executed 'Functions.fails' (Failed, Id="))
        .context("no Executed line")?;
    let block: Vec<&str> = lines[at..].iter().take(4).map(String::as_str).collect();
    assert!(
        block.len() == 4 && block[0].ends_with("ms)") && block[0].contains(", Duration="),
        "{block:?}"
    );
    assert_eq!(block[1], "Result: Failure", "{block:?}");
    assert_eq!(
        block[2], "Exception: ValueError: no such thing",
        "{block:?}"
    );
    assert!(block[3].starts_with("Stack: "), "{block:?}");
    concurrent_invocations_each_get_their_own_answer(&fast).await
}

/// (In the same test: one start of the app at a time installs its requirements.)
async fn concurrent_invocations_each_get_their_own_answer(fast: &Sluice) -> anyhow::Result<()> {
    let requests = (0..200).map(|i| {
        let url = fast.url(&format!("/api/aecho/{i}?n={i}"));
        async move {
            let response = client().post(url).body(format!("body {i}")).send().await?;
            anyhow::ensure!(response.status() == 202, "status {}", response.status());
            let body: serde_json::Value = response.json().await?;
            anyhow::ensure!(
                body["params"]["id"].as_str() == Some(&*i.to_string()),
                "{body}"
            );
            anyhow::ensure!(body["body"] == format!("body {i}"), "{body}");
            Ok(())
        }
    });
    for result in futures_util::future::join_all(requests).await {
        result?;
    }
    Ok(())
}
