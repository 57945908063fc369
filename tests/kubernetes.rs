//! The Kubernetes backend, end to end: the real binary runs a spec on a fake API server that
//! checks every request against the Kubernetes API description and runs each Job's pod as
//! Docker containers (`support::kube`), with the local forge's repositories served over HTTP
//! by git's own `http-backend` (`support::githttp`) on the pods' internal network. The same
//! spec runs on Docker beside it: the outcomes, the PRs and what they hold must be the same.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::docker::{available, git_image};
use crate::support::githttp::{GitServer, TokenKind};
use crate::support::kube::{ClusterOptions, FakeCluster};
use crate::support::network::network;
use crate::support::{outcomes, Output, Test};

const READ: &str = "git-read-4f1c2e9b";
const WRITE: &str = "git-write-8d3a7c51";
const KUBE_TOKEN: &str = "kube-token-c0ffee";
const NAMESPACE: &str = "agents";

/// The scripted units both backends run: what each one's agent does, and the outcome it must
/// end with.
const UNITS: &[(&str, &str, &str)] = &[
    ("c1", "change", "changed"),
    ("n1", "none", "no_changes"),
    ("b1", "block", "blocked"),
    ("f1", "fail", "agent_failed"),
    ("q1", "qa-fails", "qa_failed"),
    ("r1", "fix-on-retry", "changed"),
];

/// The jobs of the spec (after the scripted head): one unit per repository, QA `sh test.sh`,
/// one fix attempt.
fn jobs(units: &[(&str, &str, &str)]) -> String {
    let repos: Vec<&str> = units.iter().map(|(repo, _, _)| *repo).collect();
    format!(
        "jobs:\n  - {{ id: j, task: t, repos: [{}], qa: [{{ run: sh test.sh }}], fix_attempts: 1 }}\n",
        repos.join(", ")
    )
}

/// A fixture with the scripted repositories of `units`.
fn repos(name: &str, units: &[(&str, &str, &str)]) -> Test {
    let repos: Vec<(&str, &str)> = units.iter().map(|(r, b, _)| (*r, *b)).collect();
    Test::new(name).scripted_repos(&repos)
}

/// The spec of the fixture: on Docker (no `runtime:`, no `git_url`), or on the fake cluster
/// with the forge served at `git_url`.
fn spec(t: Test, units: &[(&str, &str, &str)], git_url: Option<&str>) -> Test {
    match git_url {
        None => t.scripted_spec(&jobs(units)),
        Some(url) => {
            let forge = format!("{{ kind: local, seed: repos, git_url: \"{url}\" }}");
            let runtime = format!(
                "runtime: {{ kind: kubernetes, namespace: {NAMESPACE}, git_image: \"{}\", read_token_env: GIT_READ, write_token_env: GIT_WRITE }}\n",
                git_image()
            );
            let kubeconfig = t.path("kubeconfig").to_string_lossy().into_owned();
            t.scripted_spec_on(&forge, "t", &format!("{runtime}{}", jobs(units)))
                .env("KUBECONFIG", &kubeconfig)
                .env("GIT_READ", READ)
                .env("GIT_WRITE", WRITE)
        }
    }
}

/// The fake cluster, its kubeconfig in the fixture, and the git server of the fixture's local
/// forge (started before the forge is seeded: it serves whatever is there when asked).
struct Cluster {
    fake: FakeCluster,
    git: GitServer,
}

async fn cluster(t: &Test) -> Cluster {
    let net = network();
    let fake = FakeCluster::start(ClusterOptions {
        namespace: NAMESPACE.to_owned(),
        token: KUBE_TOKEN.to_owned(),
        network: net.name.clone(),
        history: 1000,
        bookmarks: true,
    })
    .await;
    fake.write_kubeconfig(&t.path("kubeconfig"));
    let forge = t.path(".dispatch/forge");
    std::fs::create_dir_all(&forge).expect("the forge's directory");
    let git = GitServer::start(&forge, net.gateway, READ, WRITE).await;
    Cluster { fake, git }
}

/// `dispatch ARGS` in the fixture, off the runtime's threads (the fakes run on them).
fn run(t: &Test, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| t.run(args))
}

/// Per unit of a finished run: its outcome, and the tree of its PR's branch on the forge
/// (none without a PR).
fn results(t: &Test, report: &Value) -> BTreeMap<String, (String, Option<String>)> {
    let prs = run(t, &["prs", "--json"]).expect_status(0).json();
    let by_unit: BTreeMap<String, String> = prs
        .as_array()
        .expect("a list of PRs")
        .iter()
        .map(|pr| {
            (
                pr["unit_id"].as_str().unwrap_or_default().to_owned(),
                pr["branch"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    outcomes(report)
        .into_iter()
        .map(|(unit, outcome)| {
            let repo = unit.rsplit('/').next().unwrap_or_default().to_owned();
            let tree = by_unit.get(&unit).map(|branch| {
                t.git(
                    &format!(".dispatch/forge/t/{repo}.git"),
                    &["rev-parse", &format!("{branch}^{{tree}}")],
                )
            });
            (unit, (outcome, tree))
        })
        .collect()
}

/// Unit id -> reason, of a report.
fn reasons(report: &Value) -> BTreeMap<String, String> {
    report["units"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            (
                u["id"].as_str().unwrap_or_default().to_owned(),
                u["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// What must hold after any run on the fake cluster: every request was one the API
/// describes, nothing of the run is left on the cluster or on the forge, and the tokens went
/// where they belong only.
fn clean(t: &Test, cluster: &Cluster, units: &[(&str, &str, &str)], pushed: bool) {
    let violations = cluster.fake.violations();
    assert!(
        violations.is_empty(),
        "requests the API does not describe: {violations:#?}"
    );
    assert_eq!(
        cluster.fake.jobs(),
        Vec::<Value>::new(),
        "no Job outlives its run"
    );
    assert_eq!(
        cluster.fake.secrets(),
        Vec::<Value>::new(),
        "no Secret outlives its run"
    );
    for (repo, _, _) in units {
        let refs = t.git(
            &format!(".dispatch/forge/t/{repo}.git"),
            &["for-each-ref", "refs/dispatch/"],
        );
        assert_eq!(refs, "", "no scratch ref of {repo} is left on the forge");
    }
    let seen = cluster.git.seen();
    assert!(
        seen.iter()
            .any(|r| r.token == TokenKind::Read && r.status == 200),
        "the pods cloned with the read token: {seen:#?}"
    );
    assert_eq!(
        seen.iter()
            .any(|r| r.token == TokenKind::Write && r.path.contains("receive-pack")),
        pushed,
        "the pods pushed (with the write token) only when a step ended by itself"
    );
    assert!(
        seen.iter()
            .filter(|r| r.path.contains("receive-pack"))
            .all(|r| r.token != TokenKind::Read || r.status == 401 || r.status == 403),
        "nothing was pushed with the read token"
    );
    for token in [READ, WRITE, KUBE_TOKEN] {
        assert!(
            !contains(&t.path(".dispatch"), token),
            "the token {token} is in the state directory"
        );
    }
}

/// Whether a file below `dir` holds `needle`.
fn contains(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => contains(&path, needle),
            Ok(kind) if kind.is_file() => std::fs::read(&path)
                .map(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
                .unwrap_or(false),
            _ => false,
        }
    })
}

/// Runs `units` on Docker: what each must end with there, checked, and the results to
/// compare the cluster's with.
fn on_docker(
    name: &str,
    units: &[(&str, &str, &str)],
) -> BTreeMap<String, (String, Option<String>)> {
    let docker = spec(repos(name, units), units, None);
    let report = run(&docker, &["run", "spec.yaml", "--output", "json"]).json();
    let expected = results(&docker, &report);
    let wanted: BTreeMap<String, String> = units
        .iter()
        .map(|(repo, _, outcome)| (format!("j/t/{repo}"), (*outcome).to_owned()))
        .collect();
    let got: BTreeMap<String, String> = expected
        .iter()
        .map(|(u, (o, _))| (u.clone(), o.clone()))
        .collect();
    assert_eq!(got, wanted, "on Docker: {:#?}", reasons(&report));
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_spec_ends_with_the_same_outcomes_and_prs_on_kubernetes_as_on_docker() {
    if !available() {
        return;
    }
    let expected = on_docker("k8s-docker", UNITS);
    let t = repos("k8s", UNITS);
    let cluster = cluster(&t).await;
    let t = spec(t, UNITS, Some(&cluster.git.url()));
    let on_kube = run(&t, &["run", "spec.yaml", "--output", "json"]).expect_status(1);
    let report = on_kube.json();
    assert_eq!(
        results(&t, &report),
        expected,
        "the same outcomes and PRs, with the same trees, as on Docker; the reasons: {:#?}",
        reasons(&report)
    );
    clean(&t, &cluster, UNITS, true);
    let status = run(&t, &["status", "--json"]).expect_status(0).json();
    assert_eq!(status["run"]["runtime"], "kubernetes", "{status}");
}

/// Units whose agents take a while, for the runner to be killed while they run.
const SLOW: &[(&str, &str, &str)] = &[
    ("s1", "nap", "changed"),
    ("s2", "nap", "changed"),
    ("s3", "change", "changed"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_killed_while_its_jobs_run_resumes_on_the_cluster_and_ends_as_on_docker() {
    if !available() {
        return;
    }
    let expected = on_docker("k8s-kill-docker", SLOW);
    let t = repos("k8s-kill", SLOW);
    let cluster = cluster(&t).await;
    let t = spec(t, SLOW, Some(&cluster.git.url()));
    let runner = t.spawn(&["run", "spec.yaml", "--output", "json"]);
    let run_id = tokio::task::block_in_place(|| t.wait_for_container());
    // The Job the journal named exists on the cluster before the runner dies.
    for _ in 0..100 {
        if !cluster.fake.jobs().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cluster.fake.jobs().is_empty(), "a Job runs");
    runner.kill();
    let resumed = run(&t, &["resume", &run_id, "--output", "json"]).expect_status(0);
    let report = resumed.json();
    assert_eq!(
        results(&t, &report),
        expected,
        "after the resume, the outcomes and PRs of Docker: {:#?}",
        reasons(&report)
    );
    for (repo, _, _) in SLOW {
        assert_eq!(
            t.agent_runs(repo, "j"),
            1,
            "the agent of {repo} ran once: collected, not run again"
        );
    }
    clean(&t, &cluster, SLOW, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_whose_history_expired_lists_again_and_the_run_goes_on() {
    if !available() {
        return;
    }
    let units = &SLOW[..2];
    let t = repos("k8s-410", units);
    let cluster = cluster(&t).await;
    let t = spec(t, units, Some(&cluster.git.url()));
    let runner = t.spawn(&["run", "spec.yaml", "--output", "json"]);
    for _ in 0..200 {
        if !cluster.fake.jobs().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // As an API server that restarted: the watches end, and watching again from where they
    // were answers an ERROR event carrying 410 Gone.
    cluster.fake.restart_watches();
    let out = tokio::task::block_in_place(|| runner.wait()).expect_status(0);
    let report = out.json();
    assert!(
        outcomes(&report).values().all(|o| o == "changed"),
        "{:#?}",
        reasons(&report)
    );
    let lists = |path: &str| {
        cluster
            .fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(path) && !r.watch)
            .count()
    };
    assert!(
        lists("/jobs") >= 2 && lists("/pods") >= 2,
        "the watches listed again after the 410: {:#?}",
        cluster.fake.requests()
    );
    clean(&t, &cluster, units, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_checks_the_cluster_the_namespace_and_the_permissions_the_backend_needs() {
    if !available() {
        return;
    }
    let units = &UNITS[..1];
    let t = repos("k8s-doctor", units);
    let cluster = cluster(&t).await;
    let t = spec(t, units, Some(&cluster.git.url()));
    let out = run(&t, &["doctor", "spec.yaml"]).expect_status(0);
    for line in [
        "ok    the cluster answers (Kubernetes v",
        &format!("ok    namespace {NAMESPACE} exists"),
        &format!("ok    may create, get, list, watch, delete jobs in {NAMESPACE}"),
        &format!("ok    may get, list, watch pods in {NAMESPACE}"),
        &format!("ok    may get pods/log in {NAMESPACE}"),
        &format!("ok    may create, get secrets in {NAMESPACE}"),
        "ok    the pods' git token GIT_READ (runtime.read_token_env) is set",
    ] {
        assert!(out.stdout.contains(line), "`{line}` in:\n{}", out.stdout);
    }
    assert!(
        !out.stdout.contains("Docker engine"),
        "no engine is asked:\n{}",
        out.stdout
    );
    assert!(
        cluster.fake.secrets().is_empty(),
        "the namespace probe stores nothing"
    );

    cluster.fake.deny("create", "secrets");
    let out = run(&t, &["doctor", "spec.yaml"]).expect_status(1);
    assert!(
        out.stdout
            .contains(&format!("FAIL  may not create secrets in {NAMESPACE}")),
        "{}",
        out.stdout
    );
    let violations = cluster.fake.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Agents that never end by themselves: one past its timeout, one silent past its
/// `idle_timeout`.
const STUCK: &[(&str, &str, &str)] = &[("t1", "sleep", "timed_out"), ("i1", "sleep", "timed_out")];

/// The spec of [`STUCK`]: `t1`'s job has a timeout of 3 s, `i1`'s an idle timeout of 2 s.
fn stuck_jobs() -> &'static str {
    "jobs:\n  - { id: j, task: t, repos: [t1], qa: [], timeout: 3s }\n  - { id: k, task: t, repos: [i1], qa: [], idle_timeout: 2s }\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_past_its_timeout_or_silent_too_long_is_stopped_as_on_docker_and_cancel_stops_it() {
    if !available() {
        return;
    }
    let docker = repos("k8s-stuck-docker", STUCK).scripted_spec(stuck_jobs());
    let on_docker = run(&docker, &["run", "spec.yaml", "--output", "json"]).json();
    let t = repos("k8s-stuck", STUCK);
    let cluster = cluster(&t).await;
    let forge = format!(
        "{{ kind: local, seed: repos, git_url: \"{}\" }}",
        cluster.git.url()
    );
    let runtime = format!(
        "runtime: {{ kind: kubernetes, namespace: {NAMESPACE}, git_image: \"{}\", read_token_env: GIT_READ, write_token_env: GIT_WRITE }}\n",
        git_image()
    );
    let kubeconfig = t.path("kubeconfig").to_string_lossy().into_owned();
    let t = t
        .scripted_spec_on(&forge, "t", &format!("{runtime}{}", stuck_jobs()))
        .env("KUBECONFIG", &kubeconfig)
        .env("GIT_READ", READ)
        .env("GIT_WRITE", WRITE);
    let on_kube = run(&t, &["run", "spec.yaml", "--output", "json"]).json();
    assert_eq!(
        outcomes(&on_kube),
        outcomes(&on_docker),
        "{:#?}",
        reasons(&on_kube)
    );
    let expected: BTreeMap<String, String> = [
        ("j/t/t1".to_owned(), "timed_out".to_owned()),
        ("k/t/i1".to_owned(), "timed_out".to_owned()),
    ]
    .into();
    assert_eq!(outcomes(&on_kube), expected);
    let why = reasons(&on_kube);
    assert!(why["j/t/t1"].contains("past its timeout of 3s"), "{why:#?}");
    assert!(why["k/t/i1"].contains("printed nothing for 2s"), "{why:#?}");
    assert!(cluster.fake.pods().is_empty(), "the stopped pods are gone");

    // Ctrl-C twice: the running step's Job is deleted, its unit ends cancelled.
    let runner = t.spawn(&[
        "run",
        "spec.yaml",
        "--new",
        "--only",
        "j",
        "--output",
        "json",
    ]);
    for _ in 0..200 {
        let running = cluster.fake.pods().iter().any(|pod| {
            pod["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == "step" && s["state"]["running"].is_object())
        });
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.interrupt();
    tokio::time::sleep(Duration::from_millis(200)).await;
    runner.interrupt();
    let cancelled = tokio::task::block_in_place(|| runner.wait()).json();
    assert_eq!(
        outcomes(&cancelled)["j/t/t1"],
        "cancelled",
        "{:#?}",
        reasons(&cancelled)
    );
    clean(&t, &cluster, STUCK, false);
}
