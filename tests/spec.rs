//! `dispatch validate` and `dispatch schema`: what a user reads when a spec is right or wrong.

use crate::support::dispatch;

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
    let out = dispatch(&[&["validate"], EXAMPLES].concat()).expect_status(0);
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
        let out = dispatch(&["validate", &path]).expect_status(2);
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
        tested.push(file.to_string());
    }
    // Every invalid spec in the directory is in the table above.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/specs/invalid");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    tested.sort();
    assert_eq!(on_disk, tested);
}

#[test]
fn all_errors_of_a_file_are_reported_in_one_run() {
    let out = dispatch(&["validate", "tests/specs/invalid/unsafe-names.yaml"]).expect_status(2);
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
    ])
    .expect_status(2);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ok") && lines[1].starts_with("invalid") && lines[2].starts_with("ok"),
        "{}",
        out.stdout
    );
    let missing = dispatch(&["validate", "pipelines/does-not-exist.yaml"]).expect_status(2);
    assert!(
        missing
            .stderr
            .contains("cannot read spec pipelines/does-not-exist.yaml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_missing_template_variable_names_template_line_and_variable() {
    let out = dispatch(&["validate", "tests/specs/missing-variable/spec.yaml"]).expect_status(2);
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
fn shipped_schemas_match_the_model() {
    let json = dispatch(&["schema"]).expect_status(0);
    let shipped = include_str!("../schemas/dispatch.schema.json");
    assert!(
        json.stdout == shipped,
        "schemas/dispatch.schema.json drifted: run `dispatch schema > schemas/dispatch.schema.json`"
    );
    let nickel = dispatch(&["schema", "--nickel"]).expect_status(0);
    assert!(
        nickel.stdout == include_str!("../schemas/dispatch.ncl"),
        "schemas/dispatch.ncl drifted: run `dispatch schema --nickel > schemas/dispatch.ncl`"
    );
    assert_eq!(
        json.json()["additionalProperties"],
        false,
        "unknown top-level fields are rejected by editors too"
    );
}

#[test]
fn help_of_every_command_has_an_example() {
    for command in ["validate", "plan", "render", "schema", "agents"] {
        let out = dispatch(&[command, "--help"]).expect_status(0);
        assert!(
            out.stdout.contains("Example") && out.stdout.contains(&format!("  dispatch {command}")),
            "`dispatch {command} --help` has no example:\n{}",
            out.stdout
        );
    }
}
