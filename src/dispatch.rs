//! One HTTP request through the layers below: route → auth → body → worker → response.
//! Every failure becomes an [`InvokeError`], and [`InvokeError::status`] is the one
//! place that decides its HTTP status (matched exhaustively, so a new failure cannot
//! ship without one).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tracing::{debug, error, warn};

use crate::admission::{Admission, Throttled};
use crate::convert::{self, ConvertError};
use crate::functions::Catalog;
use crate::keys::KeyStore;
use crate::metrics::{FunctionName, HttpMethod, Metrics};
use crate::pool::{Pool, PoolError};
use crate::proto::status_result::Status as RpcStatus;
use crate::proto::typed_data::Data;
use crate::proto::{ParameterBinding, TypedData, parameter_binding::RpcData};
use crate::rpc::session::InvokeFailure;

/// Shown for `GET /`, like the platform host's home page (health probes rely on a 200).
const HOME_PAGE: &str = "<!DOCTYPE html><html><head><title>Sluice</title></head>\
<body><h1>Your Functions app is up and running</h1></body></html>";

/// What the dispatcher needs, shared by every connection.
pub struct Dispatcher {
    pub pool: Arc<Pool>,
    /// Set once, from the first ready worker's index.
    pub catalog: Arc<OnceLock<Catalog>>,
    pub keys: KeyStore,
    pub body_limit: u64,
    /// How long a request waits for the first worker to become ready.
    pub startup_timeout: Duration,
    pub admission: Admission,
    /// host.json functionTimeout; `None` = unbounded.
    pub function_timeout: Option<Duration>,
    pub metrics: Arc<Metrics>,
}

/// A request body that stalls this long between chunks is abandoned (slow client).
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("function {function} timed out after {timeout:?}")]
    FunctionTimeout { function: String, timeout: Duration },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Worker(#[from] InvokeFailure),
    #[error("function {function} failed: {message}")]
    FunctionFailed { function: String, message: String },
    #[error("function response cannot be written: {0}")]
    BadResponse(#[from] ConvertError),
}

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
            // The platform's FunctionTimeoutException surfaces as a 500.
            InvokeError::FunctionTimeout { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            InvokeError::Worker(InvokeFailure::WorkerGone { .. }) => StatusCode::BAD_GATEWAY,
            InvokeError::Worker(
                InvokeFailure::UnknownFunction(_) | InvokeFailure::LoadFailed { .. },
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::FunctionFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            InvokeError::BadResponse(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The platform answers 401/404/500 with empty bodies; Sluice's own failures
    /// (overload, lost worker) carry a short reason.
    fn body(&self) -> Bytes {
        match self {
            InvokeError::Pool(_) | InvokeError::Worker(InvokeFailure::WorkerGone { .. }) => {
                Bytes::from(self.to_string())
            }
            _ => Bytes::new(),
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body()));
        *response.status_mut() = self.status();
        match self {
            // The host's throttle tells the scale controller more instances are needed.
            InvokeError::Throttled(_) => {
                response
                    .headers_mut()
                    .insert("x-function-scaleout", header::HeaderValue::from_static("1"));
            }
            // The rest of a stalled body is unread: this connection cannot be reused.
            InvokeError::BodyTimeout(_) => {
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

impl Dispatcher {
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let guard = self.metrics.request_started();
        let method = request.method().clone();
        let mut function = FunctionName::default();
        let response = self.respond(request, &mut function).await;
        guard.finish();
        self.metrics.request_answered(
            function,
            HttpMethod::from(&method),
            response.status(),
            started.elapsed(),
        );
        response
    }

    /// The response for one request; `function` is set once the request is routed.
    async fn respond(
        &self,
        request: Request<Incoming>,
        function: &mut FunctionName,
    ) -> Response<Full<Bytes>> {
        if request.uri().path() == "/" && matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = Response::new(Full::new(Bytes::from_static(HOME_PAGE.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html"),
            );
            return response;
        }
        // Kept for the error log only: cloning a Uri shares its bytes, no copy per request.
        let method = request.method().clone();
        let uri = request.uri().clone();
        match self.invoke(request, function).await {
            Ok(response) => response,
            Err(e) => {
                match &e {
                    InvokeError::FunctionFailed { function, message } => {
                        error!(function = %function, "function failed: {message}")
                    }
                    InvokeError::FunctionTimeout { function, timeout } => {
                        self.metrics.function_timed_out();
                        error!(function = %function, ?timeout, "function timed out; its worker will be recycled")
                    }
                    InvokeError::Throttled(_) => {
                        self.metrics.throttled();
                        debug!(%method, path = uri.path(), error = %e, "request refused")
                    }
                    InvokeError::NotFound | InvokeError::Unauthorized => {
                        debug!(%method, path = uri.path(), error = %e, "request refused")
                    }
                    _ => warn!(%method, path = uri.path(), error = %e, "request failed"),
                }
                e.into_response()
            }
        }
    }

    async fn invoke(
        &self,
        request: Request<Incoming>,
        routed: &mut FunctionName,
    ) -> Result<Response<Full<Bytes>>, InvokeError> {
        let catalog = match self.catalog.get() {
            Some(c) => c,
            None => {
                self.pool.wait_started(self.startup_timeout).await?;
                self.catalog.get().ok_or(PoolError::StartupFailed)?
            }
        };
        let hit = catalog
            .router
            .find(request.method(), request.uri().path())
            .ok_or(InvokeError::NotFound)?;
        if !self
            .keys
            .authorize(hit.auth, request.headers(), request.uri().query())
        {
            return Err(InvokeError::Unauthorized);
        }
        let function = &catalog.functions[hit.index];
        *routed = FunctionName::of(&function.name);
        let params = hit.params;
        let waiting = Instant::now();
        let queued = self.metrics.queued();
        let _ticket = self.admission.admit().await?;
        drop(queued);
        self.metrics.queue_waited(waiting.elapsed());

        let (parts, body) = request.into_parts();
        let body = self.read_body(&parts, body).await?;
        let rpc_http = convert::to_rpc_http(&parts, body, params);
        let input = vec![ParameterBinding {
            name: function.trigger_param.clone(),
            rpc_data: Some(RpcData::Data(TypedData {
                data: Some(Data::Http(Box::new(rpc_http))),
            })),
        }];

        let lease = self.pool.pick()?;
        let invocation = lease.session().invoke(&function.name, input);
        let invoked = Instant::now();
        let outcome = match self.function_timeout {
            None => Ok(invocation.await),
            Some(timeout) => tokio::time::timeout(timeout, invocation).await,
        };
        self.metrics
            .invocation_took(&function.name, invoked.elapsed());
        let mut response = match outcome {
            Ok(response) => response?,
            Err(_) => {
                // Python threads cannot be cancelled: replace the worker. Its other
                // invocations finish first (the supervisor waits for them).
                lease.session().request_recycle("function timeout");
                return Err(InvokeError::FunctionTimeout {
                    function: function.name.to_string(),
                    // `outcome` is only an Err when a timeout was set.
                    timeout: self.function_timeout.unwrap_or_default(),
                });
            }
        };
        drop(lease);
        let result = response.result.take().unwrap_or_default();
        if result.status != RpcStatus::Success as i32 {
            let message = match result.exception {
                Some(e) => format!("{}\n{}", e.message, e.stack_trace),
                None => result.result,
            };
            return Err(InvokeError::FunctionFailed {
                function: function.name.to_string(),
                message,
            });
        }
        Ok(convert::to_response(response, &function.output)?)
    }

    /// The whole body, refusing at once when Content-Length announces more than the
    /// limit and stopping as soon as a chunked body crosses it.
    async fn read_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<Bytes, InvokeError> {
        let too_large = InvokeError::PayloadTooLarge {
            limit: self.body_limit,
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit) {
            return Err(too_large);
        }
        let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
        let mut body = Limited::new(body, limit);
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame())
                .await
                .map_err(|_| InvokeError::BodyTimeout(BODY_IDLE_TIMEOUT))?;
            match frame {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        chunks.push(data);
                    }
                }
                Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(too_large);
                }
                Some(Err(e)) => return Err(InvokeError::BadBody(e.to_string())),
            }
        }
        // One chunk (the common case) is passed on without a copy.
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.swap_remove(0),
            _ => Bytes::from(chunks.concat()),
        })
    }
}
