//! Trace context end to end, with real workers: a client's W3C `traceparent` reaches the
//! function as `context.trace_context` — Sluice's own span, a child of the client's, in
//! the client's trace — and an app that uses the OpenTelemetry SDK itself
//! (`tests/apps/tracing`, PYTHON_ENABLE_OPENTELEMETRY=true, the SDK's in-memory exporter)
//! makes its spans children of Sluice's span, on the worker's Datum fast path and on the
//! runtime's protobuf entry. A missing or garbled `traceparent` starts a fresh valid trace.
//! http-v2 apps get the same context in the forwarded `traceparent`/`tracestate` headers.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Extras, LOG_DEADLINE, Options, Sluice, client};
use serde_json::Value;
use tokio::time::{Instant, sleep};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const CLIENT_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const CLIENT_TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

/// `(version, trace id, span id, flags)` of a well-formed version-00 traceparent.
fn parts(traceparent: &str) -> anyhow::Result<(&str, &str, &str, &str)> {
    let fields: Vec<&str> = traceparent.split('-').collect();
    let [version, trace, span, flags] = fields.as_slice() else {
        anyhow::bail!("{traceparent:?} does not have four fields");
    };
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    ensure!(
        *version == "00" && hex(trace, 32) && hex(span, 16) && hex(flags, 2),
        "{traceparent:?} is not a valid version-00 traceparent"
    );
    ensure!(
        trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'),
        "{traceparent:?} has an all-zero id"
    );
    Ok((version, trace, span, flags))
}

async fn get_json(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Value> {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.with_context(|| url.to_owned())?;
    ensure!(
        response.status() == 200,
        "{url} answered {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// What one function reported about its trace context and the span it made.
struct Report(Value);

impl Report {
    fn str(&self, pointer: &str) -> anyhow::Result<&str> {
        self.0
            .pointer(pointer)
            .and_then(Value::as_str)
            .with_context(|| format!("no {pointer} in {}", self.0))
    }

    /// The app's own span is in Sluice's span's trace and is its child.
    fn check_app_span(&self) -> anyhow::Result<()> {
        let (_, trace, span, _) = parts(self.str("/trace_parent")?)?;
        ensure!(self.str("/span/trace_id")? == trace, "{}", self.0);
        ensure!(self.str("/span/parent_span_id")? == span, "{}", self.0);
        ensure!(self.0.pointer("/span/recorded") == Some(&Value::Bool(true)));
        ensure!(self.0.pointer("/span/sampled") == Some(&Value::Bool(true)));
        Ok(())
    }
}

#[tokio::test]
async fn the_clients_trace_reaches_the_function_and_the_apps_own_spans() -> anyhow::Result<()> {
    let otel = Extras::default()
        .env("PYTHON_ENABLE_OPENTELEMETRY", "true")
        .arg("--access-log");
    // One after the other: the first start installs the app's requirements.
    let fast = Sluice::start_with(Options::new(app("tracing")), &otel).await?;
    let classic = Sluice::start_with(
        Options::new(app("tracing")),
        &otel.clone().env("SLUICE_WORKER_FASTPATH", "0"),
    )
    .await?;
    for (sluice, path) in [(&fast, "datum"), (&classic, "protobuf")] {
        for function in ["async_span", "sync_span"] {
            let report = Report(
                get_json(
                    &sluice.url(&format!("/api/{function}")),
                    &[
                        ("traceparent", CLIENT_TRACEPARENT),
                        ("tracestate", CLIENT_TRACESTATE),
                    ],
                )
                .await?,
            );
            let context = format!("{function} on the {path} path: {}", report.0);
            if function == "async_span" {
                ensure!(report.str("/path")? == path, "{context}");
            }
            let (_, trace, span, flags) = parts(report.str("/trace_parent")?)?;
            ensure!(trace == CLIENT_TRACE, "the trace id changed: {context}");
            ensure!(
                span != CLIENT_SPAN,
                "Sluice sent the client's span: {context}"
            );
            ensure!(flags == "01", "{context}");
            ensure!(
                report.str("/trace_state")? == CLIENT_TRACESTATE,
                "{context}"
            );
            ensure!(
                report.str("/attributes/faas.invocation_id")? == report.str("/invocation_id")?,
                "{context}"
            );
            report.check_app_span().context(context.clone())?;
            // Sluice's access line names the same span, and the client's as its parent.
            let invocation = report.str("/invocation_id")?;
            let line = access_line(sluice, invocation).await?;
            ensure!(
                line.contains(&format!(" trace_id={CLIENT_TRACE} ")),
                "{line}"
            );
            ensure!(line.contains(&format!(" span_id={span} ")), "{line}");
            ensure!(
                line.contains(&format!(" parent_span_id={CLIENT_SPAN}")),
                "{line}"
            );
        }
    }
    a_missing_or_garbled_traceparent_starts_a_fresh_trace(&fast).await
}

/// Sluice's access line for the invocation, once it is there.
async fn access_line(sluice: &Sluice, invocation: &str) -> anyhow::Result<String> {
    let needle = format!("invocation_id={invocation}");
    let until = Instant::now() + LOG_DEADLINE;
    loop {
        let lines = sluice.output_lines_containing("access: request");
        if let Some(line) = lines.into_iter().find(|l| l.contains(&needle)) {
            return Ok(line);
        }
        ensure!(Instant::now() < until, "no access line with {needle}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// (In the same test: one start of the app at a time installs its requirements.)
async fn a_missing_or_garbled_traceparent_starts_a_fresh_trace(
    sluice: &Sluice,
) -> anyhow::Result<()> {
    let garbled: &[&[(&str, &str)]] = &[
        &[],
        &[("traceparent", "garbage"), ("tracestate", "congo=1")],
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        )],
        &[(
            "traceparent",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        )],
    ];
    let mut seen = std::collections::HashSet::new();
    for headers in garbled {
        let report = Report(get_json(&sluice.url("/api/async_span"), headers).await?);
        let (_, trace, span, flags) = parts(report.str("/trace_parent")?)?;
        ensure!(trace != CLIENT_TRACE, "{headers:?}: {}", report.0);
        ensure!(span != CLIENT_SPAN && flags == "01", "{}", report.0);
        ensure!(
            report.str("/trace_state")?.is_empty(),
            "a tracestate without a valid traceparent was kept: {}",
            report.0
        );
        ensure!(seen.insert(trace.to_owned()), "trace id {trace} reused");
        report.check_app_span()?;
    }
    Ok(())
}

#[tokio::test]
async fn http_v2_forwarded_requests_carry_sluices_span() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("streaming"))).await?;
    let url = sluice.url("/api/trace_headers");
    let seen = get_json(
        &url,
        &[
            ("traceparent", CLIENT_TRACEPARENT),
            ("tracestate", CLIENT_TRACESTATE),
        ],
    )
    .await?;
    let traceparent = seen["traceparent"].as_str().context("no traceparent")?;
    let (_, trace, span, flags) = parts(traceparent)?;
    ensure!(
        trace == CLIENT_TRACE && span != CLIENT_SPAN && flags == "01",
        "{seen}"
    );
    ensure!(seen["tracestate"] == CLIENT_TRACESTATE, "{seen}");
    ensure!(seen["x-ms-invocation-id"].is_string(), "{seen}");

    let fresh = get_json(
        &url,
        &[("traceparent", "00-nonsense"), ("tracestate", "a=1")],
    )
    .await?;
    let (_, trace, _, _) = parts(fresh["traceparent"].as_str().context("no traceparent")?)?;
    ensure!(trace != CLIENT_TRACE, "{fresh}");
    ensure!(fresh["tracestate"].is_null(), "{fresh}");
    Ok(())
}
