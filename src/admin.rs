//! The admin listener, on its own port (default 127.0.0.1:9091), never the public one:
//! `GET /metrics` (the OpenMetrics text exactly as [`Metrics::encode`] produces it),
//! `GET /healthz` (200 while the process runs) and `GET /readyz` (200 only while the
//! readiness check passes: a worker is ready and Sluice is not draining).
//! It keeps answering until it is aborted at exit, so probes see `/readyz` 503 for the
//! whole drain. It knows nothing about workers or the pool: readiness is a function
//! the wiring gives it. In placeholder mode it also takes `POST /admin/assign` (a JSON
//! body, at most 1 MiB), handed to the assignment function the wiring gives it — only
//! with the admin token (`Authorization: Bearer <token>`) when one is configured; the
//! probes and `/metrics` stay open to kubelets and scrapers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, error, warn};

use crate::config::AdminToken;
use crate::metrics::{self, Metrics};

/// Largest `POST /admin/assign` body.
const ASSIGN_BODY_LIMIT: usize = 1 << 20;

/// Handles an assignment body; answers with a status and a short text.
pub type AssignFn = Box<
    dyn Fn(Bytes) -> std::pin::Pin<Box<dyn Future<Output = (StatusCode, String)> + Send>>
        + Send
        + Sync,
>;

/// A scraper or probe that has not sent its request head by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints answer from.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// `true` while Sluice should receive traffic.
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
    /// Placeholder mode: specialises the workers for the app in the body.
    pub assign: Option<AssignFn>,
    /// Required by `POST /admin/assign`; `None` (allowed on loopback only) = open.
    pub token: Option<AdminToken>,
}

/// Binds the admin listener; port 0 picks a free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until the task is aborted.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                debug!(%error, "admin accept failed");
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let admin = admin.clone();
                async move {
                    if request.uri().path() == "/admin/assign" {
                        return Ok::<_, Infallible>(admin.assign(request, peer).await);
                    }
                    Ok(admin.handle(&request))
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
}

impl Admin {
    async fn assign(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let Some(assign) = &self.assign else {
            return text(StatusCode::NOT_FOUND, "not in placeholder mode\n");
        };
        if request.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        }
        if let Some(token) = &self.token
            && !bearer(&request).is_some_and(|given| token.matches(given))
        {
            warn!(%peer, "assignment refused: missing or wrong admin token");
            let mut response = text(StatusCode::UNAUTHORIZED, "admin token required\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let body = match Limited::new(request.into_body(), ASSIGN_BODY_LIMIT)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                debug!(error = %e, "assignment body unreadable");
                return text(
                    StatusCode::BAD_REQUEST,
                    "cannot read the body (at most 1 MiB)\n",
                );
            }
        };
        let (status, message) = assign(body).await;
        let mut response = Response::new(Full::new(Bytes::from(message)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    fn handle(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match request.uri().path() {
            "/metrics" => match self.metrics.encode() {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(metrics::CONTENT_TYPE),
                    );
                    response
                }
                Err(e) => {
                    error!(error = %e, "cannot encode metrics");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
                }
            },
            "/healthz" => text(StatusCode::OK, "ok"),
            "/readyz" if (self.ready)() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// The credentials of `Authorization: Bearer <token>`.
fn bearer(request: &Request<Incoming>) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
