//! What a worker says, read the same way during start-up and in a ready session: its
//! messages' kinds (for logs), its RpcLog records printed, the runtime it reports, and the
//! functions it indexes. A leaf: the handshake and the session both build on it.

use tracing::{debug, error, info, warn};

use crate::proto::rpc_log::{Level, RpcLogCategory};
use crate::proto::streaming_message::Content;
use crate::proto::{RpcFunctionMetadata, RpcLog, WorkerMetadata};

/// A function as the worker indexed it.
pub type FunctionMeta = RpcFunctionMetadata;

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
    pub(super) fn reported(meta: Option<&WorkerMetadata>) -> RuntimeInfo {
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

/// A message's kind, for log lines.
pub(super) fn content_name(content: &Content) -> &'static str {
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

/// Prints a worker's log record. User records keep their text as the event message so
/// they stay readable; labels (worker, function, invocation, logger) are fields.
pub(super) fn print_log(worker: &str, function: Option<&str>, log: &RpcLog) {
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
            $mac!(target: "function", worker, function, invocation_id = invocation, logger = %log.category, "{text}")
        };
    }
    match level {
        Level::Critical | Level::Error => emit!(error),
        Level::Warning => emit!(warn),
        Level::Information if !system => emit!(info),
        _ => emit!(debug),
    }
}
