//! Concurrency limits and start rates.
//!
//! Slots: a global total of containers, per agent pool, per model, and a small host limit for
//! git work (prep, publish, merge). Rates, per pool or `pool:model`: `min_delay` from the last
//! start, `daily_limit` counted from the journal and reset at `reset_utc`, and a burst window.
//! [`Limits::check`] never blocks: it answers "start now", "wait until this instant" or "no
//! slot"; the dispatcher turns the earliest instant into one timer. A pool that waits never
//! holds anything another pool needs.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::spec::model::{PoolLimit, Spec};

/// Default global total when the spec sets none.
pub const DEFAULT_TOTAL: usize = 4;

/// The spec's global total of containers (`limits.total`, else [`DEFAULT_TOTAL`]).
pub fn total(spec: &Spec) -> usize {
    spec.limits.total.map_or(DEFAULT_TOTAL, |t| t as usize)
}

/// What a node needs before it may start.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Git work on the host.
    Host,
    /// A QA container.
    Container,
    /// An agent container of a pool and model.
    Agent {
        /// Pool (text before `:`).
        pool: String,
        /// Model, if any.
        model: Option<String>,
    },
}

/// The answer of [`Limits::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Start now.
    Now,
    /// A rate limit allows the next start at this instant.
    At(Instant),
    /// No free slot; a finishing node frees one.
    Full,
}

#[derive(Debug)]
struct Rate {
    min_delay: Option<Duration>,
    last_start: Option<Instant>,
    daily_limit: Option<u32>,
    daily_count: u32,
    /// Unix seconds when the current daily window ends.
    window_end: i64,
    reset_secs: i64,
    burst: Option<(u32, Duration, Duration)>,
    recent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// The limits of one run.
#[derive(Debug)]
pub struct Limits {
    total: usize,
    running_total: usize,
    host: usize,
    running_host: usize,
    pools: HashMap<String, (Option<usize>, usize)>,
    models: HashMap<(String, String), (Option<usize>, usize)>,
    rates: HashMap<String, Rate>,
}

/// Unix seconds when the daily window containing `now` ends, for a reset at `reset_secs`
/// after midnight UTC.
pub fn window_end(now: i64, reset_secs: i64) -> i64 {
    let day = 86_400;
    let today_reset = now - now.rem_euclid(day) + reset_secs;
    if now < today_reset {
        today_reset
    } else {
        today_reset + day
    }
}

impl Limits {
    /// Limits from the spec; `starts_today(key, window_start)` counts earlier starts of a rate
    /// key in the current daily window (from the journal).
    pub fn new(spec: &Spec, mut starts_today: impl FnMut(&str, i64) -> u32) -> Self {
        let total = total(spec);
        let mut pools = HashMap::new();
        let mut models = HashMap::new();
        for (pool, limit) in &spec.limits.agents {
            pools.insert(pool.clone(), (limit.total(), 0));
            if let PoolLimit::PerModel(per) = limit {
                for (model, v) in per.iter().filter(|(k, _)| k.as_str() != "total") {
                    models.insert((pool.clone(), model.clone()), (Some(v.0 as usize), 0));
                }
            }
        }
        let now = crate::state::now();
        let rates = spec
            .limits
            .rates
            .iter()
            .map(|(key, rate)| {
                let reset_secs = rate
                    .reset_utc
                    .map_or(0, |t| i64::from(t.hour) * 3600 + i64::from(t.minute) * 60);
                let end = window_end(now, reset_secs);
                let daily_count = if rate.daily_limit.is_some() {
                    starts_today(key, end - 86_400)
                } else {
                    0
                };
                let rate = Rate {
                    min_delay: rate.min_delay.map(|d| d.get()),
                    last_start: None,
                    daily_limit: rate.daily_limit,
                    daily_count,
                    window_end: end,
                    reset_secs,
                    burst: rate
                        .burst
                        .as_ref()
                        .map(|b| (b.max, b.window.get(), b.delay.get())),
                    recent: VecDeque::new(),
                    paused_until: None,
                };
                (key.clone(), rate)
            })
            .collect();
        Self {
            total,
            running_total: 0,
            host: total.max(2),
            running_host: 0,
            pools,
            models,
            rates,
        }
    }

    fn rate_keys(class: &Class) -> Vec<String> {
        match class {
            Class::Agent {
                pool,
                model: Some(model),
            } => vec![pool.clone(), format!("{pool}:{model}")],
            Class::Agent { pool, model: None } => vec![pool.clone()],
            _ => Vec::new(),
        }
    }

    /// Whether a node of `class` may start at `now`.
    pub fn check(&mut self, class: &Class, now: Instant) -> Admission {
        match class {
            Class::Host => {
                return if self.running_host < self.host {
                    Admission::Now
                } else {
                    Admission::Full
                }
            }
            Class::Container => {
                return if self.running_total < self.total {
                    Admission::Now
                } else {
                    Admission::Full
                }
            }
            Class::Agent { pool, model } => {
                if self.running_total >= self.total {
                    return Admission::Full;
                }
                if let Some((Some(limit), running)) = self.pools.get(pool) {
                    if running >= limit {
                        return Admission::Full;
                    }
                }
                if let Some(model) = model {
                    if let Some((Some(limit), running)) =
                        self.models.get(&(pool.clone(), model.clone()))
                    {
                        if running >= limit {
                            return Admission::Full;
                        }
                    }
                }
            }
        }
        let unix_now = crate::state::now();
        let mut at: Option<Instant> = None;
        for key in Self::rate_keys(class) {
            let Some(rate) = self.rates.get_mut(&key) else {
                continue;
            };
            if unix_now >= rate.window_end {
                rate.window_end = window_end(unix_now, rate.reset_secs);
                rate.daily_count = 0;
            }
            let mut earliest = now;
            if let Some(limit) = rate.daily_limit {
                if rate.daily_count >= limit {
                    let wait = Duration::from_secs((rate.window_end - unix_now).max(1) as u64);
                    earliest = earliest.max(now + wait);
                }
            }
            if let (Some(delay), Some(last)) = (rate.min_delay, rate.last_start) {
                earliest = earliest.max(last + delay);
            }
            if let Some(until) = rate.paused_until {
                earliest = earliest.max(until);
            }
            if earliest > now {
                at = Some(at.map_or(earliest, |a: Instant| a.max(earliest)));
            }
        }
        match at {
            Some(at) => Admission::At(at),
            None => Admission::Now,
        }
    }

    /// Takes the slots of a node that starts now, and counts the start against its rates.
    pub fn start(&mut self, class: &Class, now: Instant) {
        match class {
            Class::Host => self.running_host += 1,
            Class::Container => self.running_total += 1,
            Class::Agent { pool, model } => {
                self.running_total += 1;
                self.pools.entry(pool.clone()).or_insert((None, 0)).1 += 1;
                if let Some(model) = model {
                    self.models
                        .entry((pool.clone(), model.clone()))
                        .or_insert((None, 0))
                        .1 += 1;
                }
                for key in Self::rate_keys(class) {
                    if let Some(rate) = self.rates.get_mut(&key) {
                        rate.last_start = Some(now);
                        rate.daily_count += 1;
                        if let Some((max, window, delay)) = rate.burst {
                            rate.recent.push_back(now);
                            while rate
                                .recent
                                .front()
                                .is_some_and(|t| now.duration_since(*t) > window)
                            {
                                rate.recent.pop_front();
                            }
                            if rate.recent.len() as u32 >= max {
                                rate.paused_until = Some(now + delay);
                                rate.recent.clear();
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gives back the slots of a node that finished.
    pub fn finish(&mut self, class: &Class) {
        match class {
            Class::Host => self.running_host -= 1,
            Class::Container => self.running_total -= 1,
            Class::Agent { pool, model } => {
                self.running_total -= 1;
                if let Some(entry) = self.pools.get_mut(pool) {
                    entry.1 -= 1;
                }
                if let Some(model) = model {
                    if let Some(entry) = self.models.get_mut(&(pool.clone(), model.clone())) {
                        entry.1 -= 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_windows_end_at_the_reset_time() {
        let midnight = 1_700_000_000 - 1_700_000_000 % 86_400;
        assert_eq!(window_end(midnight + 3600, 6 * 3600), midnight + 6 * 3600);
        assert_eq!(
            window_end(midnight + 7 * 3600, 6 * 3600),
            midnight + 86_400 + 6 * 3600
        );
    }
}
