//! The builder: a fixture directory given a spec, seed repositories and a scripted agent, in
//! which the real binary runs as a user would run it.
//!
//! ```ignore
//! let t = Test::new("mixed")
//!     .scripted_repos(&[("c1", "change"), ("f1", "fail")])
//!     .scripted_spec(r#"
//!         jobs:
//!           - { id: j, task: t, repos: [c1, f1], qa: [] }
//!     "#);
//! let report = t.run(&["run", "spec.yaml", "--output", "json"]).expect_status(1).json();
//! assert_eq!(outcomes(&report)["j/t/f1"], "agent_failed");
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dispatch::state::views::EventRow;
use dispatch::state::Db;
use serde_json::Value;

use super::scripted::{head, AGENT, LOCAL_FORGE, TEST_SH};
use super::terminal::OnTerminal;

/// A fixture directory (removed when dropped) and the environment the binary runs with.
#[must_use]
pub struct Test {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// The uid (and gid) the binary runs as, when not the test's own.
    user: Option<u32>,
}

impl Test {
    /// A fresh directory holding the scripted agent as `agent.sh`.
    pub fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dispatch-test-{name}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture directory");
        Self {
            dir,
            env: Vec::new(),
            user: None,
        }
        .file("agent.sh", AGENT)
    }

    /// Writes `text` to `path` (relative to the fixture; directories are created).
    pub fn file(self, path: &str, text: &str) -> Self {
        let path = self.path(path);
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write a fixture file");
        self
    }

    /// Replaces the scripted agent `agent.sh`.
    pub fn agent(self, script: &str) -> Self {
        self.file("agent.sh", script)
    }

    /// Seeds repository `t/NAME` of the local forge (`forge.seed: repos`) with `files`.
    pub fn repo(self, name: &str, files: &[(&str, &str)]) -> Self {
        files.iter().fold(self, |t, (file, text)| {
            t.file(&format!("repos/t/{name}/{file}"), text)
        })
    }

    /// Seeds one repository per `(name, behaviour)`: its `behaviour` file tells the scripted
    /// agent what to do, and `test.sh` is the QA script that judges the result.
    pub fn scripted_repos(self, repos: &[(&str, &str)]) -> Self {
        repos.iter().fold(self, |t, (name, behaviour)| {
            t.repo(
                name,
                &[
                    ("behaviour", &format!("{behaviour}\n")),
                    ("test.sh", TEST_SH),
                ],
            )
        })
    }

    /// Writes `spec.yaml`: `yaml` with its common indentation removed.
    pub fn spec(self, yaml: &str) -> Self {
        self.file("spec.yaml", &unindent(yaml))
    }

    /// Writes `spec.yaml`: the head that runs the scripted agent on the local forge seeded
    /// from `repos/`, with org `t` (see `scripted::head`), followed by `rest` (unindented).
    pub fn scripted_spec(self, rest: &str) -> Self {
        self.scripted_spec_on(LOCAL_FORGE, "t", rest)
    }

    /// Writes `dispatch.yaml`, a defaults spec of the one-call form: the head of
    /// [`Test::scripted_spec`] without jobs (the scripted agent on the local forge, org `t`).
    pub fn scripted_defaults(self) -> Self {
        self.file("dispatch.yaml", &head(LOCAL_FORGE, "t"))
    }

    /// Writes `spec.yaml`: the head that runs the scripted agent on `forge` (a YAML flow
    /// mapping) with org `org`, followed by `rest` (unindented).
    pub fn scripted_spec_on(self, forge: &str, org: &str, rest: &str) -> Self {
        self.file(
            "spec.yaml",
            &format!("{}{}", head(forge, org), unindent(rest)),
        )
    }

    /// Runs the binary as `uid` (group `uid`, plus the group of the Docker socket) with
    /// `setpriv`, the fixture owned by it, as a user without root would run dispatch; `None`
    /// (with a note) when the test does not run as root and so cannot.
    pub fn run_as(mut self, uid: u32) -> Option<Self> {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("DISPATCH_REQUIRE_DOCKER").is_none(),
                "running dispatch as another uid needs root, which CI has"
            );
            eprintln!("note: skipped, running dispatch as uid {uid} needs root");
            return None;
        }
        self.user = Some(uid);
        Some(self)
    }

    /// Sets an environment variable for every run of the binary.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The environment the fixture gives the binary.
    pub fn envs(&self) -> &[(String, String)] {
        &self.env
    }

    /// Runs `dispatch ARGS` in the fixture and waits for it.
    pub fn run(&self, args: &[&str]) -> Output {
        Output::of(
            self.command(args)
                .output()
                .expect("the dispatch binary runs"),
            args,
        )
    }

    /// Runs `dispatch ARGS` in the fixture's directory `dir` and waits for it.
    pub fn run_in(&self, dir: &str, args: &[&str]) -> Output {
        let mut command = self.command(args);
        command.current_dir(self.path(dir));
        Output::of(command.output().expect("the dispatch binary runs"), args)
    }

    /// Runs `dispatch ARGS` in the fixture with its stdout and stderr on terminals, as a
    /// person at a terminal runs it, and waits for it.
    pub fn run_on_terminal(&self, args: &[&str]) -> OnTerminal {
        super::terminal::run(self.command(args))
    }

    /// Starts `dispatch ARGS` in the fixture without waiting.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the dispatch binary starts");
        Running {
            child,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = match self.user {
            None => binary(args),
            Some(uid) => {
                let chown = Command::new("chown")
                    .arg("-R")
                    .arg(format!("{uid}:{uid}"))
                    .arg(&self.dir)
                    .status()
                    .expect("chown runs");
                assert!(chown.success(), "chown the fixture to {uid}");
                use std::os::unix::fs::MetadataExt;
                let docker = std::fs::metadata("/var/run/docker.sock")
                    .map(|m| m.gid())
                    .expect("the Docker socket");
                let inner = binary(args);
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg(format!("--groups={docker}"))
                    .arg("--")
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (key, value) in inner.get_envs() {
                    match value {
                        Some(value) => command.env(key, value),
                        None => command.env_remove(key),
                    };
                }
                command
            }
        };
        command
            .current_dir(&self.dir)
            .envs(self.env.iter().cloned());
        command
    }

    /// `path` inside the fixture.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }

    /// The text of `path` inside the fixture.
    pub fn read(&self, path: &str) -> String {
        let path = self.path(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The `meta/` directory of the workspace of `t/REPO` with `key`.
    pub fn meta(&self, repo: &str, key: &str) -> PathBuf {
        self.path(&format!(".dispatch/workspaces/t/{repo}/{key}/meta"))
    }

    /// How often the scripted agent ran in the workspace of `t/REPO` with `key`.
    pub fn agent_runs(&self, repo: &str, key: &str) -> usize {
        std::fs::read_to_string(self.meta(repo, key).join("agent-runs"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// `git ARGS` in `dir` (relative to the fixture); its trimmed stdout.
    pub fn git(&self, dir: &str, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
            .args(["-c", "init.defaultBranch=main"])
            // The fixture may belong to the uid dispatch ran as (`run_as`).
            .args(["-c", "safe.directory=*"])
            .args(args)
            .current_dir(self.path(dir))
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} in {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The journal's events of `run`, in order, through the library's typed view.
    pub fn events(&self, run: &str) -> Vec<EventRow> {
        let db = Db::open(&self.path(".dispatch")).expect("the state opens");
        db.events(run).expect("the events read")
    }

    /// Waits (up to 30 s) until the newest run's journal records a container; that run's id.
    pub fn wait_for_container(&self) -> String {
        let dir = self.path(".dispatch");
        for _ in 0..300 {
            // Read-only: the runner may still be creating the database.
            let db = Db::exists_in(&dir).then(|| Db::open_read_only(&dir));
            let run = db.and_then(Result::ok).and_then(|db| {
                let run = db.runs(1).ok()?.into_iter().next()?;
                let events = db.events(&run.id).ok()?;
                events
                    .iter()
                    .any(|e| e.kind == "container")
                    .then_some(run.id)
            });
            if let Some(run) = run {
                return run;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no container started within 30 s");
    }
}

impl Drop for Test {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `dispatch ARGS` in the repository root, for the shipped pipelines and specs.
pub fn dispatch(args: &[&str]) -> Output {
    let output = binary(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the dispatch binary runs");
    Output::of(output, args)
}

/// The binary with colour off and no log filter from the environment.
fn binary(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["--color", "never"])
        .args(args)
        .env_remove("RUST_LOG");
    command
}

/// A `dispatch` running in the background.
pub struct Running {
    child: std::process::Child,
    args: Vec<String>,
}

impl Running {
    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// Sends `signal` (SIGTERM, SIGHUP, ...).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill with a valid pid and signal has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Waits for it to end.
    pub fn wait(self) -> Output {
        let output = self.child.wait_with_output().expect("dispatch ends");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Output::of(output, &args)
    }
}

/// What one run of `dispatch` printed, and how it exited.
pub struct Output {
    /// Exit code (-1 when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    fn of(output: std::process::Output, args: &[&str]) -> Self {
        let out = Self {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !out.stderr.contains("panicked"),
            "dispatch panicked on {args:?}:\n{}",
            out.stderr
        );
        out
    }

    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn expect_status(self, code: i32) -> Self {
        assert_eq!(
            self.status, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Standard output parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is no JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Unit id -> outcome of a report with `units` (`run --output json`, `status --json`).
pub fn outcomes(report: &Value) -> BTreeMap<String, String> {
    report["units"]
        .as_array()
        .unwrap_or_else(|| panic!("no units in {report}"))
        .iter()
        .map(|u| {
            let id = u["id"].as_str().expect("a unit has an id");
            (
                id.to_owned(),
                u["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The unit `id` of a report with `units`.
pub fn unit<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["units"]
        .as_array()
        .and_then(|units| units.iter().find(|u| u["id"] == id))
        .unwrap_or_else(|| panic!("no unit {id} in {report}"))
}

/// `text` without its leading newline and without the indentation its lines share, so that
/// specs can be written indented in the test's source.
fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}
