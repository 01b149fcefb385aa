//! The worker's side of its EventStream as the host reads it: DATA chunks cut into
//! messages by the shared framing (`wire.rs`). A large InvocationResponse that splits
//! (`split.rs`) is handed on as soon as its head is in, and its HTTP body follows as a
//! [`BodyStream`] while it arrives: the client gets the first bytes while the worker is
//! still sending the rest, and the body is never gathered into one buffer here.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prost::Message;
use tokio::sync::mpsc;

use super::split::split_response;
use super::wire::{self, FRAME_HEADER, SPLICE_MIN};
use crate::proto::StreamingMessage;

/// The most of a large message's start gathered while looking for the end of its head;
/// a head longer than this (headers of 64 KiB) is not split.
const HEAD_MAX: usize = 64 * 1024;

/// Why reading a worker's stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad gRPC framing: {0}")]
    Framing(String),
    #[error("an undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the stream ended inside a message")]
    Truncated,
}

/// One message from the worker.
pub struct Received {
    /// Without its HTTP body when that body is streamed.
    pub message: StreamingMessage,
    /// The encoded message's length, body included.
    pub len: usize,
    pub body: Option<StreamedBody>,
}

/// An InvocationResponse's HTTP body, arriving after the rest of its message.
pub struct StreamedBody {
    /// The output binding whose HTTP value it belongs to; None for the return value.
    pub binding: Option<String>,
    pub body: BodyStream,
}

/// The worker's side of the call: its request body.
pub struct Inbound {
    body: Incoming,
    frames: Frames,
}

impl Inbound {
    pub fn new(body: Incoming, max_message: usize) -> Inbound {
        Inbound {
            body,
            frames: Frames::new(max_message),
        }
    }

    /// The next message; None once the worker has ended its side of the call. Safe to
    /// cancel (a timeout around it loses nothing).
    pub async fn message(&mut self) -> Result<Option<Received>, StreamError> {
        loop {
            if let Some(received) = self.frames.ready.pop_front() {
                return Ok(Some(received));
            }
            let Some(frame) = self.body.frame().await else {
                return match self.frames.is_between_messages() {
                    true => Ok(None),
                    false => Err(StreamError::Truncated),
                };
            };
            // Trailers from a gRPC client carry nothing the host needs.
            if let Ok(data) = frame?.into_data() {
                self.frames.feed(data)?;
            }
        }
    }
}

enum State {
    /// Between messages, or inside one the shared framing gathers (in `partial`).
    Framing,
    /// The first bytes of a large message (frame header included) and its length.
    Head { buf: BytesMut, len: usize },
    /// A split message's body being passed on, and how much of it is still to come.
    Body {
        tx: mpsc::UnboundedSender<Bytes>,
        missing: usize,
    },
}

/// DATA chunks cut into messages.
struct Frames {
    state: State,
    /// Received bytes not yet a whole message (in [`State::Framing`]).
    partial: BytesMut,
    ready: VecDeque<Received>,
    scratch: Vec<Bytes>,
    max_message: usize,
}

impl Frames {
    fn new(max_message: usize) -> Frames {
        Frames {
            state: State::Framing,
            partial: BytesMut::new(),
            ready: VecDeque::new(),
            scratch: Vec::new(),
            max_message,
        }
    }

    fn is_between_messages(&self) -> bool {
        matches!(self.state, State::Framing) && self.partial.is_empty()
    }

    fn feed(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Body { tx, missing } => {
                    let piece = data.split_to(data.len().min(*missing));
                    *missing -= piece.len();
                    // A client that has gone away no longer listens: the rest is dropped.
                    let _ = tx.send(piece);
                    if *missing == 0 {
                        self.state = State::Framing;
                    }
                }
                State::Head { buf, len } => {
                    let frame_end = FRAME_HEADER + *len;
                    buf.extend_from_slice(&data.split_to(data.len().min(frame_end - buf.len())));
                    self.try_split()?;
                }
                State::Framing => {
                    if let Some(len) = self.next_frame_len(&data)?
                        && len >= SPLICE_MIN
                    {
                        let buf = std::mem::take(&mut self.partial);
                        self.state = State::Head { buf, len };
                        continue;
                    }
                    self.take_frames(data)?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The length of the frame starting with `partial` (no more than the start of a frame
    /// header) and then `data`, once its header is there; None inside a frame.
    fn next_frame_len(&self, data: &[u8]) -> Result<Option<usize>, StreamError> {
        let have = self.partial.len();
        if have >= FRAME_HEADER || have + data.len() < FRAME_HEADER {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER];
        header[..have].copy_from_slice(&self.partial);
        header[have..].copy_from_slice(&data[..FRAME_HEADER - have]);
        wire::frame_len(&header, self.max_message).map_err(StreamError::Framing)
    }

    /// In [`State::Head`]: splits the message once its head is in, or hands it to the
    /// ordinary framing once it is clear it will not split.
    fn try_split(&mut self) -> Result<(), StreamError> {
        let State::Head { buf, len } = &mut self.state else {
            return Ok(());
        };
        let len = *len;
        if let Some(split) = split_response(&buf[FRAME_HEADER..], len) {
            let body_len = len - split.body_start;
            let arrived = buf.split_off(FRAME_HEADER + split.body_start).freeze();
            let missing = body_len - arrived.len();
            // Unbounded in messages, bounded in bytes: the body's length, as announced.
            let (tx, rx) = mpsc::unbounded_channel();
            if !arrived.is_empty() {
                let _ = tx.send(arrived);
            }
            self.ready.push_back(Received {
                message: split.message,
                len,
                body: Some(StreamedBody {
                    binding: split.binding,
                    body: BodyStream {
                        rx,
                        remaining: body_len as u64,
                    },
                }),
            });
            self.state = match missing {
                0 => State::Framing,
                missing => State::Body { tx, missing },
            };
        } else if buf.len() >= FRAME_HEADER + len.min(HEAD_MAX) {
            self.partial = std::mem::take(buf);
            self.state = State::Framing;
            self.take_frames(Bytes::new())?;
        }
        Ok(())
    }

    fn take_frames(&mut self, data: Bytes) -> Result<(), StreamError> {
        wire::take_frames(data, &mut self.partial, self.max_message, &mut self.scratch)
            .map_err(StreamError::Framing)?;
        for message in self.scratch.drain(..) {
            self.ready.push_back(Received {
                len: message.len(),
                message: StreamingMessage::decode(message)?,
                body: None,
            });
        }
        Ok(())
    }
}

/// A body cut short: the worker's stream ended before all of it arrived.
#[derive(Debug, thiserror::Error)]
#[error("the worker's stream ended {0} bytes before the end of the response body")]
pub struct BodyCut(u64);

/// A streamed HTTP body, of a length known from the start.
pub struct BodyStream {
    rx: mpsc::UnboundedReceiver<Bytes>,
    remaining: u64,
}

impl Body for BodyStream {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(piece)) => {
                this.remaining -= piece.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(BodyCut(this.remaining)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::framed;
    use super::*;
    use crate::proto::streaming_message::Content;
    use crate::proto::{RpcLog, StreamingMessage};

    fn log(text: &str) -> Vec<u8> {
        framed(
            &StreamingMessage {
                request_id: String::new(),
                content: Some(Content::RpcLog(RpcLog {
                    message: text.into(),
                    ..Default::default()
                })),
            }
            .encode_to_vec(),
        )
    }

    fn texts(frames: &mut Frames) -> Vec<String> {
        frames
            .ready
            .drain(..)
            .map(|r| match r.message.content {
                Some(Content::RpcLog(log)) => log.message,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_large_message_that_does_not_split_is_gathered_whole_among_small_ones() {
        // An RpcLog with a 100 KiB message: large, but not a response.
        let large = "x".repeat(100 * 1024);
        let stream = [log("one"), log(&large), log("two")].concat();
        let cuts = [0, 5, 9, 20, 30, 70_000, stream.len() - 30, stream.len() - 3];
        for (i, &first) in cuts.iter().enumerate() {
            for &second in &cuts[i..] {
                let mut frames = Frames::new(usize::MAX);
                for chunk in [&stream[..first], &stream[first..second], &stream[second..]] {
                    frames.feed(Bytes::copy_from_slice(chunk)).unwrap();
                }
                assert_eq!(
                    texts(&mut frames),
                    ["one", &large, "two"],
                    "cuts {first} {second}"
                );
                assert!(frames.is_between_messages());
            }
        }
    }

    #[test]
    fn a_spliced_response_is_handed_on_at_its_head_and_its_body_follows_in_pieces() {
        use crate::proto::typed_data::Data;
        use crate::proto::{InvocationResponse, RpcHttp, TypedData};
        let body: Vec<u8> = (0..200 * 1024).map(|i| (i % 253) as u8).collect();
        let response = InvocationResponse {
            invocation_id: "i".into(),
            return_value: Some(TypedData {
                data: Some(Data::Http(Box::new(RpcHttp {
                    status_code: "200".into(),
                    body: Some(Box::new(TypedData {
                        data: Some(Data::Bytes(Bytes::from(body.clone()))),
                    })),
                    ..Default::default()
                }))),
            }),
            ..Default::default()
        };
        let message = super::super::split::encode_spliced(response.clone());
        let before = log("before");
        // As the worker sends it: the large message starts a DATA chunk.
        let rest = [framed(&message), log("after")].concat();
        let head_end = rest.len() - log("after").len() - body.len();
        let cuts = [1, 20, head_end - 2, head_end, head_end + 1, rest.len() - 40];
        for (i, &first) in cuts.iter().enumerate() {
            for &second in &cuts[i..] {
                let mut frames = Frames::new(usize::MAX);
                let chunks = [
                    &before[..],
                    &rest[..first],
                    &rest[first..second],
                    &rest[second..],
                ];
                let mut seen = Vec::new();
                for chunk in chunks {
                    frames.feed(Bytes::copy_from_slice(chunk)).unwrap();
                    seen.extend(frames.ready.drain(..));
                }
                assert_eq!(seen.len(), 3, "cuts {first} {second}");
                let mut streamed = seen.remove(1);
                assert_eq!(streamed.len, message.len());
                let Some(StreamedBody {
                    binding: None,
                    body: out,
                }) = streamed.body.as_mut()
                else {
                    panic!("cuts {first} {second}: the body is not streamed");
                };
                assert_eq!(out.size_hint().exact(), Some(body.len() as u64));
                let mut received = Vec::new();
                while let Ok(piece) = out.rx.try_recv() {
                    received.extend_from_slice(&piece);
                }
                assert!(received == body, "cuts {first} {second}: the body changed");
                let mut others = Frames::new(0);
                others.ready.extend(seen);
                assert_eq!(texts(&mut others), ["before", "after"]);
                assert!(frames.is_between_messages());
            }
        }
        // A large message that does not start its chunk is gathered whole, body included.
        let mut frames = Frames::new(usize::MAX);
        let stream = [before, rest].concat();
        frames.feed(Bytes::copy_from_slice(&stream[..100])).unwrap();
        frames.feed(Bytes::copy_from_slice(&stream[100..])).unwrap();
        let gathered = frames.ready.drain(..).nth(1).expect("the response");
        assert!(gathered.body.is_none());
        let Some(Content::InvocationResponse(decoded)) = gathered.message.content else {
            panic!("not the response");
        };
        assert_eq!(decoded, response);
    }

    #[test]
    fn a_stream_ending_inside_a_large_message_is_not_between_messages() {
        let mut frames = Frames::new(usize::MAX);
        let large = log(&"y".repeat(SPLICE_MIN));
        frames.feed(Bytes::copy_from_slice(&large[..1000])).unwrap();
        assert!(frames.ready.is_empty());
        assert!(!frames.is_between_messages());
    }
}
