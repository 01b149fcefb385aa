//! End-to-end tests of the v1 programming model (`function.json` folders, indexed by Sluice
//! as the platform host does): the real binary serving `examples/hello_v1` with real workers
//! running `azure-functions-runtime-v1`.

mod common;

use anyhow::Context;
use common::{LOG_DEADLINE, Options, Sluice, client};
use reqwest::StatusCode;

fn hello_v1_app() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello_v1")
}

#[tokio::test]
async fn v1_app_is_indexed_by_sluice_and_served_through_the_v1_runtime() -> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(hello_v1_app())).await?;
    let http = client();

    // Route template with a constraint from function.json, `$return` output.
    let ok = http
        .get(sluice.url("/api/greet/bob"))
        .send()
        .await
        .context("greet")?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await?, "Hello, bob (v1)!");
    let rejected = http.get(sluice.url("/api/greet/123")).send().await?;
    assert_eq!(
        rejected.status(),
        StatusCode::NOT_FOUND,
        "alpha constraint rejects digits"
    );

    // Custom scriptFile/entryPoint, a named `http` output binding, route = folder name.
    let named = http
        .post(sluice.url("/api/NamedOutput"))
        .body("round trip")
        .send()
        .await?;
    assert_eq!(named.status(), StatusCode::ACCEPTED);
    assert_eq!(named.text().await?, "round trip");
    // A body large enough to leave the worker as its own piece of the message (spliced.rs).
    let large: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    let echoed = http
        .post(sluice.url("/api/NamedOutput"))
        .body(large.clone())
        .send()
        .await?;
    assert_eq!(echoed.status(), StatusCode::ACCEPTED);
    assert!(
        echoed.bytes().await? == large,
        "the large body came back changed"
    );

    // No HTTP output binding at all: 204 with an empty body, as the host answers.
    let fired = http
        .post(sluice.url("/api/Fire"))
        .body("and forget")
        .send()
        .await?;
    assert_eq!(fired.status(), StatusCode::NO_CONTENT);
    assert_eq!(fired.text().await?, "");
    sluice
        .wait_for_output("fired and forget", LOG_DEADLINE)
        .await
        .context("the function ran")?;

    // No authLevel in function.json means "function": no key, no entry.
    let keyed = http.get(sluice.url("/api/Keyed")).send().await?;
    assert_eq!(keyed.status(), StatusCode::UNAUTHORIZED);

    // The runtime that ran it is reported per worker.
    assert!(
        sluice.output_contains("azure-functions-runtime-v1"),
        "worker start-up names the v1 runtime"
    );
    sluice
        .wait_for_output("v1 greeting bob", LOG_DEADLINE)
        .await
        .context("function log line")?;
    Ok(())
}

#[tokio::test]
async fn a_v1_function_that_fails_to_load_answers_500_and_the_others_still_work()
-> anyhow::Result<()> {
    let sluice = Sluice::start(Options::new(hello_v1_app())).await?;
    let http = client();
    let broken = http.get(sluice.url("/api/BrokenImport")).send().await?;
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        broken.bytes().await?.is_empty(),
        "platform 500s have empty bodies"
    );
    assert!(
        sluice.output_contains("marker-v1-broken"),
        "the load error is logged"
    );
    let ok = http.get(sluice.url("/api/greet/alice")).send().await?;
    assert_eq!(ok.status(), StatusCode::OK);
    Ok(())
}
