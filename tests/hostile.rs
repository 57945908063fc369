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
