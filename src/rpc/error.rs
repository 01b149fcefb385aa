//! How talking to a worker fails, and the message size limit both ends use: a leaf that the
//! server, the handshake and the session share.

use std::time::Duration;

/// Largest gRPC message either way, on the host's server and on the worker's command
/// line (`--grpcMaxMessageLength`): protobuf's own 2 GiB limit, as the platform host uses.
/// Request bodies are bounded below it by the body limit (see `config::MAX_BODY_LIMIT`).
pub const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Why talking to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot start the FunctionRpc server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("worker {worker} closed its stream")]
    StreamClosed { worker: String },
    #[error("worker {worker} sent no {expected} within {timeout:?}")]
    Timeout {
        worker: String,
        expected: &'static str,
        timeout: Duration,
    },
    #[error("worker {worker} failed {stage}: {message}")]
    Failed {
        worker: String,
        stage: &'static str,
        message: String,
    },
    #[error("worker {worker}: {reason}")]
    Protocol { worker: String, reason: String },
}
