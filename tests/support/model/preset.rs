//! A spec that runs one agent preset through `dispatch run` against a scripted model server:
//! one repository `t/r1` of the local forge with `file.txt` = `broken`, job `fix` (one fix
//! attempt), the preset's agent in its real CLI's image on the model's
//! network, and a fixture directory `user/` as the HOME dispatch runs with.

use std::path::PathBuf;

use serde_json::Value;

use super::ModelNetwork;
use crate::support::{unit, Test};

/// What differs between the presets' specs.
pub struct PresetSpec<'a> {
    /// The test's name (its fixture directory).
    pub test: &'a str,
    /// The preset (`codex`, `claude`).
    pub agent: &'a str,
    /// Its image.
    pub image: &'a str,
    /// More of `agents.AGENT` (`, env: [X]`), or nothing.
    pub agent_extra: &'a str,
    /// The job's `qa`, as YAML.
    pub qa: &'a str,
    /// More of the job (`, idle_timeout: 20s`), or nothing.
    pub job_extra: &'a str,
    /// Files of the user's home (`user/`), path and text.
    pub home_files: &'a [(&'a str, &'a str)],
    /// The uid dispatch runs as, when not the test's own.
    pub user: Option<u32>,
    /// The job's repositories, each with `file.txt` = `broken` (none: `r1`).
    pub repos: &'a [&'a str],
}

/// The fixture and the HOME of a [`PresetSpec`].
pub struct PresetRun {
    /// The fixture, with the spec.
    pub t: Test,
    /// The user's home dispatch runs with.
    pub home: PathBuf,
}

impl PresetRun {
    /// The fixture of `spec` on `network`; `None` when the test skips (it cannot run as the
    /// uid asked for).
    pub fn new(spec: &PresetSpec<'_>, network: &ModelNetwork) -> Option<Self> {
        let repos = if spec.repos.is_empty() {
            &["r1"][..]
        } else {
            spec.repos
        };
        let t = spec
            .home_files
            .iter()
            .fold(Test::new(spec.test), |t, (path, text)| {
                t.file(&format!("user/{path}"), text)
            });
        let t = repos
            .iter()
            .fold(t, |t, repo| t.repo(repo, &[("file.txt", "broken\n")]))
            .spec(&format!(
                r#"
                version: 1
                name: t
                forge: {{ kind: local, seed: repos }}
                defaults: {{ org: t, agent: {agent}, image: dispatch-busybox, timeout: 3m }}
                agents:
                  {agent}: {{ image: "{image}", network: {network}{extra} }}
                jobs:
                  - {{ id: fix, task: Make file.txt say fixed, repos: [{repos}], qa: {qa}, fix_attempts: 1{job} }}
                "#,
                agent = spec.agent,
                image = spec.image,
                network = network.name,
                extra = spec.agent_extra,
                qa = spec.qa,
                job = spec.job_extra,
                repos = repos.join(", "),
            ));
        let home = t.path("user");
        let t = match spec.user {
            Some(uid) => t.run_as(uid)?,
            None => t,
        };
        let t = t.env("HOME", home.to_str().expect("a UTF-8 path"));
        Some(Self { t, home })
    }

    /// The same with `name=value` in dispatch's environment.
    pub fn env(self, name: &str, value: &str) -> Self {
        Self {
            t: self.t.env(name, value),
            home: self.home,
        }
    }

    /// `dispatch run --output json`, expecting `status`; the report.
    pub fn run(&self, status: i32) -> Value {
        let out = self.t.run(&["run", "spec.yaml", "--output", "json"]);
        let log =
            std::fs::read_to_string(self.t.meta("r1", "fix").join("agent.log")).unwrap_or_default();
        assert_eq!(
            out.status, status,
            "{}\n{}\nagent.log:\n{log}",
            out.stdout, out.stderr
        );
        out.json()
    }

    /// The outcome and reason of the one unit.
    pub fn outcome(report: &Value) -> (String, String) {
        let unit = unit(report, "fix/t/r1");
        (
            unit["outcome"].as_str().unwrap_or_default().to_owned(),
            unit["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// `file.txt` on the branch dispatch published.
    pub fn published(&self) -> String {
        self.t
            .git(".dispatch/forge/t/r1.git", &["show", "agent/fix:file.txt"])
    }
}

/// A [`PresetRun`] with its model server (`S`) and the network they share, which live as long
/// as it does.
pub struct Preset<S> {
    _network: ModelNetwork,
    /// The scripted model server.
    pub server: S,
    run: PresetRun,
}

impl<S> std::ops::Deref for Preset<S> {
    type Target = PresetRun;

    fn deref(&self) -> &PresetRun {
        &self.run
    }
}

impl<S> Preset<S> {
    /// `run` of `spec` on `network` against `server`, with `env` in dispatch's environment;
    /// `None` when the test skips.
    pub fn new(
        spec: &PresetSpec<'_>,
        network: ModelNetwork,
        server: S,
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let run = PresetRun::new(spec, &network)?;
        let run = env
            .iter()
            .fold(run, |run, (name, value)| run.env(name, value));
        Some(Self {
            _network: network,
            server,
            run,
        })
    }

    /// The same with `name=value` in dispatch's environment.
    pub fn env(self, name: &str, value: &str) -> Self {
        Self {
            run: self.run.env(name, value),
            ..self
        }
    }
}
