//! `dispatch run` against the real Docker engine (a busybox image built once, scripted agents,
//! the local forge's bare repositories, the real journal), and what `run`, `status`, `runs`
//! and `prs` say when there is nothing to run against.
//!
//! When the engine is unreachable the Docker tests skip, unless DISPATCH_REQUIRE_DOCKER=1
//! (CI), where they fail.

use std::collections::BTreeMap;

use dispatch::state::views::EventRow;

use crate::support::docker::{available, leftovers};
use crate::support::{outcomes, unit, Test};

/// `dispatch run spec.yaml --output json`.
const RUN: &[&str] = &["run", "spec.yaml", "--output", "json"];

fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(unit, outcome)| (unit.to_string(), outcome.to_string()))
        .collect()
}

#[test]
fn ten_units_end_with_honest_mixed_outcomes() {
    if !available() {
        return;
    }
    let t = Test::new("mixed")
        .scripted_repos(&[
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
        ])
        .scripted_spec(
            r#"
            limits: { total: 4 }
            jobs:
              - id: mixed
                task: Do the thing
                timeout: 6s
                repos: [c1, c2, n1, b1, f1, s1, r1, q1]
                qa: [{ run: sh test.sh }]
                fix_attempts: 1
              - id: loud
                task: Print a lot
                timeout: 2m
                repos: [l1]
                qa: [{ run: sh test.sh }]
              - id: missing
                task: Do the thing
                image: dispatch-no-such-image:1
                repos: [m1]
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    assert_eq!(report["success"], false, "a failed unit makes the run fail");
    assert_eq!(
        outcomes(&report),
        want(&[
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
        ])
    );
    let reason = |id: &str| {
        unit(&report, id)["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        reason("mixed/t/b1").contains("Which database"),
        "the question is the reason"
    );
    assert!(
        t.meta("b1", "mixed").join("BLOCKED.md").exists(),
        "BLOCKED.md moves to meta/"
    );
    assert!(reason("mixed/t/f1").contains("exited with code 7"));
    assert!(
        reason("mixed/t/f1").contains("boom: cannot continue"),
        "the log tail is in the reason"
    );
    assert!(
        reason("missing/t/m1").contains("dispatch-no-such-image:1"),
        "the missing image is named"
    );
    assert!(
        reason("mixed/t/q1").contains("qa-says-not-ok"),
        "the failing step's output is in the reason"
    );
    let loud = std::fs::read(t.meta("l1", "loud").join("agent.log")).unwrap();
    assert!(
        loud.len() < (16 << 20) + 1024,
        "the 50 MB burst is cut to the default cap of 16 MiB ({} bytes)",
        loud.len()
    );
    assert!(
        loud.starts_with(b"agent run: loud") && loud.ends_with(b"\0\n"),
        "the head and the tail of the burst are kept"
    );
    let shown = String::from_utf8_lossy(&loud);
    let first_line = shown.find('\n').expect("a first line") + 1;
    let printed = first_line + 52_428_800 + 1;
    assert!(
        shown.contains(&format!(
            "{} bytes of output cut here",
            printed - (16 << 20)
        )),
        "the log says how much was cut"
    );
    assert_eq!(
        t.agent_runs("r1", "mixed"),
        2,
        "one fix attempt ran the agent twice"
    );
    assert_eq!(
        t.agent_runs("q1", "mixed"),
        2,
        "fix_attempts bounds the loop"
    );

    // `dispatch status` agrees, in JSON and in the summary people read.
    let status = t.run(&["status", "--json"]).expect_status(0).json();
    assert_eq!(outcomes(&status), outcomes(&report));
    let summary = t.run(&["status"]).expect_status(0).stdout;
    for (id, outcome) in outcomes(&report) {
        assert!(
            summary
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([outcome.as_str(), &id])),
            "the summary shows {id} as {outcome}:\n{summary}"
        );
    }

    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
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
    let files = t.git(
        ".dispatch/forge/t/c1.git",
        &["ls-tree", "--name-only", "agent/mixed"],
    );
    assert!(
        files.contains("file.txt") && !files.contains("BLOCKED.md"),
        "{files}"
    );
    assert_eq!(
        leftovers(report["run"].as_str().unwrap()),
        0,
        "no container is left behind"
    );

    // A second run of the same spec updates the PRs; it never opens a second one.
    let again = t.run(RUN).json();
    assert_eq!(outcomes(&again)["mixed/t/c1"], "changed");
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(prs.as_array().unwrap().len(), 4);
}

/// The agent nodes of `events` whose id starts with `prefix`.
fn agent_events<'a>(events: &'a [EventRow], prefix: &'a str) -> impl Iterator<Item = &'a EventRow> {
    events.iter().filter(move |e| {
        e.node
            .as_deref()
            .is_some_and(|n| n.starts_with(prefix) && n.ends_with(":agent"))
    })
}

/// The most agent nodes starting with `prefix` that ran at once.
fn max_concurrent(events: &[EventRow], prefix: &str) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for event in agent_events(events, prefix) {
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

/// When the agent nodes starting with `prefix` started (ms).
fn starts(events: &[EventRow], prefix: &str) -> Vec<i64> {
    agent_events(events, prefix)
        .filter(|e| e.kind == "started")
        .map(|e| e.at_ms)
        .collect()
}

#[test]
fn pool_limits_and_min_delay_hold_while_other_pools_run() {
    if !available() {
        return;
    }
    let t = Test::new("limits")
        .scripted_repos(&[
            ("a1", "nap"),
            ("a2", "nap"),
            ("a3", "nap"),
            ("b1", "nap"),
            ("b2", "nap"),
            ("b3", "nap"),
            ("b4", "nap"),
        ])
        .scripted_spec(
            r#"
              other:
                command: [sh, /opt/agent.sh, "{{ prompt_file }}"]
                mounts: [{ source: agent.sh, target: /opt/agent.sh }]
                network: none
            limits:
              total: 3
              agents: { scripted: 1, other: 2 }
              rates: { scripted: { min_delay: 3s } }
            jobs:
              - { id: ja, task: t, repos: [a1, a2, a3], qa: [], publish: false }
              - { id: jb, task: t, agent: other, repos: [b1, b2, b3, b4], qa: [], publish: false }
            "#,
        );
    let report = t.run(RUN).expect_status(0).json();
    let run = report["run"].as_str().unwrap();
    let events = t.events(run);
    assert_eq!(
        max_concurrent(&events, "ja/"),
        1,
        "pool `scripted` allows 1"
    );
    assert!(max_concurrent(&events, "jb/") <= 2, "pool `other` allows 2");
    assert!(max_concurrent(&events, "") <= 3, "total allows 3");
    let a = starts(&events, "ja/");
    assert_eq!(a.len(), 3);
    for pair in a.windows(2) {
        // The journal's clock counts whole milliseconds beside the limiter's monotonic clock.
        assert!(
            pair[1] - pair[0] >= 2990,
            "min_delay 3s between starts of one pool: {a:?}"
        );
    }
    let b = starts(&events, "jb/");
    assert!(
        b.iter().any(|&at| at > a[0] && at < a[1]),
        "the other pool starts while `scripted` waits: a={a:?} b={b:?}"
    );
    assert_eq!(leftovers(run), 0);
}

#[test]
fn only_runs_each_chosen_unit_with_its_own_job_and_prompt() {
    if !available() {
        return;
    }
    let t = Test::new("only")
        .scripted_repos(&[("o1", "none"), ("o2", "none"), ("o3", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: first, task: Tidy the README, repos: [o1, o2], qa: [] }
              - { id: second, task: Bump the version, repos: [o3], qa: [] }
            "#,
        );
    let report = t
        .run(&[RUN, &["--only", "first/o2", "--only", "second"]].concat())
        .expect_status(0)
        .json();
    assert_eq!(
        outcomes(&report),
        want(&[("first/t/o2", "no_changes"), ("second/t/o3", "changed")])
    );
    // Each unit's prompt is its own: its repository and its job's task, not those of the
    // units --only left out.
    for (repo, key, task) in [
        ("o2", "first", "Tidy the README"),
        ("o3", "second", "Bump the version"),
    ] {
        let prompt = std::fs::read_to_string(t.meta(repo, key).join("prompt.md")).unwrap();
        assert!(prompt.contains(&format!("`t/{repo}`")), "{repo}: {prompt}");
        assert!(prompt.contains(task), "{repo}: {prompt}");
    }
    assert!(!t.meta("o1", "first").exists(), "o1 was left out");
}

#[test]
fn an_unchanged_second_run_takes_agent_results_from_the_cache() {
    if !available() {
        return;
    }
    let t = Test::new("cache")
        .scripted_repos(&[("k1", "change"), ("k2", "none")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [k1, k2], qa: [{ run: sh test.sh }] }
            "#,
        );
    let first = t.run(RUN).expect_status(0).json();
    let second = t.run(RUN).expect_status(0).json();
    assert_eq!(outcomes(&second), outcomes(&first));
    assert_eq!(
        t.agent_runs("k1", "j"),
        1,
        "the cached result spent no second agent run"
    );
    assert_eq!(t.agent_runs("k2", "j"), 1);
    let run = second["run"].as_str().unwrap();
    let status = t.run(&["status", run, "--json"]).expect_status(0).json();
    let cached: Vec<(&str, bool)> = status["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["nodes"].as_array().unwrap())
        .map(|n| (n["kind"].as_str().unwrap(), n["cached"] == true))
        .filter(|(_, cached)| *cached)
        .collect();
    assert_eq!(
        cached,
        [("agent", true), ("agent", true)],
        "dispatch status says both agent results came from the cache: {status}"
    );
    t.run(&[RUN, &["--no-cache"]].concat()).expect_status(0);
    assert_eq!(t.agent_runs("k1", "j"), 2, "--no-cache runs the agent");
}

#[test]
fn a_pr_target_continues_the_pr_branch_and_updates_the_pr() {
    if !available() {
        return;
    }
    let t = Test::new("pr-target")
        .scripted_repos(&[("p1", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [p1], qa: [] }
            "#,
        );
    t.run(RUN).expect_status(0);
    let bare = ".dispatch/forge/t/p1.git";
    let first_head = t.git(bare, &["rev-parse", "refs/heads/agent/j"]);

    // A second job works on PR #1: on its branch, from its head, and updates it.
    let t = t.scripted_spec(
        r#"
        jobs:
          - { id: k, task: t, repos: [{ repo: p1, pr: 1 }], qa: [] }
        "#,
    );
    let plan = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    assert_eq!(plan["units"][0]["branch"], "agent/j", "{plan}");
    assert_eq!(plan["units"][0]["key"], "pr-1", "{plan}");
    let second = t.run(RUN).expect_status(0).json();
    assert_eq!(outcomes(&second), want(&[("k/t/p1/pr-1", "changed")]));
    let head = t.git(bare, &["rev-parse", "refs/heads/agent/j"]);
    assert_ne!(head, first_head, "the PR's branch moved");
    assert_eq!(
        t.git(bare, &["rev-parse", "refs/heads/agent/j~1"]),
        first_head,
        "the new commit sits on the PR's head, nothing was overwritten"
    );
    assert_eq!(
        t.git(bare, &["show", "refs/heads/agent/j:file.txt"]),
        "changed\nchanged",
        "the agent built on the PR's changes"
    );
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(
        prs.as_array().map(Vec::len),
        Some(1),
        "updated, not duplicated: {prs}"
    );
}

/// An agent that tries to reach the host through what dispatch does after it: hooks and
/// configuration in `.git` (git runs them on the host), and symlinks where dispatch reads or
/// writes (`BLOCKED.md`, logs, `status.json`). VICTIM stands for a host file's path.
const HOSTILE_AGENT: &str = r#"#!/bin/sh
victim="VICTIM"
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

/// An agent that leaves FIFOs where dispatch reads a question and a log, then real work.
const FIFO_AGENT: &str = r#"#!/bin/sh
mkfifo BLOCKED.md /workspace/.meta/qa.log
echo "real work" > work.txt
echo "agent done"
"#;

#[test]
fn fifos_an_agent_plants_never_hang_the_runner_or_logs() {
    if !available() {
        return;
    }
    let t = Test::new("fifo")
        .agent(FIFO_AGENT)
        .scripted_repos(&[("f1", "none")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [f1], retries: 0, qa: [{ run: "echo qa output" }] }
            "#,
        );
    // Each of these would block for good on a plain open of a FIFO.
    let report = t.run(RUN).expect_status(1).json();
    let f1 = unit(&report, "j/t/f1");
    assert_eq!(f1["outcome"], "infra_error", "{report}");
    assert!(
        f1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("qa.log") && r.contains("is a FIFO")),
        "the reason names the planted FIFO: {report}"
    );
    let run = report["run"].as_str().unwrap();
    let logs = t.run(&["logs", run, "j/t/f1:qa"]).expect_status(1);
    assert!(logs.stderr.contains("is a FIFO"), "{}", logs.stderr);
    let logs = t.run(&["logs", run, "j/t/f1:agent"]).expect_status(0);
    assert!(logs.stdout.contains("agent done"), "{}", logs.stdout);
}

#[test]
fn a_hostile_agent_cannot_reach_the_host_through_git_or_symlinks() {
    if !available() {
        return;
    }
    let t = Test::new("hostile").file("victim.txt", "host secret\n");
    let victim = t.path("victim.txt");
    let t = t
        .agent(&HOSTILE_AGENT.replace("VICTIM", &victim.display().to_string()))
        .scripted_repos(&[("h1", "none")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [h1], retries: 0, qa: [{ run: "echo qa output" }] }
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    // The planted log link stops QA (its output would have gone into the victim).
    let h1 = unit(&report, "j/t/h1");
    assert_eq!(h1["outcome"], "infra_error", "{report}");
    assert!(
        h1["reason"].as_str().unwrap_or_default().contains("qa.log"),
        "the reason names the log: {report}"
    );
    let meta = t.meta("h1", "j");
    let agent_log = std::fs::read_to_string(meta.join("agent.log")).unwrap();
    assert!(agent_log.contains("agent done"), "{agent_log}");
    for attempt in ["wrote a hook", "wrote the config", "broke HEAD"] {
        assert!(
            !agent_log.contains(attempt),
            "the agent could write .git: {agent_log}"
        );
    }
    assert_eq!(t.read("victim.txt"), "host secret\n");
    for ran in ["hook-ran", "fsmonitor-ran"] {
        assert!(
            !t.path(&format!("victim.txt.{ran}")).exists(),
            "{ran}: the agent's code ran on the host"
        );
    }
    // The planted BLOCKED.md link is no question (its target is never read), and it is not
    // committed; the real work is.
    assert!(!report.to_string().contains("host secret"), "{report}");
    assert_eq!(
        t.git(
            ".dispatch/workspaces/t/h1/j/repo",
            &["show", "--name-only", "--format=", "HEAD"]
        ),
        "work.txt"
    );
    let status_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(meta.join("status.json")).unwrap()).unwrap();
    assert_eq!(status_json["outcome"], "infra_error", "{status_json}");
    assert_eq!(t.read("victim.txt"), "host secret\n");
}

#[test]
fn an_unreachable_engine_exits_3_and_says_how_to_start_it() {
    let t = Test::new("noengine")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .scripted_repos(&[("e1", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [e1] }
            "#,
        );
    let out = t.run(&["run", "spec.yaml"]).expect_status(3);
    assert!(
        out.stderr.contains("Start the Docker engine"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_invalid_spec_exits_2_before_anything_runs() {
    let t = Test::new("invalid-run").spec(
        r#"
        version: 1
        name: cycle
        defaults: { org: core }
        jobs:
          - { id: a, task: t, repos: [go-io], needs: [b] }
          - { id: b, task: t, repos: [go-io], needs: [a] }
        "#,
    );
    let out = t.run(&["run", "spec.yaml"]).expect_status(2);
    assert!(
        out.stderr.contains("`needs` forms a cycle"),
        "{}",
        out.stderr
    );
    assert!(
        !t.path(".dispatch").exists(),
        "nothing ran, nothing was recorded"
    );
}

#[test]
fn prs_without_a_state_directory_says_so() {
    let out = Test::new("noprs").run(&["prs"]).expect_status(1);
    assert!(out.stderr.contains("no state database"), "{}", out.stderr);
}

#[test]
fn a_broken_state_database_is_named_with_what_to_do() {
    let t = Test::new("corrupt").file(
        ".dispatch/dispatch.db",
        &"this is not a database ".repeat(200),
    );
    let out = t.run(&["status"]).expect_status(1);
    assert!(
        out.stderr.contains("dispatch.db") && out.stderr.contains("damaged"),
        "{}",
        out.stderr
    );

    // A database of a newer schema version: only SQL can make one, since no dispatch writes it.
    let t = Test::new("newer");
    std::fs::create_dir_all(t.path(".dispatch")).unwrap();
    rusqlite::Connection::open(t.path(".dispatch/dispatch.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema_version', '99');",
        )
        .unwrap();
    let out = t.run(&["runs"]).expect_status(1);
    assert!(
        out.stderr
            .contains("schema version 99, newer than this dispatch understands"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_watchdog_stops_a_silent_agent_and_spares_one_that_keeps_talking() {
    if !available() {
        return;
    }
    let t = Test::new("watchdog")
        .agent(
            r#"#!/bin/sh
case "$(cat behaviour)" in
  silent) echo "started"; sleep 120 ;;
  talking) for i in 1 2 3 4 5 6; do echo "still working $i"; sleep 1; done; echo done >> file.txt ;;
esac
"#,
        )
        .scripted_repos(&[("s1", "silent"), ("k1", "talking")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [s1, k1], qa: [], timeout: 5m, idle_timeout: 3s }
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    let got = outcomes(&report);
    assert_eq!(
        got["j/t/k1"], "changed",
        "output every second keeps it alive: {report}"
    );
    assert_eq!(got["j/t/s1"], "timed_out", "{report}");
    let reason = unit(&report, "j/t/s1")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("the agent printed nothing for 3s (idle_timeout) and was stopped")
            && reason.contains("started"),
        "the reason names the watchdog, not the 5m timeout, and shows the log: {reason}"
    );
}

/// A review on the local forge: what the review agent printed is a comment of the PR, which
/// `dispatch prs --show` shows whole and `prs --json` lists.
#[test]
fn a_review_is_posted_on_the_local_forges_pr() {
    if !available() {
        return;
    }
    let t = Test::new("review-local")
        .scripted_repos(&[("r1", "change")])
        .file(
            "review.sh",
            "#!/bin/sh\nprintf 'Looks right.\\n\\nReview comment:\\n\\n- [P2] Say why — file.txt:1\\n  The line gives no reason.\\n'\n",
        )
        .scripted_spec(
            r#"
              reviewer:
                command: [sh, /opt/review.sh]
                mounts: [{ source: review.sh, target: /opt/review.sh }]
                network: none
            jobs:
              - { id: fix, task: t, repos: [r1], qa: [], review: { agent: reviewer } }
            "#,
        );
    let report = t.run(RUN).expect_status(0).json();
    assert_eq!(outcomes(&report)["fix/t/r1"], "changed", "{report}");
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    let comments = prs[0]["comments"].as_array().expect("comments");
    assert_eq!(comments.len(), 1, "{prs}");
    let body = comments[0]["body"].as_str().expect("a body");
    assert!(body.starts_with("### Review by `reviewer`"), "{body}");
    assert!(body.contains("- [P2] Say why — file.txt:1"), "{body}");
    let shown = t.run(&["prs", "--show", "1"]).expect_status(0).stdout;
    assert!(
        shown.contains("--- comment, ") && shown.contains("The line gives no reason."),
        "{shown}"
    );
    let listed = t.run(&["prs"]).expect_status(0).stdout;
    assert!(listed.contains("(1 comment)"), "{listed}");
    let missing = t.run(&["prs", "--show", "9"]).expect_status(2);
    assert!(
        missing.stderr.contains("no pull request #9"),
        "{}",
        missing.stderr
    );
    let log = t.read(".dispatch/workspaces/t/r1/fix/meta/review.log");
    assert!(
        log.contains("the review has 1 finding(s); it is posted on local:t/r1#1"),
        "{log}"
    );
}

/// The one-call form: `dispatch run --repo --task` with the defaults spec found upward from the
/// current directory plans exactly what the equivalent spec plans, runs like it (changed, a
/// PR), and its blocked unit is answered like any other, its job read back from the state
/// directory.
#[test]
fn the_one_call_form_is_a_spec_with_one_target() {
    if !available() {
        return;
    }
    let t = Test::new("one-call")
        .scripted_repos(&[("r1", "change"), ("r2", "ask")])
        .scripted_defaults()
        .file("deep/down/.keep", "");
    let call = [
        "--repo",
        "t/r1",
        "--task",
        "Fix \"the\" tests: all of them",
        "--var",
        "level=high: really",
    ];
    let from_below = t.run_in(
        "deep/down",
        &[&["plan", "--format", "json"][..], &call].concat(),
    );
    let planned = from_below.expect_status(0).json();
    let job = planned["units"][0]["job"]
        .as_str()
        .expect("a job")
        .to_owned();
    assert!(job.starts_with("task-"), "{job}");
    let equivalent = format!(
        "{}jobs:\n  - id: {job}\n    task: 'Fix \"the\" tests: all of them'\n    variables: {{ level: 'high: really' }}\n    repos: [{{ org: t, repo: r1 }}]\n",
        t.read("dispatch.yaml")
    );
    std::fs::write(t.path("spec.yaml"), equivalent).expect("the spec");
    let spec_plan = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    assert_eq!(planned, spec_plan, "the same plan as the equivalent spec");

    let report = t
        .run(&[&["run", "--output", "json"][..], &call].concat())
        .expect_status(0)
        .json();
    assert_eq!(
        outcomes(&report)[&format!("{job}/t/r1")],
        "changed",
        "{report}"
    );
    let prs = t.run(&["prs", "--json"]).expect_status(0).json();
    assert_eq!(prs[0]["branch"], format!("agent/{job}"), "{prs}");

    // Another task is another job: its own workspace and branch. Blocked, then answered.
    let asked = t
        .run(&[
            "run",
            "--output",
            "json",
            "--repo",
            "t/r2",
            "--task",
            "Ask first",
        ])
        .expect_status(1)
        .json();
    let (unit, outcome) = outcomes(&asked).into_iter().next().expect("a unit");
    assert_eq!(outcome, "blocked", "{asked}");
    let run = asked["run"].as_str().expect("a run id");
    let answered = t
        .run(&["answer", run, &unit, "Port 8080", "--output", "json"])
        .json();
    assert_eq!(outcomes(&answered)[&unit], "changed", "{answered}");
    let status = t.run(&["status", run]).expect_status(0).stdout;
    assert!(status.contains("dispatch.yaml#task-"), "{status}");

    // A bad input is the spec's error, located in the one-call task.
    let bad = t.run(&["plan", "--repo", "t/r1", "--task", "x", "--agent", "codx"]);
    let bad = bad.expect_status(2);
    assert!(
        bad.stderr.contains("unknown agent `codx`")
            && bad.stderr.contains("the one-call task (command line):3:"),
        "{}",
        bad.stderr
    );
}

/// `dispatch prs close|reopen SPEC [--only]` on the local forge: only the units named, then
/// the rest; a PR already closed is said to have nothing to close; reopen opens them again.
#[test]
fn prs_close_and_reopen_on_the_local_forge() {
    if !available() {
        return;
    }
    let t = Test::new("prs-close")
        .scripted_repos(&[("r1", "change"), ("r2", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: fix, task: t, repos: [r1, r2], qa: [] }
            "#,
        );
    t.run(RUN).expect_status(0);
    let status = |t: &Test| -> BTreeMap<String, String> {
        t.run(&["prs", "--json"])
            .expect_status(0)
            .json()
            .as_array()
            .expect("PRs")
            .iter()
            .map(|p| {
                (
                    p["repo"].as_str().unwrap_or_default().to_owned(),
                    p["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let closed = t
        .run(&["prs", "close", "spec.yaml", "--only", "fix/r1"])
        .expect_status(0)
        .stdout;
    assert!(closed.contains("closed    local:t/r1#"), "{closed}");
    assert_eq!(status(&t)["r1"], "closed");
    assert_eq!(status(&t)["r2"], "open");
    let rest = t
        .run(&["prs", "close", "spec.yaml"])
        .expect_status(0)
        .stdout;
    assert!(
        rest.contains("fix/t/r1: no open PR of branch agent/fix") && rest.contains("local:t/r2#"),
        "{rest}"
    );
    let reopened = t
        .run(&["prs", "reopen", "spec.yaml", "--json"])
        .expect_status(0)
        .json();
    assert_eq!(reopened.as_array().map(Vec::len), Some(2), "{reopened}");
    assert!(status(&t).values().all(|s| s == "open"), "{:?}", status(&t));
}

/// The scripted agent of a re-run that finds nothing to change.
const IDLE_AGENT: &str = "#!/bin/sh\necho 'nothing to change here'\n";

/// `pr.on_no_changes` on the local forge: a re-run whose agent changes nothing closes the PR
/// the first run opened, with a comment naming the run, and deletes its branch from the bare
/// repository (`close`, the default); with `keep` the PR and the branch stay. A third run
/// finds nothing left to close.
#[test]
fn a_re_run_that_changes_nothing_closes_the_pr_it_opened_and_deletes_its_branch() {
    if !available() {
        return;
    }
    let t = Test::new("on-no-changes")
        .scripted_repos(&[("r1", "change")])
        .scripted_spec(
            r#"
            jobs:
              - { id: fix, task: t, repos: [r1], qa: [] }
              - { id: keep, task: t, repos: [r1], qa: [], pr: { on_no_changes: keep } }
            "#,
        );
    let first = t.run(RUN).expect_status(0).json();
    let want_changed = want(&[("fix/t/r1", "changed"), ("keep/t/r1", "changed")]);
    assert_eq!(outcomes(&first), want_changed, "{first}");
    let first_run = first["run"].as_str().expect("a run id").to_owned();
    let branches = |t: &Test| {
        t.git(
            ".dispatch/forge/t/r1.git",
            &["branch", "--format=%(refname:short)"],
        )
    };
    assert_eq!(branches(&t), "agent/fix\nagent/keep\nmain");
    let prs = |t: &Test| -> BTreeMap<String, (i64, String)> {
        t.run(&["prs", "--json"])
            .expect_status(0)
            .json()
            .as_array()
            .expect("PRs")
            .iter()
            .map(|p| {
                (
                    p["branch"].as_str().unwrap_or_default().to_owned(),
                    (
                        p["number"].as_i64().unwrap_or_default(),
                        p["status"].as_str().unwrap_or_default().to_owned(),
                    ),
                )
            })
            .collect()
    };
    let fix_pr = prs(&t)["agent/fix"].0;

    std::fs::write(t.path("agent.sh"), IDLE_AGENT).expect("the idle agent");
    let second = t
        .run(&["run", "spec.yaml", "--no-cache", "--output", "json"])
        .expect_status(0)
        .json();
    let second_run = second["run"].as_str().expect("a run id").to_owned();
    let want_none = want(&[("fix/t/r1", "no_changes"), ("keep/t/r1", "no_changes")]);
    assert_eq!(outcomes(&second), want_none, "{second}");
    assert_eq!(
        unit(&second, "fix/t/r1")["reason"],
        format!(
            "the agent changed nothing; closed PR local:t/r1#{fix_pr} of run {first_run} and deleted its branch agent/fix"
        ),
        "{second}"
    );
    assert_eq!(
        unit(&second, "keep/t/r1")["reason"],
        "the agent changed nothing",
        "{second}"
    );
    assert_eq!(prs(&t)["agent/fix"].1, "closed");
    assert_eq!(prs(&t)["agent/keep"].1, "open");
    assert_eq!(
        branches(&t),
        "agent/keep\nmain",
        "only the closed PR's branch is gone"
    );
    let shown = t
        .run(&["prs", "--show", &fix_pr.to_string()])
        .expect_status(0)
        .stdout;
    assert!(
        shown.contains(&format!(
            "dispatch closed this pull request: on run {second_run} the agent found nothing to change"
        )),
        "{shown}"
    );

    // Nothing is left to close: publish does not run again, and nothing fails.
    let third = t
        .run(&["run", "spec.yaml", "--no-cache", "--output", "json"])
        .expect_status(0)
        .json();
    assert_eq!(outcomes(&third), want_none, "{third}");
    assert_eq!(
        unit(&third, "fix/t/r1")["reason"],
        "the agent changed nothing",
        "{third}"
    );
    let status = t
        .run(&["status", third["run"].as_str().expect("a run id"), "--json"])
        .expect_status(0)
        .json();
    let publish = status["units"]
        .as_array()
        .and_then(|units| units.iter().find(|u| u["id"] == "fix/t/r1"))
        .and_then(|u| u["nodes"].as_array())
        .and_then(|nodes| nodes.iter().find(|n| n["kind"] == "publish"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(publish["status"], "skipped", "{status}");
}
