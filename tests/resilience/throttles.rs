//! host.json throttles: 429 with the scale-out header beyond the outstanding cap, a queue
//! below it.

use std::time::Duration;

use anyhow::{bail, ensure};
use reqwest::StatusCode;
use tokio::time::{Instant, timeout};

use crate::common::{Options, Sluice, client};
use crate::support::*;

#[tokio::test]
async fn throttles_return_429_with_scaleout_header_exactly() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("throttled"))).await?;
    let client = client();
    let url = sluice.url("/api/slow?s=2");

    // 10 at once; the 6 refused come back at once, the 4 admitted after 2 s (2 run, 2 queue).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..10 {
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let answer = match timeout(REQUEST_DEADLINE, client.get(&url).send()).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let scaleout = response
                        .headers()
                        .get("x-function-scaleout")
                        .map(|v| v.to_str().unwrap_or("?").to_owned());
                    let body = response.bytes().await.map(|b| b.len());
                    Ok((status, scaleout, body.map_err(|e| e.to_string())))
                }
                Ok(Err(error)) => Err(format!("{error:?}")),
                Err(_) => Err("no answer".to_owned()),
            };
            let _ = tx.send((answer, start.elapsed()));
        });
    }
    drop(tx);

    let mut answers = Vec::new();
    // While outstanding is at its cap: the first 6 answers arrive, `/` is not throttled.
    while answers.len() < 6 {
        match timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(answer)) => answers.push(answer),
            _ => bail!("only {} answers within 5 s: {answers:?}", answers.len()),
        }
    }
    let home = fetch(&client, &sluice.url("/")).await;
    ensure!(
        matches!(home, Reply::Status(StatusCode::OK, _)),
        "GET / while throttled: {home:?}"
    );
    while let Some(answer) = timeout(REQUEST_DEADLINE, rx.recv()).await? {
        answers.push(answer);
    }

    let mut ok = 0;
    let mut throttled = 0;
    for (answer, elapsed) in &answers {
        let (status, scaleout, body) = answer
            .as_ref()
            .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
        match *status {
            StatusCode::OK => {
                ok += 1;
                ensure!(
                    *elapsed >= Duration::from_millis(1900),
                    "a 200 came after {elapsed:?}, before the 2 s sleep"
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                ensure!(
                    scaleout.as_deref() == Some("1"),
                    "429 with X-FUNCTION-SCALEOUT {scaleout:?}"
                );
                ensure!(body.as_ref() == Ok(&0), "429 with body {body:?}");
                ensure!(
                    *elapsed < Duration::from_secs(1),
                    "a 429 took {elapsed:?}: it must be immediate"
                );
            }
            other => bail!("unexpected status {other}"),
        }
    }
    ensure!(
        (ok, throttled) == (4, 6),
        "expected 4×200 and 6×429, got {ok}×200 and {throttled}×429: {answers:?}"
    );
    // Once they are done the function is admitted again.
    let after = fetch(&client, &sluice.url("/api/slow?s=0")).await;
    ensure!(
        matches!(after, Reply::Status(StatusCode::OK, _)),
        "after the burst: {after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn max_concurrent_queues_without_rejecting() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(app("queued"))).await?;
    let started = Instant::now();
    let answers = concurrent_gets(&sluice, "/api/slow?s=1", 6).await;
    let total = started.elapsed();

    let mut elapsed = Vec::new();
    for (reply, took) in &answers {
        ensure!(
            matches!(reply, Reply::Status(StatusCode::OK, _)),
            "a queued request got {reply:?}"
        );
        elapsed.push(*took);
    }
    elapsed.sort();
    eprintln!("6 requests with maxConcurrentRequests=2: total {total:?}, each {elapsed:?}");
    ensure!(
        total >= Duration::from_millis(2800),
        "6 one-second calls, 2 at a time, took only {total:?} (want 3 waves)"
    );
    ensure!(
        total < Duration::from_secs(10),
        "6 one-second calls took {total:?}"
    );
    ensure!(
        elapsed[1] < Duration::from_millis(1800),
        "the first wave took {:?}",
        elapsed[1]
    );
    Ok(())
}
