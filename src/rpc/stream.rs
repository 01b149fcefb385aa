//! The host's side of a worker's EventStream, over hyper's HTTP/2 server: [`Outbound`],
//! messages to the worker, each encoded by its sender into the pieces of one gRPC frame
//! ([`Frame`]), then streamed by [`EventBody`], which ends the call with `grpc-status: 0`.
//! (The worker's side is read in `inbound.rs`.)
//!
//! Encoding here rather than in a gRPC library lets a large HTTP request body go to the
//! worker as its own piece, the very buffer it arrived in (see `wire.rs`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame as HttpFrame, SizeHint};
use tokio::sync::mpsc;

use crate::proto::StreamingMessage;
use crate::proto::streaming_message::Content;

use super::wire::{self, Gather, Spliced};

/// Messages to one worker, each already a [`Frame`].
pub type Outbound = mpsc::Sender<Frame>;

/// One StreamingMessage in its gRPC frame, in pieces sent in order.
pub struct Frame {
    pieces: Vec<Bytes>,
}

impl Frame {
    /// Encodes `message`: an InvocationRequest whose HTTP body is large is spliced (the
    /// body is its own piece, not copied); anything else is encoded into one buffer.
    pub fn encode(mut message: StreamingMessage) -> Frame {
        if let Some(Content::InvocationRequest(request)) = &mut message.content
            && let Some(binding) = wire::splice_binding(&mut request.input_data)
            && let Some(Content::InvocationRequest(request)) = message.content.take()
        {
            // Tags: InvocationRequest.input_data 3, StreamingMessage.invocation_request 4.
            let request = Spliced::nest(&request, 3, binding);
            return Frame {
                pieces: Spliced::nest(&message, 4, request).framed().into(),
            };
        }
        Frame {
            pieces: vec![wire::frame(&message)],
        }
    }

    /// The encoded message's length (without the frame header), for the traffic metrics.
    pub fn message_len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum::<usize>() - wire::FRAME_HEADER
    }
}

/// The host's side of the call, the response body: the frames its senders queue, then
/// `grpc-status: 0` once every sender is gone. Frames queued together go out joined (see
/// [`Gather`]), so the invocations of one scheduler round cost one write to the worker.
pub struct EventBody {
    frames: Option<mpsc::Receiver<Frame>>,
    pieces: Gather,
    /// Every sender is gone and the trailers are still to send.
    closing: bool,
}

impl EventBody {
    pub fn new(frames: mpsc::Receiver<Frame>) -> EventBody {
        EventBody {
            frames: Some(frames),
            pieces: Gather::default(),
            closing: false,
        }
    }

    /// No body: the call's status is in the response headers (gRPC's "trailers-only").
    pub fn empty() -> EventBody {
        EventBody {
            frames: None,
            pieces: Gather::default(),
            closing: false,
        }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // What is queued now, up to one full chunk, so that it can be joined; no more, so
        // that the channel's bound still bounds the memory held for a slow worker.
        while let Some(frames) = this.frames.as_mut().filter(|_| !this.pieces.has_chunk()) {
            match frames.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    frame.pieces.into_iter().for_each(|p| this.pieces.push(p))
                }
                Poll::Ready(None) => {
                    this.frames = None;
                    this.closing = true;
                }
                Poll::Pending => break,
            }
        }
        if let Some(piece) = this.pieces.pop() {
            return Poll::Ready(Some(Ok(HttpFrame::data(piece))));
        }
        if std::mem::take(&mut this.closing) {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(HttpFrame::trailers(trailers))));
        }
        match this.frames {
            Some(_) => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none() && !self.closing && self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
