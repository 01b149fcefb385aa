//! Runtime version control, as the platform documents it for Python 3.13+: an app that pins
//! the runtime library runs that exact version, an unpinned one runs the newest stable at
//! install time, an app that does not list it runs the bundled default (the stable release
//! before the latest). Real pip installs from PyPI, real workers.

mod common;

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::{Options, Sluice, client};
use serde_json::Value;

fn app(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Starts Sluice on `app_dir`, asks its runtime function, returns (version, file).
async fn runtime_of(app_dir: PathBuf, path: &str) -> anyhow::Result<(Sluice, String, String)> {
    let sluice = Sluice::start(Options::new(app_dir)).await?;
    let response = client()
        .get(sluice.url(path))
        .send()
        .await
        .context("runtime")?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let body: Value = response.json().await?;
    let version = body["version"].as_str().context("version")?.to_owned();
    let file = body["file"].as_str().context("file")?.to_owned();
    Ok((sluice, version, file))
}

/// The bundled default for `package`, from the worker's lock file.
fn bundled(package: &str) -> String {
    let lock = include_str!("../worker/requirements.lock");
    lock.lines()
        .find_map(|l| l.strip_prefix(&format!("{package}==")))
        .unwrap_or_else(|| panic!("{package} is pinned in worker/requirements.lock"))
        .trim()
        .to_owned()
}

/// The version pip installed into the app's own site-packages.
fn installed(app_dir: &Path, dist: &str) -> Option<String> {
    let site = app_dir.join(".python_packages/lib/site-packages");
    std::fs::read_dir(site).ok()?.find_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        let rest = name.strip_prefix(&format!("{dist}-"))?;
        Some(rest.strip_suffix(".dist-info")?.to_owned())
    })
}

#[tokio::test]
async fn v2_app_without_the_runtime_in_requirements_runs_the_bundled_default() -> anyhow::Result<()>
{
    let (sluice, version, file) = runtime_of(app("examples/hello"), "/api/whichruntime").await?;
    assert_eq!(version, bundled("azure-functions-runtime"));
    assert!(
        !file.contains(".python_packages"),
        "bundled copy, got {file}"
    );
    assert!(sluice.output_contains("source=bundled"));
    Ok(())
}

#[tokio::test]
async fn v1_app_without_the_runtime_in_requirements_runs_the_bundled_default() -> anyhow::Result<()>
{
    let (_sluice, version, _) = runtime_of(app("examples/hello_v1"), "/api/WhichRuntime").await?;
    assert_eq!(version, bundled("azure-functions-runtime-v1"));
    Ok(())
}

#[tokio::test]
async fn v2_app_pinning_the_runtime_runs_exactly_that_version() -> anyhow::Result<()> {
    let (sluice, version, file) =
        runtime_of(app("tests/apps/runtime_v2_pinned"), "/api/whichruntime").await?;
    assert_eq!(version, "1.1.1");
    assert!(
        file.contains(".python_packages"),
        "the app's copy, got {file}"
    );
    assert!(sluice.output_contains("source=app"));
    Ok(())
}

#[tokio::test]
async fn v1_app_pinning_the_runtime_runs_exactly_that_version() -> anyhow::Result<()> {
    let (_sluice, version, _) =
        runtime_of(app("tests/apps/runtime_v1_pinned"), "/api/WhichRuntime").await?;
    assert_eq!(version, "1.0.0");
    Ok(())
}

#[tokio::test]
async fn v2_app_listing_the_runtime_unpinned_runs_the_newest_stable_release() -> anyhow::Result<()>
{
    let dir = app("tests/apps/runtime_v2_unpinned");
    let (_sluice, version, _) = runtime_of(dir.clone(), "/api/whichruntime").await?;
    // Whatever pip resolved as newest at install time (not a literal that ages).
    assert_eq!(
        Some(version.clone()),
        installed(&dir, "azure_functions_runtime")
    );
    assert_ne!(
        version,
        bundled("azure-functions-runtime"),
        "newer than the bundled default"
    );
    assert!(
        !version.contains(['a', 'b']) && !version.contains("rc"),
        "stable: {version}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pre_release_pin_runs_and_is_warned_about() -> anyhow::Result<()> {
    let (sluice, version, _) =
        runtime_of(app("tests/apps/runtime_v2_prerelease"), "/api/whichruntime").await?;
    assert_eq!(version, "1.1.0b4");
    assert!(sluice.output_contains("pre-release of the runtime library"));
    Ok(())
}
