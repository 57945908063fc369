//! `dispatch plan`, `dispatch render` and `dispatch run --dry-run`: what would run, and the
//! exact prompts, without running anything.

use serde_json::{json, Value};

use crate::support::{dispatch, Test};

fn plan_json(args: &[&str]) -> Value {
    dispatch(&[&["plan"], args, &["--format", "json"]].concat())
        .expect_status(0)
        .json()
}

#[test]
fn yaml_and_nickel_versions_plan_byte_identically() {
    let yaml = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "json"]).expect_status(0);
    let nickel =
        dispatch(&["plan", "pipelines/fix-tests.ncl", "--format", "json"]).expect_status(0);
    assert_eq!(yaml.stdout, nickel.stdout);
    let again = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "json"]);
    assert_eq!(
        yaml.stdout, again.stdout,
        "the JSON plan is stable across runs"
    );
}

#[test]
fn plan_json_describes_units_nodes_and_the_fix_loop() {
    let plan = plan_json(&["pipelines/fix-tests.yaml"]);
    assert_eq!(plan["counts"]["units"], 3);
    assert_eq!(plan["counts"]["nodes"], 15);
    let unit = &plan["units"][2];
    assert_eq!(unit["id"], "fix-tests/core/go-process/task-15");
    assert_eq!(unit["workspace"], "workspaces/core/go-process/task-15");
    assert_eq!(unit["issue"], 15);
    let ids: Vec<&str> = unit["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "fix-tests/core/go-process/task-15:prep",
            "fix-tests/core/go-process/task-15:agent",
            "fix-tests/core/go-process/task-15:qa",
            "fix-tests/core/go-process/task-15:publish",
            "fix-tests/core/go-process/task-15:review"
        ]
    );
    assert_eq!(
        unit["nodes"][1]["max_runs"], 2,
        "fix_attempts: 1 allows two agent runs"
    );
    assert_eq!(
        unit["nodes"][2]["needs"][0],
        "fix-tests/core/go-process/task-15:agent"
    );
    assert_eq!(plan["units"][0]["id"], "fix-tests/core/go-io");
}

#[test]
fn plan_text_is_a_tree_with_a_count_line() {
    let out = dispatch(&["plan", "pipelines/fix-tests.yaml"]).expect_status(0);
    for expected in [
        "job fix-tests (3 units, agent codex)",
        "core/go-process issue #15",
        "up to 2 runs",
    ] {
        assert!(out.stdout.contains(expected), "{expected}:\n{}", out.stdout);
    }
    assert!(
        out.stdout
            .trim_end()
            .ends_with("3 units, 15 nodes in 1 job"),
        "{}",
        out.stdout
    );
    let fanout = plan_json(&["pipelines/batch-fanout.yaml"]);
    assert!(
        fanout["units"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["kind"] != "qa"),
        "qa: [] plans no QA node: {}",
        fanout["units"][0]
    );
}

#[test]
fn plan_dot_and_mermaid_carry_the_edges() {
    let dot = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "dot"]);
    assert!(
        dot.stdout.starts_with("digraph \"fix-tests\" {"),
        "{}",
        dot.stdout
    );
    assert!(
        dot.stdout
            .contains("\"fix-tests/core/go-io:agent\" -> \"fix-tests/core/go-io:qa\";"),
        "{}",
        dot.stdout
    );
    assert_eq!(dot.stdout.matches(" -> ").count(), 12);
    let mermaid = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "mermaid"]);
    assert!(
        mermaid.stdout.starts_with("flowchart LR\n"),
        "{}",
        mermaid.stdout
    );
    assert_eq!(mermaid.stdout.matches(" --> ").count(), 12);
}

#[test]
fn needs_links_same_repository_units_or_whole_jobs() {
    let t = Test::new("needs").spec(
        r#"
        version: 1
        name: chain
        defaults: { org: core }
        jobs:
          - { id: first, task: a, repos: [go-io, go-log], qa: [] }
          - { id: second, task: b, repos: [go-io, other], qa: [], needs: [first] }
        "#,
    );
    let plan = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    let needs = |unit: usize| plan["units"][unit]["nodes"][0]["needs"].clone();
    assert_eq!(
        needs(2),
        json!(["first/core/go-io:publish"]),
        "same repository: that unit only"
    );
    assert_eq!(
        needs(3),
        json!(["first/core/go-io:publish", "first/core/go-log:publish"]),
        "other repository: the whole job"
    );
    assert_eq!(needs(0), json!([]));
}

#[test]
fn plan_shows_qa_steps_detected_from_marker_files() {
    let t = Test::new("detect")
        .file("svc/go.mod", "module example.org/svc\n")
        .spec(
            r#"
            version: 1
            name: d
            defaults: { org: o }
            jobs:
              - id: j
                task: t
                repos: [{ repo: svc, url: svc }, { repo: gone, url: gone }]
            "#,
        );
    t.git("svc", &["init", "--quiet"]);
    t.git("svc", &["add", "."]);
    t.git("svc", &["commit", "--quiet", "-m", "init"]);
    let out = t.run(&["plan", "spec.yaml"]).expect_status(0);
    assert!(
        out.stdout
            .contains("detected: `go build ./...`, `go vet ./...`, `go test ./...`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("detected from marker files at run time"),
        "a repository that cannot be read says when QA is detected: {}",
        out.stdout
    );
    let plan = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    let qa: Vec<&Value> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["qa"])
        .collect();
    assert_eq!(
        qa,
        [&json!("auto"), &json!("auto")],
        "the JSON plan stays independent of the machine"
    );
}

#[test]
fn select_lists_the_local_forge_repositories_and_offline_leaves_it_unresolved() {
    let t = ["go-io", "go-log", "go-legacy", "php-x"]
        .iter()
        .fold(Test::new("select-local"), |t, repo| {
            t.repo(repo, &[("README.md", "# r\n")])
        })
        .spec(
            r#"
            version: 1
            name: s
            forge: { kind: local, seed: repos }
            defaults: { org: t }
            jobs:
              - id: j
                task: t
                repos:
                  - go-io
                  - select: { include: ["go-*"], exclude: ["*-legacy"], variables: { tier: 2 } }
            "#,
        );
    let plan = t
        .run(&["plan", "spec.yaml", "--format", "json"])
        .expect_status(0)
        .json();
    let units: Vec<(&str, Option<&Value>)> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap(), u["variables"].get("tier")))
        .collect();
    assert_eq!(
        units,
        [("j/t/go-io", None), ("j/t/go-log", Some(&json!(2)))],
        "go-io is listed once (the explicit entry wins), go-legacy and php-x are left out"
    );
    let out = t.run(&["plan", "spec.yaml", "--offline"]).expect_status(0);
    assert!(
        out.stdout.contains(
            "not resolved: job j jobs[0].repos[1]: repositories of t matching go-* except *-legacy"
        ),
        "{}",
        out.stdout
    );
    let out = t.run(&["validate", "spec.yaml"]);
    assert!(
        out.stdout
            .contains("plus 1 `select` entry the forge resolves when planning"),
        "{}",
        out.stdout
    );
}

#[test]
fn render_prints_the_exact_prompt_of_one_unit() {
    let render = |repo: &str| {
        dispatch(&[
            "render",
            "pipelines/fix-tests.yaml",
            "--job",
            "fix-tests",
            "--repo",
            repo,
        ])
    };
    let out = render("go-io").expect_status(0);
    for expected in [
        "Fix the failing tests",
        "core/go-io",
        "agent/fix-tests",
        "go test ./... -count=1",
        "BLOCKED.md",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}` in\n{}",
            out.stdout
        );
    }
    let persona = include_str!("../templates/personas/testing/tester.md");
    let first_line = persona
        .lines()
        .find(|l| !l.trim().is_empty() && !l.contains('{'))
        .unwrap();
    assert!(
        out.stdout.contains(first_line.trim()),
        "the persona is part of the prompt"
    );

    let t = Test::new("render").file("qa.log", "--- FAIL: TestCopy (0.00s)\n");
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/fix-tests.yaml");
    let retry = t
        .run(&[
            "render",
            spec,
            "--job",
            "fix-tests",
            "--repo",
            "core/go-process",
            "--attempt",
            "2",
            "--qa-failure",
            "qa.log",
        ])
        .expect_status(0);
    assert!(
        retry.stdout.contains("--- FAIL: TestCopy"),
        "{}",
        retry.stdout
    );
    assert!(
        retry.stdout.contains("#15"),
        "the issue number reaches the prompt: {}",
        retry.stdout
    );
    assert_ne!(out.stdout, retry.stdout);

    let unknown = render("nope").expect_status(1);
    assert!(
        unknown
            .stderr
            .contains("its targets: core/go-io, core/go-log, core/go-process"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn a_specs_own_templates_override_and_extend_the_builtins() {
    let t = Test::new("templates")
        .spec(
            r#"
            version: 1
            name: own
            defaults: { org: core }
            jobs:
              - id: a
                task: Tidy up
                repos: [go-io]
                persona: house/reviewer
                variables: { n: 3 }
            "#,
        )
        .file(
            "templates/coding.md",
            "OWN {{ task }} in {{ org }}/{{ repo }} x{{ variables.n }}\n{{ persona }}",
        )
        .file(
            "templates/personas/house/reviewer.md",
            "You are our reviewer.\n",
        );
    let out = t
        .run(&["render", "spec.yaml", "--job", "a", "--repo", "go-io"])
        .expect_status(0);
    assert_eq!(
        out.stdout,
        "OWN Tidy up in core/go-io x3\nYou are our reviewer.\n"
    );
}

#[test]
fn dry_run_prints_the_plan_and_every_prompt_and_runs_nothing() {
    let out = dispatch(&[
        "run",
        "pipelines/fix-tests.yaml",
        "--dry-run",
        "--state-dir",
        "/nonexistent/dispatch-dry-run",
    ])
    .expect_status(0);
    assert!(
        out.stdout.contains("3 units, 15 nodes in 1 job"),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("===== prompt of ").count(),
        3,
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("===== prompt of fix-tests/core/go-process/task-15 ====="));
    assert!(!std::path::Path::new("/nonexistent/dispatch-dry-run").exists());
}

#[test]
fn only_filters_units_and_rejects_unknown_ones() {
    let dry_run_only = |only: &str| {
        dispatch(&[
            "run",
            "pipelines/fix-tests.yaml",
            "--dry-run",
            "--only",
            only,
        ])
    };
    let out = dry_run_only("fix-tests/go-log").expect_status(0);
    assert!(
        out.stdout.contains("1 unit, 5 nodes in 1 job"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("===== prompt of ").count(), 1);
    let bad = dry_run_only("fix-tests/nope").expect_status(1);
    assert!(
        bad.stderr.contains("--only fix-tests/nope matches no unit"),
        "{}",
        bad.stderr
    );
}

#[test]
fn render_prints_byte_for_byte_the_prompt_the_run_gives_the_agent() {
    if !crate::support::docker::available() {
        return;
    }
    let t = Test::new("render-run")
        .scripted_repos(&[("r1", "none")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: Look around, repos: [r1], qa: [] }
            "#,
        );
    let render = ["render", "spec.yaml", "--job", "j", "--repo", "r1"];
    let before = t.run(&render).expect_status(0).stdout;
    assert!(
        before.contains("Base: `main`"),
        "the base the run will use, before any run: {before}"
    );
    t.run(&["run", "spec.yaml", "--output", "json"])
        .expect_status(0);
    let given = std::fs::read_to_string(t.meta("r1", "j").join("prompt.md")).expect("the prompt");
    assert_eq!(before, given, "render before the run");
    assert_eq!(
        t.run(&render).expect_status(0).stdout,
        given,
        "render after the run"
    );
    let offline = t
        .run(&[&render[..], &["--offline"]].concat())
        .expect_status(0)
        .stdout;
    assert!(
        offline.contains("the repository's default branch"),
        "{offline}"
    );
}
