//! Static checks of the Dockerfile: every COPY source exists and survives `.dockerignore`;
//! every program a step calls is in its base image or installed by an earlier step; the
//! image runs `sluice serve` as documented (user, ports, environment, entrypoint, health check).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::context::{dockerignore, files_under, is_ignored};
use crate::dockerfile::*;

/// Programs present in each base image by name. A RUN may call only these, or what an earlier
/// step installed.
///
/// - `rust:*-slim-*`: the official Rust image installs rustup's toolchain into
///   /usr/local/cargo/bin (on PATH: `cargo`, `rustc`) on top of debian:*-slim, whose essential
///   packages include coreutils (`install`) and dash (`sh`).
/// - `python:*-slim-*`: the official Python image builds CPython into /usr/local/bin
///   (`python3`, `python3.N`, `pip`) on top of debian:*-slim, whose essential/required packages
///   provide coreutils (`rm`, `chmod`, `chown`, `mkdir`, `sleep`), dash (`sh`), passwd
///   (`groupadd`, `useradd`) and apt (`apt-get`).
const BASE_IMAGE_PROGRAMS: &[(&str, &[&str])] = &[
    ("rust:", &["cargo", "rustc", "install", "sh"]),
    (
        "python:",
        &[
            "python3", "pip", "rm", "chmod", "chown", "mkdir", "sleep", "sh", "groupadd",
            "useradd", "apt-get",
        ],
    ),
];

/// Debian packages an `apt-get install` step may add, and the programs each provides.
const APT_PROGRAMS: &[(&str, &[&str])] = &[("tini", &["tini"])];

/// Shell builtins and keywords: always available, and `exec`/`command` run the next word.
const SHELL_BUILTINS: &[&str] = &["exec", "cd", "export", "set", "true", "false", "test", "["];

#[test]
fn dockerfile_copy_sources_exist_and_survive_dockerignore() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let patterns = dockerignore()?;
    let mut checked = 0;
    for stage in &dockerfile.stages {
        stage.walk(
            &dockerfile.global_args,
            &mut BTreeMap::new(),
            &mut BTreeMap::new(),
            |instruction, vars, _env| {
                let copy = match &instruction.step {
                    Step::Add => {
                        bail!("use COPY (ADD fetches URLs and unpacks archives implicitly)")
                    }
                    Step::Copy(copy) => copy.expanded(vars),
                    _ => return Ok(()),
                };
                if copy.from.is_some() {
                    return Ok(());
                }
                if copy.sources.len() > 1 {
                    ensure!(
                        copy.dest.ends_with('/'),
                        "several sources need a directory destination ending in /"
                    );
                }
                for source in &copy.sources {
                    ensure!(
                        !source.contains(['*', '?', '[']),
                        "wildcard source {source}: name files explicitly"
                    );
                    ensure!(
                        !source.starts_with('/') && !source.contains(".."),
                        "source {source} leaves the context"
                    );
                    let path = repo().join(source);
                    ensure!(
                        path.exists(),
                        "COPY source {source} does not exist in the repository"
                    );
                    ensure!(
                        !is_ignored(source, &patterns),
                        "COPY source {source} is excluded by .dockerignore"
                    );
                    let kept = files_under(&repo(), source)?
                        .into_iter()
                        .filter(|f| !is_ignored(f, &patterns))
                        .count();
                    ensure!(
                        kept > 0,
                        "every file of COPY source {source} is excluded by .dockerignore"
                    );
                    checked += 1;
                }
                Ok(())
            },
        )?;
    }
    ensure!(
        checked >= 6,
        "expected the build and app COPYs, found {checked}"
    );
    Ok(())
}

#[test]
fn dockerfile_steps_call_only_available_programs() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    // Programs each stage has when it ends, for stages built FROM it.
    let mut stage_programs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut calls = 0;
    for stage in &dockerfile.stages {
        let mut available: BTreeSet<String> = if let Some(parent) = stage_programs.get(&stage.base)
        {
            parent.clone()
        } else {
            let (_, programs) = BASE_IMAGE_PROGRAMS
                .iter()
                .find(|(prefix, _)| stage.base.starts_with(prefix))
                .with_context(|| {
                    format!("base image {} has no program list in this test", stage.base)
                })?;
            programs.iter().map(|p| (*p).to_owned()).collect()
        };
        available.extend(SHELL_BUILTINS.iter().map(|b| (*b).to_owned()));
        let mut vars = BTreeMap::new();
        stage.walk(&dockerfile.global_args, &mut vars, &mut BTreeMap::new(), |instruction, vars, _env| {
            let scripts: Vec<Vec<String>> = match &instruction.step {
                Step::Run(run) => run.commands()?,
                Step::Healthcheck(Some(Form::Exec(words))) => vec![words.clone()],
                Step::Healthcheck(_) => bail!("use CMD in the exec form for HEALTHCHECK"),
                Step::Entrypoint(Form::Exec(words)) | Step::Cmd(Form::Exec(words)) => {
                    match words.is_empty() {
                        true => vec![],
                        false => entrypoint_commands(words)?,
                    }
                }
                Step::Entrypoint(_) | Step::Cmd(_) => {
                    bail!("use the exec form for {}", instruction.keyword)
                }
                Step::Copy(copy) => {
                    let copy = copy.expanded(vars);
                    if let Some(name) = copy.dest.strip_prefix("/usr/local/bin/") {
                        available.insert(name.trim_end_matches('/').to_owned());
                    }
                    vec![]
                }
                _ => vec![],
            };
            for command in scripts {
                let program = program_of(&command).context("empty command")?;
                ensure!(
                    available.contains(program),
                    "{} calls `{program}`, which the base image {} does not have and no earlier step installed",
                    instruction.keyword,
                    stage.base
                );
                calls += 1;
                if program == "apt-get" && command.get(1).map(String::as_str) == Some("install") {
                    for package in command[2..].iter().filter(|w| !w.starts_with('-')) {
                        let (_, programs) = APT_PROGRAMS
                            .iter()
                            .find(|(name, _)| name == package)
                            .with_context(|| format!("apt package {package} has no program list in this test"))?;
                        available.extend(programs.iter().map(|p| (*p).to_owned()));
                    }
                }
            }
            Ok(())
        })?;
        if let Some(name) = &stage.name {
            stage_programs.insert(name.clone(), available);
        }
    }
    ensure!(
        calls >= 10,
        "expected at least 10 program calls, found {calls}"
    );
    Ok(())
}

#[test]
fn dockerfile_runs_sluice_as_documented() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let example = dockerfile.stage("example")?;
    ensure!(
        dockerfile.stages.last().map(|s| s.name.as_deref()) == Some(Some("example")),
        "the default (last) stage is the example app"
    );
    let mut env = BTreeMap::new();
    let mut user = None;
    let mut exposed = Vec::new();
    for stage in dockerfile.chain(example) {
        stage.walk(
            &dockerfile.global_args,
            &mut BTreeMap::new(),
            &mut env,
            |instruction, vars, _env| {
                match &instruction.step {
                    Step::User(name) => user = Some(expand(name, vars)),
                    Step::Expose(ports) => exposed.extend(ports.iter().map(|p| expand(p, vars))),
                    _ => {}
                }
                Ok(())
            },
        )?;
    }
    let user = user.context("no USER: the image would run as root")?;
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap_or_default()
        .parse()
        .context("USER is numeric (runAsNonRoot can check it)")?;
    ensure!(uid != 0, "USER is root");
    for (name, value) in [
        ("AzureWebJobsScriptRoot", "/home/site/wwwroot"),
        ("SLUICE_CACHE_DIR", "/opt/sluice/cache"),
        ("SLUICE_PORT", "7071"),
        ("SLUICE_ADMIN_PORT", "9091"),
        ("SLUICE_ADMIN_BIND", "127.0.0.1"),
    ] {
        ensure!(
            env.get(name).map(String::as_str) == Some(value),
            "ENV {name} should be {value}, is {:?}",
            env.get(name)
        );
    }
    ensure!(
        exposed.contains(&"7071".to_owned()) && exposed.contains(&"9091".to_owned()),
        "EXPOSE {exposed:?}"
    );

    let (health, entrypoint) = healthcheck_and_entrypoint(&dockerfile)?;
    let health_code = health.join(" ");
    ensure!(
        health_code.contains("127.0.0.1") && health_code.contains("/readyz"),
        "HEALTHCHECK probes the admin /readyz: {health_code}"
    );
    let [tini, dashdash, sh, c, script, zero] = entrypoint.as_slice() else {
        bail!("ENTRYPOINT is tini -- sh -c SCRIPT NAME: {entrypoint:?}");
    };
    ensure!(tini == "tini" && dashdash == "--" && sh == "sh" && c == "-c" && !zero.is_empty());
    let commands = simple_commands(script)?;
    let [serve] = commands.as_slice() else {
        bail!("the entrypoint script is one command: {script}");
    };
    ensure!(
        serve.first().map(String::as_str) == Some("exec"),
        "the script execs sluice, so signals reach it"
    );
    ensure!(
        serve.last().map(String::as_str) == Some("$@"),
        "docker run arguments are appended"
    );
    // Every variable the script reads has an ENV default.
    for word in serve {
        if let Some(name) = word.strip_prefix('$').filter(|n| *n != "@") {
            ensure!(
                env.contains_key(name),
                "entrypoint reads ${name}, which no ENV sets"
            );
        }
    }
    // Every flag it passes exists in `sluice serve`.
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in serve.iter().filter(|w| w.starts_with("--")) {
        ensure!(
            help.contains(&format!("{flag} <")) || help.contains(&format!("{flag} ")),
            "`sluice serve` has no {flag}"
        );
    }
    ensure!(
        serve[1..3] == ["sluice".to_owned(), "serve".to_owned()],
        "{serve:?}"
    );
    Ok(())
}
