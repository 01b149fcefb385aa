//! The worker's transport choice: the native EventStream client when its extension is
//! embedded and loads, and the grpcio fallback, with the reason logged, when it cannot load.
//! (The rest of the suite exercises the native transport as the default one.)

mod common;

use std::path::{Path, PathBuf};

use anyhow::Context;
use common::{Extras, Options, Sluice, TempDir, client, copy_dir, hello_app, random_bytes};

#[tokio::test]
async fn unloadable_extension_falls_back_to_grpcio_and_says_why() -> anyhow::Result<()> {
    // A normal start: on Linux the embedded extension is in use.
    let sluice = Sluice::start(Options::new(hello_app())).await?;
    if cfg!(target_os = "linux") {
        assert!(
            sluice.output_contains("sluice worker: transport native"),
            "{}",
            sluice.output_tail()
        );
    }
    let worker_pid = echo_roundtrip(&sluice, 256 * 1024).await?;
    let env_root = worker_env_root(worker_pid)?;
    drop(sluice);

    // The same finished worker environment under another cache dir, with a broken extension.
    let cache = TempDir::new("sluice-native-fallback")?;
    let copy = cache
        .path()
        .join(env_root.file_name().context("env dir name")?);
    copy_dir(&env_root, &copy)?;
    let extension = copy.join("worker/sluice_worker/_native.abi3.so");
    if extension.exists() {
        std::fs::write(&extension, b"not an ELF file")?;
    }
    let extras = Extras::default().env("SLUICE_CACHE_DIR", cache.path().to_string_lossy());
    let sluice = Sluice::start_with(Options::new(hello_app()), &extras).await?;
    assert!(
        sluice.output_contains("sluice worker: transport grpcio (native extension unavailable"),
        "{}",
        sluice.output_tail()
    );
    let fallback_pid = echo_roundtrip(&sluice, 256 * 1024).await?;
    let site = read_environ(fallback_pid, "SLUICE_WORKER_SITE")?;
    assert!(
        Path::new(&site).starts_with(cache.path()),
        "worker ran from {site}, not the copied environment"
    );
    Ok(())
}

/// Posts `len` random bytes to binary_echo, checks the echo, returns the worker's pid.
async fn echo_roundtrip(sluice: &Sluice, len: usize) -> anyhow::Result<u32> {
    let payload = random_bytes(len);
    let response = client()
        .post(sluice.url("/api/binary_echo"))
        .body(payload.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    let pid: u32 = response
        .headers()
        .get("x-worker-pid")
        .context("x-worker-pid")?
        .to_str()?
        .parse()?;
    assert!(response.bytes().await?[..] == payload[..], "echo differs");
    Ok(pid)
}

/// The worker environment a running worker uses: the parent of its SLUICE_WORKER_SITE.
fn worker_env_root(pid: u32) -> anyhow::Result<PathBuf> {
    let site = PathBuf::from(read_environ(pid, "SLUICE_WORKER_SITE")?);
    Ok(site
        .parent()
        .context("site-packages has a parent")?
        .to_owned())
}

fn read_environ(pid: u32, key: &str) -> anyhow::Result<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        .with_context(|| format!("{key} not in the environment of {pid}"))
}
