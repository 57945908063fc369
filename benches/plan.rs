//! Benchmarks of issue 2 (run with `cargo bench --bench plan`):
//!
//! 1. planning a spec that fans one job out over 10,000 repositories (5 nodes each, 50,000
//!    nodes): load + validate + plan + JSON, wall time and peak RSS of this process;
//! 2. `dispatch validate` of all example specs as a whole process, wall time.
//!
//! Numbers are printed, never asserted: targets are checked by reading them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn fanout_spec(repos: usize) -> String {
    let mut text = String::from(
        "version: 1\nname: fanout\ndefaults: { org: core, agent: codex }\nlimits: { total: 8 }\njobs:\n  - id: fanout\n    task: Apply the conventions\n    persona: engineering/senior-developer\n    qa:\n      - run: make test\n    review: { agent: \"codex:review\" }\n    repos:\n",
    );
    for i in 0..repos {
        text.push_str(&format!("      - svc-{i:05}\n"));
    }
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = fanout_spec(10_000);
    let path = root.join("pipelines/bench-fanout.yaml");
    let mut samples = Vec::new();
    let mut nodes = 0;
    let mut json_bytes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let loaded =
            dispatch::spec::load_text(&path, text.clone()).expect("the benchmark spec is valid");
        let plan = dispatch::plan::build(&loaded);
        let json = dispatch::plan::render::json(&plan);
        samples.push(start.elapsed());
        nodes = plan.counts.nodes;
        json_bytes = json.len();
    }
    println!(
        "plan 10,000 repositories: {nodes} nodes, JSON {:.1} MiB, median {:.0} ms (min {:.0} ms) over 5 runs, peak RSS {:.0} MiB",
        json_bytes as f64 / 1048576.0,
        median(samples.clone()).as_secs_f64() * 1000.0,
        samples.iter().min().unwrap().as_secs_f64() * 1000.0,
        peak_rss_mib()
    );

    let examples = [
        "fix-tests.yaml",
        "fix-tests.ncl",
        "security-audit.yaml",
        "batch-fanout.yaml",
    ];
    let args: Vec<String> = examples.iter().map(|e| format!("pipelines/{e}")).collect();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_dispatch"))
            .arg("validate")
            .args(&args)
            .current_dir(&root)
            .output()
            .expect("dispatch runs");
        samples.push(start.elapsed());
        assert!(status.status.success(), "the examples are valid");
    }
    println!(
        "dispatch validate of {} example specs (whole process): median {:.1} ms, max {:.1} ms over 20 runs",
        examples.len(),
        median(samples.clone()).as_secs_f64() * 1000.0,
        samples.iter().max().unwrap().as_secs_f64() * 1000.0
    );
}
