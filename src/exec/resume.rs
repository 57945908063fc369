//! Taking over a run whose runner died (`dispatch resume`, and `retry`/`answer`, which reopen
//! units first): the dispatcher starts from what the journal recorded instead of from a plan
//! whose nodes are all pending.
//!
//! What is restored, node by node:
//! - `done`, `failed`, `skipped`, `cancelled`: kept; they do not run again;
//! - `running`: the runner died while it ran. It runs again as the same attempt; an agent or
//!   review node whose container the journal recorded collects that container instead
//!   (re-attached while it runs, its output read when it exited);
//! - `pending`, `ready`: run as in a fresh run.
//!
//! And unit by unit: the base prep resolved and the last QA failure (from the notes dispatch
//! keeps beside the workspace), the PR, the outcome if one was recorded (its remaining nodes
//! are skipped), what its finished nodes reached (an agent that ran to its end changed the
//! repository, a merge merged; an agent that changed nothing in a unit without an outcome
//! left publish to withdraw an earlier run's PR), the fix attempts its agent used. A failed node whose unit had
//! no outcome yet gives the unit its outcome (the node's own, recorded with it). Dependencies
//! still to wait for are counted again from the restored statuses.

use std::collections::HashMap;

use super::dispatcher::{Dispatcher, UnitPhase};
use super::node::{self, NodeRunner};
use crate::forge::{Forge, PrRef};
use crate::runtime::Runtime;
use crate::state::views::UnitRow;
use crate::vocab::{NodeKind, NodeStatus, Outcome};

/// A note dispatch keeps on a unit, trimmed; `None` when missing or empty.
fn note(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

impl<R: Runtime, F: Forge, N: NodeRunner<R, F>> Dispatcher<R, F, N> {
    /// Takes over the state the journal recorded (`rows`, the run's units with their nodes).
    pub(super) fn take_over(&mut self, rows: &[UnitRow]) {
        let by_id: HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut restored = Vec::new();
        for node in rows.iter().flat_map(|row| &row.nodes) {
            let Some(&i) = by_id.get(node.id.as_str()) else {
                continue;
            };
            let attempt = u32::try_from(node.attempts).unwrap_or(0);
            let (status, attempt, reattach) = match node.status {
                NodeStatus::Running => (
                    // It runs again as the same attempt, or its container is collected.
                    NodeStatus::Pending,
                    attempt.saturating_sub(1),
                    node.container_id
                        .clone()
                        .filter(|_| matches!(node.kind, NodeKind::Agent | NodeKind::Review)),
                ),
                NodeStatus::Ready => (NodeStatus::Pending, attempt, None),
                status => (status, attempt, None),
            };
            restored.push((i, status, attempt, reattach, node.agent.as_ref()));
        }
        for (i, status, attempt, reattach, agent) in restored {
            self.restore(i, status, attempt);
            self.nodes[i].reattach = reattach;
            if let Some(agent) = agent {
                // What its agent used so far counts on, and its session is continued.
                self.nodes[i].usage = agent.usage.clone();
                self.nodes[i].session = agent.session.clone().map(|id| node::Session {
                    id,
                    tokens: agent.session_tokens,
                });
            }
        }
        let rows: HashMap<&str, &UnitRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        for u in 0..self.units.len() {
            self.take_over_unit(u, rows.get(self.units[u].run.unit().id.as_str()).copied());
        }
        // Dependencies left to wait for.
        let mut waiting = vec![0usize; self.nodes.len()];
        for node in &self.nodes {
            let ok = match node.status {
                NodeStatus::Done => true,
                NodeStatus::Skipped => self.units[node.unit]
                    .phase
                    .outcome()
                    .is_none_or(Outcome::is_success),
                _ => false,
            };
            if !ok {
                for &d in &node.dependents {
                    waiting[d] += 1;
                }
            }
        }
        for (node, w) in self.nodes.iter_mut().zip(waiting) {
            node.waiting = w;
        }
    }

    fn take_over_unit(&mut self, u: usize, row: Option<&UnitRow>) {
        let run = self.units[u].run.clone();
        let nodes = self.units[u].nodes.clone();
        let progress = &mut self.units[u].progress;
        progress.base = note(&run.note(node::BASE_NOTE));
        progress.qa_failure = std::fs::read_to_string(run.note(node::QA_FAILURE_NOTE)).ok();
        let mut decided = None;
        if let Some(row) = row {
            progress.pr = row.pr.as_deref().and_then(PrRef::from_reference);
            if let Some(outcome) = row.outcome {
                decided = Some((outcome, row.reason.clone().unwrap_or_default()));
            }
            // A node that failed before its unit's outcome was recorded.
            if decided.is_none() {
                decided = row
                    .nodes
                    .iter()
                    .find(|n| n.status == NodeStatus::Failed)
                    .map(|n| {
                        (
                            n.outcome.unwrap_or(Outcome::InfraError),
                            n.reason.clone().unwrap_or_default(),
                        )
                    });
            }
        }
        for &n in &nodes {
            let node = &self.nodes[n];
            let recorded = row.and_then(|row| row.nodes.iter().find(|r| r.id == node.id));
            match (node.kind, node.status) {
                // An agent that changed nothing, whose unit's publish withdraws an earlier
                // run's PR (the unit has no outcome yet).
                (NodeKind::Agent, NodeStatus::Done)
                    if recorded.is_some_and(|r| r.outcome == Some(Outcome::NoChanges)) =>
                {
                    progress.no_changes = recorded.and_then(|r| r.reason.clone());
                }
                (NodeKind::Agent, NodeStatus::Done) => progress.reached = Some(Outcome::Changed),
                (NodeKind::Qa, NodeStatus::Done) => progress.qa_passed = true,
                (NodeKind::Merge, NodeStatus::Done) => progress.reached = Some(Outcome::Merged),
                _ => {}
            }
            if node.kind == NodeKind::Agent {
                progress.fixes_left = progress
                    .fixes_left
                    .saturating_sub(node.attempt.saturating_sub(1));
            }
        }
        if let Some((outcome, reason)) = decided {
            self.units[u].phase = UnitPhase::Decided { outcome, reason };
            for &n in &nodes {
                if !self.nodes[n].status.is_terminal() {
                    let attempt = self.nodes[n].attempt;
                    self.restore(n, NodeStatus::Skipped, attempt);
                    self.nodes[n].reattach = None;
                }
            }
        }
    }
}
