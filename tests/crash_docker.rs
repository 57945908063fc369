//! Crash harness: a run of 10 units with scripted agents against the real Docker engine is
//! killed with SIGKILL at many points (during prep, while agents run, between an agent's exit
//! and its commit, during QA and publish, between units), then `dispatch resume` finishes it.
//! Each case checks: every unit ends with an outcome, no agent ran twice (a counter file the
//! agent appends to), no container of the run remains, and `dispatch status` agrees with the
//! local forge's PRs.
//!
//! Skips without an engine unless DISPATCH_REQUIRE_DOCKER=1.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::TempDir;

const AGENT: &str = "#!/bin/sh\necho run >> /workspace/.meta/agent-runs\nsleep 1\necho \"$(cat name)\" >> changes.txt\n";

fn dispatch_json(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .arg("--color")
        .arg("never")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn one_case(case: usize, kill_after: Duration) {
    let dir = TempDir::new(&format!("crash{case}"));
    dir.write("agent.sh", AGENT);
    let repos: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    for repo in &repos {
        dir.write(&format!("repos/t/{repo}/name"), &format!("{repo}\n"));
    }
    dir.write(
        "spec.yaml",
        &format!(
            "version: 1\nname: crash\nforge: {{ kind: local, seed: repos }}\ndefaults: {{ org: t, agent: scripted, image: dispatch-busybox, timeout: 1m }}\nlimits: {{ total: 4 }}\nagents:\n  scripted:\n    command: [sh, /opt/agent.sh]\n    mounts: [{{ source: agent.sh, target: /opt/agent.sh }}]\n    network: none\njobs:\n  - {{ id: j, task: t, repos: [{}], qa: [{{ run: \"cat changes.txt\" }}] }}\n",
            repos.join(", ")
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["--color", "never", "run", "spec.yaml", "--output", "json"])
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(kill_after);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (_, runs, _) = dispatch_json(&dir.0, &["runs", "--state-dir", ".dispatch", "--json"]);
    let unfinished = runs
        .as_array()
        .and_then(|r| r.first())
        .filter(|r| r["status"] == "running")
        .map(|r| r["id"].as_str().unwrap().to_owned());
    let (status, result, stderr) = match &unfinished {
        Some(run) => dispatch_json(
            &dir.0,
            &[
                "resume",
                run,
                "--state-dir",
                ".dispatch",
                "--output",
                "json",
            ],
        ),
        // Killed before the run was recorded, or after it ended: a plain run (or nothing).
        None if runs.as_array().is_none_or(|r| r.is_empty()) => {
            dispatch_json(&dir.0, &["run", "spec.yaml", "--output", "json"])
        }
        None => (0, serde_json::Value::Null, String::new()),
    };
    assert_eq!(
        status, 0,
        "case {case} (kill after {kill_after:?}): {stderr}\n{result}"
    );
    let (_, state, _) = dispatch_json(&dir.0, &["status", "--state-dir", ".dispatch", "--json"]);
    let run = state["run"]["id"].as_str().unwrap().to_owned();
    assert_eq!(state["run"]["status"], "finished", "case {case}");
    let units = state["units"].as_array().unwrap();
    assert_eq!(units.len(), 10);
    for unit in units {
        assert_eq!(
            unit["outcome"], "changed",
            "case {case}: every unit ends, and ends as it should: {unit}"
        );
        let repo = unit["id"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let runs = std::fs::read_to_string(
            dir.0
                .join(format!(".dispatch/workspaces/t/{repo}/j/meta/agent-runs")),
        )
        .unwrap_or_default();
        assert_eq!(
            runs.lines().count(),
            1,
            "case {case} (kill after {kill_after:?}): the agent of {repo} ran {} times",
            runs.lines().count()
        );
    }
    let (_, prs, _) = dispatch_json(&dir.0, &["prs", "--state-dir", ".dispatch", "--json"]);
    assert_eq!(
        prs.as_array().unwrap().len(),
        10,
        "case {case}: one PR per changed unit, never two"
    );
    for unit in units {
        let repo = unit["id"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let tree = Command::new("git")
            .args(["show", "agent/j:changes.txt"])
            .current_dir(dir.0.join(format!(".dispatch/forge/t/{repo}.git")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&tree.stdout).trim(),
            repo,
            "case {case}: the forge has the agent's change of {repo}, once"
        );
    }
    let left = common::leftovers(&run);
    assert_eq!(left, 0, "case {case}: no container of the run remains");
}

#[test]
fn killed_runs_resume_to_the_same_end_without_running_anything_twice() {
    if !common::docker_available() {
        return;
    }
    // 20 kill points spread over the run: prep, agents running, agents exited before their
    // commit, QA, publish and the moments between units.
    for case in 0..20 {
        one_case(case, Duration::from_millis(150 + 230 * case as u64));
    }
}
