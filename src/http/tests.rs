//! The front end served end to end over real sockets, on both I/O backends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::body::{self, Body};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::*;

#[test]
fn default_limits_are_the_documented_ones() {
    let limits = HttpLimits::default();
    assert_eq!(limits.max_header_bytes, 32 * 1024);
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(120));
    assert_eq!(limits.max_connections, 10_000);
}

/// Each scenario, once per I/O backend.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod epoll {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(crate::config::IoMode::Epoll).await;
            })*
        }
        #[cfg(target_os = "linux")]
        mod uring {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario(crate::config::IoMode::Uring).await;
            })*
        }
    };
}

on_both_backends!(
    drain_answers_the_request_in_flight_with_connection_close_then_returns,
    connections_beyond_the_limit_wait_until_one_closes,
    an_idle_keep_alive_connection_is_closed_after_the_idle_timeout,
    a_silent_http2_client_gets_goaway_then_is_dropped,
    a_client_that_never_sends_a_byte_is_closed,
    keep_alive_serves_many_requests_and_large_answers,
);

/// A server on 127.0.0.1 port 0 with `handler` on backend `io`; send `true` on the
/// sender to drain.
async fn start<H, F>(
    io: IoMode,
    limits: HttpLimits,
    handler: H,
) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain, drain_rx) = watch::channel(false);
    let front_end = FrontEnd {
        io,
        threads: std::num::NonZeroUsize::MIN,
        simulate_uring_failure: false,
    };
    let server = tokio::spawn(serve_with(listener, handler, limits, front_end, drain_rx));
    (addr, drain, server)
}

async fn ok(_request: Request<Incoming>) -> Response<Body> {
    Response::new(body::full(Bytes::from_static(b"ok")))
}

const DEADLINE: Duration = Duration::from_secs(5);
const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads until `done(bytes so far)` holds or the peer closes; fails after [`DEADLINE`].
async fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let until = Instant::now() + DEADLINE;
    while !done(&bytes) {
        let mut chunk = [0; 4096];
        let read = tokio::time::timeout_at(until, stream.read(&mut chunk)).await;
        match read.expect("the server answers within the deadline") {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    bytes
}

fn ends_with_ok(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\r\n\r\nok")
}

fn never(_: &[u8]) -> bool {
    false
}

async fn drain_answers_the_request_in_flight_with_connection_close_then_returns(io: IoMode) {
    use tokio::io::AsyncWriteExt;
    let gate = Arc::new(Semaphore::new(0));
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = {
        let gate = gate.clone();
        move |request| {
            let gate = gate.clone();
            let started = started.clone();
            async move {
                let _ = started.send(());
                let _permit = gate.acquire().await;
                ok(request).await
            }
        }
    };
    let (addr, drain, server) = start(io, HttpLimits::default(), handler).await;

    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(GET).await.unwrap();
    tokio::time::timeout(DEADLINE, started_rx.recv())
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();

    drain.send(true).unwrap();
    assert!(read_until(&mut idle, never).await.is_empty(), "idle closed");
    let until = Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < until, "still accepting after the drain");
        tokio::task::yield_now().await;
    }

    gate.add_permits(1);
    let answer = String::from_utf8(read_until(&mut busy, never).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap();
}

async fn connections_beyond_the_limit_wait_until_one_closes(io: IoMode) {
    use tokio::io::AsyncWriteExt;
    let limits = HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    };
    let (addr, _drain, _server) = start(io, limits, ok).await;

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(GET).await.unwrap();
    assert!(ends_with_ok(&read_until(&mut first, ends_with_ok).await));

    // The kernel completes the handshake, but Sluice does not accept it yet.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(GET).await.unwrap();
    let mut byte = [0; 1];
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut second, &mut byte),
    )
    .await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");

    drop(first);
    assert!(ends_with_ok(&read_until(&mut second, ends_with_ok).await));
}

async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(io: IoMode) {
    use tokio::io::AsyncWriteExt;
    // hyper's own keep-alive bound (the header timeout) is far later: this is the watchdog.
    let limits = HttpLimits {
        header_read_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let (addr, _drain, _server) = start(io, limits, ok).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(ends_with_ok(&read_until(&mut stream, ends_with_ok).await));
    assert!(read_until(&mut stream, never).await.is_empty());
}

async fn a_silent_http2_client_gets_goaway_then_is_dropped(io: IoMode) {
    use tokio::io::AsyncWriteExt;
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let (addr, _drain, _server) = start(io, limits, ok).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The preface and an empty SETTINGS frame; then nothing, not even the ping's ack.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let bytes = read_until(&mut stream, never).await;
    let mut frame_types = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        frame_types.push(rest[3]);
        rest = rest.get(9 + length..).unwrap_or_default();
    }
    const GOAWAY: u8 = 7;
    assert!(frame_types.contains(&GOAWAY), "frames {frame_types:?}");
}

async fn a_client_that_never_sends_a_byte_is_closed(io: IoMode) {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let (addr, _drain, _server) = start(io, limits, ok).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert!(read_until(&mut stream, never).await.is_empty());
}

/// Whether `bytes` hold one whole HTTP/1 answer with a body of `body_len` bytes.
fn answered(bytes: &[u8], body_len: usize) -> bool {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .is_some_and(|end| bytes.len() - (end + 4) >= body_len)
}

/// The adapter's buffering: answers larger than any one write, bodies larger than any
/// one read, several requests on one connection.
async fn keep_alive_serves_many_requests_and_large_answers(io: IoMode) {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    const BIG: usize = 1 << 20;
    const UPLOAD: usize = 200 * 1024;
    let handler = |request: Request<Incoming>| async move {
        let uploaded = match request.into_body().collect().await {
            Ok(body) => body.to_bytes().len(),
            Err(_) => 0,
        };
        let body = match uploaded {
            0 => Bytes::from(vec![b'x'; BIG]),
            n => Bytes::from(n.to_string()),
        };
        Response::new(body::full(body))
    };
    let (addr, _drain, _server) = start(io, HttpLimits::default(), handler).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        stream.write_all(GET).await.unwrap();
        let answer = read_until(&mut stream, |b| answered(b, BIG)).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(answered(&answer, BIG) && answer.ends_with(b"xxxx"));

        let head = format!("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&vec![b'y'; UPLOAD]).await.unwrap();
        let answer = read_until(&mut stream, |b| b.ends_with(b"\r\n\r\n204800")).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }
}
