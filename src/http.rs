//! The public HTTP front end: accepts TCP connections (tokio, epoll) and serves
//! HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge through hyper, handing
//! every request to the [`Dispatcher`]. Knows nothing about workers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tracing::debug;

use crate::dispatch::Dispatcher;

/// Binds the listener; port 0 picks a free port (read it back with `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until the task is dropped.
#[derive(Debug, Clone, Default)]
pub struct HttpLimits;
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    _l: HttpLimits,
    mut drain: tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! { _ = serve_inner(listener, dispatcher) => {}, _ = drain.wait_for(|d| *d) => {} }
}
async fn serve_inner(listener: TcpListener, dispatcher: Arc<Dispatcher>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                // Out of file descriptors and the like: keep serving the open connections.
                debug!(%error, "accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let dispatcher = dispatcher.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let dispatcher = dispatcher.clone();
                async move { Ok::<_, Infallible>(dispatcher.handle(request).await) }
            });
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
