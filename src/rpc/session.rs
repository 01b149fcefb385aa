//! One ready worker's EventStream (after the handshake in `handshake.rs`): invocations
//! correlated by invocation id, WorkerStatus pings, and the worker's RpcLog lines
//! printed with their labels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tracing::{debug, warn};

use super::error::RpcError;
use super::handshake::{Handshake, Initialised, Loaded};
use super::inbound::{Inbound, StreamedBody};
use super::messages::{FunctionMeta, RuntimeInfo, content_name, print_log};
use super::stream::{Frame, Outbound};
use crate::metrics::RpcTraffic;
use crate::proto::streaming_message::Content;
use crate::proto::{
    InvocationRequest, InvocationResponse, ParameterBinding, RpcTraceContext, StreamingMessage,
    WorkerStatusRequest,
};
use crate::proxy::WorkerHttp;

/// Invocations awaiting their response, by invocation id. `drained` wakes whoever waits for
/// the last one to leave (answered, abandoned by its caller, or lost with the stream).
#[derive(Default)]
struct Pending {
    map: Mutex<HashMap<String, PendingInvocation>>,
    drained: Notify,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PendingInvocation>> {
        // A poisoned map only means another thread panicked mid-update; the map is fine.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, invocation_id: &str) -> Option<PendingInvocation> {
        let mut map = self.lock();
        let entry = map.remove(invocation_id);
        if entry.is_some() && map.is_empty() {
            self.drained.notify_waiters();
        }
        entry
    }
}

/// WorkerStatus pings awaiting their response, by `StreamingMessage.request_id`.
type Pings = Mutex<HashMap<String, oneshot::Sender<()>>>;

struct PendingInvocation {
    function: Arc<str>,
    reply: oneshot::Sender<Answer>,
}

/// A worker's answer to one invocation.
pub struct Answer {
    pub response: InvocationResponse,
    /// The HTTP body, when it follows the response (a large one, see `inbound.rs`); the
    /// response then holds an empty placeholder in its place.
    pub body: Option<StreamedBody>,
}

/// A ready worker's stream.
pub struct Session {
    worker: String,
    runtime: RuntimeInfo,
    outbound: Outbound,
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
    recycle: Mutex<Option<Recycle>>,
    recycle_requested: Notify,
}

/// Why Sluice wants a worker replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Recycle {
    /// An invocation outlived host.json's functionTimeout (Python threads cannot be
    /// cancelled, so the process goes).
    #[error("function timeout")]
    FunctionTimeout,
    /// The worker missed consecutive WorkerStatus pings.
    #[error("stopped answering health pings")]
    Unresponsive,
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

impl Session {
    /// The rest of the start-up for a worker past WorkerInit (at once, or for a placeholder
    /// worker after its environment reload): its functions are indexed and loaded.
    pub async fn load(
        init: Initialised,
        hs: &Handshake<'_>,
    ) -> Result<(Arc<Session>, Vec<FunctionMeta>), RpcError> {
        Ok(Session::ready(init.load(hs).await?))
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
        self.pending.lock().len()
    }

    /// Resolves once no invocation is in flight or the stream has closed.
    pub async fn drained(&self) {
        loop {
            // Registered before the check, so a drain between the two is not missed.
            let notified = self.pending.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 || self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Asks the supervisor to replace this worker; the first reason wins.
    pub fn request_recycle(&self, reason: Recycle) {
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
    pub async fn recycle_requested(&self) -> Recycle {
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

    /// Sends one InvocationRequest under the id the caller chose (a forwarded http-v2
    /// request carries it in `x-ms-invocation-id`), with the request's trace context, and
    /// waits for its response.
    pub async fn invoke_as(
        &self,
        invocation_id: String,
        function: &Arc<str>,
        input_data: Vec<ParameterBinding>,
        trace_context: Option<RpcTraceContext>,
    ) -> Result<Answer, InvokeFailure> {
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
            let mut pending = self.pending.lock();
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
                trace_context,
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
        let frame = Frame::encode(message);
        let len = frame.message_len() as u64;
        self.outbound.send(frame).await.map_err(|_| ())?;
        self.traffic.sent.inc_by(len);
        Ok(())
    }

    /// How many invocations this worker answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Session {
    /// The ready session for a worker whose functions are loaded, and those functions; its
    /// stream is read in the background from now on.
    fn ready(loaded: Loaded) -> (Arc<Session>, Vec<FunctionMeta>) {
        let Loaded {
            init,
            function_ids,
            load_errors,
            functions,
        } = loaded;
        let Initialised {
            worker,
            inbound,
            outbound,
            runtime,
            capabilities,
            traffic,
            ..
        } = init;
        let pending: Arc<Pending> = Arc::default();
        let pings: Arc<Pings> = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_loop(
            worker.clone(),
            inbound,
            pending.clone(),
            pings.clone(),
            closed.clone(),
            traffic.clone(),
        ));
        let session = Arc::new(Session {
            worker,
            runtime,
            outbound,
            function_ids,
            load_errors,
            pending,
            answered: std::sync::atomic::AtomicU64::new(0),
            pings,
            answers_pings: capabilities.answers_pings,
            http: capabilities.http,
            closed,
            traffic,
            recycle: Mutex::new(None),
            recycle_requested: Notify::new(),
        });
        (session, functions)
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
        self.pending.remove(self.invocation_id);
    }
}

async fn read_loop(
    worker: String,
    mut inbound: Inbound,
    pending: Arc<Pending>,
    pings: Arc<Pings>,
    closed: Arc<AtomicBool>,
    traffic: RpcTraffic,
) {
    loop {
        let (message, body) = match inbound.message().await {
            Ok(Some(received)) => {
                traffic.received.inc_by(received.len as u64);
                (received.message, received.body)
            }
            Ok(None) => break,
            Err(error) => {
                debug!(worker = %worker, %error, "worker stream error");
                break;
            }
        };
        match message.content {
            Some(Content::InvocationResponse(response)) => {
                match pending.remove(&response.invocation_id) {
                    Some(p) => {
                        let _ = p.reply.send(Answer { response, body });
                    }
                    None => {
                        debug!(worker = %worker, invocation = %response.invocation_id, "response for an unknown invocation")
                    }
                }
            }
            Some(Content::RpcLog(log)) => {
                let function = pending
                    .lock()
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
    let lost = {
        let mut map = pending.lock();
        closed.store(true, Ordering::Release);
        let lost = map.len();
        map.clear();
        lost
    };
    pending.drained.notify_waiters();
    if lost > 0 {
        warn!(worker = %worker, invocations = lost, "worker stream closed with invocations in flight");
    } else {
        debug!(worker = %worker, "worker stream closed");
    }
}
