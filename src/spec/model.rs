//! The spec model, version 1: the one truth behind YAML specs, Nickel specs,
//! `schemas/dispatch.schema.json` and `schemas/dispatch.ncl`.
//!
//! Every struct denies unknown fields; doc comments become the schema's descriptions.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{
    AgentRef, BranchName, ByteSize, Colour, Duration, EnvName, Glob, JobId, OrgName, RepoName,
    ShortTarget, TagName, TimeOfDay,
};

/// A dispatch pipeline spec.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "dispatch spec v1")]
pub struct Spec {
    /// Spec format version; must be 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Name of the pipeline (a safe name, like a job id).
    pub name: JobId,
    /// What the pipeline is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where repositories live and pull requests are opened.
    #[serde(default)]
    pub forge: Forge,
    /// Defaults applied to every job.
    #[serde(default)]
    pub defaults: Defaults,
    /// Concurrency and rate limits.
    #[serde(default)]
    pub limits: Limits,
    /// What the run may spend on agents: caps per unit and in total, for the run and per
    /// agent pool or model (see "Budgets" in the README).
    #[serde(default, skip_serializing_if = "Budget::is_empty")]
    pub budget: Budget,
    /// How units start across the run: a canary first, then batches with pauses, a halt when
    /// too many fail, a cap on open PRs and the windows in which publish may happen (see
    /// "Rollout" in the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Where the container nodes (agents, reviewers, QA) run: the local Docker engine (the
    /// default) or a Kubernetes cluster, one Job per container (see "Running on Kubernetes"
    /// in the README). `dispatch run --runtime` overrides `kind`.
    #[serde(default, skip_serializing_if = "RuntimeSpec::is_default")]
    pub runtime: RuntimeSpec,
    /// Custom agents and overrides of the built-in presets, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentDef>,
    /// Prices of models in USD per million tokens, by model name: they replace and add to the
    /// built-in table the cost estimates of codex and gemini use.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pricing: BTreeMap<String, Price>,
    /// Directory of the spec's own templates, relative to the spec (default: `templates/` beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<String>,
    /// The jobs: each applies one task to a set of targets.
    #[schemars(length(min = 1))]
    pub jobs: Vec<Job>,
}

/// The forge that hosts the repositories.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forge {
    /// `local` (embedded bare repositories, the default), `forgejo`, `gitea` or `github`.
    #[serde(default)]
    pub kind: ForgeKind,
    /// Base URL of the forge (API root for GitHub Enterprise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name of the environment variable that holds the forge token (never the token itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<EnvName>,
    /// Local forge only: a directory (relative to the spec) whose subdirectories `ORG/REPO`
    /// become repositories of the local forge when they do not exist yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    /// At most this many forge writes per minute (PRs, comments, labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub writes_per_minute: Option<u32>,
    /// Remote forges: clone and push `{git_url}/{org}/{repo}.git` instead of the forge's
    /// HTTPS URL, e.g. `ssh://git@forge.example:2222` to push over SSH with the user's keys
    /// (the token is then used for the API only), or a local mirror directory. The local
    /// forge: the HTTP(S) URL at which a Kubernetes cluster reaches its repositories (the
    /// state directory's `forge/`, served by e.g. `git http-backend`); the Kubernetes backend
    /// needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// How long a guarded merge waits for the head's pending statuses and checks before the
    /// unit ends `needs_review` (default `20m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_timeout: Option<Duration>,
}

/// Where container nodes run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// `docker` (the default) or `kubernetes`.
    #[serde(default)]
    pub kind: RuntimeKind,
    /// Kubernetes: the namespace the Jobs and their Secrets are made in (default: the
    /// context's namespace, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes: the kubeconfig context to use (default: the current context; the
    /// kubeconfig is `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Kubernetes: the service account the pods run as (its token is never mounted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Kubernetes: node labels the pods must be scheduled on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes: taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Kubernetes: Secrets (of type `kubernetes.io/dockerconfigjson`) the cluster pulls the
    /// images with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    /// Kubernetes: the image of the steps that clone the unit's ref before a container and
    /// push its result after it; it needs `sh` and `git` with HTTP(S) (default
    /// `dispatch-git:latest`, what `scripts/agent-images` builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_image: Option<String>,
    /// Kubernetes: the uid (and gid) every container of a pod runs as; never 0, as the
    /// "restricted" Pod Security Standard asks (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub run_as: Option<u32>,
    /// Kubernetes: the variable holding the token the clone step reads the forge's git with
    /// (default: `forge.token_env`; none: the git server needs no credential to read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token_env: Option<EnvName>,
    /// Kubernetes: the variable holding the token the last step pushes the result with
    /// (default: `forge.token_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_token_env: Option<EnvName>,
}

impl RuntimeSpec {
    /// Whether nothing is set (the local Docker engine).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The variables holding the pods' git tokens, read then write, each with the field that
    /// names it: `read_token_env` and `write_token_env`, else the forge's `token_env`.
    pub fn git_token_envs<'a>(
        &'a self,
        forge: &'a Forge,
    ) -> [(&'static str, Option<&'a EnvName>); 2] {
        let or_forge = |own: &'a Option<EnvName>| own.as_ref().or(forge.token_env.as_ref());
        [
            ("runtime.read_token_env", or_forge(&self.read_token_env)),
            ("runtime.write_token_env", or_forge(&self.write_token_env)),
        ]
    }
}

/// Kinds of runtime backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The local Docker engine (or the one `DOCKER_HOST` names).
    #[default]
    Docker,
    /// A Kubernetes cluster: one `batch/v1` Job per container.
    Kubernetes,
}

impl RuntimeKind {
    /// The word, as in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
        }
    }

    /// The kind a word names.
    pub fn parse(word: &str) -> Option<Self> {
        [Self::Docker, Self::Kubernetes]
            .into_iter()
            .find(|k| k.as_str() == word)
    }
}

/// A taint the pods tolerate (Kubernetes' `Toleration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Toleration {
    /// The taint's key (none with `Exists`: every taint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// The value the taint must have with `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The effect tolerated: `NoSchedule`, `PreferNoSchedule` or `NoExecute` (none: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// With `NoExecute`: how long the pod stays once the taint appears (none: for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// How a toleration matches a taint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TolerationOperator {
    /// Key and value are equal.
    Equal,
    /// The key exists (any value).
    Exists,
}

/// What a taint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    /// New pods are not scheduled there.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted.
    NoExecute,
}

/// Kinds of forge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// Bare repositories in the state directory; PRs recorded in the state database.
    #[default]
    Local,
    /// A Forgejo server.
    Forgejo,
    /// A Gitea server.
    Gitea,
    /// GitHub or GitHub Enterprise.
    Github,
}

/// Values every job inherits unless it sets its own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Organisation (or user) of targets that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgName>,
    /// Agent of jobs that do not name one (default `codex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    /// Task template of jobs that do not name one (default `coding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Persona of jobs that do not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// Container image of agent and QA nodes (default `core-dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Time limit of one agent run (default `60m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The watchdog of agent and QA containers: one that prints nothing for this long is
    /// stopped (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Base branch (default: the repository's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BranchName>,
    /// Retries of transient infrastructure failures per node (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// Concurrency and rate limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many agent and QA containers at once (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub total: Option<u32>,
    /// Per agent pool: a number, or `{ total: N, MODEL: N, ... }` for per-model limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, PoolLimit>,
    /// Start rates per agent pool (`codex`) or per model (`claude:opus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rates: BTreeMap<String, Rate>,
}

/// The limit of one agent pool.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PoolLimit {
    /// At most this many agents of the pool at once.
    Total(#[schemars(range(min = 1))] u32),
    /// `total` for the pool, every other key a model's own limit.
    PerModel(BTreeMap<String, LimitValue>),
}

impl PoolLimit {
    /// The limit of the whole pool, if it has one.
    pub fn total(&self) -> Option<usize> {
        match self {
            Self::Total(n) => Some(*n as usize),
            Self::PerModel(per) => per.get("total").map(|v| v.0 as usize),
        }
    }
}

/// One concurrency limit (at least 1).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct LimitValue(#[schemars(range(min = 1))] pub u32);

/// How fast agents of a pool (or a model) may start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Least time between two starts, measured from the pool's last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_delay: Option<Duration>,
    /// At most this many starts per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub daily_limit: Option<u32>,
    /// When the daily count resets, `HH:MM` UTC (default `00:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_utc: Option<TimeOfDay>,
    /// Burst control: after `max` starts within `window`, wait `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Burst>,
}

/// Burst control for a rate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    /// Starts allowed within one window.
    #[schemars(range(min = 1))]
    pub max: u32,
    /// Length of the window.
    pub window: Duration,
    /// Pause once `max` starts happened within the window.
    pub delay: Duration,
}

/// A custom agent, or an override of a preset's image, env, mounts or model.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentDef {
    /// Argv of the agent CLI. Placeholders: `{{ prompt_file }}`, `{{ model }}`, `{{ workdir }}`,
    /// `{{ meta_dir }}`, `{{ base }}`. Each element stays one argument: no shell is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// Image the agent runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Names of environment variables passed through to the agent (names only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvName>,
    /// Host paths mounted into the agent container (read-only unless `read_only: false`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// How the prompt reaches the agent: `stdin` or `file` (default `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptHandoff>,
    /// Model used when the agent reference names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Container network of the agent (default `bridge`, agents usually need their API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// What the agent's CLI prints: `text` (the default of a custom `command`), or one of the
    /// JSON event formats dispatch reads usage, sessions and errors from (`codex-json`,
    /// `claude-stream-json`, `gemini-stream-json`; the presets' own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AgentOutput>,
}

/// What an agent's CLI prints on its standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentOutput {
    /// Plain text, kept as it is.
    Text,
    /// `codex exec --json`: JSON lines (`thread.started`, `item.*`, `turn.completed`).
    CodexJson,
    /// `claude -p --output-format stream-json --verbose`: JSON lines ending with `result`.
    ClaudeStreamJson,
    /// `gemini --output-format stream-json`: JSON lines ending with `result`.
    GeminiStreamJson,
}

/// How a run's units start: in waves (a canary, then batches), with a halt when too many fail,
/// and the forge-facing limits of publish.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// This many units (in plan order) run first; the rest waits until they finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub canary: Option<u32>,
    /// After the canary, units start in batches of this many, each once the one before
    /// finished (default: all the rest at once, within the limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch: Option<u32>,
    /// The time between one wave's end and the next wave's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,
    /// Stop starting units once the failure rate of the finished units passes a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_if: Option<HaltIf>,
    /// Publish waits while this spec has this many PRs open on the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_open_prs: Option<u32>,
    /// When publish may happen (UTC); none: at any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// A wave starts only once the PRs of the wave before it are green on the forge (their
    /// heads' statuses and checks, waited for at most `forge.checks_timeout`); a red one halts
    /// the rollout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_checks: bool,
}

/// When a rollout halts.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaltIf {
    /// Halt once more than this share of the finished units failed (0.0 to 1.0).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub failure_rate: f64,
    /// Only once at least this many units finished (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_units: u32,
}

fn one() -> u32 {
    1
}

/// A time in which publish may happen: days of the week and a span of the day, UTC.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The days (default: every day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Weekday>,
    /// Start, `HH:MM` UTC.
    pub from: TimeOfDay,
    /// End, `HH:MM` UTC (before `from`: the window runs past midnight into the next day).
    pub to: TimeOfDay,
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday is 0.
    pub fn index(self) -> u64 {
        self as u64
    }
}

/// What a run may spend on agents: caps per unit and in total, for the whole run and per agent
/// pool (`claude`) or model (`claude:opus`). A unit's cap is the least of the caps that apply to
/// it (the run's, its job's, its agent's pool and model); each total counts the units it
/// applies to.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The most one unit may spend (all its agent runs: attempts, fix attempts, its review).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<Cap>,
    /// The most the whole run may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Cap>,
    /// Caps of the units whose agent is of this pool (`claude`) or model (`claude:opus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, Caps>,
}

impl Budget {
    /// Whether no cap is set at all.
    pub fn is_empty(&self) -> bool {
        self.per_unit.is_none() && self.total.is_none() && self.agents.is_empty()
    }

    /// The budgets that apply to the units of job `job` (of `spec`) whose agent is `agent`:
    /// the run's, the job's, the agent pool's and the model's, those that set a cap.
    pub fn scopes(&self, spec: &Spec, job: usize, agent: &AgentRef) -> Vec<BudgetScope> {
        let mut scopes = vec![BudgetScope {
            name: "budget".to_owned(),
            caps: Caps {
                per_unit: self.per_unit,
                total: self.total,
            },
        }];
        if let Some(caps) = &spec.jobs[job].budget {
            scopes.push(BudgetScope {
                name: format!("jobs.{}.budget", spec.jobs[job].id),
                caps: caps.clone(),
            });
        }
        let model = agent.to_string();
        for (key, caps) in &self.agents {
            if key == agent.pool() || *key == model {
                scopes.push(BudgetScope {
                    name: format!("budget.agents.{key}"),
                    caps: caps.clone(),
                });
            }
        }
        scopes.retain(|s| s.caps.per_unit.is_some() || s.caps.total.is_some());
        scopes
    }
}

/// One place a budget is set that applies to a unit, with its caps.
#[derive(Clone, Debug)]
pub struct BudgetScope {
    /// Where it is set: `budget`, `jobs.fix.budget`, `budget.agents.claude`.
    pub name: String,
    /// Its caps.
    pub caps: Caps,
}

/// Caps per unit and in total (of a job, an agent pool or a model).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    /// The most one unit may spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<Cap>,
    /// The most all the units it applies to may spend together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Cap>,
}

/// A cap: in USD (what the CLI reports, else estimated from the price table), in tokens (input
/// plus output), or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// The most USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_usd: Option<f64>,
    /// The most tokens (input, cached included, plus output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tokens: Option<u64>,
    /// The most turns, as the CLIs count them (claude: its model turns, passed to it as
    /// `--max-turns` too; codex: its turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_turns: Option<u64>,
}

/// The price of a model in USD per million tokens, for the cost estimates of CLIs that report
/// none (codex, gemini).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens that were not cached.
    #[schemars(range(min = 0.0))]
    pub input: f64,
    /// Cached input tokens (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub cached_input: Option<f64>,
    /// Output tokens.
    #[schemars(range(min = 0.0))]
    pub output: f64,
}

/// How the prompt is handed to an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PromptHandoff {
    /// Written to the agent's standard input.
    Stdin,
    /// Only the file `/workspace/.meta/prompt.md`, named in the argv by `{{ prompt_file }}`.
    File,
}

/// A host path mounted into a container.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Host path (`~` is the invoking user's home).
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mount read-only (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Container resources.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs, e.g. 2 or 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. `4g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Most processes in the container (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pids: Option<u32>,
    /// Most bytes of one container's output kept in its log, the first and the last half
    /// (default `16m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<ByteSize>,
    /// Most disk space the unit's workspace (clone, logs, what its containers write there) may
    /// take (default `20g`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
}

impl Resources {
    /// The log cap when the spec sets none.
    pub const DEFAULT_LOG: ByteSize = ByteSize::from_bytes(16 << 20);
    /// The workspace's disk limit when the spec sets none.
    pub const DEFAULT_DISK: ByteSize = ByteSize::from_bytes(20 << 30);

    /// The log cap of `resources` (the unit's, when it has any).
    pub fn log_limit(resources: Option<&Self>) -> ByteSize {
        resources.and_then(|r| r.log).unwrap_or(Self::DEFAULT_LOG)
    }

    /// The disk limit of `resources` (the unit's, when it has any).
    pub fn disk_limit(resources: Option<&Self>) -> ByteSize {
        resources.and_then(|r| r.disk).unwrap_or(Self::DEFAULT_DISK)
    }
}

/// One job: a task applied to a set of targets.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Unique id of the job in this spec; part of every node id.
    pub id: JobId,
    /// What the agent should do; available to templates as `task`.
    pub task: String,
    /// Agent (default from `defaults.agent`, else `codex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentRef>,
    /// Task template (default from `defaults.template`, else `coding`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Persona template, e.g. `testing/tester`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<String>,
    /// A plan template whose text is given to the task template as `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Free variables for the templates (`variables.NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// Organisation of targets that do not name one (default `defaults.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgName>,
    /// The targets: `repo`, `org/repo`, `{ repo, org, issue, pr, branch, tag, base }`, or
    /// `{ select: { org, include, exclude, archived, forks, issues: { labels } } }`.
    #[schemars(length(min = 1))]
    pub repos: Vec<TargetSpec>,
    /// QA steps run after the agent. Absent: detected from marker files at run time.
    /// An empty list: no QA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<Vec<QaStep>>,
    /// How often a QA failure goes back to the agent before the unit ends `qa_failed`.
    #[serde(default)]
    pub fix_attempts: u32,
    /// Publish the branch and open a pull request (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub publish: bool,
    /// Pull request settings.
    #[serde(default)]
    pub pr: PrSettings,
    /// Review of the pull request by another agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// Jobs that must finish first (see "needs" in the README).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<JobId>,
    /// Time limit of one agent run (default from `defaults.timeout`, else `60m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The watchdog of agent and QA containers (default from `defaults.idle_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Retries of transient infrastructure failures per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The job's budget: caps per unit and for all its units together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Caps>,
    /// Container image (default from `defaults.image`, else `core-dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Base branch (default from `defaults.base`, else the repository's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BranchName>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// A target: `repo`, `org/repo`, or a mapping with an issue, PR, branch or tag.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TargetSpec {
    /// `repo` or `org/repo`.
    Short(ShortTarget),
    /// A mapping.
    Full(Target),
    /// Targets read from the forge when the plan is made.
    Select(SelectTarget),
}

/// `{ select: ... }`: targets the forge lists.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectTarget {
    /// Which repositories (and issues) of an organisation become targets.
    pub select: Select,
}

/// Repositories of an organisation or user, read from the forge, optionally one target per
/// open issue carrying given labels.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Select {
    /// Organisation or user (default: the job's or `defaults.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgName>,
    /// Name patterns a repository must match (`*`, `?`); absent: every repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Glob>,
    /// Name patterns that leave a repository out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Glob>,
    /// Keep archived repositories (default: skipped).
    #[serde(default, skip_serializing_if = "is_false")]
    pub archived: bool,
    /// Keep forks (default: skipped).
    #[serde(default, skip_serializing_if = "is_false")]
    pub forks: bool,
    /// One target per open issue carrying all these labels (workspace `task-N`; the issue's
    /// title and body reach the templates), instead of one per repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issues: Option<IssueSelect>,
    /// Base branch of these targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BranchName>,
    /// Variables for these targets; they override the job's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, serde_json::Value>,
}

/// Which open issues become targets.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueSelect {
    /// Labels an issue must all carry (at least one).
    #[schemars(length(min = 1))]
    pub labels: Vec<String>,
}

/// A target written out in full.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Repository name.
    pub repo: RepoName,
    /// Organisation (default: the job's or `defaults.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<OrgName>,
    /// Clone from this git URL or local path (relative to the spec) instead of the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Issue the unit works on (workspace `task-N`, `Closes #N` in the PR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub issue: Option<u64>,
    /// Existing pull request to work on (workspace `pr-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pr: Option<u64>,
    /// Existing branch to work on (workspace named after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
    /// Tag to start from (workspace named after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagName>,
    /// Base branch of this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BranchName>,
    /// Variables for this target only; they override the job's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, serde_json::Value>,
}

/// One QA step.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QaStep {
    /// Name shown in the plan and results (default: the command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command, run by `sh -c` inside the QA container (never on the host).
    pub run: String,
    /// Image of the step (default: the job's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Time limit of the step (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Container network of the step (default `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Pull request settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrSettings {
    /// Title template (default `{{ task }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body template name (default `pr-body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Labels to set (created when missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Colours (`#rrggbb`) of labels dispatch creates, by label name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_colours: BTreeMap<String, Colour>,
    /// Open the pull request as a draft.
    #[serde(default)]
    pub draft: bool,
    /// Reviewers to request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<String>,
    /// Merge policy: `never` (default) or `when_green`.
    #[serde(default)]
    pub merge: MergePolicy,
    /// What a later run whose agent changes nothing does to the open PR dispatch opened for
    /// the unit in an earlier run: `close` (default: close it with a comment and delete its
    /// branch) or `keep`.
    #[serde(default, skip_serializing_if = "OnNoChanges::is_default")]
    pub on_no_changes: OnNoChanges,
}

/// What happens to a unit's PR from an earlier run when its agent changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnNoChanges {
    /// Close the PR dispatch opened, with a comment naming the run, and delete its branch.
    #[default]
    Close,
    /// Leave the PR and its branch as they are.
    Keep,
}

impl OnNoChanges {
    /// Whether it is the default (`close`), left out when a spec is written back.
    pub fn is_default(&self) -> bool {
        *self == Self::Close
    }
}

/// When dispatch merges a pull request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// Never merge; people do.
    #[default]
    Never,
    /// Merge when dispatch's QA passed and the forge reports the head green.
    WhenGreen,
}

/// Review of the pull request by an agent.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// The reviewing agent, e.g. `codex:review`.
    pub agent: AgentRef,
    /// Review template (default `review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Post the review on the PR as a comment (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub comment: bool,
    /// Open one forge issue per finding, linked to the PR (default false; Forgejo, Gitea and
    /// GitHub: the local forge has no issues).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_issues: bool,
    /// Labels of the issues `file_issues` opens (default `[review-finding]`).
    #[serde(default = "finding_labels")]
    pub issue_labels: Vec<String>,
}

/// The labels of finding issues when the spec names none.
fn finding_labels() -> Vec<String> {
    vec![crate::forge::FINDING_LABEL.to_owned()]
}
