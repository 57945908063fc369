//! Budgets: what a run may spend on agents, decided without I/O like the limits.
//!
//! A spec's `budget:` sets caps per unit and in total, for the run, per job, per agent pool and
//! per model ([`crate::spec::model::Budget::scopes`]). The [`Ledger`] is the dispatcher's: before a unit's first
//! node starts it reserves the unit's cap (what is left of it after what the unit spent in
//! earlier attempts of the run) against what is left of every total the unit counts against;
//! a unit the rest cannot cover does not start. The reservation is held while the unit's nodes
//! run and becomes the unit's real spend when the unit finishes. While an agent runs, its
//! node's [`Allowance`] says when the unit passed its own cap (the meter of the agent node
//! stops the container then).
//!
//! Invariants:
//! - every total covers what it counts: the spend of its finished units plus, for each unit
//!   that holds a reservation, the larger of its cap and its spend; a reservation is only taken
//!   when that stays within the total, so no total is passed as long as no unit passes its cap;
//! - a total applies only with a per-unit cap on the same measure (validation sees to it), so
//!   every unit that counts against a total reserves on that measure;
//! - spend is counted once: a unit's spend joins its scopes when it finishes, never while it
//!   runs (its reservation stands for it meanwhile).

use std::fmt;

use crate::agents::output::Usage;
use crate::spec::model::{Cap, Spec};
use crate::spec::values::AgentRef;

/// What was spent: USD (reported or estimated), tokens (input plus output) and turns.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spend {
    /// USD.
    pub usd: f64,
    /// Tokens.
    pub tokens: u64,
    /// Turns, as the CLIs count them.
    pub turns: u64,
}

impl Spend {
    /// The spend of what agent runs used (runs of unknown cost count nothing in USD).
    pub fn of(usage: &Usage) -> Self {
        Self {
            usd: usage.cost_usd.unwrap_or(0.0),
            tokens: usage.input_tokens + usage.output_tokens,
            turns: usage.turns,
        }
    }

    /// Both added.
    pub fn plus(self, other: Spend) -> Self {
        Self {
            usd: self.usd + other.usd,
            tokens: self.tokens + other.tokens,
            turns: self.turns + other.turns,
        }
    }
}

/// One of the things a cap limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    Usd,
    Tokens,
    Turns,
}

impl Measure {
    const ALL: [Measure; 3] = [Measure::Usd, Measure::Tokens, Measure::Turns];

    fn cap(self, cap: &Cap) -> Option<f64> {
        match self {
            Measure::Usd => cap.max_usd,
            Measure::Tokens => cap.max_tokens.map(|n| n as f64),
            Measure::Turns => cap.max_turns.map(|n| n as f64),
        }
    }

    fn of(self, spend: Spend) -> f64 {
        match self {
            Measure::Usd => spend.usd,
            Measure::Tokens => spend.tokens as f64,
            Measure::Turns => spend.turns as f64,
        }
    }

    /// `$0.4000`, `12000 tokens`, `3 turns`.
    fn show(self, amount: f64) -> String {
        match self {
            Measure::Usd => format!("${amount:.4}"),
            Measure::Tokens => format!("{} tokens", amount.round() as u64),
            Measure::Turns => format!("{} turns", amount.round() as u64),
        }
    }

    fn field(self) -> &'static str {
        match self {
            Measure::Usd => "max_usd",
            Measure::Tokens => "max_tokens",
            Measure::Turns => "max_turns",
        }
    }

    /// A spend of `amount` of this measure alone.
    fn spend(self, amount: f64) -> Spend {
        let mut spend = Spend::default();
        match self {
            Measure::Usd => spend.usd = amount,
            Measure::Tokens => spend.tokens = amount as u64,
            Measure::Turns => spend.turns = amount as u64,
        }
        spend
    }
}

/// The cap of one unit: the least per-unit cap of its scopes, each measure with the setting
/// that gave it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitCap {
    /// The most USD, and the setting it comes from.
    pub usd: Option<(f64, String)>,
    /// The most tokens, and the setting it comes from.
    pub tokens: Option<(u64, String)>,
    /// The most turns, and the setting it comes from.
    pub turns: Option<(u64, String)>,
}

impl UnitCap {
    fn get(&self, measure: Measure) -> Option<(f64, &str)> {
        match measure {
            Measure::Usd => self.usd.as_ref().map(|(n, at)| (*n, at.as_str())),
            Measure::Tokens => self.tokens.as_ref().map(|(n, at)| (*n as f64, at.as_str())),
            Measure::Turns => self.turns.as_ref().map(|(n, at)| (*n as f64, at.as_str())),
        }
    }

    fn is_none(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none() && self.turns.is_none()
    }
}

/// Lowers `slot` to `value` (set at the setting `at` names) when that is less.
fn lower<T: PartialOrd>(
    slot: &mut Option<(T, String)>,
    value: Option<T>,
    at: impl FnOnce() -> String,
) {
    if let Some(value) = value {
        if slot.as_ref().is_none_or(|(cap, _)| value < *cap) {
            *slot = Some((value, at()));
        }
    }
}

/// What a unit's agents may spend while they run: the unit's cap and what the unit spent before
/// the run now starting (earlier agent runs, fix attempts, earlier attempts of the run).
#[derive(Clone, Debug, PartialEq)]
pub struct Allowance {
    /// The unit's cap.
    pub cap: UnitCap,
    /// What the unit spent before.
    pub before: Spend,
}

impl Allowance {
    /// Why the unit passed its cap once the running agent spent `now`: `None` while it has not.
    pub fn passed(&self, now: Spend) -> Option<String> {
        let spent = self.before.plus(now);
        Measure::ALL.into_iter().find_map(|m| {
            let (cap, at) = self.cap.get(m)?;
            (m.of(spent) > cap).then(|| {
                format!(
                    "the unit spent {} of its cap of {} ({at})",
                    m.show(m.of(spent)),
                    m.show(cap)
                )
            })
        })
    }

    /// The USD the unit has left (for a CLI's own cap, e.g. claude's `--max-budget-usd`).
    pub fn usd_left(&self) -> Option<f64> {
        let (cap, _) = self.cap.get(Measure::Usd)?;
        Some((cap - self.before.usd).max(0.0))
    }

    /// The turns the unit has left (for claude's `--max-turns`), at least one (a unit with
    /// none left does not start).
    pub fn turns_left(&self) -> Option<u64> {
        let (cap, _) = self.cap.get(Measure::Turns)?;
        Some((cap as u64).saturating_sub(self.before.turns).max(1))
    }
}

/// A total: where it is set, its cap, what its finished units spent and what running units
/// hold.
#[derive(Clone, Debug)]
struct Scope {
    name: String,
    total: Cap,
    spent: Spend,
    held: Spend,
}

/// The budget state of one unit.
#[derive(Clone, Debug, Default)]
struct UnitBudget {
    /// The totals it counts against.
    scopes: Vec<usize>,
    cap: UnitCap,
    /// What it holds while it runs.
    hold: Option<Spend>,
}

/// Why a unit cannot start now: the total that cannot cover it, in words, and whether it may
/// once running units give back what they hold (it waits then, rather than being skipped).
#[derive(Clone, Debug, PartialEq)]
pub struct Short {
    /// In words.
    pub reason: String,
    /// Whether running units hold part of the total that is short.
    pub wait: bool,
}

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The dispatcher's budget book: the totals and each unit's cap and reservation.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    scopes: Vec<Scope>,
    units: Vec<UnitBudget>,
}

impl Ledger {
    /// The book of `spec`'s budget for units given as (job index, agent), in plan order.
    pub fn new<'a>(spec: &Spec, units: impl IntoIterator<Item = (usize, &'a AgentRef)>) -> Self {
        let mut ledger = Ledger::default();
        for (job, agent) in units {
            let mut unit = UnitBudget::default();
            for scope in spec.budget.scopes(spec, job, agent) {
                if let Some(per_unit) = scope.caps.per_unit {
                    let setting = format!("{}.per_unit", scope.name);
                    let cap = &mut unit.cap;
                    lower(&mut cap.usd, per_unit.max_usd, || {
                        format!("{setting}.max_usd")
                    });
                    lower(&mut cap.tokens, per_unit.max_tokens, || {
                        format!("{setting}.max_tokens")
                    });
                    lower(&mut cap.turns, per_unit.max_turns, || {
                        format!("{setting}.max_turns")
                    });
                }
                if let Some(total) = scope.caps.total {
                    let name = format!("{}.total", scope.name);
                    let at = match ledger.scopes.iter().position(|s| s.name == name) {
                        Some(at) => at,
                        None => {
                            ledger.scopes.push(Scope {
                                name,
                                total,
                                spent: Spend::default(),
                                held: Spend::default(),
                            });
                            ledger.scopes.len() - 1
                        }
                    };
                    unit.scopes.push(at);
                }
            }
            ledger.units.push(unit);
        }
        ledger
    }

    /// What unit `u`'s agents may spend from now on, having spent `before`; `None` when no cap
    /// applies to it.
    pub fn allowance(&self, u: usize, before: Spend) -> Option<Allowance> {
        let cap = &self.units.get(u)?.cap;
        (!cap.is_none()).then(|| Allowance {
            cap: cap.clone(),
            before,
        })
    }

    /// Whether unit `u` holds a reservation.
    pub fn holds(&self, u: usize) -> bool {
        self.units.get(u).is_some_and(|unit| unit.hold.is_some())
    }

    /// Reserves unit `u`'s cap (it spent `before` in earlier attempts) against every total it
    /// counts against; returns what it holds (`None`: no cap applies, nothing is held), or why
    /// it cannot start. A unit holding a reservation already keeps it.
    pub fn reserve(&mut self, u: usize, before: Spend) -> Result<Option<Spend>, Short> {
        let Some(unit) = self.units.get(u) else {
            return Ok(None);
        };
        if let Some(hold) = unit.hold {
            return Ok(Some(hold));
        }
        if unit.cap.is_none() {
            return Ok(None);
        }
        let mut hold = Spend::default();
        for m in Measure::ALL {
            let Some((cap, at)) = unit.cap.get(m) else {
                continue;
            };
            if m.of(before) >= cap {
                return Err(Short {
                    reason: format!(
                        "budget: the unit spent {} in earlier attempts, its whole cap ({at}: {})",
                        m.show(m.of(before)),
                        m.show(cap)
                    ),
                    wait: false,
                });
            }
            let amount = cap.max(m.of(before));
            hold = hold.plus(m.spend(amount));
            for &s in &unit.scopes {
                let scope = &self.scopes[s];
                let Some(total) = m.cap(&scope.total) else {
                    continue;
                };
                let (spent, held) = (m.of(scope.spent), m.of(scope.held));
                let left = (total - spent - held).max(0.0);
                if amount > left + 1e-9 {
                    return Err(Short {
                        reason: format!(
                            "budget: the unit needs {} ({at}) but {}.{} has {} left of {} ({} spent)",
                            m.show(amount),
                            scope.name,
                            m.field(),
                            m.show(left),
                            m.show(total),
                            m.show(spent)
                        ),
                        wait: held > 0.0,
                    });
                }
            }
        }
        for &s in &self.units[u].scopes {
            let scope = &mut self.scopes[s];
            scope.held = scope.held.plus(hold);
        }
        self.units[u].hold = Some(hold);
        Ok(Some(hold))
    }

    /// Unit `u` finished having spent `spent` in this run: its reservation, if it held one, is
    /// given back and its spend counts in its totals.
    pub fn finish(&mut self, u: usize, spent: Spend) {
        let Some(unit) = self.units.get_mut(u) else {
            return;
        };
        let hold = unit.hold.take().unwrap_or_default();
        for &s in &unit.scopes {
            let scope = &mut self.scopes[s];
            scope.held = Spend {
                usd: (scope.held.usd - hold.usd).max(0.0),
                tokens: scope.held.tokens.saturating_sub(hold.tokens),
                turns: scope.held.turns.saturating_sub(hold.turns),
            };
            scope.spent = scope.spent.plus(spent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Spec {
        let dir = std::env::temp_dir().join(format!("dispatch-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        crate::spec::load_text(&dir.join("b.yaml"), yaml.to_owned())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .spec
    }

    const SPEC: &str = r#"
version: 1
name: b
budget:
  per_unit: { max_usd: 0.4, max_tokens: 50000 }
  total: { max_usd: 1.0, max_tokens: 100000 }
  agents:
    claude: { per_unit: { max_usd: 0.3, max_tokens: 30000 } }
jobs:
  - id: fix
    task: t
    repos: [o/a]
    budget: { total: { max_usd: 0.5 } }
  - id: other
    task: t
    agent: claude
    repos: [o/b]
"#;

    fn codex() -> AgentRef {
        AgentRef::parse("codex").unwrap()
    }

    fn claude() -> AgentRef {
        AgentRef::parse("claude").unwrap()
    }

    #[test]
    fn a_units_cap_is_the_least_that_applies_and_names_its_setting() {
        let spec = spec(SPEC);
        let (codex, claude) = (codex(), claude());
        let ledger = Ledger::new(&spec, [(0, &codex), (1, &claude)]);
        let fix = ledger.allowance(0, Spend::default()).expect("capped");
        assert_eq!(
            fix.cap.usd,
            Some((0.4, "budget.per_unit.max_usd".to_owned()))
        );
        assert_eq!(
            fix.cap.tokens,
            Some((50_000, "budget.per_unit.max_tokens".to_owned()))
        );
        let other = ledger.allowance(1, Spend::default()).expect("capped");
        assert_eq!(
            other.cap.usd,
            Some((0.3, "budget.agents.claude.per_unit.max_usd".to_owned()))
        );
        assert_eq!(
            other.passed(Spend {
                usd: 0.1,
                tokens: 30_001,
                turns: 0,
            }),
            Some(
                "the unit spent 30001 tokens of its cap of 30000 tokens (budget.agents.claude.per_unit.max_tokens)"
                    .to_owned()
            )
        );
        let after = Allowance {
            before: Spend {
                usd: 0.25,
                tokens: 0,
                turns: 0,
            },
            ..other
        };
        assert!((after.usd_left().unwrap() - 0.05).abs() < 1e-9);
        assert!(after
            .passed(Spend {
                usd: 0.06,
                tokens: 0,
                turns: 0,
            })
            .is_some());
    }

    #[test]
    fn reservations_never_let_a_total_be_passed_and_free_what_was_not_spent() {
        let spec = spec(SPEC);
        let codex = codex();
        // Four units of job `fix`: its total is $0.50, each unit holds $0.40.
        let mut ledger = Ledger::new(&spec, std::iter::repeat_n((0, &codex), 4));
        assert_eq!(
            ledger.reserve(0, Spend::default()).unwrap().unwrap().usd,
            0.4
        );
        let short = ledger.reserve(1, Spend::default()).expect_err("no room");
        assert_eq!(
            short.reason,
            "budget: the unit needs $0.4000 (budget.per_unit.max_usd) but jobs.fix.budget.total.max_usd has $0.1000 left of $0.5000 ($0.0000 spent)"
        );
        assert!(short.wait, "the running unit may give some back");
        // The first spent only $0.05: $0.45 is left, enough for one more.
        ledger.finish(
            0,
            Spend {
                usd: 0.05,
                tokens: 900,
                turns: 0,
            },
        );
        assert!(ledger.reserve(1, Spend::default()).is_ok());
        assert!(ledger.holds(1));
        assert!(ledger.reserve(2, Spend::default()).is_err());
        ledger.finish(
            1,
            Spend {
                usd: 0.2,
                tokens: 900,
                turns: 0,
            },
        );
        let short = ledger.reserve(2, Spend::default()).expect_err("$0.25 left");
        assert!(!short.wait, "nothing is held: the unit is skipped, {short}");
        // A unit whose earlier attempts used up its cap cannot start again.
        let used = ledger.reserve(
            3,
            Spend {
                usd: 0.4,
                tokens: 0,
                turns: 0,
            },
        );
        assert!(
            used.clone().unwrap_err().reason.contains("its whole cap"),
            "{used:?}"
        );
    }

    #[test]
    fn a_total_without_a_per_unit_cap_on_its_measure_is_refused_at_the_job() {
        let text = SPEC.replace(
            "per_unit: { max_usd: 0.4, max_tokens: 50000 }",
            "per_unit: { max_usd: 0.4 }",
        );
        let dir = std::env::temp_dir().join(format!("dispatch-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = crate::spec::load_text(&dir.join("b.yaml"), text).expect_err("invalid");
        let shown = format!("{error:?}");
        assert!(
            shown.contains("job `fix` counts against budget.total.max_tokens but no per-unit max_tokens applies to its units"),
            "{shown}"
        );
        // The claude job has a per-unit token cap of its pool: only `fix` is refused.
        assert!(!shown.contains("job `other`"), "{shown}");
    }

    #[test]
    fn turns_are_a_cap_of_their_own_and_what_is_left_goes_to_the_cli() {
        let spec = spec(&SPEC.replace(
            "claude: { per_unit: { max_usd: 0.3, max_tokens: 30000 } }",
            "claude: { per_unit: { max_usd: 0.3, max_tokens: 30000, max_turns: 5 } }",
        ));
        let claude = claude();
        let ledger = Ledger::new(&spec, [(1, &claude)]);
        let before = Spend {
            turns: 3,
            ..Spend::default()
        };
        let allowance = ledger.allowance(0, before).expect("capped");
        assert_eq!(allowance.turns_left(), Some(2));
        assert_eq!(
            allowance.passed(Spend {
                turns: 3,
                ..Spend::default()
            }),
            Some("the unit spent 6 turns of its cap of 5 turns (budget.agents.claude.per_unit.max_turns)".to_owned())
        );
        assert_eq!(
            allowance.passed(Spend {
                turns: 2,
                ..Spend::default()
            }),
            None
        );
    }

    #[test]
    fn no_cap_no_reservation() {
        let spec = spec("version: 1\nname: b\njobs: [{ id: j, task: t, repos: [o/a] }]\n");
        let codex = codex();
        let mut ledger = Ledger::new(&spec, [(0, &codex)]);
        assert_eq!(ledger.allowance(0, Spend::default()), None);
        assert_eq!(ledger.reserve(0, Spend::default()), Ok(None));
        assert!(!ledger.holds(0));
    }
}
