//! The Dockerfile as these checks read it: instructions with their continuation lines
//! joined and comments dropped, grouped into stages, with ARG/ENV expansion; shell scripts
//! split into simple commands by `shlex`. No heredocs (refused).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};

/// One instruction, continuation lines joined.
#[derive(Debug, Clone)]
pub(crate) struct Instruction {
    pub(crate) line: usize,
    pub(crate) keyword: String,
    pub(crate) args: String,
}

/// A build stage: its base, optional name and instructions.
#[derive(Debug, Clone)]
pub(crate) struct Stage {
    pub(crate) base: String,
    pub(crate) name: Option<String>,
    pub(crate) instructions: Vec<Instruction>,
}

#[derive(Debug)]
pub(crate) struct Dockerfile {
    pub(crate) global_args: BTreeMap<String, String>,
    pub(crate) stages: Vec<Stage>,
}

/// A parsed COPY/ADD: flags, sources (build-context relative), destination.
#[derive(Debug)]
pub(crate) struct Copy {
    pub(crate) from: Option<String>,
    pub(crate) sources: Vec<String>,
    pub(crate) dest: String,
}

pub(crate) fn repo() -> PathBuf {
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

/// The simple commands of a shell script: its words (split as POSIX sh does, by `shlex`)
/// between the control operators `&&`, `||`, `;` and `|`, leading `VAR=value` assignments
/// dropped. Operators must stand apart from words, as this Dockerfile writes them; a word that
/// ends in one is refused rather than misread.
pub(crate) fn simple_commands(script: &str) -> anyhow::Result<Vec<Vec<String>>> {
    // A newline separates commands in sh, but is only whitespace to shlex.
    ensure!(!script.contains('\n'), "a multi-line script: {script:?}");
    let words = shlex::split(script).with_context(|| format!("unbalanced quotes in {script:?}"))?;
    let mut commands = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for word in words.into_iter().chain([";".to_owned()]) {
        if matches!(word.as_str(), "&&" | "||" | ";" | "|") {
            if !current.is_empty() {
                commands.push(std::mem::take(&mut current));
            }
            continue;
        }
        ensure!(
            word != "&" && !word.ends_with([';', '&', '|']),
            "write control operators apart from words (or avoid them): {word:?} in {script:?}"
        );
        let is_assignment = current.is_empty()
            && word.split_once('=').is_some_and(|(name, _)| {
                !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
            });
        if !is_assignment {
            current.push(word);
        }
    }
    Ok(commands)
}

/// The program a simple command runs, looking through `exec`/`command`.
pub(crate) fn program_of(command: &[String]) -> Option<&str> {
    let mut words = command.iter().map(String::as_str);
    let mut first = words.next()?;
    while matches!(first, "exec" | "command") {
        first = words.next()?;
    }
    Some(first)
}

/// Expands `${NAME}` / `$NAME` from `vars` (unknown names expand to nothing, as Docker does).
pub(crate) fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
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
pub(crate) fn split_flags(args: &str) -> (BTreeMap<String, String>, &str) {
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
pub(crate) fn exec_form(args: &str) -> anyhow::Result<Option<Vec<String>>> {
    if !args.trim_start().starts_with('[') {
        return Ok(None);
    }
    let words: Vec<String> = serde_json::from_str(args).context("exec form is not a JSON array")?;
    Ok(Some(words))
}

pub(crate) fn parse_copy(args: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<Copy> {
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
pub(crate) fn parse_env(
    args: &str,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for word in shlex::split(args).with_context(|| format!("unbalanced quotes in ENV {args:?}"))? {
        let (name, value) = word
            .split_once('=')
            .with_context(|| format!("ENV {word:?} is not NAME=value"))?;
        pairs.push((name.to_owned(), expand(value, vars)));
    }
    Ok(pairs)
}

impl Dockerfile {
    pub(crate) fn load() -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(repo().join("Dockerfile")).context("reading Dockerfile")?;
        parse_dockerfile(&text)
    }

    pub(crate) fn stage(&self, name: &str) -> anyhow::Result<&Stage> {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .with_context(|| format!("no stage named {name}"))
    }

    /// The stages `stage` builds on, root first, ending with `stage` itself.
    pub(crate) fn chain<'a>(&'a self, stage: &'a Stage) -> Vec<&'a Stage> {
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
    pub(crate) fn walk(
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

/// The commands an exec-form ENTRYPOINT runs: the program, and what a `tini --` or `sh -c`
/// wrapper runs in turn.
pub(crate) fn entrypoint_commands(words: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
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
pub(crate) fn healthcheck_and_entrypoint(
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
