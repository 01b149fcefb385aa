//! The response body type every handler returns: either bytes already in memory (the
//! classic gRPC path) or a stream relayed from a worker's own HTTP server (http-v2
//! apps), with whatever must live as long as the stream kept alive beside it. And the
//! idle timeout on request bodies, whether read here or forwarded.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

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

/// The client sent no body bytes for this long while the worker was waiting for them.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for {0:?}")]
pub struct Stalled(pub Duration);

/// A request body that fails with [`Stalled`] when the client keeps the worker waiting
/// for its next bytes longer than `idle`. The clock runs only while the body is asked for
/// data and has none: time the worker spends not reading (backpressure) never counts.
pub struct IdleTimeout<B> {
    body: B,
    idle: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(body: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            body,
            idle,
            waiting: None,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.waiting = None;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let idle = this.idle;
        let timer = this
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + idle)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_body_times_out_only_after_waiting_idle_for_the_client() {
        use http_body_util::BodyExt;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = IdleTimeout::new(
            http_body_util::StreamBody::new(stream),
            Duration::from_secs(30),
        );
        // Not asked for data for longer than the limit (the worker was busy): no timeout.
        tokio::time::advance(Duration::from_secs(100)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .expect("open");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"a")));
        // Asked, and the client sends nothing: the clock runs from here.
        let stalled = tokio::time::timeout(Duration::from_secs(31), body.frame())
            .await
            .expect("times out by itself")
            .expect("an item")
            .expect_err("stalled");
        assert!(stalled.is::<Stalled>(), "{stalled}");
        drop(tx);
    }
}
