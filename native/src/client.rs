//! The EventStream call, run on a single-threaded tokio runtime on its own thread so the
//! Python thread never runs gRPC code: it only drains the inbox and queues outbound bytes.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Request;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use crate::Inbound;
use crate::codec::RawCodec;
use crate::inbox::Inbox;

const METHOD: &str = "/AzureFunctionsRpcMessages.FunctionRpc/EventStream";
// Large enough that an HTTP body of a few MiB is not throttled by flow control.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad host address {0:?}")]
    Address(String),
    #[error("cannot start the stream thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot reach the host at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("no stream to the host at {0} within the connect timeout")]
    Timeout(String),
}

pub struct Settings {
    pub target: String,
    pub max_message_length: usize,
    pub timeout: Duration,
}

/// Opens the stream with `first` (StartStream) as its first message. Blocks the caller until
/// the call is established or fails; from then on inbound messages land in `inbox`.
pub fn connect(
    settings: Settings,
    first: Bytes,
    inbox: Arc<Inbox<Inbound>>,
) -> Result<mpsc::UnboundedSender<Bytes>, ConnectError> {
    let endpoint = Endpoint::from_shared(format!("http://{}", settings.target))
        .map_err(|_| ConnectError::Address(settings.target.clone()))?
        .connect_timeout(settings.timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let (outbox, outgoing) = mpsc::unbounded_channel();
    // The receiver is alive until the thread below starts, so this cannot fail.
    let _ = outbox.send(first);
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ConnectError::Thread)?;
    let max = settings.max_message_length;
    std::thread::Builder::new()
        .name("sluice-rpc".into())
        .spawn(move || {
            runtime.block_on(async move {
                let inbound = match open(endpoint, outgoing, max).await {
                    Ok(inbound) => {
                        let _ = ready_tx.send(Ok(()));
                        inbound
                    }
                    Err(detail) => {
                        let _ = ready_tx.send(Err(detail));
                        return;
                    }
                };
                pump(inbound, &inbox).await;
            })
        })
        .map_err(ConnectError::Thread)?;
    match ready_rx.recv_timeout(settings.timeout) {
        Ok(Ok(())) => Ok(outbox),
        Ok(Err(detail)) => Err(ConnectError::Unreachable {
            target: settings.target,
            detail,
        }),
        Err(_) => Err(ConnectError::Timeout(settings.target)),
    }
}

async fn open(
    endpoint: Endpoint,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    max: usize,
) -> Result<tonic::Streaming<Bytes>, String> {
    let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
    let mut grpc = Grpc::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let response = grpc
        .streaming(
            Request::new(UnboundedReceiverStream::new(outgoing)),
            PathAndQuery::from_static(METHOD),
            RawCodec,
        )
        .await
        .map_err(|status| status.to_string())?;
    Ok(response.into_inner())
}

async fn pump(mut inbound: tonic::Streaming<Bytes>, inbox: &Inbox<Inbound>) {
    loop {
        match inbound.message().await {
            Ok(Some(message)) => inbox.push(Inbound::new(message)),
            Ok(None) => return inbox.end(None),
            Err(status) => return inbox.end(Some(status.to_string())),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
