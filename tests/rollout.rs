//! Rollout through `dispatch run`: a canary and batches in order with a pause between them,
//! a halt once too many fail, and `resume` continuing the units the halt held back. The
//! agents are the scripted ones, failing on purpose.

use crate::support::{docker, outcomes, unit, Test};

/// The journal's node events in order: (node, kind, at_ms).
fn node_events(t: &Test) -> Vec<(String, String, i64)> {
    let db = rusqlite::Connection::open(t.path(".dispatch/dispatch.db")).expect("the journal");
    let mut statement = db
        .prepare("SELECT node_id, kind, at_ms FROM events WHERE node_id IS NOT NULL ORDER BY seq")
        .expect("a query");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("rows")
        .map(|row| row.expect("a row"))
        .collect()
}

#[test]
fn the_canary_then_each_batch_start_once_the_wave_before_finished_and_paused() {
    if !docker::available() {
        return;
    }
    let repos = ["w1", "w2", "w3", "w4", "w5"];
    let t = Test::new("rollout-waves")
        .scripted_repos(&repos.map(|r| (r, "nap")))
        .scripted_spec(
            r#"
            limits: { total: 4 }
            rollout: { canary: 1, batch: 2, pause: 2s }
            jobs:
              - { id: j, task: t, repos: [w1, w2, w3, w4, w5], qa: [], publish: false }
            "#,
        );
    let plan = t.run(&["plan", "spec.yaml"]).expect_status(0);
    for (repo, wave) in [("w1", 0), ("w3", 1), ("w5", 2)] {
        assert!(
            plan.stdout.contains(&format!(
                "  t/{repo}  [agent/j -> the default branch]\n  │  rollout wave {wave}\n"
            )),
            "{}",
            plan.stdout
        );
    }
    let json = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    let waves: Vec<u64> = json["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| u["wave"].as_u64().expect("a wave"))
        .collect();
    assert_eq!(waves, [0, 1, 1, 2, 2], "{json}");

    let report = t
        .run(&["run", "spec.yaml", "--output", "json"])
        .expect_status(0)
        .json();
    assert_eq!(outcomes(&report).len(), 5, "{report}");
    let events = node_events(&t);
    let of = |repo: &str| format!("j/t/{repo}:");
    let first_start = |repo: &str| {
        events
            .iter()
            .position(|(node, kind, _)| node.starts_with(&of(repo)) && kind == "started")
            .unwrap_or_else(|| panic!("{repo} started: {events:?}"))
    };
    let last_end = |repo: &str| {
        events
            .iter()
            .rposition(|(node, kind, _)| node.starts_with(&of(repo)) && kind == "done")
            .unwrap_or_else(|| panic!("{repo} ended: {events:?}"))
    };
    for (before, after) in [
        (&["w1"][..], &["w2", "w3"][..]),
        (&["w2", "w3"], &["w4", "w5"]),
    ] {
        let ended = before.iter().map(|r| last_end(r)).max().expect("a wave");
        for repo in after {
            let started = first_start(repo);
            assert!(
                started > ended,
                "{repo} started before its wave's turn: {events:?}"
            );
            assert!(
                events[started].2 - events[ended].2 >= 2000,
                "the pause of 2s passed before {repo}: {events:?}"
            );
        }
    }
    // Within a wave, units run side by side: the batch's second unit starts before its first ends.
    assert!(first_start("w3") < last_end("w2"), "{events:?}");
}

#[test]
fn a_failing_canary_halts_the_rollout_and_resume_continues_the_held_units() {
    if !docker::available() {
        return;
    }
    let t = Test::new("rollout-halt")
        .scripted_repos(&[
            ("h1", "fail"),
            ("h2", "change"),
            ("h3", "change"),
            ("h4", "change"),
        ])
        .scripted_spec(
            r#"
            rollout: { canary: 1, batch: 2, halt_if: { failure_rate: 0.5 } }
            jobs:
              - { id: j, task: t, repos: [h1, h2, h3, h4], qa: [] }
            "#,
        );
    let out = t.run(&["run", "spec.yaml"]).expect_status(1);
    assert!(
        out.stdout
            .contains("3 units were held back by the rollout's halt: fix what failed"),
        "{}",
        out.stdout
    );
    let status = t.run(&["status", "--output", "json"]).json();
    let report = &status;
    assert_eq!(
        unit(report, "j/t/h1")["outcome"],
        "agent_failed",
        "{report}"
    );
    for repo in ["h2", "h3", "h4"] {
        let held = unit(report, &format!("j/t/{repo}"));
        assert_eq!(held["outcome"], "skipped", "{held}");
        assert_eq!(held["held"], "rollout", "{held}");
        assert_eq!(
            held["reason"],
            "rollout halted: 1 of 1 finished units failed (100%, above rollout.halt_if.failure_rate 50%)",
            "{held}"
        );
        assert!(
            held["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["attempts"] == 0),
            "nothing of a held unit ran: {held}"
        );
    }
    let events = node_events(&t);
    assert!(
        !events
            .iter()
            .any(|(node, kind, _)| kind == "started" && !node.starts_with("j/t/h1:")),
        "no held unit started: {events:?}"
    );

    // The agent is fixed for the held units; resume continues them, counting failures afresh.
    let run = status["run"]["id"].as_str().expect("a run id").to_owned();
    let out = t
        .run(&["resume", &run, "--output", "json"])
        .expect_status(1);
    assert!(
        out.stderr.contains("3 units of run")
            && out
                .stderr
                .contains("held back by the rollout's halt start again: j/t/h2, j/t/h3, j/t/h4"),
        "{}",
        out.stderr
    );
    let report = out.json();
    for repo in ["h2", "h3", "h4"] {
        assert_eq!(
            unit(&report, &format!("j/t/{repo}"))["outcome"],
            "changed",
            "{report}"
        );
    }
    assert_eq!(
        unit(&report, "j/t/h1")["outcome"],
        "agent_failed",
        "{report}"
    );
}
