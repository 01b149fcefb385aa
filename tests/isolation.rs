//! Dependency isolation: an app that pins its own `azure-functions`, `protobuf` (another
//! major version) and `grpcio` sees exactly its versions, while the worker keeps running on
//! its own transport (the native extension, or its own grpcio beside the app's copy) and
//! serves a thousand requests. Run once per worker transport.

mod common;

use std::path::Path;

use anyhow::Context;
use common::{Extras, Options, Sluice, client};
use serde_json::Value;

#[tokio::test]
async fn app_pinned_sdk_protobuf_and_grpcio_are_what_the_app_imports() -> anyhow::Result<()> {
    app_sees_its_own_versions(&Extras::default()).await
}

#[tokio::test]
async fn same_with_the_grpcio_fallback_transport() -> anyhow::Result<()> {
    app_sees_its_own_versions(&Extras::default().env("SLUICE_WORKER_TRANSPORT", "grpcio")).await
}

async fn app_sees_its_own_versions(extras: &Extras) -> anyhow::Result<()> {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/isolation");
    let sluice = Sluice::start_with(Options::new(&app), extras).await?;
    let http = client();
    let url = sluice.url("/api/versions");

    let body: Value = http.get(&url).send().await?.json().await?;
    assert_eq!(body["azure-functions"], "2.0.0");
    assert_eq!(body["protobuf"], "5.29.5");
    assert_eq!(body["grpcio"], "1.70.0");

    // The worker's transport runs on its own code: the native extension, or its own grpcio
    // loaded from the worker environment next to the app's copy.
    let pid = body["pid"].as_u64().context("pid")?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).context("worker maps")?;
    let native = sluice.output_contains("transport native");
    let wanted = if native { "_native.abi3.so" } else { "cygrpc" };
    let loaded: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(wanted))
        .collect();
    assert!(
        loaded.iter().any(|p| !p.contains(".python_packages")),
        "worker's own {wanted} loaded: {loaded:?}"
    );
    if extras.env.is_empty() {
        assert!(
            native || !cfg!(target_os = "linux"),
            "native transport not in use"
        );
    } else {
        assert!(sluice.output_contains("transport grpcio"));
    }

    // A thousand requests, 20 at a time, all answered correctly.
    let mut ok = 0;
    for _ in 0..50 {
        let batch = (0..20).map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await?.json::<Value>().await })
        });
        for handle in batch {
            let body = handle.await??;
            assert_eq!(body["protobuf"], "5.29.5");
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    Ok(())
}
