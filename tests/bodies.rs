//! Large bodies over the classic (gRPC) path, `tests/apps/bodies`: 100 MB each way,
//! byte-exact and timed, with the host's peak memory measured; chunked bodies; the body
//! limit refused without buffering; the body budget under concurrent uploads.

mod common;
#[path = "support/mem.rs"]
mod mem;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Extras, Options, Sluice, client, random_bytes};
use mem::{
    MIB, assert_413_both_ways, peak_over, raw_request, read_response, sha256_hex, start_peak,
    write_chunked,
};
use tokio::io::AsyncWriteExt;

const ANSWER_DEADLINE: Duration = Duration::from_secs(120);

fn app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/bodies")
}

async fn start(extras: Extras) -> anyhow::Result<Sluice> {
    Sluice::start_with(Options::new(app()), &extras).await
}

/// The heavy tests run one at a time: their timings and memory peaks stay readable,
/// and a CI machine is not asked for 500 MB of bodies at once.
static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Host peak memory may grow by at most this many times the bodies over its baseline (the
/// body as received and the gRPC message it is encoded into), plus [`RSS_SLACK`] for the
/// allocator and the runtime.
const RSS_FACTOR: u64 = 2;
const RSS_SLACK: u64 = 24 * MIB as u64;

#[tokio::test]
async fn a_100_mb_request_body_reaches_the_function_whole_within_2x_host_memory()
-> anyhow::Result<()> {
    let _heavy = HEAVY.acquire().await?;
    let sluice = start(Extras::default()).await?;
    let pid = sluice.pid()?;
    let body = random_bytes(100 * MIB);
    let want = sha256_hex(&body);
    let baseline = start_peak(pid)?;
    let started = Instant::now();
    let response = client()
        .post(sluice.url("/api/sha"))
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == 200, "status {}", response.status());
    let got = response.text().await?;
    let took = started.elapsed();
    let peak = peak_over(pid, baseline)?;
    eprintln!(
        "100 MB request: {took:?} ({:.0} MB/s), host peak +{} MiB",
        100.0 / took.as_secs_f64(),
        peak >> 20
    );
    assert_eq!(got, want);
    assert!(
        peak <= RSS_FACTOR * 100 * MIB as u64 + RSS_SLACK,
        "host peak grew {} MiB for a 100 MiB body",
        peak >> 20
    );
    Ok(())
}

#[tokio::test]
async fn a_100_mb_response_body_arrives_byte_exact_within_2x_host_memory() -> anyhow::Result<()> {
    let _heavy = HEAVY.acquire().await?;
    let sluice = start(Extras::default()).await?;
    let pid = sluice.pid()?;
    let baseline = start_peak(pid)?;
    let started = Instant::now();
    let mut response = client()
        .get(sluice.url(&format!("/api/generate?bytes={}", 100 * MIB)))
        .send()
        .await?;
    ensure!(response.status() == 200, "status {}", response.status());
    // Streamed from the worker as it arrives, it still announces its length, as the host does.
    assert_eq!(response.content_length(), Some(100 * MIB as u64));
    let want = response.headers()["x-sha256"].to_str()?.to_owned();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut length = 0;
    while let Some(chunk) = response.chunk().await? {
        length += chunk.len();
        sha2::Digest::update(&mut hasher, &chunk);
    }
    let took = started.elapsed();
    let peak = peak_over(pid, baseline)?;
    eprintln!(
        "100 MB response: {took:?} ({:.0} MB/s), host peak +{} MiB",
        100.0 / took.as_secs_f64(),
        peak >> 20
    );
    assert_eq!(length, 100 * MIB);
    assert_eq!(format!("{:x}", sha2::Digest::finalize(hasher)), want);
    assert!(
        peak <= RSS_FACTOR * 100 * MIB as u64 + RSS_SLACK,
        "host peak grew {} MiB for a 100 MiB body",
        peak >> 20
    );
    Ok(())
}

#[tokio::test]
async fn a_client_leaving_in_the_middle_of_a_large_download_holds_nothing_up() -> anyhow::Result<()>
{
    let _heavy = HEAVY.acquire().await?;
    let sluice = start(Extras::default()).await?;
    let head = format!(
        "GET /api/generate?bytes={} HTTP/1.1\r\nHost: t\r\n\r\n",
        100 * MIB
    );
    let mut leaving = raw_request(sluice.addr(), &head).await?;
    let mut first = vec![0u8; 64 * 1024];
    tokio::time::timeout(
        ANSWER_DEADLINE,
        tokio::io::AsyncReadExt::read_exact(&mut leaving, &mut first),
    )
    .await
    .context("the download started")??;
    ensure!(
        first.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..40])
    );
    drop(leaving);
    // The same worker answers the next request, whole, while the rest of the first body is
    // still arriving (and dropped).
    for _ in 0..3 {
        let response = tokio::time::timeout(
            ANSWER_DEADLINE,
            client()
                .get(sluice.url(&format!("/api/generate?bytes={}", 5 * MIB)))
                .send(),
        )
        .await
        .context("answered in time")??;
        ensure!(response.status() == 200, "status {}", response.status());
        let want = response.headers()["x-sha256"].to_str()?.to_owned();
        let body = response.bytes().await?;
        assert_eq!(body.len(), 5 * MIB);
        assert_eq!(sha256_hex(&body), want);
    }
    Ok(())
}

#[tokio::test]
async fn workers_are_told_the_same_grpc_message_bound_the_host_applies() -> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    let pid = *sluice
        .worker_pids()?
        .first()
        .context("a worker in the ready file")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let bound = i32::MAX.to_string();
    for flag in [
        "--grpcMaxMessageLength",
        "--functions-grpc-max-message-length",
    ] {
        let at = args.iter().position(|a| a == flag).context(flag)?;
        assert_eq!(args.get(at + 1), Some(&bound), "{flag} in {args:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_chunked_5_mb_request_reaches_the_function_complete() -> anyhow::Result<()> {
    let sluice = start(Extras::default()).await?;
    let body = random_bytes(5 * MIB);
    let mut stream = raw_request(
        sluice.addr(),
        "POST /api/sha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await?;
    write_chunked(&mut stream, &body, 64 * 1024 + 7).await?;
    let (status, head, answer) = read_response(&mut stream, ANSWER_DEADLINE).await?;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(&format!("x-length: {}", body.len())),
        "{head}"
    );
    assert_eq!(String::from_utf8(answer)?, sha256_hex(&body));
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_without_the_host_buffering_them() -> anyhow::Result<()> {
    let limit = MIB;
    let sluice =
        start(Extras::default().env("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", limit.to_string()))
            .await?;
    let pid = sluice.pid()?;
    let baseline = start_peak(pid)?;

    assert_413_both_ways(sluice.addr(), "/api/sha", limit, ANSWER_DEADLINE).await?;
    let peak = peak_over(pid, baseline)?;
    assert!(
        peak < 16 * MIB as u64,
        "host grew {} MiB refusing bodies",
        peak >> 20
    );
    // Still serving.
    let ok = client()
        .post(sluice.url("/api/sha"))
        .body("abc")
        .send()
        .await?;
    assert_eq!(ok.text().await?, sha256_hex(b"abc"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_20_mb_uploads_complete_with_bounded_host_memory() -> anyhow::Result<()> {
    let _heavy = HEAVY.acquire().await?;
    let sluice = start(Extras::default()).await?;
    let pid = sluice.pid()?;
    // Hashed up front: hashing between writes would stall the other uploads.
    let bodies: Vec<(Vec<u8>, String)> = (0..10)
        .map(|_| {
            let body = random_bytes(20 * MIB);
            let want = sha256_hex(&body);
            (body, want)
        })
        .collect();
    let baseline = start_peak(pid)?;
    let started = Instant::now();
    let mut uploads = tokio::task::JoinSet::new();
    for (body, want) in bodies {
        let url = sluice.url("/api/sha");
        uploads.spawn(async move {
            let response = client().post(url).body(body).send().await?;
            anyhow::Ok((response.status(), response.text().await?, want))
        });
    }
    while let Some(joined) = uploads.join_next().await {
        let (status, got, want) = joined?.map_err(|e| anyhow::anyhow!("{e:#}"))?;
        assert_eq!(status, 200);
        assert_eq!(got, want);
    }
    let peak = peak_over(pid, baseline)?;
    eprintln!(
        "10 x 20 MB uploads: {:?}, host peak +{} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(
        peak <= RSS_FACTOR * 200 * MIB as u64 + RSS_SLACK,
        "host peak grew {} MiB for 200 MiB of bodies",
        peak >> 20
    );
    Ok(())
}

#[tokio::test]
async fn a_body_over_the_budget_gets_503_with_retry_after_and_is_counted() -> anyhow::Result<()> {
    let limit = 20 * MIB;
    let extras = Extras::default()
        .env("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", limit.to_string())
        .env("SLUICE_BODY_BUDGET", (22 * MIB).to_string());
    let sluice = start(extras).await?;

    // A 20 MiB upload in progress: once most of it is written, the host is reading it,
    // so its reservation is held (socket buffers hold far less than 15 MiB).
    let held = random_bytes(limit);
    let mut first = raw_request(
        sluice.addr(),
        &format!(
            "POST /api/sha HTTP/1.1\r\nHost: x\r\nContent-Length: {limit}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await?;
    first.write_all(&held[..limit - MIB]).await?;

    // Refused on its head: the 5 MiB body is never sent.
    let mut second = raw_request(
        sluice.addr(),
        &format!(
            "POST /api/sha HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            5 * MIB
        ),
    )
    .await?;
    let (status, head, reason) = read_response(&mut second, ANSWER_DEADLINE).await?;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(String::from_utf8(reason)?.contains("body budget"));

    first.write_all(&held[limit - MIB..]).await?;
    let (status, head, answer) = read_response(&mut first, ANSWER_DEADLINE).await?;
    assert_eq!(status, 200, "{head}");
    assert_eq!(String::from_utf8(answer)?, sha256_hex(&held));

    // The budget is back once the first body's invocation answered.
    let third = client()
        .post(sluice.url("/api/sha"))
        .body(vec![7u8; 5 * MIB])
        .send()
        .await?;
    assert_eq!(third.status(), 200);
    let metrics = sluice.metrics().await?;
    assert!(
        metrics.contains("sluice_body_budget_rejections_total 1"),
        "{metrics}"
    );
    Ok(())
}
