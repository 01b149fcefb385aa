//! The tonic `FunctionRpc` service. A worker's first message must be
//! `StartStream{worker_id}` naming a worker Sluice launched and is waiting for
//! ([`RpcServer::expect`]); the stream is then handed to whoever waits for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::RpcError;
use crate::proto::function_rpc_server::{FunctionRpc, FunctionRpcServer};
use crate::proto::{StreamingMessage, streaming_message::Content};

/// Outbound messages queued per worker before senders wait (backpressure, bounded memory).
const OUTBOUND_QUEUE: usize = 1024;

/// HTTP/2 flow-control windows for workers' streams (bytes a worker may send unacknowledged).
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame a worker may send. h2's 16 KiB default cut a 100 MiB response into
/// 6,400 frames, each its own write in the worker and its own read and copy here.
const MAX_FRAME: u32 = 1024 * 1024;

/// A worker's accepted EventStream: messages from it, and a sender towards it.
pub struct Connection {
    pub inbound: Streaming<StreamingMessage>,
    pub outbound: mpsc::Sender<Result<StreamingMessage, Status>>,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Connection>>>>;

/// Handle to the running gRPC server.
#[derive(Clone)]
pub struct RpcServer {
    addr: SocketAddr,
    waiters: Waiters,
}

impl RpcServer {
    /// Binds 127.0.0.1 on an ephemeral port and serves in the background.
    pub async fn start() -> Result<RpcServer, RpcError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(RpcError::Bind)?;
        let addr = listener.local_addr().map_err(RpcError::Bind)?;
        let waiters: Waiters = Arc::default();
        let service = FunctionRpcServer::new(Service {
            waiters: waiters.clone(),
        })
        .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
        // TCP_NODELAY set here: `Server::tcp_nodelay` applies only to listeners tonic binds
        // itself. Without it Nagle held small frames for the worker's delayed ACK (a 40 ms
        // stall, seen as a p99 spike under load).
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                // h2's 64 KiB default window makes a large body from the worker wait for
                // a WINDOW_UPDATE every 64 KiB; tonic reads eagerly, so larger windows
                // cost no memory beyond what the message needs anyway.
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(MAX_FRAME)
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = result {
                warn!(%error, "FunctionRpc server stopped");
            }
        });
        Ok(RpcServer { addr, waiters })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Registers a worker id before its process is launched; the receiver resolves
    /// when that worker opens its stream.
    pub fn expect(&self, worker_id: &str) -> oneshot::Receiver<Connection> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(worker_id.to_owned(), tx);
        rx
    }

    /// Forgets a worker that will never connect (its process died first).
    pub fn forget(&self, worker_id: &str) {
        self.lock().remove(worker_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Connection>>> {
        // A poisoned map only means another thread panicked mid-insert; the map itself is fine.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Service {
    waiters: Waiters,
}

type OutStream = Pin<Box<dyn Stream<Item = Result<StreamingMessage, Status>> + Send>>;

#[tonic::async_trait]
impl FunctionRpc for Service {
    type EventStreamStream = OutStream;

    async fn event_stream(
        &self,
        request: Request<Streaming<StreamingMessage>>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream ended before StartStream"))?;
        let Some(Content::StartStream(start)) = first.content else {
            return Err(Status::invalid_argument(
                "the first message must be StartStream",
            ));
        };
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&start.worker_id);
        let Some(waiter) = waiter else {
            warn!(worker = %start.worker_id, "StartStream from an unknown worker id; ignored");
            return Err(Status::permission_denied("unknown worker id"));
        };
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        debug!(worker = %start.worker_id, "worker connected");
        if waiter
            .send(Connection {
                inbound,
                outbound: tx,
            })
            .is_err()
        {
            return Err(Status::unavailable(
                "Sluice stopped waiting for this worker",
            ));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
