//! The access log (`--access-log`, off by default): one `info` line per answered request
//! under the target `access`, with the method, the path without its query (a query may
//! carry keys), the status, the duration, the function and invocation id, the response
//! body's bytes and the request's trace and span ids. A body already in memory is logged
//! with the response head; a streamed one (http-v2) when it ends or the client leaves,
//! with the bytes that went out and the duration until then.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tracing::info;

use crate::body::{Body, BoxError};
use crate::metrics::FunctionName;
use crate::trace::TraceContext;

/// What the access line says about one request, gathered while it is served.
pub(crate) struct Entry {
    pub(crate) method: Method,
    /// Only its path is logged.
    pub(crate) uri: Uri,
    pub(crate) started: Instant,
    pub(crate) function: FunctionName,
    pub(crate) invocation: Option<uuid::Uuid>,
    pub(crate) trace: TraceContext,
}

impl Entry {
    /// Logs the entry now if the body's size is known, else once the body has gone out.
    pub(crate) fn log_when_sent(self, response: Response<Body>) -> Response<Body> {
        if let Some(bytes) = response.body().size_hint().exact() {
            self.log(response.status(), bytes, true);
            return response;
        }
        let status = response.status();
        response.map(|body| {
            Counted {
                body,
                sent: 0,
                entry: Some((self, status)),
            }
            .boxed_unsync()
        })
    }

    /// `complete`: the whole body went out (a streamed one may be cut short by the client).
    fn log(&self, status: StatusCode, bytes: u64, complete: bool) {
        let invocation = self.invocation.map(|id| id.hyphenated().to_string());
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        info!(
            target: "access",
            method = %self.method,
            path = self.uri.path(),
            status = status.as_u16(),
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            function = %self.function,
            invocation_id = invocation.as_deref().unwrap_or("-"),
            bytes,
            complete,
            trace_id = %self.trace.trace_id,
            span_id = %self.trace.span_id,
            parent_span_id = %self.trace.parent.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            "request"
        );
    }
}

/// A streamed body that counts what goes out and logs its entry when it ends or is
/// dropped.
struct Counted {
    body: Body,
    sent: u64,
    entry: Option<(Entry, StatusCode)>,
}

impl Counted {
    fn finish(&mut self, complete: bool) {
        if let Some((entry, status)) = self.entry.take() {
            entry.log(status, self.sent, complete);
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish(false);
    }
}
