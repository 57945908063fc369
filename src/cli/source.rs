//! Where a command's spec comes from: a spec file, or the one-call form, a defaults spec plus
//! one task from the command line (`dispatch run --repo ORG/REPO --task TEXT ...`).
//!
//! The one-call form behaves exactly like a spec with that one target: its job is written as
//! YAML ([`Task::job_yaml`]) and loaded into the defaults spec as its only job
//! ([`crate::spec::load_with_job`]), so validation, plan, units, outcomes, journal and PRs are
//! the spec's. Invariants:
//!
//! - the job's id is `task-` and a digest of every input, so the same call is the same job
//!   (a second run of it continues or repeats the first, as a spec's would) and two different
//!   calls on one repository never share a workspace or a branch;
//! - a run of the one-call form records its spec as `DEFAULTS#JOB` and keeps the job's YAML in
//!   the state directory (`tasks/JOB.yaml`, written by dispatch, where no container reaches),
//!   so `resume`, `retry` and `answer` load the same spec again ([`Source::of_run`]);
//! - no input ever reaches YAML unquoted: every value is written as a JSON string or number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{CommandError, Ui};
use crate::spec::{ExtraJob, LoadedSpec};

/// The one-call form's arguments, shared by `run` and `plan`.
#[derive(Debug, Default, clap::Args)]
pub struct TaskArgs {
    /// One-call form: the repository, `ORG/REPO` (with --task; no spec is named).
    #[arg(long, value_name = "ORG/REPO", requires = "task")]
    pub repo: Option<String>,
    /// One-call form: what the agent should do.
    #[arg(long, value_name = "TEXT", requires = "repo")]
    pub task: Option<String>,
    /// One-call form: the agent (default from the defaults spec).
    #[arg(long, requires = "repo")]
    pub agent: Option<String>,
    /// One-call form: work on this issue.
    #[arg(long, requires = "repo", conflicts_with_all = ["pr", "branch", "tag"])]
    pub issue: Option<u64>,
    /// One-call form: work on this pull request's branch.
    #[arg(long, requires = "repo", conflicts_with_all = ["branch", "tag"])]
    pub pr: Option<u64>,
    /// One-call form: work on this existing branch.
    #[arg(long, requires = "repo", conflicts_with = "tag")]
    pub branch: Option<String>,
    /// One-call form: start from this tag.
    #[arg(long, requires = "repo")]
    pub tag: Option<String>,
    /// One-call form: the task template.
    #[arg(long, requires = "repo")]
    pub template: Option<String>,
    /// One-call form: the persona template, e.g. `testing/tester`.
    #[arg(long, requires = "repo")]
    pub persona: Option<String>,
    /// One-call form: a plan template whose text the task template gets as `plan`.
    #[arg(long, requires = "repo")]
    pub plan_template: Option<String>,
    /// One-call form: a template variable, `NAME=VALUE` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", requires = "repo")]
    pub vars: Vec<String>,
    /// One-call form: the defaults spec (default: `dispatch.yaml` in the current directory or
    /// the nearest parent, else `~/.config/dispatch/defaults.yaml`).
    #[arg(long, value_name = "FILE", requires = "repo")]
    pub defaults: Option<PathBuf>,
}

/// One task of the one-call form, as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    /// `ORG/REPO`.
    pub repo: String,
    /// What the agent should do.
    pub task: String,
    /// The agent.
    pub agent: Option<String>,
    /// Issue number.
    pub issue: Option<u64>,
    /// PR number.
    pub pr: Option<u64>,
    /// Existing branch.
    pub branch: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Task template.
    pub template: Option<String>,
    /// Persona template.
    pub persona: Option<String>,
    /// Plan template.
    pub plan: Option<String>,
    /// Template variables.
    pub variables: BTreeMap<String, String>,
}

impl Task {
    /// The job, as the YAML of one mapping: every value a JSON scalar (valid YAML flow).
    pub fn job_yaml(&self) -> Result<String, String> {
        let Some((org, repo)) = self.repo.split_once('/') else {
            return Err(format!("--repo `{}` is not ORG/REPO", self.repo));
        };
        let mut target = serde_json::Map::new();
        target.insert("org".into(), org.into());
        target.insert("repo".into(), repo.into());
        let numbers = [("issue", self.issue), ("pr", self.pr)];
        for (name, value) in numbers {
            if let Some(n) = value {
                target.insert(name.into(), n.into());
            }
        }
        for (name, value) in [("branch", &self.branch), ("tag", &self.tag)] {
            if let Some(v) = value {
                target.insert(name.into(), v.as_str().into());
            }
        }
        let quoted = |value: &str| serde_json::Value::from(value).to_string();
        let mut yaml = format!("id: {}\ntask: {}\n", quoted(&self.id()), quoted(&self.task));
        let optional = [
            ("agent", &self.agent),
            ("template", &self.template),
            ("persona", &self.persona),
            ("plan", &self.plan),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                yaml.push_str(&format!("{name}: {}\n", quoted(value)));
            }
        }
        if !self.variables.is_empty() {
            yaml.push_str(&format!(
                "variables: {}\n",
                serde_json::to_string(&self.variables).unwrap_or_default()
            ));
        }
        yaml.push_str(&format!("repos: [{}]\n", serde_json::Value::Object(target)));
        Ok(yaml)
    }

    /// The job's id: `task-` and the first 12 hex digits of a digest of every input.
    pub fn id(&self) -> String {
        let mut digest = Sha256::new();
        let fields: [(&str, Option<String>); 11] = [
            ("repo", Some(self.repo.clone())),
            ("task", Some(self.task.clone())),
            ("agent", self.agent.clone()),
            ("issue", self.issue.map(|n| n.to_string())),
            ("pr", self.pr.map(|n| n.to_string())),
            ("branch", self.branch.clone()),
            ("tag", self.tag.clone()),
            ("template", self.template.clone()),
            ("persona", self.persona.clone()),
            ("plan", self.plan.clone()),
            (
                "variables",
                Some(serde_json::to_string(&self.variables).unwrap_or_default()),
            ),
        ];
        for (name, value) in fields {
            // Length-prefixed, so that no two different inputs digest alike.
            let value = value.unwrap_or_default();
            digest.update(format!("{name}:{}:", value.len()));
            digest.update(value.as_bytes());
        }
        let hex: String = digest
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("task-{hex}")
    }
}

impl TaskArgs {
    /// The task these arguments give, if they give one.
    pub fn task(&self) -> Result<Option<Task>, CommandError> {
        let (Some(repo), Some(task)) = (&self.repo, &self.task) else {
            return Ok(None);
        };
        let mut variables = BTreeMap::new();
        for var in &self.vars {
            let Some((name, value)) = var.split_once('=') else {
                return Err(CommandError::invalid(format_args!(
                    "--var `{var}` is not NAME=VALUE"
                )));
            };
            variables.insert(name.to_owned(), value.to_owned());
        }
        Ok(Some(Task {
            repo: repo.clone(),
            task: task.clone(),
            agent: self.agent.clone(),
            issue: self.issue,
            pr: self.pr,
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            template: self.template.clone(),
            persona: self.persona.clone(),
            plan: self.plan_template.clone(),
            variables,
        }))
    }
}

/// Where a command's spec comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A spec file.
    Spec(PathBuf),
    /// A defaults spec and one job of the one-call form, as YAML.
    Task {
        /// The defaults spec.
        defaults: PathBuf,
        /// The job's id.
        job: String,
        /// The job, as YAML.
        yaml: String,
    },
}

/// Where the job of a one-call run is kept, in the state directory.
fn task_file(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("tasks").join(format!("{job}.yaml"))
}

/// How diagnostics name the job of the one-call form.
const FROM_THE_COMMAND_LINE: &str = "the one-call task (command line)";

impl Source {
    /// The spec `spec` names, or the one-call form of `task` (a spec or a task, never both and
    /// never neither).
    pub fn of(spec: Option<&Path>, task: &TaskArgs) -> Result<Self, CommandError> {
        match (spec, task.task()?) {
            (Some(_), Some(_)) => Err(CommandError::invalid(
                "name a spec or give --repo and --task (the one-call form), not both",
            )),
            (Some(spec), None) => Ok(Self::Spec(spec.to_owned())),
            (None, None) => Err(CommandError::invalid(
                "name a spec, or give --repo ORG/REPO and --task TEXT (the one-call form)",
            )),
            (None, Some(one)) => {
                let defaults = match &task.defaults {
                    Some(path) => path.clone(),
                    None => defaults_spec()?,
                };
                let yaml = one.job_yaml().map_err(CommandError::invalid)?;
                Ok(Self::Task {
                    defaults,
                    job: one.id(),
                    yaml,
                })
            }
        }
    }

    /// The source of run `spec_path` as the journal recorded it (`DEFAULTS#JOB` for the
    /// one-call form, whose job is read back from the state directory).
    pub fn of_run(state_dir: &Path, spec_path: &str) -> Result<Self, CommandError> {
        // A spec path may hold a `#` itself: only `#task-HEX` at the end is a one-call task.
        let one_call = spec_path.rsplit_once('#').filter(|(_, job)| {
            job.strip_prefix("task-")
                .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        let Some((defaults, job)) = one_call else {
            return Ok(Self::Spec(PathBuf::from(spec_path)));
        };
        let file = task_file(state_dir, job);
        let yaml = std::fs::read_to_string(&file).map_err(|error| {
            CommandError::failure(format_args!(
                "cannot read the one-call task {} of {spec_path}: {error}",
                file.display()
            ))
        })?;
        Ok(Self::Task {
            defaults: PathBuf::from(defaults),
            job: job.to_owned(),
            yaml,
        })
    }

    /// The file the state directory is beside (the spec, or the defaults spec).
    pub fn file(&self) -> &Path {
        match self {
            Self::Spec(path) => path,
            Self::Task { defaults, .. } => defaults,
        }
    }

    /// Loads and validates the spec.
    pub fn load(&self, ui: &Ui) -> Result<LoadedSpec, CommandError> {
        match self {
            Self::Spec(path) => ui.load_spec(path),
            Self::Task { defaults, yaml, .. } => {
                let job = ExtraJob {
                    source: FROM_THE_COMMAND_LINE.to_owned(),
                    yaml: yaml.clone(),
                };
                crate::spec::load_with_job(defaults, job).map_err(|e| ui.load_error(&e))
            }
        }
    }

    /// What the journal records as the run's spec, and what its lock is taken on: the
    /// canonical spec path, or `DEFAULTS#JOB`.
    pub fn run_key(&self) -> String {
        let file = self.file();
        let path = std::fs::canonicalize(file)
            .or_else(|_| std::path::absolute(file))
            .unwrap_or_else(|_| file.to_owned())
            .display()
            .to_string();
        match self {
            Self::Spec(_) => path,
            Self::Task { job, .. } => format!("{path}#{job}"),
        }
    }

    /// Keeps the job of the one-call form in `state_dir` for `resume`, `retry` and `answer`
    /// (nothing for a spec file).
    pub fn keep(&self, state_dir: &Path) -> Result<(), CommandError> {
        let Self::Task { job, yaml, .. } = self else {
            return Ok(());
        };
        let file = task_file(state_dir, job);
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let scratch = file.with_extension("yaml.new");
                std::fs::write(&scratch, yaml)?;
                std::fs::rename(&scratch, &file)
            });
        written.map_err(|error| {
            CommandError::failure(format_args!("cannot write {}: {error}", file.display()))
        })
    }
}

impl Source {
    /// For a run of the one-call form: a slot of its defaults spec's `limits.total` and one of
    /// its agent pool's limit, shared with every other one-call run of that defaults spec in
    /// `state_dir` (one per MCP `dispatch` call), waited for until free; held until dropped.
    /// Nothing for a spec file, whose run is its spec's alone and limited by the executor.
    pub async fn shared_slots(
        &self,
        state_dir: &Path,
        loaded: &LoadedSpec,
        plan: &crate::plan::Plan,
    ) -> Result<Vec<crate::state::slots::Slot>, CommandError> {
        let Self::Task { .. } = self else {
            return Ok(Vec::new());
        };
        let key = self.run_key();
        let spec = key.rsplit_once('#').map_or(key.as_str(), |(spec, _)| spec);
        let limits = &loaded.spec.limits;
        let mut wanted = vec![("total".to_owned(), crate::exec::limits::total(&loaded.spec))];
        for unit in &plan.units {
            let pool = unit.agent.pool();
            if let Some(limit) = limits.agents.get(pool).and_then(|l| l.total()) {
                wanted.push((format!("pool-{pool}"), limit));
            }
        }
        wanted.dedup();
        let mut held = Vec::new();
        // Always in this order (total, then the pool): no two runners wait on each other.
        for (name, n) in wanted {
            let dir = crate::state::slots::dir(state_dir, spec, &name);
            let slot = tokio::task::spawn_blocking(move || crate::state::slots::take(&dir, n))
                .await
                .map_err(|e| CommandError::failure(format_args!("waiting for a slot: {e}")))?
                .map_err(|e| CommandError::failure(format_args!("waiting for a slot: {e}")))?;
            held.push(slot);
        }
        Ok(held)
    }
}

/// The defaults spec of the one-call form: `dispatch.yaml` in the current directory or the
/// nearest parent, else `$XDG_CONFIG_HOME/dispatch/defaults.yaml` (`~/.config/...`).
fn defaults_spec() -> Result<PathBuf, CommandError> {
    let cwd = std::env::current_dir()
        .map_err(|e| CommandError::failure(format_args!("the current directory: {e}")))?;
    if let Some(found) = cwd
        .ancestors()
        .map(|dir| dir.join("dispatch.yaml"))
        .find(|file| file.is_file())
    {
        return Ok(found);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    let user = config.map(|dir| dir.join("dispatch").join("defaults.yaml"));
    match user {
        Some(file) if file.is_file() => Ok(file),
        _ => Err(CommandError::invalid(format_args!(
            "the one-call form needs a defaults spec: no dispatch.yaml in {} or a parent, and no {}",
            cwd.display(),
            user.map_or("~/.config/dispatch/defaults.yaml".to_owned(), |f| f
                .display()
                .to_string())
        ))
        .hint("write a dispatch.yaml with forge, defaults, limits and agents (no jobs), or name one with --defaults FILE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            repo: "core/go-io".to_owned(),
            task: "Fix \"it\"\n: now".to_owned(),
            issue: Some(5),
            variables: [("k".to_owned(), "v: x".to_owned())].into(),
            ..Task::default()
        }
    }

    #[test]
    fn the_job_is_yaml_of_json_scalars_with_an_id_from_every_input() {
        let yaml = task().job_yaml().expect("a job");
        let id = task().id();
        assert!(id.starts_with("task-") && id.len() == 17, "{id}");
        assert!(yaml.starts_with(&format!("id: \"{id}\"\ntask: \"Fix \\\"it\\\"\\n: now\"\n")));
        assert!(
            yaml.contains(r#"repos: [{"issue":5,"org":"core","repo":"go-io"}]"#),
            "{yaml}"
        );
        assert!(yaml.contains(r#"variables: {"k":"v: x"}"#), "{yaml}");
        let other = Task {
            issue: Some(6),
            ..task()
        };
        assert_ne!(other.id(), id, "another issue is another job");
        assert_eq!(task().id(), id, "the same call is the same job");
    }

    #[test]
    fn only_a_task_id_after_the_last_hash_is_a_one_call_run() {
        let dir = Path::new("/nonexistent-state");
        for path in [
            "/specs/a#b/spec.yaml",
            "/specs/spec#1.yaml",
            "/specs/x.yaml#task-",
        ] {
            assert!(
                matches!(Source::of_run(dir, path), Ok(Source::Spec(p)) if p == Path::new(path)),
                "{path}"
            );
        }
        let error = Source::of_run(dir, "/d/dispatch.yaml#task-4639e6691e75").unwrap_err();
        assert!(
            error.stderr().contains("cannot read the one-call task"),
            "{}",
            error.stderr()
        );
    }

    #[test]
    fn a_repo_without_its_org_is_refused() {
        let bad = Task {
            repo: "go-io".to_owned(),
            ..task()
        };
        assert!(bad.job_yaml().unwrap_err().contains("not ORG/REPO"));
    }
}
