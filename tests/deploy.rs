//! Checks the container image definition without a container engine (none runs in CI).
//!
//! Static checks parse `Dockerfile` with a small line-based parser (continuations, comments,
//! stages, ARG/ENV expansion; no heredocs): every COPY source exists and survives
//! `.dockerignore`; every program a RUN, HEALTHCHECK or ENTRYPOINT calls is in its base image
//! (the lists below, with the reason each holds) or installed by an earlier step; the entrypoint
//! only passes flags `sluice serve` has. The replay test then runs the image's own steps against
//! the real binary in a throwaway directory that stands for the image's root filesystem: the
//! COPYs of the `runtime` and `example` stages, their `sluice check` steps (the worker
//! environment pre-build and the app's requirements install), then the ENTRYPOINT script with
//! pip pointed at a dead index (so any install would fail: a container needs no network) and the
//! HEALTHCHECK command. Not replayed here: the `build` stage's `cargo build` (see
//! scripts/check-deploy.sh), apt-get, user creation and file modes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};

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

const STARTUP_DEADLINE: Duration = Duration::from_secs(300);
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

/// A build stage: its base, optional name and instructions.
#[derive(Debug, Clone)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

#[derive(Debug)]
struct Dockerfile {
    global_args: BTreeMap<String, String>,
    stages: Vec<Stage>,
}

/// A shell word or a control operator (`&&`, `||`, `;`, `|`).
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Op,
}

/// A parsed COPY/ADD: flags, sources (build-context relative), destination.
#[derive(Debug)]
struct Copy {
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

/// Stops the child (if still running) when the test ends, pass or fail.
struct ChildGuard(Child);

/// A directory removed when the test ends.
struct TempDir(PathBuf);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_dockerfile(text: &str) -> anyhow::Result<Dockerfile> {
    let mut instructions = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        // Comment lines are dropped, also inside a continuation (as BuildKit does).
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_none()) {
            continue;
        }
        ensure!(
            !trimmed.contains("<<"),
            "line {}: heredocs are not supported by this parser",
            index + 1
        );
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        if !joined.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            pending = Some((start, joined));
            continue;
        }
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        instructions.push(Instruction {
            line: start,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    ensure!(
        pending.is_none(),
        "the Dockerfile ends inside a continuation"
    );

    let mut global_args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let (base, name) = match words.as_slice() {
                [base] => (*base, None),
                [base, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => (*base, Some(*name)),
                _ => bail!("line {}: unexpected FROM form", instruction.line),
            };
            stages.push(Stage {
                base: expand(base, &global_args),
                name: name.map(str::to_owned),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(instruction);
        } else if instruction.keyword == "ARG" {
            let (name, value) = instruction
                .args
                .split_once('=')
                .unwrap_or((&instruction.args, ""));
            global_args.insert(name.to_owned(), value.to_owned());
        } else {
            bail!("line {}: only ARG may precede FROM", instruction.line);
        }
    }
    Ok(Dockerfile {
        global_args,
        stages,
    })
}

/// Splits shell text into words (quotes removed, backslash escapes applied) and operators.
fn shell_tokens(text: &str) -> anyhow::Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    let flush = |word: &mut String, in_word: &mut bool, tokens: &mut Vec<Token>| {
        if *in_word {
            tokens.push(Token::Word(std::mem::take(word)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => bail!("unterminated single quote in {text:?}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => bail!("unterminated double quote in {text:?}"),
                        },
                        Some(c) => word.push(c),
                        None => bail!("unterminated double quote in {text:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '&' | '|' | ';' | '\n' => {
                flush(&mut word, &mut in_word, &mut tokens);
                if matches!(c, '&' | '|') && chars.peek() == Some(&c) {
                    chars.next();
                } else if c == '&' {
                    bail!("background `&` in {text:?}");
                }
                tokens.push(Token::Op);
            }
            c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut tokens),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    flush(&mut word, &mut in_word, &mut tokens);
    Ok(tokens)
}

/// The simple commands of a shell script: words between operators, leading `VAR=value`
/// assignments dropped.
fn simple_commands(script: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut commands = Vec::new();
    let mut current = Vec::new();
    for token in shell_tokens(script)?.into_iter().chain([Token::Op]) {
        match token {
            Token::Word(word) => {
                let is_assignment = current.is_empty()
                    && word.split_once('=').is_some_and(|(name, _)| {
                        !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
                    });
                if !is_assignment {
                    current.push(word);
                }
            }
            Token::Op if !current.is_empty() => commands.push(std::mem::take(&mut current)),
            Token::Op => {}
        }
    }
    Ok(commands)
}

/// The program a simple command runs, looking through `exec`/`command`.
fn program_of(command: &[String]) -> Option<&str> {
    let mut words = command.iter().map(String::as_str);
    let mut first = words.next()?;
    while matches!(first, "exec" | "command") {
        first = words.next()?;
    }
    Some(first)
}

/// Expands `${NAME}` / `$NAME` from `vars` (unknown names expand to nothing, as Docker does).
fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, skip) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => break,
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
        } else if let Some(value) = vars.get(name) {
            out.push_str(value);
        }
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// Strips leading `--flag=value` options (`--mount`, `--chown`, `--from`, …) from instruction
/// arguments, returning them and the remainder.
fn split_flags(args: &str) -> (BTreeMap<String, String>, &str) {
    let mut flags = BTreeMap::new();
    let mut rest = args.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
        flags.insert(name.to_owned(), value.to_owned());
        rest = flag[end..].trim_start();
    }
    (flags, rest)
}

/// A JSON-array (exec form) argument list, or `None` for the shell form.
fn exec_form(args: &str) -> anyhow::Result<Option<Vec<String>>> {
    if !args.trim_start().starts_with('[') {
        return Ok(None);
    }
    let words: Vec<String> = serde_json::from_str(args).context("exec form is not a JSON array")?;
    Ok(Some(words))
}

fn parse_copy(args: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<Copy> {
    let (flags, rest) = split_flags(args);
    let mut words: Vec<String> = match exec_form(rest)? {
        Some(words) => words,
        None => rest.split_whitespace().map(str::to_owned).collect(),
    };
    ensure!(words.len() >= 2, "COPY needs a source and a destination");
    let dest = expand(&words.pop().unwrap_or_default(), vars);
    Ok(Copy {
        from: flags.get("from").cloned(),
        sources: words.iter().map(|w| expand(w, vars)).collect(),
        dest,
    })
}

/// `ENV` pairs (`K=V K2=V2`, quotes allowed), values expanded with `vars` so far.
fn parse_env(args: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for token in shell_tokens(args)? {
        let Token::Word(word) = token else {
            bail!("operator in ENV {args:?}");
        };
        let (name, value) = word
            .split_once('=')
            .with_context(|| format!("ENV {word:?} is not NAME=value"))?;
        pairs.push((name.to_owned(), expand(value, vars)));
    }
    Ok(pairs)
}

impl Dockerfile {
    fn load() -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(repo().join("Dockerfile")).context("reading Dockerfile")?;
        parse_dockerfile(&text)
    }

    fn stage(&self, name: &str) -> anyhow::Result<&Stage> {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .with_context(|| format!("no stage named {name}"))
    }

    /// The stages `stage` builds on, root first, ending with `stage` itself.
    fn chain<'a>(&'a self, stage: &'a Stage) -> Vec<&'a Stage> {
        let mut chain = vec![stage];
        let mut current = stage;
        while let Some(parent) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(current.base.as_str()))
        {
            chain.push(parent);
            current = parent;
        }
        chain.reverse();
        chain
    }
}

impl Stage {
    /// Walks the instructions keeping ARG/ENV values, calling `visit` with each instruction and
    /// the variables in force (ARGs and ENVs) and the ENV values alone.
    fn walk(
        &self,
        global_args: &BTreeMap<String, String>,
        vars: &mut BTreeMap<String, String>,
        env: &mut BTreeMap<String, String>,
        mut visit: impl FnMut(
            &Instruction,
            &BTreeMap<String, String>,
            &BTreeMap<String, String>,
        ) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for instruction in &self.instructions {
            match instruction.keyword.as_str() {
                "ARG" => {
                    let (name, default) = match instruction.args.split_once('=') {
                        Some((name, value)) => (name, Some(value.to_owned())),
                        None => (
                            instruction.args.as_str(),
                            global_args.get(&instruction.args).cloned(),
                        ),
                    };
                    vars.insert(name.to_owned(), default.unwrap_or_default());
                }
                "ENV" => {
                    for (name, value) in parse_env(&instruction.args, vars)? {
                        vars.insert(name.clone(), value.clone());
                        env.insert(name, value);
                    }
                }
                _ => {}
            }
            visit(instruction, vars, env)
                .with_context(|| format!("Dockerfile line {}", instruction.line))?;
        }
        Ok(())
    }
}

/// `.dockerignore` patterns (no `!` exceptions: the matcher below does not implement them).
fn dockerignore() -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(repo().join(".dockerignore")).context("reading .dockerignore")?;
    let patterns: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_owned())
        .collect();
    ensure!(
        patterns.iter().all(|p| !p.starts_with('!')),
        "teach this test `!` exceptions before using them in .dockerignore"
    );
    Ok(patterns)
}

/// Whether `path` (context-relative, `/`-separated) or one of its parents matches a pattern.
fn is_ignored(path: &str, patterns: &[String]) -> bool {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (1..=parts.len()).any(|n| {
        patterns.iter().any(|pattern| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            glob_parts(&pattern, &parts[..n])
        })
    })
}

fn glob_parts(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            glob_parts(&pattern[1..], path) || (!path.is_empty() && glob_parts(pattern, &path[1..]))
        }
        (Some(p), Some(s)) => {
            glob_component(p.as_bytes(), s.as_bytes()) && glob_parts(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

fn glob_component(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_component(&pattern[1..], text)
                || (!text.is_empty() && glob_component(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_component(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) => p == t && glob_component(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Every file under `path` (or `path` itself), context-relative.
fn files_under(root: &Path, rel: &str) -> anyhow::Result<Vec<String>> {
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
                if instruction.keyword == "ADD" {
                    bail!("use COPY (ADD fetches URLs and unpacks archives implicitly)");
                }
                if instruction.keyword != "COPY" {
                    return Ok(());
                }
                let copy = parse_copy(&instruction.args, vars)?;
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
fn dockerignore_matcher_follows_docker_rules() {
    let patterns: Vec<String> = ["target", "**/__pycache__", "**/*.pyc", "fuzz"]
        .map(String::from)
        .into();
    assert!(is_ignored("target/release/sluice", &patterns));
    assert!(is_ignored(
        "worker/sluice_worker/__pycache__/x.py",
        &patterns
    ));
    assert!(is_ignored("worker/a.pyc", &patterns));
    assert!(is_ignored("fuzz", &patterns));
    assert!(!is_ignored("src/target.rs", &patterns));
    assert!(!is_ignored("worker/worker.py", &patterns));
    assert!(!is_ignored("examples/hello/function_app.py", &patterns));
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
            let scripts: Vec<Vec<String>> = match instruction.keyword.as_str() {
                "RUN" => {
                    let (_, rest) = split_flags(&instruction.args);
                    match exec_form(rest)? {
                        Some(words) => vec![words],
                        None => simple_commands(rest)?,
                    }
                }
                "HEALTHCHECK" => {
                    let (_, rest) = split_flags(&instruction.args);
                    let rest = rest.strip_prefix("CMD").context("HEALTHCHECK without CMD")?.trim();
                    vec![exec_form(rest)?.context("use the exec form for HEALTHCHECK")?]
                }
                "ENTRYPOINT" | "CMD" => match exec_form(&instruction.args)? {
                    Some(words) if words.is_empty() => vec![],
                    Some(words) => entrypoint_commands(&words)?,
                    None => bail!("use the exec form for {}", instruction.keyword),
                },
                "COPY" => {
                    let copy = parse_copy(&instruction.args, vars)?;
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

/// The commands an exec-form ENTRYPOINT runs: the program, and what a `tini --` or `sh -c`
/// wrapper runs in turn.
fn entrypoint_commands(words: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let mut commands = vec![words.to_vec()];
    let mut rest = words;
    if rest.first().map(String::as_str) == Some("tini") {
        rest = rest.get(2..).context("tini without `--` and a program")?;
        commands.push(rest.to_vec());
    }
    if let [sh, flag, script, ..] = rest
        && sh == "sh"
        && flag == "-c"
    {
        commands.extend(simple_commands(script)?);
    }
    Ok(commands)
}

/// The final stage's HEALTHCHECK argv and ENTRYPOINT argv.
fn healthcheck_and_entrypoint(
    dockerfile: &Dockerfile,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let runtime = dockerfile.stage("runtime")?;
    let find = |keyword: &str| {
        runtime
            .instructions
            .iter()
            .find(|i| i.keyword == keyword)
            .with_context(|| format!("runtime stage has no {keyword}"))
    };
    let (_, health) = split_flags(&find("HEALTHCHECK")?.args);
    let health = exec_form(
        health
            .strip_prefix("CMD")
            .context("HEALTHCHECK CMD")?
            .trim(),
    )?
    .context("HEALTHCHECK exec form")?;
    let entrypoint = exec_form(&find("ENTRYPOINT")?.args)?.context("ENTRYPOINT exec form")?;
    Ok((health, entrypoint))
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
                match instruction.keyword.as_str() {
                    "USER" => user = Some(expand(&instruction.args, vars)),
                    "EXPOSE" => {
                        exposed.extend(instruction.args.split_whitespace().map(|p| expand(p, vars)))
                    }
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

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("sluice-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// A container path (`/opt/sluice/cache`) inside this stand-in root filesystem.
    fn map(&self, container_path: &str) -> PathBuf {
        self.0.join(container_path.trim_start_matches('/'))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a build-context source to a destination as COPY does: a directory's contents, or a
/// file into a directory destination (ending in `/`) or to a file path.
fn replay_copy(
    source: &str,
    dest: &Path,
    dest_is_dir: bool,
    patterns: &[String],
) -> anyhow::Result<()> {
    let root = repo();
    if root.join(source).is_file() {
        let target = if dest_is_dir {
            dest.join(Path::new(source).file_name().context("file name")?)
        } else {
            dest.to_path_buf()
        };
        std::fs::create_dir_all(target.parent().context("parent")?)?;
        std::fs::copy(root.join(source), target)?;
        return Ok(());
    }
    for file in files_under(&root, source)? {
        if is_ignored(&file, patterns) {
            continue;
        }
        let relative = Path::new(&file).strip_prefix(source.trim_end_matches('/'))?;
        let target = dest.join(relative);
        std::fs::create_dir_all(target.parent().context("parent")?)?;
        std::fs::copy(root.join(&file), target)?;
    }
    Ok(())
}

/// Paths (with size and mtime) of every file under `dir`, `__pycache__` left out: Python
/// writes those where it can and skips them silently on a read-only filesystem.
fn snapshot(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, (u64, SystemTime)>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if entry.file_name() != "__pycache__" {
                    stack.push(entry.path());
                }
            } else {
                out.insert(entry.path(), (meta.len(), meta.modified()?));
            }
        }
    }
    Ok(out)
}

/// Runs a command to completion; its output is returned for the failure message.
fn run(command: &mut Command) -> anyhow::Result<(ExitStatus, String)> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status, text))
}

/// The public and admin addresses from Sluice's `--ready-file`, once it names both.
fn ready_addrs(path: &Path) -> anyhow::Result<Option<(SocketAddr, SocketAddr)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading the ready file"),
    };
    let state: serde_json::Value = serde_json::from_slice(&bytes).context("the ready file")?;
    let addr = |key: &str| state[key].as_str().and_then(|a| a.parse().ok());
    Ok(addr("listen").zip(addr("admin")))
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn image_steps_prebuild_the_worker_env_and_serve_without_network() -> anyhow::Result<()> {
    let dockerfile = Dockerfile::load()?;
    let patterns = dockerignore()?;
    let rootfs = TempDir::new("image")?;
    let sluice = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let map_word = |word: &str| -> String {
        if word.starts_with('/') {
            rootfs.map(word).display().to_string()
        } else {
            word.to_owned()
        }
    };

    // Replay the runtime and example stages: COPYs from the context, `sluice check` steps.
    let mut env = BTreeMap::new();
    let mut workdir = "/".to_owned();
    let mut checks = 0;
    for stage in dockerfile.chain(dockerfile.stage("example")?) {
        stage.walk(
            &dockerfile.global_args,
            &mut BTreeMap::new(),
            &mut env,
            |instruction, vars, image| {
                match instruction.keyword.as_str() {
                    "WORKDIR" => workdir = expand(&instruction.args, vars),
                    "COPY" => {
                        let copy = parse_copy(&instruction.args, vars)?;
                        if copy.from.is_none() {
                            for source in &copy.sources {
                                replay_copy(
                                    source,
                                    &rootfs.map(&copy.dest),
                                    copy.dest.ends_with('/'),
                                    &patterns,
                                )?;
                            }
                        }
                    }
                    "RUN" => {
                        let (_, rest) = split_flags(&instruction.args);
                        for command in simple_commands(rest)? {
                            // Only Sluice's own steps are replayed (apt-get, useradd, chmod are not).
                            if command.first().map(String::as_str) != Some("sluice") {
                                continue;
                            }
                            std::fs::create_dir_all(rootfs.map(&workdir))?;
                            let (status, output) = run(Command::new(&sluice)
                                .args(command[1..].iter().map(|w| map_word(&expand(w, vars))))
                                .envs(image_env(image, &map_word))
                                .env_remove("SLUICE_PYTHON")
                                .env_remove("PIP_NO_CACHE_DIR")
                                .current_dir(rootfs.map(&workdir)))?;
                            ensure!(
                                status.success(),
                                "`{}` failed ({status}):\n{output}",
                                command.join(" ")
                            );
                            ensure!(
                                output.contains("\nOK"),
                                "`{}` did not report OK:\n{output}",
                                command.join(" ")
                            );
                            checks += 1;
                        }
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
    }
    ensure!(
        checks == 2,
        "expected the worker pre-build and the app install steps, found {checks}"
    );
    let cache = rootfs.map(env.get("SLUICE_CACHE_DIR").context("SLUICE_CACHE_DIR")?);
    let built: Vec<_> = std::fs::read_dir(&cache)?
        .filter_map(Result::ok)
        .filter(|e| e.path().join(".complete").is_file())
        .collect();
    ensure!(
        built.len() == 1,
        "one finished worker environment in the image's cache, found {}",
        built.len()
    );
    let app = rootfs.map(
        env.get("AzureWebJobsScriptRoot")
            .context("AzureWebJobsScriptRoot")?,
    );
    ensure!(
        app.join(".python_packages/lib/site-packages").is_dir(),
        "the app's requirements were installed at build time"
    );

    // The health check fails when nothing answers (it can fail at all).
    let (health, entrypoint) = healthcheck_and_entrypoint(&dockerfile)?;
    let unused_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let (status, _) = run(Command::new(&health[0])
        .args(&health[1..])
        .env("SLUICE_ADMIN_PORT", unused_port.to_string()))?;
    ensure!(
        !status.success(),
        "the health check passed with nothing listening"
    );

    // Run the entrypoint (tini left out) as a container would, with pip unable to reach any
    // index; extra arguments as after `docker run IMAGE`.
    let before = (snapshot(&cache)?, snapshot(&app)?);
    let bin_dir = sluice.parent().context("binary directory")?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ready_dir = TempDir::new("ready")?;
    let ready_file = ready_dir.map("ready.json");
    let mut child = ChildGuard(
        Command::new(&entrypoint[2])
            .args(&entrypoint[3..])
            .args(["--bind", "127.0.0.1", "--workers", "1"])
            .arg("--ready-file")
            .arg(&ready_file)
            .envs(image_env(&env, &map_word))
            .env_remove("SLUICE_PYTHON")
            .env_remove("PIP_NO_CACHE_DIR")
            .env("PATH", path)
            .env("SLUICE_PORT", "0")
            .env("SLUICE_ADMIN_PORT", "0")
            .env("PIP_NO_INDEX", "1")
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
            .env("NO_COLOR", "1")
            .current_dir(&app)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the entrypoint")?,
    );
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.0.stderr.take().context("stderr")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The addresses come from the ready file, never from log lines.
    let mut log = Vec::new();
    let started = Instant::now();
    let (public, admin) = loop {
        log.extend(lines.try_iter());
        if let Some(addrs) = ready_addrs(&ready_file)? {
            break addrs;
        }
        ensure!(
            child.0.try_wait()?.is_none(),
            "sluice exited:\n{}",
            log.join("\n")
        );
        ensure!(
            started.elapsed() < STARTUP_DEADLINE,
            "no addresses in the ready file:\n{}",
            log.join("\n")
        );
        std::thread::sleep(POLL_INTERVAL);
    };

    // Poll /readyz directly; once it answers 200 (a worker is ready, and nothing makes it
    // unready again before shutdown) the health check must pass too. Asking the health check
    // first and /readyz after would race the worker becoming ready in between.
    let mut ready = false;
    while started.elapsed() < STARTUP_DEADLINE {
        if http_get(admin, "/readyz")?.starts_with("HTTP/1.1 200") {
            let (status, output) = run(Command::new(&health[0])
                .args(&health[1..])
                .env("SLUICE_ADMIN_PORT", admin.port().to_string()))?;
            ensure!(
                status.success(),
                "/readyz answers 200 but the health check fails:\n{output}"
            );
            ready = true;
            break;
        }
        ensure!(
            child.0.try_wait()?.is_none(),
            "sluice exited:\n{}",
            log.join("\n")
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    log.extend(lines.try_iter());
    ensure!(ready, "the health check never passed:\n{}", log.join("\n"));
    let response = http_get(public, "/api/hello?name=Docker")?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("Hello, Docker!"),
        "{response}"
    );

    // SIGTERM goes to sluice itself (the script execs it): it drains and exits 0.
    let (status, output) = run(Command::new("kill").args(["-TERM", &child.0.id().to_string()]))?;
    ensure!(status.success(), "kill: {output}");
    let stopping = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait()? {
            break exit;
        }
        ensure!(
            stopping.elapsed() < EXIT_DEADLINE,
            "sluice did not exit after SIGTERM"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    log.extend(lines.try_iter());
    ensure!(
        exit.success(),
        "exit after SIGTERM: {exit}\n{}",
        log.join("\n")
    );
    ensure!(
        !log.iter()
            .any(|l| l.contains("installing") || l.contains("building worker environment")),
        "serve installed something:\n{}",
        log.join("\n")
    );

    // Nothing was written to the cache or the app: a read-only root filesystem works.
    let after = (snapshot(&cache)?, snapshot(&app)?);
    ensure!(
        before == after,
        "serve wrote into the image's cache or app directory:\nbefore {before:?}\nafter {after:?}"
    );
    Ok(())
}

/// The image's ENV as a process environment: absolute paths moved into the stand-in root.
/// Left out: `SLUICE_PYTHON` (the image's interpreter path; here Sluice finds Python 3.13 as it
/// does on a developer machine) and `PIP_NO_CACHE_DIR` (keeps image layers small; here pip's
/// cache keeps the test fast).
fn image_env(
    env: &BTreeMap<String, String>,
    map_word: &dyn Fn(&str) -> String,
) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "SLUICE_PYTHON" | "PIP_NO_CACHE_DIR"))
        .map(|(k, v)| (k.clone(), map_word(v)))
        .collect()
}
