//! `dispatch validate` and `dispatch schema`: what a user reads when a spec is right or wrong.

use crate::support::{dispatch, Output, Test};

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
    (
        "review-issues-local.yaml",
        "files its review's findings as issues, but the local forge has no issues",
    ),
    ("bad-label-colour.yaml", "colour `teal` is not `#rrggbb`"),
    (
        "agent-gets-forge-token.yaml",
        "agent `helper` would get the forge's token `FORGEJO_TOKEN`",
    ),
    (
        "agent-gets-engine.yaml",
        "would hand the agent the container engine",
    ),
    (
        "kubernetes-local-forge.yaml",
        "the cluster cannot reach the local forge",
    ),
    ("kubernetes-ssh-git.yaml", "not an HTTP(S) URL"),
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

/// Asserts that `text` holds every one of `expected`, showing `text` when one is missing.
#[track_caller]
fn expect_all(text: &str, expected: &[&str]) {
    for expected in expected {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
}

#[test]
fn all_errors_of_a_file_are_reported_in_one_run() {
    let out = dispatch(&["validate", "tests/specs/invalid/unsafe-names.yaml"]).expect_status(2);
    expect_all(
        &out.stderr,
        &[
            "job id `a b` contains whitespace",
            "org `-rf` starts with `-`",
            "org `..` contains `..`",
            "branch `/abs` is an absolute path",
            "tag `a/b` contains `/`",
            "target `/etc/passwd` is an absolute path",
        ],
    );
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

/// `dispatch ARGS` in the fixture as CI would run it on a hostile spec, under a budget: killed
/// after [`HOSTILE_WITHIN`], at most 4 GiB of address space, at most 16 MiB written to each of
/// stdout and stderr (files in the fixture). Today's failures (an alias bomb taking gigabytes,
/// an endless recursion, 1.17 GB of diagnostics, a FIFO read for good) fail here instead of
/// taking the machine.
fn hostile(t: &Test, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let (out, err) = (t.path("hostile.stdout"), t.path("hostile.stderr"));
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["--color", "never"])
        .args(args)
        .current_dir(t.path(""))
        .env("DISPATCH_TEST_SECRET", "hunter2-in-the-environment")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    // SAFETY: setrlimit is async-signal-safe and reads only the struct it is given.
    unsafe {
        command.pre_exec(|| {
            for (resource, value) in [
                (libc::RLIMIT_AS, 4u64 << 30),
                (libc::RLIMIT_FSIZE, 16 << 20),
                (libc::RLIMIT_CORE, 0),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                libc::setrlimit(resource, &limit);
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("dispatch starts");
    let pid = child.id() as i32;
    let (sender, waited) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait()));
    let status = match waited.recv_timeout(HOSTILE_WITHIN) {
        Ok(status) => status.expect("dispatch is reaped"),
        Err(_) => {
            // SAFETY: kill of our own child by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("dispatch {args:?} did not finish within {HOSTILE_WITHIN:?}");
        }
    };
    let read = |path: &std::path::Path| {
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    };
    let output = Output {
        status: status.code().unwrap_or(-1),
        stdout: read(&out),
        stderr: read(&err),
    };
    assert!(
        !output.stderr.contains("hunter2") && !output.stdout.contains("hunter2"),
        "a secret from outside the spec's tree was printed:\n{}",
        output.stderr
    );
    output
}

/// How long a hostile spec may keep `dispatch validate` busy in these tests (the Nickel budget
/// is 10 s; debug builds on a shared machine are slow).
const HOSTILE_WITHIN: std::time::Duration = std::time::Duration::from_secs(90);

#[test]
fn a_yaml_alias_bomb_is_an_error_at_its_alias() {
    // 9 levels of 10 aliases each: 10^9 strings once expanded, from 600 bytes.
    let mut yaml = String::from("version: 1\nname: bomb\na0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
    for level in 1..9 {
        let prev = format!("*a{}", level - 1);
        let items = [prev.as_str(); 10].join(",");
        yaml.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    assert!(yaml.len() < 600, "{}", yaml.len());
    let t = Test::new("alias-bomb").file("spec.yaml", &yaml);
    let out = hostile(&t, &["validate", "spec.yaml"]).expect_status(2);
    expect_all(
        &out.stderr,
        &["this alias expands past a limit: the spec holds more than 1000000 values"],
    );
    // The level whose aliases pass a million values: `a5`, 10 copies of 111,111 values.
    expect_all(&out.stderr, &["[spec.yaml:8:"]);
}

/// Found in review: a Nickel spec can compute a value nested 100,000 deep (YAML's parser stops
/// at its own recursion limit, Nickel's evaluation does not), and evaluating or converting it
/// overflowed the stack of dispatch itself. Now the evaluator stops (its own process), and a
/// document deeper than 64 levels is a located error in both formats.
#[test]
fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
    let yaml = format!(
        "version: 1\nname: deep\na: {}{}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    let t = Test::new("deep")
        .file("spec.yaml", &yaml)
        .file(
            "spec.ncl",
            "let rec f = fun n => if n == 0 then [] else [f (n - 1)] in\n{ version = 1, name = \"deep\", deep = f 100 }\n",
        )
        .file(
            "deeper.ncl",
            "let rec f = fun n => if n == 0 then [] else [f (n - 1)] in\n{ version = 1, name = \"deep\", deep = f 100000 }\n",
        );
    let out = hostile(&t, &["validate", "spec.yaml", "spec.ncl", "deeper.ncl"]).expect_status(2);
    let message = "the spec nests lists and mappings more than 64 levels deep";
    assert_eq!(out.stderr.matches(message).count(), 2, "{}", out.stderr);
    expect_all(&out.stderr, &["[spec.yaml:3:"]);
    expect_all(&out.stderr, &["[spec.ncl:1:45]"]);
    expect_all(
        &out.stderr,
        &["× the Nickel evaluation recursed too deeply"],
    );
    expect_all(&out.stderr, &["[deeper.ncl:1:1]"]);
}

/// A spec of 10,000 repositories on one line, none with an organisation. Today's output was
/// 1.17 GB (every problem printed the whole 59 KB line, 10,000 times); now it is one grouped
/// problem of a few hundred bytes.
#[test]
fn one_mistake_over_ten_thousand_targets_is_one_grouped_problem() {
    let repos: Vec<String> = (0..10_000).map(|i| format!("r{i}")).collect();
    let spec = format!(
        "version: 1\nname: big\njobs:\n  - id: a\n    task: t\n    repos: [{}]\n",
        repos.join(",")
    );
    let t = Test::new("grouped").file("spec.yaml", &spec);
    let out = hostile(&t, &["validate", "spec.yaml"]).expect_status(2);
    assert!(
        out.stderr.len() < 2048,
        "{} bytes:\n{}",
        out.stderr.len(),
        out.stderr
    );
    expect_all(
        &out.stderr,
        &[
            "× target `r0` has no organisation (10000 times)",
            "[spec.yaml:6:13]",
            "the same at spec.yaml:6:16, spec.yaml:6:19, spec.yaml:6:22 and 9996 more places",
            "spec.yaml: 10000 errors",
        ],
    );
    assert!(out.stdout.contains("(10000 errors)"), "{}", out.stdout);
}

#[test]
fn a_snippet_of_a_long_line_is_clipped_around_the_column() {
    let mut repos: Vec<String> = (0..5_000).map(|i| format!("t/r{i}")).collect();
    repos.push("lonely".to_owned());
    let line = format!("    repos: [{}]", repos.join(","));
    let column = line.find("lonely").unwrap() + 1;
    let spec = format!("version: 1\nname: long\njobs:\n  - id: a\n    task: t\n{line}\n");
    let t = Test::new("long-line").file("spec.yaml", &spec);
    let out = hostile(&t, &["validate", "spec.yaml"]).expect_status(2);
    assert!(
        out.stderr.contains(&format!("[spec.yaml:6:{column}]")),
        "the header keeps the real column {column}:\n{}",
        out.stderr
    );
    expect_all(&out.stderr, &[" 6 │ …"]);
    expect_all(&out.stderr, &["t/r4999,lonely]"]);
    let widest = out.stderr.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(
        widest < 140,
        "a line of {widest} characters:\n{}",
        out.stderr
    );
}

#[test]
fn an_endless_nickel_recursion_is_a_located_error_within_the_time_budget() {
    let t = Test::new("nickel-recursion")
        .file("spec.ncl", "let rec f = fun x => f x in\nf 1\n")
        .file(
            "grows.ncl",
            "let rec f = fun s n => if n == 0 then s else f (s ++ s) (n - 1) in\n{ version = 1, name = f \"x\" 40 }\n",
        );
    let out = hostile(&t, &["validate", "spec.ncl", "grows.ncl"]).expect_status(2);
    expect_all(
        &out.stderr,
        &[
            "× the Nickel evaluation did not finish within 10 s",
            "[spec.ncl:1:1]",
            "× the Nickel evaluation needed more than 2048 MiB of memory",
            "[grows.ncl:1:1]",
            "look for a recursion without a base case",
        ],
    );
}

#[test]
fn nickel_imports_stay_inside_the_spec_directory() {
    let t = Test::new("nickel-imports")
        .file("outside.ncl", "{ name = \"hunter2-outside\" }\n")
        .file("secret.txt", "hunter2-outside-text\n")
        .file("spec/lib/job.ncl", "let base = import \"../base.ncl\" in base & { task = \"t\" }\n")
        .file("spec/base.ncl", "{ id = \"a\", repos = [\"core/go-io\"] }\n")
        .file(
            "spec/ok.ncl",
            "let Spec = import \"dispatch.ncl\" in\n{ version = 1, name = \"ok\", jobs = [import \"lib/job.ncl\"] } | Spec\n",
        )
        .file("spec/proc.ncl", "{ version = 1, name = import \"/proc/self/environ\" as 'Text }\n")
        .file("spec/up.ncl", "let o = import \"../outside.ncl\" in\n{ version = 1, name = o.name }\n")
        .file("spec/text.ncl", "{ version = 1, name = import \"sub/../../secret.txt\" as 'Text }\n")
        .file("spec/link.ncl", "let o = import \"lib/link.ncl\" in\n{ version = 1, name = o.name }\n");
    std::os::unix::fs::symlink(t.path("outside.ncl"), t.path("spec/lib/link.ncl")).unwrap();
    std::fs::create_dir_all(t.path("spec/sub")).unwrap();
    let ok = hostile(&t, &["validate", "spec/ok.ncl"]).expect_status(0);
    assert!(
        ok.stdout.starts_with("ok       spec/ok.ncl"),
        "{}",
        ok.stdout
    );
    for (file, written, line_col) in [
        ("proc", "`/proc/self/environ` is an absolute path", "1:23"),
        (
            "up",
            "`../outside.ncl` is outside the spec's directory",
            "1:9",
        ),
        (
            "text",
            "`sub/../../secret.txt` is outside the spec's directory",
            "1:23",
        ),
        (
            "link",
            "`lib/link.ncl` is outside the spec's directory",
            "1:9",
        ),
    ] {
        let path = format!("spec/{file}.ncl");
        let out = hostile(&t, &["validate", &path]).expect_status(2);
        assert!(out.stderr.contains(written), "{path}:\n{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("[{path}:{line_col}]")),
            "{path}: located at the import:\n{}",
            out.stderr
        );
    }
}

#[test]
fn template_directories_stay_inside_and_survive_symlink_loops() {
    let spec = "version: 1\nname: t\ndefaults: { org: core }\njobs:\n  - { id: a, task: t, repos: [x], template: own }\n";
    let t = Test::new("template-links")
        .file("spec/spec.yaml", spec)
        .file("spec/templates/own.md", "Do {{ task }}\n")
        .file("other/evil.md", "hunter2 {{ task }}\n")
        .file(
            "spec/escape.yaml",
            &spec.replace("name: t", "name: t\ntemplates: ../other"),
        );
    // Loops and links that stay inside: each directory is read once.
    for (link, target) in [("loop", "."), ("up", ".."), ("twice", "../templates")] {
        std::os::unix::fs::symlink(target, t.path(&format!("spec/templates/{link}"))).unwrap();
    }
    let ok = hostile(&t, &["validate", "spec/spec.yaml"]).expect_status(0);
    assert!(ok.stdout.starts_with("ok"), "{}", ok.stdout);
    // By its absolute path (as `resume` loads the spec its run recorded), the same.
    let absolute = t.path("spec/spec.yaml").display().to_string();
    let ok = hostile(&t, &["validate", &absolute]).expect_status(0);
    assert!(ok.stdout.starts_with("ok"), "{}", ok.stdout);

    let escaped = hostile(&t, &["validate", "spec/escape.yaml"]).expect_status(2);
    expect_all(
        &escaped.stderr,
        &["`../other` is outside the spec's directory"],
    );
    expect_all(&escaped.stderr, &["[spec/escape.yaml:3:12]"]);

    std::os::unix::fs::symlink(t.path("other"), t.path("spec/templates/out")).unwrap();
    let linked = hostile(&t, &["validate", "spec/spec.yaml"]).expect_status(2);
    expect_all(
        &linked.stderr,
        &["`spec/templates/out` is outside the spec's directory"],
    );
    let linked = hostile(&t, &["validate", &absolute]).expect_status(2);
    expect_all(
        &linked.stderr,
        &["template `out`", "is outside the spec's directory"],
    );
}

#[test]
fn a_spec_that_is_a_fifo_or_too_large_is_refused_at_once() {
    let t = Test::new("spec-files").file(
        "big.yaml",
        &format!("version: 1\n#{}\n", "x".repeat(5 << 20)),
    );
    let name = std::ffi::CString::new(t.path("fifo.yaml").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that lives for the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
    let out = hostile(&t, &["validate", "fifo.yaml", "big.yaml"]).expect_status(2);
    expect_all(
        &out.stderr,
        &["cannot read spec fifo.yaml: fifo.yaml is a FIFO, not a regular file"],
    );
    expect_all(
        &out.stderr,
        &["cannot read spec big.yaml: the file is larger than 4 MiB"],
    );
}
