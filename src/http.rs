//! The public HTTP front end: accepts TCP connections (tokio, epoll) and serves
//! HTTP/1.1 with keep-alive and HTTP/2 with prior knowledge through hyper, handing
//! every request to the [`Dispatcher`]. Knows nothing about workers.
//!
//! It owns what a hostile or broken client can do to the listener: bounded connections
//! ([`HttpLimits::max_connections`]), bounded header sections, clients that stall before
//! their headers or sit idle, and request paths that cannot be decoded. Malformed HTTP
//! is answered by hyper itself (400, 431, 414). It also owns the drain: on request it
//! stops accepting and closes every connection gracefully. It must not route, read
//! bodies or map invocation failures to statuses; that is [`crate::dispatch`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::dispatch::Dispatcher;

/// hyper refuses (panics on) a smaller HTTP/1 buffer, so smaller header limits are raised to it.
const MIN_HEADER_BUFFER: usize = 8 * 1024;

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

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("malformed percent-encoding in the request path")]
    BadEscape,
    #[error("the request path does not decode to UTF-8")]
    NotUtf8,
}

/// Request and I/O activity on one connection, for its watchdog.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    state: Mutex<ActivityState>,
    /// When a byte was last read or written, in nanoseconds since `opened`.
    last_io: AtomicU64,
    /// Wakes the watchdog when its deadline moves earlier: at the first request, which
    /// switches the limit from `header_read_timeout` to `idle_timeout`. (Every other
    /// change only moves it later, and the watchdog looks again when it fires.)
    first_request: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// When `in_flight` last dropped to zero (or the connection opened).
    idle_since: Instant,
    /// Whether any request has started: before the first, a client only gets
    /// `header_read_timeout` (this also covers the HTTP/2 preface detection, which
    /// hyper's own header timeout does not).
    served: bool,
}

/// One request in flight on a connection; dropping it marks the request done.
struct InFlight(Arc<Activity>);

/// What a connection's watchdog does next.
#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// Nothing yet; look again then.
    Until(Instant),
    /// Idle too long: ask the connection to close gracefully.
    Close,
    /// Asked to close, yet silent and still open: drop it.
    Drop,
}

/// The connection's socket, noting every byte read or written in its [`Activity`].
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
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
/// that wait with its grace period.
pub async fn serve(
    listener: TcpListener,
    dispatcher: Arc<Dispatcher>,
    limits: HttpLimits,
    drain: watch::Receiver<bool>,
) {
    let handler = move |request| {
        let dispatcher = dispatcher.clone();
        async move { dispatcher.handle(request).await }
    };
    serve_with(listener, handler, limits, drain).await;
}

/// [`serve`] with any request handler (tests use stubs instead of a dispatcher).
pub async fn serve_with<H, F>(
    listener: TcpListener,
    handler: H,
    limits: HttpLimits,
    mut drain: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let builder = Arc::new(builder(&limits));
    let max_connections = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        // A permit first, then accept: beyond the limit, connections wait in the backlog.
        let permit = tokio::select! {
            biased;
            _ = drain_requested(&mut drain) => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            biased;
            _ = drain_requested(&mut drain) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(error) if is_connection_error(&error) => {
                debug!(%error, "accept failed");
                continue;
            }
            Err(error) => {
                warn!(%error, pause = ?ACCEPT_ERROR_PAUSE, "accept failed");
                tokio::select! {
                    _ = drain_requested(&mut drain) => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let connection = serve_connection(
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
    }
    drop(listener);
    let open = max_connections - permits.available_permits();
    info!(connections = open, "stopped accepting; closing connections");
    // Every connection holds one permit until it ends. `max_connections` fits in u32:
    // tokio's MAX_PERMITS is below u32::MAX.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    info!("all connections closed");
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
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves one connection until it ends. On drain, or once idle, it is asked to close
/// gracefully; if it then stays silent for `header_read_timeout` with nothing in flight
/// (an HTTP/2 client that never answers the GOAWAY ping, say), it is dropped.
async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: H,
    limits: HttpLimits,
    mut drain: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::new(Instant::now()));
    let service = {
        let activity = activity.clone();
        let drain = drain.clone();
        service_fn(move |request| {
            let in_flight = activity.begin();
            let handler = handler.clone();
            let drain = drain.clone();
            async move {
                let response = handle(&handler, request, &drain).await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(Watched {
        io: stream,
        activity: activity.clone(),
    });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing_since: Option<Instant> = None;
    loop {
        let check_at = match activity.watch(Instant::now(), closing_since, &limits) {
            Watch::Until(at) => at,
            Watch::Close => {
                debug!(%peer, "closing an idle connection");
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
                continue;
            }
            Watch::Drop => {
                debug!(%peer, "dropping a connection that did not close");
                return;
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = drain_requested(&mut drain), if closing_since.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(check_at) => {}
            _ = activity.first_request.notified() => {}
        }
    }
}

/// One request: the path check, then the handler; while draining, HTTP/1 answers say
/// the connection closes after them.
async fn handle<H, F>(
    handler: &H,
    request: Request<Incoming>,
    drain: &watch::Receiver<bool>,
) -> Response<Full<Bytes>>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Full<Bytes>>>,
{
    let version = request.version();
    let mut response = match check_path(request.uri().path()) {
        Ok(()) => handler(request).await,
        Err(error) => {
            debug!(path = %request.uri().path(), %error, "request refused");
            bad_path(error)
        }
    };
    if *drain.borrow() && matches!(version, Version::HTTP_10 | Version::HTTP_11) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Checks that every `%` in `path` starts a two-hex-digit escape and that the decoded
/// path is UTF-8, as the route matcher and the worker both need it to be.
pub(crate) fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut escapes = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .peekable();
    if escapes.peek().is_none() {
        // `http::Uri` only holds UTF-8, so an unescaped path is already valid.
        return Ok(());
    }
    for (at, _) in escapes {
        let digits = bytes.get(at + 1..at + 3).ok_or(PathError::BadEscape)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(PathError::BadEscape);
        }
    }
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map(|_| ())
        .map_err(|_| PathError::NotUtf8)
}

/// The 400 answer for a path that cannot be decoded.
fn bad_path(error: PathError) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(error.to_string())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

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

impl Activity {
    fn new(now: Instant) -> Self {
        Self {
            opened: now,
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: now,
                served: false,
            }),
            last_io: AtomicU64::new(0),
            first_request: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state stays consistent even if a holder panicked: every update is one step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a request started; the returned guard marks it done.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        if !state.served {
            state.served = true;
            self.first_request.notify_one();
        }
        InFlight(self.clone())
    }

    fn end(&self, now: Instant) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = now;
        }
    }

    fn touch(&self, now: Instant) {
        let nanos = u64::try_from((now - self.opened).as_nanos()).unwrap_or(u64::MAX);
        self.last_io.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last_io(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last_io.load(Ordering::Relaxed))
    }

    /// The watchdog's decision at `now`. Before the first request a connection gets
    /// `header_read_timeout`, after it `idle_timeout` with no request in flight; once
    /// asked to close (`closing_since`), it gets `header_read_timeout` of silence.
    /// Requests in flight are never cut: while there are any, it only looks again later.
    fn watch(&self, now: Instant, closing_since: Option<Instant>, limits: &HttpLimits) -> Watch {
        let state = self.state();
        if state.in_flight > 0 {
            let again = match closing_since {
                Some(_) => limits.header_read_timeout,
                None => limits.idle_timeout,
            };
            return Watch::Until(now + again);
        }
        let (deadline, action) = match closing_since {
            None if state.served => (state.idle_since + limits.idle_timeout, Watch::Close),
            None => (state.idle_since + limits.header_read_timeout, Watch::Close),
            Some(since) => {
                let quiet_since = since.max(state.idle_since).max(self.last_io());
                (quiet_since + limits.header_read_timeout, Watch::Drop)
            }
        };
        if now >= deadline {
            action
        } else {
            Watch::Until(deadline)
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end(Instant::now());
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch(Instant::now());
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(Instant::now());
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch(Instant::now());
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_well_escaped_paths_pass() {
        for path in [
            "/",
            "/api/hello",
            "/api/a%20b",
            "/api/%2Fslash%2f",
            "/api/caf%C3%A9",
            "/api/café",
            "/api/100%25",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for path in ["/api/hello%ZZ", "/api/%", "/api/%4", "/api/a%g1", "/%%41"] {
            assert_eq!(check_path(path), Err(PathError::BadEscape), "{path}");
        }
    }

    #[test]
    fn escapes_that_decode_to_invalid_utf8_are_refused() {
        for path in ["/api/%FF", "/api/%C3", "/api/%C3%28", "/api/%ED%A0%80"] {
            assert_eq!(check_path(path), Err(PathError::NotUtf8), "{path}");
        }
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let limits = HttpLimits::default();
        assert_eq!(limits.max_header_bytes, 32 * 1024);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(limits.max_connections, 10_000);
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ..HttpLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_requests_gets_the_header_timeout() {
        let limits = limits();
        let opened = Instant::now();
        let activity = Arc::new(Activity::new(opened));
        let deadline = opened + limits.header_read_timeout;
        // Bytes without a complete request do not extend it.
        activity.touch(opened + Duration::from_secs(9));
        assert_eq!(
            activity.watch(opened, None, &limits),
            Watch::Until(deadline)
        );
        assert_eq!(activity.watch(deadline, None, &limits), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_end_of_the_last_request() {
        let limits = limits();
        let activity = Arc::new(Activity::new(Instant::now()));

        let first = activity.begin();
        let second = activity.begin();
        let now = Instant::now();
        assert_eq!(
            activity.watch(now, None, &limits),
            Watch::Until(now + limits.idle_timeout),
            "requests in flight are never closed"
        );

        tokio::time::advance(Duration::from_secs(300)).await;
        drop(first);
        let now = Instant::now();
        assert!(matches!(
            activity.watch(now, None, &limits),
            Watch::Until(_)
        ));

        tokio::time::advance(Duration::from_secs(5)).await;
        drop(second);
        let done = Instant::now();
        let deadline = done + limits.idle_timeout;
        assert_eq!(activity.watch(done, None, &limits), Watch::Until(deadline));
        assert_eq!(activity.watch(deadline, None, &limits), Watch::Close);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_connection_is_dropped_only_after_silence_with_nothing_in_flight() {
        let limits = limits();
        let hrt = limits.header_read_timeout;
        let activity = Arc::new(Activity::new(Instant::now()));
        drop(activity.begin());
        let since = Instant::now();
        assert_eq!(
            activity.watch(since, Some(since), &limits),
            Watch::Until(since + hrt)
        );

        // A response still being written keeps it alive.
        let written = since + Duration::from_secs(8);
        activity.touch(written);
        assert_eq!(
            activity.watch(since + hrt, Some(since), &limits),
            Watch::Until(written + hrt)
        );
        assert_eq!(
            activity.watch(written + hrt, Some(since), &limits),
            Watch::Drop
        );

        // So does a request in flight, however long it is silent.
        let in_flight = activity.begin();
        let late = written + hrt * 100;
        assert_eq!(
            activity.watch(late, Some(since), &limits),
            Watch::Until(late + hrt)
        );
        drop(in_flight);
    }

    /// A server on 127.0.0.1 port 0 with `handler`; send `true` on the sender to drain.
    async fn start<H, F>(
        limits: HttpLimits,
        handler: H,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>)
    where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (drain, drain_rx) = watch::channel(false);
        let server = tokio::spawn(serve_with(listener, handler, limits, drain_rx));
        (addr, drain, server)
    }

    async fn ok(_request: Request<Incoming>) -> Response<Full<Bytes>> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    const DEADLINE: Duration = Duration::from_secs(5);
    const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n";

    /// Reads until `done(bytes so far)` holds or the peer closes; fails after [`DEADLINE`].
    async fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut bytes = Vec::new();
        let until = Instant::now() + DEADLINE;
        while !done(&bytes) {
            let mut chunk = [0; 4096];
            let read = tokio::time::timeout_at(until, stream.read(&mut chunk)).await;
            match read.expect("the server answers within the deadline") {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
        bytes
    }

    fn ends_with_ok(bytes: &[u8]) -> bool {
        bytes.ends_with(b"\r\n\r\nok")
    }

    fn never(_: &[u8]) -> bool {
        false
    }

    #[tokio::test]
    async fn drain_answers_the_request_in_flight_with_connection_close_then_returns() {
        use tokio::io::AsyncWriteExt;
        let gate = Arc::new(Semaphore::new(0));
        let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = {
            let gate = gate.clone();
            move |request| {
                let gate = gate.clone();
                let started = started.clone();
                async move {
                    let _ = started.send(());
                    let _permit = gate.acquire().await;
                    ok(request).await
                }
            }
        };
        let (addr, drain, server) = start(HttpLimits::default(), handler).await;

        let mut busy = TcpStream::connect(addr).await.unwrap();
        busy.write_all(GET).await.unwrap();
        tokio::time::timeout(DEADLINE, started_rx.recv())
            .await
            .unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();

        drain.send(true).unwrap();
        assert!(read_until(&mut idle, never).await.is_empty(), "idle closed");
        let until = Instant::now() + DEADLINE;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < until, "still accepting after the drain");
            tokio::task::yield_now().await;
        }

        gate.add_permits(1);
        let answer = String::from_utf8(read_until(&mut busy, never).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        tokio::time::timeout(DEADLINE, server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_until_one_closes() {
        use tokio::io::AsyncWriteExt;
        let limits = HttpLimits {
            max_connections: 1,
            ..HttpLimits::default()
        };
        let (addr, _drain, _server) = start(limits, ok).await;

        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(GET).await.unwrap();
        assert!(ends_with_ok(&read_until(&mut first, ends_with_ok).await));

        // The kernel completes the handshake, but Sluice does not accept it yet.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(GET).await.unwrap();
        let mut byte = [0; 1];
        let early = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(&mut second, &mut byte),
        )
        .await;
        assert!(early.is_err(), "served beyond the limit: {early:?}");

        drop(first);
        assert!(ends_with_ok(&read_until(&mut second, ends_with_ok).await));
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        use tokio::io::AsyncWriteExt;
        // hyper's own keep-alive bound (the header timeout) is far later: this is the watchdog.
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, _drain, _server) = start(limits, ok).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(GET).await.unwrap();
        assert!(ends_with_ok(&read_until(&mut stream, ends_with_ok).await));
        assert!(read_until(&mut stream, never).await.is_empty());
    }

    #[tokio::test]
    async fn a_silent_http2_client_gets_goaway_then_is_dropped() {
        use tokio::io::AsyncWriteExt;
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, _drain, _server) = start(limits, ok).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // The preface and an empty SETTINGS frame; then nothing, not even the ping's ack.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let bytes = read_until(&mut stream, never).await;
        let mut frame_types = Vec::new();
        let mut rest = &bytes[..];
        while rest.len() >= 9 {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            frame_types.push(rest[3]);
            rest = rest.get(9 + length..).unwrap_or_default();
        }
        const GOAWAY: u8 = 7;
        assert!(frame_types.contains(&GOAWAY), "frames {frame_types:?}");
    }

    #[tokio::test]
    async fn a_client_that_never_sends_a_byte_is_closed() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, _drain, _server) = start(limits, ok).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(read_until(&mut stream, never).await.is_empty());
    }
}
