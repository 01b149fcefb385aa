//! Any compliant worker: with `--worker-config`, Sluice launches the worker described the
//! platform's way (executable, arguments, worker path) and drives it with the same start-up
//! sequence. Here the description launches this repo's worker through a wrapper script
//! that records how it was started.

mod common;

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use common::{Extras, Options, Sluice, TempDir, client, hello_app};

const WRAPPER: &str = r#"#!/bin/sh
# Records how it was launched, then runs Sluice's own worker with the same arguments.
{
  echo "args: $*"
  echo "cwd: $(pwd)"
  echo "worker-directory: $FUNCTIONS_WORKER_DIRECTORY"
} > "$(dirname "$0")/launched.txt"
exec "$SLUICE_PYTHON_EXECUTABLE" -X no_debug_ranges "$SLUICE_WORKER_SCRIPT" "$@"
"#;

#[tokio::test]
async fn a_described_worker_is_launched_as_described_and_serves_the_app() -> anyhow::Result<()> {
    let dir = TempDir::new("sluice-worker-config")?;
    let wrapper = dir.path().join("wrapper.sh");
    std::fs::write(&wrapper, WRAPPER)?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let config = dir.path().join("worker.config.json");
    std::fs::write(
        &config,
        r#"{"description": {"language": "python", "defaultExecutablePath": "wrapper.sh",
            "arguments": ["--from-description", "%FUNCTIONS_WORKER_RUNTIME_VERSION%", "%NOT_SET_ANYWHERE%"]}}"#,
    )?;

    let extras = Extras::default()
        .arg("--worker-config")
        .arg(config.display().to_string());
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    let response = client()
        .get(sluice.url("/api/hello?name=wrapped"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "Hello, wrapped!");

    let launched =
        std::fs::read_to_string(dir.path().join("launched.txt")).context("wrapper ran")?;
    let args = launched
        .lines()
        .find(|l| l.starts_with("args: "))
        .context("args line")?;
    assert!(args.starts_with("args: --from-description 3.13"), "{args}");
    assert!(
        !args.contains("NOT_SET_ANYWHERE"),
        "unresolved tokens are dropped: {args}"
    );
    assert!(
        args.contains("--host 127.0.0.1") && args.contains("--functions-worker-id"),
        "{args}"
    );
    let app_dir = hello_app().canonicalize()?;
    assert!(
        launched.contains(&format!("cwd: {}", app_dir.display())),
        "{launched}"
    );
    let worker_dir = dir.path().canonicalize()?;
    assert!(
        launched.contains(&format!("worker-directory: {}", worker_dir.display()))
            || launched.contains(&format!("worker-directory: {}", dir.path().display())),
        "{launched}"
    );
    Ok(())
}
