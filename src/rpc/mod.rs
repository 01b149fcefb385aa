//! The `FunctionRpc.EventStream` side of Sluice: a gRPC server on 127.0.0.1 that workers
//! connect to ([`server`], with the stream's framing in [`stream`]), and one [`session::Session`] per connected worker that runs
//! the platform's start-up handshake and correlates invocations by id.
//! Knows nothing about HTTP routing; HTTP ⇄ RpcHttp conversion lives in `convert`.

mod capabilities;
mod handshake;
mod inbound;
mod reload;
pub mod server;
pub mod session;
mod split;
mod stream;
/// gRPC framing shared with the worker's native transport (one file, two crates).
#[path = "../../native/src/wire.rs"]
mod wire;

pub use handshake::{Handshake, Initialised, is_prerelease};
pub use inbound::{BodyStream, StreamedBody};
pub use server::{Connection, RpcServer};
pub use session::{Answer, FunctionMeta, Session};

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
