//! One HTTP connection, whatever socket carries it: hyper serves it, a watchdog bounds
//! its idle and closing time, and every request passes the path check before the
//! handler. The backends (epoll, io_uring) only hand it a socket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::body::{self, Body};
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::watchdog::{Activity, Watch, Watched};
use super::{HttpLimits, drain_requested};

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("malformed percent-encoding in the request path")]
    BadEscape,
    #[error("the request path does not decode to UTF-8")]
    NotUtf8,
}

/// Serves one connection until it ends. On drain, or once idle, it is asked to close
/// gracefully; if it then stays silent for `header_read_timeout` with nothing in flight
/// (an HTTP/2 client that never answers the GOAWAY ping, say), it is dropped.
pub(super) async fn serve_connection<T, H, F>(
    stream: T,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: H,
    limits: HttpLimits,
    mut drain: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
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
) -> Response<Body>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Body>>,
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
fn bad_path(error: PathError) -> Response<Body> {
    let mut response = Response::new(body::full(error.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
}
