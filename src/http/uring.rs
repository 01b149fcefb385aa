//! The io_uring backend (`--io uring`): front-end threads, each running a tokio-uring
//! runtime, accept on a shared listening socket and serve their connections with the
//! same hyper connection code as the epoll backend. Requests still reach the
//! dispatcher and the worker sessions, which live on the host's tokio runtime, over
//! its channels. This module owns the probe (can this kernel, under this seccomp
//! policy, run io_uring at all?) and the adapter between tokio-uring's owned-buffer
//! operations and the poll-based I/O traits hyper drives.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crate::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot, watch};
use tracing::{debug, info, warn};

use super::{Accept, HttpLimits, Stop, accept_until_drain, all_permits, builder, connection};

/// Bytes asked for per read: hyper's own read buffer starts at 8 KiB.
const READ_SIZE: usize = 8 * 1024;
/// Most bytes copied into one write. io_uring owns a write's buffer, so written bytes
/// are copied; taking them in slices of this size keeps that copy small however large
/// the response (a 100 MB body is not duplicated) and lets a slow client slow hyper.
const WRITE_SIZE: usize = 64 * 1024;

/// io_uring cannot be used here; the listener is handed back for epoll.
pub(super) struct Unavailable {
    pub(super) listener: TcpListener,
    pub(super) error: io::Error,
}

/// What the uring front end needs besides the listener.
pub(super) struct Setup<H> {
    pub(super) handler: H,
    pub(super) limits: HttpLimits,
    pub(super) threads: NonZeroUsize,
    /// Fail the probe as a kernel without io_uring would (tests of the fallback).
    pub(super) simulate_failure: bool,
    pub(super) permits: Arc<Semaphore>,
    pub(super) drain: watch::Receiver<bool>,
}

/// Serves on `setup.threads` io_uring threads until a drain is requested, then returns
/// once every thread has stopped accepting (their connections finish on their own
/// threads; the caller waits for them through the permits). The first thread is the
/// probe: if it cannot run io_uring, nothing has been accepted yet and the listener
/// comes back in [`Unavailable`].
pub(super) async fn serve<H, F>(listener: TcpListener, setup: Setup<H>) -> Result<(), Unavailable>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut stopped = Vec::with_capacity(setup.threads.get());
    for index in 0..setup.threads.get() {
        // Every thread accepts on its own descriptor of the one socket; tokio's stays
        // with the caller until the probe has passed.
        let socket = match duplicate(&listener) {
            Ok(socket) => socket,
            Err(error) if index == 0 => return Err(Unavailable { listener, error }),
            Err(error) => {
                warn!(%error, thread = index, "cannot start an io_uring front-end thread");
                break;
            }
        };
        let (probed, probe) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let thread = FrontEndThread {
            socket,
            handler: setup.handler.clone(),
            limits: setup.limits.clone(),
            simulate_failure: setup.simulate_failure,
            permits: setup.permits.clone(),
            drain: setup.drain.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("sluice-uring-{index}"))
            .spawn(move || thread.run(probed, stopped_tx));
        let outcome = match spawned {
            Ok(_) => probe
                .await
                .unwrap_or_else(|_| Err(io::Error::other("thread ended"))),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => {
                if index == 0 {
                    info!(io = "uring", threads = setup.threads.get(), "serving HTTP");
                }
                stopped.push(stopped_rx);
            }
            Err(error) if index == 0 => return Err(Unavailable { listener, error }),
            Err(error) => {
                warn!(%error, thread = index, "cannot start an io_uring front-end thread");
                break;
            }
        }
    }
    // The uring threads own the socket now: epoll must not see its connections.
    drop(listener);
    for thread in stopped {
        let _ = thread.await;
    }
    Ok(())
}

/// A second descriptor for the listening socket.
fn duplicate(listener: &TcpListener) -> io::Result<std::net::TcpListener> {
    Ok(std::net::TcpListener::from(
        listener.as_fd().try_clone_to_owned()?,
    ))
}

/// Everything one front-end thread owns.
struct FrontEndThread<H> {
    socket: std::net::TcpListener,
    handler: H,
    limits: HttpLimits,
    simulate_failure: bool,
    permits: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
}

impl<H, F> FrontEndThread<H>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Sets up io_uring (answering `probed`), serves until the drain, reports
    /// `stopped`, then keeps running until every connection has ended.
    fn run(self, probed: oneshot::Sender<io::Result<()>>, stopped: oneshot::Sender<()>) {
        let runtime = if self.simulate_failure {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "io_uring probe failure simulated (SLUICE_URING_PROBE=fail)",
            ))
        } else {
            tokio_uring::Runtime::new(&tokio_uring::builder())
        };
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = probed.send(Err(error));
                return;
            }
        };
        runtime.block_on(async move {
            // Setting up a ring can succeed where submitting to it is refused (seccomp).
            if let Err(error) = tokio_uring::no_op().await {
                let _ = probed.send(Err(error));
                return;
            }
            // Blocking mode, so that io_uring's accept waits for a connection instead of
            // failing with EAGAIN. The flag belongs to the socket shared with tokio's
            // listener, so it changes only once io_uring is known to work (tokio's copy
            // is then never polled again).
            if let Err(error) = self.socket.set_nonblocking(false) {
                let _ = probed.send(Err(error));
                return;
            }
            let _ = probed.send(Ok(()));
            let permits = self.permits.clone();
            let limits = self.limits.clone();
            self.serve().await;
            let _ = stopped.send(());
            let _ = permits.acquire_many(all_permits(&limits)).await;
        });
    }

    async fn serve(self) {
        let Self {
            socket,
            handler,
            limits,
            permits,
            drain,
            ..
        } = self;
        let listener = match UringListener::new(socket) {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, "an io_uring front-end thread cannot accept");
                return;
            }
        };
        let builder = Arc::new(builder(&limits));
        accept_until_drain(
            &listener,
            &permits,
            drain.clone(),
            |stream, peer, permit| {
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%peer, %error, "cannot set TCP_NODELAY");
                }
                let connection = connection::serve_connection(
                    UringStream::new(stream),
                    peer,
                    builder.clone(),
                    handler.clone(),
                    limits.clone(),
                    drain.clone(),
                );
                tokio_uring::spawn(async move {
                    connection.await;
                    drop(permit);
                });
            },
        )
        .await;
    }
}

/// The thread's listening socket.
struct UringListener {
    socket: tokio_uring::net::TcpListener,
    /// The same socket as a plain descriptor, to shut it down: a pending io_uring
    /// accept is not cancelled by dropping its future, but it ends when the socket
    /// stops listening.
    control: std::net::TcpStream,
}

impl UringListener {
    fn new(socket: std::net::TcpListener) -> io::Result<Self> {
        let control = std::net::TcpStream::from(socket.as_fd().try_clone_to_owned()?);
        Ok(Self {
            socket: tokio_uring::net::TcpListener::from_std(socket),
            control,
        })
    }
}

impl Accept for UringListener {
    type Stream = tokio_uring::net::TcpStream;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        self.socket.accept()
    }

    fn stop(&self) -> Stop {
        // shutdown(2) on a listening socket stops it and fails its pending accepts.
        if let Err(error) = self.control.shutdown(std::net::Shutdown::Both) {
            debug!(%error, "cannot shut the listening socket down");
        }
        Stop::Await
    }
}

type ReadOp = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;
type WriteOp = Pin<Box<dyn Future<Output = (io::Result<()>, Vec<u8>)>>>;

/// A tokio-uring socket behind tokio's `AsyncRead`/`AsyncWrite`. io_uring owns a
/// buffer while an operation runs, so reads land in a buffer of ours first, and up to
/// [`WRITE_SIZE`] bytes of a write are copied into one and reported done at once (one
/// write in flight at a time); flush, shutdown and the end of the stream wait for it,
/// so no answer is cut off. Writes are vectored so that hyper queues body chunks
/// instead of flattening them into its own buffer (another whole copy).
struct UringStream {
    socket: Rc<tokio_uring::net::TcpStream>,
    reading: Option<ReadOp>,
    /// Bytes read but not yet handed over, from `read_at`.
    read_buf: Vec<u8>,
    read_at: usize,
    /// The peer has closed its side; reported once pending writes are done.
    read_eof: bool,
    writing: Option<WriteOp>,
    /// The buffer of the last finished write, kept for the next.
    write_buf: Vec<u8>,
}

impl UringStream {
    fn new(socket: tokio_uring::net::TcpStream) -> Self {
        Self {
            socket: Rc::new(socket),
            reading: None,
            read_buf: Vec::new(),
            read_at: 0,
            read_eof: false,
            writing: None,
            write_buf: Vec::new(),
        }
    }

    /// Drives the pending write, if any, to its end.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(op) = self.writing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let (result, buf) = ready!(op.as_mut().poll(cx));
        self.writing = None;
        self.write_buf = buf;
        Poll::Ready(result)
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        // A read still in flight holds the descriptor open, so closing it would leave the
        // peer waiting forever: shutting the socket down ends that read and tells the peer.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl AsyncRead for UringStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.read_buf.len() {
                let n = out.remaining().min(this.read_buf.len() - this.read_at);
                out.put_slice(&this.read_buf[this.read_at..this.read_at + n]);
                this.read_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                // hyper closes the connection on end of stream: first finish the answer.
                ready!(this.poll_written(cx))?;
                return Poll::Ready(Ok(()));
            }
            let op = this.reading.get_or_insert_with(|| {
                let socket = this.socket.clone();
                let mut buf = std::mem::take(&mut this.read_buf);
                buf.clear();
                buf.reserve(READ_SIZE);
                Box::pin(async move { socket.read(buf).await })
            });
            let (result, buf) = ready!(op.as_mut().poll(cx));
            this.reading = None;
            this.read_buf = buf;
            this.read_at = 0;
            match result {
                Ok(0) => this.read_eof = true,
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx))?;
        let mut buf = std::mem::take(&mut this.write_buf);
        buf.clear();
        for slice in slices {
            let room = WRITE_SIZE - buf.len();
            if room == 0 {
                break;
            }
            buf.extend_from_slice(&slice[..slice.len().min(room)]);
        }
        let taken = buf.len();
        if taken == 0 {
            this.write_buf = buf;
            return Poll::Ready(Ok(0));
        }
        let socket = this.socket.clone();
        let op: WriteOp = Box::pin(async move { socket.write_all(buf).await });
        this.writing = Some(op);
        // Submit now; a write that completes at once frees its buffer at once.
        if let Poll::Ready(Err(error)) = this.poll_written(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Once submitted, the bytes are the kernel's to send: hyper may go on reading the
        // next request meanwhile. A failure surfaces at the next write, flush or shutdown.
        match self.get_mut().poll_written(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_written(cx))?;
        match this.socket.shutdown(std::net::Shutdown::Write) {
            // The peer is already gone: nothing left to tell it.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            result => Poll::Ready(result),
        }
    }
}
