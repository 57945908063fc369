//! `dispatch validate | plan | render | schema` driven as a user would.

mod common;

use common::{dispatch, TempDir};

const EXAMPLES: &[&str] = &[
    "pipelines/fix-tests.yaml",
    "pipelines/fix-tests.ncl",
    "pipelines/security-audit.yaml",
    "pipelines/batch-fanout.yaml",
    "pipelines/demo.yaml",
    "pipelines/issue-sweep.yaml",
];

#[test]
fn every_example_pipeline_is_valid_with_one_line_per_file() {
    let out = dispatch(&[&["validate"], EXAMPLES].concat());
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), EXAMPLES.len(), "{}", out.stdout);
    for (line, file) in lines.iter().zip(EXAMPLES) {
        assert!(line.starts_with("ok") && line.contains(file), "{line}");
    }
    assert!(
        out.stdout.contains("50 units, 150 nodes"),
        "batch-fanout fans out to 50 units: {}",
        out.stdout
    );
}

/// (file, what the diagnostic must say). Every one must exit 2 and point at file:line:col.
const INVALID: &[(&str, &str)] = &[
    ("syntax.yaml", "YAML syntax error"),
    (
        "type-error.yaml",
        "`jobs[0].fix_attempts` must be a whole number, found a string",
    ),
    ("unknown-field.yaml", "did you mean `task`?"),
    ("duplicate-job.yaml", "duplicate job id `a`"),
    ("unknown-agent.yaml", "did you mean `codex`?"),
    ("bad-model.yaml", "invalid model"),
    ("cycle.yaml", "`needs` forms a cycle: a -> b -> c -> a"),
    ("unknown-need.yaml", "did you mean `fix-tests`?"),
    ("unknown-template.yaml", "unknown template `codng`"),
    ("unknown-persona.yaml", "did you mean `testing/tester`?"),
    ("bad-duration.yaml", "invalid duration `10x`"),
    (
        "zero-limit.yaml",
        "`limits.total` must be at least 1, found 0",
    ),
    ("unsafe-names.yaml", "contains `..`"),
    ("issue-and-pr.yaml", "sets both `issue` and `pr`"),
    ("qa-without-command.yaml", "missing field `run`"),
    ("two-documents.yaml", "exactly one YAML document"),
    ("no-org.yaml", "has no organisation"),
    ("wrong-version.yaml", "`version` must be at most 1"),
    ("syntax.ncl", "Nickel: unexpected token"),
    ("contract.ncl", "Nickel: contract broken"),
    ("semantic.ncl", "duplicate job id `a`"),
    (
        "select-issues-local.yaml",
        "the local forge keeps no issues",
    ),
    ("select-misspelt.yaml", "did you mean `select`?"),
    ("bad-label-colour.yaml", "colour `teal` is not `#rrggbb`"),
];

#[test]
fn invalid_specs_exit_2_with_a_located_diagnostic() {
    let mut tested = Vec::new();
    for (file, expected) in INVALID {
        let path = format!("tests/specs/invalid/{file}");
        let out = dispatch(&["validate", &path]);
        assert_eq!(
            out.status, 2,
            "{path} must be invalid:\n{}{}",
            out.stdout, out.stderr
        );
        assert!(
            out.stderr.contains(expected),
            "{path}: expected `{expected}` in:\n{}",
            out.stderr
        );
        let located = format!("[{path}:");
        let at = out
            .stderr
            .find(&located)
            .unwrap_or_else(|| panic!("{path}: no file:line:col in\n{}", out.stderr));
        let rest = &out.stderr[at + located.len()..];
        let (line, col) = rest
            .split_once(']')
            .and_then(|(lc, _)| lc.split_once(':'))
            .expect("line:col");
        assert!(
            line.parse::<usize>().unwrap() >= 1 && col.parse::<usize>().unwrap() >= 1,
            "{path}: {line}:{col}"
        );
        assert!(
            out.stdout.starts_with(&format!("invalid  {path}")),
            "{}",
            out.stdout
        );
        tested.push(*file);
    }
    // Every invalid spec in the directory is in the table above.
    let mut on_disk: Vec<String> = std::fs::read_dir(common::root().join("tests/specs/invalid"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = tested.iter().map(|s| s.to_string()).collect();
    tested.sort();
    assert_eq!(on_disk, tested);
}

#[test]
fn all_errors_of_a_file_are_reported_in_one_run() {
    let out = dispatch(&["validate", "tests/specs/invalid/unsafe-names.yaml"]);
    assert_eq!(out.status, 2);
    for expected in [
        "job id `a b` contains whitespace",
        "org `-rf` starts with `-`",
        "org `..` contains `..`",
        "branch `/abs` is an absolute path",
        "tag `a/b` contains `/`",
        "target `/etc/passwd` is an absolute path",
    ] {
        assert!(
            out.stderr.contains(expected),
            "missing `{expected}` in\n{}",
            out.stderr
        );
    }
    assert!(out.stdout.contains("(6 errors)"), "{}", out.stdout);
}

#[test]
fn validate_checks_every_file_and_fails_when_one_is_invalid() {
    let out = dispatch(&[
        "validate",
        "pipelines/fix-tests.yaml",
        "tests/specs/invalid/cycle.yaml",
        "pipelines/batch-fanout.yaml",
    ]);
    assert_eq!(out.status, 2);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ok") && lines[1].starts_with("invalid") && lines[2].starts_with("ok"),
        "{}",
        out.stdout
    );
    let missing = dispatch(&["validate", "pipelines/does-not-exist.yaml"]);
    assert_eq!(missing.status, 2);
    assert!(
        missing
            .stderr
            .contains("cannot read spec pipelines/does-not-exist.yaml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn yaml_and_nickel_versions_plan_byte_identically() {
    let yaml = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "json"]);
    let nickel = dispatch(&["plan", "pipelines/fix-tests.ncl", "--format", "json"]);
    assert_eq!(yaml.status, 0, "{}", yaml.stderr);
    assert_eq!(nickel.status, 0, "{}", nickel.stderr);
    assert_eq!(yaml.stdout, nickel.stdout);
    let again = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "json"]);
    assert_eq!(
        yaml.stdout, again.stdout,
        "the JSON plan is stable across runs"
    );
}

#[test]
fn plan_json_describes_units_nodes_and_the_fix_loop() {
    let out = dispatch(&["plan", "pipelines/fix-tests.yaml", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
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
    let out = dispatch(&["plan", "pipelines/fix-tests.yaml"]);
    assert_eq!(out.status, 0);
    assert!(
        out.stdout.contains("job fix-tests (3 units, agent codex)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("core/go-process issue #15"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("up to 2 runs"), "{}", out.stdout);
    assert!(
        out.stdout
            .trim_end()
            .ends_with("3 units, 15 nodes in 1 job"),
        "{}",
        out.stdout
    );
    let auto = dispatch(&["plan", "pipelines/batch-fanout.yaml"]);
    assert!(!auto.stdout.contains("├─ qa"), "qa: [] plans no QA node");
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
    let dir = TempDir::new("needs");
    let spec = dir.write(
        "spec.yaml",
        "version: 1\nname: chain\ndefaults: { org: core }\njobs:\n  - { id: first, task: a, repos: [go-io, go-log], qa: [] }\n  - { id: second, task: b, repos: [go-io, other], qa: [], needs: [first] }\n",
    );
    let out = dispatch(&["plan", spec.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let needs = |unit: usize| plan["units"][unit]["nodes"][0]["needs"].clone();
    assert_eq!(
        needs(2),
        serde_json::json!(["first/core/go-io:publish"]),
        "same repository: that unit only"
    );
    assert_eq!(
        needs(3),
        serde_json::json!(["first/core/go-io:publish", "first/core/go-log:publish"]),
        "other repository: the whole job"
    );
    assert_eq!(needs(0), serde_json::json!([]));
}

#[test]
fn shipped_schemas_match_the_model() {
    let json = dispatch(&["schema"]);
    let shipped =
        std::fs::read_to_string(common::root().join("schemas/dispatch.schema.json")).unwrap();
    assert!(json.stdout == shipped, "schemas/dispatch.schema.json drifted: run `dispatch schema > schemas/dispatch.schema.json`");
    let nickel = dispatch(&["schema", "--nickel"]);
    let shipped = std::fs::read_to_string(common::root().join("schemas/dispatch.ncl")).unwrap();
    assert!(
        nickel.stdout == shipped,
        "schemas/dispatch.ncl drifted: run `dispatch schema --nickel > schemas/dispatch.ncl`"
    );
    let schema: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level fields are rejected by editors too"
    );
}

#[test]
fn render_prints_the_exact_prompt_of_one_unit() {
    let out = dispatch(&[
        "render",
        "pipelines/fix-tests.yaml",
        "--job",
        "fix-tests",
        "--repo",
        "go-io",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
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
    let persona =
        std::fs::read_to_string(common::root().join("templates/personas/testing/tester.md"))
            .unwrap();
    let first_line = persona
        .lines()
        .find(|l| !l.trim().is_empty() && !l.contains("{"))
        .unwrap();
    assert!(
        out.stdout.contains(first_line.trim()),
        "the persona is part of the prompt"
    );

    let dir = TempDir::new("render");
    let failure = dir.write("qa.log", "--- FAIL: TestCopy (0.00s)\n");
    let retry = dispatch(&[
        "render",
        "pipelines/fix-tests.yaml",
        "--job",
        "fix-tests",
        "--repo",
        "core/go-process",
        "--attempt",
        "2",
        "--qa-failure",
        failure.to_str().unwrap(),
    ]);
    assert_eq!(retry.status, 0, "{}", retry.stderr);
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

    let unknown = dispatch(&[
        "render",
        "pipelines/fix-tests.yaml",
        "--job",
        "fix-tests",
        "--repo",
        "nope",
    ]);
    assert_eq!(unknown.status, 1);
    assert!(
        unknown
            .stderr
            .contains("its targets: core/go-io, core/go-log, core/go-process"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn a_missing_template_variable_names_template_line_and_variable() {
    let out = dispatch(&["validate", "tests/specs/missing-variable/spec.yaml"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("template `broken`"), "{}", out.stderr);
    let unwrapped = out.stderr.replace("\n  │ ", " ");
    assert!(
        unwrapped.contains("line 2: undefined variable `variables.focus`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("[tests/specs/missing-variable/templates/broken.md:2:1]"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_specs_own_templates_override_and_extend_the_builtins() {
    let dir = TempDir::new("templates");
    let spec = dir.write(
        "spec.yaml",
        "version: 1\nname: own\ndefaults: { org: core }\njobs:\n  - { id: a, task: Tidy up, repos: [go-io], persona: house/reviewer, variables: { n: 3 } }\n",
    );
    dir.write(
        "templates/coding.md",
        "OWN {{ task }} in {{ org }}/{{ repo }} x{{ variables.n }}\n{{ persona }}",
    );
    dir.write(
        "templates/personas/house/reviewer.md",
        "You are our reviewer.\n",
    );
    let out = dispatch(&[
        "render",
        spec.to_str().unwrap(),
        "--job",
        "a",
        "--repo",
        "go-io",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "OWN Tidy up in core/go-io x3\nYou are our reviewer.\n"
    );
}

#[test]
fn help_of_every_command_has_an_example() {
    for command in ["validate", "plan", "render", "schema"] {
        let out = dispatch(&[command, "--help"]);
        assert_eq!(out.status, 0);
        assert!(
            out.stdout.contains("Example"),
            "`dispatch {command} --help` has no example:\n{}",
            out.stdout
        );
    }
}

#[test]
fn select_lists_the_local_forge_repositories_and_offline_leaves_it_unresolved() {
    let dir = TempDir::new("select-local");
    for repo in ["go-io", "go-log", "go-legacy", "php-x"] {
        dir.write(&format!("seed/core/{repo}/README.md"), "# r\n");
    }
    let spec = dir.write(
        "spec.yaml",
        "version: 1\nname: s\nforge: { kind: local, seed: seed }\ndefaults: { org: core }\njobs:\n  - id: j\n    task: t\n    repos:\n      - go-io\n      - select: { include: [\"go-*\"], exclude: [\"*-legacy\"], variables: { tier: 2 } }\n",
    );
    let spec = spec.to_str().unwrap();
    let out = dispatch(&["plan", spec, "--format", "json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let units: Vec<(&str, Option<&serde_json::Value>)> = plan["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap(), u["variables"].get("tier")))
        .collect();
    assert_eq!(
        units,
        [
            ("j/core/go-io", None),
            ("j/core/go-log", Some(&serde_json::json!(2)))
        ],
        "go-io is listed once (the explicit entry wins), go-legacy and php-x are left out"
    );
    let out = dispatch(&["plan", spec, "--offline"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("not resolved: job j jobs[0].repos[1]: repositories of core matching go-* except *-legacy"),
        "{}",
        out.stdout
    );
    let out = dispatch(&["validate", spec]);
    assert!(
        out.stdout
            .contains("plus 1 `select` entry the forge resolves when planning"),
        "{}",
        out.stdout
    );
}
