//! Rollout: the order in which a run's units start, decided without I/O like the limits.
//!
//! A spec's `rollout:` splits the units, in plan order, into waves: `canary` units first, then
//! batches of `batch` units (without `batch`, the rest is one wave). A unit's first node starts
//! only once every unit of the waves before it finished and `pause` passed since the last of
//! them did. Once `halt_if.min_units` units finished and more than `halt_if.failure_rate` of
//! them failed, the rollout halts: no unit that has not started starts any more (the
//! dispatcher holds them back), and those that run finish. Publish may happen only inside the
//! `windows` (UTC).
//!
//! Invariants:
//! - waves depend only on the plan's order and the spec, so a resumed run has the same waves
//!   and, from the units the journal shows finished, resumes at the right one;
//! - times are wall-clock milliseconds (the journal's clock);
//! - a unit counts for the halt once, when it finishes; a failure is `agent_failed`,
//!   `qa_failed`, `timed_out`, `infra_error` or `budget_exceeded` (`blocked` and
//!   `needs_review` wait for people, `skipped` and `cancelled` never ran to an end).

use crate::spec::model::{Rollout as Settings, Window};
use crate::vocab::Outcome;

/// Whether a unit may start now.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Now.
    Now,
    /// At this wall-clock millisecond (a pause is running).
    At(u64),
    /// Once units of an earlier wave finished.
    Wait,
    /// Never in this run: the rollout halted (why).
    Halted(String),
}

/// One wave's progress.
#[derive(Clone, Debug)]
struct Wave {
    /// Units of it not finished yet.
    left: usize,
    /// When its last unit finished.
    ended_at: Option<u64>,
    /// Where the checks of its PRs are (`wait_for_checks`).
    checks: Checks,
}

/// Where the checks of a finished wave's PRs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Checks {
    /// Not asked yet.
    Unasked,
    /// Being waited for.
    Asked,
    /// All green (or not needed).
    Green,
}

/// The dispatcher's rollout state.
#[derive(Clone, Debug, Default)]
pub struct Rollout {
    settings: Settings,
    wave_of: Vec<usize>,
    waves: Vec<Wave>,
    finished: u32,
    failed: u32,
    halted: Option<String>,
    /// Per unit, whether its branch has an open PR (counted in `open`).
    has_pr: Vec<bool>,
    /// The spec's open PRs, as far as the run knows: those open as it started, plus those its
    /// publish nodes opened, less those its merge nodes merged.
    open: usize,
}

/// The wave of each of `units` units under `settings`, in plan order.
pub fn waves(settings: &Settings, units: usize) -> Vec<usize> {
    let canary = settings.canary.map_or(0, |n| n as usize).min(units);
    (0..units)
        .map(|u| match (u < canary, settings.batch) {
            (true, _) => 0,
            (false, None) => usize::from(canary > 0),
            (false, Some(batch)) => usize::from(canary > 0) + (u - canary) / batch.max(1) as usize,
        })
        .collect()
}

/// Whether `outcome` is a failure for the halt.
pub fn is_failure(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::AgentFailed
            | Outcome::QaFailed
            | Outcome::TimedOut
            | Outcome::InfraError
            | Outcome::BudgetExceeded
    )
}

/// Whether `outcome` counts among the finished units of the halt.
fn counts(outcome: Outcome) -> bool {
    !matches!(outcome, Outcome::Skipped | Outcome::Cancelled)
}

impl Rollout {
    /// The rollout of `units` units under `settings` (none: every unit may start at once).
    pub fn new(settings: Option<&Settings>, units: usize) -> Self {
        let Some(settings) = settings else {
            return Self::default();
        };
        let wave_of = waves(settings, units);
        let count = wave_of.last().map_or(0, |w| w + 1);
        let checks = match settings.wait_for_checks {
            true => Checks::Unasked,
            false => Checks::Green,
        };
        let mut waves = vec![
            Wave {
                left: 0,
                ended_at: None,
                checks,
            };
            count
        ];
        for &w in &wave_of {
            waves[w].left += 1;
        }
        Self {
            settings: settings.clone(),
            wave_of,
            waves,
            finished: 0,
            failed: 0,
            halted: None,
            has_pr: Vec::new(),
            open: 0,
        }
    }

    /// The same, knowing which units' branches have an open PR now (for `max_open_prs`).
    pub fn with_open_prs(mut self, has_pr: Vec<bool>) -> Self {
        self.open = has_pr.iter().filter(|open| **open).count();
        self.has_pr = has_pr;
        self
    }

    /// Whether unit `u` may publish under `max_open_prs`: `None` when it may (its branch has
    /// a PR to update, or fewer than the cap are open), else why not.
    pub fn publish_full(&self, u: usize) -> Option<String> {
        let max = self.settings.max_open_prs? as usize;
        if self.has_pr.get(u).copied().unwrap_or(false) || self.open < max {
            return None;
        }
        Some(format!(
            "rollout.max_open_prs: {} PRs of this spec are open (the cap is {max})",
            self.open
        ))
    }

    /// Unit `u` publishes: its PR counts as open from now on.
    pub fn publishing(&mut self, u: usize) {
        if let Some(has) = self.has_pr.get_mut(u).filter(|has| !**has) {
            *has = true;
            self.open += 1;
        }
    }

    /// Unit `u`'s PR was merged or withdrawn: it no longer counts.
    pub fn closed(&mut self, u: usize) {
        if let Some(has) = self.has_pr.get_mut(u).filter(|has| **has) {
            *has = false;
            self.open = self.open.saturating_sub(1);
        }
    }

    /// The wave of unit `u` (0 without a rollout).
    pub fn wave(&self, u: usize) -> usize {
        self.wave_of.get(u).copied().unwrap_or(0)
    }

    /// Whether unit `u` (which has not started) may start at wall-clock millisecond `now`.
    pub fn gate(&self, u: usize, now: u64) -> Gate {
        if let Some(why) = &self.halted {
            return Gate::Halted(why.clone());
        }
        let wave = self.wave(u);
        if wave == 0 || self.waves.is_empty() {
            return Gate::Now;
        }
        if self.waves[..wave]
            .iter()
            .any(|w| w.left > 0 || w.checks != Checks::Green)
        {
            return Gate::Wait;
        }
        let pause = self
            .settings
            .pause
            .map_or(0, |p| p.get().as_millis() as u64);
        match self.waves[wave - 1].ended_at {
            Some(ended) if ended + pause > now => Gate::At(ended + pause),
            _ => Gate::Now,
        }
    }

    /// Unit `u` finished with `outcome` at wall-clock millisecond `at`; `counted`: whether it counts
    /// for the halt (a unit a resume found finished before a halt it continues does not).
    /// Returns why the rollout halts, the first time it does.
    pub fn finished(
        &mut self,
        u: usize,
        outcome: Outcome,
        at: u64,
        counted: bool,
    ) -> Option<String> {
        if let Some(wave) = self
            .waves
            .get_mut(self.wave_of.get(u).copied().unwrap_or(0))
        {
            wave.left = wave.left.saturating_sub(1);
            if wave.left == 0 {
                wave.ended_at = Some(wave.ended_at.map_or(at, |e| e.max(at)));
            }
        }
        if !counted || !counts(outcome) {
            return None;
        }
        self.finished += 1;
        self.failed += u32::from(is_failure(outcome));
        let halt = self.settings.halt_if?;
        if self.halted.is_some() || self.finished < halt.min_units {
            return None;
        }
        let rate = f64::from(self.failed) / f64::from(self.finished);
        if rate <= halt.failure_rate {
            return None;
        }
        let why = format!(
            "rollout halted: {} of {} finished units failed ({:.0}%, above rollout.halt_if.failure_rate {:.0}%)",
            self.failed,
            self.finished,
            rate * 100.0,
            halt.failure_rate * 100.0
        );
        self.halted = Some(why.clone());
        Some(why)
    }

    /// A finished wave whose PRs' checks are to be waited for now (a later wave waits for
    /// them), marked asked; `None` when there is none.
    pub fn to_check(&mut self) -> Option<usize> {
        let last = self.waves.len().checked_sub(1)?;
        let (wave, state) = self.waves[..last]
            .iter_mut()
            .enumerate()
            .find(|(_, w)| w.left == 0 && w.checks == Checks::Unasked)?;
        state.checks = Checks::Asked;
        Some(wave)
    }

    /// The checks of wave `wave`'s PRs settled: green lets the next wave start; red (what
    /// failed) halts the rollout, and the reason is returned.
    pub fn checked(&mut self, wave: usize, result: Result<(), String>) -> Option<String> {
        match result {
            Ok(()) => {
                if let Some(w) = self.waves.get_mut(wave) {
                    w.checks = Checks::Green;
                }
                None
            }
            Err(red) if self.halted.is_none() => {
                let why = format!("rollout halted: the PRs of wave {wave} are not green ({red})");
                self.halted = Some(why.clone());
                Some(why)
            }
            Err(_) => None,
        }
    }

    /// When publish may happen, from wall-clock millisecond `now`: now (`None`), or the
    /// millisecond the next window opens.
    pub fn publish_at(&self, now: u64) -> Option<u64> {
        next_window(&self.settings.windows, now / 1000).map(|second| second * 1000)
    }
}

/// The second a publish may happen at, from `now`: `None` when `now` is inside a window (or
/// there are none), else the start of the next one.
pub fn next_window(windows: &[Window], now: u64) -> Option<u64> {
    if windows.is_empty() {
        return None;
    }
    let day = now / 86_400;
    let mut next: Option<u64> = None;
    // A window that started yesterday may run past midnight into today.
    for start_day in day.saturating_sub(1)..=day + 7 {
        // 1970-01-01 was a Thursday (index 3, Monday being 0).
        let weekday = (start_day + 3) % 7;
        for window in windows {
            if !window.days.is_empty() && !window.days.iter().any(|d| d.index() == weekday) {
                continue;
            }
            let minute = |t: &crate::spec::values::TimeOfDay| {
                u64::from(t.hour) * 3600 + u64::from(t.minute) * 60
            };
            let opens = start_day * 86_400 + minute(&window.from);
            let mut closes = start_day * 86_400 + minute(&window.to);
            if closes <= opens {
                closes += 86_400;
            }
            if (opens..closes).contains(&now) {
                return None;
            }
            if opens > now {
                next = Some(next.map_or(opens, |n| n.min(opens)));
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::values::{Duration, TimeOfDay};

    fn settings(canary: Option<u32>, batch: Option<u32>) -> Settings {
        Settings {
            canary,
            batch,
            ..Settings::default()
        }
    }

    #[test]
    fn a_canary_then_batches_in_plan_order() {
        assert_eq!(
            waves(&settings(Some(2), Some(3)), 9),
            [0, 0, 1, 1, 1, 2, 2, 2, 3]
        );
        assert_eq!(waves(&settings(Some(1), None), 4), [0, 1, 1, 1]);
        assert_eq!(waves(&settings(None, Some(2)), 5), [0, 0, 1, 1, 2]);
        assert_eq!(waves(&settings(Some(5), Some(2)), 3), [0, 0, 0]);
        assert_eq!(waves(&settings(None, None), 3), [0, 0, 0]);
    }

    #[test]
    fn a_wave_starts_once_the_one_before_finished_and_its_pause_passed() {
        let mut s = settings(Some(1), Some(2));
        s.pause = Some(Duration::parse("10m").unwrap());
        let mut rollout = Rollout::new(Some(&s), 4);
        assert_eq!(rollout.gate(0, 100), Gate::Now);
        assert_eq!(rollout.gate(1, 100), Gate::Wait);
        rollout.finished(0, Outcome::Changed, 1000, true);
        assert_eq!(rollout.gate(1, 1000), Gate::At(601_000));
        assert_eq!(rollout.gate(2, 600_999), Gate::At(601_000));
        assert_eq!(rollout.gate(2, 601_000), Gate::Now);
        assert_eq!(
            rollout.gate(3, 601_000),
            Gate::Wait,
            "the third wave waits for the second"
        );
        rollout.finished(1, Outcome::Changed, 700_000, true);
        assert_eq!(rollout.gate(3, 700_000), Gate::Wait);
        rollout.finished(2, Outcome::NoChanges, 700_100, true);
        assert_eq!(rollout.gate(3, 700_100), Gate::At(1_300_100));
    }

    #[test]
    fn more_failures_than_the_threshold_halt_once_enough_units_finished() {
        let mut s = settings(Some(2), None);
        s.halt_if = Some(crate::spec::model::HaltIf {
            failure_rate: 0.5,
            min_units: 2,
        });
        let mut rollout = Rollout::new(Some(&s), 5);
        assert_eq!(
            rollout.finished(0, Outcome::QaFailed, 10, true),
            None,
            "one is too few"
        );
        // Skipped and cancelled units never count; blocked ones count as finished, not failed.
        assert_eq!(rollout.finished(2, Outcome::Skipped, 11, true), None);
        assert_eq!(
            rollout.finished(3, Outcome::Blocked, 12, true),
            None,
            "1 of 2 is 50%"
        );
        let why = rollout
            .finished(1, Outcome::AgentFailed, 13, true)
            .expect("halts");
        assert_eq!(
            why,
            "rollout halted: 2 of 3 finished units failed (67%, above rollout.halt_if.failure_rate 50%)"
        );
        assert_eq!(rollout.gate(4, 14), Gate::Halted(why));
        assert_eq!(
            rollout.finished(4, Outcome::AgentFailed, 15, true),
            None,
            "once"
        );
        // A resume that continues a halt counts afresh.
        let mut resumed = Rollout::new(Some(&s), 5);
        for u in 0..2 {
            resumed.finished(u, Outcome::AgentFailed, 10, false);
        }
        assert_eq!(resumed.gate(2, 20), Gate::Now);
    }

    #[test]
    fn with_wait_for_checks_a_wave_waits_for_the_prs_of_the_one_before() {
        let mut s = settings(Some(1), Some(1));
        s.wait_for_checks = true;
        let mut rollout = Rollout::new(Some(&s), 3);
        assert_eq!(rollout.to_check(), None, "nothing finished");
        rollout.finished(0, Outcome::Changed, 10, true);
        assert_eq!(rollout.gate(1, 10), Gate::Wait);
        assert_eq!(rollout.to_check(), Some(0));
        assert_eq!(rollout.to_check(), None, "asked once");
        assert_eq!(rollout.checked(0, Ok(())), None);
        assert_eq!(rollout.gate(1, 10), Gate::Now);
        rollout.finished(1, Outcome::Changed, 20, true);
        assert_eq!(rollout.to_check(), Some(1));
        let why = rollout
            .checked(1, Err("local:t/r#2: ci failed".into()))
            .expect("halts");
        assert_eq!(
            why,
            "rollout halted: the PRs of wave 1 are not green (local:t/r#2: ci failed)"
        );
        assert_eq!(rollout.gate(2, 30), Gate::Halted(why));
        rollout.finished(2, Outcome::Changed, 40, true);
        assert_eq!(
            rollout.to_check(),
            None,
            "the last wave has none to wait for it"
        );
    }

    #[test]
    fn open_prs_count_what_the_run_opens_and_merges() {
        let mut s = settings(None, None);
        s.max_open_prs = Some(2);
        let mut rollout = Rollout::new(Some(&s), 4).with_open_prs(vec![true, false, false, false]);
        assert_eq!(rollout.publish_full(0), None, "an open PR is updated");
        assert_eq!(rollout.publish_full(1), None);
        rollout.publishing(1);
        rollout.publishing(1);
        assert_eq!(
            rollout.publish_full(2).as_deref(),
            Some("rollout.max_open_prs: 2 PRs of this spec are open (the cap is 2)")
        );
        assert_eq!(rollout.publish_full(1), None, "its own PR");
        rollout.closed(0);
        assert_eq!(rollout.publish_full(2), None);
    }

    #[test]
    fn publish_waits_for_the_next_window_in_utc() {
        let time = |text: &str| TimeOfDay::parse(text).unwrap();
        let windows = vec![Window {
            days: vec![
                crate::spec::model::Weekday::Mon,
                crate::spec::model::Weekday::Tue,
            ],
            from: time("09:00"),
            to: time("17:00"),
        }];
        // 2026-12-03 is a Thursday; 12:00 UTC.
        let thursday_noon = 1_796_256_000 + 12 * 3600;
        assert_eq!((thursday_noon / 86_400 + 3) % 7, 3, "a Thursday");
        // The next Monday 09:00 is four days later minus three hours.
        assert_eq!(
            next_window(&windows, thursday_noon),
            Some(thursday_noon + 4 * 86_400 - 3 * 3600)
        );
        let monday_ten = thursday_noon + 4 * 86_400 - 2 * 3600;
        assert_eq!(next_window(&windows, monday_ten), None, "inside");
        // Overnight: 22:00 to 02:00 every day.
        let night = vec![Window {
            days: Vec::new(),
            from: time("22:00"),
            to: time("02:00"),
        }];
        assert_eq!(
            next_window(&night, thursday_noon + 13 * 3600),
            None,
            "01:00 Friday"
        );
        assert_eq!(
            next_window(&night, thursday_noon),
            Some(thursday_noon + 10 * 3600)
        );
        assert_eq!(next_window(&[], thursday_noon), None);
    }
}
