//! The `FunctionRpc.EventStream` side of Sluice: a gRPC server on 127.0.0.1 that workers
//! connect to ([`server`], with the stream's framing in `stream`), and one
//! [`session::Session`] per connected worker that runs the platform's start-up handshake and
//! correlates invocations by id. Knows nothing about HTTP routing; HTTP ⇄ RpcHttp
//! conversion lives in `convert`.
//!
//! Inside, imports run one way: `session` (a ready worker) builds on `handshake` (the
//! start-up steps, which end in a value the session takes), both on `server` and `inbound`
//! (the stream), and everything on the leaves `messages` (what a worker says: logs, runtime,
//! message kinds), `error`, `capabilities`, `split`, `stream` and `wire`.

mod capabilities;
mod error;
mod handshake;
mod inbound;
mod messages;
mod reload;
mod server;
mod session;
mod split;
mod stream;
/// gRPC framing shared with the worker's native transport (one file, two crates).
#[path = "../../native/src/wire.rs"]
mod wire;

pub use error::{MAX_MESSAGE_BYTES, RpcError};
pub use handshake::{Handshake, Initialised, is_prerelease};
pub use messages::FunctionMeta;
pub use server::RpcServer;
pub use session::{Answer, InvokeFailure, Recycle, Session};
