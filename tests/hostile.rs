//! Hostile and broken HTTP clients against the real `sluice` binary serving `examples/hello` with
//! real Python workers: malformed request lines, oversized headers and bodies, undecodable paths,
//! clients that stall or sit idle, and many open connections. Each case speaks raw bytes over a
//! `TcpStream` where a well-behaved client library would refuse to, and after each one the server
//! must still answer `GET /api/hello` with 200.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{Extras, Options, Sluice, client, hello_app};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// An answer Sluice should give at once takes at most this long. Shorter than the dispatcher's
/// 30 s body idle timeout, so a server that waits for the rest of a body fails the test.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// The default header read timeout is 10 s; a stalled client must be gone well before this.
const CLOSE_DEADLINE: Duration = Duration::from_secs(20);

/// `FUNCTIONS_REQUEST_BODY_SIZE_LIMIT` for the body tests.
const BODY_LIMIT: usize = 1024 * 1024;

/// One HTTP/1 response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Status line and headers, lower-cased.
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// A raw HTTP/1 connection that keeps bytes read past one response for the next.
struct Raw {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = timeout(ANSWER_DEADLINE, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .context("connect")?;
        Ok(Self {
            stream,
            buffered: Vec::new(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        timeout(ANSWER_DEADLINE, self.stream.write_all(bytes))
            .await
            .context("write timed out")?
            .context("write")
    }

    /// Reads one response: the head, then a `Content-Length` body if there is one.
    async fn response(&mut self) -> anyhow::Result<RawResponse> {
        timeout(ANSWER_DEADLINE, self.read_response())
            .await
            .with_context(|| format!("no complete response within {ANSWER_DEADLINE:?}"))?
    }

    async fn read_response(&mut self) -> anyhow::Result<RawResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).to_ascii_lowercase();
        self.buffered.drain(..head_end);
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let mut response = RawResponse {
            status,
            head,
            body: Vec::new(),
        };
        let length: usize = match response.header("content-length") {
            Some(n) => n.parse().context("content-length")?,
            None => 0,
        };
        while self.buffered.len() < length {
            self.fill().await?;
        }
        response.body = self.buffered.drain(..length).collect();
        Ok(response)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.context("read")?;
        if n == 0 {
            bail!(
                "connection closed after {:?}",
                String::from_utf8_lossy(&self.buffered)
            );
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Waits until the server closes the connection (EOF or reset), discarding anything it
    /// sends; fails after `deadline`. Returns how long it took.
    async fn closed_by_server(&mut self, deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut chunk = [0; 4096];
        loop {
            match timeout(
                deadline.saturating_sub(started.elapsed()),
                self.stream.read(&mut chunk),
            )
            .await
            {
                Err(_) => bail!("the server kept the connection open for {deadline:?}"),
                Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects, sends `request` and reads one response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> anyhow::Result<RawResponse> {
    let mut raw = Raw::connect(addr).await?;
    raw.send(request).await?;
    raw.response().await
}

/// The server still works: `GET /api/hello` on a fresh connection answers 200.
async fn assert_still_serving(sluice: &Sluice, after: &str) -> anyhow::Result<()> {
    let response = client()
        .get(sluice.url("/api/hello"))
        .send()
        .await
        .with_context(|| format!("GET /api/hello after {after}"))?;
    ensure!(
        response.status() == StatusCode::OK,
        "GET /api/hello after {after}: {}",
        response.status()
    );
    ensure!(response.text().await? == "Hello, world!");
    Ok(())
}

async fn start_hello() -> anyhow::Result<Sluice> {
    Sluice::start(Options::new(hello_app())).await
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let addr = sluice.addr();
    let cases: [(&str, &[u8]); 4] = [
        ("a garbage request line", b"GARBAGE\r\n\r\n"),
        (
            "an unknown HTTP version",
            b"GET /api/hello HTTP/9.9\r\nHost: x\r\n\r\n",
        ),
        (
            "a header without a colon",
            b"GET /api/hello HTTP/1.1\r\nHost: x\r\nno-colon-here\r\n\r\n",
        ),
        (
            "raw invalid UTF-8 in the path",
            b"GET /api/hello\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        let response = exchange(addr, request).await.context(case)?;
        assert_eq!(response.status, 400, "{case}: {response:?}");
        assert_still_serving(&sluice, case).await?;
    }
    Ok(())
}

#[tokio::test]
async fn header_section_over_32_kib_gets_431() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let addr = sluice.addr();

    let huge = "a".repeat(40 * 1024);
    let request = format!("GET /api/hello HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    let response = exchange(addr, request.as_bytes()).await?;
    assert_eq!(response.status, 431, "{response:?}");
    assert_still_serving(&sluice, "a 40 KiB header").await?;

    // Many small headers adding up past the limit count the same.
    let many: String = (0..600)
        .map(|i| format!("X-Filler-{i:03}: {}\r\n", "b".repeat(60)))
        .collect();
    let request = format!("GET /api/hello HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let response = exchange(addr, request.as_bytes()).await?;
    assert_eq!(response.status, 431, "{response:?}");
    assert_still_serving(&sluice, "600 headers").await?;

    // A large header well inside the limit is served.
    let large = "c".repeat(20 * 1024);
    let request = format!(
        "GET /api/hello HTTP/1.1\r\nHost: x\r\nX-Large: {large}\r\nConnection: close\r\n\r\n"
    );
    let response = exchange(addr, request.as_bytes()).await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"Hello, world!");
    Ok(())
}

#[tokio::test]
async fn body_over_the_limit_gets_413_without_being_read() -> anyhow::Result<()> {
    let extras = Extras::default().env("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", BODY_LIMIT.to_string());
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    let addr = sluice.addr();

    // Content-Length announces 2 MB; only the head and 1 KiB follow. The answer must not wait
    // for the rest (the dispatcher would give up on it only after 30 s).
    let mut raw = Raw::connect(addr).await?;
    raw.send(
        b"POST /api/binary_echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
          Content-Length: 2000000\r\n\r\n",
    )
    .await?;
    raw.send(&[b'x'; 1024]).await?;
    let response = raw.response().await.context("declared 2 MB body")?;
    assert_eq!(response.status, 413, "{response:?}");
    drop(raw);
    assert_still_serving(&sluice, "a declared 2 MB body").await?;

    // A chunked body has no declared length: it is refused once it crosses the limit. The
    // writer runs beside the reader and stops at the first error (the server may close first).
    let mut raw = Raw::connect(addr).await?;
    raw.send(b"POST /api/binary_echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await?;
    let (mut reader, mut writer) = raw.stream.into_split();
    let chunk = {
        let data = [b'y'; 16 * 1024];
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(b"\r\n");
        chunk
    };
    let chunks = BODY_LIMIT / (16 * 1024) + 8;
    let write = tokio::spawn(async move {
        for _ in 0..chunks {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    });
    let mut head = Vec::new();
    let deadline = Instant::now() + ANSWER_DEADLINE;
    while find(&head, b"\r\n\r\n").is_none() {
        let mut buf = [0; 4096];
        let n = match timeout(
            deadline.saturating_duration_since(Instant::now()),
            reader.read(&mut buf),
        )
        .await
        {
            Err(_) => bail!("no answer to the chunked body within {ANSWER_DEADLINE:?}"),
            Ok(read) => read.context("reading the chunked-body answer")?,
        };
        ensure!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    drop(reader);
    write.abort();
    assert_still_serving(&sluice, "an oversized chunked body").await?;

    // A body just under the limit still round-trips.
    let payload = vec![b'z'; BODY_LIMIT - 1];
    let response = client()
        .post(sluice.url("/api/binary_echo"))
        .body(payload.clone())
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await?[..] == payload[..]);
    Ok(())
}

#[tokio::test]
async fn undecodable_paths_get_400_before_routing() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let addr = sluice.addr();
    let cases = [
        ("/api/hello%ZZ", "percent-encoding"),
        ("/api/hello%2", "percent-encoding"),
        ("/api/hello%FF", "UTF-8"),
        ("/api/caf%C3%28", "UTF-8"),
    ];
    for (path, reason) in cases {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = exchange(addr, request.as_bytes()).await.context(path)?;
        assert_eq!(response.status, 400, "{path}: {response:?}");
        let body = String::from_utf8_lossy(&response.body);
        assert!(body.contains(reason), "{path}: body {body:?}");
        assert_still_serving(&sluice, path).await?;
    }

    // Well-formed escapes still reach the function (here as its query parameter).
    let response = exchange(
        addr,
        b"GET /api/hello?name=caf%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(String::from_utf8_lossy(&response.body), "Hello, café!");
    Ok(())
}

#[tokio::test]
async fn stalled_and_idle_clients_are_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let addr = sluice.addr();

    // Three clients at once, each must be closed within CLOSE_DEADLINE:
    // one stops mid-header, one never sends a byte, one idles on keep-alive after a response.
    let mut partial = Raw::connect(addr).await?;
    partial.send(b"GET / HTTP/1.1\r\n").await?;
    let mut silent = Raw::connect(addr).await?;
    let mut idle = Raw::connect(addr).await?;
    idle.send(b"GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let response = idle.response().await?;
    assert_eq!(response.status, 200, "{response:?}");
    assert_ne!(response.header("connection"), Some("close"), "{response:?}");

    let (partial, silent, idle) = tokio::join!(
        partial.closed_by_server(CLOSE_DEADLINE),
        silent.closed_by_server(CLOSE_DEADLINE),
        idle.closed_by_server(CLOSE_DEADLINE),
    );
    let partial = partial.context("client stalled mid-header")?;
    let silent = silent.context("client that sent nothing")?;
    let idle = idle.context("idle keep-alive client")?;
    // Closed by the timeout, not at once for some other reason.
    for (case, took) in [("partial", partial), ("silent", silent), ("idle", idle)] {
        assert!(
            took >= Duration::from_secs(5),
            "{case} closed after {took:?}"
        );
    }
    assert_still_serving(&sluice, "stalled clients").await?;
    Ok(())
}

#[tokio::test]
async fn many_idle_connections_do_not_block_a_request() -> anyhow::Result<()> {
    const CONNECTIONS: usize = 500;
    let sluice = start_hello().await?;
    let addr = sluice.addr();

    let mut open = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        open.push(
            Raw::connect(addr)
                .await
                .with_context(|| format!("connection {i}"))?,
        );
    }
    assert_still_serving(&sluice, "500 idle connections").await?;
    // A raw request on the last of them is served too (the server accepted them all).
    let last = open.last_mut().context("no connections")?;
    last.send(b"GET /api/hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let response = last.response().await?;
    assert_eq!(response.status, 200, "{response:?}");
    drop(open);
    assert_still_serving(&sluice, "closing 500 connections").await?;
    Ok(())
}

#[tokio::test]
async fn keep_alive_serves_sequential_requests_on_one_connection() -> anyhow::Result<()> {
    let sluice = start_hello().await?;
    let addr = sluice.addr();

    // A hostile request first, on another connection, must not disturb keep-alive.
    let response = exchange(addr, b"GARBAGE\r\n\r\n").await?;
    assert_eq!(response.status, 400);

    let mut raw = Raw::connect(addr).await?;
    for i in 0..5 {
        raw.send(format!("GET /api/hello?name=n{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let response = raw
            .response()
            .await
            .with_context(|| format!("request {i}"))?;
        assert_eq!(response.status, 200, "request {i}: {response:?}");
        assert_eq!(response.body, format!("Hello, n{i}!").into_bytes());
        assert_ne!(response.header("connection"), Some("close"));
    }
    // Pipelined: two requests in one write, two answers in order.
    raw.send(
        b"GET /api/hello?name=p1 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /api/hello?name=p2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await?;
    assert_eq!(raw.response().await?.body, b"Hello, p1!");
    assert_eq!(raw.response().await?.body, b"Hello, p2!");

    // HTTP/2 prior knowledge on the same listener is unaffected.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()?;
    let response = h2.get(sluice.url("/api/hello?name=h2")).send().await?;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await?, "Hello, h2!");
    Ok(())
}
