//! Compiles `proto/FunctionRpc.proto` with protox (pure Rust, no system protoc) and
//! generates the prost messages. The serialized descriptor set is
//! also kept: Sluice hands it to the Python worker, which builds its message classes
//! from it, so both sides always share one contract.
//!
//! Then builds the worker's native EventStream client (`native/`, a PyO3 abi3 extension)
//! with a nested `cargo build --release` into `<target>/native`, and sets `sluice_native`
//! so `serve.rs` embeds it. Should that build fail, Sluice still builds, with a warning,
//! and its workers use the grpcio transport.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/FunctionRpc.proto");
    let fds = protox::compile(["FunctionRpc.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("function_rpc_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // `bytes` fields as `Bytes`: an HTTP body is shared, not copied, on its way to the
    // worker and back (the gRPC framing is Sluice's own, in src/rpc/stream.rs).
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    native_extension(&out);
    Ok(())
}

/// Where the embedded extension is copied; `serve.rs` includes it under `cfg(sluice_native)`.
const EMBEDDED: &str = "sluice_native.abi3.so";

fn native_extension(out: &Path) {
    println!("cargo::rustc-check-cfg=cfg(sluice_native)");
    println!("cargo:rerun-if-changed=native/src");
    println!("cargo:rerun-if-changed=native/Cargo.toml");
    println!("cargo:rerun-if-changed=native/build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=SLUICE_NO_NATIVE");
    if std::env::var_os("SLUICE_NO_NATIVE").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    // Fuzz builds (cargo-fuzz sets cfg fuzzing) start no workers: skip the extra build.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        return;
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        println!(
            "cargo:warning=native worker transport is built on Linux only; workers use grpcio"
        );
        return;
    }
    match build_native(out) {
        Ok(library) => match std::fs::copy(&library, out.join(EMBEDDED)) {
            Ok(_) => println!("cargo:rustc-cfg=sluice_native"),
            Err(error) => println!(
                "cargo:warning=cannot copy {}: {error}; workers use grpcio",
                library.display()
            ),
        },
        Err(reason) => println!(
            "cargo:warning=native worker transport not built ({reason}); workers use grpcio"
        ),
    }
}

fn build_native(out: &Path) -> Result<PathBuf, String> {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    // Shared by every profile of this target dir (OUT_DIR is <target>[/<triple>]/<profile>/
    // build/<pkg>-<hash>/out), so debug, release, test and clippy builds reuse one build.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|dir| dir.join("native"))
        .unwrap_or_else(|| out.join("native"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--lib", "--manifest-path"])
        .arg(manifest_dir.join("native/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if std::env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    // The outer build's flags and wrappers (clippy-driver, sanitizers, coverage) are not for
    // this build; the jobserver (CARGO_MAKEFLAGS) and CARGO_HOME are kept.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let inherited_cargo = key.starts_with("CARGO_")
            && !matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE");
        if inherited_cargo
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CLIPPY_ARGS"
                    | "CLIPPY_CONF_DIR"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
            )
        {
            cmd.env_remove(key);
        }
    }
    // abi3: one library for every CPython >= 3.9, built without any interpreter present; an
    // extension module, so libpython is not linked (the interpreter loading it provides it).
    cmd.env("PYO3_NO_PYTHON", "1")
        .env("PYO3_BUILD_EXTENSION_MODULE", "1")
        .env_remove("PYO3_PYTHON");
    // Symbols stay (py-spy --native and perf name Rust frames), line tables go: ~15 → ~2 MB
    // in the sluice binary and in every worker environment.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!(
            "cargo build of native/ failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let library = target_dir.join("release/libsluice_native.so");
    if library.is_file() {
        Ok(library)
    } else {
        Err(format!("{} missing after the build", library.display()))
    }
}
