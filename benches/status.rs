//! `dispatch status` on a run of 10,000 units (issue 4): the whole process, release build,
//! reading a journal that holds the run's 50,000 nodes, half of the units finished. Run with
//! `cargo bench --bench status`; prints the median of 10 runs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dispatch::state::RunEvent;
use dispatch::vocab::{NodeStatus, Outcome};

fn main() {
    let units = 10_000;
    let mut text = String::from("version: 1\nname: status\ndefaults: { org: core }\njobs:\n  - id: j\n    task: t\n    qa: [{ run: 'true' }]\n    review: { agent: \"codex:review\" }\n    repos:\n");
    for i in 0..units {
        text.push_str(&format!("      - r{i:05}\n"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let loaded =
        dispatch::spec::load_text(&root.join("pipelines/bench-status.yaml"), text).expect("valid");
    let plan = std::sync::Arc::new(dispatch::plan::build(&loaded));
    let state = std::env::temp_dir().join(format!("dispatch-bench-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let journal = dispatch::state::Journal::start(&state).unwrap();
        dispatch::exec::record_run(
            &journal,
            "bench",
            "bench.yaml",
            &plan,
            None,
            Default::default(),
        )
        .await
        .unwrap();
        // Half of the units finished, through the events a run records.
        let mut events = Vec::new();
        for unit in plan.units.iter().step_by(2) {
            for node in &unit.nodes {
                events.push(RunEvent::NodeStarted {
                    node: node.id.clone(),
                    attempt: 1,
                    pool: None,
                });
                events.push(RunEvent::NodeFinished {
                    node: node.id.clone(),
                    status: NodeStatus::Done,
                    outcome: None,
                    exit_code: None,
                    reason: None,
                });
            }
            events.push(RunEvent::UnitFinished {
                unit: unit.id.clone(),
                outcome: Outcome::Changed,
                reason: None,
                pr: Some("local:core/x#1".to_owned()),
                held: None,
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        journal.record_then("bench", events, move |written| {
            let _ = tx.send(written);
        });
        rx.await.unwrap().unwrap();
    });
    for format in [&[][..], &["--json"][..]] {
        let mut samples: Vec<Duration> = (0..10)
            .map(|_| {
                let start = Instant::now();
                let status = Command::new(env!("CARGO_BIN_EXE_dispatch"))
                    .args(["status", "--state-dir", state.to_str().unwrap()])
                    .args(format)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
                start.elapsed()
            })
            .collect();
        samples.sort();
        println!(
            "dispatch status {} on {units} units ({} nodes): median {:.0} ms, max {:.0} ms over 10 runs",
            format.join(" "),
            plan.counts.nodes,
            samples[5].as_secs_f64() * 1000.0,
            samples[9].as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}
