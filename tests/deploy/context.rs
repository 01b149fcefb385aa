//! The build context: what `.dockerignore` excludes (matched with `globset`) and the files
//! a COPY source stands for.

use std::path::Path;

use anyhow::{Context, ensure};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::dockerfile::repo;

/// `.dockerignore` as a set of globs (Docker's rules: `*` and `?` within one path element,
/// `**` across any number; no `!` exceptions, which this test would have to learn first).
pub(crate) fn dockerignore() -> anyhow::Result<GlobSet> {
    let text =
        std::fs::read_to_string(repo().join(".dockerignore")).context("reading .dockerignore")?;
    ignore_set(text.lines())
}

pub(crate) fn ignore_set<'a>(lines: impl Iterator<Item = &'a str>) -> anyhow::Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for line in lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        ensure!(
            !line.starts_with('!'),
            "teach this test `!` exceptions before using them in .dockerignore"
        );
        let pattern = line.trim_start_matches('/').trim_end_matches('/');
        set.add(
            GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!(".dockerignore pattern {line:?}"))?,
        );
    }
    Ok(set.build()?)
}

/// Whether `path` (context-relative, `/`-separated) or one of its parents is excluded.
pub(crate) fn is_ignored(path: &str, patterns: &GlobSet) -> bool {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (1..=parts.len()).any(|n| patterns.is_match(parts[..n].join("/")))
}

/// Every file under `path` (or `path` itself), context-relative.
pub(crate) fn files_under(root: &Path, rel: &str) -> anyhow::Result<Vec<String>> {
    let full = root.join(rel);
    if full.is_file() {
        return Ok(vec![rel.trim_end_matches('/').to_owned()]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&full).with_context(|| format!("listing {}", full.display()))? {
        let entry = entry?;
        let child = format!(
            "{}/{}",
            rel.trim_end_matches('/'),
            entry.file_name().to_string_lossy()
        );
        out.extend(files_under(root, &child)?);
    }
    Ok(out)
}

#[test]
fn dockerignore_matcher_follows_docker_rules() -> anyhow::Result<()> {
    let patterns = ignore_set(["target", "**/__pycache__", "**/*.pyc", "fuzz"].into_iter())?;
    assert!(is_ignored("target/release/sluice", &patterns));
    assert!(is_ignored(
        "worker/sluice_worker/__pycache__/x.py",
        &patterns
    ));
    assert!(is_ignored("__pycache__/x.py", &patterns));
    assert!(is_ignored("worker/a.pyc", &patterns));
    assert!(is_ignored("fuzz", &patterns));
    assert!(!is_ignored("src/target.rs", &patterns));
    assert!(!is_ignored("worker/worker.py", &patterns));
    assert!(!is_ignored("examples/hello/function_app.py", &patterns));
    Ok(())
}
