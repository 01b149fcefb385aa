//! `sluice check`: the real binary with a real worker reports what `serve` would run, and
//! fails with a message naming the file and the problem for invalid apps.

mod common;

use std::path::Path;
use std::process::Output;

use common::{TempDir, hello_app};

fn check(app_dir: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(app_dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("sluice check runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A temp app with the given files (path, content).
fn app(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new("sluice-check").expect("temp dir");
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
    dir
}

const HTTP_V1: &str = r#"{"bindings":[{"authLevel":"anonymous","type":"httpTrigger","direction":"in","name":"req"},{"type":"http","direction":"out","name":"$return"}]}"#;

#[test]
fn valid_v2_app_reports_python_runtime_and_every_route() {
    let output = check(&hello_app());
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("Model      v2"), "{out}");
    // The worker environment it names is the one the worker ran from.
    let worker = out
        .lines()
        .find_map(|l| l.strip_prefix("Worker     "))
        .expect("the worker directory is named");
    assert!(Path::new(worker).join("worker.py").is_file(), "{out}");
    let packages = out
        .lines()
        .find_map(|l| l.strip_prefix("  packages   "))
        .expect("the worker packages are named");
    assert!(
        Path::new(packages).join("google/protobuf").is_dir(),
        "{out}"
    );
    assert!(
        out.contains("Runtime    azure-functions-runtime 1.2.1 (bundled)"),
        "{out}"
    );
    assert!(out.contains("/api/items/{id:int}"), "{out}");
    let secure = out
        .lines()
        .find(|l| l.contains("/api/secure"))
        .expect("secure listed");
    assert!(secure.trim_end().ends_with("function"), "{secure}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");
}

#[test]
fn bad_function_json_is_invalid_and_names_the_file() {
    let dir = app(&[("host.json", "{}"), ("Broken/function.json", "{ not json")]);
    let output = check(dir.path());
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("Broken/function.json"), "{out}");
}

#[test]
fn missing_script_file_is_invalid_and_names_it() {
    let dir = app(&[
        ("host.json", "{}"),
        ("Fine/function.json", HTTP_V1),
        ("Fine/__init__.py", "def main(req):\n    return 'ok'\n"),
        ("NoScript/function.json", HTTP_V1),
    ]);
    let output = check(dir.path());
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    let error = out
        .lines()
        .find(|l| l.contains("NoScript") && l.contains("failed to load"))
        .unwrap_or_else(|| panic!("load failure reported: {out}"));
    assert!(error.contains("__init__"), "{error}");
}

#[test]
fn conflicting_routes_are_invalid_and_name_both_functions() {
    let same_route = r#"{"bindings":[{"authLevel":"anonymous","type":"httpTrigger","direction":"in","name":"req","route":"same"},{"type":"http","direction":"out","name":"$return"}]}"#;
    let dir = app(&[
        ("host.json", "{}"),
        ("One/function.json", same_route),
        ("One/__init__.py", "def main(req):\n    return 'one'\n"),
        ("Two/function.json", same_route),
        ("Two/__init__.py", "def main(req):\n    return 'two'\n"),
    ]);
    let output = check(dir.path());
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("One") && out.contains("Two") && out.contains("same"),
        "{out}"
    );
}
