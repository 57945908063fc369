//! What a run shows: live progress (indicatif bars on a terminal, plain lines otherwise), the
//! summary table of units by outcome, the JSON result, and the documents for CI that `run` and
//! `status` print from a run's journal rows: JUnit XML ([`junit`]) and a Markdown summary
//! ([`markdown`]).
//!
//! Node and unit ids, reasons and PR references come from agents, repositories and forges:
//! progress and the summary show them through [`text::shown`], so none of them can drive the
//! terminal; the JSON result keeps them exact; the JUnit and Markdown documents escape them
//! for their format, so none can break out of its element or cell.

#[cfg(test)]
mod fixtures;
pub mod junit;
pub mod markdown;
pub mod text;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::exec::{Reporter, UnitResult};
use crate::spec::problem::plural;
use crate::state::views::RunRow;
use crate::state::RunEvent;
use crate::vocab::{NodeStatus, Outcome};
use text::shown;

/// Plain lines, one per event, for logs and pipes.
pub struct Lines {
    start: Instant,
    started: Mutex<HashMap<String, Instant>>,
}

impl Lines {
    /// A reporter printing to stdout.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            started: Mutex::new(HashMap::new()),
        }
    }

    fn stamp(&self) -> String {
        let secs = self.start.elapsed().as_secs();
        format!(
            "[{:02}:{:02}:{:02}]",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

/// The first line of a reason, shown.
fn first_line(text: &str) -> std::borrow::Cow<'_, str> {
    shown(text.lines().next().unwrap_or(""))
}

impl Reporter for Lines {
    fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::NodeStarted { node, .. } => {
                if let Ok(mut started) = self.started.lock() {
                    started.insert(node.clone(), Instant::now());
                }
                println!("{} start  {}", self.stamp(), shown(node));
            }
            RunEvent::NodeFinished {
                node,
                status,
                reason,
                ..
            } => {
                let took = self
                    .started
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(node))
                    .map(|t| format!(" in {:.1}s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                match reason {
                    Some(reason) => println!(
                        "{} {:<6} {}{took}: {}",
                        self.stamp(),
                        status.as_str(),
                        shown(node),
                        first_line(reason)
                    ),
                    None => println!(
                        "{} {:<6} {}{took}",
                        self.stamp(),
                        status.as_str(),
                        shown(node)
                    ),
                }
            }
            RunEvent::NodeReset { node, cause } => {
                let cause = cause.to_string();
                println!("{} reset  {}: {}", self.stamp(), shown(node), shown(&cause));
            }
            RunEvent::UnitFinished {
                unit, outcome, pr, ..
            } => println!(
                "{} unit   {} -> {outcome}{}",
                self.stamp(),
                shown(unit),
                pr.as_ref()
                    .map(|p| format!(" ({})", shown(p)))
                    .unwrap_or_default()
            ),
            RunEvent::Cancelling { reason } => println!("{} {}", self.stamp(), reason.describe()),
            RunEvent::AgentReported { node, report, .. } => {
                let mut usage = crate::agents::output::Usage::default();
                usage.add_report(report);
                println!("{} usage  {}: {}", self.stamp(), shown(node), usage.brief());
            }
            RunEvent::BudgetReserved { unit, usd, tokens } => println!(
                "{} budget {}: holds {}",
                self.stamp(),
                shown(unit),
                held(*usd, *tokens)
            ),
            RunEvent::RolloutHalted { reason } => println!("{} {}", self.stamp(), shown(reason)),
            RunEvent::ContainerCreated { .. }
            | RunEvent::CacheHit { .. }
            | RunEvent::PrOpened { .. }
            | RunEvent::BudgetReleased { .. }
            | RunEvent::RunFinished { .. } => {}
        }
    }
}

/// What a budget reservation holds, as a person reads it: `$0.40`, `20000 tokens`, or both.
fn held(usd: f64, tokens: u64) -> String {
    match (usd > 0.0, tokens > 0) {
        (true, true) => format!("${usd:.2} and {tokens} tokens"),
        (false, true) => format!("{tokens} tokens"),
        _ => format!("${usd:.2}"),
    }
}

/// An overall bar and one line per running node with its elapsed time.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    /// Bars on stderr for `units` units.
    pub fn new(units: usize) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(units as u64));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} units {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Self {
            multi,
            overall,
            running: Mutex::new(HashMap::new()),
        }
    }
}

impl Reporter for Bars {
    fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::NodeStarted { node, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_message(shown(node).into_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                if let Ok(mut running) = self.running.lock() {
                    running.insert(node.clone(), bar);
                }
            }
            RunEvent::NodeFinished {
                node,
                status,
                reason,
                ..
            } => {
                if let Some(bar) = self.running.lock().ok().and_then(|mut r| r.remove(node)) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if *status == NodeStatus::Failed {
                    let _ = self.multi.println(format!(
                        "  failed {}: {}",
                        shown(node),
                        reason.as_deref().map(first_line).unwrap_or_default()
                    ));
                }
            }
            RunEvent::NodeReset { node, cause } => {
                let cause = cause.to_string();
                let _ = self
                    .multi
                    .println(format!("  reset  {}: {}", shown(node), shown(&cause)));
            }
            RunEvent::UnitFinished { unit, outcome, .. } => {
                self.overall.inc(1);
                let _ = self.multi.println(format!("{} -> {outcome}", shown(unit)));
            }
            RunEvent::Cancelling { reason } => {
                let _ = self.multi.println(reason.describe());
            }
            RunEvent::RolloutHalted { reason } => {
                let _ = self.multi.println(shown(reason));
            }
            RunEvent::AgentReported { .. }
            | RunEvent::ContainerCreated { .. }
            | RunEvent::CacheHit { .. }
            | RunEvent::PrOpened { .. }
            | RunEvent::BudgetReserved { .. }
            | RunEvent::BudgetReleased { .. }
            | RunEvent::RunFinished { .. } => {}
        }
    }
}

/// Shows nothing but why the run stops early (on stderr): for `--output json`, `junit` and
/// `markdown`, whose stdout is that document alone.
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, event: &RunEvent) {
        if let RunEvent::Cancelling { reason } = event {
            eprintln!("{}", reason.describe());
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.overall.finish_and_clear();
    }
}

/// The summary table: units grouped by outcome, with PRs and log directories (every text
/// that came from outside [`text::shown`]).
pub fn summary(results: &[UnitResult]) -> String {
    let mut out = String::new();
    let mut outcomes: Vec<Outcome> = results.iter().map(|r| r.outcome).collect();
    outcomes.sort();
    outcomes.dedup();
    let width = results
        .iter()
        .map(|r| shown(&r.id).len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "\n{:<13} {:<width$}  {:<28} LOGS",
        "OUTCOME", "UNIT", "PR"
    );
    for outcome in &outcomes {
        for r in results.iter().filter(|r| r.outcome == *outcome) {
            let _ = writeln!(
                out,
                "{:<13} {:<width$}  {:<28} {}",
                outcome.as_str(),
                shown(&r.id),
                shown(r.pr.as_deref().unwrap_or("-")),
                shown(&r.meta.display().to_string())
            );
            if let Some(reason) = &r.reason {
                if !r.outcome.is_success() {
                    let _ = writeln!(out, "{:<13} {}", "", first_line(reason));
                }
            }
            if let Some(usage) = &r.usage {
                let _ = writeln!(out, "{:<13} agents: {}", "", usage.brief());
            }
        }
    }
    let counts: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                results.iter().filter(|r| r.outcome == *o).count(),
                o
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\n{} {}: {}",
        results.len(),
        plural(results.len(), "unit"),
        counts.join(", ")
    );
    if let Some(total) = total_usage(results.iter().filter_map(|r| r.usage.as_ref())) {
        let _ = writeln!(out, "agents used {}", total.brief());
    }
    out
}

/// The machine-readable result of a run.
#[derive(Debug, Serialize)]
pub struct RunJson<'a> {
    /// Run id.
    pub run: &'a str,
    /// Spec name.
    pub spec: &'a str,
    /// State directory.
    pub state_dir: String,
    /// Whether every unit succeeded.
    pub success: bool,
    /// Counts per outcome.
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    /// What the agents of every unit used, when any reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::agents::output::Usage>,
    /// Every unit.
    pub units: &'a [UnitResult],
}

/// The sum of what the units' agents used; `None` when none reported.
pub fn total_usage<'a>(
    usages: impl Iterator<Item = &'a crate::agents::output::Usage>,
) -> Option<crate::agents::output::Usage> {
    let mut total = crate::agents::output::Usage::default();
    for usage in usages {
        total.add(usage);
    }
    (total.runs > 0).then_some(total)
}

/// A run's counts per outcome, as `runs`, `status` and the Markdown summary show them:
/// `2 changed, 1 qa_failed` (`running` for units without an outcome yet).
pub fn outcome_counts(run: &RunRow) -> String {
    run.outcomes
        .iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect::<Vec<_>>()
        .join(", ")
}
