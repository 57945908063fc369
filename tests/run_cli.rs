//! `dispatch run` and `dispatch plan` behaviour that needs no Docker engine.

mod common;

use std::process::Command;

use common::{dispatch, TempDir};

fn git(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn plan_shows_qa_steps_detected_from_marker_files() {
    let dir = TempDir::new("detect");
    dir.write("svc/go.mod", "module example.org/svc\n");
    git(&dir.0.join("svc"), &["init", "--quiet"]);
    git(&dir.0.join("svc"), &["add", "."]);
    git(&dir.0.join("svc"), &["commit", "--quiet", "-m", "init"]);
    let spec = dir.write(
        "spec.yaml",
        "version: 1\nname: d\ndefaults: { org: o }\njobs:\n  - { id: j, task: t, repos: [{ repo: svc, url: svc }, { repo: gone, url: gone }] }\n",
    );
    let out = dispatch(&["plan", spec.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.stderr);
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
    let json = dispatch(&["plan", spec.to_str().unwrap(), "--format", "json"]);
    assert!(
        json.stdout.contains("\"qa\": \"auto\""),
        "the JSON plan stays independent of the machine"
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
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
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
    let out = dispatch(&[
        "run",
        "pipelines/fix-tests.yaml",
        "--dry-run",
        "--only",
        "fix-tests/go-log",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("1 unit, 5 nodes in 1 job"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("===== prompt of ").count(), 1);
    let bad = dispatch(&[
        "run",
        "pipelines/fix-tests.yaml",
        "--dry-run",
        "--only",
        "fix-tests/nope",
    ]);
    assert_eq!(bad.status, 1);
    assert!(
        bad.stderr.contains("--only fix-tests/nope matches no unit"),
        "{}",
        bad.stderr
    );
}

#[test]
fn an_unreachable_engine_exits_3_and_says_how_to_start_it() {
    let dir = TempDir::new("noengine");
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args([
            "--color",
            "never",
            "run",
            "pipelines/demo.yaml",
            "--state-dir",
            dir.0.to_str().unwrap(),
        ])
        .current_dir(common::root())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Start the Docker engine"), "{stderr}");
}

#[test]
fn an_invalid_spec_exits_2_before_anything_runs() {
    let out = dispatch(&["run", "tests/specs/invalid/cycle.yaml"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("`needs` forms a cycle"));
}

#[test]
fn prs_without_a_state_directory_says_so() {
    let dir = TempDir::new("noprs");
    let out = dispatch(&["prs", "--state-dir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("no state database"), "{}", out.stderr);
}

#[test]
fn a_broken_state_database_is_named_with_what_to_do() {
    let dir = TempDir::new("corrupt");
    dir.write("dispatch.db", &"this is not a database ".repeat(200));
    let out = dispatch(&["status", "--state-dir", dir.0.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr.contains("dispatch.db") && out.stderr.contains("damaged"),
        "{}",
        out.stderr
    );

    let newer = TempDir::new("newer");
    let conn = rusqlite::Connection::open(newer.0.join("dispatch.db")).unwrap();
    conn.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES ('schema_version', '99');").unwrap();
    drop(conn);
    let out = dispatch(&["runs", "--state-dir", newer.0.to_str().unwrap()]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .contains("schema version 99, newer than this dispatch understands"),
        "{}",
        out.stderr
    );
}
