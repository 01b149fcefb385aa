//! The Dockerfile as these checks read it: parsed by `parse-dockerfile` into stages of
//! typed instructions, with ARG/ENV expansion; shell scripts split into simple commands by
//! `shlex`. No heredocs (refused).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use parse_dockerfile as parser;

/// One instruction: where it is, its keyword (for messages) and what these checks read.
#[derive(Debug, Clone)]
pub(crate) struct Instruction {
    pub(crate) line: usize,
    pub(crate) keyword: String,
    pub(crate) step: Step,
}

/// The instructions these checks look into; values not yet expanded.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// `NAME` or `NAME=default`.
    Arg(String),
    /// `NAME=value` pairs, quotes allowed.
    Env(String),
    Run(Form),
    Copy(Copy),
    Add,
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    /// `None` for `HEALTHCHECK NONE`.
    Healthcheck(Option<Form>),
    Entrypoint(Form),
    Cmd(Form),
    Other,
}

/// The exec form (a JSON array) or the shell form of RUN, CMD, ENTRYPOINT, HEALTHCHECK.
#[derive(Debug, Clone)]
pub(crate) enum Form {
    Exec(Vec<String>),
    /// The script, continuation lines joined and comment lines dropped.
    Shell(String),
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

/// A COPY: the `--from` stage if any, sources (build-context relative), destination.
#[derive(Debug, Clone)]
pub(crate) struct Copy {
    pub(crate) from: Option<String>,
    pub(crate) sources: Vec<String>,
    pub(crate) dest: String,
}

impl Copy {
    /// Sources and destination with the variables in force expanded.
    pub(crate) fn expanded(&self, vars: &BTreeMap<String, String>) -> Copy {
        Copy {
            from: self.from.clone(),
            sources: self.sources.iter().map(|s| expand(s, vars)).collect(),
            dest: expand(&self.dest, vars),
        }
    }
}

impl Form {
    /// The commands it runs: the exec form's words, or the shell script's simple commands.
    pub(crate) fn commands(&self) -> anyhow::Result<Vec<Vec<String>>> {
        match self {
            Form::Exec(words) => Ok(vec![words.clone()]),
            Form::Shell(script) => simple_commands(script),
        }
    }
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_dockerfile(text: &str) -> anyhow::Result<Dockerfile> {
    let parsed = parser::parse(text).map_err(|e| anyhow::anyhow!("Dockerfile: {e}"))?;
    let mut global_args = BTreeMap::new();
    for arg in parsed.global_args() {
        let (name, value) = arg
            .arguments
            .value
            .split_once('=')
            .unwrap_or((&arg.arguments.value, ""));
        global_args.insert(name.to_owned(), value.to_owned());
    }
    let mut stages = Vec::new();
    for stage in parsed.stages() {
        let instructions = stage
            .instructions
            .iter()
            .map(|instruction| {
                let at = keyword_start(instruction);
                let line = text[..at].matches('\n').count() + 1;
                let keyword = text[at..]
                    .split(char::is_whitespace)
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                let step = step(instruction).with_context(|| format!("Dockerfile line {line}"))?;
                Ok(Instruction {
                    line,
                    keyword,
                    step,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        stages.push(Stage {
            base: expand(&stage.from.image.value, &global_args),
            name: stage
                .from
                .as_
                .as_ref()
                .map(|(_, name)| name.value.to_string()),
            instructions,
        });
    }
    Ok(Dockerfile {
        global_args,
        stages,
    })
}

fn step(instruction: &parser::Instruction<'_>) -> anyhow::Result<Step> {
    use parser::Instruction as I;
    let text = |s: &parser::UnescapedString<'_>| s.value.to_string();
    Ok(match instruction {
        I::Arg(arg) => Step::Arg(text(&arg.arguments)),
        I::Env(env) => Step::Env(text(&env.arguments)),
        I::Run(run) => {
            ensure!(run.here_docs.is_empty(), "heredocs are not supported here");
            Step::Run(form(&run.arguments)?)
        }
        I::Copy(copy) => {
            let from = copy
                .options
                .iter()
                .find(|flag| flag.name.value == "from")
                .and_then(|flag| flag.value.as_ref().map(text));
            let sources = copy
                .src
                .iter()
                .map(|source| match source {
                    parser::Source::Path(path) => Ok(text(path)),
                    _ => bail!("heredocs are not supported here"),
                })
                .collect::<anyhow::Result<_>>()?;
            Step::Copy(Copy {
                from,
                sources,
                dest: text(&copy.dest),
            })
        }
        I::Add(_) => Step::Add,
        I::Workdir(workdir) => Step::Workdir(text(&workdir.arguments)),
        I::User(user) => Step::User(text(&user.arguments)),
        I::Expose(expose) => Step::Expose(expose.arguments.iter().map(text).collect()),
        I::Healthcheck(health) => Step::Healthcheck(match &health.arguments {
            parser::HealthcheckArguments::Cmd { arguments, .. } => Some(form(arguments)?),
            _ => None,
        }),
        I::Entrypoint(entrypoint) => Step::Entrypoint(form(&entrypoint.arguments)?),
        I::Cmd(cmd) => Step::Cmd(form(&cmd.arguments)?),
        _ => Step::Other,
    })
}

/// Where an instruction's keyword starts in the text.
fn keyword_start(instruction: &parser::Instruction<'_>) -> usize {
    use parser::Instruction as I;
    let keyword = match instruction {
        I::Add(i) => &i.add,
        I::Arg(i) => &i.arg,
        I::Cmd(i) => &i.cmd,
        I::Copy(i) => &i.copy,
        I::Entrypoint(i) => &i.entrypoint,
        I::Env(i) => &i.env,
        I::Expose(i) => &i.expose,
        I::From(i) => &i.from,
        I::Healthcheck(i) => &i.healthcheck,
        I::Label(i) => &i.label,
        I::Maintainer(i) => &i.maintainer,
        I::Onbuild(i) => &i.onbuild,
        I::Run(i) => &i.run,
        I::Shell(i) => &i.shell,
        I::Stopsignal(i) => &i.stopsignal,
        I::User(i) => &i.user,
        I::Volume(i) => &i.volume,
        I::Workdir(i) => &i.workdir,
        // Non-exhaustive: an instruction kind newer than this list.
        _ => return 0,
    };
    keyword.span.start
}

fn form(command: &parser::Command<'_>) -> anyhow::Result<Form> {
    Ok(match command {
        parser::Command::Exec(words) => {
            Form::Exec(words.value.iter().map(|w| w.value.to_string()).collect())
        }
        parser::Command::Shell(script) => Form::Shell(joined(script.value)),
        // The enum is non-exhaustive.
        _ => bail!("a command form this parser does not know"),
    })
}

/// A shell-form script as the shell receives it: continuation lines joined, comment lines
/// inside it dropped (the parser keeps them, escapes preserved).
fn joined(raw: &str) -> String {
    let mut script = String::new();
    for line in raw.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let body = trimmed.strip_suffix('\\').map_or(trimmed, str::trim_end);
        if !script.is_empty() {
            script.push(' ');
        }
        script.push_str(body);
    }
    script
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
            match &instruction.step {
                Step::Arg(arg) => {
                    let (name, default) = match arg.split_once('=') {
                        Some((name, value)) => (name, Some(value.to_owned())),
                        None => (arg.as_str(), global_args.get(arg).cloned()),
                    };
                    vars.insert(name.to_owned(), default.unwrap_or_default());
                }
                Step::Env(pairs) => {
                    for (name, value) in parse_env(pairs, vars)? {
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

/// The final stage's HEALTHCHECK argv and ENTRYPOINT argv, both in the exec form.
pub(crate) fn healthcheck_and_entrypoint(
    dockerfile: &Dockerfile,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let runtime = dockerfile.stage("runtime")?;
    let mut health = None;
    let mut entrypoint = None;
    for instruction in &runtime.instructions {
        match &instruction.step {
            Step::Healthcheck(Some(Form::Exec(words))) => health = Some(words.clone()),
            Step::Healthcheck(_) => bail!("HEALTHCHECK: use CMD in the exec form"),
            Step::Entrypoint(Form::Exec(words)) => entrypoint = Some(words.clone()),
            Step::Entrypoint(_) => bail!("ENTRYPOINT: use the exec form"),
            _ => {}
        }
    }
    Ok((
        health.context("runtime stage has no HEALTHCHECK")?,
        entrypoint.context("runtime stage has no ENTRYPOINT")?,
    ))
}
