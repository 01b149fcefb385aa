//! The `FunctionRpc` server workers connect to: HTTP/2 (hyper) on 127.0.0.1, one gRPC
//! method, `EventStream`. A worker's first message must be `StartStream{worker_id}` naming
//! a worker Sluice launched and is waiting for ([`RpcServer::expect`]); the stream is then
//! handed to whoever waits for it. Framing and encoding are in `stream.rs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::error::{MAX_MESSAGE_BYTES, RpcError};
use super::inbound::Inbound;
use super::stream::{EventBody, Outbound};
use crate::proto::streaming_message::Content;

const METHOD: &str = "/AzureFunctionsRpcMessages.FunctionRpc/EventStream";

/// Outbound messages queued per worker before senders wait (backpressure, bounded memory).
const OUTBOUND_QUEUE: usize = 1024;

/// HTTP/2 flow-control windows for workers' streams (bytes a worker may send unacknowledged).
/// h2's 64 KiB default would make a large body from the worker wait for a WINDOW_UPDATE
/// every 64 KiB; the stream is read eagerly, so larger windows cost no memory beyond what
/// the message needs anyway.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest DATA frame a worker may send. h2's 16 KiB default cut a 100 MiB response into
/// 6,400 frames, each its own write in the worker and its own read and copy here.
const MAX_FRAME: u32 = 1024 * 1024;

/// A worker's accepted EventStream: messages from it, and a sender towards it.
pub struct Connection {
    pub inbound: Inbound,
    pub outbound: Outbound,
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
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(RpcError::Bind)?;
        let addr = listener.local_addr().map_err(RpcError::Bind)?;
        let waiters: Waiters = Arc::default();
        tokio::spawn(accept(listener, waiters.clone()));
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

async fn accept(listener: TcpListener, waiters: Waiters) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: the workers already connected go on.
                warn!(%error, "FunctionRpc server cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without it Nagle held small frames for the worker's delayed ACK (a 40 ms stall,
        // seen as a p99 spike under load).
        let _ = stream.set_nodelay(true);
        let waiters = waiters.clone();
        let service = service_fn(move |request| event_stream(waiters.clone(), request));
        tokio::spawn(async move {
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(MAX_FRAME)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                debug!(%error, "worker connection ended");
            }
        });
    }
}

/// gRPC status codes this server answers with.
#[derive(Clone, Copy)]
enum Code {
    InvalidArgument = 3,
    PermissionDenied = 7,
    Unimplemented = 12,
    Unavailable = 14,
}

/// A call refused before it started: the status in the headers, no body.
fn refuse(code: Code, message: &'static str) -> Response<EventBody> {
    let mut response = grpc_response(EventBody::empty());
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

fn grpc_response(body: EventBody) -> Response<EventBody> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

async fn event_stream(
    waiters: Waiters,
    request: Request<Incoming>,
) -> Result<Response<EventBody>, Infallible> {
    if request.uri().path() != METHOD || request.method() != http::Method::POST {
        return Ok(refuse(
            Code::Unimplemented,
            "FunctionRpc serves EventStream only",
        ));
    }
    let mut inbound = Inbound::new(request.into_body(), MAX_MESSAGE_BYTES);
    let first = match inbound.message().await {
        Ok(Some(first)) => first.message,
        Ok(None) => {
            return Ok(refuse(
                Code::InvalidArgument,
                "stream ended before StartStream",
            ));
        }
        Err(error) => {
            debug!(%error, "a worker's first message could not be read");
            return Ok(refuse(Code::InvalidArgument, "unreadable first message"));
        }
    };
    let Some(Content::StartStream(start)) = first.content else {
        return Ok(refuse(
            Code::InvalidArgument,
            "the first message must be StartStream",
        ));
    };
    let waiter = waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&start.worker_id);
    let Some(waiter) = waiter else {
        warn!(worker = %start.worker_id, "StartStream from an unknown worker id; ignored");
        return Ok(refuse(Code::PermissionDenied, "unknown worker id"));
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
        return Ok(refuse(
            Code::Unavailable,
            "Sluice stopped waiting for this worker",
        ));
    }
    Ok(grpc_response(EventBody::new(rx)))
}
