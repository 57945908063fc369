//! Scheduler overhead (issue 3): 100,000 nodes (20,000 units x prep, agent, qa, publish,
//! review) through the real dispatcher and the real SQLite journal, with the in-process no-op
//! runtime standing in for Docker and host nodes (git, forge) answering at once.
//! Run with `cargo bench --bench scheduler`; prints wall time and peak RSS, asserts nothing
//! about time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch::exec::node::{NodeCtx, NodeResult, NodeRunner};
use dispatch::exec::{self, limits::Limits, Reporter, RunOptions};
use dispatch::forge::local::LocalForge;
use dispatch::plan;
use dispatch::runtime::noop::Noop;
use dispatch::runtime::{ContainerSpec, Runtime, LABEL_NODE, LABEL_RUN};
use dispatch::state::{Journal, RunEvent};
use dispatch::vocab::NodeKind;

/// Host nodes answer at once; container nodes go through the no-op runtime.
struct ContainersOnly;

impl NodeRunner<Noop, LocalForge> for ContainersOnly {
    async fn run(&self, ctx: NodeCtx<Noop, LocalForge>) -> NodeResult {
        if matches!(ctx.kind, NodeKind::Agent | NodeKind::Qa | NodeKind::Review) {
            let spec = ContainerSpec {
                name: ctx.node.clone(),
                image: "noop".to_owned(),
                argv: vec!["true".to_owned()],
                labels: [
                    (LABEL_RUN.to_owned(), ctx.run_id.clone()),
                    (LABEL_NODE.to_owned(), ctx.node.clone()),
                ]
                .into_iter()
                .collect(),
                ..ContainerSpec::default()
            };
            let id = ctx.runtime.create(&spec).await.expect("noop create");
            ctx.runtime
                .run(
                    &id,
                    None,
                    &dispatch::runtime::Log {
                        path: std::env::temp_dir().join("dispatch-bench-noop.log"),
                        limit: 1 << 20,
                        idle: None,
                        tap: None,
                    },
                    Duration::from_secs(60),
                    ctx.cancel.clone(),
                )
                .await
                .expect("noop run");
            ctx.runtime.remove(&id).await.expect("noop remove");
        }
        NodeResult::Done {
            base: Some("main".to_owned()),
            pr: None,
            outcome: None,
        }
    }
}

struct Quiet;

impl Reporter for Quiet {
    fn event(&self, _: &RunEvent) {}
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let units = 20_000;
    let mut text = String::from(
        "version: 1\nname: bench\ndefaults: { org: core }\nlimits: { total: 8 }\njobs:\n  - id: bench\n    task: t\n    qa: [{ run: 'true' }]\n    review: { agent: \"codex:review\" }\n    repos:\n",
    );
    for i in 0..units {
        text.push_str(&format!("      - r{i:05}\n"));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let loaded = dispatch::spec::load_text(&root.join("pipelines/bench-scheduler.yaml"), text)
        .expect("valid");
    let plan = Arc::new(plan::build(&loaded));
    let state =
        std::env::temp_dir().join(format!("dispatch-bench-scheduler-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, results) = rt.block_on(async {
        let journal = Journal::start(&state).unwrap();
        let start = Instant::now();
        exec::record_run(
            &journal,
            "bench",
            "bench.yaml",
            &plan,
            None,
            Default::default(),
        )
        .await
        .unwrap();
        let recorded = start.elapsed();
        let limits = Limits::new(&loaded.spec, |_, _| 0);
        let executor = exec::Executor {
            loaded: Arc::new(loaded),
            runtime: Arc::new(Noop::new()),
            forge: Arc::new(LocalForge::new(state.join("forge"), journal.clone())),
            journal,
            run_id: "bench".to_owned(),
            state_dir: state.clone(),
            options: RunOptions::default(),
            reporter: Arc::new(Quiet),
            runner: Arc::new(ContainersOnly),
            open_prs: Vec::new(),
        };
        let (_tx, interrupts) = tokio::sync::mpsc::unbounded_channel();
        let results = exec::execute(executor, &plan, limits, interrupts, None).await;
        println!(
            "recording the plan in the journal took {:.2} s of it",
            recorded.as_secs_f64()
        );
        (start.elapsed(), results)
    });
    assert!(
        results.iter().all(|r| r.outcome.is_success()),
        "every unit succeeds"
    );
    println!(
        "scheduler: {} units, {} nodes at total 8 with the no-op runtime and the SQLite journal: {:.2} s, peak RSS {:.0} MiB",
        results.len(),
        plan.counts.nodes,
        elapsed.as_secs_f64(),
        peak_rss_mib()
    );
    let _ = std::fs::remove_dir_all(&state);
}
