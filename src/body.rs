//! The response body type every handler returns: either bytes already in memory (the
//! classic gRPC path) or a stream relayed from a worker's own HTTP server (http-v2
//! apps), with whatever must live as long as the stream kept alive beside it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: in memory or streamed.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of bytes already in memory (no copy: `Bytes` is shared).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A streamed body, keeping `guard` (say, the worker's lease) until the stream ends or
/// the client goes away.
pub fn streamed<B, G>(body: B, guard: G) -> Body
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    G: Send + Unpin + 'static,
{
    Guarded {
        body,
        _guard: guard,
    }
    .map_err(Into::into)
    .boxed_unsync()
}

struct Guarded<B, G> {
    body: B,
    _guard: G,
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
