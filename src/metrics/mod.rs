//! Prometheus metrics: every family Sluice exports, registered in one place
//! ([`Metrics::new`]), with typed label sets whose values are bounded (function name,
//! method, status class, worker state, restart reason — never a raw path or an id).
//! Components get an `Arc<Metrics>` (or the handles they need, such as [`RpcTraffic`])
//! and only write to it; the admin listener encodes it. This module does no I/O except
//! reading `/proc/self` at scrape time for the `process_*` families.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod labels;
mod process;

pub use labels::*;
use process::ProcessCollector;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets in seconds: 1 ms up to the 30-minute function timeout.
const LATENCY_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 1800.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type LatencyFamily = Family<FunctionLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// EventStream payload bytes, counted by the rpc sessions.
#[derive(Debug, Clone, Default)]
pub struct RpcTraffic {
    pub received: Counter,
    pub sent: Counter,
}

/// Every metric Sluice exports, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// When this process began serving (taken as process start for the cold start).
    started: Instant,
    cold_start_recorded: AtomicBool,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: LatencyFamily,
    invocation_duration: LatencyFamily,
    queue_wait: Histogram,
    in_flight: Gauge,
    queued: Gauge,
    throttled: Counter,
    body_budget_rejections: Counter,
    function_timeouts: Counter,
    client_disconnects: Counter,
    workers: Family<WorkerLabels, Gauge>,
    /// `workers{state="starting"}` and `workers{state="ready"}`, held directly.
    workers_starting: Gauge,
    workers_ready: Gauge,
    worker_restarts: Family<RestartLabels, Counter>,
    spans_exported: Counter,
    spans_dropped: Family<SpanDropLabels, Counter>,
    rpc: RpcTraffic,
    cold_start: Gauge<f64, AtomicU64>,
    runtime_info: Family<RuntimeLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family. Call it first thing at start-up: its
    /// creation time is the start of `sluice_cold_start_seconds`.
    pub fn new() -> Metrics {
        let workers: Family<WorkerLabels, Gauge> = Family::default();
        // Both states always exist, so a dashboard sees 0 rather than nothing.
        let worker_state = |state| workers.get_or_create(&WorkerLabels { state }).clone();
        let workers_starting = worker_state(WorkerState::Starting);
        let workers_ready = worker_state(WorkerState::Ready);
        let worker_restarts: Family<RestartLabels, Counter> = Family::default();
        // Every reason starts at 0: rate() and increase() see the first restart.
        for reason in [
            RestartReason::Exited,
            RestartReason::Recycled,
            RestartReason::StartFailed,
        ] {
            let _ = worker_restarts.get_or_create(&RestartLabels { reason });
        }
        let m = Metrics {
            registry: Registry::default(),
            started: Instant::now(),
            cold_start_recorded: AtomicBool::new(false),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            invocation_duration: Family::new_with_constructor(latency_histogram),
            queue_wait: latency_histogram(),
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            throttled: Counter::default(),
            body_budget_rejections: Counter::default(),
            function_timeouts: Counter::default(),
            client_disconnects: Counter::default(),
            workers,
            workers_starting,
            workers_ready,
            worker_restarts,
            spans_exported: Counter::default(),
            spans_dropped: Family::default(),
            rpc: RpcTraffic::default(),
            cold_start: Gauge::default(),
            runtime_info: Family::default(),
        };
        let build_info: Family<BuildLabels, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);

        let mut registry = Registry::default();
        let r = &mut registry;
        r.register(
            "sluice_http_requests",
            "HTTP requests answered, by function (- when none matched), method and status class",
            m.http_requests.clone(),
        );
        r.register_with_unit(
            "sluice_http_request_duration",
            "Whole-request time in the front end, by function",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        r.register_with_unit(
            "sluice_invocation_duration",
            "Time waiting on the worker for one invocation, by function",
            Unit::Seconds,
            m.invocation_duration.clone(),
        );
        r.register_with_unit(
            "sluice_queue_wait",
            "Time a request waited in admission for an execution slot",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register(
            "sluice_requests_in_flight",
            "Requests being handled (routed or not, queued or executing)",
            m.in_flight.clone(),
        );
        r.register(
            "sluice_requests_queued",
            "Requests waiting for an execution slot (host.json throttles) or for a worker to become ready",
            m.queued.clone(),
        );
        r.register(
            "sluice_throttled",
            "Requests refused with 429 (maxOutstandingRequests reached)",
            m.throttled.clone(),
        );
        r.register(
            "sluice_body_budget_rejections",
            "Requests refused with 503 because their body did not fit the body budget",
            m.body_budget_rejections.clone(),
        );
        r.register(
            "sluice_function_timeouts",
            "Invocations that exceeded functionTimeout",
            m.function_timeouts.clone(),
        );
        r.register(
            "sluice_client_disconnects",
            "Requests whose client went away before the response was ready",
            m.client_disconnects.clone(),
        );
        r.register(
            "sluice_workers",
            "Worker processes by state",
            m.workers.clone(),
        );
        r.register(
            "sluice_worker_restarts",
            "New worker starts needed, by reason",
            m.worker_restarts.clone(),
        );
        r.register(
            "sluice_trace_spans_exported",
            "Request spans the OTLP collector accepted",
            m.spans_exported.clone(),
        );
        for reason in [SpanDrop::QueueFull, SpanDrop::ExportFailed] {
            let _ = m.spans_dropped.get_or_create(&SpanDropLabels { reason });
        }
        r.register(
            "sluice_trace_spans_dropped",
            "Request spans not exported over OTLP (queue full: the collector is slow or down; export failed)",
            m.spans_dropped.clone(),
        );
        // Named as the dashboards know them (no UNIT metadata: the unit is in the middle).
        r.register(
            "sluice_rpc_bytes_received",
            "EventStream payload bytes received from workers",
            m.rpc.received.clone(),
        );
        r.register(
            "sluice_rpc_bytes_sent",
            "EventStream payload bytes sent to workers",
            m.rpc.sent.clone(),
        );
        r.register_with_unit(
            "sluice_cold_start",
            "Time from process start to the first ready worker",
            Unit::Seconds,
            m.cold_start.clone(),
        );
        r.register(
            "sluice_runtime_info",
            "The runtime library the workers run (value 1)",
            m.runtime_info.clone(),
        );
        r.register(
            "sluice_build_info",
            "Sluice's version (value 1)",
            build_info,
        );
        r.register_collector(Box::new(ProcessCollector));
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition, exactly as prometheus-client encodes it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts one request as in flight until the returned guard is finished or
    /// dropped; dropped unfinished means the client went away.
    pub fn request_started(&self) -> RequestGuard<'_> {
        self.in_flight.inc();
        RequestGuard {
            metrics: self,
            finished: false,
        }
    }

    /// Records one answered request.
    pub fn request_answered(
        &self,
        function: FunctionName,
        method: HttpMethod,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.http_duration
            .get_or_create(&FunctionLabels {
                function: function.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.http_requests
            .get_or_create(&HttpLabels {
                function,
                method,
                status_class: status.into(),
            })
            .inc();
    }

    /// Counts a request as queued in admission until the guard is dropped.
    pub fn queued(&self) -> GaugeGuard<'_> {
        self.queued.inc();
        GaugeGuard(&self.queued)
    }

    pub fn queue_waited(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    pub fn invocation_took(&self, function: &Arc<str>, elapsed: Duration) {
        self.invocation_duration
            .get_or_create(&FunctionLabels {
                function: FunctionName::of(function),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn throttled(&self) {
        self.throttled.inc();
    }

    pub fn body_budget_rejected(&self) {
        self.body_budget_rejections.inc();
    }

    pub fn function_timed_out(&self) {
        self.function_timeouts.inc();
    }

    /// Counts a worker as starting until the guard is dropped.
    pub fn worker_starting(&self) -> GaugeGuard<'_> {
        self.workers_starting.inc();
        GaugeGuard(&self.workers_starting)
    }

    /// A worker joined the pool: counts it ready, notes its runtime library, and
    /// records the cold start when it is the first.
    pub fn worker_ready(&self, runtime: RuntimeLabels) {
        self.workers_ready.inc();
        self.runtime_info.get_or_create(&runtime).set(1);
        if !self.cold_start_recorded.swap(true, Ordering::AcqRel) {
            self.cold_start.set(self.started.elapsed().as_secs_f64());
        }
    }

    /// A ready worker left the pool.
    pub fn worker_removed(&self) {
        self.workers_ready.dec();
    }

    pub fn worker_restart(&self, reason: RestartReason) {
        self.worker_restarts
            .get_or_create(&RestartLabels { reason })
            .inc();
    }

    pub fn spans_exported(&self, count: u64) {
        self.spans_exported.inc_by(count);
    }

    pub fn span_dropped(&self, reason: SpanDrop, count: u64) {
        self.spans_dropped
            .get_or_create(&SpanDropLabels { reason })
            .inc_by(count);
    }

    /// The EventStream byte counters, for the rpc sessions.
    pub fn rpc_traffic(&self) -> RpcTraffic {
        self.rpc.clone()
    }
}

/// One request in flight; see [`Metrics::request_started`].
pub struct RequestGuard<'a> {
    metrics: &'a Metrics,
    finished: bool,
}

impl RequestGuard<'_> {
    /// The response is ready: the client did not go away.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        if !self.finished {
            self.metrics.client_disconnects.inc();
        }
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
