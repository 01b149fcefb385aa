//! One worker's EventStream: the platform's start-up handshake (WorkerInit →
//! FunctionsMetadata → FunctionLoad per function), then invocations correlated by
//! invocation id, and the worker's RpcLog lines printed with their labels.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::{Status, Streaming};
use tracing::{debug, error, info, warn};

use super::{Connection, RpcError};
use crate::metrics::RpcTraffic;
use crate::proto::rpc_log::{Level, RpcLogCategory};
use crate::proto::status_result::Status as RpcStatus;
use crate::proto::streaming_message::Content;
use crate::proto::{
    FunctionLoadRequest, FunctionsMetadataRequest, InvocationRequest, InvocationResponse,
    ParameterBinding, RpcFunctionMetadata, RpcLog, StatusResult, StreamingMessage,
    WorkerInitRequest, WorkerStatusRequest,
};
use crate::proxy::WorkerHttp;

/// Worker extensions are reported once per Sluice process, not once per worker.
static WARNED_EXTENSIONS: AtomicBool = AtomicBool::new(false);

/// A function as the worker indexed it.
pub type FunctionMeta = RpcFunctionMetadata;

type Pending = Mutex<HashMap<String, PendingInvocation>>;
/// WorkerStatus pings awaiting their response, by `StreamingMessage.request_id`.
type Pings = Mutex<HashMap<String, oneshot::Sender<()>>>;

struct PendingInvocation {
    function: Arc<str>,
    reply: oneshot::Sender<InvocationResponse>,
}

/// The runtime library a worker runs, as it reported it at start-up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeInfo {
    pub package: String,
    pub version: String,
    /// `app` (the app's own copy) or `bundled` (the worker's default).
    pub source: String,
    /// JSON description of registered worker extensions, if any.
    pub extensions: Option<String>,
}

impl RuntimeInfo {
    /// From the worker's WorkerMetadata custom properties (set by Sluice's worker; other
    /// workers leave them out, shown as "?").
    pub(super) fn reported(meta: Option<&crate::proto::WorkerMetadata>) -> RuntimeInfo {
        let prop = |key: &str| {
            meta.and_then(|m| m.custom_properties.get(key))
                .cloned()
                .unwrap_or_else(|| "?".to_owned())
        };
        RuntimeInfo {
            package: prop("sluice.runtime.package"),
            version: prop("sluice.runtime.version"),
            source: prop("sluice.runtime.source"),
            extensions: meta
                .and_then(|m| m.custom_properties.get("sluice.worker_extensions").cloned()),
        }
    }
}

/// A ready worker's stream.
pub struct Session {
    worker: String,
    runtime: RuntimeInfo,
    outbound: mpsc::Sender<Result<StreamingMessage, Status>>,
    /// Function name → this worker's function id (ids are generated per worker process).
    function_ids: HashMap<String, String>,
    /// Function id → why it failed to load; its invocations fail at once, like the host's
    /// cached load exception.
    load_errors: HashMap<String, String>,
    pending: Arc<Pending>,
    /// Invocations this worker answered (any result): proof it was healthy once.
    answered: std::sync::atomic::AtomicU64,
    pings: Arc<Pings>,
    /// The worker advertised the `WorkerStatus` capability, so pings get answers.
    answers_pings: bool,
    /// The worker advertised `HttpUri` (an http-v2 app): HTTP requests are forwarded
    /// to that server and the InvocationRequest carries route parameters only.
    http: Option<WorkerHttp>,
    closed: Arc<AtomicBool>,
    /// EventStream payload bytes, for the metrics.
    traffic: RpcTraffic,
    /// Set when Sluice wants this worker replaced (function timeout, failed pings).
    recycle: Mutex<Option<&'static str>>,
    recycle_requested: Notify,
}

/// Why one invocation produced no response.
#[derive(Debug, thiserror::Error)]
pub enum InvokeFailure {
    #[error("function {0} is not loaded on this worker")]
    UnknownFunction(String),
    #[error("function {function} failed to load: {reason}")]
    LoadFailed { function: String, reason: String },
    #[error("worker {worker} went away before answering")]
    WorkerGone { worker: String },
}

/// What the handshake needs to know about the app.
pub struct Handshake<'a> {
    pub worker_id: &'a str,
    pub app_dir: &'a Path,
    pub worker_dir: &'a Path,
    pub host_version: &'a str,
    /// Deadline for each start-up step (platform: init 2 min for Python, metadata 1 min).
    pub step_timeout: Duration,
    /// Host-side indexing, used when the worker leaves indexing to the host (v1 apps).
    pub host_index: &'a (dyn Fn() -> Result<Vec<FunctionMeta>, String> + Sync),
    /// Counts the stream's payload bytes both ways, for the whole session.
    pub traffic: RpcTraffic,
}

/// A worker past WorkerInit whose functions are not loaded yet. Normal start goes on to
/// [`Initialised::load`] at once; a placeholder worker waits here until assignment
/// ([`Initialised::reload_environment`], in `reload.rs`).
pub struct Initialised {
    pub(super) worker: String,
    pub(super) inbound: Streaming<StreamingMessage>,
    pub(super) outbound: mpsc::Sender<Result<StreamingMessage, Status>>,
    pub(super) runtime: RuntimeInfo,
    pub(super) answers_pings: bool,
    pub(super) http: Option<WorkerHttp>,
    pub(super) traffic: RpcTraffic,
    pub(super) step_timeout: Duration,
}

impl Session {
    /// Runs the start-up sequence on a freshly connected worker. Returns the session
    /// (reading its stream in the background) and the functions the worker indexed.
    pub async fn start(
        conn: Connection,
        hs: Handshake<'_>,
    ) -> Result<(Arc<Session>, Vec<FunctionMeta>), RpcError> {
        Initialised::init(conn, &hs).await?.load(&hs).await
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub fn runtime(&self) -> &RuntimeInfo {
        &self.runtime
    }

    /// The worker's own HTTP server, when the app streams HTTP (http-v2).
    pub fn http(&self) -> Option<&WorkerHttp> {
        self.http.as_ref()
    }

    /// Functions that failed to load, with the worker's reason.
    pub fn load_failures(&self) -> Vec<(&str, &str)> {
        let mut failures: Vec<(&str, &str)> = self
            .function_ids
            .iter()
            .filter_map(|(name, id)| Some((name.as_str(), self.load_errors.get(id)?.as_str())))
            .collect();
        failures.sort();
        failures
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Open and not due for replacement: may take new invocations.
    pub fn is_available(&self) -> bool {
        !self.is_closed() && !self.is_recycling()
    }

    /// Invocations sent and not yet answered (or abandoned).
    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Asks the supervisor to replace this worker; the first reason wins.
    pub fn request_recycle(&self, reason: &'static str) {
        let mut slot = self.recycle.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            self.recycle_requested.notify_one();
        }
    }

    /// A worker due for replacement takes no new invocations.
    pub fn is_recycling(&self) -> bool {
        self.recycle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Resolves with the reason once a recycle was requested.
    pub async fn recycle_requested(&self) -> &'static str {
        loop {
            let notified = self.recycle_requested.notified();
            if let Some(reason) = *self.recycle.lock().unwrap_or_else(|e| e.into_inner()) {
                return reason;
            }
            notified.await;
        }
    }

    /// One WorkerStatus round trip. `true` when the worker answered in time, or when it
    /// does not take pings (then there is nothing to learn from them).
    pub async fn ping(&self, timeout: Duration) -> bool {
        if !self.answers_pings {
            return true;
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id.clone(), tx);
        let message = StreamingMessage {
            request_id: request_id.clone(),
            content: Some(Content::WorkerStatusRequest(WorkerStatusRequest {})),
        };
        let answered = self.send(message).await.is_ok()
            && matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())));
        self.pings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request_id);
        answered
    }

    /// Sends one InvocationRequest and waits for its response.
    pub async fn invoke(
        &self,
        function: &Arc<str>,
        input_data: Vec<ParameterBinding>,
    ) -> Result<InvocationResponse, InvokeFailure> {
        self.invoke_as(uuid::Uuid::new_v4().to_string(), function, input_data)
            .await
    }

    /// [`Session::invoke`] under an id the caller chose (a forwarded http-v2 request
    /// carries it in `x-ms-invocation-id`).
    pub async fn invoke_as(
        &self,
        invocation_id: String,
        function: &Arc<str>,
        input_data: Vec<ParameterBinding>,
    ) -> Result<InvocationResponse, InvokeFailure> {
        let function_id = self
            .function_ids
            .get(&**function)
            .ok_or_else(|| InvokeFailure::UnknownFunction(function.to_string()))?;
        if let Some(reason) = self.load_errors.get(function_id) {
            return Err(InvokeFailure::LoadFailed {
                function: function.to_string(),
                reason: reason.clone(),
            });
        }
        let gone = || InvokeFailure::WorkerGone {
            worker: self.worker.clone(),
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock so the reader's drain cannot miss this entry.
            if self.is_closed() {
                return Err(gone());
            }
            pending.insert(
                invocation_id.clone(),
                PendingInvocation {
                    function: function.clone(),
                    reply: tx,
                },
            );
        }
        let message = StreamingMessage {
            request_id: String::new(),
            content: Some(Content::InvocationRequest(InvocationRequest {
                invocation_id: invocation_id.clone(),
                function_id: function_id.clone(),
                input_data,
                ..Default::default()
            })),
        };
        // From here on, a caller that goes away (client disconnect, timeout) must not
        // leave its entry behind: the guard removes it when this future is dropped.
        let _guard = PendingGuard {
            pending: &self.pending,
            invocation_id: &invocation_id,
        };
        if self.send(message).await.is_err() {
            return Err(gone());
        }
        let response = rx.await.map_err(|_| gone())?;
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(response)
    }

    /// Sends one message on the stream, counting its bytes.
    async fn send(&self, message: StreamingMessage) -> Result<(), ()> {
        let len = message.encoded_len() as u64;
        self.outbound.send(Ok(message)).await.map_err(|_| ())?;
        self.traffic.sent.inc_by(len);
        Ok(())
    }

    /// How many invocations this worker answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Initialised {
    /// WorkerInit: the worker imports its runtime library (and, for a v2 app, indexes it).
    pub async fn init(conn: Connection, hs: &Handshake<'_>) -> Result<Initialised, RpcError> {
        let Connection { inbound, outbound } = conn;
        let mut this = Initialised {
            worker: hs.worker_id.to_owned(),
            inbound,
            outbound,
            runtime: RuntimeInfo::default(),
            answers_pings: false,
            http: None,
            traffic: hs.traffic.clone(),
            step_timeout: hs.step_timeout,
        };
        let worker = this.worker.clone();
        let init = this
            .steps()
            .request(
                "WorkerInitResponse",
                Content::WorkerInitRequest(WorkerInitRequest {
                    host_version: hs.host_version.to_owned(),
                    capabilities: HashMap::new(),
                    log_categories: HashMap::new(),
                    worker_directory: hs.worker_dir.display().to_string(),
                    function_app_directory: hs.app_dir.display().to_string(),
                }),
            )
            .await?;
        let Content::WorkerInitResponse(init) = init else {
            unreachable_reply(&worker)?
        };
        check(&worker, "to initialise", init.result.as_ref())?;
        this.answers_pings = init.capabilities.contains_key("WorkerStatus");
        this.set_http(&init.capabilities)?;
        this.runtime = RuntimeInfo::reported(init.worker_metadata.as_ref());
        info!(
            worker = %worker,
            python = init.worker_metadata.as_ref().map_or("?", |m| m.runtime_version.as_str()),
            runtime = %this.runtime.package,
            runtime_version = %this.runtime.version,
            source = %this.runtime.source,
            "worker initialised"
        );
        this.warn_about_runtime();
        Ok(this)
    }

    pub fn worker(&self) -> &str {
        &self.worker
    }

    pub(super) fn steps(&mut self) -> Steps<'_> {
        Steps {
            worker: &self.worker,
            inbound: &mut self.inbound,
            outbound: &self.outbound,
            timeout: self.step_timeout,
            traffic: &self.traffic,
        }
    }

    /// Reads `HttpUri` from the worker's capabilities (WorkerInit, or an environment
    /// reload that made the app http-v2).
    pub(super) fn set_http(
        &mut self,
        capabilities: &HashMap<String, String>,
    ) -> Result<(), RpcError> {
        let http = WorkerHttp::from_capabilities(capabilities).map_err(|e| RpcError::Protocol {
            worker: self.worker.clone(),
            reason: e.to_string(),
        })?;
        if let Some(http) = http {
            info!(worker = %self.worker, uri = %http.authority(), "the app streams HTTP (http-v2): requests are forwarded to the worker's HTTP server");
            self.http = Some(http);
        }
        Ok(())
    }

    pub(super) fn warn_about_runtime(&self) {
        let runtime = &self.runtime;
        if let Some(extensions) = &runtime.extensions
            && !WARNED_EXTENSIONS.swap(true, Ordering::Relaxed)
        {
            warn!(
                %extensions,
                "the app registers worker extensions; they are not supported on Python 3.13+ and are ignored"
            );
        }
        if is_prerelease(&runtime.version) {
            warn!(worker = %self.worker, runtime = %runtime.package, version = %runtime.version, "the app pins a pre-release of the runtime library");
        }
    }

    /// FunctionsMetadata, then one FunctionLoad per function; the session is then ready.
    pub async fn load(
        mut self,
        hs: &Handshake<'_>,
    ) -> Result<(Arc<Session>, Vec<FunctionMeta>), RpcError> {
        let worker = self.worker.clone();
        let app_dir = hs.app_dir.display().to_string();
        let mut steps = self.steps();
        let reply = steps
            .request(
                "FunctionMetadataResponse",
                Content::FunctionsMetadataRequest(FunctionsMetadataRequest {
                    function_app_directory: app_dir,
                }),
            )
            .await?;
        let Content::FunctionMetadataResponse(metadata) = reply else {
            unreachable_reply(&worker)?
        };
        check(&worker, "to index the app", metadata.result.as_ref())?;
        let functions = if metadata.use_default_metadata_indexing {
            (hs.host_index)().map_err(|message| RpcError::Failed {
                worker: worker.clone(),
                stage: "to index function.json folders",
                message,
            })?
        } else {
            metadata.function_metadata_results
        };
        info!(worker = %worker, functions = functions.len(), "functions metadata received");

        // Every FunctionLoad is sent at once, as the platform host does; the responses
        // are matched by function id (the worker may answer in any order).
        for function in &functions {
            steps
                .send(Content::FunctionLoadRequest(FunctionLoadRequest {
                    function_id: function.function_id.clone(),
                    metadata: Some(function.clone()),
                    managed_dependency_enabled: false,
                }))
                .await?;
        }
        let mut function_ids = HashMap::new();
        let mut load_errors = HashMap::new();
        let names: HashMap<&str, &str> = functions
            .iter()
            .map(|f| (f.function_id.as_str(), f.name.as_str()))
            .collect();
        for _ in &functions {
            let Content::FunctionLoadResponse(load) = steps.expect("FunctionLoadResponse").await?
            else {
                unreachable_reply(&worker)?
            };
            let Some(name) = names.get(load.function_id.as_str()) else {
                return Err(RpcError::Protocol {
                    worker: worker.clone(),
                    reason: format!("load response for unknown function id {}", load.function_id),
                });
            };
            if let Err(reason) = status_ok(load.result.as_ref()) {
                error!(worker = %worker, function = %name, %reason, "function failed to load");
                load_errors.insert(load.function_id.clone(), reason);
            }
            function_ids.insert((*name).to_owned(), load.function_id.clone());
        }
        info!(worker = %worker, failed = load_errors.len(), "functions loaded");

        let pending: Arc<Pending> = Arc::default();
        let pings: Arc<Pings> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let Initialised {
            inbound,
            outbound,
            runtime,
            answers_pings,
            http,
            traffic,
            ..
        } = self;
        tokio::spawn(read_loop(
            worker.clone(),
            inbound,
            pending.clone(),
            pings.clone(),
            closed.clone(),
            traffic.clone(),
        ));
        let session = Session {
            worker,
            runtime,
            outbound,
            function_ids,
            load_errors,
            pending,
            answered: std::sync::atomic::AtomicU64::new(0),
            pings,
            answers_pings,
            http,
            closed,
            traffic,
            recycle: Mutex::new(None),
            recycle_requested: Notify::new(),
        };
        Ok((Arc::new(session), functions))
    }
}

/// Removes an invocation's pending entry when its caller stops waiting. The worker
/// cannot be told (Python workers do not take InvocationCancel); a late response is
/// then dropped as unknown.
struct PendingGuard<'a> {
    pending: &'a Pending,
    invocation_id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.invocation_id);
    }
}

/// The start-up steps: send one request, wait for its reply, printing any logs between.
pub(super) struct Steps<'a> {
    worker: &'a str,
    inbound: &'a mut Streaming<StreamingMessage>,
    outbound: &'a mpsc::Sender<Result<StreamingMessage, Status>>,
    timeout: Duration,
    traffic: &'a RpcTraffic,
}

impl Steps<'_> {
    pub(super) async fn request(
        &mut self,
        expected: &'static str,
        content: Content,
    ) -> Result<Content, RpcError> {
        self.send(content).await?;
        self.expect(expected).await
    }

    async fn send(&mut self, content: Content) -> Result<(), RpcError> {
        let message = StreamingMessage {
            request_id: uuid::Uuid::new_v4().to_string(),
            content: Some(content),
        };
        let len = message.encoded_len() as u64;
        self.outbound
            .send(Ok(message))
            .await
            .map_err(|_| RpcError::StreamClosed {
                worker: self.worker.to_owned(),
            })?;
        self.traffic.sent.inc_by(len);
        Ok(())
    }

    /// The next reply of the `expected` kind, printing logs that come before it.
    async fn expect(&mut self, expected: &'static str) -> Result<Content, RpcError> {
        let closed = || RpcError::StreamClosed {
            worker: self.worker.to_owned(),
        };
        let wait = async {
            loop {
                let message = match self.inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) | Err(_) => return Err(closed()),
                };
                self.traffic.received.inc_by(message.encoded_len() as u64);
                match message.content {
                    Some(Content::RpcLog(log)) => print_log(self.worker, None, &log),
                    Some(content) if content_name(&content) == expected => return Ok(content),
                    Some(other) => debug!(
                        worker = %self.worker,
                        message = content_name(&other),
                        "ignored during start-up"
                    ),
                    None => {}
                }
            }
        };
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| RpcError::Timeout {
                worker: self.worker.to_owned(),
                expected,
                timeout: self.timeout,
            })?
    }
}

/// PEP 440 pre-release or development version (`1.1.0b4`, `1.0.0rc1`, `1.0.0.dev0`).
pub fn is_prerelease(version: &str) -> bool {
    let v = version.to_ascii_lowercase();
    v.contains("dev")
        || v.contains("rc")
        || v.char_indices().any(|(i, c)| {
            (c == 'a' || c == 'b')
                && v[..i].ends_with(|p: char| p.is_ascii_digit())
                && v[i + 1..].starts_with(|n: char| n.is_ascii_digit())
        })
}

pub(super) fn unreachable_reply<T>(worker: &str) -> Result<T, RpcError> {
    Err(RpcError::Protocol {
        worker: worker.to_owned(),
        reason: "reply of an unexpected kind".into(),
    })
}

fn content_name(content: &Content) -> &'static str {
    match content {
        Content::WorkerInitResponse(_) => "WorkerInitResponse",
        Content::FunctionMetadataResponse(_) => "FunctionMetadataResponse",
        Content::FunctionLoadResponse(_) => "FunctionLoadResponse",
        Content::InvocationResponse(_) => "InvocationResponse",
        Content::WorkerStatusResponse(_) => "WorkerStatusResponse",
        Content::FunctionEnvironmentReloadResponse(_) => "FunctionEnvironmentReloadResponse",
        Content::RpcLog(_) => "RpcLog",
        _ => "another message",
    }
}

/// `Ok` for a Success result, else the worker's exception message and stack trace.
fn status_ok(result: Option<&StatusResult>) -> Result<(), String> {
    match result {
        Some(r) if r.status == RpcStatus::Success as i32 => Ok(()),
        Some(r) => Err(match &r.exception {
            Some(e) if !e.stack_trace.is_empty() => format!("{}\n{}", e.message, e.stack_trace),
            Some(e) => e.message.clone(),
            None => r.result.clone(),
        }),
        None => Err("no result".into()),
    }
}

pub(super) fn check(
    worker: &str,
    stage: &'static str,
    result: Option<&StatusResult>,
) -> Result<(), RpcError> {
    status_ok(result).map_err(|message| RpcError::Failed {
        worker: worker.to_owned(),
        stage,
        message,
    })
}

async fn read_loop(
    worker: String,
    mut inbound: Streaming<StreamingMessage>,
    pending: Arc<Pending>,
    pings: Arc<Pings>,
    closed: Arc<AtomicBool>,
    traffic: RpcTraffic,
) {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                debug!(worker = %worker, %status, "worker stream error");
                break;
            }
        };
        traffic.received.inc_by(message.encoded_len() as u64);
        match message.content {
            Some(Content::InvocationResponse(response)) => {
                let entry = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&response.invocation_id);
                match entry {
                    Some(p) => {
                        let _ = p.reply.send(response);
                    }
                    None => {
                        debug!(worker = %worker, invocation = %response.invocation_id, "response for an unknown invocation")
                    }
                }
            }
            Some(Content::RpcLog(log)) => {
                let function = pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&log.invocation_id)
                    .map(|p| p.function.clone());
                print_log(&worker, function.as_deref(), &log);
            }
            Some(Content::WorkerStatusResponse(_)) => {
                let waiter = pings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&message.request_id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(());
                }
            }
            Some(other) => debug!(worker = %worker, message = content_name(&other), "ignored"),
            None => {}
        }
    }
    // Dropping the senders answers every waiting invocation with WorkerGone, and every
    // waiting ping with a miss.
    pings.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    closed.store(true, Ordering::Release);
    let lost = pending.len();
    pending.clear();
    if lost > 0 {
        warn!(worker = %worker, invocations = lost, "worker stream closed with invocations in flight");
    } else {
        debug!(worker = %worker, "worker stream closed");
    }
}

/// Prints a worker's log record. User records keep their text as the event message so
/// they stay readable; labels (worker, function, invocation, logger) are fields.
fn print_log(worker: &str, function: Option<&str>, log: &RpcLog) {
    let function = function.unwrap_or("-");
    let invocation = if log.invocation_id.is_empty() {
        "-"
    } else {
        log.invocation_id.as_str()
    };
    let mut text = log.message.clone();
    if let Some(e) = &log.exception {
        text.push('\n');
        text.push_str(&e.message);
        text.push('\n');
        text.push_str(&e.stack_trace);
    }
    let system = log.log_category == RpcLogCategory::System as i32;
    let level = Level::try_from(log.level).unwrap_or(Level::Information);
    macro_rules! emit {
        ($mac:ident) => {
            $mac!(target: "function", worker, function, invocation, logger = %log.category, "{text}")
        };
    }
    match level {
        Level::Critical | Level::Error => emit!(error),
        Level::Warning => emit!(warn),
        Level::Information if !system => emit!(info),
        _ => emit!(debug),
    }
}

#[cfg(test)]
mod tests {
    use super::is_prerelease;

    #[test]
    fn pre_releases_are_recognised() {
        for v in [
            "1.1.0b4",
            "1.0.0a1",
            "1.0.0rc2",
            "1.0.0.dev0",
            "1.1.0b4.dev1",
        ] {
            assert!(is_prerelease(v), "{v}");
        }
        for v in ["1.2.1", "1.3.0", "10.0.0", "?"] {
            assert!(!is_prerelease(v), "{v}");
        }
    }
}
