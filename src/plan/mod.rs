//! The planner: a validated spec becomes a DAG of nodes.
//!
//! Each job x target is a unit with the chain `prep -> agent -> qa -> publish -> review ->
//! merge` (qa only when the job has or detects QA, publish only when the job publishes,
//! review and merge only when asked). `fix_attempts` is a bounded loop inside the unit: when
//! QA fails, the agent runs again with the failure output, at most `fix_attempts` more times;
//! the plan shows it on the agent and qa nodes rather than as extra nodes, so node ids stay
//! stable. `needs` adds edges: a unit of job B that needs job A waits for A's units on the
//! same repository; when A has no unit there, it waits for every unit of A.
//!
//! Node ids are `<job>/<org>/<repo>[/<key>]:<kind>`, the key omitted when it is the job id.
//! Everything here is deterministic: the JSON form is byte-identical across runs, machines
//! and source formats. The forge is asked only before, by [`resolve`] (the targets of
//! `select` entries and PR targets), and what it said reaches the planner as data.

pub mod render;
pub mod resolve;
pub mod target;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::prompt::{IssueContext, PromptContext};
use crate::spec::model::{MergePolicy, Resources, Spec};
use crate::spec::values::{AgentRef, Duration};
use crate::spec::LoadedSpec;
use target::ResolvedTarget;

/// Version of the plan's JSON format.
pub const PLAN_FORMAT: u32 = 1;

/// Default image of agent and QA containers.
pub const DEFAULT_IMAGE: &str = "core-dev";
/// Default agent.
pub const DEFAULT_AGENT: &str = "codex";
/// Default time limit of an agent run, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3600;

use crate::vocab::NodeKind;

/// The whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Format version of this JSON.
    pub plan_format: u32,
    /// The spec's name.
    pub spec: String,
    /// Counts for the summary line.
    pub counts: Counts,
    /// Units in spec order (job order, then target order).
    pub units: Vec<Unit>,
    /// `select` entries the forge was not asked about (`plan --offline`); their units are
    /// missing above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<Unresolved>,
}

/// A `select` entry left unresolved.
#[derive(Clone, Debug, Serialize)]
pub struct Unresolved {
    /// Job id.
    pub job: String,
    /// Place of the entry in the spec, `jobs[J].repos[I]`.
    pub entry: String,
    /// What it selects, in words.
    pub selects: String,
}

/// Totals of a plan.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Counts {
    /// Jobs.
    pub jobs: usize,
    /// Units.
    pub units: usize,
    /// Nodes.
    pub nodes: usize,
}

/// One job x target.
#[derive(Clone, Debug, Serialize)]
pub struct Unit {
    /// Index of the unit's target in the spec's targets (`LoadedSpec::targets`); kept when
    /// `--only` or a resume leaves units out, so a unit never takes another one's target. Not
    /// part of the JSON: the id says which target it is.
    #[serde(skip)]
    pub target: usize,
    /// `<job>/<org>/<repo>[/<key>]`.
    pub id: String,
    /// Job id.
    pub job: String,
    /// Organisation.
    pub org: String,
    /// Repository.
    pub repo: String,
    /// Workspace key.
    pub key: String,
    /// Workspace, relative to the state directory.
    pub workspace: String,
    /// Branch the agent works on.
    pub branch: String,
    /// The branch exists already (a `branch` target or a PR's head): the work continues it,
    /// and publish pushes only while nobody else has pushed to it since.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub existing_branch: bool,
    /// Base branch; none means the repository's default branch.
    pub base: Option<String>,
    /// Issue number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<u64>,
    /// Issue title, when the forge gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_title: Option<String>,
    /// Pull request number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<u64>,
    /// Tag the work starts from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Clone source when it is not the forge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Agent reference.
    pub agent: AgentRef,
    /// Container image.
    pub image: String,
    /// Whether the spec names the image (the job or `defaults`); when it does not, agent and
    /// QA containers follow `DISPATCH_IMAGE`. Not part of the JSON.
    #[serde(skip)]
    pub image_from_spec: bool,
    /// Agent time limit.
    pub timeout: Duration,
    /// The watchdog: agent and QA containers that print nothing for this long are stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// The agent that reviews the PR (the job's `review.agent`). Not part of the JSON: the
    /// review node says there is one.
    #[serde(skip)]
    pub review: Option<AgentRef>,
    /// Limits of the unit's agent, review and QA containers: the job's `resources`, else
    /// `defaults.resources`. Not part of the JSON.
    #[serde(skip)]
    pub resources: Option<Resources>,
    /// QA: `auto` (detected at run time), or the steps.
    pub qa: Qa,
    /// Extra agent runs after QA failures.
    pub fix_attempts: u32,
    /// Retries of a node's transient failures (the job's `retries`, else the defaults', else
    /// [`DEFAULT_RETRIES`]). Not part of the JSON: it changes no node of the DAG.
    #[serde(skip)]
    pub retries: u32,
    /// Merge policy.
    pub merge: MergePolicy,
    /// Variables for the templates.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// The unit's nodes, in order.
    pub nodes: Vec<Node>,
    /// What publish would do on the forge now (`plan --remote` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishPreview>,
    /// The rollout wave the unit starts in, 0 being the canary (or the first batch); shown by
    /// `dispatch plan` for a spec with `rollout:`, not part of what a run records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
}

/// What publish would do to a unit's branch and PR, judged from the forge's current state.
#[derive(Clone, Debug, Serialize)]
pub struct PublishPreview {
    /// The verdict.
    pub action: PublishAction,
    /// The PR it concerns, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr: Option<String>,
    /// Who opened the PR publish would adopt, when the forge says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Whether a run whose agent changes nothing would close the PR and delete its branch
    /// (`pr.on_no_changes: close`, and dispatch opened it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closes_if_unchanged: bool,
}

/// What publish would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishAction {
    /// No PR for the branch yet: push it and open one.
    Create,
    /// An open PR whose title or body would change.
    Update,
    /// An open PR with the same title and body (the branch is still pushed).
    Unchanged,
    /// An open PR that dispatch did not open (a person's, or another tool's): publish updates
    /// it instead of opening a second one.
    Adopt,
    /// The branch's PR was closed or merged already; publish would open a new one.
    Closed,
}

impl PublishAction {
    /// The word shown in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Unchanged => "unchanged",
            Self::Adopt => "adopt",
            Self::Closed => "closed already",
        }
    }
}

/// QA of a unit.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Qa {
    /// Detected from marker files in the clone (go.mod, Cargo.toml, package.json, ...).
    Auto,
    /// No QA.
    None,
    /// The job's steps.
    Steps(Vec<QaStepPlan>),
}

/// A planned QA step.
#[derive(Clone, Debug, Serialize)]
pub struct QaStepPlan {
    /// Name.
    pub name: String,
    /// Command.
    pub run: String,
    /// Image.
    pub image: String,
    /// Time limit.
    pub timeout: Duration,
    /// Network.
    pub network: String,
}

/// One node.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// `<unit id>:<kind>`.
    pub id: String,
    /// What the node does.
    pub kind: NodeKind,
    /// Ids of the nodes it waits for.
    pub needs: Vec<String>,
    /// Agent nodes: most runs (1 + fix_attempts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u32>,
}

/// Retries of a node's transient failures when the spec sets none.
pub const DEFAULT_RETRIES: u32 = 2;

/// Default QA step time limit.
pub const DEFAULT_QA_TIMEOUT_SECS: u64 = 600;

impl Plan {
    /// Keeps the units `keep` accepts (`--only`, or the units a run recorded), drops the edges
    /// to the units left out and counts again.
    pub fn retain_units(&mut self, mut keep: impl FnMut(&Unit) -> bool) {
        let (kept, left): (Vec<Unit>, Vec<Unit>) = std::mem::take(&mut self.units)
            .into_iter()
            .partition(|u| keep(u));
        let gone: std::collections::HashSet<&str> = left
            .iter()
            .flat_map(|u| u.nodes.iter().map(|n| n.id.as_str()))
            .collect();
        self.units = kept;
        if !gone.is_empty() {
            for node in self.units.iter_mut().flat_map(|u| &mut u.nodes) {
                node.needs.retain(|n| !gone.contains(n.as_str()));
            }
        }
        self.counts.units = self.units.len();
        self.counts.nodes = self.units.iter().map(|u| u.nodes.len()).sum();
    }
}

/// The fingerprint of a plan: `sha256:` and the hex SHA-256 of its compact JSON. The JSON is
/// streamed into the hash, never held (a 20,000-unit plan is 13 MB of it). A run records it
/// so that `dispatch resume` can tell whether the spec still plans the same DAG.
pub fn fingerprint(plan: &Plan) -> String {
    use sha2::Digest;
    use std::fmt::Write as _;

    /// Feeds what serde_json writes into the hash.
    struct Hashing(sha2::Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(sha2::Sha256::new());
    serde_json::to_writer(&mut hashing, plan).expect(
        "the plan serializes: it holds only strings, numbers and lists, and hashing cannot fail",
    );
    let mut text = String::from("sha256:");
    for byte in hashing.0.finalize() {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Whether `plan` is the plan a run recorded: its [`fingerprint`], or (runs of versions that
/// recorded the whole plan) its JSON, compared as JSON values so pretty and compact text
/// compare the same way.
pub fn same_plan(recorded: &str, plan: &Plan) -> bool {
    if recorded.starts_with("sha256:") {
        return recorded == fingerprint(plan);
    }
    match (
        serde_json::from_str::<serde_json::Value>(recorded),
        serde_json::to_value(plan),
    ) {
        (Ok(recorded), Ok(plan)) => recorded == plan,
        _ => false,
    }
}

/// The prompt context of a unit before it runs (attempt 1, no QA failure, issue title unknown).
pub fn unit_context(spec: &Spec, target: &ResolvedTarget) -> PromptContext {
    let job = &spec.jobs[target.job];
    PromptContext {
        task: job.task.clone(),
        job: job.id.to_string(),
        agent: agent_of(spec, target.job).to_string(),
        org: target.org.to_string(),
        repo: target.repo.to_string(),
        branch: branch_of(job.id.as_str(), target),
        base: target.base.as_ref().map(ToString::to_string),
        issue: target.issue.map(|number| IssueContext {
            number,
            title: target.issue_text.as_ref().map(|(title, _)| title.clone()),
            body: target.issue_text.as_ref().map(|(_, body)| body.clone()),
        }),
        pr: target.pr,
        variables: target.variables.clone(),
        persona: String::new(),
        plan: String::new(),
        qa: job.qa.iter().flatten().map(|s| s.run.clone()).collect(),
        attempt: 1,
        qa_failure: None,
    }
}

/// The title of a unit's pull request (the job's `pr.title`, else the task).
pub fn pr_title(
    loaded: &LoadedSpec,
    job: usize,
    context: &PromptContext,
) -> Result<String, String> {
    let title = loaded.spec.jobs[job]
        .pr
        .title
        .as_deref()
        .unwrap_or("{{ task }}");
    loaded
        .templates
        .render_inline("pr.title", title, context)
        .map(|t| t.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// The body of a unit's pull request (the job's `pr.body` template, else `pr-body`).
pub fn pr_body(loaded: &LoadedSpec, job: usize, context: &PromptContext) -> Result<String, String> {
    let template = loaded.spec.jobs[job]
        .pr
        .body
        .as_deref()
        .unwrap_or("pr-body");
    loaded
        .templates
        .render(template, context)
        .map_err(|e| e.to_string())
}

/// The agent reference a job uses: the job's, else `defaults.agent`, else [`DEFAULT_AGENT`].
pub fn agent_of(spec: &Spec, job: usize) -> AgentRef {
    let job = &spec.jobs[job];
    job.agent
        .as_ref()
        .or(spec.defaults.agent.as_ref())
        .cloned()
        .unwrap_or_else(|| AgentRef::parse(DEFAULT_AGENT).expect("DEFAULT_AGENT is an agent ref"))
}

/// The branch a unit works on: the target's branch, else `agent/<job>[-<key>]`.
pub fn branch_of(job: &str, target: &ResolvedTarget) -> String {
    match &target.branch {
        Some(branch) => branch.to_string(),
        None if target.key_is_job => format!("agent/{job}"),
        None => format!("agent/{job}-{}", target.key.replace('/', "-")),
    }
}

/// The unit id of a target.
pub fn unit_id(job: &str, target: &ResolvedTarget) -> String {
    if target.key_is_job {
        format!("{job}/{}/{}", target.org, target.repo)
    } else {
        format!("{job}/{}/{}/{}", target.org, target.repo, target.key)
    }
}

/// Builds the plan of a validated spec.
pub fn build(loaded: &LoadedSpec) -> Plan {
    let spec = &loaded.spec;
    let mut units: Vec<Unit> = loaded
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| unit(spec, i, t))
        .collect();
    add_needs(spec, &loaded.targets, &mut units);
    let nodes = units.iter().map(|u| u.nodes.len()).sum();
    Plan {
        plan_format: PLAN_FORMAT,
        spec: spec.name.to_string(),
        counts: Counts {
            jobs: spec.jobs.len(),
            units: units.len(),
            nodes,
        },
        units,
        unresolved: loaded
            .selections
            .iter()
            .map(|s| Unresolved {
                job: spec.jobs[s.job].id.to_string(),
                entry: s.key(),
                selects: s.describe(),
            })
            .collect(),
    }
}

fn unit(spec: &Spec, index: usize, target: &ResolvedTarget) -> Unit {
    let job = &spec.jobs[target.job];
    let id = unit_id(job.id.as_str(), target);
    let named_image = job.image.as_ref().or(spec.defaults.image.as_ref());
    let image = named_image.map_or_else(|| DEFAULT_IMAGE.to_owned(), Clone::clone);
    let timeout = job
        .timeout
        .or(spec.defaults.timeout)
        .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    let qa = match &job.qa {
        None => Qa::Auto,
        Some(steps) if steps.is_empty() => Qa::None,
        Some(steps) => Qa::Steps(
            steps
                .iter()
                .map(|s| QaStepPlan {
                    name: s.name.clone().unwrap_or_else(|| s.run.clone()),
                    run: s.run.clone(),
                    image: s.image.clone().unwrap_or_else(|| image.clone()),
                    timeout: s
                        .timeout
                        .unwrap_or(Duration::from_secs(DEFAULT_QA_TIMEOUT_SECS)),
                    network: s.network.clone().unwrap_or_else(|| "none".to_owned()),
                })
                .collect(),
        ),
    };
    let mut kinds = vec![NodeKind::Prep, NodeKind::Agent];
    if !matches!(qa, Qa::None) {
        kinds.push(NodeKind::Qa);
    }
    if job.publish {
        kinds.push(NodeKind::Publish);
        if job.review.is_some() {
            kinds.push(NodeKind::Review);
        }
        if job.pr.merge == MergePolicy::WhenGreen {
            kinds.push(NodeKind::Merge);
        }
    }
    let mut nodes: Vec<Node> = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let needs = nodes
            .last()
            .map(|n: &Node| vec![n.id.clone()])
            .unwrap_or_default();
        let max_runs = (kind == NodeKind::Agent).then_some(1 + job.fix_attempts);
        nodes.push(Node {
            id: format!("{id}:{}", kind.as_str()),
            kind,
            needs,
            max_runs,
        });
    }
    Unit {
        target: index,
        id,
        job: job.id.to_string(),
        org: target.org.to_string(),
        repo: target.repo.to_string(),
        key: target.key.clone(),
        workspace: format!("workspaces/{}/{}/{}", target.org, target.repo, target.key),
        branch: branch_of(job.id.as_str(), target),
        existing_branch: target.branch.is_some(),
        base: target.base.as_ref().map(ToString::to_string),
        issue: target.issue,
        issue_title: target.issue_text.as_ref().map(|(title, _)| title.clone()),
        pr: target.pr,
        tag: target.tag.as_ref().map(ToString::to_string),
        url: target.url.clone(),
        agent: agent_of(spec, target.job),
        image_from_spec: named_image.is_some(),
        image,
        timeout,
        idle_timeout: job.idle_timeout.or(spec.defaults.idle_timeout),
        review: job.review.as_ref().map(|r| r.agent.clone()),
        resources: job
            .resources
            .as_ref()
            .or(spec.defaults.resources.as_ref())
            .cloned(),
        qa,
        fix_attempts: job.fix_attempts,
        retries: job
            .retries
            .or(spec.defaults.retries)
            .unwrap_or(DEFAULT_RETRIES),
        merge: job.pr.merge,
        variables: target.variables.clone(),
        nodes,
        publish: None,
        wave: None,
    }
}

/// Adds the edges `needs` asks for to the prep nodes of the waiting units.
fn add_needs(spec: &Spec, targets: &[ResolvedTarget], units: &mut [Unit]) {
    let job_index: HashMap<&str, usize> = spec
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.id.as_str(), i))
        .collect();
    // Last node of every unit, by job and by (job, org, repo).
    let mut by_job: Vec<Vec<String>> = vec![Vec::new(); spec.jobs.len()];
    let mut by_repo: HashMap<(usize, &str, &str), Vec<String>> = HashMap::new();
    for (unit, target) in units.iter().zip(targets) {
        let last = unit.nodes.last().map(|n| n.id.clone()).unwrap_or_default();
        by_job[target.job].push(last.clone());
        by_repo
            .entry((target.job, target.org.as_str(), target.repo.as_str()))
            .or_default()
            .push(last);
    }
    for (unit, target) in units.iter_mut().zip(targets) {
        let job = &spec.jobs[target.job];
        let mut extra = Vec::new();
        for need in &job.needs {
            let Some(&needed) = job_index.get(need.as_str()) else {
                continue;
            };
            match by_repo.get(&(needed, target.org.as_str(), target.repo.as_str())) {
                Some(same_repo) => extra.extend(same_repo.iter().cloned()),
                None => extra.extend(by_job[needed].iter().cloned()),
            }
        }
        extra.sort();
        extra.dedup();
        unit.nodes[0].needs.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(repos: &str) -> Plan {
        let text = format!("version: 1\nname: same\ndefaults: {{ org: core }}\njobs:\n  - id: j\n    task: t\n    repos: [{repos}]\n");
        let loaded = crate::spec::load_text(std::path::Path::new("same.yaml"), text)
            .expect("the spec is valid");
        build(&loaded)
    }

    #[test]
    fn a_recorded_plan_is_recognised_by_its_fingerprint_or_its_json_and_no_other() {
        let plan = plan_of("a, b");
        let recorded = fingerprint(&plan);
        assert!(
            recorded.starts_with("sha256:") && recorded.len() == 7 + 64,
            "{recorded}"
        );
        assert_eq!(recorded, fingerprint(&plan_of("a, b")), "deterministic");
        assert!(same_plan(&recorded, &plan), "what a run records");
        assert!(
            !same_plan(&recorded, &plan_of("a, c")),
            "another repository"
        );
        assert!(!same_plan(&recorded, &plan_of("a")), "a unit fewer");
        assert!(!same_plan("sha256:00", &plan), "another fingerprint");
        assert!(!same_plan("", &plan), "nothing recorded");

        // Runs recorded by earlier versions hold the whole plan as JSON, pretty or compact.
        let compact = serde_json::to_string(&plan).expect("the plan serializes");
        assert!(same_plan(&compact, &plan));
        assert!(same_plan(&render::json(&plan), &plan));
        assert!(!same_plan(&compact, &plan_of("a, c")));
    }
}
