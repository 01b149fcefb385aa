//! HTTP forwarding to an http-v2 worker (platform-facts §6.1): a worker whose runtime
//! answered WorkerInit with `HttpUri` runs its own HTTP server (uvicorn) on 127.0.0.1.
//! For each invocation the host forwards the client's raw request there — method, path,
//! query, headers plus `x-ms-invocation-id`, and the body as it streams in — and relays
//! the worker's response back as it comes. Bodies are never buffered here: hyper only
//! reads from one side as fast as the other side takes, so a slow client slows the
//! function instead of growing memory.
//!
//! Connections to a worker's server are kept open and reused, as the platform's forwarder
//! (a pooling `SocketsHttpHandler`) does: a connection goes back to its worker's idle list
//! once its response has been read to the end, and is taken again while it is younger
//! than the server's keep-alive timeout.
//!
//! Knows nothing about routing or invocations; [`crate::dispatch`] pairs the forwarded
//! request with its InvocationRequest.

use std::error::Error as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::{IdleTimeout, Stalled};

/// The header that pairs a forwarded request with its invocation.
pub const INVOCATION_ID: HeaderName = HeaderName::from_static("x-ms-invocation-id");

/// Connect retries, as the platform's forwarder: up to 10, 50 ms doubling to 250 ms.
const CONNECT_RETRIES: u32 = 10;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(250);

/// How long an idle connection is reused. The runtime's uvicorn closes a connection idle
/// for 5 s (its default, which the runtime keeps); reusing one only well before that means
/// a request is never written to a connection the server is closing.
const IDLE_REUSE: Duration = Duration::from_secs(3);
/// Idle connections kept per worker (beyond them, a finished connection is closed).
const IDLE_MAX: usize = 256;

/// Headers that describe one connection, not the message: never forwarded either way.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// A forwarded request's body: the client's, within the body limit and its idle timeout.
pub type ForwardBody = IdleTimeout<Limited<Incoming>>;

type Sender = SendRequest<ForwardBody>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("worker HTTP address {0:?} is not of the form http://host:port")]
    BadUri(String),
    #[error("cannot connect to the worker's HTTP server at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("request body over the {limit}-byte limit")]
    BodyTooLarge { limit: u64 },
    #[error("the request body stalled for {0:?}")]
    BodyStalled(Duration),
    #[error("the client's request body failed: {0}")]
    ClientBody(String),
    #[error("failed to proxy the request: {0}")]
    Forward(#[source] hyper::Error),
}

/// A worker's HTTP server, from its `HttpUri` capability: where it listens, and the
/// connections to it that are open and idle. Clones share the idle connections.
#[derive(Clone)]
pub struct WorkerHttp {
    authority: String,
    idle: Arc<Mutex<Vec<Idle>>>,
}

/// A connection whose last response has ended, and since when.
struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    fn reusable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < IDLE_REUSE && self.sender.is_ready()
    }
}

impl PartialEq for WorkerHttp {
    fn eq(&self, other: &WorkerHttp) -> bool {
        self.authority == other.authority
    }
}

impl Eq for WorkerHttp {}

impl std::fmt::Debug for WorkerHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerHttp").field(&self.authority).finish()
    }
}

impl WorkerHttp {
    pub fn parse(uri: &str) -> Result<WorkerHttp, ProxyError> {
        let bad = || ProxyError::BadUri(uri.to_owned());
        let parsed: Uri = uri.parse().map_err(|_| bad())?;
        if parsed.scheme_str() != Some("http") {
            return Err(bad());
        }
        let authority = parsed.authority().ok_or_else(bad)?;
        authority.port_u16().ok_or_else(bad)?;
        Ok(WorkerHttp {
            authority: authority.as_str().to_owned(),
            idle: Arc::default(),
        })
    }

    /// From a worker's WorkerInit capabilities: `HttpUri` (sent with
    /// `RequiresRouteParameters`, which the platform's runtime always adds beside it).
    pub fn from_capabilities(
        capabilities: &std::collections::HashMap<String, String>,
    ) -> Result<Option<WorkerHttp>, ProxyError> {
        capabilities
            .get("HttpUri")
            .map(|uri| WorkerHttp::parse(uri))
            .transpose()
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The most recently used idle connection that can take a request; older and closed
    /// ones on the way are dropped (closing them).
    fn take_idle(&self) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop() {
            if entry.reusable(now) {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Puts `sender` back on the idle list once its response has been read to the end, if
    /// the server keeps the connection open; the worker may be gone by then.
    fn reuse_when_done(&self, mut sender: Sender) {
        let idle: Weak<Mutex<Vec<Idle>>> = Arc::downgrade(&self.idle);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return; // closed: by the server, or after a response not read to its end
            }
            let Some(idle) = idle.upgrade() else { return };
            let now = Instant::now();
            let mut idle = lock(&idle);
            idle.retain(|entry| entry.reusable(now));
            if idle.len() < IDLE_MAX {
                idle.push(Idle { sender, since: now });
            }
        });
    }
}

fn lock(idle: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    // A poisoned list only means a thread panicked while holding it; the list is fine.
    idle.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forwards one request and resolves with the worker's response head; its body streams
/// on (the connection is reused once it ends). `body_limit` only names the limit in the
/// error when the client's body (already wrapped in a limit) crosses it.
pub async fn forward(
    target: &WorkerHttp,
    invocation_id: &str,
    parts: http::request::Parts,
    body: ForwardBody,
    body_limit: u64,
) -> Result<Response<Incoming>, ProxyError> {
    let mut request = outgoing(parts, invocation_id, body)?;
    // An idle connection that turns out to be closing hands the request back unsent: the
    // next one, or a new connection, takes it.
    while let Some(mut sender) = target.take_idle() {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok(answered(target, sender, response)),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(classify(failed.into_error(), body_limit)),
            },
        }
    }
    let stream = connect(&target.authority).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProxyError::Forward)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "worker HTTP connection ended with an error");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| classify(e, body_limit))?;
    Ok(answered(target, sender, response))
}

fn answered(
    target: &WorkerHttp,
    sender: Sender,
    mut response: Response<Incoming>,
) -> Response<Incoming> {
    target.reuse_when_done(sender);
    strip_hop_by_hop(response.headers_mut());
    response
}

/// The request as the worker's server receives it: origin-form target, HTTP/1.1.
fn outgoing<B>(
    parts: http::request::Parts,
    invocation_id: &str,
    body: B,
) -> Result<Request<B>, ProxyError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = path
        .parse()
        .map_err(|_| ProxyError::ClientBody(format!("request target {path:?}")))?;
    *request.version_mut() = Version::HTTP_11;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // HTTP/2 clients send `:authority` instead of Host; HTTP/1.1 needs the header.
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    // `insert`, not `append`: a client must not pick another request's invocation.
    let id = HeaderValue::from_str(invocation_id)
        .map_err(|_| ProxyError::ClientBody("invocation id".into()))?;
    headers.insert(INVOCATION_ID, id);
    *request.headers_mut() = headers;
    Ok(request)
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

/// Connects, retrying connect errors (the server may still be starting; nothing has
/// been sent yet, so a retry is always safe).
async fn connect(addr: &str) -> Result<TcpStream, ProxyError> {
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 0;
    loop {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) if attempt >= CONNECT_RETRIES => {
                return Err(ProxyError::Connect {
                    addr: addr.to_owned(),
                    source,
                });
            }
            Err(error) => {
                debug!(%addr, %error, attempt, "worker HTTP connect failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                attempt += 1;
            }
        }
    }
}

/// A failure while sending: the client's body crossing the limit or failing is the
/// client's fault; anything else is the forwarder's.
fn classify(error: hyper::Error, body_limit: u64) -> ProxyError {
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return ProxyError::BodyTooLarge { limit: body_limit };
        }
        if let Some(stalled) = cause.downcast_ref::<Stalled>() {
            return ProxyError::BodyStalled(stalled.0);
        }
        source = cause.source();
    }
    match error.source() {
        Some(cause) if error.is_user() => ProxyError::ClientBody(cause.to_string()),
        _ => ProxyError::Forward(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_uris_need_http_host_and_port() {
        let ok = WorkerHttp::parse("http://127.0.0.1:40123").expect("valid");
        assert_eq!(ok.authority(), "127.0.0.1:40123");
        for bad in ["https://127.0.0.1:1", "http://127.0.0.1", "127.0.0.1:1", ""] {
            assert!(WorkerHttp::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_forwarded_request_keeps_method_path_query_and_headers_and_carries_the_id() {
        let (parts, ()) = Request::builder()
            .method("POST")
            .uri("http://example.com/api/sha?x=1&y=%20")
            .header("x-custom", "a")
            .header("connection", "keep-alive, x-private")
            .header("x-private", "secret")
            .header("transfer-encoding", "chunked")
            .header("x-ms-invocation-id", "forged")
            .body(())
            .expect("valid")
            .into_parts();
        let request = outgoing(parts, "abc-123", ()).expect("forwardable");
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri(), "/api/sha?x=1&y=%20");
        let h = request.headers();
        assert_eq!(h["x-custom"], "a");
        assert_eq!(h["host"], "example.com");
        assert_eq!(h[INVOCATION_ID], "abc-123");
        assert_eq!(h.get_all(INVOCATION_ID).iter().count(), 1);
        for gone in ["connection", "x-private", "transfer-encoding"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }
}
