//! Opt-in OTLP export of Sluice's request spans (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): one server span per sampled request — the span whose
//! `traceparent` the worker got — with a few bounded attributes (method, route, status,
//! function, invocation id, worker), sent over OTLP/gRPC by the `opentelemetry-otlp`
//! exporter.
//!
//! The request path only hands a small record to a bounded queue and never waits: when
//! the queue is full (the collector is slow or down) the span is dropped and counted in
//! `sluice_trace_spans_dropped_total{reason="queue_full"}`. One background task turns
//! records into the SDK's span data and exports them in batches; a batch the collector
//! does not take is dropped and counted (`reason="export_failed"`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::metrics::{FunctionName, Metrics, SpanDrop};
use crate::trace::TraceContext;

/// Spans waiting for export; beyond this they are dropped (≈ 2 s of a busy worker).
const QUEUE: usize = 2048;
/// Spans per export request.
const BATCH: usize = 512;
/// A span waits at most this long for its batch to fill.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export request may take this long (connect included) before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// String attribute values are cut to this many bytes.
const MAX_ATTRIBUTE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
}

/// One finished request, as the request path hands it over.
pub(crate) struct RequestSpan {
    pub(crate) trace: TraceContext,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) method: Method,
    pub(crate) status: u16,
    pub(crate) function: FunctionName,
    /// The function's route template, route prefix included.
    pub(crate) route: Option<String>,
    pub(crate) invocation: Option<uuid::Uuid>,
    pub(crate) worker: Option<String>,
}

/// The request path's end of the export queue.
pub(crate) struct Exporter {
    queue: mpsc::Sender<RequestSpan>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the export task on the current runtime.
    pub(crate) fn start(endpoint: &str, metrics: Arc<Metrics>) -> Result<Exporter, OtlpError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtlpError::Build {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("sluice")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let (queue, records) = mpsc::channel(QUEUE);
        let batches = Batches {
            exporter,
            scope: InstrumentationScope::builder("sluice")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            metrics: metrics.clone(),
            failing: false,
        };
        tokio::spawn(batches.run(records));
        info!(%endpoint, "exporting request spans over OTLP/gRPC");
        Ok(Exporter { queue, metrics })
    }

    /// Queues a finished request's span; never waits. Unsampled requests are not
    /// recorded (the caller said so in its `traceparent`).
    pub(crate) fn record(&self, span: RequestSpan) {
        if !span.trace.sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.metrics.span_dropped(SpanDrop::QueueFull, 1);
        }
    }
}

/// The export task's state.
struct Batches {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    metrics: Arc<Metrics>,
    /// The last export failed: the next success is logged, further failures are not.
    failing: bool,
}

impl Batches {
    async fn run(mut self, mut records: mpsc::Receiver<RequestSpan>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            // Wait for a first span, then for the batch to fill or its time to run out.
            match records.recv().await {
                Some(span) => batch.push(self.span_data(span)),
                None => return,
            }
            let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
            while batch.len() < BATCH {
                match tokio::time::timeout_at(deadline, records.recv()).await {
                    Ok(Some(span)) => batch.push(self.span_data(span)),
                    Ok(None) | Err(_) => break,
                }
            }
            self.export(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                .await;
        }
    }

    async fn export(&mut self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        let outcome = tokio::time::timeout(EXPORT_TIMEOUT, self.exporter.export(batch)).await;
        match outcome {
            Ok(Ok(())) => {
                self.metrics.spans_exported(count);
                if std::mem::take(&mut self.failing) {
                    info!("OTLP export works again");
                }
            }
            Ok(Err(e)) => self.failed(count, &e.to_string()),
            Err(_) => self.failed(count, "timed out"),
        }
    }

    fn failed(&mut self, count: u64, error: &str) {
        self.metrics.span_dropped(SpanDrop::ExportFailed, count);
        if !std::mem::replace(&mut self.failing, true) {
            warn!(
                %error,
                spans = count,
                "OTLP export failed; spans are dropped (and counted) until it works again"
            );
        }
    }

    fn span_data(&self, span: RequestSpan) -> SpanData {
        let route = span
            .route
            .as_deref()
            .map(|r| format!("/{}", r.trim_start_matches('/')));
        let name = match &route {
            Some(route) => format!("{} {route}", span.method),
            None => span.method.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", span.method.to_string()),
            KeyValue::new("http.response.status_code", i64::from(span.status)),
            KeyValue::new("faas.trigger", "http"),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", bounded(route)));
        }
        if span.route.is_some() {
            attributes.push(KeyValue::new(
                "faas.name",
                bounded(span.function.to_string()),
            ));
        }
        if let Some(id) = span.invocation {
            attributes.push(KeyValue::new("faas.invocation_id", id.to_string()));
        }
        if let Some(worker) = span.worker {
            attributes.push(KeyValue::new("sluice.worker", bounded(worker)));
        }
        let trace = &span.trace;
        SpanData {
            span_context: SpanContext::new(
                opentelemetry::TraceId::from_bytes(trace.trace_id.0.to_be_bytes()),
                opentelemetry::SpanId::from_bytes(trace.span_id.0.to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: trace.parent.map_or(opentelemetry::SpanId::INVALID, |p| {
                opentelemetry::SpanId::from_bytes(p.0.to_be_bytes())
            }),
            parent_span_is_remote: trace.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(name),
            start_time: span.start,
            end_time: span.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            // HTTP server spans: only 5xx is an error (OpenTelemetry semantic conventions).
            status: if span.status >= 500 {
                Status::error(format!("HTTP {}", span.status))
            } else {
                Status::Unset
            },
            instrumentation_scope: self.scope.clone(),
        }
    }
}

/// `value` cut to [`MAX_ATTRIBUTE`] bytes on a character boundary.
fn bounded(mut value: String) -> String {
    if value.len() > MAX_ATTRIBUTE {
        let mut end = MAX_ATTRIBUTE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_attribute_values_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(200);
        let cut = bounded(long);
        assert!(cut.len() <= MAX_ATTRIBUTE && cut.chars().all(|c| c == 'é'));
    }
}
