//! OTLP export of Sluice's request spans, against a real OTLP/gRPC receiver started here
//! (the `TraceService` of the official OpenTelemetry protos, `opentelemetry-proto`): one
//! server span per sampled request with the right ids and attributes; a collector that is
//! down or hangs never slows or fails a request, and the spans it cost are counted.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Extras, Options, Sluice, client};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::time::{Instant, sleep};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const DEADLINE: Duration = Duration::from_secs(20);

fn app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/tracing")
}

/// An OTLP/gRPC trace receiver on 127.0.0.1:0 that keeps what it is sent (or, `hang`,
/// never answers).
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    hang: bool,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start(self) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        Ok((
            addr,
            tokio::spawn(async move {
                let _ = server.await;
            }),
        ))
    }

    /// Every span received so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for resource in &request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of an unlabelled (or fully labelled) sample on `/metrics`.
async fn metric(sluice: &Sluice, series: &str) -> anyhow::Result<f64> {
    Ok(sluice
        .metrics()
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0))
}

async fn start(endpoint: &str) -> anyhow::Result<Sluice> {
    Sluice::start_with(
        Options::new(app()),
        &Extras::default().arg("--otlp-endpoint").arg(endpoint),
    )
    .await
}

#[tokio::test]
async fn the_receiver_gets_one_span_per_request_with_its_attributes() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    let (addr, _server) = receiver.clone().start().await?;
    let sluice = start(&format!("http://{addr}")).await?;
    const N: usize = 5;
    for _ in 0..N {
        let response = client()
            .get(sluice.url("/api/log?n=1"))
            .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
            .send()
            .await?;
        ensure!(response.status() == 200);
    }
    // Not sampled by the caller: not recorded.
    let unsampled = client()
        .get(sluice.url("/api/log?n=2"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"))
        .send()
        .await?;
    ensure!(unsampled.status() == 200);
    let missing = client().get(sluice.url("/api/nothing")).send().await?;
    ensure!(missing.status() == 404);

    let until = Instant::now() + DEADLINE;
    while receiver.spans().len() < N + 1 {
        ensure!(
            Instant::now() < until,
            "the receiver got {} spans",
            receiver.spans().len()
        );
        sleep(Duration::from_millis(50)).await;
    }
    // Give a stray extra span the time to arrive before counting.
    sleep(Duration::from_millis(1500)).await;
    let spans = receiver.spans();
    ensure!(spans.len() == N + 1, "{} spans: {spans:#?}", spans.len());

    let mut invocations = std::collections::HashSet::new();
    for (service, span) in spans.iter().filter(|(_, s)| s.name == "GET /api/log") {
        ensure!(service == "sluice", "service.name {service:?}");
        ensure!(hex(&span.trace_id) == CLIENT_TRACE, "{span:?}");
        ensure!(hex(&span.parent_span_id) == CLIENT_SPAN, "{span:?}");
        ensure!(span.span_id.len() == 8 && hex(&span.span_id) != CLIENT_SPAN);
        ensure!(span.kind == SpanKind::Server as i32, "{span:?}");
        ensure!(span.end_time_unix_nano >= span.start_time_unix_nano);
        let a = &span.attributes;
        ensure!(
            string_attr(a, "http.route").as_deref() == Some("/api/log"),
            "{a:?}"
        );
        ensure!(string_attr(a, "http.request.method").as_deref() == Some("GET"));
        ensure!(matches!(
            attr(a, "http.response.status_code"),
            Some(AnyValue::IntValue(200))
        ));
        ensure!(
            string_attr(a, "faas.name").as_deref() == Some("log"),
            "{a:?}"
        );
        ensure!(string_attr(a, "sluice.worker").is_some_and(|w| !w.is_empty()));
        let invocation = string_attr(a, "faas.invocation_id").context("no invocation id")?;
        ensure!(invocation.len() == 36, "{invocation}");
        invocations.insert(invocation);
    }
    ensure!(
        invocations.len() == N,
        "{} distinct request spans in {:?}",
        invocations.len(),
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );
    let (_, not_found) = spans
        .iter()
        .find(|(_, s)| s.name == "GET")
        .context("no span for the 404")?;
    ensure!(
        not_found.parent_span_id.is_empty(),
        "a fresh trace has no parent"
    );
    ensure!(matches!(
        attr(&not_found.attributes, "http.response.status_code"),
        Some(AnyValue::IntValue(404))
    ));
    ensure!(attr(&not_found.attributes, "faas.name").is_none());
    ensure!(metric(&sluice, "sluice_trace_spans_exported_total").await? == (N + 1) as f64);
    Ok(())
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_requests() -> anyhow::Result<()> {
    // A port nothing listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let sluice = start(&format!("http://{closed}")).await?;
    for _ in 0..20 {
        let response = client()
            .get(sluice.url("/api/log?n=3"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        ensure!(response.status() == 200);
    }
    let series = r#"sluice_trace_spans_dropped_total{reason="export_failed"}"#;
    let until = Instant::now() + DEADLINE;
    while metric(&sluice, series).await? < 20.0 {
        ensure!(
            Instant::now() < until,
            "{series} = {}",
            metric(&sluice, series).await?
        );
        sleep(Duration::from_millis(100)).await;
    }
    sluice
        .wait_for_output("OTLP export failed", common::LOG_DEADLINE)
        .await?;
    ensure!(
        sluice.output_lines_containing("OTLP export failed").len() == 1,
        "one warning per failure streak"
    );
    Ok(())
}

#[tokio::test]
async fn a_collector_that_hangs_never_delays_a_request() -> anyhow::Result<()> {
    let receiver = Receiver {
        hang: true,
        ..Receiver::default()
    };
    let (addr, _server) = receiver.start().await?;
    let sluice = start(&format!("http://{addr}")).await?;
    // More spans than the export queue holds while the one export in flight hangs.
    const REQUESTS: usize = 4000;
    const CONCURRENCY: usize = 32;
    let started = Instant::now();
    let url = sluice.url("/api/log?n=4");
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut slowest = Duration::ZERO;
            for _ in (worker..REQUESTS).step_by(CONCURRENCY) {
                let sent = Instant::now();
                let response = client.get(&url).send().await?;
                anyhow::ensure!(response.status() == 200, "{}", response.status());
                slowest = slowest.max(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(slowest)
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await??);
    }
    eprintln!(
        "{REQUESTS} requests in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    ensure!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}"
    );
    let dropped = metric(
        &sluice,
        r#"sluice_trace_spans_dropped_total{reason="queue_full"}"#,
    )
    .await?;
    ensure!(dropped > 0.0, "no span was dropped for a full queue");
    Ok(())
}
