use super::app_packages::{APP_HASH_FILE, APP_PACKAGES_DIR, APP_TMP_PREFIX};
use super::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "sluice-python-test-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fake_env(pairs: &[(&str, &Path)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.display().to_string()))
        .collect();
    move |key| map.get(key).cloned()
}

fn real_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

async fn real_python() -> PythonInfo {
    find_python(None, &real_env)
        .await
        .expect("these tests need a Python >= 3.13 (on PATH or under pyenv)")
}

/// The same version at a path that cannot run: any pip call with it fails.
fn unrunnable(python: &PythonInfo) -> PythonInfo {
    PythonInfo {
        path: PathBuf::from("/nonexistent/sluice-test/python3.13"),
        version: python.version,
    }
}

fn home() -> PathBuf {
    PathBuf::from(real_env("HOME").expect("HOME is set"))
}

const ASSETS: [Asset; 2] = [
    Asset {
        path: "sluice_worker/__init__.py",
        bytes: b"",
    },
    Asset {
        path: "sluice_worker/__main__.py",
        bytes: b"print('hello from the worker')\n",
    },
];

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn finds_pyenv_python_when_path_has_none() {
    let empty = TempDir::new("empty-path");
    let pyenv = home().join(".pyenv");
    let env = fake_env(&[("PATH", &empty.0), ("PYENV_ROOT", &pyenv)]);
    let python = find_python(None, &env).await.expect("pyenv has 3.13");
    assert!(python.version >= (3, 13, 0), "{python:?}");
    assert!(python.path.starts_with(&pyenv), "{python:?}");
    assert!(python.version_string().starts_with("3.1"));
    // PYENV_ROOT defaults to ~/.pyenv.
    let env = fake_env(&[("PATH", &empty.0), ("HOME", &home())]);
    assert_eq!(find_python(None, &env).await.expect("default root"), python);
}

#[tokio::test]
async fn explicit_python_older_than_313_is_rejected_by_name() {
    let python3 = on_path(OsStr::new("python3"), &real_env)
        .into_iter()
        .next()
        .expect("python3 on PATH");
    let error = find_python(Some(&python3), &real_env)
        .await
        .expect_err("python3 on PATH is 3.11");
    let message = error.to_string();
    assert!(
        matches!(
            &error,
            PythonError::ExplicitUnusable {
                reason: Rejection::TooOld { .. },
                ..
            }
        ),
        "{message}"
    );
    assert!(
        message.contains(&python3.display().to_string()),
        "{message}"
    );
    assert!(message.contains("is older than 3.13"), "{message}");
    assert!(message.contains("--python"), "{message}");

    let missing = Path::new("python3.99-sluice-missing");
    let error = find_python(Some(missing), &real_env)
        .await
        .expect_err("missing");
    assert!(
        error.to_string().contains("python3.99-sluice-missing")
            && error.to_string().contains("not found on PATH"),
        "{error}"
    );
}

#[tokio::test]
async fn explicit_bare_name_is_looked_up_on_path() {
    let python = real_python().await;
    let bin = TempDir::new("explicit-bin");
    std::os::unix::fs::symlink(&python.path, bin.0.join("my-python")).expect("symlink");
    let env = fake_env(&[("PATH", &bin.0)]);
    let found = find_python(Some(Path::new("my-python")), &env)
        .await
        .expect("found");
    assert_eq!(found.version, python.version);
}

#[tokio::test]
async fn not_found_lists_every_candidate_and_the_fix() {
    let old = real_python_older_than_313().await;
    let dir = TempDir::new("not-found");
    let bin = dir.0.join("bin");
    let pyenv_bin = dir.0.join("pyenv/versions/3.13.9/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(&pyenv_bin).expect("mkdir");
    // A broken interpreter on PATH, and a pyenv one whose name lies about its version.
    let broken = bin.join("python3.14");
    std::os::unix::fs::symlink(on_path(OsStr::new("false"), &real_env)[0].clone(), &broken)
        .expect("symlink");
    let liar = pyenv_bin.join("python3.13");
    std::os::unix::fs::symlink(&old, &liar).expect("symlink");
    // Not interpreter names, so never tried.
    std::os::unix::fs::symlink(&old, pyenv_bin.join("python3.13-config")).expect("symlink");
    std::os::unix::fs::symlink(&old, pyenv_bin.join("python3.12")).expect("symlink");

    let env = fake_env(&[("PATH", &bin), ("PYENV_ROOT", &dir.0.join("pyenv"))]);
    let error = find_python(None, &env).await.expect_err("nothing usable");
    let PythonError::NotFound { tried } = &error else {
        panic!("expected NotFound, got {error}");
    };
    assert_eq!(tried.len(), 2, "{tried:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{}: it exited with", broken.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}: version 3.", liar.display())),
        "{message}"
    );
    assert!(message.contains("is older than 3.13"), "{message}");
    assert!(
        message.contains("--python PATH or SLUICE_PYTHON"),
        "{message}"
    );

    // Nothing at all still says where it looked.
    let env = fake_env(&[("PATH", &dir.0.join("nowhere"))]);
    let message = find_python(None, &env).await.expect_err("none").to_string();
    assert!(message.contains("PATH: no python3.13"), "{message}");
    assert!(message.contains("neither PYENV_ROOT nor HOME"), "{message}");
}

/// The real executable of `python3` on PATH (3.11 here), bypassing any shim.
async fn real_python_older_than_313() -> PathBuf {
    let python3 = on_path(OsStr::new("python3"), &real_env)
        .into_iter()
        .next()
        .expect("python3 on PATH");
    let out = Command::new(&python3)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .await
        .expect("run python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_env_is_built_once_then_reused_without_pip() {
    let python = real_python().await;
    let cache = TempDir::new("worker-env");
    let env = ensure_worker_env(&python, &cache.0, "six==1.16.0\n", &ASSETS)
        .await
        .expect("build");
    assert!(env.root.starts_with(&cache.0));
    assert!(env.site_packages.join("six.py").is_file());
    let main = std::fs::read(env.worker_dir.join("sluice_worker/__main__.py")).expect("asset");
    assert_eq!(main, ASSETS[1].bytes);
    assert!(
        env.worker_dir.join("sluice_worker/__pycache__").is_dir(),
        "compiled"
    );
    let marker = env.root.join(COMPLETE_MARKER);
    let built_at = std::fs::metadata(&marker)
        .expect("marker")
        .modified()
        .expect("mtime");

    // The hot path: an interpreter that cannot run proves pip is not called again.
    let again = ensure_worker_env(&unrunnable(&python), &cache.0, "six==1.16.0\n", &ASSETS)
        .await
        .expect("cached");
    assert_eq!(again, env);
    let mtime = std::fs::metadata(&marker)
        .expect("marker")
        .modified()
        .expect("mtime");
    assert_eq!(mtime, built_at);
    // A different lock is a different environment.
    let other = ensure_worker_env(&unrunnable(&python), &cache.0, "six==1.17.0\n", &ASSETS).await;
    assert!(matches!(other, Err(PythonError::Spawn { .. })), "{other:?}");
    let names = dir_names(&cache.0);
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_worker_env_builds_both_succeed() {
    let python = real_python().await;
    let cache = TempDir::new("worker-env-race");
    let (a, b) = tokio::join!(
        ensure_worker_env(&python, &cache.0, "six==1.16.0\n", &ASSETS),
        ensure_worker_env(&python, &cache.0, "six==1.16.0\n", &ASSETS),
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a, b);
    assert!(a.site_packages.join("six.py").is_file());
    assert_eq!(
        dir_names(&cache.0).len(),
        2,
        "root and lock only, no temp dirs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_env_install_failure_carries_pip_message() {
    let python = real_python().await;
    let cache = TempDir::new("worker-env-bad");
    let error = ensure_worker_env(
        &python,
        &cache.0,
        "this-package-does-not-exist-sluice==9.9\n",
        &ASSETS,
    )
    .await
    .expect_err("cannot install");
    let PythonError::Install { what, output, .. } = &error else {
        panic!("expected Install, got {error}");
    };
    assert_eq!(*what, "worker environment");
    assert!(
        output.contains("this-package-does-not-exist-sluice"),
        "{output}"
    );
    assert_eq!(dir_names(&cache.0).len(), 1, "only the lock file is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_packages_install_skip_and_reinstall_on_change() {
    let python = real_python().await;
    let app = TempDir::new("app");
    assert_eq!(
        ensure_app_packages(&python, &app.0, Install::Auto)
            .await
            .expect("no reqs"),
        None
    );

    std::fs::write(app.0.join("requirements.txt"), "six==1.16.0\n").expect("write");
    let site = ensure_app_packages(&python, &app.0, Install::Auto)
        .await
        .expect("install")
        .expect("site");
    assert!(site.ends_with(".python_packages/lib/site-packages"));
    assert!(site.join("six-1.16.0.dist-info").is_dir());

    // Unchanged: no pip (the interpreter cannot run).
    let skipped = ensure_app_packages(&unrunnable(&python), &app.0, Install::Auto)
        .await
        .expect("skip");
    assert_eq!(skipped.as_deref(), Some(site.as_path()));

    std::fs::write(app.0.join("requirements.txt"), "six==1.17.0\n").expect("write");
    let again = ensure_app_packages(&python, &app.0, Install::Auto)
        .await
        .expect("reinstall")
        .expect("site");
    assert!(again.join("six-1.17.0.dist-info").is_dir());
    assert!(!again.join("six-1.16.0.dist-info").exists());
    let leftovers: Vec<_> = dir_names(&app.0.join(APP_PACKAGES_DIR))
        .into_iter()
        .filter(|n| n.starts_with(APP_TMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Without requirements.txt an existing site-packages is still reported.
    std::fs::remove_file(app.0.join("requirements.txt")).expect("rm");
    let kept = ensure_app_packages(&unrunnable(&python), &app.0, Install::Auto)
        .await
        .expect("kept");
    assert_eq!(kept.as_deref(), Some(site.as_path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_packages_are_used_as_is_and_no_install_refuses_to_install() {
    let python = real_python().await;
    let shipped = TempDir::new("app-shipped");
    std::fs::write(shipped.0.join("requirements.txt"), "six==1.16.0\n").expect("write");
    let site = shipped.0.join(".python_packages/lib/site-packages");
    std::fs::create_dir_all(&site).expect("mkdir");
    // An unrunnable Python proves pip is not called.
    let used = ensure_app_packages(&unrunnable(&python), &shipped.0, Install::Never)
        .await
        .expect("shipped packages need no install");
    assert_eq!(
        used.as_deref(),
        Some(site.canonicalize().expect("exists").as_path())
    );

    let bare = TempDir::new("app-bare");
    std::fs::write(bare.0.join("requirements.txt"), "six==1.16.0\n").expect("write");
    let error = ensure_app_packages(&python, &bare.0, Install::Never)
        .await
        .expect_err("an install is needed");
    assert!(
        matches!(error, PythonError::InstallDisabled { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("--no-install"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_app_installs_both_succeed() {
    let python = real_python().await;
    let app = TempDir::new("app-race");
    std::fs::write(app.0.join("requirements.txt"), "six==1.16.0\n").expect("write");
    let (a, b) = tokio::join!(
        ensure_app_packages(&python, &app.0, Install::Auto),
        ensure_app_packages(&python, &app.0, Install::Auto)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a, b);
    assert!(a.expect("site").join("six.py").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_app_requirement_fails_with_pip_message() {
    let python = real_python().await;
    let app = TempDir::new("app-bad");
    std::fs::write(
        app.0.join("requirements.txt"),
        "this-package-does-not-exist-sluice==9.9\n",
    )
    .expect("write");
    let error = ensure_app_packages(&python, &app.0, Install::Auto)
        .await
        .expect_err("cannot install");
    let PythonError::Install { what, output, .. } = &error else {
        panic!("expected Install, got {error}");
    };
    assert_eq!(*what, "app requirements");
    assert!(output.contains("No matching distribution"), "{output}");
    assert!(
        error
            .to_string()
            .contains("this-package-does-not-exist-sluice")
    );
    let packages = app.0.join(APP_PACKAGES_DIR);
    assert!(!packages.join("lib/site-packages").exists());
    assert!(!packages.join(APP_HASH_FILE).exists());
}

#[test]
fn pyenv_shims_are_recognised() {
    assert!(is_shim(Path::new("/root/.pyenv/shims/python3.13")));
    assert!(is_shim(Path::new(
        "/root/.pyenv/plugins/pyenv-virtualenv/shims/python3.13"
    )));
    assert!(!is_shim(Path::new("/usr/bin/python3.13")));
    assert!(!is_shim(Path::new(
        "/root/.pyenv/versions/3.13.0/bin/python3.13"
    )));
}

#[test]
fn cache_dir_precedence() {
    let (sluice, xdg, home) = (Path::new("/s"), Path::new("/x"), Path::new("/h"));
    let all = fake_env(&[
        ("SLUICE_CACHE_DIR", sluice),
        ("XDG_CACHE_HOME", xdg),
        ("HOME", home),
    ]);
    assert_eq!(default_cache_dir(&all), PathBuf::from("/s"));
    let no_sluice = fake_env(&[("XDG_CACHE_HOME", xdg), ("HOME", home)]);
    assert_eq!(default_cache_dir(&no_sluice), PathBuf::from("/x/sluice"));
    let relative_xdg = fake_env(&[("XDG_CACHE_HOME", Path::new("rel")), ("HOME", home)]);
    assert_eq!(
        default_cache_dir(&relative_xdg),
        PathBuf::from("/h/.cache/sluice")
    );
}

#[test]
fn worker_key_depends_on_version_lock_and_assets() {
    let py = |minor| PythonInfo {
        path: PathBuf::from("/p"),
        version: (3, minor, 0),
    };
    let key = worker_env_key(&py(13), "a==1", &ASSETS);
    assert_eq!(key.len(), 16);
    assert_eq!(
        key,
        worker_env_key(
            &PythonInfo {
                path: "/q".into(),
                ..py(13)
            },
            "a==1",
            &ASSETS
        )
    );
    assert_ne!(key, worker_env_key(&py(14), "a==1", &ASSETS));
    assert_ne!(key, worker_env_key(&py(13), "a==2", &ASSETS));
    assert_ne!(key, worker_env_key(&py(13), "a==1", &ASSETS[..1]));
}

#[test]
fn parses_versions_and_keeps_output_tail() {
    assert_eq!(parse_version("3 13 0"), Some((3, 13, 0)));
    assert_eq!(parse_version("3 13"), None);
    assert_eq!(parse_version("3 x 0"), None);
    assert_eq!(tail("short\n", 10), "short");
    assert_eq!(tail("abcdefgh", 3), "…fgh");
    assert_eq!(tail("aé", 1), "…");
    assert!(
        !is_plain_relative("/etc/passwd") && !is_plain_relative("../x") && !is_plain_relative("")
    );
    assert!(is_plain_relative("sluice_worker/__main__.py"));
}
