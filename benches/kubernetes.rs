//! The Kubernetes backend at scale (issue 15): 200 trivial units at `limits.total: 50` on the
//! fake cluster of the tests (every Job's pod run as Docker containers: clone, seed, step,
//! push), against the same spec on the Docker backend.
//!
//! Reported per backend: the time from the first container recorded (on Kubernetes: the first
//! Job, whose name the journal records just before it is created) to the end of the run, from
//! the journal's timestamps; the controller's peak RSS and CPU time (`wait4` of the `dispatch`
//! process); on Kubernetes also the requests the API server answered, watch events included,
//! per unit.
//!
//! Run with `cargo bench --bench kubernetes` (needs Docker and `scripts/install-deps
//! --agent-images`, for the `dispatch-git` image); `UNITS=20` runs fewer. It prints the
//! figures and asserts only that every unit ended `changed` on both.

// The bench uses a part of the tests' support (the fakes and the fixture builder).
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use support::githttp::GitServer;
use support::kube::{ClusterOptions, FakeCluster};
use support::network::network;
use support::Test;

const READ: &str = "bench-read-token";
const WRITE: &str = "bench-write-token";

/// What one run of `dispatch` cost.
struct Cost {
    wall: f64,
    first_to_end: f64,
    max_rss_kib: i64,
    cpu: f64,
    changed: usize,
}

/// Runs `dispatch ARGS` in the fixture and measures it with `wait4`.
fn measured(t: &Test, args: &[&str]) -> Cost {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["--color", "never"])
        .args(args)
        .current_dir(t.path(""))
        .envs(t.envs().iter().cloned())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().expect("dispatch starts");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child's; status and usage are valid for writes.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    // Reaped by wait4 above: the handle has nothing left to wait for.
    drop(child);
    let wall = started.elapsed().as_secs_f64();
    let report: serde_json::Value =
        serde_json::from_str(&reader.join().expect("read")).expect("a JSON report");
    let changed = report["units"]
        .as_array()
        .map(|units| units.iter().filter(|u| u["outcome"] == "changed").count())
        .unwrap_or(0);
    let run = report["run"].as_str().unwrap_or_default().to_owned();
    let events = t.events(&run);
    let first = events
        .iter()
        .find(|e| e.kind == "container")
        .map_or(0, |e| e.at_ms);
    let end = events.iter().map(|e| e.at_ms).max().unwrap_or(first);
    for event in events
        .iter()
        .filter(|e| e.kind == "failed" || e.kind == "reset")
    {
        println!(
            "  {} {}: {}",
            event.kind,
            event.node.as_deref().unwrap_or_default(),
            event.detail.as_deref().unwrap_or_default()
        );
    }
    let seconds = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Cost {
        wall,
        first_to_end: (end - first) as f64 / 1000.0,
        max_rss_kib: usage.ru_maxrss,
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        changed,
    }
}

fn jobs(units: usize) -> String {
    let repos: Vec<String> = (0..units).map(|i| format!("r{i:03}")).collect();
    format!(
        "limits: {{ total: 50 }}\njobs:\n  - {{ id: j, task: t, repos: [{}], qa: [] }}\n",
        repos.join(", ")
    )
}

fn fixture(name: &str, units: usize) -> Test {
    let names: Vec<String> = (0..units).map(|i| format!("r{i:03}")).collect();
    let repos: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "change")).collect();
    Test::new(name).scripted_repos(&repos)
}

fn report(what: &str, cost: &Cost, units: usize) {
    println!(
        "{what:<11} {units} units: first container to the run's end {:>7.1} s (whole command {:.1} s); controller peak RSS {:.1} MiB, CPU {:.2} s; {} changed",
        cost.first_to_end,
        cost.wall,
        cost.max_rss_kib as f64 / 1024.0,
        cost.cpu,
        cost.changed
    );
}

fn main() {
    let units: usize = std::env::var("UNITS")
        .ok()
        .and_then(|u| u.parse().ok())
        .unwrap_or(200);
    assert!(
        support::docker::available(),
        "the bench needs the Docker engine"
    );
    let image = support::docker::git_image();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");

    let docker = fixture("bench-k8s-docker", units).scripted_spec(&jobs(units));
    let on_docker = measured(&docker, &["run", "spec.yaml", "--output", "json"]);
    report("docker", &on_docker, units);

    let t = fixture("bench-k8s", units);
    let net = network();
    let (fake, git) = runtime.block_on(async {
        let fake = FakeCluster::start(ClusterOptions {
            namespace: "agents".to_owned(),
            token: "bench-kube-token".to_owned(),
            network: net.name.clone(),
            history: 100_000,
            bookmarks: true,
        })
        .await;
        std::fs::create_dir_all(t.path(".dispatch/forge")).expect("forge dir");
        let git = GitServer::start(&t.path(".dispatch/forge"), net.gateway, READ, WRITE).await;
        (fake, git)
    });
    fake.write_kubeconfig(&t.path("kubeconfig"));
    let forge = format!("{{ kind: local, seed: repos, git_url: \"{}\" }}", git.url());
    let runtime_section = format!(
        "runtime: {{ kind: kubernetes, namespace: agents, git_image: \"{image}\", read_token_env: GIT_READ, write_token_env: GIT_WRITE }}\n"
    );
    let kubeconfig = t.path("kubeconfig").to_string_lossy().into_owned();
    let t = t
        .scripted_spec_on(&forge, "t", &format!("{runtime_section}{}", jobs(units)))
        .env("KUBECONFIG", &kubeconfig)
        .env("GIT_READ", READ)
        .env("GIT_WRITE", WRITE);
    let before = fake.request_count();
    let on_cluster = measured(&t, &["run", "spec.yaml", "--output", "json"]);
    let requests = fake.request_count() - before;
    report("kubernetes", &on_cluster, units);
    let seen = fake.requests();
    let watch_events: usize = seen.iter().filter(|s| s.watch).map(|s| s.events).sum();
    println!(
        "kubernetes  API requests {requests} ({:.1} per unit; {} HTTP requests, {watch_events} watch events), {} violations; the fake started {} containers",
        requests as f64 / units as f64,
        seen.len(),
        fake.violations().len(),
        fake.created_containers()
    );
    let mut by_kind: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for request in &seen {
        let resource = request
            .path
            .rsplit('/')
            .find(|part| !part.is_empty() && !part.starts_with("dispatch-"))
            .unwrap_or_default()
            .to_owned();
        let what = format!(
            "{} {resource}{} {}",
            request.method,
            if request.watch { " (watch)" } else { "" },
            request.status
        );
        let entry = by_kind.entry(what).or_default();
        entry.0 += 1;
        entry.1 += request.events;
    }
    for (what, (count, events)) in by_kind {
        println!("            {what}: {count} requests, {events} events");
    }
    println!(
        "ratio       kubernetes / docker, first container to the end: {:.2}",
        on_cluster.first_to_end / on_docker.first_to_end.max(0.001)
    );
    assert_eq!(on_docker.changed, units, "every unit changed on Docker");
    assert_eq!(
        on_cluster.changed, units,
        "every unit changed on Kubernetes"
    );
    drop(git);
    drop(fake);
}
