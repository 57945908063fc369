//! Hostile agents against the real Docker engine: what a container leaves in the work tree
//! for host git (nested repositories, `.git` files pointing at host repositories) and floods
//! of output and disk. Each test fails on a dispatch that trusts what its containers wrote.

use crate::support::docker::available;
use crate::support::{outcomes, unit, Test};

/// `dispatch run spec.yaml --output json`.
const RUN: &[&str] = &["run", "spec.yaml", "--output", "json"];

/// An agent that, on its first run, plants a repository inside the work tree whose
/// configuration runs a program (MARK stands for a host path the program would write), then
/// does real work; a fix attempt (QA fails once) would make host git look into it.
/// `nested`: a copy of the clone's own `.git` with a `core.fsmonitor` added; `gitfile`: a
/// `.git` file pointing at a repository on the host (HOST).
const PLANTING_AGENT: &str = r#"#!/bin/sh
set -u
echo run >> /workspace/.meta/agent-runs
if [ -e /workspace/.meta/planted ]; then echo "again" >> work.txt; exit 0; fi
touch /workspace/.meta/planted
case "$(cat behaviour)" in
  nested)
    mkdir nested && cp -r /workspace/repo/.git nested/.git
    printf '[core]\n\tfsmonitor = "env > MARK.nested"\n' >> nested/.git/config
    echo inner > nested/inner.txt ;;
  gitfile)
    mkdir sub && echo "gitdir: HOST/.git" > sub/.git ;;
esac
echo "real work" > work.txt
echo "agent done"
"#;

#[test]
fn host_git_never_acts_on_a_repository_a_container_planted() {
    if !available() {
        return;
    }
    let t = Test::new("planted");
    // A repository on the host whose configuration runs a program: what a `.git` file in the
    // work tree can point at.
    t.git(".", &["init", "--quiet", "host"]);
    t.git(
        "host",
        &["commit", "--quiet", "--allow-empty", "-m", "host"],
    );
    let mark = t.path("ran");
    t.git(
        "host",
        &[
            "config",
            "core.fsmonitor",
            &format!("env > {}.gitfile", mark.display()),
        ],
    );
    let agent = PLANTING_AGENT
        .replace("MARK", &mark.display().to_string())
        .replace("HOST", &t.path("host").display().to_string());
    let t = t
        .agent(&agent)
        .scripted_repos(&[("n1", "nested"), ("g1", "gitfile")])
        .scripted_spec(
            r#"
            jobs:
              - id: j
                task: t
                repos: [n1, g1]
                fix_attempts: 1
                qa: [{ run: "[ -e /workspace/.meta/qa-once ] || { touch /workspace/.meta/qa-once; exit 1; }" }]
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    let got = outcomes(&report);
    for (id, repo, path) in [
        ("j/t/n1", "n1", "nested/.git"),
        ("j/t/g1", "g1", "sub/.git"),
    ] {
        let log = std::fs::read_to_string(t.meta(repo, "j").join("agent.log")).unwrap_or_default();
        assert_eq!(got[id], "agent_failed", "{report}\nagent.log:\n{log}");
        let reason = unit(&report, id)["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(path) && reason.contains("nothing was committed"),
            "the reason names the planted path: {reason}"
        );
    }
    for planted in ["nested", "gitfile"] {
        let ran = t.path(&format!("ran.{planted}"));
        assert!(
            !ran.exists(),
            "{planted}: the planted configuration ran on the host with the runner's environment: {}",
            std::fs::read_to_string(&ran).unwrap_or_default()
        );
    }
    for repo in ["n1", "g1"] {
        let workspace = format!(".dispatch/workspaces/t/{repo}/j/repo");
        assert_eq!(
            t.git(&workspace, &["rev-list", "--count", "HEAD"]),
            "1",
            "{repo}: nothing was committed"
        );
        let bare = format!(".dispatch/forge/t/{repo}.git");
        assert_eq!(
            t.git(&bare, &["branch", "--list", "agent/*"]),
            "",
            "{repo}: nothing was pushed"
        );
        assert_eq!(t.agent_runs(repo, "j"), 1, "{repo}: no fix attempt ran");
    }
}

/// An agent that fills its work tree: `fill` writes 40 MB files and then waits for good,
/// `flood-disk` writes until the disk is full and exits 0; `change` does ordinary work.
const FILLING_AGENT: &str = r#"#!/bin/sh
echo run >> /workspace/.meta/agent-runs
case "$(cat behaviour)" in
  fill)
    for i in 1 2 3 4; do dd if=/dev/zero of=big-$i bs=1M count=40 2>/dev/null; done
    echo "filled"
    sleep 600 ;;
  flood-disk)
    dd if=/dev/zero of=fill bs=1M >/dev/null 2>&1
    echo "the disk is full" ;;
  change) echo "changed" >> file.txt ;;
esac
"#;

#[test]
fn a_workspace_past_its_disk_limit_stops_its_agent_and_no_other_unit() {
    if !available() {
        return;
    }
    let t = Test::new("disk-limit")
        .agent(FILLING_AGENT)
        .scripted_repos(&[("f1", "fill"), ("c1", "change")])
        .scripted_spec(
            r#"
            jobs:
              - id: j
                task: t
                timeout: 5m
                repos: [f1, c1]
                qa: []
                resources: { disk: 100m }
            "#,
        );
    let report = t.run(RUN).expect_status(1).json();
    let got = outcomes(&report);
    assert_eq!(got["j/t/c1"], "changed", "{report}");
    assert_eq!(got["j/t/f1"], "agent_failed", "{report}");
    let reason = unit(&report, "j/t/f1")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("grew past its disk limit of 100 MiB (resources.disk)"),
        "the reason names the limit, not the job's timeout: {reason}"
    );
    assert_eq!(
        t.git(
            ".dispatch/workspaces/t/f1/j/repo",
            &["rev-list", "--count", "HEAD"]
        ),
        "1",
        "nothing was committed"
    );
    assert_eq!(
        t.git(".dispatch/forge/t/f1.git", &["branch", "--list", "agent/*"]),
        "",
        "nothing was pushed"
    );
    assert_eq!(t.agent_runs("f1", "j"), 1, "never retried");
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir` (created); `None`, with a note, when this user may
    /// not mount (not root) and CI does not require the test.
    fn mount(dir: std::path::PathBuf, size: &str) -> Option<Self> {
        // SAFETY: geteuid cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("DISPATCH_REQUIRE_DOCKER").is_none(),
                "this test mounts a tmpfs and needs root, which CI has"
            );
            eprintln!("note: skipped, mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mount a tmpfs at {}", dir.display());
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["--lazy"])
            .arg(&self.0)
            .status();
    }
}

#[test]
fn the_journal_records_the_end_of_a_run_whose_agent_filled_the_disk() {
    if !available() {
        return;
    }
    let t = Test::new("full-disk")
        .agent(FILLING_AGENT)
        .scripted_repos(&[("d1", "flood-disk")])
        .scripted_spec(
            r#"
            jobs:
              - { id: j, task: t, repos: [d1], qa: [], resources: { disk: 1g } }
            "#,
        );
    // The state directory (journal, workspaces, the local forge) on a disk of its own.
    let Some(_disk) = Tmpfs::mount(t.path(".dispatch"), "64m") else {
        return;
    };
    let out = t.run(RUN);
    assert_eq!(out.status, 1, "the unit fails\n{}", out.stderr);
    let report = out.json();
    assert_eq!(outcomes(&report).len(), 1, "{report}");
    let run = report["run"].as_str().expect("a run id").to_owned();
    let status = t.run(&["status", &run, "--json"]).json();
    assert_ne!(
        status["run"]["status"], "running",
        "the run's end is recorded: {status}"
    );
    let recorded = outcomes(&status);
    assert_eq!(recorded, outcomes(&report), "every unit's end is recorded");
    assert!(
        out.stderr
            .contains("is full: dispatch gave back the 32 MiB")
            && out.stderr.contains("the running containers are stopped"),
        "the runner says it used its reserve and stops what writes: {}",
        out.stderr
    );

    // A disk that cannot hold the reserve: a new run refuses to start rather than run
    // without room for its end.
    let filler = t.path(".dispatch/filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("a filler");
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
    }
    let refused = t.run(RUN).expect_status(1);
    assert!(
        refused.stderr.contains("cannot keep the 32 MiB"),
        "{}",
        refused.stderr
    );
    std::fs::remove_file(&filler).expect("the filler");
    let again = t.run(RUN);
    assert!(
        !again.stderr.contains("cannot keep"),
        "with room again, runs start: {}",
        again.stderr
    );
}
