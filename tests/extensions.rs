//! Worker extensions (the `azure.functions` extension base classes) are not supported on
//! Python 3.13+: an app that registers one still runs, and Sluice says so once, clearly.

mod common;

use std::path::Path;

use common::{Options, Sluice, client};

#[tokio::test]
async fn an_app_with_a_worker_extension_runs_and_the_extension_is_reported_once()
-> anyhow::Result<()> {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/extension");
    let sluice = Sluice::start(Options::new(&app).workers(2)).await?;
    let response = client().get(sluice.url("/api/hello")).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "hello despite the extension");
    let warnings = sluice.output_lines_containing("worker extensions");
    assert_eq!(
        warnings.len(),
        1,
        "one warning for two workers: {warnings:?}"
    );
    assert!(warnings[0].contains("RequestCounter"), "{}", warnings[0]);
    assert!(warnings[0].contains("ignored"), "{}", warnings[0]);
    Ok(())
}
