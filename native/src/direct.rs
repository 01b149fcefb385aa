//! The EventStream driven from the worker's own thread: HTTP/2 (the `h2` crate) over a
//! non-blocking socket, polled by hand whenever the event loop sees the socket readable
//! (or writable, while a write is pending) and after each batch of outbound messages. No
//! second thread, so a request costs no cross-thread wake-up inside the worker.
//!
//! Nothing here blocks except the TCP connect. Every future is polled with a waker that only
//! raises a flag; `pump` polls until a round raises none, so work that h2 schedules for
//! itself (a stream woken by the connection) is done in the same call.

use std::future::Future;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::wire::{frame_bytes, take_frames};
use h2::client::{Connection, ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why the stream ended: `None` for a clean end by the host.
pub type End = Option<String>;

const METHOD: &str = "/AzureFunctionsRpcMessages.FunctionRpc/EventStream";
// Large enough that an HTTP body of a few MiB is not throttled by flow control.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Outbound gRPC frames go to h2 in pieces of at most this size (h2 takes < 2 GiB each).
const MAX_DATA: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad host address {0:?}")]
    Address(String),
    #[error("cannot reach the host at {target}: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("no connection to the host at {0} within the connect timeout")]
    Timeout(String),
}

/// Raised by the wakers h2 is given: "poll again".
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the socket said during one `pump`, shared with the [`Io`] h2 owns.
#[derive(Default)]
struct IoState {
    /// A write could not complete: watch for writability.
    write_blocked: AtomicBool,
    /// Reading may find data: set when the loop saw the socket readable, cleared by the
    /// first WouldBlock, so later polls in the same pump cost no syscall.
    may_read: AtomicBool,
}

/// The socket as h2 sees it: WouldBlock is Pending (the event loop re-polls on readiness).
struct Io {
    stream: TcpStream,
    state: Arc<IoState>,
}

impl Io {
    fn blocked<T>(
        &self,
        result: io::Result<T>,
        flag: &AtomicBool,
        value: bool,
    ) -> Poll<io::Result<T>> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                flag.store(value, Ordering::Relaxed);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.state.may_read.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let read = (&this.stream).read(buf.initialize_unfilled());
        this.blocked(read, &this.state.may_read, false)
            .map_ok(|n| buf.advance(n))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = (&self.stream).write(data);
        self.blocked(written, &self.state.write_blocked, true)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = (&self.stream).write_vectored(data);
        self.blocked(written, &self.state.write_blocked, true)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.stream.shutdown(Shutdown::Write))
    }
}

/// What one `pump` produced.
pub struct Pumped {
    pub messages: Vec<Bytes>,
    /// Set once the stream has ended (and stays set): None for a clean end, else why.
    pub end: Option<End>,
    /// A write could not complete: call `pump` again when the socket is writable.
    pub want_write: bool,
}

pub struct Direct {
    fd: RawFd,
    connection: Connection<Io, Bytes>,
    send: SendStream<Bytes>,
    response: Option<ResponseFuture>,
    recv: Option<RecvStream>,
    /// Inbound bytes not yet a whole gRPC frame.
    partial: BytesMut,
    max_message_length: usize,
    flag: Arc<Flag>,
    waker: Waker,
    io: Arc<IoState>,
    end: Option<End>,
}

impl Direct {
    /// Connects (blocking, at most `timeout`), starts the HTTP/2 connection and the
    /// EventStream call, and queues `first` (StartStream). Replies arrive through `pump`.
    pub fn connect(
        target: &str,
        first: Bytes,
        max_message_length: usize,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let unreachable = |e: &dyn std::fmt::Display| ConnectError::Unreachable {
            target: target.to_owned(),
            detail: e.to_string(),
        };
        let addr = target
            .to_socket_addrs()
            .map_err(|_| ConnectError::Address(target.to_owned()))?
            .next()
            .ok_or_else(|| ConnectError::Address(target.to_owned()))?;
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| {
            if e.kind() == io::ErrorKind::TimedOut {
                ConnectError::Timeout(target.to_owned())
            } else {
                unreachable(&e)
            }
        })?;
        stream.set_nodelay(true).map_err(|e| unreachable(&e))?;
        stream.set_nonblocking(true).map_err(|e| unreachable(&e))?;
        let fd = stream.as_raw_fd();
        let state = Arc::new(IoState::default());
        let io = Io {
            stream,
            state: state.clone(),
        };
        let flag = Arc::new(Flag::default());
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut handshake = Box::pin(
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(1 << 20)
                .handshake::<_, Bytes>(io),
        );
        // The client handshake only queues the preface: it completes without the server.
        let (send_request, connection) = match handshake.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(parts)) => parts,
            Poll::Ready(Err(e)) => return Err(unreachable(&e)),
            Poll::Pending => return Err(unreachable(&"HTTP/2 handshake did not complete")),
        };
        let (response, send) =
            start_call(send_request, target, &mut cx).map_err(|e| unreachable(&e))?;
        let mut direct = Self {
            fd,
            connection,
            send,
            response: Some(response),
            recv: None,
            partial: BytesMut::new(),
            max_message_length,
            flag,
            waker,
            io: state,
            end: None,
        };
        direct.send(&first).map_err(|e| unreachable(&e))?;
        Ok(direct)
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// Queues one encoded message, framed for gRPC in one buffer (its only copy); `pump`
    /// writes it.
    pub fn send(&mut self, message: &[u8]) -> Result<(), h2::Error> {
        self.send_frame(frame_bytes(message))
    }

    /// Queues a message already framed by [`crate::wire::frame`] (or one piece of a framed
    /// message),
    /// without copying it.
    pub fn send_frame(&mut self, mut frame: Bytes) -> Result<(), h2::Error> {
        while !frame.is_empty() {
            let piece = frame.split_to(frame.len().min(MAX_DATA));
            self.send.send_data(piece, false)?;
        }
        Ok(())
    }

    /// Writes what is queued and, when `readable` (the loop saw the socket readable), reads
    /// and decodes what arrived; until nothing more can progress now. Without `readable`
    /// nothing is read, so no message is returned.
    pub fn pump(&mut self, readable: bool) -> Pumped {
        let mut messages = Vec::new();
        self.io.write_blocked.store(false, Ordering::Relaxed);
        self.io.may_read.store(readable, Ordering::Relaxed);
        let waker = self.waker.clone();
        let mut cx = Context::from_waker(&waker);
        while self.end.is_none() {
            self.flag.0.store(false, Ordering::Relaxed);
            match Pin::new(&mut self.connection).poll(&mut cx) {
                Poll::Ready(Ok(())) => self.finish(Some("the host closed the connection".into())),
                Poll::Ready(Err(e)) => self.finish(Some(e.to_string())),
                Poll::Pending => {}
            }
            // Only a readable pump takes messages: a write-only one must not hand any out.
            if readable {
                self.poll_response(&mut cx);
                self.poll_body(&mut cx, &mut messages);
            }
            if !self.flag.0.load(Ordering::Relaxed) {
                break;
            }
        }
        Pumped {
            messages,
            end: self.end.clone(),
            want_write: self.end.is_none() && self.io.write_blocked.load(Ordering::Relaxed),
        }
    }

    fn poll_response(&mut self, cx: &mut Context<'_>) {
        let Some(response) = self.response.as_mut() else {
            return;
        };
        let Poll::Ready(result) = Pin::new(response).poll(cx) else {
            return;
        };
        self.response = None;
        match result {
            Ok(response) if response.status() != 200 => {
                self.finish(Some(format!(
                    "the host answered HTTP {}",
                    response.status()
                )));
            }
            Ok(response) => match grpc_status(response.headers()) {
                // A trailers-only answer: the call is over before it started.
                Some(status) => self.finish(status),
                None => self.recv = Some(response.into_body()),
            },
            Err(e) => self.finish(Some(e.to_string())),
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>, messages: &mut Vec<Bytes>) {
        let Some(recv) = self.recv.as_mut() else {
            return;
        };
        loop {
            match recv.poll_data(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    // Consumed at once: give the window back.
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    if let Err(why) =
                        take_frames(chunk, &mut self.partial, self.max_message_length, messages)
                    {
                        return self.finish(Some(why));
                    }
                }
                Poll::Ready(Some(Err(e))) => return self.finish(Some(e.to_string())),
                Poll::Ready(None) => {
                    let end = match recv.poll_trailers(cx) {
                        Poll::Ready(Ok(Some(trailers))) => grpc_status(&trailers).unwrap_or(None),
                        Poll::Ready(Ok(None)) => None,
                        Poll::Ready(Err(e)) => Some(e.to_string()),
                        Poll::Pending => return,
                    };
                    return self.finish(end);
                }
                Poll::Pending => return,
            }
        }
    }

    fn finish(&mut self, end: End) {
        if self.end.is_none() {
            self.end = Some(end);
        }
    }
}

fn start_call(
    mut send_request: SendRequest<Bytes>,
    target: &str,
    cx: &mut Context<'_>,
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    // A fresh connection always has room for its first stream.
    if let Poll::Ready(Err(e)) = send_request.poll_ready(cx) {
        return Err(e);
    }
    let request = http::Request::post(format!("http://{target}{METHOD}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a static request is valid");
    send_request.send_request(request, false)
}

/// None while the call goes on; Some(None) for grpc-status 0, Some(Some(why)) for an error.
fn grpc_status(headers: &http::HeaderMap) -> Option<End> {
    let status = headers.get("grpc-status")?.to_str().unwrap_or("2");
    if status == "0" {
        return Some(None);
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    Some(Some(format!("status {status}: {message}")))
}
