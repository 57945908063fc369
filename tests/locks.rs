//! Runs are exclusive where they would collide: one runner per spec and state directory (a
//! second `run`, `resume` or `retry` refuses and names the active run), one unit per workspace
//! (whatever spec it comes from), runs of other specs sharing the directory at once, and
//! `cancel` signalling only a runner it verified.
//!
//! The agent here waits for a file `go` in its `meta/` when its repository says `gate`, so a
//! test decides when a run may end, without timing.
//!
//! When the engine is unreachable these tests skip, unless DISPATCH_REQUIRE_DOCKER=1 (CI),
//! where they fail.

use std::process::{Child, Command};
use std::time::Duration;

use dispatch::state::lock::process_start;
use dispatch::state::Db;

use crate::support::docker::{available, leftovers};
use crate::support::{outcomes, unit, Running, Test};

/// `dispatch run spec.yaml --output json`.
const RUN: &[&str] = &["run", "spec.yaml", "--output", "json"];

/// The agent: with `gate` in `behaviour` it waits for `meta/go`; then it changes a file.
const GATED_AGENT: &str = r#"#!/bin/sh
echo run >> /workspace/.meta/agent-runs
if [ "$(cat behaviour)" = gate ]; then
  while [ ! -f /workspace/.meta/go ]; do sleep 0.1; done
fi
echo changed >> file.txt
"#;

/// The job of [`gated`]: one unit `j/t/a`, in workspace `workspaces/t/a/j`.
const ONE_UNIT: &str = "jobs:\n  - { id: j, task: t, repos: [a], qa: [] }\n";

/// A fixture with the gated agent and `repos` (name, behaviour), `spec.yaml` running `jobs`.
fn gated(name: &str, repos: &[(&str, &str)], jobs: &str) -> Test {
    Test::new(name)
        .agent(GATED_AGENT)
        .scripted_repos(repos)
        .scripted_spec(jobs)
}

/// `spec.yaml` of one gated unit `j/t/a` running ([`ONE_UNIT`]), its agent's container
/// started: the fixture, the runner and the run's id.
fn one_gated_run(name: &str) -> (Test, Running, String) {
    let t = gated(name, &[("a", "gate")], ONE_UNIT);
    let runner = t.spawn(RUN);
    let run = t.wait_for_container();
    (t, runner, run)
}

/// Lets the gated agent of `j/t/a` finish, and checks that its runner `running` then ends
/// the unit `changed` with one agent run; `why` says what that shows.
fn open_gate(t: &Test, running: Running, why: &str) {
    std::fs::write(t.meta("a", "j").join("go"), "").expect("the gate opens");
    let report = running.wait().expect_status(0).json();
    assert_eq!(outcomes(&report)["j/t/a"], "changed", "{why}: {report}");
    assert_eq!(t.agent_runs("a", "j"), 1, "{why}: one agent run");
}

/// A process that is not dispatch and lives until killed.
fn sleeper() -> Child {
    Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep runs")
}

/// Whether `child` still runs (it was not signalled).
fn alive(child: &mut Child) -> bool {
    child
        .try_wait()
        .expect("the child can be waited for")
        .is_none()
}

/// Writes into the journal that `pid` (with its true start time) is the runner of `run`: a
/// pid the kernel handed out again, as far as the journal can tell.
fn record_runner(t: &Test, run: &str, pid: u32) {
    Db::open(&t.path(".dispatch"))
        .expect("the state opens")
        .set_runner(run, pid, process_start(pid))
        .expect("the runner is recorded");
}

#[test]
fn a_second_runner_of_the_same_spec_refuses_and_names_the_active_run() {
    if !available() {
        return;
    }
    let (t, first, run) = one_gated_run("second-runner");
    std::os::unix::fs::symlink(t.path("spec.yaml"), t.path("link.yaml")).expect("a symlink");
    // `--new` used to start a second run in the same workspaces; the same spec through a
    // symlink used to be another spec.
    for args in [
        &["run", "--new", "spec.yaml"][..],
        &["run", "link.yaml", "--output", "json"][..],
    ] {
        let refused = t.run(args).expect_status(1);
        assert!(
            refused
                .stderr
                .contains(&format!("is in use by run {run} (pid "))
                && refused
                    .stderr
                    .contains(&format!("dispatch status {run} --state-dir"))
                && refused
                    .stderr
                    .contains(&format!("dispatch cancel {run} --state-dir")),
            "{args:?}: {}",
            refused.stderr
        );
    }
    // A second resume or retry of the run itself refuses the same way.
    for args in [&["resume", &run][..], &["retry", &run, "--failed"][..]] {
        let refused = t.run(args).expect_status(1);
        assert!(
            refused
                .stderr
                .contains(&format!("is in use by run {run} (pid ")),
            "{args:?}: {}",
            refused.stderr
        );
    }
    open_gate(&t, first, "no other runner ran its agent");
    let runs = t.run(&["runs", "--json"]).expect_status(0).json();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(prs.as_array().map(Vec::len), Some(1), "{prs}");
}

#[test]
fn specs_sharing_a_state_directory_run_at_once_but_never_share_a_workspace() {
    if !available() {
        return;
    }
    // other.yaml: the same head, a job `k` on `b` (a workspace of its own) and a job `j` on
    // `a` (the workspace spec.yaml's unit uses).
    let t = gated(
        "two-specs",
        &[("a", "gate"), ("b", "change")],
        "jobs:\n  - { id: k, task: t, repos: [b], qa: [] }\n  - { id: j, task: t, repos: [a], qa: [] }\n",
    );
    let other = t.read("spec.yaml");
    let t = t
        .file("other.yaml", &other)
        .scripted_spec("jobs:\n  - { id: j, task: t, repos: [a], qa: [] }\n");
    let first = t.spawn(RUN);
    let run = t.wait_for_container();
    let out = t
        .run(&["run", "other.yaml", "--output", "json"])
        .expect_status(1);
    let report = out.json();
    assert_eq!(
        outcomes(&report)["k/t/b"],
        "changed",
        "a unit of another spec runs while the first spec's run is active: {report}"
    );
    let shared = unit(&report, "j/t/a");
    assert_eq!(shared["outcome"], "infra_error", "{report}");
    let reason = shared["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("workspaces/t/a/j is in use by run ")
            && reason.contains(&format!("run {run} (pid ")),
        "{reason}"
    );
    open_gate(
        &t,
        first,
        "only the first spec's agent ran in the shared workspace",
    );
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    let branches: Vec<(&str, &str)> = prs
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["repo"].as_str().unwrap_or_default(),
                p["run_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        branches.contains(&("a", run.as_str()))
            && branches.iter().filter(|b| b.0 == "a").count() == 1,
        "one PR of the shared repository, the first run's: {prs}"
    );
}

#[test]
fn cancel_signals_only_the_verified_runner() {
    if !available() {
        return;
    }
    // A live runner whose journal row names another process: no one is signalled.
    let (t, runner, run) = one_gated_run("cancel-live");
    let mut stranger = sleeper();
    record_runner(&t, &run, stranger.id());
    let refused = t.run(&["cancel", &run]).expect_status(1);
    assert!(
        refused
            .stderr
            .contains(&format!("cannot verify the runner of run {run}"))
            && refused
                .stderr
                .contains(&format!("the journal records pid {}", stranger.id()))
            && refused.stderr.contains("no signal was sent"),
        "{}",
        refused.stderr
    );
    assert!(
        alive(&mut stranger),
        "the process the journal names was not signalled"
    );
    open_gate(&t, runner, "the runner was not signalled either");

    // A dead runner whose pid now belongs to another process: it is gone, and the other
    // process is not signalled.
    let (t, runner, run) = one_gated_run("cancel-reused");
    runner.kill();
    record_runner(&t, &run, stranger.id());
    let status = t.run(&["status", &run, "--json"]).expect_status(0).json();
    assert_eq!(status["runner"], "gone", "{status}");
    let text = t.run(&["status", &run]).expect_status(0).stdout;
    assert!(
        text.contains(&format!("its runner is gone: `dispatch resume {run}")),
        "{text}"
    );
    let cancel = t.run(&["cancel", &run]).expect_status(0);
    assert!(
        cancel.stdout.contains(
            "its runner is gone (nothing holds its spec's lock), so no process was signalled"
        ),
        "{}",
        cancel.stdout
    );
    assert!(
        alive(&mut stranger),
        "the pid's new owner was not signalled"
    );
    let status = t.run(&["status", &run, "--json"]).expect_status(0).json();
    assert_eq!(status["run"]["status"], "cancelled", "{status}");
    assert_eq!(
        leftovers(&run),
        0,
        "the dead runner's container was removed"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn a_killed_runner_leaves_no_lock_and_its_run_is_resumed_at_once() {
    if !available() {
        return;
    }
    let (t, runner, run) = one_gated_run("killed-runner");
    runner.kill();
    // The kernel released the lock with the runner: a new run is told to resume, not that the
    // spec is in use.
    let told = t.run(RUN).expect_status(1);
    assert!(
        told.stderr
            .contains(&format!("run {run} of this spec did not finish")),
        "{}",
        told.stderr
    );
    let resume = t.spawn(&["resume", &run, "--output", "json"]);
    // The resume holds the lock and the journal names it: the run is active again.
    let mut active = false;
    for _ in 0..300 {
        let status = t.run(&["status", &run, "--json"]).expect_status(0).json();
        if status["runner"] == "active" {
            active = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(active, "the resume took the run over");
    open_gate(&t, resume, "the agent's container was re-attached");
}
