//! Runs that stop and go on: Ctrl-C, `dispatch cancel`, a killed runner and `dispatch resume`,
//! `dispatch answer` and `dispatch retry` continuing the same run. The crash harness is in
//! `crash`.
//!
//! When the engine is unreachable these tests skip, unless DISPATCH_REQUIRE_DOCKER=1 (CI),
//! where they fail.

use std::time::Duration;

use serde_json::Value;

use crate::support::docker::{available, leftovers};
use crate::support::{outcomes, Test};

/// `dispatch run spec.yaml --output json`.
const RUN: &[&str] = &["run", "spec.yaml", "--output", "json"];

/// How many units of a report ended with `outcome`.
fn count(report: &Value, outcome: &str) -> usize {
    outcomes(report).values().filter(|o| *o == outcome).count()
}

#[test]
fn sighup_and_a_plain_cancel_stop_like_the_first_ctrl_c() {
    if !available() {
        return;
    }
    for how in ["SIGHUP", "dispatch cancel"] {
        let t = Test::new(if how == "SIGHUP" {
            "sighup"
        } else {
            "cancel-graceful"
        })
        .scripted_repos(&[("g1", "nap"), ("g2", "nap"), ("g3", "nap")])
        .scripted_spec(
            r#"
                limits: { total: 1 }
                jobs:
                  - { id: j, task: t, repos: [g1, g2, g3], qa: [], publish: false }
                "#,
        );
        let running = t.spawn(RUN);
        let run = t.wait_for_container();
        if how == "SIGHUP" {
            running.signal(libc::SIGHUP);
        } else {
            // One SIGTERM to the runner.
            let cancel = t.run(&["cancel", &run]).expect_status(0);
            assert!(
                cancel.stdout.contains("running nodes finish"),
                "{}",
                cancel.stdout
            );
        }
        let out = running.wait().expect_status(1);
        let report = out.json();
        assert_eq!(
            count(&report, "changed"),
            1,
            "{how}: the running unit finished: {report}"
        );
        assert_eq!(
            count(&report, "cancelled"),
            2,
            "{how}: the others never started: {report}"
        );
        let status = t.run(&["status", &run, "--json"]).expect_status(0).json();
        assert_eq!(status["run"]["status"], "cancelled", "{how}");
    }
}

#[test]
fn ctrl_c_first_lets_running_nodes_finish_second_stops_them() {
    if !available() {
        return;
    }
    // First Ctrl-C: the running agent finishes, nothing new starts.
    let t = Test::new("sigint1")
        .scripted_repos(&[("x1", "nap"), ("x2", "nap"), ("x3", "nap")])
        .scripted_spec(
            r#"
            limits: { total: 1 }
            jobs:
              - { id: j, task: t, repos: [x1, x2, x3], qa: [], publish: false }
            "#,
        );
    let running = t.spawn(RUN);
    t.wait_for_container();
    running.interrupt();
    let out = running.wait().expect_status(1);
    assert!(
        out.stderr.contains("Stopping: no new nodes start"),
        "{}",
        out.stderr
    );
    let report = out.json();
    assert_eq!(
        count(&report, "changed"),
        1,
        "the running unit finished: {report}"
    );
    assert_eq!(
        count(&report, "cancelled"),
        2,
        "the others never started: {report}"
    );

    // Second Ctrl-C: the running container is stopped and its unit cancelled.
    let t = Test::new("sigint2")
        .scripted_repos(&[("y1", "long"), ("y2", "long")])
        .scripted_spec(
            r#"
            limits: { total: 1 }
            jobs:
              - { id: j, task: t, timeout: 2m, repos: [y1, y2], qa: [], publish: false }
            "#,
        );
    let running = t.spawn(RUN);
    t.wait_for_container();
    running.interrupt();
    std::thread::sleep(Duration::from_millis(300));
    running.interrupt();
    let report = running.wait().json();
    assert_eq!(count(&report, "cancelled"), 2, "{report}");
    assert_eq!(
        leftovers(report["run"].as_str().unwrap()),
        0,
        "the stopped container was removed"
    );
}

#[test]
fn cancel_from_another_process_stops_the_run() {
    if !available() {
        return;
    }
    let t = Test::new("cancel")
        .scripted_repos(&[("z1", "long"), ("z2", "long"), ("z3", "long")])
        .scripted_spec(
            r#"
            limits: { total: 2 }
            jobs:
              - { id: j, task: t, timeout: 2m, repos: [z1, z2, z3], qa: [], publish: false }
            "#,
        );
    let running = t.spawn(RUN);
    let run = t.wait_for_container();
    // --force: the running agents are stopped too (a plain cancel lets them finish).
    t.run(&["cancel", &run, "--force"]).expect_status(0);
    let report = running.wait().json();
    assert_eq!(count(&report, "cancelled"), 3, "{report}");
    assert_eq!(leftovers(&run), 0, "no container of the run remains");
    let status = t.run(&["status", &run, "--json"]).expect_status(0).json();
    assert_eq!(status["run"]["status"], "cancelled");
    assert_eq!(count(&status, "cancelled"), 3, "{status}");
}

#[test]
fn resume_refuses_a_spec_that_plans_another_dag_and_finishes_the_same_one() {
    if !available() {
        return;
    }
    let t = Test::new("replan")
        .scripted_repos(&[("p1", "nap"), ("p2", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [p1], qa: [] }
            "#,
        );
    let running = t.spawn(RUN);
    let run = t.wait_for_container();
    running.kill(); // the run stays unfinished
    let runs = t.run(&["runs", "--json"]).expect_status(0).json();
    assert_eq!(runs[0]["id"], run.as_str(), "{runs}");
    assert_eq!(runs[0]["status"], "running", "{runs}");

    // Another QA, so another DAG for the same unit (units the run never had are left out,
    // like those of `--only`).
    let t = t.scripted_spec(
        r#"
        jobs:
          - { id: j, task: t, repos: [p1, p2], qa: [{ run: 'true' }] }
        "#,
    );
    let refused = t.run(&["resume", &run]).expect_status(1);
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
    let t = t.scripted_spec(
        r#"
        jobs:
          - { id: j, task: t, repos: [p1, p2], qa: [] }
        "#,
    );
    let out = t
        .run(&["resume", &run, "--output", "json"])
        .expect_status(0);
    assert!(
        out.stderr.contains(&format!(
            "note: 1 unit the spec plans now is not part of run {run}"
        )),
        "{}",
        out.stderr
    );
    let report = out.json();
    assert_eq!(outcomes(&report).len(), 1, "{report}");
    assert_eq!(outcomes(&report)["j/t/p1"], "changed", "{report}");
}

#[test]
fn answer_a_blocked_unit_and_retry_failed_ones() {
    if !available() {
        return;
    }
    let t = Test::new("answer")
        .scripted_repos(&[("ask1", "ask"), ("flaky1", "flaky"), ("ok1", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [ask1, flaky1, ok1], qa: [{ run: sh test.sh }] }
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    let got = outcomes(&report);
    assert_eq!(
        (
            got["j/t/ask1"].as_str(),
            got["j/t/flaky1"].as_str(),
            got["j/t/ok1"].as_str()
        ),
        ("blocked", "agent_failed", "changed")
    );
    let run = report["run"].as_str().unwrap().to_owned();

    // The answer reaches the agent with the stored prompt, the question and the answer.
    let answered = t
        .run(&[
            "answer",
            &run,
            "j/t/ask1",
            "Use port 8080",
            "--output",
            "json",
        ])
        .json();
    assert_eq!(outcomes(&answered)["j/t/ask1"], "changed", "{answered}");
    let prompt = std::fs::read_to_string(t.meta("ask1", "j").join("prompt.md")).unwrap();
    assert!(
        prompt.contains("Which port should the service use?") && prompt.contains("Use port 8080"),
        "{prompt}"
    );
    assert!(
        prompt.contains("# Task"),
        "the original prompt stays: {prompt}"
    );
    assert_eq!(t.agent_runs("ask1", "j"), 2);
    let files = t.git(
        ".dispatch/forge/t/ask1.git",
        &["ls-tree", "--name-only", "agent/j"],
    );
    assert!(
        !files.contains("ANSWER.md") && !files.contains("BLOCKED.md"),
        "{files}"
    );

    // Retry --failed re-runs the failed unit only.
    let out = t.run(&["retry", &run, "--failed", "--output", "json"]);
    // retry names what it re-runs on stderr; stdout is the report alone.
    assert!(out.stderr.contains("retrying 1 unit"), "{}", out.stderr);
    let retried = out.json();
    assert_eq!(outcomes(&retried)["j/t/flaky1"], "changed", "{retried}");
    assert_eq!(t.agent_runs("flaky1", "j"), 2);
    assert_eq!(
        t.agent_runs("ok1", "j"),
        1,
        "a unit that succeeded is not run again"
    );
    let runs = t.run(&["runs", "--json"]).expect_status(0).json();
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "retry and answer continue the same run"
    );
    assert_eq!(leftovers(&run), 0);
}

/// Waits (at most a minute) for run `run` to end, as `dispatch status --json` reports it.
fn wait_for_end(t: &Test, run: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = t.run(&["status", run, "--json"]).json();
        if status["run"]["status"] != "running" || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `--detach`: the command answers once the run is recorded, the runner finishes it alone,
/// and an answer given detached runs the blocked unit again; errors of a detached runner are
/// the command's own.
#[test]
fn a_detached_runner_finishes_the_run_alone() {
    if !available() {
        return;
    }
    let t = Test::new("detach")
        .scripted_repos(&[("slow1", "nap"), ("ask1", "ask")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [slow1, ask1], qa: [] }
            "#,
        );
    let started = t
        .run(&["run", "spec.yaml", "--detach", "--output", "json"])
        .expect_status(0)
        .json();
    let run = started["run"].as_str().expect("a run id").to_owned();
    let units = started["units"].as_array().expect("units");
    assert_eq!(units.len(), 2, "{started}");
    for unit in units {
        assert!(
            matches!(unit["state"].as_str(), Some("queued" | "running")),
            "answered before the units ended: {started}"
        );
        assert!(unit["workspace"]
            .as_str()
            .is_some_and(|w| w.contains("workspaces")));
    }
    let ended = wait_for_end(&t, &run);
    assert_eq!(ended["run"]["status"], "finished", "{ended}");
    assert_eq!(
        outcomes(&ended),
        [("j/t/ask1", "blocked"), ("j/t/slow1", "changed")]
            .into_iter()
            .map(|(u, o)| (u.to_owned(), o.to_owned()))
            .collect()
    );
    let log = std::fs::read_to_string(started["log"].as_str().expect("a log")).expect("the log");
    assert!(
        log.contains("\"success\""),
        "the runner's report is in its log: {log}"
    );

    // The answer, detached too; then the unit runs again and ends changed.
    let answered = t
        .run(&[
            "answer",
            &run,
            "j/t/ask1",
            "Port 8080",
            "--detach",
            "--output",
            "json",
        ])
        .expect_status(0)
        .json();
    assert_eq!(answered["run"], run.as_str(), "{answered}");
    let ended = wait_for_end(&t, &run);
    assert_eq!(outcomes(&ended)["j/t/ask1"], "changed", "{ended}");

    // A runner that fails before its run is recorded: its error and status are the command's.
    let wrong = t.run(&["answer", &run, "j/t/nobody", "x", "--detach"]);
    let wrong = wrong.expect_status(1);
    assert!(
        wrong.stderr.contains("has no unit j/t/nobody"),
        "{}",
        wrong.stderr
    );
}

/// One-call runs of one defaults spec share its limits across their runners: with
/// `limits.total: 1`, two detached runs never run their agents at once (the second waits,
/// queued, until the first lets its slot go), and both end changed.
#[test]
fn one_call_runs_share_their_defaults_specs_limits() {
    if !available() {
        return;
    }
    let t = Test::new("shared-limits")
        .scripted_repos(&[("n1", "nap"), ("n2", "nap")])
        .scripted_defaults();
    let defaults = format!("{}limits: {{ total: 1 }}\n", t.read("dispatch.yaml"));
    std::fs::write(t.path("dispatch.yaml"), defaults).expect("the defaults spec");
    let start = |repo: &str| {
        let started = t
            .run(&[
                "run", "--detach", "--output", "json", "--repo", repo, "--task", "Nap",
            ])
            .expect_status(0)
            .json();
        started["run"].as_str().expect("a run").to_owned()
    };
    let (first, second) = (start("t/n1"), start("t/n2"));
    let mut spans = Vec::new();
    for run in [&first, &second] {
        let ended = wait_for_end(&t, run);
        assert_eq!(ended["units"][0]["outcome"], "changed", "{ended}");
        let events = t.events(run);
        let at = |kind: &str| {
            events
                .iter()
                .find(|e| {
                    e.kind == kind && e.node.as_deref().is_some_and(|n| n.ends_with(":agent"))
                })
                .map(|e| e.at_ms)
                .unwrap_or_else(|| panic!("{run}: no agent {kind} in {events:?}"))
        };
        spans.push((at("started"), at("done")));
    }
    let ((a0, a1), (b0, b1)) = (spans[0], spans[1]);
    assert!(
        a1 <= b0 || b1 <= a0,
        "the two runs' agents ran at once: {spans:?}"
    );
}
