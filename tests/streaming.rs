//! http-v2 apps (`azurefunctions-extensions-http-fastapi`), `tests/apps/streaming`: the
//! app is unmodified; the worker's runtime runs uvicorn and advertises `HttpUri`, and
//! Sluice forwards each request there and streams the response back as it is produced.

mod common;
#[path = "support/mem.rs"]
mod mem;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Extras, Options, Sluice, client, random_bytes};
use mem::{
    MIB, assert_413_both_ways, raw_request, read_response, sha256_hex, start_peak, status_bytes,
    write_chunked,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

fn app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/streaming")
}

async fn start(extras: Extras) -> anyhow::Result<Sluice> {
    let sluice = Sluice::start_with(Options::new(app()), &extras).await?;
    assert!(
        sluice.output_contains("the app streams HTTP (http-v2)"),
        "the worker did not advertise HttpUri:\n{}",
        sluice.output_tail()
    );
    // The http-v2 extension is the platform's supported kind, not an ignored worker extension.
    assert!(
        !sluice.output_contains("worker extensions"),
        "{}",
        sluice.output_tail()
    );
    Ok(sluice)
}

#[tokio::test]
async fn chunks_reach_the_client_as_the_function_yields_them() -> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    // Warm the path once (first request imports and connects lazily).
    let warm = client()
        .get(sluice.url("/api/ticks?n=1&ms=0"))
        .send()
        .await?;
    assert_eq!(warm.text().await?, "chunk-00\n");

    let started = Instant::now();
    let mut response = client()
        .get(sluice.url("/api/ticks?n=20&ms=100"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ticks"], "20");
    let mut text = String::new();
    let mut first = None;
    while let Some(chunk) = response.chunk().await? {
        first.get_or_insert_with(|| started.elapsed());
        text.push_str(std::str::from_utf8(&chunk)?);
    }
    let total = started.elapsed();
    let first = first.expect("at least one chunk");
    eprintln!("first chunk after {first:?}, all after {total:?}");
    let want: String = (0..20).map(|i| format!("chunk-{i:02}\n")).collect();
    assert_eq!(text, want, "every chunk, in order");
    assert!(
        first <= Duration::from_millis(300),
        "first chunk after {first:?}"
    );
    assert!(
        total >= Duration::from_millis(1900),
        "the body was not produced over time ({total:?})"
    );
    Ok(())
}

#[tokio::test]
async fn route_params_query_status_and_headers_pass_through_and_failures_are_500()
-> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    let response = client().get(sluice.url("/api/items/42?q=z")).send().await?;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-item"], "42");
    assert_eq!(response.text().await?, "item 42 q=z");
    // Routing still runs in the host: the route constraint refuses a non-integer.
    let miss = client().get(sluice.url("/api/items/abc")).send().await?;
    assert_eq!(miss.status(), 404);
    let boom = client().get(sluice.url("/api/boom")).send().await?;
    assert_eq!(boom.status(), 500);
    assert!(sluice.output_contains("RuntimeError: boom"));
    // A failed invocation leaves the worker serving.
    let again = client().get(sluice.url("/api/items/7")).send().await?;
    assert_eq!(again.text().await?, "item 7 q=");
    Ok(())
}

#[tokio::test]
async fn connections_to_the_worker_server_are_reused_until_it_closes_one() -> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    // Which of Sluice's connections to the worker's server carried a request (its port).
    let peer = |query: &'static str| {
        let url = sluice.url(&format!("/api/peer{query}"));
        async move {
            let response = client().get(url).send().await?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            Ok::<_, anyhow::Error>(response.text().await?)
        }
    };
    // One after the other: one connection carries them (a new one each would be 10 ports).
    let mut ports = Vec::new();
    for _ in 0..10 {
        ports.push(peer("").await?);
    }
    ports.dedup();
    assert!(ports.len() <= 2, "connections not reused: {ports:?}");

    // A connection still streaming a response is not given another request.
    let mut streaming = client()
        .get(sluice.url("/api/ticks?n=5&ms=100"))
        .send()
        .await?;
    let first = streaming.chunk().await?.expect("a first chunk");
    assert_eq!(&first[..], b"chunk-00\n");
    let beside = tokio::time::timeout(ANSWER_DEADLINE, peer("")).await??;
    let mut rest = Vec::new();
    while let Some(chunk) = streaming.chunk().await? {
        rest.extend_from_slice(&chunk);
    }
    let want: String = (1..5).map(|i| format!("chunk-{i:02}\n")).collect();
    assert_eq!(String::from_utf8(rest)?, want);

    // The server closes a connection after its answer: the next request takes another.
    let closed = peer("?close=1").await?;
    let after = peer("").await?;
    assert_ne!(
        after, closed,
        "a request went to the connection the server closed"
    );
    assert!(!beside.is_empty());
    Ok(())
}

#[tokio::test]
async fn request_bodies_stream_to_the_function_without_the_host_buffering_them()
-> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    let pid = sluice.pid()?;

    let chunked = random_bytes(5 * MIB);
    let mut stream = raw_request(
        sluice.addr(),
        "POST /api/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    write_chunked(&mut stream, &chunked, 100_000).await?;
    let (status, head, answer) = read_response(&mut stream, ANSWER_DEADLINE).await?;
    assert_eq!(status, 200, "{head}");
    assert_eq!(String::from_utf8(answer)?, sha256_hex(&chunked));

    let body = random_bytes(64 * MIB);
    let want = sha256_hex(&body);
    let baseline = start_peak(pid)?;
    let response = client()
        .post(sluice.url("/api/sha"))
        .body(body)
        .send()
        .await?;
    assert_eq!(response.headers()["x-length"], (64 * MIB).to_string());
    assert_eq!(response.text().await?, want);
    let peak = mem::peak_over(pid, baseline)?;
    assert!(
        peak < 16 * MIB as u64,
        "host grew {} MiB forwarding a 64 MiB body",
        peak >> 20
    );
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_grow_host_memory() -> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    let pid = sluice.pid()?;
    let baseline = start_peak(pid)?;
    // 2 GiB on offer; the client reads the first MiB, then stops reading.
    let mut stream = raw_request(
        sluice.addr(),
        "GET /api/flood?mb=2048 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await?;
    let mut buffer = vec![0; 64 * 1024];
    let mut read = 0;
    while read < MIB {
        let n = tokio::time::timeout(ANSWER_DEADLINE, stream.read(&mut buffer)).await??;
        anyhow::ensure!(n > 0, "closed early");
        read += n;
    }
    // Watch the host for a while: with bounded buffers it levels off at once.
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut highest = 0;
    while Instant::now() < watch_until {
        highest = highest.max(status_bytes(pid, "VmRSS")?.saturating_sub(baseline));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        highest < 32 * MIB as u64,
        "host grew {} MiB behind a stalled client",
        highest >> 20
    );
    // The client goes away; the host stays healthy.
    stream.shutdown().await?;
    drop(stream);
    let ok = client().get(sluice.url("/api/items/1")).send().await?;
    assert_eq!(ok.status(), 201);
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_before_they_reach_the_worker() -> anyhow::Result<()> {
    let sluice =
        start(Extras::default().env("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", MIB.to_string())).await?;
    assert_413_both_ways(sluice.addr(), "/api/sha", MIB, ANSWER_DEADLINE).await
}
