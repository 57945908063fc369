//! Agents: turn an agent reference (`codex`, `claude:opus`, `local:qwen2.5-coder:32b`,
//! `codex:review`, a custom agent's name) into an [`Invocation`]: the exact argv, the names
//! of the environment variables the container gets, fixed non-secret environment values,
//! read-only config mounts, how the prompt is handed over, and network settings.
//!
//! What this module is for: knowing each agent CLI's flags. What it is not for: containers
//! (the runtime builds them from an [`Invocation`]), prompts (the prompt module renders
//! them), secrets (only variable *names* are listed here; the runtime reads values from the
//! invoking environment).
//!
//! Invariants:
//! - The prompt never goes into the argv or into a shell string. It is written to
//!   [`PROMPT_FILE`] (mounted read-only) and, for [`PromptHandoff::Stdin`], also written to the
//!   agent's standard input; a prompt of any size works.
//! - Each argv element is one argument: placeholders in custom argv are replaced inside the
//!   element (see [`placeholder`]), never split or passed to a shell.
//! - An agent gets only its own provider's key names; presets never list another provider's.
//! - Config directories of presets are mounted read-only.
//!
//! Resolution: a pool that is a preset builds the preset ([`presets`]); an entry of
//! `spec.agents` with the same name overrides parts of it (see [`invocation`]). Any other pool
//! must be defined in `spec.agents` with a `command`.

pub mod findings;
pub mod output;
pub mod placeholder;
pub mod presets;
pub mod pricing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::model::{AgentDef, AgentOutput, PromptHandoff};
use crate::spec::values::{AgentRef, PRESET_POOLS};

/// Where the prompt file is inside an agent container.
pub const PROMPT_FILE: &str = "/workspace/.meta/prompt.md";
/// The workspace's meta directory inside an agent container.
pub const META_DIR: &str = "/workspace/.meta";
/// The clone inside an agent container.
pub const WORKDIR: &str = "/workspace/repo";
/// The home directory of every agent container (`HOME` is set to it): the unit's own agent
/// home, writable, seeded with the [`Invocation::home_files`].
pub const AGENT_HOME: &str = "/home/agent";
/// Network of agents that do not name one: they need their provider's API.
pub const DEFAULT_NETWORK: &str = "bridge";

/// A host directory (or file) mounted into an agent container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMount {
    /// Host path; relative to the invoking user's `$HOME` when it starts with `~`.
    pub host: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only (always true for the presets' config directories).
    pub read_only: bool,
}

impl ConfigMount {
    /// The host path with a leading `~` replaced by `home`.
    pub fn host_path(&self, home: &Path) -> PathBuf {
        match self.host.strip_prefix("~") {
            Ok(rest) => home.join(rest),
            Err(_) => self.host.clone(),
        }
    }
}

/// A file of the invoking user's home that an agent's CLI needs (a credential, a setting),
/// copied into the unit's agent home before the agent's first container: the user's own
/// directories are never mounted writable and never written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeFile {
    /// Where it is, relative to the invoking user's home (`.codex/auth.json`).
    pub from: &'static str,
    /// Where it goes, relative to [`AGENT_HOME`] (the same path).
    pub to: &'static str,
    /// Whether it is a login (credentials the CLI can use instead of a key).
    pub login: bool,
}

/// A program an agent needs inside its image, and what for: checked before the first unit of
/// that image starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// A name looked up in the image's `PATH`, or an absolute path.
    pub program: String,
    /// What it is for, in words (`Claude Code's Bash tool runs every command with it`).
    pub why: String,
}

impl Need {
    /// `program`, needed for `why`.
    pub fn new(program: &str, why: &str) -> Self {
        Self {
            program: program.to_owned(),
            why: why.to_owned(),
        }
    }
}

/// Everything needed to start one agent: what the runtime turns into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The exact argv; the first element is the program. Never holds the prompt.
    pub argv: Vec<String>,
    /// Names of environment variables passed through from the invoking environment (the
    /// agent's own provider's keys; values are never stored here).
    pub env_names: Vec<String>,
    /// Names of variables that are not secrets, passed through from the invoking environment
    /// when set (a base URL).
    pub pass_env: Vec<String>,
    /// Environment values that are not secrets (`HOME`, `CODEX_HOME`, the Ollama address).
    pub fixed_env: Vec<(String, String)>,
    /// Files of the user's home copied into the unit's agent home.
    pub home_files: Vec<HomeFile>,
    /// Host paths mounted into the container (`agents.X.mounts`).
    pub config_mounts: Vec<ConfigMount>,
    /// How the prompt reaches the agent besides [`PROMPT_FILE`], which always exists.
    pub prompt: PromptHandoff,
    /// Image of the agent container, when the agent names one (else the job's image).
    pub image: Option<String>,
    /// Container network.
    pub network: String,
    /// Extra `/etc/hosts` entries, `host:ip` (Docker's `host-gateway` allowed).
    pub extra_hosts: Vec<String>,
    /// Working directory of the agent process (the clone).
    pub workdir: String,
    /// The programs it needs in its image (the CLI itself first).
    pub needs: Vec<Need>,
    /// The agent pool: the reference's text before `:`.
    pub pool: String,
    /// The model the CLI is asked to use, if any (`None`: the CLI's own default). For
    /// `codex:review` and `coderabbit[:type]` this is not the text after `:`.
    pub model: Option<String>,
    /// What the CLI prints (its JSON events, or text).
    pub output: AgentOutput,
}

/// The paths and names placeholders and presets refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgvContext {
    /// The prompt file inside the container (`/workspace/.meta/prompt.md`).
    pub prompt_file: String,
    /// The meta directory inside the container (`/workspace/.meta`).
    pub meta_dir: String,
    /// The clone inside the container (`/workspace/repo`).
    pub workdir: String,
    /// The base branch name of the unit.
    pub base: String,
}

impl ArgvContext {
    /// The standard container paths with base branch `base`.
    pub fn new(base: &str) -> Self {
        Self {
            prompt_file: PROMPT_FILE.to_owned(),
            meta_dir: META_DIR.to_owned(),
            workdir: WORKDIR.to_owned(),
            base: base.to_owned(),
        }
    }
}

/// Resolves `agent` against the presets and the spec's `agents` (`custom`).
///
/// - A preset pool without an entry in `custom` gives the preset.
/// - A preset pool with an entry overrides the preset: `image`, `network` and `model` (the
///   default when the reference names none) replace the preset's; `env` names and `mounts` are
///   added; `command`, when given, replaces the argv (with placeholders) and then `prompt`
///   may change the hand-off. `prompt` without `command` is an error, since the preset's
///   argv decides how it reads the prompt.
/// - Any other pool must be in `custom` with a `command`: its argv, env names, mounts, prompt
///   hand-off (default `file`), image, network and model come from the entry.
///
/// Errors name the agent and say what to change.
pub fn invocation(
    agent: &AgentRef,
    custom: &BTreeMap<String, AgentDef>,
    ctx: &ArgvContext,
) -> Result<Invocation, String> {
    let pool = agent.pool();
    let def = custom.get(pool);
    match (presets::preset(pool), def) {
        (Some(preset), def) => preset_invocation(agent, preset, def, ctx),
        (None, Some(def)) => custom_invocation(agent, def, ctx),
        (None, None) => {
            let mut known: Vec<&str> = PRESET_POOLS.to_vec();
            known.extend(custom.keys().map(String::as_str));
            Err(format!(
                "unknown agent `{pool}`: use one of {} or define `agents.{pool}` with a `command`",
                known.join(", ")
            ))
        }
    }
}

fn preset_invocation(
    agent: &AgentRef,
    preset: presets::Preset,
    def: Option<&AgentDef>,
    ctx: &ArgvContext,
) -> Result<Invocation, String> {
    let pool = agent.pool();
    let default_model = def
        .and_then(|d| d.model.as_deref())
        .or(preset.default_model);
    let (argv, model, prompt, needs, output) = match def.and_then(|d| d.command.as_ref()) {
        Some(command) => {
            let model = agent.model().or(default_model);
            let argv = substitute_all(command, model, ctx, pool)?;
            let prompt = def.and_then(|d| d.prompt).unwrap_or(preset.prompt);
            let needs = command_needs(&argv);
            // An argv of the user's own prints what the user says it prints.
            let output = def.and_then(|d| d.output).unwrap_or(AgentOutput::Text);
            (argv, model.map(str::to_owned), prompt, needs, output)
        }
        None => {
            if def.is_some_and(|d| d.prompt.is_some()) {
                return Err(format!(
                    "agents.{pool}: `prompt` only applies together with `command`; the {pool} preset hands the prompt over by {}",
                    handoff_name(preset.prompt)
                ));
            }
            if def.is_some_and(|d| d.output.is_some()) {
                return Err(format!(
                    "agents.{pool}: `output` only applies together with `command`; the {pool} preset's own argv decides what it prints"
                ));
            }
            let built = presets::argv(pool, agent.model(), default_model, ctx)
                .map_err(|e| format!("agent `{agent}`: {e}"))?;
            (
                built.argv,
                built.model,
                built.prompt,
                built.needs,
                built.output,
            )
        }
    };
    let mut env_names: Vec<String> = preset.env_names.iter().map(|s| (*s).to_owned()).collect();
    let mut config_mounts = Vec::new();
    let mut image = None;
    let mut network = DEFAULT_NETWORK.to_owned();
    if let Some(def) = def {
        add_env_names(&mut env_names, def);
        config_mounts.extend(def.mounts.iter().map(mount));
        image.clone_from(&def.image);
        if let Some(net) = &def.network {
            network.clone_from(net);
        }
    }
    Ok(Invocation {
        argv,
        env_names,
        pass_env: preset.pass_env.iter().map(|s| (*s).to_owned()).collect(),
        fixed_env: preset.fixed_env,
        home_files: preset.home_files,
        config_mounts,
        prompt,
        image,
        network,
        extra_hosts: preset.extra_hosts,
        workdir: ctx.workdir.clone(),
        needs,
        pool: pool.to_owned(),
        model,
        output,
    })
}

impl Invocation {
    /// The programs it needs in its image, as [`crate::runtime::Runtime::missing_programs`]
    /// takes them.
    pub fn programs(&self) -> Vec<String> {
        self.needs.iter().map(|n| n.program.clone()).collect()
    }

    /// The invocation with the CLI's own caps of what the unit has left (`usd`, `turns`),
    /// when it has them (claude `--max-budget-usd`, `--max-turns`): a second line behind
    /// dispatch's meter, never the only one.
    pub fn capped(mut self, usd: Option<f64>, turns: Option<u64>) -> Invocation {
        if (self.output, self.argv.first().map(String::as_str))
            != (AgentOutput::ClaudeStreamJson, Some("claude"))
        {
            return self;
        }
        if let Some(usd) = usd {
            self.argv
                .extend(["--max-budget-usd".to_owned(), format!("{usd:.4}")]);
        }
        if let Some(turns) = turns {
            self.argv
                .extend(["--max-turns".to_owned(), turns.to_string()]);
        }
        self
    }

    /// The invocation that continues the CLI's session `session` of an earlier run (a fix
    /// attempt, an answer), with the new message on stdin: `codex exec ... resume ID -` and
    /// `claude ... --resume ID`. `None` when this agent cannot continue a session (gemini,
    /// reviews, custom commands) or the id is not one a CLI gives (it comes from the agent's
    /// own output): the caller starts afresh.
    pub fn continued(&self, session: &str) -> Option<Invocation> {
        let plausible = !session.is_empty()
            && session.len() <= 200
            && !session.starts_with('-')
            && session
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if !plausible || self.prompt != PromptHandoff::Stdin {
            return None;
        }
        let argv = match (self.output, self.argv.first().map(String::as_str)) {
            (AgentOutput::CodexJson, Some("codex"))
                if self.argv.get(1).map(String::as_str) == Some("exec")
                    && self.argv.last().map(String::as_str) == Some("-") =>
            {
                presets::codex_resume_argv(&self.argv, session)
            }
            (AgentOutput::ClaudeStreamJson, Some("claude")) => {
                let mut argv = self.argv.clone();
                argv.extend(["--resume".to_owned(), session.to_owned()]);
                argv
            }
            _ => return None,
        };
        Some(Invocation {
            argv,
            ..self.clone()
        })
    }

    /// Its needs whose program is among `missing` (what the image lacks, and what for).
    pub fn lacking(&self, missing: &[String]) -> Vec<Need> {
        self.needs
            .iter()
            .filter(|need| missing.contains(&need.program))
            .cloned()
            .collect()
    }
}

/// What a custom argv needs: its program.
fn command_needs(argv: &[String]) -> Vec<Need> {
    argv.first()
        .map(|program| vec![Need::new(program, "the agent's command")])
        .unwrap_or_default()
}

fn custom_invocation(
    agent: &AgentRef,
    def: &AgentDef,
    ctx: &ArgvContext,
) -> Result<Invocation, String> {
    let pool = agent.pool();
    let command = def.command.as_ref().filter(|c| !c.is_empty()).ok_or_else(|| {
        format!(
            "custom agent `{pool}` has no `command`: give its argv, e.g. `command: [my-agent, --prompt-file, \"{{{{ prompt_file }}}}\"]`"
        )
    })?;
    let model = agent.model().or(def.model.as_deref());
    let argv = substitute_all(command, model, ctx, pool)?;
    let needs = command_needs(&argv);
    let mut env_names = Vec::new();
    add_env_names(&mut env_names, def);
    Ok(Invocation {
        argv,
        env_names,
        pass_env: Vec::new(),
        fixed_env: vec![home_env()],
        home_files: Vec::new(),
        config_mounts: def.mounts.iter().map(mount).collect(),
        prompt: def.prompt.unwrap_or(PromptHandoff::File),
        image: def.image.clone(),
        network: def
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.to_owned()),
        extra_hosts: Vec::new(),
        workdir: ctx.workdir.clone(),
        needs,
        pool: pool.to_owned(),
        model: model.map(str::to_owned),
        output: def.output.unwrap_or(AgentOutput::Text),
    })
}

fn substitute_all(
    command: &[String],
    model: Option<&str>,
    ctx: &ArgvContext,
    agent: &str,
) -> Result<Vec<String>, String> {
    let values = placeholder::Values {
        prompt_file: &ctx.prompt_file,
        model,
        workdir: &ctx.workdir,
        meta_dir: &ctx.meta_dir,
        base: &ctx.base,
    };
    command
        .iter()
        .map(|element| placeholder::substitute(element, &values, agent))
        .collect()
}

/// `HOME` of every agent container: the unit's agent home.
pub fn home_env() -> (String, String) {
    ("HOME".to_owned(), AGENT_HOME.to_owned())
}

fn add_env_names(names: &mut Vec<String>, def: &AgentDef) {
    for name in &def.env {
        if !names.iter().any(|n| n == name.as_str()) {
            names.push(name.as_str().to_owned());
        }
    }
}

fn mount(m: &crate::spec::model::Mount) -> ConfigMount {
    ConfigMount {
        host: PathBuf::from(&m.source),
        target: m.target.clone(),
        read_only: m.read_only,
    }
}

/// `stdin` or `file`, as the spec writes it.
pub fn handoff_name(handoff: PromptHandoff) -> &'static str {
    match handoff {
        PromptHandoff::Stdin => "stdin",
        PromptHandoff::File => "file",
    }
}

/// The references `dispatch agents` lists: every preset, plain and with an example model.
pub const PRESET_EXAMPLES: &[&str] = &[
    "codex",
    "codex:gpt-5",
    "codex:review",
    "claude",
    "claude:opus",
    "gemini",
    "local",
    "local:qwen2.5-coder:32b",
    "coderabbit",
    "coderabbit:committed",
];

/// Every preset of [`PRESET_EXAMPLES`] with its invocation for base branch `base`.
pub fn presets_table(base: &str) -> Vec<(String, Invocation)> {
    let ctx = ArgvContext::new(base);
    let none = BTreeMap::new();
    PRESET_EXAMPLES
        .iter()
        .map(|text| {
            let agent = AgentRef::parse(text).expect("preset examples are valid agent refs");
            let inv = invocation(&agent, &none, &ctx).expect("every preset example resolves");
            ((*text).to_owned(), inv)
        })
        .collect()
}

#[cfg(test)]
mod tests;
