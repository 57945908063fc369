//! The dispatcher driven through [`execute`] with scripted node results and the no-op runtime:
//! no Docker, no git, the real journal. Each test scripts what nodes answer and asserts what a
//! user would see (unit outcomes and reasons) and what the journal recorded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::error::Step;
use super::*;
use crate::forge::local::LocalForge;
use crate::forge::ForgeError;
use crate::runtime::noop::Noop;
use crate::runtime::ContainerSpec;
use crate::state::views::{EventRow, UnitRow};
use crate::state::Db;
use crate::vocab::{NodeKind, NodeStatus};
use node::{NodeCtx, NodeResult};

/// What a scripted node answers: by its id and attempt.
type Answer = dyn Fn(&str, u32) -> Option<NodeResult> + Send + Sync;

/// Node handlers that answer as scripted (else like a successful node: the agent changed the
/// repository); container nodes run a no-op container that takes a moment. Every start is
/// noted with the re-attach it was given.
struct Script {
    answer: Box<Answer>,
    starts: Mutex<Vec<(String, u32, Option<String>)>>,
    /// Nodes whose id ends so wait for the forced stop (a second signal) before answering.
    hold: Option<&'static str>,
    held: mpsc::UnboundedSender<String>,
}

impl NodeRunner<Noop, LocalForge> for Arc<Script> {
    async fn run(&self, ctx: NodeCtx<Noop, LocalForge>) -> NodeResult {
        self.starts.lock().expect("not poisoned").push((
            ctx.node.clone(),
            ctx.attempt,
            ctx.reattach.clone(),
        ));
        if self.hold.is_some_and(|h| ctx.node.ends_with(h)) {
            let _ = self.held.send(ctx.node.clone());
            let mut cancel = ctx.cancel.clone();
            let _ = cancel.wait_for(|stop| *stop).await;
            return NodeResult::Stop {
                outcome: Outcome::Cancelled,
                reason: "agent stopped by Ctrl-C".to_owned(),
                exit_code: None,
            };
        }
        if matches!(ctx.kind, NodeKind::Agent | NodeKind::Qa | NodeKind::Review) {
            let id = ctx
                .runtime
                .create(&ContainerSpec::default())
                .await
                .expect("noop create");
            let log = crate::runtime::Log {
                path: ctx.unit.meta_dir().join("noop.log"),
                limit: 1 << 20,
                idle: None,
                tap: None,
            };
            ctx.runtime
                .run(&id, None, &log, Duration::from_secs(60), ctx.cancel.clone())
                .await
                .expect("noop run");
            ctx.containers.push(id);
        }
        if let Some(answer) = (self.answer)(&ctx.node, ctx.attempt) {
            return answer;
        }
        NodeResult::Done {
            base: None,
            pr: None,
            outcome: (ctx.kind == NodeKind::Agent).then_some(Outcome::Changed),
        }
    }
}

/// A spec, its run and what the journal holds afterwards.
struct Harness {
    state: PathBuf,
    loaded: Arc<LoadedSpec>,
    plan: Arc<Plan>,
    journal: Journal,
}

impl Harness {
    async fn new(name: &str, spec: &str) -> Self {
        let loaded = crate::spec::load_text(
            std::path::Path::new("pipelines/dispatcher.yaml"),
            spec.to_owned(),
        )
        .expect("the spec is valid");
        let plan = Arc::new(plan::build(&loaded));
        let state =
            std::env::temp_dir().join(format!("dispatch-dispatcher-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let journal = Journal::start(&state).expect("the journal starts");
        record_run(
            &journal,
            "r1",
            "dispatcher.yaml",
            &plan,
            None,
            Default::default(),
        )
        .await
        .expect("the run is recorded");
        Self {
            state,
            loaded: Arc::new(loaded),
            plan,
            journal,
        }
    }

    /// Runs the plan (resuming `resumed`) with `script`, feeding `signals`.
    async fn run(
        &self,
        script: Arc<Script>,
        signals: mpsc::UnboundedReceiver<Signal>,
        resumed: Option<Vec<UnitRow>>,
    ) -> BTreeMap<String, (Outcome, Option<String>)> {
        let limits = Limits::new(&self.loaded.spec, |_, _| 0);
        let executor = Executor {
            loaded: self.loaded.clone(),
            runtime: Arc::new(Noop::with_delay(Duration::from_millis(2))),
            forge: Arc::new(LocalForge::new(
                self.state.join("forge"),
                self.journal.clone(),
            )),
            journal: self.journal.clone(),
            run_id: "r1".to_owned(),
            state_dir: self.state.clone(),
            options: RunOptions::default(),
            reporter: Arc::new(crate::report::Silent),
            runner: Arc::new(script),
            open_prs: Vec::new(),
        };
        execute(executor, &self.plan, limits, signals, resumed)
            .await
            .into_iter()
            .map(|r| (r.id, (r.outcome, r.reason)))
            .collect()
    }

    fn db(&self) -> Db {
        Db::open(&self.state).expect("the journal opens")
    }

    fn events(&self) -> Vec<EventRow> {
        self.db().events("r1").expect("events are readable")
    }

    /// The journal's status of a node.
    fn status(&self, node: &str) -> (NodeStatus, i64) {
        self.db()
            .units("r1")
            .expect("units are readable")
            .into_iter()
            .flat_map(|u| u.nodes)
            .find(|n| n.id == node)
            .map(|n| (n.status, n.attempts))
            .expect("the node is in the journal")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn script(answer: impl Fn(&str, u32) -> Option<NodeResult> + Send + Sync + 'static) -> Arc<Script> {
    let (held, _) = mpsc::unbounded_channel();
    Arc::new(Script {
        answer: Box::new(answer),
        starts: Mutex::new(Vec::new()),
        hold: None,
        held,
    })
}

fn no_signals() -> mpsc::UnboundedReceiver<Signal> {
    mpsc::unbounded_channel().1
}

fn stop(outcome: Outcome, reason: &str) -> Option<NodeResult> {
    Some(NodeResult::Stop {
        outcome,
        reason: reason.to_owned(),
        exit_code: None,
    })
}

/// A node that could not reach the engine (transient: retried).
fn unreachable_engine(why: &str) -> Option<NodeResult> {
    Some(NodeResult::Failed(Step::Container.runtime()(
        crate::runtime::RuntimeError::Unreachable(why.to_owned()),
    )))
}

const QA_AND_PUBLISH: &str = r#"
version: 1
name: dispatcher
defaults: { org: core }
jobs:
  - id: j
    task: t
    qa: [{ run: 'true' }]
    fix_attempts: 1
    repos: [a, b]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qa_failure_goes_back_to_the_agent_once_and_the_fix_lands() {
    let h = Harness::new("fix", QA_AND_PUBLISH).await;
    let script = script(|node, attempt| match (node, attempt) {
        ("j/core/a:qa", 1) => Some(NodeResult::QaFailed {
            step: "`true` exited with code 1".to_owned(),
            tail: "not ok".to_owned(),
        }),
        ("j/core/b:qa", _) => Some(NodeResult::QaFailed {
            step: "`true` exited with code 1".to_owned(),
            tail: "never ok".to_owned(),
        }),
        _ => None,
    });
    let results = h.run(script.clone(), no_signals(), None).await;
    assert_eq!(results["j/core/a"].0, Outcome::Changed);
    let (outcome, reason) = &results["j/core/b"];
    assert_eq!(*outcome, Outcome::QaFailed, "one fix attempt only");
    assert_eq!(
        reason.as_deref(),
        Some("`true` exited with code 1\nnever ok")
    );
    let starts = script.starts.lock().expect("not poisoned").clone();
    let agent_runs = |unit: &str| {
        starts
            .iter()
            .filter(|(n, _, _)| n == &format!("j/core/{unit}:agent"))
            .map(|(_, attempt, _)| *attempt)
            .collect::<Vec<_>>()
    };
    assert_eq!(agent_runs("a"), [1, 2], "the agent ran again as attempt 2");
    assert_eq!(agent_runs("b"), [1, 2]);
    assert_eq!(h.status("j/core/a:agent"), (NodeStatus::Done, 2));
    assert_eq!(h.status("j/core/b:publish").0, NodeStatus::Skipped);
    let resets: Vec<String> = h
        .events()
        .into_iter()
        .filter(|e| e.kind == "reset")
        .filter_map(|e| e.node)
        .collect();
    assert_eq!(
        resets.iter().filter(|n| n.starts_with("j/core/a:")).count(),
        2,
        "agent and qa of a went back: {resets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_skips_the_rest_of_its_unit_and_units_that_need_it_only() {
    let spec = r#"
version: 1
name: dispatcher
defaults: { org: core }
jobs:
  - id: first
    task: t
    qa: [{ run: 'true' }]
    repos: [x, y]
  - id: then
    task: t
    qa: []
    needs: [first]
    repos: [x, y]
"#;
    let h = Harness::new("needs", spec).await;
    let script = script(|node, _| match node {
        "first/core/x:agent" => stop(Outcome::AgentFailed, "agent exited with code 7"),
        _ => None,
    });
    let results = h.run(script.clone(), no_signals(), None).await;
    assert_eq!(
        results["first/core/x"],
        (
            Outcome::AgentFailed,
            Some("agent exited with code 7".to_owned())
        )
    );
    assert_eq!(results["first/core/y"].0, Outcome::Changed);
    let (outcome, reason) = &results["then/core/x"];
    assert_eq!(*outcome, Outcome::Skipped);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("needs first/core/x:") && r.contains("agent_failed")),
        "{reason:?}"
    );
    assert_eq!(
        results["then/core/y"].0,
        Outcome::Changed,
        "its own repo's unit passed"
    );
    assert_eq!(h.status("first/core/x:qa").0, NodeStatus::Skipped);
    let units = h.db().units("r1").expect("readable");
    let agent = units[0]
        .nodes
        .iter()
        .find(|n| n.kind == NodeKind::Agent)
        .expect("agent");
    assert_eq!(
        (agent.outcome, agent.reason.as_deref()),
        (Some(Outcome::AgentFailed), Some("agent exited with code 7")),
        "the outcome is its own column, not inside the reason"
    );
    assert!(
        !script
            .starts
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|(n, _, _)| n.starts_with("then/core/x")),
        "a skipped unit runs nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_after_a_backoff_and_a_decided_end_is_not() {
    let spec = r#"
version: 1
name: dispatcher
defaults: { org: core, retries: 1 }
jobs:
  - id: j
    task: t
    qa: []
    repos: [flaky, down, blocked]
"#;
    let h = Harness::new("retry", spec).await;
    let script = script(|node, attempt| match (node, attempt) {
        ("j/core/flaky:agent", 1) => unreachable_engine("engine hiccup"),
        ("j/core/down:agent", _) => unreachable_engine("engine down"),
        ("j/core/blocked:agent", _) => stop(Outcome::Blocked, "Which port?"),
        _ => None,
    });
    let results = h.run(script.clone(), no_signals(), None).await;
    assert_eq!(results["j/core/flaky"].0, Outcome::Changed);
    let (outcome, reason) = &results["j/core/down"];
    assert_eq!(
        *outcome,
        Outcome::InfraError,
        "retries: 1 gives two attempts"
    );
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.ends_with("cannot reach the Docker engine: engine down")),
        "{reason:?}"
    );
    assert_eq!(results["j/core/blocked"].0, Outcome::Blocked);
    assert_eq!(h.status("j/core/down:agent"), (NodeStatus::Failed, 2));
    assert_eq!(h.status("j/core/blocked:agent"), (NodeStatus::Failed, 1));
    let retry = h
        .events()
        .into_iter()
        .find(|e| e.kind == "reset" && e.node.as_deref() == Some("j/core/flaky:agent"))
        .and_then(|e| e.detail)
        .expect("the retry is journaled");
    assert!(retry.starts_with("retrying in 1."), "{retry}");
}

#[tokio::test(start_paused = true)]
async fn the_dispatcher_retries_only_what_the_verdict_allows() {
    let spec = r#"
version: 1
name: dispatcher
defaults: { org: core }
jobs:
  - { id: j, task: t, qa: [], retries: 1, repos: [denied, flaky] }
"#;
    let h = Harness::new("verdicts", spec).await;
    let script = script(|node, _| {
        let source = match node {
            "j/core/denied:publish" => ForgeError::Unauthorized {
                forge: "forgejo".to_owned(),
                hint: "HTTP 401; check FORGEJO_TOKEN".to_owned(),
            },
            "j/core/flaky:publish" => ForgeError::Transient {
                forge: "forgejo".to_owned(),
                what: "POST /repos/core/flaky/pulls".to_owned(),
                message: "HTTP 503".to_owned(),
            },
            _ => return None,
        };
        Some(NodeResult::Failed(Step::Publish.forge()(source)))
    });
    let results = h.run(script.clone(), no_signals(), None).await;
    assert_eq!(
        results["j/core/denied"],
        (
            Outcome::InfraError,
            Some("publish: the forgejo forge refused dispatch's credentials: HTTP 401; check FORGEJO_TOKEN".to_owned())
        )
    );
    assert_eq!(
        results["j/core/flaky"],
        (
            Outcome::InfraError,
            Some("publish: forgejo: POST /repos/core/flaky/pulls failed: HTTP 503".to_owned())
        )
    );
    let runs = |node: &str| {
        script
            .starts
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(n, _, _)| n == node)
            .count()
    };
    assert_eq!(runs("j/core/denied:publish"), 1, "a 401 is not retried");
    assert_eq!(
        runs("j/core/flaky:publish"),
        2,
        "a 503 is retried as `retries: 1` allows"
    );
    assert_eq!(
        runs("j/core/flaky:agent"),
        1,
        "only the failed node runs again"
    );
    let units = h.db().units("r1").expect("readable");
    let publish = units[0]
        .nodes
        .iter()
        .find(|n| n.kind == NodeKind::Publish)
        .expect("publish");
    assert_eq!(publish.outcome, Some(Outcome::InfraError));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_signal_lets_running_nodes_finish_and_a_second_stops_them() {
    let spec = r#"
version: 1
name: dispatcher
defaults: { org: core }
limits: { total: 1 }
jobs:
  - id: j
    task: t
    qa: []
    repos: [a, b, c]
"#;
    let h = Harness::new("cancel", spec).await;
    let (held, mut holding) = mpsc::unbounded_channel();
    let script = Arc::new(Script {
        answer: Box::new(|_, _| None),
        starts: Mutex::new(Vec::new()),
        hold: Some(":agent"),
        held,
    });
    let (signal, signals) = mpsc::unbounded_channel();
    let run = h.run(script.clone(), signals, None);
    let press = async {
        let node = holding.recv().await.expect("an agent runs");
        signal.send(Signal::Interrupt).expect("the run listens");
        // The agent still runs: the first signal does not stop it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        signal.send(Signal::Interrupt).expect("the run listens");
        node
    };
    let (results, held_node) = tokio::join!(run, press);
    assert!(
        results.values().all(|(o, _)| *o == Outcome::Cancelled),
        "{results:?}"
    );
    let unit = held_node.trim_end_matches(":agent");
    assert_eq!(
        results[unit].1.as_deref(),
        Some("agent stopped by Ctrl-C"),
        "the running agent was stopped by the second signal"
    );
    let others: Vec<&String> = results.keys().filter(|u| *u != unit).collect();
    for other in others {
        assert_eq!(
            results[other].1.as_deref(),
            Some("the run was stopped before this unit finished")
        );
    }
    let agents_started = script
        .starts
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|(n, _, _)| n.ends_with(":agent"))
        .count();
    assert_eq!(agents_started, 1, "nothing starts after the first signal");
    let cancels: Vec<Option<String>> = h
        .events()
        .into_iter()
        .filter(|e| e.kind == "cancel")
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        cancels,
        [Some("signal".to_owned()), Some("forced".to_owned())],
        "the reason escalates once per signal"
    );
    let run = h.db().run(Some("r1")).expect("readable").expect("the run");
    assert_eq!(run.status, RunStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_keeps_what_ended_and_collects_the_container_of_a_running_agent() {
    let spec = r#"
version: 1
name: dispatcher
defaults: { org: core }
jobs:
  - id: j
    task: t
    qa: [{ run: 'true' }]
    repos: [done, running, failed]
"#;
    let h = Harness::new("resume", spec).await;
    // What a runner killed mid-run left: unit `done` finished; `running`'s agent ran in
    // container c1; `failed`'s agent failed before its unit's outcome was recorded.
    let event = |node: &str, status, outcome| RunEvent::NodeFinished {
        node: node.to_owned(),
        status,
        outcome,
        exit_code: None,
        reason: outcome.map(|_| "agent exited with code 7".to_owned()),
    };
    let started = |node: &str| RunEvent::NodeStarted {
        node: node.to_owned(),
        attempt: 1,
        pool: None,
    };
    let mut events = Vec::new();
    for node in [
        "j/core/done:prep",
        "j/core/done:agent",
        "j/core/done:qa",
        "j/core/done:publish",
    ] {
        events.push(started(node));
        events.push(event(node, NodeStatus::Done, None));
    }
    events.push(RunEvent::UnitFinished {
        unit: "j/core/done".to_owned(),
        outcome: Outcome::Changed,
        reason: None,
        pr: Some("local:core/done#1".to_owned()),
        held: None,
    });
    for node in ["j/core/running:prep", "j/core/failed:prep"] {
        events.push(started(node));
        events.push(event(node, NodeStatus::Done, None));
    }
    events.push(started("j/core/running:agent"));
    events.push(RunEvent::ContainerCreated {
        node: "j/core/running:agent".to_owned(),
        container: "c1".to_owned(),
    });
    events.push(started("j/core/failed:agent"));
    events.push(event(
        "j/core/failed:agent",
        NodeStatus::Failed,
        Some(Outcome::AgentFailed),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel();
    h.journal.record_then("r1", events, move |written| {
        let _ = tx.send(written);
    });
    rx.await.expect("answered").expect("committed");
    let rows = h.db().units("r1").expect("readable");

    let script = script(|_, _| None);
    let results = h.run(script.clone(), no_signals(), Some(rows)).await;
    assert_eq!(
        results["j/core/done"].0,
        Outcome::Changed,
        "a finished unit keeps its outcome"
    );
    assert_eq!(results["j/core/running"].0, Outcome::Changed);
    assert_eq!(
        results["j/core/failed"],
        (
            Outcome::AgentFailed,
            Some("agent exited with code 7".to_owned())
        ),
        "the failed node's own outcome"
    );
    let starts = script.starts.lock().expect("not poisoned").clone();
    let ran: Vec<&str> = starts.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        ran.iter()
            .filter(|n| n.starts_with("j/core/running"))
            .count(),
        3,
        "agent, qa, publish of `running` (and nothing of the others): {ran:?}"
    );
    assert!(
        ran.iter().all(|n| n.starts_with("j/core/running")),
        "{ran:?}"
    );
    let agent = starts
        .iter()
        .find(|(n, _, _)| n == "j/core/running:agent")
        .expect("the agent ran");
    assert_eq!(
        (agent.1, agent.2.as_deref()),
        (1, Some("c1")),
        "the same attempt, collecting the recorded container"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_never_shows_more_running_than_the_total_allows() {
    let mut spec = String::from(
        r#"
version: 1
name: dispatcher
defaults: { org: core }
limits: { total: 2 }
jobs:
  - id: j
    task: t
    qa: [{ run: 'true' }]
    review: { agent: "codex:review" }
    repos:
"#,
    );
    for i in 0..12 {
        spec.push_str(&format!("      - r{i:02}\n"));
    }
    let h = Harness::new("limits", &spec).await;
    let results = h.run(script(|_, _| None), no_signals(), None).await;
    assert!(results.values().all(|(o, _)| o.is_success()), "{results:?}");
    let (mut running, mut most) = (0, 0);
    for event in h.events() {
        let container = event
            .node
            .as_deref()
            .is_some_and(|n| [":agent", ":qa", ":review"].iter().any(|k| n.ends_with(k)));
        match event.kind.as_str() {
            "started" if container => {
                running += 1;
                most = most.max(running);
            }
            "done" if container => running -= 1,
            _ => {}
        }
    }
    assert_eq!(running, 0, "every container node that started ended");
    assert_eq!(most, 2, "total 2, and the nodes did overlap");
}

/// Records in `h`'s journal an earlier run `r0` whose publish opened a PR for `j/core/a` and
/// left it open.
async fn earlier_run_opened_a_pr(h: &Harness) {
    record_run(
        &h.journal,
        "r0",
        "dispatcher.yaml",
        &h.plan,
        None,
        Default::default(),
    )
    .await
    .expect("the earlier run is recorded");
    let events = vec![
        RunEvent::NodeFinished {
            node: "j/core/a:publish".to_owned(),
            status: NodeStatus::Done,
            outcome: Some(Outcome::Changed),
            exit_code: None,
            reason: None,
        },
        RunEvent::PrOpened {
            unit: "j/core/a".to_owned(),
            pr: "local:core/a#1".to_owned(),
            origin: crate::vocab::PrOrigin::Opened,
        },
    ];
    for event in events {
        h.journal.record_now("r0", event).await.expect("recorded");
    }
}

/// The nodes `script` started, in order.
fn nodes_started(script: &Script) -> Vec<String> {
    let starts = script.starts.lock().expect("not poisoned");
    starts.iter().map(|(n, _, _)| n.clone()).collect()
}

/// What the scripted nodes of a run whose agents change nothing answer: publish (which only
/// runs to withdraw) says it closed the PR.
fn nothing_changes(node: &str, _: u32) -> Option<NodeResult> {
    match node {
        n if n.ends_with(":agent") => stop(Outcome::NoChanges, "the agent changed nothing"),
        n if n.ends_with(":publish") => stop(
            Outcome::NoChanges,
            "the agent changed nothing; closed PR local:core/a#1 of run r0",
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_changes_nothing_lets_publish_withdraw_only_a_pr_an_earlier_run_opened() {
    let h = Harness::new("withdraw", QA_AND_PUBLISH).await;
    earlier_run_opened_a_pr(&h).await;
    let script = script(nothing_changes);
    let results = h.run(script.clone(), no_signals(), None).await;
    assert_eq!(
        results["j/core/a"],
        (
            Outcome::NoChanges,
            Some("the agent changed nothing; closed PR local:core/a#1 of run r0".to_owned())
        )
    );
    assert_eq!(
        results["j/core/b"],
        (
            Outcome::NoChanges,
            Some("the agent changed nothing".to_owned())
        ),
        "no earlier PR: nothing to withdraw"
    );
    let ran = nodes_started(&script);
    assert!(ran.contains(&"j/core/a:publish".to_owned()), "{ran:?}");
    for skipped in ["j/core/a:qa", "j/core/b:qa", "j/core/b:publish"] {
        assert!(!ran.contains(&skipped.to_owned()), "{skipped}: {ran:?}");
        assert_eq!(h.status(skipped).0, NodeStatus::Skipped, "{skipped}");
    }
    assert_eq!(h.status("j/core/a:publish").0, NodeStatus::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_cut_short_by_a_crash_runs_again_on_resume() {
    let h = Harness::new("withdraw-resume", QA_AND_PUBLISH).await;
    earlier_run_opened_a_pr(&h).await;
    // What a runner killed while publish withdrew the PR left of unit `a`.
    let started = |node: &str| RunEvent::NodeStarted {
        node: node.to_owned(),
        attempt: 1,
        pool: None,
    };
    let finished =
        |node: &str, status, outcome: Option<Outcome>, reason: &str| RunEvent::NodeFinished {
            node: node.to_owned(),
            status,
            outcome,
            exit_code: None,
            reason: Some(reason.to_owned()).filter(|r| !r.is_empty()),
        };
    let events = vec![
        started("j/core/a:prep"),
        finished("j/core/a:prep", NodeStatus::Done, None, ""),
        started("j/core/a:agent"),
        finished(
            "j/core/a:agent",
            NodeStatus::Done,
            Some(Outcome::NoChanges),
            "the agent changed nothing",
        ),
        finished(
            "j/core/a:qa",
            NodeStatus::Skipped,
            None,
            "the agent changed nothing",
        ),
        started("j/core/a:publish"),
    ];
    let (tx, rx) = tokio::sync::oneshot::channel();
    h.journal.record_then("r1", events, move |written| {
        let _ = tx.send(written);
    });
    rx.await.expect("answered").expect("committed");
    let rows = h.db().units("r1").expect("readable");
    let script = script(nothing_changes);
    let results = h.run(script.clone(), no_signals(), Some(rows)).await;
    assert_eq!(
        results["j/core/a"].1.as_deref(),
        Some("the agent changed nothing; closed PR local:core/a#1 of run r0")
    );
    let mut ran = nodes_started(&script);
    ran.retain(|n| n.starts_with("j/core/a"));
    assert_eq!(ran, ["j/core/a:publish"], "only publish runs again");
}
