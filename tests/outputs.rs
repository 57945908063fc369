//! What CI systems and shells get: `--output junit` and `--output markdown` of `run` and
//! `status` (a JUnit report read as XML, a Markdown table), `dispatch completions`,
//! `dispatch man`, and `dispatch init`, whose starter validates and plans as it is.

use crate::support::docker::available;
use crate::support::xml::{self, Element};
use crate::support::Test;

/// Every command a user can type, as the completions and the manual must know them.
const COMMANDS: &[&str] = &[
    "init",
    "validate",
    "plan",
    "render",
    "schema",
    "agents",
    "run",
    "resume",
    "retry",
    "answer",
    "doctor",
    "prs",
    "runs",
    "status",
    "logs",
    "cancel",
    "completions",
    "man",
];

/// The test case of unit `id` in `suite`.
#[track_caller]
fn case<'a>(suite: &'a Element, id: &str) -> &'a Element {
    suite
        .all("testcase")
        .find(|c| c.attr("name") == id)
        .unwrap_or_else(|| panic!("no testcase {id} in {suite:?}"))
}

#[test]
fn junit_and_markdown_of_a_run_with_mixed_outcomes() {
    if !available() {
        return;
    }
    let t = Test::new("junit")
        .scripted_repos(&[
            ("c1", "change"),
            ("n1", "none"),
            ("b1", "block"),
            ("f1", "fail"),
            ("q1", "qa-fails"),
            ("m1", "change"),
        ])
        .scripted_spec(
            r#"
            jobs:
              - id: mixed
                task: Do the thing
                repos: [c1, n1, b1, f1, q1]
                qa: [{ run: sh test.sh }]
              - id: missing
                task: Do the thing
                image: dispatch-no-such-image:1
                repos: [m1]
            "#,
        );
    // The exit status is the run's, whatever the format.
    let run = t
        .run(&["run", "spec.yaml", "--output", "junit"])
        .expect_status(1);
    let doc = xml::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", run.stdout));
    assert_eq!(doc.name, "testsuites");
    let suites: Vec<&Element> = doc.all("testsuite").collect();
    assert_eq!(suites.len(), 1, "one suite per run");
    let suite = suites[0];
    assert_eq!(suite.attr("name"), "t", "the suite is named after the spec");
    let counts =
        |e: &Element| ["tests", "failures", "errors", "skipped"].map(|a| e.attr(a).to_owned());
    assert_eq!(counts(suite), ["6", "3", "1", "0"], "{}", run.stdout);
    assert_eq!(counts(&doc), counts(suite));
    assert_eq!(suite.all("testcase").count(), 6);
    let failed = suite
        .all("testcase")
        .filter(|c| c.child("failure").is_some())
        .count();
    assert_eq!(failed, 3, "the count is the test cases'");

    let changed = case(suite, "mixed/t/c1");
    assert_eq!(changed.attr("classname"), "mixed", "classname is the job");
    assert!(changed.child("failure").is_none() && changed.child("error").is_none());
    let out = &changed.child("system-out").expect("the PR is said").text;
    assert!(out.starts_with("changed: PR local:t/c1#"), "{out}");
    assert!(
        case(suite, "mixed/t/n1").children.is_empty(),
        "no_changes passes"
    );

    let failure = case(suite, "mixed/t/f1")
        .child("failure")
        .expect("a failure");
    assert_eq!(failure.attr("type"), "agent_failed");
    assert!(
        failure.attr("message").contains("exited with code 7"),
        "{failure:?}"
    );
    assert!(!failure.attr("message").contains('\n'), "one line");
    assert!(
        failure.text.contains("boom: cannot continue"),
        "the whole reason is the text: {failure:?}"
    );
    let blocked = case(suite, "mixed/t/b1")
        .child("failure")
        .expect("blocked fails");
    assert_eq!(blocked.attr("type"), "blocked");
    assert!(blocked.attr("message").contains("Which database"));
    let qa = case(suite, "mixed/t/q1")
        .child("failure")
        .expect("qa fails");
    assert_eq!(qa.attr("type"), "qa_failed");
    let error = case(suite, "missing/t/m1")
        .child("error")
        .expect("an error");
    assert_eq!(error.attr("type"), "infra_error");
    assert!(
        error.attr("message").contains("dispatch-no-such-image"),
        "{error:?}"
    );
    assert_eq!(case(suite, "missing/t/m1").attr("classname"), "missing");

    // `status` of the run prints the same document: both read the run's journal.
    let status = t.run(&["status", "--output", "junit"]).expect_status(0);
    assert_eq!(status.stdout, run.stdout);

    let markdown = t.run(&["status", "--output", "markdown"]).expect_status(0);
    let lines: Vec<&str> = markdown.stdout.lines().collect();
    let run_id = suite
        .child("properties")
        .and_then(|p| p.all("property").find(|p| p.attr("name") == "run"))
        .map(|p| p.attr("value").to_owned())
        .expect("the run id is a property");
    // So does `resume` of the run, which ended already (and says so on stderr).
    let resumed = t
        .run(&["resume", &run_id, "--output", "junit"])
        .expect_status(0);
    assert_eq!(resumed.stdout, run.stdout);
    assert!(
        resumed.stderr.contains("already ended"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        lines[0],
        format!("**dispatch run ` {run_id} `** (spec ` t `, finished): 6 units: 1 agent_failed, 1 blocked, 1 changed, 1 infra_error, 1 no_changes, 1 qa_failed"),
        "{}",
        markdown.stdout
    );
    assert_eq!(lines[2], "| outcome | unit | PR | reason |");
    assert_eq!(lines[3], "|---|---|---|---|");
    let rows = &lines[4..10];
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r.split(" | ").next().unwrap_or("").trim_start_matches("| "))
        .collect();
    assert_eq!(
        outcomes,
        [
            "changed",
            "no_changes",
            "blocked",
            "agent_failed",
            "qa_failed",
            "infra_error"
        ],
        "{}",
        markdown.stdout
    );
    assert!(
        rows[0].starts_with("| changed | ` mixed/t/c1 ` | ` local:t/c1#"),
        "{}",
        rows[0]
    );
    assert!(
        rows[3].starts_with("| agent_failed | ` mixed/t/f1 ` |  | ` agent exited with code 7"),
        "{}",
        rows[3]
    );
    assert!(
        !markdown.stdout.contains("boom: cannot continue"),
        "a row shows the reason's first line"
    );

    // `--json` is `--output json`; with another `--output` it is a usage error.
    let json = t.run(&["status", "--json"]).expect_status(0);
    let output_json = t.run(&["status", "--output", "json"]).expect_status(0);
    assert_eq!(json.stdout, output_json.stdout);
    assert_eq!(json.json()["units"].as_array().map(Vec::len), Some(6));
    let both = t
        .run(&["status", "--json", "--output", "junit"])
        .expect_status(2);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}

#[test]
fn completions_for_bash_zsh_and_fish_know_every_command() {
    let t = Test::new("completions");
    for (shell, marker) in [
        ("bash", "complete -F _dispatch"),
        ("zsh", "#compdef dispatch"),
        ("fish", "complete -c dispatch"),
    ] {
        let out = t.run(&["completions", shell]).expect_status(0);
        assert!(out.stdout.contains(marker), "{shell}:\n{}", out.stdout);
        for command in COMMANDS {
            assert!(
                out.stdout.contains(command),
                "{shell} completions lack `{command}`"
            );
        }
        assert!(
            out.stdout.contains("junit") && out.stdout.contains("markdown"),
            "{shell} completes the values of --output"
        );
    }
    let out = t.run(&["completions", "tcsh"]).expect_status(2);
    assert!(
        out.stderr.contains("possible values: bash, zsh, fish"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_manual_page_renders_from_the_command_definitions() {
    let t = Test::new("man");
    let page = t.run(&["man"]).expect_status(0).stdout;
    assert!(page.contains(".TH dispatch 1"), "{page}");
    assert!(page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for command in COMMANDS {
        assert!(
            page.contains(&format!("dispatch\\-{command}(1)")),
            "the page lists `{command}`"
        );
    }
    let run = t.run(&["man", "run"]).expect_status(0).stdout;
    assert!(run.contains(".TH dispatch-run 1"), "{run}");
    assert!(run.contains("\\fBdispatch run\\fR"), "{run}");
    assert!(run.contains("junit") && run.contains("markdown"), "{run}");
    let unknown = t.run(&["man", "nope"]).expect_status(2);
    assert!(unknown.stderr.contains("dispatch has no command `nope`"));
    assert!(unknown.stderr.contains("Commands: init, validate, plan"));
    // When man is installed, it formats the page without a warning.
    if let Ok(out) = std::process::Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(page.as_bytes())?;
            child.wait_with_output()
        })
    {
        let (text, warnings) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "{warnings}"
        );
        assert!(text.contains("dispatch-completions(1)"), "{text}");
    }
}

#[test]
fn init_writes_a_starter_that_validates_and_plans_as_it_is() {
    let t = Test::new("init");
    let out = t.run(&["init", "first"]).expect_status(0);
    assert!(
        out.stdout.contains("wrote first/spec.yaml"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("wrote first/templates/task.md"));
    let spec = t.read("first/spec.yaml");
    assert_eq!(
        spec,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/starter/spec.yaml"
        ))
        .expect("the shipped starter"),
        "the shipped starter is what init writes"
    );
    assert!(
        spec.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count()
            > 20,
        "the starter is commented"
    );
    assert!(spec.contains("template: task") && spec.contains("kind: local"));
    // By a relative path and by its absolute path (a templates directory beside the spec).
    let absolute = t.path("first/spec.yaml").display().to_string();
    for path in ["first/spec.yaml", absolute.as_str()] {
        let valid = t.run(&["validate", path]).expect_status(0);
        assert!(valid.stdout.starts_with("ok"), "{}", valid.stdout);
        let plan = t.run(&["plan", path]).expect_status(0);
        assert!(plan.stdout.contains("my-org/api"), "{}", plan.stdout);
        assert!(plan.stdout.contains("`make test`"), "{}", plan.stdout);
    }
    // The template the spec names is the one init wrote.
    let prompt = t
        .run(&[
            "render",
            "first/spec.yaml",
            "--job",
            "fix-tests",
            "--repo",
            "api",
            "--offline",
        ])
        .expect_status(0);
    assert!(
        prompt
            .stdout
            .contains("## House style\n\nKeep functions short"),
        "{}",
        prompt.stdout
    );
    assert!(prompt.stdout.contains("Fix the failing tests"));

    // `.` by default.
    let here = Test::new("init-here");
    here.run(&["init"]).expect_status(0);
    here.run(&["validate", "spec.yaml"]).expect_status(0);
}

#[test]
fn init_overwrites_nothing_and_writes_nothing_when_a_file_exists() {
    let t = Test::new("init-refuses").file("templates/task.md", "mine\n");
    let out = t.run(&["init"]).expect_status(1);
    assert!(
        out.stderr
            .contains("error: ./templates/task.md exists already")
            && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
    assert_eq!(t.read("templates/task.md"), "mine\n");
    assert!(!t.path("spec.yaml").exists(), "nothing half-written");

    t.run(&["init", "again"]).expect_status(0);
    std::fs::write(t.path("again/spec.yaml"), "edited\n").expect("edit");
    let out = t.run(&["init", "again"]).expect_status(1);
    assert!(
        out.stderr.contains("again/spec.yaml exists already"),
        "{}",
        out.stderr
    );
    assert_eq!(t.read("again/spec.yaml"), "edited\n");
    // A dangling link is a file of that name too.
    std::fs::create_dir(t.path("dangling")).expect("mkdir");
    std::os::unix::fs::symlink("nowhere", t.path("dangling/spec.yaml")).expect("symlink");
    let out = t.run(&["init", "dangling"]).expect_status(1);
    assert!(
        out.stderr.contains("dangling/spec.yaml exists already"),
        "{}",
        out.stderr
    );
    assert!(!t.path("dangling/templates").exists());
}
