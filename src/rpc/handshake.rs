//! The platform's start-up handshake on a fresh worker stream: WorkerInit, then (after an
//! optional environment reload, `reload.rs`) FunctionsMetadata and the FunctionLoads,
//! ending in a ready [`Session`]. Each step sends one request and waits for its reply
//! under a deadline, printing the worker's logs in between.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::capabilities::Capabilities;
use super::error::RpcError;
use super::inbound::Inbound;
use super::messages::{FunctionMeta, RuntimeInfo, content_name, print_log};
use super::server::Connection;
use super::stream::{Frame, Outbound};
use crate::metrics::RpcTraffic;
use crate::proto::function_environment_reload_response::CapabilitiesUpdateStrategy;
use crate::proto::status_result::Status as RpcStatus;
use crate::proto::streaming_message::Content;
use crate::proto::{
    FunctionLoadRequest, FunctionsMetadataRequest, StatusResult, StreamingMessage,
    WorkerInitRequest,
};

/// Worker extensions are reported once per Sluice process, not once per worker.
static WARNED_EXTENSIONS: AtomicBool = AtomicBool::new(false);

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
/// `Session::load` at once; a placeholder worker waits here until assignment
/// ([`Initialised::reload_environment`], in `reload.rs`).
pub struct Initialised {
    pub(super) worker: String,
    pub(super) inbound: Inbound,
    pub(super) outbound: Outbound,
    pub(super) runtime: RuntimeInfo,
    pub(super) capabilities: Capabilities,
    pub(super) traffic: RpcTraffic,
    pub(super) step_timeout: Duration,
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
            capabilities: Capabilities::default(),
            traffic: hs.traffic.clone(),
            step_timeout: hs.step_timeout,
        };
        let worker = this.worker.clone();
        let init = this
            .steps()
            .request(
                reply!(WorkerInitResponse),
                Content::WorkerInitRequest(WorkerInitRequest {
                    host_version: hs.host_version.to_owned(),
                    capabilities: HashMap::new(),
                    log_categories: HashMap::new(),
                    worker_directory: hs.worker_dir.display().to_string(),
                    function_app_directory: hs.app_dir.display().to_string(),
                }),
            )
            .await?;
        check(&worker, "to initialise", init.result.as_ref())?;
        this.update_capabilities(&init.capabilities, CapabilitiesUpdateStrategy::Replace)?;
        this.runtime = RuntimeInfo::reported(init.worker_metadata.as_ref());
        info!(
            worker = %worker,
            python = init.worker_metadata.as_ref().map_or("?", |m| m.runtime_version.as_str()),
            runtime = %this.runtime.package,
            runtime_version = %this.runtime.version,
            source = %this.runtime.source,
            opentelemetry = this.capabilities.opentelemetry,
            "worker initialised"
        );
        this.warn_about_runtime();
        Ok(this)
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

    /// Applies the capabilities of WorkerInit (which replace the defaults) or of an
    /// environment reload (merged or replacing, as the worker says).
    pub(super) fn update_capabilities(
        &mut self,
        reported: &HashMap<String, String>,
        strategy: CapabilitiesUpdateStrategy,
    ) -> Result<(), RpcError> {
        let before = self.capabilities.http.clone();
        self.capabilities
            .update(reported, strategy)
            .map_err(|e| RpcError::Protocol {
                worker: self.worker.clone(),
                reason: e.to_string(),
            })?;
        if let Some(http) = &self.capabilities.http
            && before.as_ref() != Some(http)
        {
            info!(worker = %self.worker, uri = %http.authority(), "the app streams HTTP (http-v2): requests are forwarded to the worker's HTTP server");
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

    /// FunctionsMetadata, then one FunctionLoad per function: what a session starts from.
    pub(super) async fn load(mut self, hs: &Handshake<'_>) -> Result<Loaded, RpcError> {
        let worker = self.worker.clone();
        let app_dir = hs.app_dir.display().to_string();
        let mut steps = self.steps();
        let metadata = steps
            .request(
                reply!(FunctionMetadataResponse),
                Content::FunctionsMetadataRequest(FunctionsMetadataRequest {
                    function_app_directory: app_dir,
                }),
            )
            .await?;
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
            let load = steps.expect(reply!(FunctionLoadResponse)).await?;
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

        Ok(Loaded {
            init: self,
            function_ids,
            load_errors,
            functions,
        })
    }
}

/// A worker whose functions are loaded: what `Session::load` makes a session of.
pub(super) struct Loaded {
    pub(super) init: Initialised,
    /// Function name → this worker's function id.
    pub(super) function_ids: HashMap<String, String>,
    /// Function id → why it failed to load.
    pub(super) load_errors: HashMap<String, String>,
    pub(super) functions: Vec<FunctionMeta>,
}

/// The reply a start-up step waits for, as `(its name, how to take it from a message)`:
/// `reply!(WorkerInitResponse)`. Matched by kind; the name is for errors only.
macro_rules! reply {
    ($kind:ident) => {
        (stringify!($kind), |content| match content {
            Content::$kind(reply) => Some(reply),
            _ => None,
        })
    };
}
pub(super) use reply;

/// A reply kind: its name, and its value taken from a message of that kind.
pub(super) type Reply<T> = (&'static str, fn(Content) -> Option<T>);

/// The start-up steps: send one request, wait for its reply, printing any logs between.
pub(super) struct Steps<'a> {
    worker: &'a str,
    inbound: &'a mut Inbound,
    outbound: &'a Outbound,
    timeout: Duration,
    traffic: &'a RpcTraffic,
}

impl Steps<'_> {
    pub(super) async fn request<T>(
        &mut self,
        expected: Reply<T>,
        content: Content,
    ) -> Result<T, RpcError> {
        self.send(content).await?;
        self.expect(expected).await
    }

    async fn send(&mut self, content: Content) -> Result<(), RpcError> {
        let message = StreamingMessage {
            request_id: uuid::Uuid::new_v4().to_string(),
            content: Some(content),
        };
        let frame = Frame::encode(message);
        let len = frame.message_len() as u64;
        self.outbound
            .send(frame)
            .await
            .map_err(|_| RpcError::StreamClosed {
                worker: self.worker.to_owned(),
            })?;
        self.traffic.sent.inc_by(len);
        Ok(())
    }

    /// The next reply of the `expected` kind, printing logs that come before it.
    async fn expect<T>(&mut self, (expected, take): Reply<T>) -> Result<T, RpcError> {
        let closed = || RpcError::StreamClosed {
            worker: self.worker.to_owned(),
        };
        let wait = async {
            loop {
                let message = match self.inbound.message().await {
                    Ok(Some(received)) => {
                        self.traffic.received.inc_by(received.len as u64);
                        received.message
                    }
                    Ok(None) | Err(_) => return Err(closed()),
                };
                match message.content {
                    Some(Content::RpcLog(log)) => print_log(self.worker, None, &log),
                    Some(content) => {
                        let kind = content_name(&content);
                        match take(content) {
                            Some(reply) => return Ok(reply),
                            None => debug!(
                                worker = %self.worker,
                                message = kind,
                                "ignored during start-up"
                            ),
                        }
                    }
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
