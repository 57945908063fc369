//! A run for the executor's tests: a spec's plan executed to the end with a stand-in
//! runtime and node runner, in a fresh state directory, against the local forge.

use std::path::PathBuf;
use std::sync::Arc;

use super::limits::Limits;
use super::node::NodeRunner;
use super::{execute, record_run, Executor, RunOptions, UnitResult};
use crate::forge::local::LocalForge;
use crate::runtime::noop::Noop;
use crate::state::Journal;

/// Runs the spec `text` (named `name`) as run `r1` and returns each unit's result and the
/// state directory (the caller reads the journal there, then removes it).
pub(crate) async fn run<N: NodeRunner<Noop, LocalForge>>(
    name: &str,
    text: String,
    runtime: Noop,
    runner: Arc<N>,
) -> (Vec<UnitResult>, PathBuf) {
    let loaded = crate::spec::load_text(&PathBuf::from(format!("pipelines/{name}.yaml")), text)
        .expect("the spec is valid");
    let plan = Arc::new(crate::plan::build(&loaded));
    let state = std::env::temp_dir().join(format!(
        "dispatch-exec-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&state);
    let journal = Journal::start(&state).expect("the journal starts");
    record_run(&journal, "r1", &format!("{name}.yaml"), &plan)
        .await
        .expect("the run is recorded");
    let limits = Limits::new(&loaded.spec, |_, _| 0);
    let executor = Executor {
        loaded: Arc::new(loaded),
        runtime: Arc::new(runtime),
        forge: Arc::new(LocalForge::new(state.join("forge"), journal.clone())),
        journal,
        run_id: "r1".to_owned(),
        state_dir: state.clone(),
        options: RunOptions::default(),
        reporter: Arc::new(crate::report::Lines::new()),
        runner,
    };
    let (_interrupt, interrupts) = tokio::sync::mpsc::unbounded_channel();
    (
        execute(executor, &plan, limits, interrupts, None).await,
        state,
    )
}
