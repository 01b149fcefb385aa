//! The public HTTP front end: accepts TCP connections and serves HTTP/1.1 with
//! keep-alive and HTTP/2 with prior knowledge through hyper, handing every request to
//! the [`Dispatcher`]. Knows nothing about workers.
//!
//! It owns what a hostile or broken client can do to the listener: bounded connections
//! ([`HttpLimits::max_connections`]), bounded header sections, clients that stall before
//! their headers or sit idle, and request paths that cannot be decoded. Malformed HTTP
//! is answered by hyper itself (400, 431, 414). It also owns the drain: on request it
//! stops accepting and closes every connection gracefully. It must not route, read
//! bodies or map invocation failures to statuses; that is [`crate::dispatch`].
//!
//! Sockets are driven by tokio's epoll reactor or, with `--io uring`, by io_uring
//! ([`uring`]); both hand their connections to the same [`connection`] code.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, info, warn};

use crate::config::IoMode;
use crate::dispatch::Dispatcher;

mod connection;
#[cfg(test)]
mod tests;
#[cfg(target_os = "linux")]
mod uring;
mod watchdog;

/// hyper refuses (panics on) a smaller HTTP/1 buffer, so smaller header limits are raised to it.
const MIN_HEADER_BUFFER: usize = 8 * 1024;

/// Whether `--io auto` picks io_uring where the probe passes. Measured slower than
/// epoll on this front end (loadtest/results), so auto stays on epoll.
const AUTO_PREFERS_URING: bool = false;

/// Pause after an accept error that is not about one connection (out of file
/// descriptors, say), so the loop does not spin until one is freed.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Limits for the public listener (a later issue makes them configurable).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request header section (HTTP/1 request line + headers, HTTP/2 header
    /// list). Larger is answered 431 by hyper. Default 32 KiB; at least 8 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take to send a complete header section, counted from the
    /// connection's start or the end of its previous response (so it also bounds HTTP/1
    /// keep-alive idle time); the connection is then closed. Also how long a connection
    /// asked to close may stay silent before it is dropped. Default 10 s.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully
    /// (HTTP/2: GOAWAY). Default 120 s.
    pub idle_timeout: Duration,
    /// Open connections beyond this are not accepted: they wait in the kernel's accept
    /// backlog until one closes. Default 10 000.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 10_000,
        }
    }
}

/// How the front end does its socket I/O (from `--io`, `--threads`).
#[derive(Debug, Clone)]
pub struct FrontEnd {
    pub io: IoMode,
    /// How many io_uring front-end threads serve connections (epoll connections run
    /// on the host's tokio runtime, which has this many workers too).
    pub threads: NonZeroUsize,
    /// Make the io_uring probe fail as a kernel without io_uring would
    /// (`SLUICE_URING_PROBE=fail`), to exercise the fallback.
    pub simulate_uring_failure: bool,
}

impl Default for FrontEnd {
    fn default() -> Self {
        Self {
            io: IoMode::Epoll,
            threads: NonZeroUsize::MIN,
            simulate_uring_failure: false,
        }
    }
}

/// A listening socket the accept loop takes connections from.
trait Accept {
    type Stream;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// Called on drain while an accept is pending. `Abandon`: dropping the pending
    /// accept loses nothing. `Await`: the accept runs on without us (io_uring), so the
    /// socket has been told to stop and the pending accept must be awaited, lest a
    /// connection it takes be leaked.
    fn stop(&self) -> Stop {
        Stop::Abandon
    }
}

/// What the accept loop does with a pending accept on drain (see [`Accept::stop`]).
enum Stop {
    Abandon,
    Await,
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        TcpListener::accept(self)
    }
}

/// Binds the listener; port 0 picks a free port (read it back with `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `drain` becomes true (or its sender is dropped): then stops accepting
/// (the listener is dropped, so new connects are refused), asks every open connection
/// to shut down gracefully (HTTP/1: the request in flight is answered with
/// `Connection: close`, then the connection closes; HTTP/2: GOAWAY, then the open
/// streams finish), and returns once every connection has ended. The caller bounds
/// that wait with its grace period. Logs which I/O backend serves, once.
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    limits: HttpLimits,
    front_end: FrontEnd,
    drain: watch::Receiver<bool>,
) {
    let handler = move |request| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(request).await }
    };
    serve_with(listener, handler, limits, front_end, drain).await;
}

/// [`serve`] with any request handler (tests use stubs instead of a dispatcher).
pub async fn serve_with<H, F>(
    listener: TcpListener,
    handler: H,
    limits: HttpLimits,
    front_end: FrontEnd,
    drain: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections(&limits)));
    let use_uring = match front_end.io {
        IoMode::Epoll => false,
        IoMode::Uring => true,
        IoMode::Auto => AUTO_PREFERS_URING,
    };
    let listener = if use_uring {
        // A fallback has said so in its one warning.
        match serve_uring(listener, &handler, &limits, &front_end, &permits, &drain).await {
            Ok(()) => return finish(&permits, &limits).await,
            Err(listener) => listener,
        }
    } else {
        let reason = match front_end.io {
            IoMode::Auto => "auto: epoll measured faster than io_uring here",
            _ => "requested",
        };
        info!(io = "epoll", reason, "serving HTTP");
        listener
    };
    let builder = Arc::new(builder(&limits));
    accept_until_drain(
        &listener,
        &permits,
        drain.clone(),
        |stream, peer, permit| {
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            let connection = connection::serve_connection(
                stream,
                peer,
                builder.clone(),
                handler.clone(),
                limits.clone(),
                drain.clone(),
            );
            tokio::spawn(async move {
                connection.await;
                drop(permit);
            });
        },
    )
    .await;
    drop(listener);
    finish(&permits, &limits).await;
}

/// Serves on io_uring until the drain; gives the listener back (after one log line)
/// if io_uring cannot run here.
#[cfg(target_os = "linux")]
async fn serve_uring<H, F>(
    listener: TcpListener,
    handler: &H,
    limits: &HttpLimits,
    front_end: &FrontEnd,
    permits: &Arc<Semaphore>,
    drain: &watch::Receiver<bool>,
) -> Result<(), TcpListener>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let setup = uring::Setup {
        handler: handler.clone(),
        limits: limits.clone(),
        threads: front_end.threads,
        simulate_failure: front_end.simulate_uring_failure,
        permits: permits.clone(),
        drain: drain.clone(),
    };
    uring::serve(listener, setup).await.map_err(|unavailable| {
        let error = unavailable.error;
        warn!(io = "epoll", %error, "io_uring unavailable; serving HTTP with epoll instead");
        unavailable.listener
    })
}

/// Without io_uring (not Linux), `--io uring` falls back like a failed probe.
#[cfg(not(target_os = "linux"))]
async fn serve_uring<H>(
    listener: TcpListener,
    _handler: &H,
    _limits: &HttpLimits,
    _front_end: &FrontEnd,
    _permits: &Arc<Semaphore>,
    _drain: &watch::Receiver<bool>,
) -> Result<(), TcpListener> {
    warn!("io_uring unavailable (not Linux); serving HTTP with epoll instead");
    Err(listener)
}

/// Accepts connections until a drain is requested, handing each to `spawn` with the
/// permit it holds until it ends. A permit comes first, then the accept: beyond the
/// limit, connections wait in the kernel's backlog.
async fn accept_until_drain<L: Accept>(
    listener: &L,
    permits: &Arc<Semaphore>,
    mut drain: watch::Receiver<bool>,
    mut spawn: impl FnMut(L::Stream, SocketAddr, OwnedSemaphorePermit),
) {
    loop {
        let permit = tokio::select! {
            biased;
            _ = drain_requested(&mut drain) => return,
            permit = permits.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { return };
        let accept = listener.accept();
        tokio::pin!(accept);
        let accepted = tokio::select! {
            biased;
            _ = drain_requested(&mut drain) => {
                if let Stop::Await = listener.stop() {
                    // Served like any other, it is closed gracefully: the drain is on.
                    if let Ok((stream, peer)) = accept.await {
                        spawn(stream, peer, permit);
                    }
                }
                return;
            }
            accepted = &mut accept => accepted,
        };
        match accepted {
            Ok((stream, peer)) => spawn(stream, peer, permit),
            Err(error) if is_connection_error(&error) => debug!(%error, "accept failed"),
            Err(error) => {
                warn!(%error, pause = ?ACCEPT_ERROR_PAUSE, "accept failed");
                tokio::select! {
                    _ = drain_requested(&mut drain) => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }
}

/// After accepting has stopped: waits until every connection has ended (each holds
/// one permit until then).
async fn finish(permits: &Semaphore, limits: &HttpLimits) {
    let open = max_connections(limits) - permits.available_permits();
    info!(connections = open, "stopped accepting; closing connections");
    let _ = permits.acquire_many(all_permits(limits)).await;
    info!("all connections closed");
}

/// How many connections may be open at once: `limits.max_connections` within what a
/// semaphore can count.
fn max_connections(limits: &HttpLimits) -> usize {
    limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)
}

/// Every permit of the connection semaphore, to wait until all are back. Fits in u32:
/// tokio's MAX_PERMITS is below u32::MAX.
fn all_permits(limits: &HttpLimits) -> u32 {
    u32::try_from(max_connections(limits)).unwrap_or(u32::MAX)
}

/// The hyper connection builder for `limits`.
fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let header_bytes = limits.max_header_bytes.max(MIN_HEADER_BUFFER);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(header_bytes);
    // HTTP/2 limits pinned here rather than left to hyper's defaults, which a dependency
    // update could change (tests/hostile_h2.rs holds them): 100 streams per connection as
    // Kestrel (the platform host's server) allows, which also bounds what a client that
    // never reads its responses can make one connection hold; rapid-reset and
    // error-reset budgets as hyper sets them today.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(H2_ERROR_RESETS);
    builder
}

/// Concurrent streams per HTTP/2 connection (Kestrel's `MaxStreamsPerConnection`).
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before Sluice accepts them (rapid reset) before GOAWAY.
const H2_PENDING_RESETS: usize = 20;
/// Streams Sluice may reset for a client's protocol errors before GOAWAY.
const H2_ERROR_RESETS: usize = 1024;

/// Resolves once a drain is requested, or once nobody can request one any more (the
/// sender is gone, so the server's owner is shutting down).
async fn drain_requested(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

/// Accept errors that concern only the connection being accepted.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
