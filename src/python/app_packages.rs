//! The app's own packages: `requirements.txt` installed into `.python_packages` (the
//! platform's layout) when it changed, a shipped `.python_packages` used as is, and the app's
//! modules byte-compiled after an install.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::{
    PythonError, PythonInfo, combined_tail, create_dir_all, discard, exists, hex, io_error,
    is_up_to_date, lock_exclusive, pip_install, python_command, remove_dir_all,
    remove_file_if_exists, remove_leftovers, write_file,
};

pub(super) const APP_PACKAGES_DIR: &str = ".python_packages";
/// Marks .python_packages as installed by Sluice (absent: shipped with the app).
const APP_MANAGED_FILE: &str = ".sluice-managed";
pub(super) const APP_HASH_FILE: &str = ".sluice-requirements.sha256";
const APP_LOCK_FILE: &str = ".sluice.lock";
pub(super) const APP_TMP_PREFIX: &str = ".sluice-tmp-";

/// Whether Sluice may run pip for the app's requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Install when the packages are missing or requirements.txt changed.
    Auto,
    /// `--no-install`: a needed install is an error instead.
    Never,
}

/// Installs the app's `requirements.txt` into `APP_DIR/.python_packages/lib/site-packages` when
/// that was never done for this Python version and file content, or the content changed.
///
/// Safe when several Sluice processes start on the same app at once (a file lock serialises
/// them; the loser sees the winner's result). Returns the site-packages path if it exists (also
/// without a `requirements.txt`), else `None`. Errors: [`PythonError::Install`] with pip's
/// message, or I/O.
pub async fn ensure_app_packages(
    python: &PythonInfo,
    app_dir: &Path,
    install: Install,
) -> Result<Option<PathBuf>, PythonError> {
    // pip runs inside the app directory (for local paths in requirements), so paths must be absolute.
    let app_dir = tokio::fs::canonicalize(app_dir)
        .await
        .map_err(|source| io_error("resolving app directory", app_dir, source))?;
    let packages = app_dir.join(APP_PACKAGES_DIR);
    let site_packages = packages.join("lib").join("site-packages");
    let requirements = app_dir.join("requirements.txt");
    let content = match tokio::fs::read(&requirements).await {
        Ok(content) => content,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Ok(exists(&site_packages).await?.then_some(site_packages));
        }
        Err(source) => return Err(io_error("reading", &requirements, source)),
    };
    let wanted = app_requirements_hash(python, &content);
    let hash_file = packages.join(APP_HASH_FILE);
    if is_up_to_date(&hash_file, &wanted, &site_packages).await? {
        info!(app = %app_dir.display(), "app requirements up to date");
        return Ok(Some(site_packages));
    }
    // Packages Sluice did not install (no hash file): a built deployment package, as the
    // platform's build tools produce it. Used as is, without network.
    let managed = packages.join(APP_MANAGED_FILE);
    if !exists(&managed).await? && exists(&site_packages).await? {
        info!(app = %app_dir.display(), "using the app's shipped .python_packages as is");
        return Ok(Some(site_packages));
    }
    if install == Install::Never {
        return Err(PythonError::InstallDisabled {
            requirements: requirements.clone(),
        });
    }

    create_dir_all(&packages).await?;
    let _lock = lock_exclusive(packages.join(APP_LOCK_FILE)).await?;
    // From now on these packages are Sluice's to replace when requirements change.
    tokio::fs::write(&managed, b"installed by sluice from requirements.txt\n")
        .await
        .map_err(|source| io_error("writing", &managed, source))?;
    if is_up_to_date(&hash_file, &wanted, &site_packages).await? {
        info!(app = %app_dir.display(), "app requirements up to date");
        return Ok(Some(site_packages));
    }
    let started = Instant::now();
    info!(
        app = %app_dir.display(),
        python = %python.version_string(),
        target = %site_packages.display(),
        "installing app requirements"
    );
    remove_leftovers(&packages, APP_TMP_PREFIX).await?;
    let tmp = packages.join(format!("{APP_TMP_PREFIX}{}", std::process::id()));
    create_dir_all(&tmp).await?;
    let installed = pip_install(
        python,
        "app requirements",
        &tmp,
        &requirements,
        true,
        &app_dir,
    )
    .await;
    if let Err(error) = installed {
        discard(&tmp).await;
        return Err(error);
    }
    // Drop the hash first: a crash mid-swap must not leave a stale "up to date" marker.
    remove_file_if_exists(&hash_file).await?;
    if exists(&site_packages).await? {
        remove_dir_all(&site_packages).await?;
    }
    create_dir_all(&packages.join("lib")).await?;
    tokio::fs::rename(&tmp, &site_packages)
        .await
        .map_err(|source| io_error("moving installed packages into", &site_packages, source))?;
    // pip byte-compiled the packages; the app's own modules too.
    compile_app_code(python, &app_dir).await;
    write_file(&hash_file, wanted.as_bytes()).await?;
    info!(elapsed = ?started.elapsed(), app = %app_dir.display(), "app requirements installed");
    Ok(Some(site_packages))
}

async fn compile_app_code(python: &PythonInfo, app_dir: &Path) {
    let mut compile = python_command(python);
    compile
        .args([
            "-m",
            "compileall",
            "-q",
            "-x",
            r"[/\\]\.python_packages[/\\]",
        ])
        .arg(app_dir)
        .current_dir(app_dir);
    match compile.output().await {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            debug!(status = %out.status, output = %combined_tail(&out), "compileall of the app failed")
        }
        Err(error) => debug!(%error, "compileall could not run"),
    }
}

fn app_requirements_hash(python: &PythonInfo, requirements: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(python.version_string().as_bytes());
    hasher.update(b"\n");
    hasher.update(requirements);
    hex(&hasher.finalize())
}
