//! `sluice check APP_DIR`: resolves everything `serve` would — Python, environments, the
//! runtime library and its source, the functions with their routes, methods and auth
//! levels — by starting one real worker, prints it, and says whether the app is valid.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::ServeConfig;
use crate::launch::{Prepared, prepare};
use crate::lifecycle::Workers;
use crate::pool::Pool;
use crate::rpc::{RpcServer, is_prerelease};
use crate::serve::ServeError;

/// The outcome: the report to print, and whether the app can be served.
pub struct Report {
    pub text: String,
    pub valid: bool,
}

pub async fn run(config: ServeConfig) -> Result<Report, ServeError> {
    let Prepared { python, launch } = prepare(&config).await?;
    let script = &config.script_file;
    let model = if config.app_dir.join(script).is_file() {
        format!("v2 (decorators, {script})")
    } else {
        "v1 (function.json folders)".to_owned()
    };
    let mut text = String::new();
    let line = &mut text;
    let _ = writeln!(
        line,
        "Python     {} ({})",
        python.path.display(),
        python.version_string()
    );
    // Where the worker's own code and packages are (for diagnosis, and for the worker's
    // Python unit tests, which run against them).
    let _ = writeln!(line, "Worker     {}", launch.worker_dir.display());
    let _ = writeln!(line, "  packages   {}", launch.worker_site.display());
    let _ = writeln!(line, "App        {}", config.app_dir.display());
    let _ = writeln!(line, "Model      {model}");
    let settings = &config.app_settings;
    if let Some(file) = &settings.file {
        // Names only: values are secrets (connection strings, keys).
        let names: Vec<&str> = settings.applied.iter().map(|(k, _)| k.as_str()).collect();
        let _ = writeln!(line, "Settings   {}", file.display());
        let _ = writeln!(line, "  applied    {}", list_or_none(&names));
        if !settings.overridden.is_empty() {
            let _ = writeln!(
                line,
                "  from env   {} (already set in the environment, which wins)",
                settings.overridden.join(", ")
            );
        }
    }
    if let Some(cors) = &config.cors {
        let _ = writeln!(line, "CORS       {cors}");
    }

    let rpc = RpcServer::start().await?;
    let workers = Arc::new(Workers::new(
        config.slot_settings(&config.host),
        launch,
        rpc,
        Arc::new(Pool::default()),
        // Nothing exports them here; the workers just need somewhere to record.
        Arc::new(crate::metrics::Metrics::new()),
        Arc::new(crate::ready_file::ReadyFile::new(None)),
    ));
    let running = match workers.start().await {
        Ok(running) => running,
        Err(error) => {
            let _ = writeln!(line, "Error      {error}");
            return Ok(Report { text, valid: false });
        }
    };
    let runtime = running.session.runtime();
    let _ = writeln!(
        line,
        "Runtime    {} {} ({})",
        runtime.package, runtime.version, runtime.source
    );

    let mut warnings = Vec::new();
    if is_prerelease(&runtime.version) {
        warnings.push(format!(
            "pre-release runtime pinned: {} {}",
            runtime.package, runtime.version
        ));
    }
    if let Some(extensions) = &runtime.extensions {
        warnings.push(format!(
            "worker extensions are not supported on Python 3.13+ and are ignored: {extensions}"
        ));
    }
    let failures = running.session.load_failures();
    let catalog = workers.catalog.get();
    if let Some(catalog) = catalog {
        let _ = writeln!(line, "Functions  {}", catalog.functions.len());
        for f in &catalog.functions {
            let methods = if f.methods.is_empty() {
                "ANY".to_owned()
            } else {
                f.methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let auth = format!("{:?}", f.auth).to_ascii_lowercase();
            let _ = writeln!(
                line,
                "  {:<24} {:<16} {:<32} {auth}",
                f.name, methods, f.route
            );
        }
    }
    for f in catalog.iter().flat_map(|c| &c.unrouted) {
        let _ = writeln!(
            line,
            "  {:<24} {:<16} not served over HTTP",
            f.name, f.trigger
        );
    }
    for (function, reason) in &failures {
        let first = reason.lines().next().unwrap_or_default();
        let _ = writeln!(
            line,
            "Error      function {function} failed to load: {first}"
        );
    }
    if !warnings.is_empty() {
        let _ = writeln!(line, "Warnings");
        for w in &warnings {
            let _ = writeln!(line, "  - {w}");
        }
    }
    let valid = failures.is_empty();
    let _ = writeln!(line, "{}", if valid { "OK" } else { "INVALID" });
    Ok(Report { text, valid })
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}
