//! Every way a request can end without a function response, as one [`InvokeError`], and
//! the one place that decides each one's HTTP status, body and headers
//! ([`InvokeError::status`], matched exhaustively so that a new failure cannot ship without
//! one).

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::admission::Throttled;
use crate::body::{self, Body};
use crate::budget::OverBudget;
use crate::convert::ConvertError;
use crate::pool::PoolError;
use crate::proxy::ProxyError;
use crate::rpc::InvokeFailure;

/// Sent with a 503 for a body over the budget: bodies in memory drain within seconds.
const RETRY_AFTER_SECS: &str = "1";

/// Why a request got no function response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no route matches")]
    NotFound,
    #[error("missing or wrong function key")]
    Unauthorized,
    #[error("request body over the {limit}-byte limit")]
    PayloadTooLarge { limit: u64 },
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("the request body stalled for {0:?}")]
    BodyTimeout(Duration),
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("function {function} timed out after {timeout:?}")]
    FunctionTimeout { function: String, timeout: Duration },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Worker(#[from] InvokeFailure),
    #[error(transparent)]
    FunctionFailed(Box<FunctionFailure>),
    #[error("function response cannot be written: {0}")]
    BadResponse(#[from] ConvertError),
}

/// A function that raised, told as the host logs it: the `Executed … (Failed, …)` line and
/// the worker's exception (`Result: Failure` / `Exception: <Type>: <message>` / `Stack:`),
/// the lines people grep the platform's logs for.
#[derive(Debug)]
pub struct FunctionFailure {
    pub function: String,
    pub invocation_id: uuid::Uuid,
    pub duration: Duration,
    /// `<Type>: <message>` from the Python worker.
    pub message: String,
    pub stack: String,
}

impl std::fmt::Display for FunctionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Executed 'Functions.{}' (Failed, Id={}, Duration={}ms)\nResult: Failure\nException: {}\nStack: {}",
            self.function,
            self.invocation_id,
            self.duration.as_millis(),
            self.message,
            self.stack.trim_end()
        )
    }
}

impl std::error::Error for FunctionFailure {}

impl InvokeError {
    /// The single mapping from failure to HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            InvokeError::NotFound => StatusCode::NOT_FOUND,
            InvokeError::Unauthorized => StatusCode::UNAUTHORIZED,
            InvokeError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeError::BadBody(_) => StatusCode::BAD_REQUEST,
            InvokeError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            InvokeError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            InvokeError::OverBudget(_) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Proxy(ProxyError::BodyTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            InvokeError::Proxy(ProxyError::ClientBody(_)) => StatusCode::BAD_REQUEST,
            InvokeError::Proxy(ProxyError::BodyStalled(_)) => StatusCode::REQUEST_TIMEOUT,
            // The worker's server cannot be reached: as good as a lost worker.
            InvokeError::Proxy(ProxyError::Connect { .. }) => StatusCode::BAD_GATEWAY,
            // The platform fails the invocation ("Failed to proxy request"): a 500.
            InvokeError::Proxy(ProxyError::Forward(_) | ProxyError::BadUri(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // The platform's FunctionTimeoutException surfaces as a 500.
            InvokeError::FunctionTimeout { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Worker(InvokeFailure::WorkerGone { .. }) => StatusCode::BAD_GATEWAY,
            InvokeError::Worker(
                InvokeFailure::UnknownFunction(_) | InvokeFailure::LoadFailed { .. },
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::FunctionFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::BadResponse(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable name for the kind of failure, for folding repeated warnings.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            InvokeError::NotFound => "not_found",
            InvokeError::Unauthorized => "unauthorized",
            InvokeError::PayloadTooLarge { .. } => "payload_too_large",
            InvokeError::BadBody(_) => "bad_body",
            InvokeError::BodyTimeout(_) => "body_timeout",
            InvokeError::Throttled(_) => "throttled",
            InvokeError::OverBudget(_) => "over_budget",
            InvokeError::Proxy(ProxyError::BodyTooLarge { .. }) => "payload_too_large",
            InvokeError::Proxy(ProxyError::ClientBody(_)) => "bad_body",
            InvokeError::Proxy(ProxyError::BodyStalled(_)) => "body_timeout",
            InvokeError::Proxy(ProxyError::Connect { .. }) => "worker_http_unreachable",
            InvokeError::Proxy(ProxyError::Forward(_) | ProxyError::BadUri(_)) => "forward_failed",
            InvokeError::FunctionTimeout { .. } => "function_timeout",
            InvokeError::Pool(PoolError::NoWorker) => "no_worker",
            InvokeError::Pool(PoolError::NoWorkerWithin(_)) => "no_worker_in_time",
            InvokeError::Pool(PoolError::StartupFailed) => "startup_failed",
            InvokeError::Pool(PoolError::StartupTimeout(_)) => "startup_timeout",
            InvokeError::Worker(InvokeFailure::WorkerGone { .. }) => "worker_gone",
            InvokeError::Worker(InvokeFailure::UnknownFunction(_)) => "unknown_function",
            InvokeError::Worker(InvokeFailure::LoadFailed { .. }) => "load_failed",
            InvokeError::FunctionFailed(_) => "function_failed",
            InvokeError::BadResponse(_) => "bad_response",
        }
    }

    /// The platform answers 401/404/500 with empty bodies; Sluice's own failures
    /// (overload, lost worker) carry a short reason.
    fn body(&self) -> Bytes {
        match self {
            InvokeError::Pool(_)
            | InvokeError::OverBudget(_)
            | InvokeError::Proxy(ProxyError::Connect { .. })
            | InvokeError::Worker(InvokeFailure::WorkerGone { .. }) => {
                Bytes::from(self.to_string())
            }
            _ => Bytes::new(),
        }
    }

    pub(super) fn into_response(self) -> Response<Body> {
        let mut response = Response::new(body::full(self.body()));
        *response.status_mut() = self.status();
        match self {
            // The host's throttle tells the scale controller more instances are needed.
            InvokeError::Throttled(_) => {
                response
                    .headers_mut()
                    .insert("x-function-scaleout", header::HeaderValue::from_static("1"));
            }
            InvokeError::OverBudget(_) => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            // The rest of a stalled body is unread: this connection cannot be reused.
            InvokeError::BodyTimeout(_)
            | InvokeError::Proxy(ProxyError::BodyTooLarge { .. } | ProxyError::BodyStalled(_)) => {
                response.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            _ => {}
        }
        response
    }
}
