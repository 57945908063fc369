//! Budgets through `dispatch run`: reservations against the totals, units held back and
//! continued by `resume` once the budget is raised. The agent is a script that prints claude's
//! stream-json events with the cost it reports (the real CLIs are metered in real_codex.rs).

use std::collections::HashMap;

use serde_json::Value;

use crate::support::{docker, unit, Test};

/// An agent that edits `file.txt`, takes a second, and reports $0.30 and 1200 tokens as
/// Claude Code's stream-json does.
const SPENDER: &str = r#"#!/bin/sh
sleep 1
echo spent >> file.txt
echo '{"type":"system","subtype":"init","session_id":"s-1","model":"scripted"}'
echo '{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","name":"Bash","input":{"command":"echo spent >> file.txt"}}],"usage":{"input_tokens":1000,"output_tokens":1}}}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-1","num_turns":1,"total_cost_usd":0.3,"usage":{"input_tokens":1000,"output_tokens":200}}'
"#;

/// Four units of $0.30 each, two at a time, each capped at $0.50 against a total of `total`.
fn spender(name: &str, total: &str) -> Test {
    Test::new(name)
        .file("spender.sh", SPENDER)
        .repo("r1", &[("file.txt", "a\n")])
        .repo("r2", &[("file.txt", "a\n")])
        .repo("r3", &[("file.txt", "a\n")])
        .repo("r4", &[("file.txt", "a\n")])
        .spec(&spec(total))
}

fn spec(total: &str) -> String {
    [
        "version: 1",
        "name: t",
        "forge: { kind: local, seed: repos }",
        "defaults: { org: t, agent: spender, image: dispatch-busybox, timeout: 1m }",
        "limits: { total: 2 }",
        "budget:",
        "  per_unit: { max_usd: 0.5 }",
        &format!("  total: {{ max_usd: {total} }}"),
        "agents:",
        "  spender:",
        "    command: [sh, /opt/spender.sh]",
        "    mounts: [{ source: spender.sh, target: /opt/spender.sh }]",
        "    network: none",
        "    output: claude-stream-json",
        "jobs:",
        "  - { id: fix, task: Spend, repos: [r1, r2, r3, r4], qa: [] }",
        "",
    ]
    .join("\n")
}

/// The reservations and releases the journal recorded, in order: (kind, unit, usd).
fn ledger(t: &Test) -> Vec<(String, String, f64)> {
    let db = rusqlite::Connection::open(t.path(".dispatch/dispatch.db")).expect("the journal");
    let mut statement = db
        .prepare(
            "SELECT kind, detail FROM events WHERE kind IN ('reserved', 'released') ORDER BY seq",
        )
        .expect("a query");
    statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .expect("rows")
        .map(|row| {
            let (kind, detail) = row.expect("a row");
            let detail: Value = serde_json::from_str(&detail).expect("JSON detail");
            let unit = detail["unit"].as_str().expect("a unit").to_owned();
            (kind, unit, detail["usd"].as_f64().expect("usd"))
        })
        .collect()
}

#[test]
fn reservations_hold_under_concurrency_and_resume_continues_the_unit_held_back() {
    if !docker::available() {
        return;
    }
    let t = spender("budget-held", "1.2");
    let out = t.run(&["run", "spec.yaml", "--output", "json"]);
    assert_eq!(out.status, 1, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    for repo in ["r1", "r2", "r3"] {
        let unit = unit(&report, &format!("fix/t/{repo}"));
        assert_eq!(unit["outcome"], "changed", "{unit}");
        assert_eq!(unit["usage"]["cost_usd"], 0.3, "{unit}");
    }
    // $0.90 spent, $0.30 left: the last unit's cap of $0.50 does not fit once nothing runs.
    let held = unit(&report, "fix/t/r4");
    assert_eq!(held["outcome"], "skipped", "{held}");
    assert_eq!(held["held"], "budget", "{held}");
    let reason = held["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("budget: the unit needs $0.5000 (budget.per_unit.max_usd) but budget.total.max_usd has $0.3000 left of $1.2000 ($0.9000 spent)"),
        "{reason}"
    );

    // From the journal: at no moment did what was spent and what running units held pass the
    // total, and two units ran at once while the total allowed it.
    let events = ledger(&t);
    let (mut holding, mut spent, mut most_at_once) = (HashMap::new(), 0.0, 0);
    for (kind, unit, usd) in &events {
        match kind.as_str() {
            "reserved" => {
                assert_eq!(*usd, 0.5, "{events:?}");
                holding.insert(unit.clone(), *usd);
            }
            _ => {
                holding
                    .remove(unit)
                    .expect("a release follows its reservation");
                spent += usd;
            }
        }
        let held: f64 = holding.values().sum();
        assert!(
            spent + held <= 1.2 + 1e-9,
            "{spent} + {held} past the total: {events:?}"
        );
        most_at_once = most_at_once.max(holding.len());
    }
    assert_eq!(most_at_once, 2, "{events:?}");
    assert_eq!(
        events.len(),
        6,
        "three units reserved and released: {events:?}"
    );

    // Raised, the held unit runs on resume; the others do not run again.
    std::fs::write(t.path("spec.yaml"), spec("2.0")).expect("the spec");
    let run = report["run"].as_str().expect("a run id");
    let out = t.run(&["resume", run, "--output", "json"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("1 unit of run")
            && out
                .stderr
                .contains("held back by the budget starts again: fix/t/r4"),
        "{}",
        out.stderr
    );
    let report = out.json();
    assert_eq!(unit(&report, "fix/t/r4")["outcome"], "changed", "{report}");
    let status = t.run(&["status", run, "--output", "json"]).json();
    let total = &status["usage"]["cost_usd"];
    assert!(
        (total.as_f64().unwrap_or_default() - 1.2).abs() < 1e-9,
        "four units of $0.30 in the run: {status}"
    );
}
