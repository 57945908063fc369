//! The built-in presets: for each agent CLI, its argv, the names of its provider's keys, its
//! fixed environment, the files of the user's home it needs and how it takes the prompt.
//!
//! Every flag here was checked against the CLI's own `--help` as captured in
//! `reference/agent-clis/` for the CLIs that run here (codex-cli 0.163.0, Claude Code 2.1.332;
//! gemini 0.61.0 from its captured help only), except coderabbit's, which has no captured help
//! (see [`coderabbit_argv`]). When a CLI is upgraded, capture its help again and compare before
//! changing anything here.
//!
//! Invariants every preset keeps (and the tests check):
//! - the prompt never appears in the argv and no argv element is a shell string: the prompt
//!   reaches the CLI on stdin, or the CLI ignores it (review presets);
//! - the env names are exactly the agent's own provider's keys;
//! - nothing of the user's home is mounted: the files a CLI needs are copied into the unit's
//!   agent home ([`Preset::home_files`]).

use super::{ArgvContext, HomeFile, Need};
use crate::spec::model::{AgentOutput, PromptHandoff};
use crate::spec::validate::CODERABBIT_TYPES;

/// Model of `local` when neither the reference nor `agents.local.model` names one.
pub const LOCAL_DEFAULT_MODEL: &str = "devstral-24b";

/// The model codex 0.163 asks for when neither dispatch nor its `config.toml` names one (seen
/// on the wire: its requests carry `"model": "gpt-6.1-sol"`).
pub const CODEX_DEFAULT_MODEL: &str = "gpt-6.1-sol";

/// Where the host's Ollama listens, as seen from inside an agent container.
pub const OLLAMA_URL: &str = "http://host.docker.internal:11434";

/// Ollama's OpenAI-compatible API at [`OLLAMA_URL`].
pub const OLLAMA_OPENAI_URL: &str = "http://host.docker.internal:11434/v1";

/// The extra host entry that makes `host.docker.internal` resolve to the host (Docker 20.10+).
pub const HOST_GATEWAY: &str = "host.docker.internal:host-gateway";

/// The instruction `claude` gets as an appended system prompt.
pub const CLAUDE_SYSTEM_NOTE: &str = "You are running unattended inside a container. Work only inside /workspace/repo. \
Do not push, do not open pull requests and do not change git remotes or branches: dispatch commits and publishes your changes.";

/// The fixed `-p` text of `gemini`. Gemini appends the `-p` text to what it reads on stdin,
/// so the real prompt comes first, on stdin, and this line closes it.
pub const GEMINI_STDIN_NOTE: &str = "Follow the instructions given on standard input.";

/// Everything of a preset except its argv.
#[derive(Clone, Debug)]
pub struct Preset {
    /// Names of the provider's keys passed through to the container.
    pub env_names: &'static [&'static str],
    /// Names of variables that are not secrets, passed through when set (a base URL).
    pub pass_env: &'static [&'static str],
    /// Environment values that are not secrets (`HOME` always).
    pub fixed_env: Vec<(String, String)>,
    /// The files of the user's home the CLI needs, copied into the unit's agent home.
    pub home_files: Vec<HomeFile>,
    /// How the preset takes the prompt when `agents.POOL.command` replaces its argv and
    /// names no `prompt` (the argv of a review mode may differ, see [`Built::prompt`]).
    pub prompt: PromptHandoff,
    /// Extra `/etc/hosts` entries.
    pub extra_hosts: Vec<String>,
    /// Model used when the reference and the spec name none.
    pub default_model: Option<&'static str>,
}

/// What codex needs of `~/.codex`: its login and its configuration (the provider, the base
/// URL). Its state (sessions, logs, the sqlite database) starts empty per unit.
const CODEX_HOME_FILES: &[HomeFile] = &[
    HomeFile {
        from: ".codex/auth.json",
        to: ".codex/auth.json",
        login: true,
    },
    HomeFile {
        from: ".codex/config.toml",
        to: ".codex/config.toml",
        login: false,
    },
];

/// `CODEX_HOME` inside the container: the `.codex` of the unit's agent home, where codex
/// writes on every start.
pub const CODEX_HOME: &str = "/home/agent/.codex";

/// The preset of `pool`, or `None` when `pool` is not a preset.
pub fn preset(pool: &str) -> Option<Preset> {
    let env = |extra: &[(&str, &str)]| {
        let mut env = vec![super::home_env()];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    };
    let preset = match pool {
        // codex exec reads CODEX_API_KEY (agent-events.md); OPENAI_API_KEY serves older CLIs
        // and codex's login flow.
        "codex" => Preset {
            env_names: &["CODEX_API_KEY", "OPENAI_API_KEY"],
            pass_env: &[],
            fixed_env: env(&[("CODEX_HOME", CODEX_HOME)]),
            home_files: CODEX_HOME_FILES.to_vec(),
            prompt: PromptHandoff::Stdin,
            extra_hosts: Vec::new(),
            default_model: None,
        },
        // IS_SANDBOX=1: Claude Code refuses --dangerously-skip-permissions as uid 0 without it
        // (the container is the sandbox); no traffic but the API.
        "claude" => Preset {
            env_names: &["ANTHROPIC_API_KEY"],
            pass_env: &["ANTHROPIC_BASE_URL"],
            fixed_env: env(&[
                ("IS_SANDBOX", "1"),
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ]),
            home_files: vec![
                HomeFile {
                    from: ".claude/.credentials.json",
                    to: ".claude/.credentials.json",
                    login: true,
                },
                HomeFile {
                    from: ".claude/settings.json",
                    to: ".claude/settings.json",
                    login: false,
                },
            ],
            prompt: PromptHandoff::Stdin,
            extra_hosts: Vec::new(),
            default_model: None,
        },
        "gemini" => Preset {
            env_names: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
            pass_env: &[],
            fixed_env: env(&[]),
            home_files: [
                (".gemini/settings.json", false),
                (".gemini/oauth_creds.json", true),
                (".gemini/google_accounts.json", false),
            ]
            .iter()
            .map(|&(path, login)| HomeFile {
                from: path,
                to: path,
                login,
            })
            .collect(),
            prompt: PromptHandoff::Stdin,
            extra_hosts: Vec::new(),
            default_model: None,
        },
        "local" => Preset {
            env_names: &["CODEX_API_KEY", "OPENAI_API_KEY"],
            pass_env: &[],
            fixed_env: env(&[
                ("CODEX_HOME", CODEX_HOME),
                ("OLLAMA_HOST", OLLAMA_URL),
                // Read by codex's OSS provider (codex-rs `create_oss_provider`).
                ("CODEX_OSS_BASE_URL", OLLAMA_OPENAI_URL),
            ]),
            home_files: CODEX_HOME_FILES.to_vec(),
            prompt: PromptHandoff::Stdin,
            extra_hosts: vec![HOST_GATEWAY.to_owned()],
            default_model: Some(LOCAL_DEFAULT_MODEL),
        },
        "coderabbit" => Preset {
            env_names: &["CODERABBIT_API_KEY"],
            pass_env: &[],
            fixed_env: env(&[]),
            home_files: Vec::new(),
            // coderabbit reviews the diff and takes no instructions: the prompt stays a file.
            prompt: PromptHandoff::File,
            extra_hosts: Vec::new(),
            default_model: None,
        },
        _ => return None,
    };
    Some(preset)
}

/// A preset's argv for one reference.
#[derive(Clone, Debug)]
pub struct Built {
    /// The exact argv.
    pub argv: Vec<String>,
    /// The model the CLI is asked to use.
    pub model: Option<String>,
    /// How this argv takes the prompt (review modes take none on stdin).
    pub prompt: PromptHandoff,
    /// The programs this argv needs in the image.
    pub needs: Vec<Need>,
    /// What this argv makes the CLI print.
    pub output: AgentOutput,
}

/// The argv of preset `pool` for the reference's `model`.
///
/// `model` is the text after `:` in the reference; `default_model` is `agents.POOL.model` or
/// the preset's own default. For `codex`, the model `review` selects review mode; for
/// `coderabbit`, the "model" is the review type.
pub fn argv(
    pool: &str,
    model: Option<&str>,
    default_model: Option<&str>,
    ctx: &ArgvContext,
) -> Result<Built, String> {
    let chosen = model.or(default_model);
    let cli = |program: &str| vec![Need::new(program, "the agent's CLI")];
    let stdin = |argv: Vec<String>, model: Option<&str>, output: AgentOutput| Built {
        needs: cli(&argv[0]),
        argv,
        model: model.map(str::to_owned),
        prompt: PromptHandoff::Stdin,
        output,
    };
    let built = match pool {
        "codex" if model == Some("review") => Built {
            argv: codex_review_argv(default_model, ctx),
            model: default_model.map(str::to_owned),
            prompt: PromptHandoff::File,
            needs: vec![
                Need::new("codex", "the agent's CLI"),
                Need::new("git", "codex exec review reads the change with git"),
            ],
            output: AgentOutput::CodexJson,
        },
        "codex" => stdin(codex_argv(&[], chosen, ctx), chosen, AgentOutput::CodexJson),
        "local" => {
            // codex-exec-help.txt: `--oss` "Use open-source provider", `--local-provider
            // <OSS_PROVIDER>` "(lmstudio or ollama)".
            let model = chosen.unwrap_or(LOCAL_DEFAULT_MODEL);
            let provider = ["--oss", "--local-provider", "ollama"];
            stdin(
                codex_argv(&provider, Some(model), ctx),
                Some(model),
                AgentOutput::CodexJson,
            )
        }
        "claude" => {
            let mut built = stdin(claude_argv(chosen), chosen, AgentOutput::ClaudeStreamJson);
            built.needs.push(Need::new(
                "bash",
                "Claude Code's Bash tool runs every command with it",
            ));
            built
        }
        "gemini" => stdin(gemini_argv(chosen), chosen, AgentOutput::GeminiStreamJson),
        "coderabbit" => {
            let kind = chosen.unwrap_or("all");
            if !CODERABBIT_TYPES.contains(&kind) {
                return Err(format!(
                    "unknown coderabbit review type `{kind}`: use `coderabbit:{}`",
                    CODERABBIT_TYPES.join("`, `coderabbit:")
                ));
            }
            Built {
                argv: coderabbit_argv(kind, &ctx.base),
                model: None,
                prompt: PromptHandoff::File,
                needs: cli("coderabbit"),
                output: AgentOutput::Text,
            }
        }
        _ => return Err(format!("`{pool}` is not a preset")),
    };
    Ok(built)
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// `codex exec` (codex-0.163-exec-help.txt): non-interactive; its events as JSON lines
/// (`--json`); approvals and codex's own sandbox bypassed because the container is the
/// sandbox; `--skip-git-repo-check` so a fresh clone needs no trust entry; its session kept in
/// the unit's `CODEX_HOME`; `--cd` the clone; the last message to the meta directory; the
/// prompt read from stdin via the `-` argument ("If not provided as an argument (or if `-` is
/// used), instructions are read from stdin").
fn codex_argv(provider: &[&str], model: Option<&str>, ctx: &ArgvContext) -> Vec<String> {
    let mut argv = strings(&["codex", "exec"]);
    argv.extend(strings(provider));
    argv.extend(strings(&[
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--color",
        "never",
        "--cd",
    ]));
    argv.push(ctx.workdir.clone());
    argv.push("--output-last-message".to_owned());
    argv.push(last_message(ctx));
    if let Some(model) = model {
        argv.push("--model".to_owned());
        argv.push(model.to_owned());
    }
    argv.push("-".to_owned());
    argv
}

/// `codex exec OPTIONS resume ID -` from the argv of [`codex_argv`]
/// (codex-0.163-exec-resume-help.txt): the options of `exec` stay before the subcommand,
/// which takes the thread id and reads the new message from stdin (`-`).
pub fn codex_resume_argv(argv: &[String], session: &str) -> Vec<String> {
    let mut argv = argv[..argv.len() - 1].to_vec();
    argv.extend(strings(&["resume", session, "-"]));
    argv
}

/// `codex exec review --base BASE` (codex-0.163-exec-review-help.txt). That help has no `--cd`
/// and no `--color`, so the container's working directory is the clone; `--json` events;
/// `--ephemeral`: a review is never continued. No prompt argument is given:
/// codex builds its own review instructions from `--base` (the target flags and a custom
/// prompt are alternatives), so the rendered prompt only stays on record as the prompt file.
fn codex_review_argv(model: Option<&str>, ctx: &ArgvContext) -> Vec<String> {
    let mut argv = strings(&[
        "codex",
        "exec",
        "review",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check",
        "--ephemeral",
        "--base",
    ]);
    argv.push(ctx.base.clone());
    argv.push("--output-last-message".to_owned());
    argv.push(last_message(ctx));
    if let Some(model) = model {
        argv.push("--model".to_owned());
        argv.push(model.to_owned());
    }
    argv
}

fn last_message(ctx: &ArgvContext) -> String {
    format!("{}/last-message.md", ctx.meta_dir)
}

/// `claude --print` (claude-2.1.332-help.txt): its messages as JSON lines (`--output-format
/// stream-json`, which needs `--verbose`), `--dangerously-skip-permissions` (the container is
/// the sandbox; `IS_SANDBOX=1` lets it run as root) and a system note; its session is kept in
/// the unit's agent home; no prompt argument, so print mode reads the prompt from stdin.
fn claude_argv(model: Option<&str>) -> Vec<String> {
    let mut argv = strings(&[
        "claude",
        "--print",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        "--append-system-prompt",
        CLAUDE_SYSTEM_NOTE,
    ]);
    if let Some(model) = model {
        argv.push("--model".to_owned());
        argv.push(model.to_owned());
    }
    argv
}

/// `gemini --prompt NOTE` (gemini-help.txt): `-p/--prompt` is the headless mode and its text
/// is "Appended to input on stdin (if any)", so the prompt goes on stdin and `-p` carries only
/// [`GEMINI_STDIN_NOTE`]; `--approval-mode yolo` auto-approves every tool; `--skip-trust`
/// trusts the fresh clone for this session; its events as JSON lines (`--output-format
/// stream-json`).
fn gemini_argv(model: Option<&str>) -> Vec<String> {
    let mut argv = strings(&[
        "gemini",
        "--prompt",
        GEMINI_STDIN_NOTE,
        "--approval-mode",
        "yolo",
        "--skip-trust",
        "--output-format",
        "stream-json",
    ]);
    if let Some(model) = model {
        argv.push("--model".to_owned());
        argv.push(model.to_owned());
    }
    argv
}

/// `coderabbit review --plain --type TYPE --base BASE`.
///
/// NOT checked against a captured `--help`: there is no coderabbit help in
/// `reference/agent-clis/`. This is the CLI form coderabbit documents (`--plain` for
/// non-interactive text output, `--type all|committed|uncommitted`, `--base BRANCH`). It runs
/// in the container's working directory, the clone.
pub fn coderabbit_argv(kind: &str, base: &str) -> Vec<String> {
    strings(&[
        "coderabbit",
        "review",
        "--plain",
        "--type",
        kind,
        "--base",
        base,
    ])
}
