//! The label values and label sets of Sluice's families: each value bounded (a function
//! name, a method, a status class, a worker state, a restart reason — never a raw path or
//! an id).

use std::fmt::Write as _;
use std::sync::Arc;

use http::{Method, StatusCode};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A function name as a label value; requests that match no function are `-`.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
pub struct FunctionName(Option<Arc<str>>);

impl FunctionName {
    pub fn of(name: &Arc<str>) -> FunctionName {
        FunctionName(Some(name.clone()))
    }
}

impl std::fmt::Display for FunctionName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("-"))
    }
}

impl EncodeLabelValue for FunctionName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_deref().unwrap_or("-"))
    }
}

/// The request method, folded to the standard ones so the label stays bounded.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl From<&Method> for HttpMethod {
    fn from(method: &Method) -> HttpMethod {
        match *method {
            Method::GET => HttpMethod::Get,
            Method::HEAD => HttpMethod::Head,
            Method::POST => HttpMethod::Post,
            Method::PUT => HttpMethod::Put,
            Method::PATCH => HttpMethod::Patch,
            Method::DELETE => HttpMethod::Delete,
            Method::OPTIONS => HttpMethod::Options,
            _ => HttpMethod::Other,
        }
    }
}

impl EncodeLabelValue for HttpMethod {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Other => "OTHER",
        })
    }
}

/// `1xx` … `5xx`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl From<StatusCode> for StatusClass {
    fn from(status: StatusCode) -> StatusClass {
        match status.as_u16() {
            ..200 => StatusClass::Informational,
            200..300 => StatusClass::Success,
            300..400 => StatusClass::Redirection,
            400..500 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        })
    }
}

/// Where a worker process is in its life, as `sluice_workers{state}` counts it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum WorkerState {
    /// Launched, not yet through the start-up handshake.
    Starting,
    /// In the pool.
    Ready,
}

impl EncodeLabelValue for WorkerState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
        })
    }
}

/// Why a worker slot had to start a new worker.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RestartReason {
    /// The worker process exited (crash, kill, OOM).
    Exited,
    /// Sluice replaced it on purpose (function timeout, missed health pings).
    Recycled,
    /// A start attempt failed before the worker became ready.
    StartFailed,
}

impl EncodeLabelValue for RestartReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            RestartReason::Exited => "exited",
            RestartReason::Recycled => "recycled",
            RestartReason::StartFailed => "start_failed",
        })
    }
}

/// Why a request span was not exported over OTLP.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SpanDrop {
    /// The export queue was full (the collector is slow or down).
    QueueFull,
    /// The collector did not take the batch.
    ExportFailed,
}

impl EncodeLabelValue for SpanDrop {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanDropLabels {
    pub reason: SpanDrop,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub function: FunctionName,
    pub method: HttpMethod,
    pub status_class: StatusClass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: FunctionName,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub state: WorkerState,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub reason: RestartReason,
}

/// The runtime library the workers run; one set per app in practice.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub package: String,
    pub version: String,
    pub source: String,
}
