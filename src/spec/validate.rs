//! Semantic validation: what the schema cannot say. Duplicate job ids, unknown agents,
//! templates and personas, `needs` that name unknown jobs or form a cycle, duplicate units,
//! unresolvable targets, empty QA commands, zero timeouts, and templates that use variables
//! the context does not have. Every problem is collected, each at its span.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Forge, ForgeKind, MergePolicy, PoolLimit, RuntimeKind, Spec, TargetSpec};
use super::node::{Node, Path};
use super::problem::Problem;
use super::schema_check::did_you_mean;
use super::source::{Sources, Span};
use super::values::{AgentRef, PRESET_POOLS};
use crate::plan::target::ResolvedTarget;
use crate::plan::unit_context;
use crate::prompt::{PromptParts, RenderError, Templates};

/// Model names the `coderabbit` preset accepts (its review types).
pub const CODERABBIT_TYPES: &[&str] = &["all", "committed", "uncommitted"];

/// Everything semantic validation looks at.
pub struct Input<'a> {
    /// The deserialized spec.
    pub spec: &'a Spec,
    /// The document it came from (for spans).
    pub doc: &'a Node,
    /// The template set.
    pub templates: &'a Templates,
    /// Resolved targets.
    pub targets: &'a [ResolvedTarget],
    /// Stand-ins for the targets of `select` entries (for the template checks).
    pub samples: &'a [ResolvedTarget],
}

/// Runs every semantic check; template problems add the template files to `sources`.
pub fn validate(input: &Input<'_>, sources: &mut Sources) -> Vec<Problem> {
    let mut v = Validator {
        doc: input.doc,
        sources,
        problems: Vec::new(),
    };
    let spec = input.spec;
    v.jobs(spec);
    v.agents(spec);
    v.limits(spec);
    v.budget(spec);
    v.rollout(spec);
    v.forge(spec);
    v.runtime(spec);
    v.templates(spec, input.templates);
    v.units(spec, input.targets);
    v.renders(
        spec,
        input.templates,
        input.targets.iter().chain(input.samples),
    );
    v.problems
}

struct Validator<'a> {
    doc: &'a Node,
    sources: &'a mut Sources,
    problems: Vec<Problem>,
}

fn p() -> Path {
    Path::default()
}

impl Validator<'_> {
    fn at(&self, path: &Path) -> Span {
        self.doc.find(path).span
    }

    fn push(&mut self, path: &Path, message: String, label: &str, help: Option<String>) {
        self.push_at(self.at(path), message, label, help);
    }

    fn push_at(&mut self, span: Span, message: String, label: &str, help: Option<String>) {
        let mut problem = Problem::new(span, message, label);
        problem.help = help;
        self.problems.push(problem);
    }

    fn line(&self, path: &Path) -> usize {
        let span = self.at(path);
        self.sources.line_col(span.file, span.start).0
    }

    fn jobs(&mut self, spec: &Spec) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, job) in spec.jobs.iter().enumerate() {
            if let Some(&j) = first.get(job.id.as_str()) {
                let line = self.line(&p().key("jobs").index(j).key("id"));
                self.push(
                    &p().key("jobs").index(i).key("id"),
                    format!("duplicate job id `{}`", job.id),
                    "used again here",
                    Some(format!(
                        "the first job `{}` is at line {line}; job ids must be unique",
                        job.id
                    )),
                );
            } else {
                first.insert(job.id.as_str(), i);
            }
            for (k, step) in job.qa.iter().flatten().enumerate() {
                if step.run.trim().is_empty() {
                    self.push(
                        &p().key("jobs").index(i).key("qa").index(k).key("run"),
                        format!("QA step {} of job `{}` has no command", k + 1, job.id),
                        "empty command",
                        Some("give the command to run, e.g. `run: go test ./...`".to_owned()),
                    );
                }
                if step.timeout.is_some_and(|t| t.as_secs() == 0) {
                    self.push(
                        &p().key("jobs").index(i).key("qa").index(k).key("timeout"),
                        "a QA timeout of 0s would stop the step at once".to_owned(),
                        "zero timeout",
                        None,
                    );
                }
            }
            if job.timeout.is_some_and(|t| t.as_secs() == 0) {
                self.push(
                    &p().key("jobs").index(i).key("timeout"),
                    format!("job `{}` has a timeout of 0s", job.id),
                    "zero timeout",
                    Some("give a positive duration such as `30m`".to_owned()),
                );
            }
            if !job.publish && job.pr.merge != MergePolicy::Never {
                self.push(
                    &p().key("jobs").index(i).key("pr").key("merge"),
                    format!("job `{}` asks to merge but does not publish", job.id),
                    "merge without publish",
                    Some("remove `publish: false` or set `merge: never`".to_owned()),
                );
            }
            if !job.publish && job.review.is_some() {
                self.push(
                    &p().key("jobs").index(i).key("review"),
                    format!(
                        "job `{}` asks for a review but does not publish a PR",
                        job.id
                    ),
                    "review without publish",
                    None,
                );
            }
            if let Some(review) = job.review.as_ref().filter(|r| r.file_issues) {
                let path = p().key("jobs").index(i).key("review");
                if spec.forge.kind == ForgeKind::Local {
                    self.push(
                        &path.key("file_issues"),
                        format!(
                            "job `{}` files its review's findings as issues, but the local \
                             forge has no issues",
                            job.id
                        ),
                        "no issues on the local forge",
                        Some(
                            "remove `file_issues` (the review is still posted on the PR) or \
                             use a remote forge"
                                .to_owned(),
                        ),
                    );
                }
                if let Some((j, _)) = review
                    .issue_labels
                    .iter()
                    .enumerate()
                    .find(|(_, l)| l.trim().is_empty())
                {
                    self.push(
                        &path.key("issue_labels").index(j),
                        format!("job `{}` has an empty issue label", job.id),
                        "empty label",
                        None,
                    );
                }
            }
        }
        if spec.defaults.timeout.is_some_and(|t| t.as_secs() == 0) {
            self.push(
                &p().key("defaults").key("timeout"),
                "the default timeout is 0s".to_owned(),
                "zero timeout",
                None,
            );
        }
        self.needs(spec, &first);
    }

    fn needs(&mut self, spec: &Spec, ids: &HashMap<&str, usize>) {
        let mut graph: Vec<Vec<(usize, usize)>> = vec![Vec::new(); spec.jobs.len()];
        for (i, job) in spec.jobs.iter().enumerate() {
            for (k, need) in job.needs.iter().enumerate() {
                let path = p().key("jobs").index(i).key("needs").index(k);
                match ids.get(need.as_str()) {
                    Some(&j) if j == i => self.push(
                        &path,
                        format!("job `{}` needs itself", job.id),
                        "self-dependency",
                        None,
                    ),
                    Some(&j) => graph[i].push((j, k)),
                    None => {
                        let help = did_you_mean(need.as_str(), ids.keys().copied())
                            .map(|s| format!("did you mean `{s}`?"));
                        self.push(
                            &path,
                            format!(
                                "job `{}` needs `{need}`, which is not a job of this spec",
                                job.id
                            ),
                            "unknown job",
                            help,
                        );
                    }
                }
            }
        }
        // Depth-first search for cycles; each cycle is reported once, at its first edge.
        let mut state = vec![0u8; graph.len()];
        let mut reported = BTreeSet::new();
        for start in 0..graph.len() {
            let mut stack: Vec<usize> = Vec::new();
            self.cycle_search(start, &graph, &mut state, &mut stack, &mut reported, spec);
        }
    }

    fn cycle_search(
        &mut self,
        job: usize,
        graph: &[Vec<(usize, usize)>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
        reported: &mut BTreeSet<Vec<usize>>,
        spec: &Spec,
    ) {
        if state[job] == 2 {
            return;
        }
        if state[job] == 1 {
            let from = stack.iter().position(|&j| j == job).unwrap_or(0);
            let mut cycle: Vec<usize> = stack[from..].to_vec();
            let mut canonical = cycle.clone();
            canonical.sort_unstable();
            if reported.insert(canonical) {
                let min = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, &j)| j)
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(min);
                let names: Vec<&str> = cycle
                    .iter()
                    .chain([&cycle[0]])
                    .map(|&j| spec.jobs[j].id.as_str())
                    .collect();
                let first = cycle[0];
                let next = cycle.get(1).copied().unwrap_or(first);
                let k = graph[first]
                    .iter()
                    .find(|(to, _)| *to == next)
                    .map_or(0, |(_, k)| *k);
                self.push(
                    &p().key("jobs").index(first).key("needs").index(k),
                    format!("`needs` forms a cycle: {}", names.join(" -> ")),
                    "cycle starts here",
                    Some("remove one of these `needs` entries".to_owned()),
                );
            }
            return;
        }
        state[job] = 1;
        stack.push(job);
        for &(next, _) in &graph[job] {
            self.cycle_search(next, graph, state, stack, reported, spec);
        }
        stack.pop();
        state[job] = 2;
    }

    fn agent_ref(&mut self, spec: &Spec, agent: &AgentRef, path: &Path) {
        let pool = agent.pool();
        let known: Vec<&str> = PRESET_POOLS
            .iter()
            .copied()
            .chain(spec.agents.keys().map(String::as_str))
            .collect();
        if !known.contains(&pool) {
            let help = did_you_mean(pool, known.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    Some(format!(
                        "use a preset ({}) or define `agents.{pool}` with a `command`",
                        PRESET_POOLS.join(", ")
                    ))
                });
            self.push(
                path,
                format!("unknown agent `{pool}`"),
                "unknown agent",
                help,
            );
            return;
        }
        if pool == "coderabbit" && !spec.agents.contains_key(pool) {
            if let Some(kind) = agent.model() {
                if !CODERABBIT_TYPES.contains(&kind) {
                    let help = format!(
                        "coderabbit reviews `{}` changes",
                        CODERABBIT_TYPES.join("`, `")
                    );
                    self.push(
                        path,
                        format!("unknown coderabbit review type `{kind}`"),
                        "unknown type",
                        Some(help),
                    );
                }
            }
        }
        if let (Some("review"), false) = (agent.model(), matches!(pool, "codex")) {
            if !spec.agents.contains_key(pool) {
                self.push(
                    path,
                    format!("`{agent}`: only codex has a review mode"),
                    "no review mode",
                    Some("use `codex:review` or `coderabbit`".to_owned()),
                );
            }
        }
    }

    fn agents(&mut self, spec: &Spec) {
        for (name, def) in &spec.agents {
            let path = p().key("agents").key(name);
            if let Err(message) = AgentRef::parse(name).and_then(|r| {
                if r.model().is_some() {
                    Err(format!("agent name `{name}` must not contain `:`"))
                } else {
                    Ok(r)
                }
            }) {
                self.push(&path, message, "bad agent name", None);
                continue;
            }
            let is_preset = PRESET_POOLS.contains(&name.as_str());
            if !is_preset && def.command.is_none() {
                self.push(
                    &path,
                    format!("custom agent `{name}` has no `command`"),
                    "no command",
                    Some("give its argv, e.g. `command: [my-agent, --prompt-file, \"{{ prompt_file }}\"]`".to_owned()),
                );
            }
            if let Some(token) = &spec.forge.token_env {
                for (e, env) in def.env.iter().enumerate() {
                    if env.as_str() == token.as_str() {
                        self.push(
                            &path.key("env").index(e),
                            format!(
                                "agent `{name}` would get the forge's token `{token}`; only \
                                 dispatch's publish and merge steps hold it, on the host"
                            ),
                            "the forge token",
                            Some("pass the agent only its own provider's keys".to_owned()),
                        );
                    }
                }
            }
            for (m, mount) in def.mounts.iter().enumerate() {
                if engine_socket(&mount.source) {
                    self.push(
                        &path.key("mounts").index(m).key("source"),
                        format!(
                            "mount source `{}` would hand the agent the container engine (its \
                             socket, or the whole filesystem): root on this machine",
                            mount.source
                        ),
                        "the engine",
                        None,
                    );
                }
                if !mount.target.starts_with('/') || mount.target.split('/').any(|c| c == "..") {
                    self.push(
                        &path.key("mounts").index(m).key("target"),
                        format!(
                            "mount target `{}` must be an absolute path without `..`",
                            mount.target
                        ),
                        "bad mount target",
                        None,
                    );
                }
                if mount.source.is_empty() || mount.source.split('/').any(|c| c == "..") {
                    self.push(
                        &path.key("mounts").index(m).key("source"),
                        format!(
                            "mount source `{}` must be a path without `..`",
                            mount.source
                        ),
                        "bad mount source",
                        None,
                    );
                }
            }
        }
        if let Some(agent) = &spec.defaults.agent {
            self.agent_ref(spec, agent, &p().key("defaults").key("agent"));
        }
        for (i, job) in spec.jobs.iter().enumerate() {
            if let Some(agent) = &job.agent {
                self.agent_ref(spec, agent, &p().key("jobs").index(i).key("agent"));
            }
            if let Some(review) = &job.review {
                self.agent_ref(
                    spec,
                    &review.agent,
                    &p().key("jobs").index(i).key("review").key("agent"),
                );
            }
        }
    }

    /// Says so when `pool` (a key at `path`, of a `what`) is no agent pool of the spec.
    fn check_pool(&mut self, spec: &Spec, pool: &str, path: &Path, what: &str) {
        let known: Vec<&str> = PRESET_POOLS
            .iter()
            .copied()
            .chain(spec.agents.keys().map(String::as_str))
            .collect();
        if !known.contains(&pool) {
            let help =
                did_you_mean(pool, known.iter().copied()).map(|s| format!("did you mean `{s}`?"));
            self.push_at(
                self.doc.key_span(path),
                format!("{what} for unknown agent pool `{pool}`"),
                "unknown pool",
                help,
            );
        }
    }

    /// Budgets: keys of `budget.agents` are agent pools or models, caps are above zero, and a
    /// total comes with a per-unit cap on the same measure for every unit it counts (so each
    /// unit can reserve its share before it starts).
    fn budget(&mut self, spec: &Spec) {
        for key in spec.budget.agents.keys() {
            let path = p().key("budget").key("agents").key(key);
            match AgentRef::parse(key) {
                Ok(agent) => self.check_pool(spec, agent.pool(), &path, "budget"),
                Err(message) => self.push(&path, message, "bad budget key", None),
            }
        }
        for (j, job) in spec.jobs.iter().enumerate() {
            let agent = crate::plan::agent_of(spec, j);
            let scopes = spec.budget.scopes(spec, j, &agent);
            type Field = fn(&super::model::Cap) -> bool;
            let measures: [(&str, Field); 3] = [
                ("max_usd", |c| c.max_usd.is_some()),
                ("max_tokens", |c| c.max_tokens.is_some()),
                ("max_turns", |c| c.max_turns.is_some()),
            ];
            for (field, set) in measures {
                let total = scopes
                    .iter()
                    .find(|s| s.caps.total.as_ref().is_some_and(set));
                let per_unit = scopes
                    .iter()
                    .any(|s| s.caps.per_unit.as_ref().is_some_and(set));
                if let (Some(total), false) = (total, per_unit) {
                    self.push(
                        &p().key("jobs").index(j).key("id"),
                        format!(
                            "job `{}` counts against {}.total.{field} but no per-unit {field} applies to its units",
                            job.id, total.name
                        ),
                        "no per-unit cap",
                        Some(format!(
                            "set `budget.per_unit.{field}` (or the job's `budget.per_unit.{field}`): each unit reserves its cap against the total before it starts"
                        )),
                    );
                }
            }
        }
    }

    /// Rollout waves follow the plan's order (job order): a job in waves may only need jobs
    /// before it, else a unit of an early wave would wait for one of a later wave forever.
    fn rollout(&mut self, spec: &Spec) {
        let Some(rollout) = &spec.rollout else {
            return;
        };
        if rollout.canary.is_none() && rollout.batch.is_none() {
            return;
        }
        for (j, job) in spec.jobs.iter().enumerate() {
            for (i, need) in job.needs.iter().enumerate() {
                let later = spec.jobs[j..].iter().any(|other| other.id == *need);
                if later {
                    self.push(
                        &p().key("jobs").index(j).key("needs").index(i),
                        format!(
                            "job `{}` needs `{need}`, which comes after it, but rollout waves start units in job order",
                            job.id
                        ),
                        "a later job",
                        Some("list the jobs a job needs before it".to_owned()),
                    );
                }
            }
        }
    }

    fn limits(&mut self, spec: &Spec) {
        for (pool, limit) in &spec.limits.agents {
            let path = p().key("limits").key("agents").key(pool);
            self.check_pool(spec, pool, &path, "limit");
            if let (PoolLimit::PerModel(models), Some(total)) = (limit, spec.limits.total) {
                if let Some(value) = models.get("total").filter(|v| v.0 > total) {
                    self.push(
                        &path.key("total"),
                        format!(
                            "pool `{pool}` allows {} at once but `limits.total` is {total}",
                            value.0
                        ),
                        "above the total",
                        None,
                    );
                }
            }
        }
        for key in spec.limits.rates.keys() {
            let path = p().key("limits").key("rates").key(key);
            match AgentRef::parse(key) {
                Ok(agent) => self.check_pool(spec, agent.pool(), &path, "limit"),
                Err(message) => self.push(&path, message, "bad rate key", None),
            }
        }
    }

    fn forge(&mut self, spec: &Spec) {
        let forge = &spec.forge;
        if forge.kind == ForgeKind::Local {
            for (j, job) in spec.jobs.iter().enumerate() {
                for (t, entry) in job.repos.iter().enumerate() {
                    if matches!(entry, TargetSpec::Select(s) if s.select.issues.is_some()) {
                        self.push(
                            &p().key("jobs").index(j).key("repos").index(t).key("select").key("issues"),
                            "the local forge keeps no issues, so `select.issues` finds nothing there".to_owned(),
                            "needs a remote forge",
                            Some("set `forge.kind` to forgejo, gitea or github, or list the targets with `issue:`".to_owned()),
                        );
                    }
                }
            }
        } else {
            if forge.url.is_none() && forge.kind != ForgeKind::Github {
                self.push(
                    &p().key("forge"),
                    format!("forge `{:?}` needs a `url`", forge.kind).to_lowercase(),
                    "no url",
                    None,
                );
            }
            if forge.token_env.is_none() {
                self.push(
                    &p().key("forge"),
                    "a remote forge needs `token_env`, the name of the variable holding its token"
                        .to_owned(),
                    "no token_env",
                    None,
                );
            }
        }
    }

    fn runtime(&mut self, spec: &Spec) {
        if spec.runtime.kind == RuntimeKind::Kubernetes {
            if let Err(why) = kubernetes_reaches(&spec.forge) {
                let at = if why.of_git_url {
                    p().key("forge").key("git_url")
                } else {
                    p().key("runtime").key("kind")
                };
                self.push(&at, why.message, why.label, Some(why.help));
            }
        }
    }

    fn templates(&mut self, spec: &Spec, templates: &Templates) {
        let check = |v: &mut Self, name: &str, path: Path, persona: bool| {
            let exists = if persona {
                templates.has_persona(name)
            } else {
                templates.has(name)
            };
            if !exists {
                let names: Vec<&str> = if persona {
                    templates.persona_names().collect()
                } else {
                    templates.names().collect()
                };
                let what = if persona { "persona" } else { "template" };
                let help = did_you_mean(name, names.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("known {what}s: {}", names.join(", ")));
                v.push(
                    &path,
                    format!("unknown {what} `{name}`"),
                    &format!("unknown {what}"),
                    Some(help),
                );
            }
        };
        if let Some(name) = &spec.defaults.template {
            check(self, name, p().key("defaults").key("template"), false);
        }
        if let Some(name) = &spec.defaults.persona {
            check(self, name, p().key("defaults").key("persona"), true);
        }
        for (i, job) in spec.jobs.iter().enumerate() {
            let job_path = p().key("jobs").index(i);
            if let Some(name) = &job.template {
                check(self, name, job_path.key("template"), false);
            }
            if let Some(name) = &job.persona {
                check(self, name, job_path.key("persona"), true);
            }
            if let Some(name) = &job.plan {
                check(self, name, job_path.key("plan"), false);
            }
            if let Some(name) = &job.pr.body {
                check(self, name, job_path.key("pr").key("body"), false);
            }
            if let Some(name) = job.review.as_ref().and_then(|r| r.template.as_ref()) {
                check(self, name, job_path.key("review").key("template"), false);
            }
        }
    }

    fn units(&mut self, spec: &Spec, targets: &[ResolvedTarget]) {
        let mut seen: BTreeMap<(usize, String, String, String), usize> = BTreeMap::new();
        for target in targets {
            let key = (
                target.job,
                target.org.to_string(),
                target.repo.to_string(),
                target.key.clone(),
            );
            let path = p()
                .key("jobs")
                .index(target.job)
                .key("repos")
                .index(target.index);
            if let Some(&first) = seen.get(&key) {
                let job = &spec.jobs[target.job];
                self.push(
                    &path,
                    format!("job `{}` lists `{}` twice (workspace key `{}`)", job.id, target.full_name(), target.key),
                    "duplicate target",
                    Some(format!("the first is entry {} of `repos`; remove one or give them different issues", first + 1)),
                );
            } else {
                seen.insert(key, target.index);
            }
        }
    }

    /// Renders the prompts, PR titles and bodies that could fail: each job's first plain
    /// target, and every target with its own variables or an issue or PR, since only those
    /// change which variables exist.
    fn renders<'t>(
        &mut self,
        spec: &Spec,
        templates: &Templates,
        targets: impl Iterator<Item = &'t ResolvedTarget>,
    ) {
        let mut seen_plain = BTreeSet::new();
        let mut reported = BTreeSet::new();
        for target in targets {
            let job = &spec.jobs[target.job];
            let has_own = target.issue.is_some()
                || target.pr.is_some()
                || target.variables.len() != job.variables.len();
            if !has_own && !seen_plain.insert(target.job) {
                continue;
            }
            let context = unit_context(spec, target);
            let parts = prompt_parts(spec, target.job);
            let known = templates.has(parts.template)
                && parts.persona.is_none_or(|n| templates.has_persona(n))
                && parts.plan.is_none_or(|n| templates.has(n));
            let mut errors = Vec::new();
            if known {
                errors.extend(templates.prompt(parts, &context).err());
            }
            if job.publish {
                let title_path = p().key("jobs").index(target.job).key("pr").key("title");
                if let Err(error) = templates.render_inline(
                    "pr.title",
                    job.pr.title.as_deref().unwrap_or("{{ task }}"),
                    &context,
                ) {
                    if reported.insert((
                        "pr.title".to_owned(),
                        Some(target.job),
                        error.variable.clone(),
                    )) {
                        self.push(
                            &title_path,
                            format!("PR title of job `{}`: {error}", job.id),
                            "in this template",
                            None,
                        );
                    }
                }
                let body = job.pr.body.as_deref().unwrap_or("pr-body");
                if templates.has(body) {
                    errors.extend(templates.render(body, &context).err());
                }
            }
            for error in errors {
                if reported.insert((error.template.clone(), error.line, error.variable.clone())) {
                    let path = p()
                        .key("jobs")
                        .index(target.job)
                        .key("repos")
                        .index(target.index);
                    let problem = template_problem(
                        &error,
                        self.sources,
                        format!("while rendering for {} ({path})", target.full_name()),
                    );
                    self.problems.push(problem);
                }
            }
        }
    }
}

/// Why a Kubernetes cluster cannot reach the forge's git, for [`kubernetes_reaches`].
#[derive(Debug)]
pub struct Unreachable {
    /// The problem.
    pub message: String,
    /// A short label.
    pub label: &'static str,
    /// What to do.
    pub help: String,
    /// Whether it is `forge.git_url` that is wrong (else the runtime, for the forge).
    pub of_git_url: bool,
}

/// Whether pods can clone from and push to the forge's git: the pods reach it over HTTP(S)
/// (they hold no SSH keys and see no local directory), so the local forge needs a `git_url`
/// the cluster reaches, and a remote forge's `git_url`, when set, must be HTTP(S).
pub fn kubernetes_reaches(forge: &Forge) -> Result<(), Unreachable> {
    let http = |url: &str| url.starts_with("https://") || url.starts_with("http://");
    match (&forge.kind, forge.git_url.as_deref()) {
        (ForgeKind::Local, None) => Err(Unreachable {
            message: "the Kubernetes backend clones each unit's ref in the cluster, and the \
                      local forge's repositories are directories on this machine, which no pod \
                      can reach"
                .to_owned(),
            label: "the cluster cannot reach the local forge",
            help: "serve the state directory's `forge/` over HTTP (e.g. `git http-backend`) \
                   and set `forge.git_url` to the URL the cluster reaches it at, or use a \
                   remote forge"
                .to_owned(),
            of_git_url: false,
        }),
        (_, Some(url)) if !http(url) => Err(Unreachable {
            message: format!(
                "the Kubernetes backend's pods clone and push over HTTP(S), and `forge.git_url` \
                 is `{url}`"
            ),
            label: "not an HTTP(S) URL",
            help: "give an http:// or https:// `git_url` the cluster reaches (the pods hold \
                   no SSH keys and see no directory of this machine)"
                .to_owned(),
            of_git_url: true,
        }),
        _ => Ok(()),
    }
}

/// Whether a mount source gives a container the engine: the root of the filesystem, `/run`
/// or `/var/run`, or a socket named like Docker's or containerd's.
fn engine_socket(source: &str) -> bool {
    let trimmed = source.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    trimmed.is_empty()
        || matches!(trimmed, "/run" | "/var/run" | "/var/lib/docker")
        || matches!(name, "docker.sock" | "containerd.sock" | "podman.sock")
}

/// The templates that make one job's prompt.
pub fn prompt_parts(spec: &Spec, job: usize) -> PromptParts<'_> {
    let job = &spec.jobs[job];
    PromptParts {
        template: job
            .template
            .as_deref()
            .or(spec.defaults.template.as_deref())
            .unwrap_or("coding"),
        persona: job.persona.as_deref().or(spec.defaults.persona.as_deref()),
        plan: job.plan.as_deref(),
    }
}

/// A template error as a problem pointing into the template file.
pub fn template_problem(error: &RenderError, sources: &mut Sources, context: String) -> Problem {
    let file = sources.add(error.origin.clone(), error.text.clone());
    let text = &error.text;
    let line = error.line.unwrap_or(1).max(1);
    let start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    let end = start
        + text[start.min(text.len())..]
            .find('\n')
            .unwrap_or(text.len().saturating_sub(start));
    let label = match &error.variable {
        Some(variable) => format!("`{variable}` is not defined"),
        None => error.message.clone(),
    };
    Problem::new(
        Span::new(file, start.min(text.len()), end.min(text.len())),
        error.to_string(),
        label,
    )
    .with_help(context)
}
