//! One HTTP request through the layers below: route → auth → body → worker → response,
//! all against the one app generation the request loaded first. Every failure becomes an
//! [`InvokeError`] (`error.rs`), whose `status` is the one place that decides its HTTP
//! status; the request body is read within its limits in `request_body.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::Limited;
use hyper::body::Incoming;
use tracing::{debug, error, warn};

use crate::access;
use crate::admission::Ticket;
use crate::body::{self, Body, IdleTimeout};
use crate::budget::BodyBudget;
use crate::config::DispatchSettings;
use crate::convert;
use crate::cors::CorsPolicy;
use crate::functions::FunctionInfo;
use crate::generation::{Current, Generation, Held};
use crate::keys::KeyStore;
use crate::metrics::{FunctionName, HttpMethod, Metrics};
use crate::otlp;
use crate::pool::{Lease, PoolError};
use crate::proto::status_result::Status as RpcStatus;
use crate::proto::typed_data::Data;
use crate::proto::{ParameterBinding, TypedData, parameter_binding::RpcData};
use crate::proxy::{self, WorkerHttp};
use crate::repeats::{self, Repeats};
use crate::rpc::{Answer, Recycle};
use crate::trace::TraceContext;

mod error;
mod request_body;

pub use error::{FunctionFailure, InvokeError};
use request_body::{BODY_IDLE_TIMEOUT, declared_length};

/// The host's reason for an HTTP-triggered invocation.
const HTTP_REASON: &str = "This function was programmatically called via the host APIs.";

/// Shown for `GET /`, like the platform host's home page (health probes rely on a 200).
const HOME_PAGE: &str = "<!DOCTYPE html><html><head><title>Sluice</title></head>\
<body><h1>Your Functions app is up and running</h1></body></html>";

/// What the dispatcher needs, shared by every connection.
pub struct Dispatcher {
    /// The app generation (workers, functions, host.json settings) requests go to.
    pub current: Current,
    pub keys: KeyStore,
    pub body_limit: u64,
    /// Request bodies held in memory at once, across requests.
    pub body_budget: BodyBudget,
    /// How long a request waits for the first worker to become ready.
    pub startup_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// `--access-log`: one `access` line per answered request.
    pub access_log: bool,
    /// Request-path warnings, folded when the same failure repeats.
    pub(crate) repeats: Arc<Repeats>,
    /// `--otlp-endpoint`: request spans exported over OTLP.
    pub(crate) otlp: Option<otlp::Exporter>,
}

/// What a request turned out to be, filled in as it is served (for the metrics and the
/// access log).
#[derive(Default)]
struct Routed {
    function: FunctionName,
    invocation: Option<uuid::Uuid>,
    /// Only while exporting spans: the function's route template and the worker.
    route: Option<String>,
    worker: Option<String>,
}

/// One invocation of a routed request.
struct Call<'a> {
    function: &'a FunctionInfo,
    id: uuid::Uuid,
    trace: &'a TraceContext,
}

impl Dispatcher {
    /// The dispatcher for one app: body limits from Sluice's configuration; workers,
    /// functions, throttles and functionTimeout from the current generation.
    pub fn new(
        config: DispatchSettings,
        current: Current,
        keys: KeyStore,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        Dispatcher {
            current,
            keys,
            body_limit: config.body_limit,
            body_budget: BodyBudget::new(config.body_budget),
            startup_timeout: config.startup_timeout,
            metrics: metrics.clone(),
            access_log: config.access_log,
            repeats: Repeats::start(),
            otlp: config.otlp_endpoint.as_deref().and_then(|endpoint| {
                otlp::Exporter::start(endpoint, metrics.clone())
                    .inspect_err(|e| error!(error = %e, "request spans are not exported"))
                    .ok()
            }),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let wall_start = self.otlp.as_ref().map(|_| SystemTime::now());
        let guard = self.metrics.request_started();
        let method = request.method().clone();
        // Cloning a Uri shares its bytes; only the access log needs it.
        let uri = self.access_log.then(|| request.uri().clone());
        let mut routed = Routed::default();
        // Sluice's span for this request: a child of the caller's, if it sent one.
        let trace = TraceContext::for_request(request.headers());
        // Held until the response is complete: a reload retires this generation's
        // workers only after every request that loaded it is done.
        let generation = self.current.load();
        let response = match &generation.cors {
            None => {
                self.respond(request, &generation, &trace, &mut routed)
                    .await
            }
            Some(cors) => {
                self.respond_with_cors(cors, request, &generation, &trace, &mut routed)
                    .await
            }
        };
        guard.finish();
        let Routed {
            function,
            invocation,
            route,
            worker,
        } = routed;
        let status = response.status();
        if let (Some(exporter), Some(start)) = (&self.otlp, wall_start) {
            exporter.record(otlp::RequestSpan {
                trace: trace.clone(),
                start,
                end: SystemTime::now(),
                method: method.clone(),
                status: status.as_u16(),
                function: function.clone(),
                route,
                invocation,
                worker,
            });
        }
        let entry = uri.map(|uri| access::Entry {
            method: method.clone(),
            uri,
            started,
            function: function.clone(),
            invocation,
            trace,
        });
        self.metrics.request_answered(
            function,
            HttpMethod::from(&method),
            status,
            started.elapsed(),
        );
        match entry {
            Some(entry) => entry.log_when_sent(response),
            None => response,
        }
    }

    /// CORS as the host's middleware does it: a preflight is answered here and reaches no
    /// function; an allowed origin's actual request gets the allow-origin headers on
    /// whatever answers it (the function, or an error).
    async fn respond_with_cors(
        &self,
        cors: &CorsPolicy,
        request: Request<Incoming>,
        generation: &Held<'_>,
        trace: &TraceContext,
        routed: &mut Routed,
    ) -> Response<Body> {
        if let Some(preflight) = cors.preflight(request.method(), request.headers()) {
            debug!(path = request.uri().path(), status = %preflight.status(), "CORS preflight");
            return preflight.map(|()| body::empty());
        }
        let allowed = cors.actual(request.headers());
        let mut response = self.respond(request, generation, trace, routed).await;
        if let Some(allowed) = allowed {
            cors.decorate(allowed, response.headers_mut());
        }
        response
    }

    /// The response for one request; `routed` is filled in as the request is routed
    /// and invoked.
    async fn respond(
        &self,
        request: Request<Incoming>,
        generation: &Held<'_>,
        trace: &TraceContext,
        routed: &mut Routed,
    ) -> Response<Body> {
        if request.uri().path() == "/" && matches!(*request.method(), Method::GET | Method::HEAD) {
            let mut response = Response::new(body::full(Bytes::from_static(HOME_PAGE.as_bytes())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html"),
            );
            return response;
        }
        // Kept for the error log only: cloning a Uri shares its bytes, no copy per request.
        let method = request.method().clone();
        let uri = request.uri().clone();
        match self.invoke(request, generation, trace, routed).await {
            Ok(response) => response,
            Err(e) => {
                let path = uri.path();
                match &e {
                    InvokeError::FunctionFailed(failure) => {
                        error!(function = %failure.function, invocation_id = %failure.invocation_id, "{failure}")
                    }
                    InvokeError::FunctionTimeout { function, timeout } => {
                        self.metrics.function_timed_out();
                        let id = routed
                            .invocation
                            .map(|id| id.to_string())
                            .unwrap_or_default();
                        let secs = timeout.as_secs();
                        error!(
                            function = %function,
                            invocation_id = %id,
                            "Timeout value of {:02}:{:02}:{:02} exceeded by function 'Functions.{function}' (Id: '{id}'). Initiating cancellation. Its worker is recycled (a Python thread cannot be cancelled).",
                            secs / 3600,
                            secs / 60 % 60,
                            secs % 60
                        )
                    }
                    InvokeError::OverBudget(_) => {
                        self.metrics.body_budget_rejected();
                        if self.first_of_its_kind(&e, &routed.function, "request refused") {
                            warn!(%method, path, error = %e, "request refused")
                        }
                    }
                    InvokeError::Throttled(_) => {
                        self.metrics.throttled();
                        debug!(%method, path, error = %e, "request refused")
                    }
                    InvokeError::NotFound | InvokeError::Unauthorized => {
                        debug!(%method, path, error = %e, "request refused")
                    }
                    // Many requests fail alike at once (a worker crashed with all of its
                    // requests in flight, no worker ready): one line, then a count.
                    _ => {
                        if self.first_of_its_kind(&e, &routed.function, "request failed") {
                            warn!(%method, path, function = %routed.function, error = %e, "request failed")
                        }
                    }
                }
                e.into_response()
            }
        }
    }

    /// `true` for the first failure of this kind on this function in the current
    /// interval (log it); later ones are counted and reported once per interval.
    fn first_of_its_kind(
        &self,
        error: &InvokeError,
        function: &FunctionName,
        message: &'static str,
    ) -> bool {
        let key = repeats::Key {
            kind: error.kind(),
            function: function.clone(),
        };
        self.repeats.first(key, message, tracing::Level::WARN)
    }

    /// A worker for one invocation. When none is ready but one is coming (a slot starting,
    /// or replacing a crashed or recycled worker), the request waits for it — counted as
    /// queued, bounded by the start-up timeout — rather than failing.
    async fn lease(&self, generation: &Generation) -> Result<Lease, PoolError> {
        if let Ok(lease) = generation.pool.pick() {
            return Ok(lease);
        }
        let _queued = self.metrics.queued();
        generation.pool.lease(self.startup_timeout).await
    }

    /// The worker's id, for the exported span (only while exporting).
    fn note_worker(&self, routed: &mut Routed, lease: &Lease) {
        if self.otlp.is_some() {
            routed.worker = Some(lease.session().worker().to_owned());
        }
    }

    async fn invoke(
        &self,
        request: Request<Incoming>,
        generation: &Held<'_>,
        trace: &TraceContext,
        routed: &mut Routed,
    ) -> Result<Response<Body>, InvokeError> {
        let catalog = match generation.catalog.get() {
            Some(c) => c,
            None => {
                generation.pool.wait_started(self.startup_timeout).await?;
                generation.catalog.get().ok_or(PoolError::StartupFailed)?
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
        routed.function = FunctionName::of(&function.name);
        if self.otlp.is_some() {
            routed.route = Some(function.route.clone());
        }
        let params = hit.params;
        let waiting = Instant::now();
        let queued = self.metrics.queued();
        let ticket = generation.admission.admit().await?;
        drop(queued);
        self.metrics.queue_waited(waiting.elapsed());

        let (parts, body) = request.into_parts();
        if declared_length(&parts).is_some_and(|n| n > self.body_limit) {
            return Err(self.too_large());
        }
        let call = Call {
            function,
            id: uuid::Uuid::new_v4(),
            trace,
        };
        routed.invocation = Some(call.id);
        if catalog.streams_http {
            let lease = self.lease(generation).await?;
            self.note_worker(routed, &lease);
            if let Some(target) = lease.session().http().cloned() {
                let held = (lease, ticket, generation);
                return self.forward(&call, params, parts, body, held, target).await;
            }
        }
        // The worker is picked once the body is in: a slow upload holds no worker and does
        // not count as in flight on one.
        let (body, reservation) = self.read_body(&parts, body).await?;
        let lease = self.lease(generation).await?;
        self.note_worker(routed, &lease);
        let rpc_http = convert::to_rpc_http(&parts, body, params);
        let answer = self.run(generation, &call, &lease, rpc_http).await?;
        // The request body is gone once the worker answered.
        drop(reservation);
        // A large response body still on its way from the worker streams to the client,
        // its request outstanding and its worker in service until it ends (as http-v2's).
        let streamed = answer
            .body
            .filter(|streamed| function.output.is(streamed.binding.as_deref()))
            .map(|streamed| body::streamed(streamed.body, (lease, ticket, generation.keep())));
        let response = answer.response;
        Ok(convert::to_response(response, &function.output, streamed)?)
    }

    /// An http-v2 function: the raw request is forwarded to the worker's HTTP server
    /// while the InvocationRequest (route parameters only) goes over gRPC; the worker's
    /// response streams back once both have answered, as the platform does. Both carry
    /// the same trace context (the forwarded `traceparent` is Sluice's span).
    async fn forward(
        &self,
        call: &Call<'_>,
        params: Vec<(String, String)>,
        mut parts: http::request::Parts,
        body: Incoming,
        (lease, ticket, generation): (Lease, Ticket, &Held<'_>),
        target: WorkerHttp,
    ) -> Result<Response<Body>, InvokeError> {
        let invocation_id = call.id.to_string();
        let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
        call.trace.inject(&mut parts.headers);
        let forwarded = async {
            let body = IdleTimeout::new(Limited::new(body, limit), BODY_IDLE_TIMEOUT);
            Ok::<_, InvokeError>(
                proxy::forward(&target, &invocation_id, parts, body, self.body_limit).await?,
            )
        };
        let invoked = self.run(generation, call, &lease, convert::route_params_only(params));
        // A failure on either side ends the request at once: a function that raised
        // never completes the HTTP side, and a failed forward leaves the function waiting.
        let (response, _) = tokio::try_join!(forwarded, invoked)?;
        let (parts, incoming) = response.into_parts();
        // The request stays outstanding (host.json throttles), and its generation's
        // worker in service, until its body ends.
        Ok(Response::from_parts(
            parts,
            body::streamed(incoming, (lease, ticket, generation.keep())),
        ))
    }

    /// One InvocationRequest on the leased worker, under `functionTimeout`; a result
    /// other than Success is an error.
    async fn run(
        &self,
        generation: &Generation,
        call: &Call<'_>,
        lease: &Lease,
        rpc_http: crate::proto::RpcHttp,
    ) -> Result<Answer, InvokeError> {
        let function = call.function;
        let invocation_id = call.id.to_string();
        let input = vec![ParameterBinding {
            name: function.trigger_param.clone(),
            rpc_data: Some(RpcData::Data(TypedData {
                data: Some(Data::Http(Box::new(rpc_http))),
            })),
        }];
        let trace_context = call.trace.to_rpc(&invocation_id);
        let invocation =
            lease
                .session()
                .invoke_as(invocation_id, &function.name, input, Some(trace_context));
        debug!(
            function = %function.name,
            invocation_id = %call.id,
            "Executing 'Functions.{}' (Reason='{HTTP_REASON}', Id={})",
            function.name,
            call.id
        );
        let invoked = Instant::now();
        let outcome = match generation.function_timeout {
            None => Ok(invocation.await),
            Some(timeout) => tokio::time::timeout(timeout, invocation).await,
        };
        self.metrics
            .invocation_took(&function.name, invoked.elapsed());
        let mut answer = match outcome {
            Ok(answer) => answer?,
            Err(_) => {
                // Python threads cannot be cancelled: replace the worker. Its other
                // invocations finish first (the supervisor waits for them).
                lease.session().request_recycle(Recycle::FunctionTimeout);
                return Err(InvokeError::FunctionTimeout {
                    function: function.name.to_string(),
                    // `outcome` is only an Err when a timeout was set.
                    timeout: generation.function_timeout.unwrap_or_default(),
                });
            }
        };
        let result = answer.response.result.take().unwrap_or_default();
        let duration = invoked.elapsed();
        if result.status != RpcStatus::Success as i32 {
            let (message, stack) = match result.exception {
                Some(e) => (e.message, e.stack_trace),
                None => (result.result, String::new()),
            };
            return Err(InvokeError::FunctionFailed(Box::new(FunctionFailure {
                function: function.name.to_string(),
                invocation_id: call.id,
                duration,
                message,
                stack,
            })));
        }
        debug!(
            function = %function.name,
            invocation_id = %call.id,
            "Executed 'Functions.{}' (Succeeded, Id={}, Duration={}ms)",
            function.name,
            call.id,
            duration.as_millis()
        );
        Ok(answer)
    }
}
