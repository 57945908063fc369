//! `dispatch run` against the real Docker engine: a busybox image dispatch builds itself,
//! scripted agents, real bare repositories, the real journal.
//!
//! When the engine is unreachable these tests skip, unless DISPATCH_REQUIRE_DOCKER=1 (CI),
//! where they fail.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::TempDir;

use common::{docker_available, leftovers};

/// The scripted agent: what it does depends on the file `behaviour` in the repository.
const AGENT: &str = r#"#!/bin/sh
set -u
prompt="$1"
echo run >> /workspace/.meta/agent-runs
echo "agent run: $(cat behaviour) with $(wc -c < "$prompt") bytes of prompt"
case "$(cat behaviour)" in
  change) echo "changed" >> file.txt ;;
  none) ;;
  block) echo "Which database should the migration target?" > BLOCKED.md ;;
  fail) echo "boom: cannot continue"; exit 7 ;;
  sleep) sleep 60 ;;
  nap) sleep 1; echo "napped" >> file.txt ;;
  long) sleep 30; echo "late" >> file.txt ;;
  loud) head -c 52428800 /dev/zero; echo; echo "loud" >> file.txt ;;
  fix-on-retry)
    if grep -q "qa-says-not-ok" "$prompt"; then echo ok > status.txt; else echo wrong > status.txt; fi ;;
  qa-fails) echo "tried" >> file.txt ;;
  ask) if [ -f ANSWER.md ]; then echo "answered: $(cat ANSWER.md)" >> file.txt; else echo "Which port should the service use?" > BLOCKED.md; fi ;;
  flaky) if [ -f /workspace/.meta/failed-once ]; then echo "second try" >> file.txt; else touch /workspace/.meta/failed-once; exit 3; fi ;;
esac
"#;

const TEST_SH: &str = r#"#!/bin/sh
case "$(cat behaviour)" in
  fix-on-retry) [ "$(cat status.txt)" = ok ] || { echo "qa-says-not-ok: status.txt is $(cat status.txt)"; exit 1; } ;;
  qa-fails) echo "qa-says-not-ok: always"; exit 1 ;;
esac
echo "tests pass"
"#;

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(name: &str, repos: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(name);
        dir.write("agent.sh", AGENT);
        for (repo, behaviour) in repos {
            dir.write(
                &format!("repos/t/{repo}/behaviour"),
                &format!("{behaviour}\n"),
            );
            dir.write(&format!("repos/t/{repo}/test.sh"), TEST_SH);
        }
        Self { dir }
    }

    fn spec(&self, body: &str) -> PathBuf {
        let head = "version: 1\nname: t\nforge: { kind: local, seed: repos }\ndefaults: { org: t, agent: scripted, image: dispatch-busybox, timeout: 20s }\nagents:\n  scripted:\n    command: [sh, /opt/agent.sh, \"{{ prompt_file }}\"]\n    mounts: [{ source: agent.sh, target: /opt/agent.sh }]\n    network: none\n";
        self.dir.write("spec.yaml", &format!("{head}{body}"))
    }

    fn run(&self, spec: &Path) -> (i32, serde_json::Value) {
        self.run_with(spec, &[])
    }

    /// `dispatch run SPEC --output json ARGS`.
    fn run_with(&self, spec: &Path, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["run", spec.to_str().unwrap(), "--output", "json"];
        all.extend_from_slice(args);
        let out = common::dispatch(&all);
        let json = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}\n{}", out.stdout, out.stderr));
        (out.status, json)
    }

    fn meta(&self, repo: &str, key: &str) -> PathBuf {
        self.dir
            .0
            .join(format!(".dispatch/workspaces/t/{repo}/{key}/meta"))
    }

    fn db(&self) -> dispatch::state::Db {
        dispatch::state::Db::open(&self.dir.0.join(".dispatch")).unwrap()
    }
}

fn outcomes(json: &serde_json::Value) -> BTreeMap<String, String> {
    json["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn ten_units_end_with_honest_mixed_outcomes() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new(
        "mixed",
        &[
            ("c1", "change"),
            ("c2", "change"),
            ("n1", "none"),
            ("b1", "block"),
            ("f1", "fail"),
            ("s1", "sleep"),
            ("l1", "loud"),
            ("r1", "fix-on-retry"),
            ("q1", "qa-fails"),
            ("m1", "change"),
        ],
    );
    let spec = fx.spec(
        "limits: { total: 4 }\njobs:\n  - id: mixed\n    task: Do the thing\n    timeout: 6s\n    repos: [c1, c2, n1, b1, f1, s1, r1, q1]\n    qa: [{ run: sh test.sh }]\n    fix_attempts: 1\n  - id: loud\n    task: Print a lot\n    timeout: 2m\n    repos: [l1]\n    qa: [{ run: sh test.sh }]\n  - id: missing\n    task: Do the thing\n    image: dispatch-no-such-image:1\n    repos: [m1]\n",
    );
    let (status, json) = fx.run(&spec);
    assert_eq!(status, 1, "a failed unit makes the run fail: {json}");
    let got = outcomes(&json);
    let want: BTreeMap<String, String> = [
        ("mixed/t/c1", "changed"),
        ("mixed/t/c2", "changed"),
        ("mixed/t/n1", "no_changes"),
        ("mixed/t/b1", "blocked"),
        ("mixed/t/f1", "agent_failed"),
        ("mixed/t/s1", "timed_out"),
        ("loud/t/l1", "changed"),
        ("mixed/t/r1", "changed"),
        ("mixed/t/q1", "qa_failed"),
        ("missing/t/m1", "infra_error"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(got, want);

    let unit = |id: &str| {
        json["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id)
            .unwrap()
            .clone()
    };
    assert!(
        unit("mixed/t/b1")["reason"]
            .as_str()
            .unwrap()
            .contains("Which database"),
        "the question is the reason"
    );
    assert!(
        fx.meta("b1", "mixed").join("BLOCKED.md").exists(),
        "BLOCKED.md moves to meta/"
    );
    assert!(unit("mixed/t/f1")["reason"]
        .as_str()
        .unwrap()
        .contains("exited with code 7"));
    assert!(
        unit("mixed/t/f1")["reason"]
            .as_str()
            .unwrap()
            .contains("boom: cannot continue"),
        "the log tail is in the reason"
    );
    assert!(
        unit("missing/t/m1")["reason"]
            .as_str()
            .unwrap()
            .contains("dispatch-no-such-image:1"),
        "the missing image is named"
    );
    assert!(
        unit("mixed/t/q1")["reason"]
            .as_str()
            .unwrap()
            .contains("qa-says-not-ok"),
        "the failing step's output is in the reason"
    );
    let loud = std::fs::metadata(fx.meta("l1", "loud").join("agent.log"))
        .unwrap()
        .len();
    assert!(
        loud >= 52_428_800,
        "the whole 50 MB burst reached the log ({loud} bytes)"
    );
    let retry_log = std::fs::read_to_string(fx.meta("r1", "mixed").join("agent.log")).unwrap();
    assert_eq!(
        retry_log.matches("agent run:").count(),
        2,
        "one fix attempt ran the agent twice:\n{retry_log}"
    );
    let q1_log = std::fs::read_to_string(fx.meta("q1", "mixed").join("agent.log")).unwrap();
    assert_eq!(
        q1_log.matches("agent run:").count(),
        2,
        "fix_attempts bounds the loop"
    );

    let prs = common::dispatch(&["prs", spec.to_str().unwrap(), "--json"]);
    let prs: serde_json::Value = serde_json::from_str(&prs.stdout).unwrap();
    let mut repos: Vec<&str> = prs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["repo"].as_str().unwrap())
        .collect();
    repos.sort();
    assert_eq!(
        repos,
        ["c1", "c2", "l1", "r1"],
        "changed units and only those have PRs"
    );
    let branch = Command::new("git")
        .args(["ls-tree", "--name-only", "agent/mixed"])
        .current_dir(fx.dir.0.join(".dispatch/forge/t/c1.git"))
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&branch.stdout).to_string();
    assert!(
        files.contains("file.txt") && !files.contains("BLOCKED.md"),
        "{files}"
    );
    assert_eq!(
        leftovers(json["run"].as_str().unwrap()),
        0,
        "no container is left behind"
    );

    // A second run of the same spec updates the PRs; it never opens a second one.
    let (_, again) = fx.run(&spec);
    assert_eq!(outcomes(&again)["mixed/t/c1"], "changed");
    let prs = common::dispatch(&["prs", spec.to_str().unwrap(), "--json"]);
    let prs: serde_json::Value = serde_json::from_str(&prs.stdout).unwrap();
    assert_eq!(prs.as_array().unwrap().len(), 4);
}

/// The agent events of a run whose node ids start with `prefix`, in order.
fn agent_events(
    db: &dispatch::state::Db,
    run: &str,
    prefix: &str,
) -> Vec<dispatch::state::views::EventRow> {
    db.events(run)
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.node
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(":agent"))
        })
        .collect()
}

/// Max number of nodes of `pool` running at once, from the journal's ordered events.
fn max_concurrent(db: &dispatch::state::Db, run: &str, prefix: &str) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for event in agent_events(db, run, prefix) {
        match event.kind.as_str() {
            "started" => {
                now += 1;
                max = max.max(now);
            }
            "done" | "failed" | "cancelled" => now -= 1,
            _ => {}
        }
    }
    max
}

fn starts(db: &dispatch::state::Db, run: &str, prefix: &str) -> Vec<i64> {
    agent_events(db, run, prefix)
        .into_iter()
        .filter(|e| e.kind == "started")
        .map(|e| e.at_ms)
        .collect()
}

#[test]
fn pool_limits_and_min_delay_hold_while_other_pools_run() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new(
        "limits",
        &[
            ("a1", "nap"),
            ("a2", "nap"),
            ("a3", "nap"),
            ("b1", "nap"),
            ("b2", "nap"),
            ("b3", "nap"),
            ("b4", "nap"),
        ],
    );
    let spec = fx.spec(
        "  other:\n    command: [sh, /opt/agent.sh, \"{{ prompt_file }}\"]\n    mounts: [{ source: agent.sh, target: /opt/agent.sh }]\n    network: none\nlimits:\n  total: 3\n  agents: { scripted: 1, other: 2 }\n  rates: { scripted: { min_delay: 3s } }\njobs:\n  - { id: ja, task: t, repos: [a1, a2, a3], qa: [], publish: false }\n  - { id: jb, task: t, agent: other, repos: [b1, b2, b3, b4], qa: [], publish: false }\n",
    );
    let (status, json) = fx.run(&spec);
    assert_eq!(status, 0, "{json}");
    let run = json["run"].as_str().unwrap();
    let db = fx.db();
    assert_eq!(
        max_concurrent(&db, run, "ja/"),
        1,
        "pool `scripted` allows 1"
    );
    assert!(
        max_concurrent(&db, run, "jb/") <= 2,
        "pool `other` allows 2"
    );
    assert!(max_concurrent(&db, run, "") <= 3, "total allows 3");
    let a = starts(&db, run, "ja/");
    assert_eq!(a.len(), 3);
    for pair in a.windows(2) {
        // The journal's clock counts whole milliseconds beside the limiter's monotonic clock.
        assert!(
            pair[1] - pair[0] >= 2990,
            "min_delay 3s between starts of one pool: {a:?}"
        );
    }
    let b = starts(&db, run, "jb/");
    assert!(
        b.iter().any(|&t| t > a[0] && t < a[1]),
        "the other pool starts while `scripted` waits: a={a:?} b={b:?}"
    );
    assert_eq!(leftovers(run), 0);
}

/// Starts `dispatch run SPEC --output json` in the background.
fn spawn_run(spec: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args([
            "--color",
            "never",
            "run",
            spec.to_str().unwrap(),
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: kill with a valid pid and signal has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
}

/// Waits (bounded) until the journal shows a container for an agent node.
fn wait_for_container(fx: &Fixture) {
    for _ in 0..300 {
        if let Ok(db) = rusqlite::Connection::open(fx.dir.0.join(".dispatch/dispatch.db")) {
            let count: i64 = db
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE kind = 'container'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or(0);
            if count > 0 {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no container started within 30 s");
}

#[test]
fn ctrl_c_first_lets_running_nodes_finish_second_stops_them() {
    if !docker_available() {
        return;
    }
    // First Ctrl-C: the running agent finishes, nothing new starts.
    let fx = Fixture::new("sigint1", &[("x1", "nap"), ("x2", "nap"), ("x3", "nap")]);
    let spec = fx.spec("limits: { total: 1 }\njobs:\n  - { id: j, task: t, repos: [x1, x2, x3], qa: [], publish: false }\n");
    let child = spawn_run(&spec);
    wait_for_container(&fx);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = outcomes(&json);
    assert_eq!(
        got.values().filter(|o| *o == "changed").count(),
        1,
        "the running unit finished: {got:?}"
    );
    assert_eq!(
        got.values().filter(|o| *o == "cancelled").count(),
        2,
        "the others never started: {got:?}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Stopping: no new nodes start"));

    // Second Ctrl-C: the running container is stopped and its unit cancelled.
    let fx = Fixture::new("sigint2", &[("y1", "long"), ("y2", "long")]);
    let spec = fx.spec("limits: { total: 1 }\njobs:\n  - { id: j, task: t, timeout: 2m, repos: [y1, y2], qa: [], publish: false }\n");
    let child = spawn_run(&spec);
    wait_for_container(&fx);
    interrupt(&child);
    std::thread::sleep(std::time::Duration::from_millis(300));
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = outcomes(&json);
    assert!(got.values().all(|o| o == "cancelled"), "{got:?}");
    assert_eq!(
        leftovers(json["run"].as_str().unwrap()),
        0,
        "the stopped container was removed"
    );
}

#[test]
fn resume_refuses_a_spec_that_plans_another_dag_and_finishes_the_same_one() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("replan", &[("p1", "nap"), ("p2", "change")]);
    let spec = fx.spec("jobs:\n  - { id: j, task: t, repos: [p1], qa: [] }\n");
    let mut runner = spawn_run(&spec);
    wait_for_container(&fx);
    runner.kill().unwrap(); // SIGKILL: the run stays unfinished
    runner.wait().unwrap();
    let state = fx.dir.0.join(".dispatch");
    let state = state.to_str().unwrap();
    let runs = common::dispatch(&["runs", "--state-dir", state, "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "running", "{runs}");
    let run = runs[0]["id"].as_str().unwrap().to_owned();

    // Another QA, so another DAG for the same unit (units the run never had are left out,
    // like those of `--only`).
    fx.spec("jobs:\n  - { id: j, task: t, repos: [p1, p2], qa: [{ run: 'true' }] }\n");
    let refused = common::dispatch(&["resume", &run, "--state-dir", state]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("changed since run {run} started"))
            && refused.stderr.contains("dispatch run --new"),
        "{}",
        refused.stderr
    );

    // The same DAG for every unit of the run: resume finishes it, and names the unit the run
    // never had instead of running it.
    fx.spec("jobs:\n  - { id: j, task: t, repos: [p1, p2], qa: [] }\n");
    let out = common::dispatch(&["resume", &run, "--state-dir", state, "--output", "json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "note: 1 unit the spec plans now is not part of run {run}"
        )),
        "{}",
        out.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let got = outcomes(&json);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got["j/t/p1"], "changed", "{got:?}");
}

fn agent_runs(fx: &Fixture, repo: &str, key: &str) -> usize {
    std::fs::read_to_string(fx.meta(repo, key).join("agent-runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn answer_a_blocked_unit_and_retry_failed_ones() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new(
        "answer",
        &[("ask1", "ask"), ("flaky1", "flaky"), ("ok1", "change")],
    );
    let spec = fx.spec(
        "jobs:\n  - { id: j, task: t, repos: [ask1, flaky1, ok1], qa: [{ run: sh test.sh }] }\n",
    );
    let (status, json) = fx.run(&spec);
    assert_eq!(status, 1);
    let got = outcomes(&json);
    assert_eq!(
        (
            got["j/t/ask1"].as_str(),
            got["j/t/flaky1"].as_str(),
            got["j/t/ok1"].as_str()
        ),
        ("blocked", "agent_failed", "changed")
    );
    let run = json["run"].as_str().unwrap().to_owned();
    let state_dir = fx.dir.0.join(".dispatch");
    let state_dir = state_dir.to_str().unwrap();

    // The answer reaches the agent with the stored prompt, the question and the answer.
    let out = common::dispatch(&[
        "answer",
        &run,
        "j/t/ask1",
        "Use port 8080",
        "--state-dir",
        state_dir,
        "--output",
        "json",
    ]);
    let answered: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|_| panic!("{}\n{}", out.stdout, out.stderr));
    assert_eq!(outcomes(&answered)["j/t/ask1"], "changed", "{answered}");
    let prompt = std::fs::read_to_string(fx.meta("ask1", "j").join("prompt.md")).unwrap();
    assert!(
        prompt.contains("Which port should the service use?") && prompt.contains("Use port 8080"),
        "{prompt}"
    );
    assert!(
        prompt.contains("# Task"),
        "the original prompt stays: {prompt}"
    );
    assert_eq!(agent_runs(&fx, "ask1", "j"), 2);
    let tree = Command::new("git")
        .args(["ls-tree", "--name-only", "agent/j"])
        .current_dir(fx.dir.0.join(".dispatch/forge/t/ask1.git"))
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&tree.stdout).to_string();
    assert!(
        !files.contains("ANSWER.md") && !files.contains("BLOCKED.md"),
        "{files}"
    );

    // Retry --failed re-runs the failed unit only.
    let out = common::dispatch(&[
        "retry",
        &run,
        "--failed",
        "--state-dir",
        state_dir,
        "--output",
        "json",
    ]);
    let retried: serde_json::Value = serde_json::from_str(
        out.stdout
            .lines()
            .skip_while(|l| !l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    )
    .unwrap_or_else(|_| panic!("{}\n{}", out.stdout, out.stderr));
    assert_eq!(outcomes(&retried)["j/t/flaky1"], "changed", "{retried}");
    assert_eq!(agent_runs(&fx, "flaky1", "j"), 2);
    assert_eq!(
        agent_runs(&fx, "ok1", "j"),
        1,
        "a unit that succeeded is not run again"
    );
    let runs = common::dispatch(&["runs", "--state-dir", state_dir, "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "retry and answer continue the same run"
    );
    assert_eq!(leftovers(&run), 0);
}

#[test]
fn cancel_from_another_process_stops_the_run() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("cancel", &[("z1", "long"), ("z2", "long"), ("z3", "long")]);
    let spec = fx.spec("limits: { total: 2 }\njobs:\n  - { id: j, task: t, timeout: 2m, repos: [z1, z2, z3], qa: [], publish: false }\n");
    let child = spawn_run(&spec);
    wait_for_container(&fx);
    let run = fx.db().run(None).unwrap().expect("the run is recorded").id;
    // --force: the running agents are stopped too (a plain cancel lets them finish).
    let cancel = common::dispatch(&[
        "cancel",
        &run,
        "--force",
        "--state-dir",
        fx.dir.0.join(".dispatch").to_str().unwrap(),
    ]);
    assert_eq!(cancel.status, 0, "{}", cancel.stderr);
    let out = child.wait_with_output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(outcomes(&json).values().all(|o| o == "cancelled"), "{json}");
    assert_eq!(leftovers(&run), 0);
    let status = common::dispatch(&[
        "status",
        &run,
        "--state-dir",
        fx.dir.0.join(".dispatch").to_str().unwrap(),
        "--json",
    ]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["run"]["status"], "cancelled");
}

#[test]
fn only_runs_each_chosen_unit_with_its_own_job_and_prompt() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("only", &[("o1", "none"), ("o2", "none"), ("o3", "change")]);
    let spec = fx.spec(
        "jobs:\n  - { id: first, task: Tidy the README, repos: [o1, o2], qa: [] }\n  - { id: second, task: Bump the version, repos: [o3], qa: [] }\n",
    );
    let (status, json) = fx.run_with(&spec, &["--only", "first/o2", "--only", "second"]);
    assert_eq!(status, 0, "{json}");
    let want: BTreeMap<String, String> = [("first/t/o2", "no_changes"), ("second/t/o3", "changed")]
        .into_iter()
        .map(|(u, o)| (u.to_owned(), o.to_owned()))
        .collect();
    assert_eq!(outcomes(&json), want);
    // Each unit's prompt is its own: its repository and its job's task, not those of the
    // units --only left out.
    for (repo, key, task) in [
        ("o2", "first", "Tidy the README"),
        ("o3", "second", "Bump the version"),
    ] {
        let prompt = std::fs::read_to_string(fx.meta(repo, key).join("prompt.md")).unwrap();
        assert!(prompt.contains(&format!("`t/{repo}`")), "{repo}: {prompt}");
        assert!(prompt.contains(task), "{repo}: {prompt}");
    }
    assert!(!fx.meta("o1", "first").exists(), "o1 was left out");
}

#[test]
fn an_unchanged_second_run_takes_agent_results_from_the_cache() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("cache", &[("k1", "change"), ("k2", "none")]);
    let spec =
        fx.spec("jobs:\n  - { id: j, task: t, repos: [k1, k2], qa: [{ run: sh test.sh }] }\n");
    let (status, first) = fx.run(&spec);
    assert_eq!(status, 0, "{first}");
    let (status, second) = fx.run(&spec);
    assert_eq!(status, 0, "{second}");
    assert_eq!(outcomes(&second), outcomes(&first));
    assert_eq!(
        agent_runs(&fx, "k1", "j"),
        1,
        "the cached result spent no second agent run"
    );
    assert_eq!(agent_runs(&fx, "k2", "j"), 1);
    let run = second["run"].as_str().unwrap();
    let status = common::dispatch(&[
        "status",
        run,
        "--state-dir",
        fx.dir.0.join(".dispatch").to_str().unwrap(),
    ]);
    assert_eq!(
        status
            .stdout
            .matches("agent    (result from the cache)")
            .count(),
        2,
        "dispatch status says so: {}",
        status.stdout
    );
    let out = common::dispatch(&[
        "run",
        spec.to_str().unwrap(),
        "--no-cache",
        "--output",
        "json",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(agent_runs(&fx, "k1", "j"), 2, "--no-cache runs the agent");
}

#[test]
fn a_pr_target_continues_the_pr_branch_and_updates_the_pr() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("pr-target", &[("p1", "change")]);
    let spec = fx.spec("jobs:\n  - { id: j, task: t, repos: [p1], qa: [] }\n");
    let (status, first) = fx.run(&spec);
    assert_eq!(status, 0, "{first}");
    let bare = fx.dir.0.join(".dispatch/forge/t/p1.git");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&bare)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let first_head = git(&["rev-parse", "refs/heads/agent/j"]);

    // A second job works on PR #1: on its branch, from its head, and updates it.
    let spec = fx.spec("jobs:\n  - { id: k, task: t, repos: [{ repo: p1, pr: 1 }], qa: [] }\n");
    let plan = common::dispatch(&["plan", spec.to_str().unwrap(), "--format", "json"]);
    assert_eq!(plan.status, 0, "{}", plan.stderr);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(plan["units"][0]["branch"], "agent/j", "{plan}");
    assert_eq!(plan["units"][0]["key"], "pr-1", "{plan}");
    let (status, second) = fx.run(&spec);
    assert_eq!(status, 0, "{second}");
    assert_eq!(
        outcomes(&second).get("k/t/p1/pr-1").map(String::as_str),
        Some("changed"),
        "{second}"
    );
    let head = git(&["rev-parse", "refs/heads/agent/j"]);
    assert_ne!(head, first_head, "the PR's branch moved");
    assert_eq!(
        git(&["rev-parse", "refs/heads/agent/j~1"]),
        first_head,
        "the new commit sits on the PR's head, nothing was overwritten"
    );
    assert_eq!(
        git(&["show", "refs/heads/agent/j:file.txt"]),
        "changed\nchanged",
        "the agent built on the PR's changes"
    );
    let prs = common::dispatch(&[
        "prs",
        "--state-dir",
        fx.dir.0.join(".dispatch").to_str().unwrap(),
        "--json",
    ]);
    let prs: serde_json::Value = serde_json::from_str(&prs.stdout).unwrap();
    assert_eq!(
        prs.as_array().map(Vec::len),
        Some(1),
        "updated, not duplicated: {prs}"
    );
}

/// An agent that tries to reach the host through what dispatch does after it: hooks and
/// configuration in `.git` (git runs them on the host), and symlinks where dispatch reads or
/// writes (`BLOCKED.md`, logs, `status.json`).
const HOSTILE_AGENT: &str = r#"#!/bin/sh
victim="$1"
printf '#!/bin/sh\ntouch "%s.hook-ran"\n' "$victim" > .git/hooks/post-commit 2>/dev/null && echo "wrote a hook"
chmod +x .git/hooks/post-commit 2>/dev/null
git config core.fsmonitor "touch $victim.fsmonitor-ran" 2>/dev/null && echo "wrote the config"
echo "gitdir: /elsewhere" > .git/HEAD 2>/dev/null && echo "broke HEAD"
ln -s "$victim" BLOCKED.md
ln -s "$victim" /workspace/.meta/status.json.tmp
ln -s "$victim" /workspace/.meta/qa.log
echo "real work" > work.txt
echo "agent done"
"#;

#[test]
fn a_hostile_agent_cannot_reach_the_host_through_git_or_symlinks() {
    if !docker_available() {
        return;
    }
    let fx = Fixture::new("hostile", &[("h1", "none")]);
    fx.dir.write("hostile.sh", HOSTILE_AGENT);
    let victim = fx.dir.write("victim.txt", "host secret\n");
    let spec = fx.spec(&format!(
        "  hostile:\n    command: [sh, /opt/hostile.sh, \"{}\"]\n    mounts: [{{ source: hostile.sh, target: /opt/hostile.sh }}]\n    network: none\njobs:\n  - {{ id: j, task: t, agent: hostile, repos: [h1], retries: 0, qa: [{{ run: \"echo qa output\" }}] }}\n",
        victim.display()
    ));
    let (status, json) = fx.run(&spec);
    assert_eq!(status, 1, "{json}");
    // The planted log link stops QA (its output would have gone into the victim).
    let unit = &json["units"][0];
    assert_eq!(unit["outcome"], "infra_error", "{json}");
    assert!(
        unit["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("qa.log"),
        "the reason names the log: {json}"
    );
    let meta = fx.meta("h1", "j");
    let agent_log = std::fs::read_to_string(meta.join("agent.log")).unwrap();
    assert!(agent_log.contains("agent done"), "{agent_log}");
    for attempt in ["wrote a hook", "wrote the config", "broke HEAD"] {
        assert!(
            !agent_log.contains(attempt),
            "the agent could write .git: {agent_log}"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host secret\n");
    for ran in ["hook-ran", "fsmonitor-ran"] {
        assert!(
            !fx.dir.0.join(format!("victim.txt.{ran}")).exists(),
            "{ran}: the agent's code ran on the host"
        );
    }
    // The planted BLOCKED.md link is no question (its target is never read), and it is not
    // committed; the real work is.
    assert!(!json.to_string().contains("host secret"), "{json}");
    let repo = fx.dir.0.join(".dispatch/workspaces/t/h1/j/repo");
    let committed = Command::new("git")
        .args(["show", "--name-only", "--format=", "HEAD"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&committed.stdout).trim(),
        "work.txt"
    );
    let status_json = std::fs::read_to_string(meta.join("status.json")).unwrap();
    assert!(
        status_json.contains("\"outcome\": \"infra_error\""),
        "{status_json}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host secret\n");
}
