//! `dispatch mcp`: dispatch as an MCP server over stdio (the official Rust SDK, `rmcp`), the
//! one-call interface of the system dispatch comes from (`agentic_dispatch`) and the commands
//! around it as tools.
//!
//! Every tool is the command line: it runs this binary with the command's arguments
//! (`--color never`, JSON output) and returns what the command printed as structured content,
//! so a tool answers exactly what the command answers and fails with exactly its message and
//! location (a tool error, `isError: true`; the server never fails for a bad input). Runs are
//! started detached (`run --detach`, `answer --detach`, `retry --detach`): the runner is a
//! process of its own that outlives this server and its client, its run is in the journal
//! before the tool answers, and a new server reports it.
//!
//! Invariants: no input reaches a shell (each value is one argument of the command); every
//! tool has an input schema (its parameters) and an output schema (its result type); inputs
//! are read by the tool itself, so that a malformed one is a tool error naming the field;
//! annotations mark the read-only tools and the destructive one (`cancel`); no progress
//! notification is ever sent (every tool answers at once), so none reaches a client that did
//! not ask for them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rmcp::handler::server::common::schema_for_type;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::CommandError;

/// Arguments of `dispatch mcp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory of tools that name a run but no `state_dir` (default:
    /// `./.dispatch`).
    #[arg(long, env = "DISPATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Serves MCP on stdin and stdout until the client closes them.
pub fn run(args: Args) -> Result<u8, CommandError> {
    let exe = std::env::current_exe()
        .map_err(|e| CommandError::failure(format_args!("this program's path: {e}")))?;
    let server = Server {
        exe,
        state_dir: args.state_dir,
    };
    let runtime = super::tokio_runtime(true)?;
    runtime.block_on(async move {
        let service = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| CommandError::failure(format_args!("MCP: {e}")))?;
        service
            .waiting()
            .await
            .map_err(|e| CommandError::failure(format_args!("MCP: {e}")))?;
        Ok(0)
    })
}

/// The server: this binary's path, and the default state directory of run tools.
#[derive(Clone)]
struct Server {
    exe: PathBuf,
    state_dir: Option<PathBuf>,
}

/// What a command printed, or its error as the tool's.
struct Printed {
    stdout: String,
    stderr: String,
    status: i32,
}

impl Server {
    /// Runs `dispatch ARGS`; its output whatever its status.
    async fn command(&self, args: Vec<String>) -> Result<Printed, String> {
        let out = tokio::process::Command::new(&self.exe)
            .args(["--color", "never"])
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.exe.display()))?;
        Ok(Printed {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status.code().unwrap_or(1),
        })
    }

    /// Runs `dispatch ARGS` and reads its stdout as `T`; a non-zero status (or nothing on
    /// stdout) is the tool's error, with what the command said.
    async fn json<T: DeserializeOwned>(&self, args: Vec<String>) -> Result<T, String> {
        let printed = self.command(args).await?;
        if printed.status != 0 || printed.stdout.trim().is_empty() {
            return Err(said(&printed));
        }
        serde_json::from_str(&printed.stdout)
            .map_err(|e| format!("the command's output is not the JSON expected: {e}"))
    }

    /// `--state-dir DIR` for a tool that names a run: its own, else the server's.
    fn state_args(&self, given: &Option<String>) -> Vec<String> {
        match self.state_dir_of(given) {
            Some(dir) => vec!["--state-dir".into(), dir.display().to_string()],
            None => Vec::new(),
        }
    }

    /// The state directory of a tool that names a run: its own, else the server's.
    fn state_dir_of(&self, given: &Option<String>) -> Option<PathBuf> {
        given
            .as_deref()
            .map(PathBuf::from)
            .or_else(|| self.state_dir.clone())
    }
}

/// What a failed command said: its stderr, else its stdout.
fn said(printed: &Printed) -> String {
    let text = match printed.stderr.trim() {
        "" => printed.stdout.trim(),
        err => err,
    };
    match text {
        "" => format!("the command failed with status {}", printed.status),
        text => text.to_owned(),
    }
}

/// A tool's arguments, read by the tool: a malformed one is the tool's error, naming it.
fn read<T: DeserializeOwned>(args: JsonObject) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(args))
        .map_err(|e| format!("invalid input: {e}"))
}

/// The input of `dispatch` and `plan`: a spec, or the target of the one-call form.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Target {
    /// A spec file; leave it out to give `repo` and `task` (the one-call form).
    spec: Option<String>,
    /// Only these units of the spec: `JOB`, `JOB/REPO` or `JOB/ORG/REPO`.
    #[serde(default)]
    only: Vec<String>,
    /// One-call form: the repository, `ORG/REPO` (or `REPO` with `org`).
    repo: Option<String>,
    /// One-call form: the organisation, when `repo` does not name it.
    org: Option<String>,
    /// One-call form: what the agent should do.
    task: Option<String>,
    /// The agent, e.g. `codex`, `claude:opus` (default from the defaults spec).
    agent: Option<String>,
    /// The task template (default `coding`).
    template: Option<String>,
    /// A plan template whose text the task template gets as `plan`.
    plan_template: Option<String>,
    /// A persona template, e.g. `testing/tester`.
    persona: Option<String>,
    /// Template variables.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    /// Work on this issue.
    issue: Option<u64>,
    /// Work on this pull request's branch.
    pr: Option<u64>,
    /// Work on this existing branch.
    branch: Option<String>,
    /// Start from this tag.
    tag: Option<String>,
    /// One-call form: the defaults spec (default: `dispatch.yaml` found upward from the
    /// server's directory, else `~/.config/dispatch/defaults.yaml`).
    defaults: Option<String>,
    /// The state directory (default: `.dispatch/` beside the spec or the defaults spec).
    state_dir: Option<String>,
    /// `dispatch` only: plan and render the prompts; start nothing.
    #[serde(default)]
    dry_run: bool,
    /// `plan` only: ask the forge nothing (`select` entries stay unresolved).
    #[serde(default)]
    offline: bool,
}

impl Target {
    /// The command's arguments for this target.
    fn args(&self) -> Result<Vec<String>, String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                args.push(format!("--{name}"));
                args.push(value);
            }
        };
        let repo = match (&self.repo, &self.org) {
            (Some(repo), Some(org)) if !repo.contains('/') => Some(format!("{org}/{repo}")),
            (Some(repo), _) => Some(repo.clone()),
            (None, Some(_)) => return Err("`org` needs `repo`".to_owned()),
            (None, None) => None,
        };
        flag("repo", repo);
        flag("task", self.task.clone());
        flag("agent", self.agent.clone());
        flag("template", self.template.clone());
        flag("plan-template", self.plan_template.clone());
        flag("persona", self.persona.clone());
        flag("issue", self.issue.map(|n| n.to_string()));
        flag("pr", self.pr.map(|n| n.to_string()));
        flag("branch", self.branch.clone());
        flag("tag", self.tag.clone());
        flag("defaults", self.defaults.clone());
        flag("state-dir", self.state_dir.clone());
        for (name, value) in &self.variables {
            flag("var", Some(format!("{name}={value}")));
        }
        for only in &self.only {
            flag("only", Some(only.clone()));
        }
        if let Some(spec) = &self.spec {
            // After `--`: a spec path is never taken for a flag.
            args.push("--".to_owned());
            args.push(spec.clone());
        }
        Ok(args)
    }
}

/// A unit of a run as the tools answer it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct UnitOut {
    /// Unit id, e.g. `fix-tests/core/go-io`.
    id: String,
    /// `queued`, `running`, or its outcome.
    state: String,
    /// Its workspace directory.
    workspace: String,
}

/// A run started in the background.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct StartedOut {
    /// The run id.
    run: String,
    /// The runner's process id.
    runner_pid: u32,
    /// The run's state directory: give it to `status`, `logs`, `answer`, `cancel`, `retry`.
    state_dir: String,
    /// The runner's output (its report at the end).
    log: String,
    /// The run's units.
    units: Vec<UnitOut>,
}

/// A prompt of a dry run.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct PromptOut {
    /// The unit.
    unit: String,
    /// Its workspace directory.
    workspace: String,
    /// The prompt its agent would get.
    prompt: String,
}

/// A dry run: the plan and every prompt.
#[derive(Debug, Deserialize)]
struct DryRun {
    plan: serde_json::Value,
    prompts: Vec<PromptOut>,
}

/// `dispatch`'s output: the started run, or with `dry_run` the plan and the prompts.
#[derive(Debug, Default, Serialize, JsonSchema)]
struct DispatchOut {
    /// The run id (not for a dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
    /// The runner's process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    runner_pid: Option<u32>,
    /// The run's state directory: give it to `status`, `logs`, `answer`, `cancel`, `retry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<String>,
    /// The runner's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
    /// The units with their states (`queued`, `running`; `planned` in a dry run).
    units: Vec<UnitOut>,
    /// A dry run's plan (`dispatch plan --format json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<serde_json::Value>,
    /// A dry run's prompts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prompts: Vec<PromptOut>,
}

/// `status`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StatusIn {
    /// The run id; leave it out for the recent runs.
    run: Option<String>,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// A blocked unit's question.
#[derive(Debug, Serialize, JsonSchema)]
struct QuestionOut {
    /// The unit.
    unit: String,
    /// What its agent asked (its `BLOCKED.md`); answer it with the `answer` tool.
    question: String,
}

/// `status`'s output.
#[derive(Debug, Default, Serialize, JsonSchema)]
struct StatusOut {
    /// The run (`dispatch status RUN --json`), when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<serde_json::Value>,
    /// For a running run: `active`, `gone` or `unverified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    runner: Option<String>,
    /// What its agents used: tokens, cost (estimates marked), runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<serde_json::Value>,
    /// Its units, with their nodes, outcomes, reasons and PRs.
    units: Vec<serde_json::Value>,
    /// The questions of its blocked units.
    blocked: Vec<QuestionOut>,
    /// The recent runs (`dispatch runs --json`), when no run was named.
    recent: Vec<serde_json::Value>,
}

/// `logs`' input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LogsIn {
    /// The run id.
    run: String,
    /// The node, e.g. `fix-tests/core/go-io:agent`.
    node: String,
    /// The agent's raw JSON events instead of its readable log.
    #[serde(default)]
    raw: bool,
    /// At most this many last lines (default 200).
    tail: Option<usize>,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// `logs`' output.
#[derive(Debug, Serialize, JsonSchema)]
struct LogsOut {
    /// The node.
    node: String,
    /// The last lines of its log.
    text: String,
    /// Whether lines before them were left out.
    cut: bool,
}

/// `answer`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AnswerIn {
    /// The run id.
    run: String,
    /// The blocked unit.
    unit: String,
    /// The answer to its question.
    text: String,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// `retry`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RetryIn {
    /// The run id.
    run: String,
    /// The units that failed.
    #[serde(default)]
    failed: bool,
    /// The units that are blocked.
    #[serde(default)]
    blocked: bool,
    /// Only these units: `JOB`, `JOB/REPO` or a unit id.
    #[serde(default)]
    only: Vec<String>,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// `cancel`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CancelIn {
    /// The run id.
    run: String,
    /// Stop the running containers now instead of letting running nodes finish.
    #[serde(default)]
    force: bool,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// What a command said.
#[derive(Debug, Serialize, JsonSchema)]
struct MessageOut {
    /// Its words.
    message: String,
}

/// `plan`'s output.
#[derive(Debug, Serialize, JsonSchema)]
struct PlanOut {
    /// The plan, as `dispatch plan --format json` prints it.
    plan: serde_json::Value,
}

/// Input of the tools that take a spec file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SpecIn {
    /// The spec file.
    spec: String,
}

/// `validate`'s output.
#[derive(Debug, Serialize, JsonSchema)]
struct ValidateOut {
    /// Whether the spec is valid.
    valid: bool,
    /// The problems with their file, line and column (empty when valid).
    diagnostics: String,
}

/// `render`'s input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RenderIn {
    /// The spec file.
    spec: String,
    /// The job.
    job: String,
    /// The repository: `repo` or `org/repo`.
    repo: String,
    /// The workspace key when the job has several units on it (`task-15`, `pr-3`).
    key: Option<String>,
    /// The agent run (2 and up are fix attempts).
    attempt: Option<u32>,
}

/// `render`'s output.
#[derive(Debug, Serialize, JsonSchema)]
struct RenderOut {
    /// The prompt the agent would get.
    prompt: String,
}

/// `prs`' input.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PrsIn {
    /// A spec whose state directory holds the PRs.
    spec: Option<String>,
    /// The state directory (default: the server's).
    state_dir: Option<String>,
}

/// `prs`' output.
#[derive(Debug, Serialize, JsonSchema)]
struct PrsOut {
    /// The local forge's PRs with their comments (`dispatch prs --json`).
    prs: Vec<serde_json::Value>,
}

#[tool_router]
impl Server {
    /// Starts agents on a spec's units or on one task (the one-call form: `repo` and `task`);
    /// answers at once with the run and its units, which go on in a runner of their own.
    #[tool(
        input_schema = schema_for_type::<Target>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false)
    )]
    async fn dispatch(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<DispatchOut>, String> {
        let input: Target = read(args)?;
        if input.offline {
            return Err("`offline` is for `plan`".to_owned());
        }
        let mut args = vec!["run".to_owned(), "--output".to_owned(), "json".to_owned()];
        if input.dry_run {
            args.push("--dry-run".to_owned());
            args.extend(input.args()?);
            let dry: DryRun = self.json(args).await?;
            return Ok(Json(DispatchOut {
                units: dry
                    .prompts
                    .iter()
                    .map(|p| UnitOut {
                        id: p.unit.clone(),
                        state: "planned".to_owned(),
                        workspace: p.workspace.clone(),
                    })
                    .collect(),
                plan: Some(dry.plan),
                prompts: dry.prompts,
                ..DispatchOut::default()
            }));
        }
        args.push("--detach".to_owned());
        args.extend(input.args()?);
        let started: StartedOut = self.json(args).await?;
        Ok(Json(DispatchOut {
            run: Some(started.run),
            runner_pid: Some(started.runner_pid),
            state_dir: Some(started.state_dir),
            log: Some(started.log),
            units: started.units,
            ..DispatchOut::default()
        }))
    }

    /// A run's units, nodes, outcomes, PRs, usage and the questions of its blocked units; the
    /// recent runs when no run is named.
    #[tool(
        input_schema = schema_for_type::<StatusIn>(),
        annotations(read_only_hint = true)
    )]
    async fn status(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<StatusOut>, String> {
        let input: StatusIn = read(args)?;
        let state = self.state_args(&input.state_dir);
        let Some(run) = input.run else {
            let recent: Vec<serde_json::Value> = self
                .json([vec!["runs".into(), "--json".into()], state].concat())
                .await?;
            return Ok(Json(StatusOut {
                recent,
                ..StatusOut::default()
            }));
        };
        let args = [
            vec!["status".into(), "--output".into(), "json".into()],
            state,
            vec!["--".into(), run],
        ]
        .concat();
        let mut document: serde_json::Map<String, serde_json::Value> = self.json(args).await?;
        let units = match document.remove("units") {
            Some(serde_json::Value::Array(units)) => units,
            _ => Vec::new(),
        };
        // Where the command looked: the same default as every command that reads runs.
        let dir = super::state_dir::locate(self.state_dir_of(&input.state_dir).as_deref(), None);
        let mut blocked = Vec::new();
        for unit in &units {
            if unit["outcome"] != "blocked" {
                continue;
            }
            let file = dir
                .join(unit["workspace"].as_str().unwrap_or_default())
                .join("meta")
                .join("BLOCKED.md");
            // The agent wrote it: read as a bounded regular file, never through a link.
            let question = crate::runtime::mounted::read_to_string(&file)
                .await
                .unwrap_or_default();
            blocked.push(QuestionOut {
                unit: unit["id"].as_str().unwrap_or_default().to_owned(),
                question: question.trim().to_owned(),
            });
        }
        Ok(Json(StatusOut {
            run: document.remove("run"),
            runner: document
                .remove("runner")
                .and_then(|r| r.as_str().map(str::to_owned)),
            usage: document.remove("usage"),
            units,
            blocked,
            recent: Vec::new(),
        }))
    }

    /// The last lines of a node's log (`agent`, `qa`, `review`, ...).
    #[tool(
        input_schema = schema_for_type::<LogsIn>(),
        annotations(read_only_hint = true)
    )]
    async fn logs(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<LogsOut>, String> {
        let input: LogsIn = read(args)?;
        let mut args = [vec!["logs".into()], self.state_args(&input.state_dir)].concat();
        if input.raw {
            args.push("--raw".into());
        }
        args.extend(["--".into(), input.run, input.node.clone()]);
        let printed = self.command(args).await?;
        if printed.status != 0 {
            return Err(said(&printed));
        }
        let lines: Vec<&str> = printed.stdout.lines().collect();
        let keep = input.tail.unwrap_or(200).min(lines.len());
        Ok(Json(LogsOut {
            node: input.node,
            text: lines[lines.len() - keep..].join("\n"),
            cut: keep < lines.len(),
        }))
    }

    /// Answers a blocked unit's question; the unit runs again with the answer, in the
    /// background.
    #[tool(
        input_schema = schema_for_type::<AnswerIn>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false)
    )]
    async fn answer(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<StartedOut>, String> {
        let input: AnswerIn = read(args)?;
        let args = [
            vec![
                "answer".into(),
                "--detach".into(),
                "--output".into(),
                "json".into(),
            ],
            self.state_args(&input.state_dir),
            vec!["--".into(), input.run, input.unit, input.text],
        ]
        .concat();
        Ok(Json(self.json(args).await?))
    }

    /// Runs failed or blocked units of a run again, in the background.
    #[tool(
        input_schema = schema_for_type::<RetryIn>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = false)
    )]
    async fn retry(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<StartedOut>, String> {
        let input: RetryIn = read(args)?;
        let mut args = [
            vec![
                "retry".into(),
                "--detach".into(),
                "--output".into(),
                "json".into(),
            ],
            self.state_args(&input.state_dir),
        ]
        .concat();
        if input.failed {
            args.push("--failed".into());
        }
        if input.blocked {
            args.push("--blocked".into());
        }
        for only in input.only {
            args.extend(["--only".into(), only]);
        }
        args.extend(["--".into(), input.run]);
        Ok(Json(self.json(args).await?))
    }

    /// Stops a run: nothing new starts and running nodes finish, or with `force` its running
    /// containers stop too; its unfinished units end `cancelled`.
    #[tool(
        input_schema = schema_for_type::<CancelIn>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true)
    )]
    async fn cancel(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<MessageOut>, String> {
        let input: CancelIn = read(args)?;
        let mut args = [vec!["cancel".into()], self.state_args(&input.state_dir)].concat();
        if input.force {
            args.push("--force".into());
        }
        args.extend(["--".into(), input.run]);
        let printed = self.command(args).await?;
        if printed.status != 0 {
            return Err(said(&printed));
        }
        Ok(Json(MessageOut {
            message: format!("{}{}", printed.stdout, printed.stderr)
                .trim()
                .to_owned(),
        }))
    }

    /// The plan a run would execute: units, nodes, agents, branches.
    #[tool(
        input_schema = schema_for_type::<Target>(),
        annotations(read_only_hint = true)
    )]
    async fn plan(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<PlanOut>, String> {
        let input: Target = read(args)?;
        if !input.only.is_empty() || input.dry_run {
            return Err(
                "`only` and `dry_run` are for `dispatch`; plan shows every unit".to_owned(),
            );
        }
        let mut args = vec!["plan".to_owned(), "--format".into(), "json".into()];
        if input.offline {
            args.push("--offline".into());
        }
        args.extend(input.args()?);
        Ok(Json(PlanOut {
            plan: self.json(args).await?,
        }))
    }

    /// Checks a spec: valid, or its problems with file, line and column.
    #[tool(
        input_schema = schema_for_type::<SpecIn>(),
        annotations(read_only_hint = true)
    )]
    async fn validate(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<ValidateOut>, String> {
        let input: SpecIn = read(args)?;
        let printed = self
            .command(vec!["validate".into(), "--".into(), input.spec])
            .await?;
        match printed.status {
            0 => Ok(Json(ValidateOut {
                valid: true,
                diagnostics: String::new(),
            })),
            2 => Ok(Json(ValidateOut {
                valid: false,
                diagnostics: printed.stderr.trim().to_owned(),
            })),
            _ => Err(said(&printed)),
        }
    }

    /// The exact prompt one unit's agent would get.
    #[tool(
        input_schema = schema_for_type::<RenderIn>(),
        annotations(read_only_hint = true)
    )]
    async fn render(
        &self,
        Parameters(args): Parameters<JsonObject>,
    ) -> Result<Json<RenderOut>, String> {
        let input: RenderIn = read(args)?;
        let mut args = vec![
            "render".into(),
            "--job".into(),
            input.job,
            "--repo".into(),
            input.repo,
        ];
        if let Some(key) = input.key {
            args.extend(["--key".into(), key]);
        }
        if let Some(attempt) = input.attempt {
            args.extend(["--attempt".into(), attempt.to_string()]);
        }
        args.extend(["--".into(), input.spec]);
        let printed = self.command(args).await?;
        if printed.status != 0 {
            return Err(said(&printed));
        }
        Ok(Json(RenderOut {
            prompt: printed.stdout,
        }))
    }

    /// The pull requests of the local forge, with their comments (reviews).
    #[tool(
        input_schema = schema_for_type::<PrsIn>(),
        annotations(read_only_hint = true)
    )]
    async fn prs(&self, Parameters(args): Parameters<JsonObject>) -> Result<Json<PrsOut>, String> {
        let input: PrsIn = read(args)?;
        let mut args = vec!["prs".to_owned(), "--json".to_owned()];
        match input.spec {
            Some(spec) => args.extend(["--spec".into(), spec]),
            None => args.extend(self.state_args(&input.state_dir)),
        }
        Ok(Json(PrsOut {
            prs: self.json(args).await?,
        }))
    }
}

#[tool_handler]
impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("dispatch", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "dispatch runs AI coding agents against git repositories in containers. \
                 `dispatch` starts a spec's units, or one task on one repository (`repo`, \
                 `task`), and answers at once with the run and its units; `status` follows a \
                 run (blocked units come with their questions, which `answer` answers); \
                 `logs` shows a node's log; `cancel` stops a run; `retry` runs failed units \
                 again. Runs go on when this server stops.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_input_and_an_object_output_schema_and_annotations() {
        let tools = Server::tool_router().list_all();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "answer", "cancel", "dispatch", "logs", "plan", "prs", "render", "retry", "status",
                "validate"
            ]
        );
        for tool in &tools {
            let output = tool
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{} has an output schema", tool.name));
            assert_eq!(output.get("type"), Some(&"object".into()), "{}", tool.name);
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&"object".into()),
                "{}",
                tool.name
            );
            let annotations = tool.annotations.as_ref().expect("annotations");
            let read_only = annotations.read_only_hint == Some(true);
            let expected = matches!(
                tool.name.as_ref(),
                "status" | "logs" | "plan" | "validate" | "render" | "prs"
            );
            assert_eq!(read_only, expected, "{} read-only", tool.name);
            assert_eq!(
                annotations.destructive_hint == Some(true),
                tool.name == "cancel",
                "{} destructive",
                tool.name
            );
        }
        let dispatch = tools
            .iter()
            .find(|t| t.name == "dispatch")
            .expect("dispatch");
        let properties = dispatch.input_schema["properties"]
            .as_object()
            .expect("properties");
        for field in [
            "repo",
            "org",
            "task",
            "agent",
            "template",
            "plan_template",
            "variables",
            "persona",
            "issue",
            "pr",
            "branch",
            "tag",
            "dry_run",
            "spec",
            "only",
        ] {
            assert!(properties.contains_key(field), "dispatch takes `{field}`");
        }
    }

    #[test]
    fn a_malformed_input_is_the_tools_error_naming_the_field() {
        let mut args = JsonObject::new();
        args.insert("run".into(), 7.into());
        let error = read::<StatusIn>(args).unwrap_err();
        assert!(
            error.contains("invalid type") && error.contains("string"),
            "{error}"
        );
        let mut args = JsonObject::new();
        args.insert("spec".into(), "s.yaml".into());
        args.insert("colour".into(), "red".into());
        assert!(read::<SpecIn>(args)
            .unwrap_err()
            .contains("unknown field `colour`"));
    }

    #[test]
    fn a_target_becomes_one_argument_per_value_with_the_spec_after_the_flags() {
        let target = Target {
            spec: Some("--evil.yaml".to_owned()),
            repo: Some("go-io".to_owned()),
            org: Some("core".to_owned()),
            task: Some("fix; rm -rf /".to_owned()),
            variables: [("k".to_owned(), "a=b".to_owned())].into(),
            ..Target::default()
        };
        assert_eq!(
            target.args().expect("args"),
            [
                "--repo",
                "core/go-io",
                "--task",
                "fix; rm -rf /",
                "--var",
                "k=a=b",
                "--",
                "--evil.yaml"
            ]
        );
    }
}
