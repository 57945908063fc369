//! The crash harness: a run of 10 units with scripted agents against the real Docker engine is
//! killed with SIGKILL at 20 points, then `dispatch resume` finishes it. Each case checks:
//! every unit ends with an outcome, no agent ran twice (a counter file the agent appends to),
//! no container of the run remains, and `dispatch status` agrees with the local forge's PRs.
//!
//! The module's tests come first in the binary's order: they are its longest.
//! Skips without an engine unless DISPATCH_REQUIRE_DOCKER=1.

use std::time::Duration;

use serde_json::Value;

use crate::support::docker::{available, leftovers};
use crate::support::{outcomes, Test};

/// `dispatch run spec.yaml --output json`.
const RUN: &[&str] = &["run", "spec.yaml", "--output", "json"];

/// The agent of the crash harness: it counts its runs, takes a second, and records its
/// repository's name.
const CRASH_AGENT: &str = r#"#!/bin/sh
echo run >> /workspace/.meta/agent-runs
sleep 1
echo "$(cat name)" >> changes.txt
"#;

/// One crash: a run of 10 units killed with SIGKILL after `kill_after`, then resumed (or run,
/// when it was killed before it recorded the run).
fn crash_and_resume(case: usize, kill_after: Duration) {
    let repos: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    let t = repos
        .iter()
        .fold(Test::new(&format!("crash{case}")), |t, repo| {
            t.repo(repo, &[("name", &format!("{repo}\n"))])
        })
        .agent(CRASH_AGENT)
        .scripted_spec(&format!(
            r#"
            limits: {{ total: 4 }}
            jobs:
              - id: j
                task: t
                timeout: 1m
                repos: [{}]
                qa: [{{ run: "cat changes.txt" }}]
            "#,
            repos.join(", ")
        ));
    let running = t.spawn(RUN);
    std::thread::sleep(kill_after);
    running.kill();

    let case = format!("case {case} (kill after {kill_after:?})");
    // Killed before the state database existed, `runs` finds none.
    let runs = t.run(&["runs", "--json"]);
    let runs = if runs.status == 0 {
        runs.json()
    } else {
        Value::Null
    };
    match runs.as_array().and_then(|r| r.first()) {
        Some(run) if run["status"] == "running" => {
            let run = run["id"].as_str().unwrap();
            // A child the runner forked a moment before the kill holds the spec's lock until
            // it execs (the lock is close-on-exec): `unverified` until then, never `active`,
            // and `gone` once the kernel dropped the lock.
            let mut runner = Value::Null;
            for _ in 0..50 {
                runner = t.run(&["runs", "--json"]).json()[0]["runner"].clone();
                assert_ne!(runner, "active", "{case}: a killed runner is never active");
                if runner == "gone" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert_eq!(runner, "gone", "{case}: the killed runner is gone");
            let listed = t.run(&["runs"]).expect_status(0).stdout;
            assert!(
                listed.contains(&format!("`dispatch resume {run}` finishes it")),
                "{case}: {listed}"
            );
            t.run(&["resume", run, "--output", "json"]).expect_status(0);
        }
        // Killed after the run ended: nothing to do.
        Some(_) => {}
        // Killed before the run was recorded: a plain run.
        None => {
            t.run(RUN).expect_status(0);
        }
    }
    let status = t.run(&["status", "--json"]).expect_status(0).json();
    assert_eq!(status["run"]["status"], "finished", "{case}");
    let got = outcomes(&status);
    assert_eq!(got.len(), 10, "{case}: {got:?}");
    assert!(
        got.values().all(|o| o == "changed"),
        "{case}: every unit ends, and ends as it should: {got:?}"
    );
    for repo in &repos {
        assert_eq!(
            t.agent_runs(repo, "j"),
            1,
            "{case}: the agent of {repo} ran once"
        );
        assert_eq!(
            t.git(
                &format!(".dispatch/forge/t/{repo}.git"),
                &["show", "agent/j:changes.txt"]
            ),
            *repo,
            "{case}: the forge has the agent's change of {repo}, once"
        );
    }
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(
        prs.as_array().unwrap().len(),
        10,
        "{case}: one PR per changed unit, never two"
    );
    let run = status["run"]["id"].as_str().unwrap();
    assert_eq!(leftovers(run), 0, "{case}: no container of the run remains");
}

/// Kill points `share`, `share + SHARES`, ... of the 20, spread over the run: prep, agents
/// running, agents exited before their commit, QA, publish and the moments between units.
fn kill_points(share: usize) {
    if !available() {
        return;
    }
    for case in (share..20).step_by(SHARES) {
        crash_and_resume(case, Duration::from_millis(150 + 230 * case as u64));
    }
}

/// The kill points are shared among this many tests, which run in parallel.
const SHARES: usize = 4;

#[test]
fn killed_runs_resume_to_the_same_end_without_running_anything_twice_1_of_4() {
    kill_points(0);
}

#[test]
fn killed_runs_resume_to_the_same_end_without_running_anything_twice_2_of_4() {
    kill_points(1);
}

#[test]
fn killed_runs_resume_to_the_same_end_without_running_anything_twice_3_of_4() {
    kill_points(2);
}

#[test]
fn killed_runs_resume_to_the_same_end_without_running_anything_twice_4_of_4() {
    kill_points(3);
}
