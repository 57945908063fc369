//! Retry pacing: [`Backoff`](crate::backoff::Backoff), the one iterator of pauses every retry loop in dispatch takes
//! its delays from (the forge's HTTP retries, the wait for a PR's checks, the executor's
//! retry of `infra_error` nodes).
//!
//! It only computes durations; it never sleeps and reads no clock, so a loop decides what to
//! do with each pause (sleep on a tokio timer, compare it with a deadline) and tests can list
//! a sequence without waiting for it.
//!
//! Invariants:
//!
//! - The undelayed pause starts at `first` and is multiplied by `factor` after each item,
//!   saturating, and is never more than `cap`.
//! - Jitter is added after the cap: with a fraction `f`, a pause `d` becomes a value in
//!   `[d, d + f * d)`. The jitter is drawn from a small generator seeded by the caller, so the
//!   same seed gives the same sequence.
//! - With a limit of `n`, the iterator yields exactly `n` pauses and then `None` for ever;
//!   without one it never ends.

use std::iter::FusedIterator;
use std::time::Duration;

/// A sequence of retry pauses: `first`, then multiplied by `factor` up to `cap`, each
/// optionally stretched by jitter, optionally ending after a number of pauses.
///
/// ```
/// use std::time::Duration;
/// use dispatch::backoff::Backoff;
///
/// let pauses: Vec<u64> = Backoff::new(Duration::from_secs(10))
///     .cap(Duration::from_secs(60))
///     .limit(5)
///     .map(|d| d.as_secs())
///     .collect();
/// assert_eq!(pauses, [10, 20, 40, 60, 60]);
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The next pause before jitter.
    next: Duration,
    factor: u32,
    cap: Duration,
    jitter: Option<Jitter>,
    /// Pauses left to yield; `None` is unlimited.
    remaining: Option<u32>,
}

/// Up to `fraction` of each pause added, drawn from a splitmix64 generator.
#[derive(Clone, Copy, Debug)]
struct Jitter {
    fraction: f64,
    state: u64,
}

impl Jitter {
    /// The next draw, uniform in `[0, 1)`.
    fn draw(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits: every value is exactly representable, and 2^53 is never reached.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Backoff {
    /// Pauses starting at `first`, doubling, without a cap, jitter or limit.
    pub fn new(first: Duration) -> Self {
        Self {
            next: first,
            factor: 2,
            cap: Duration::MAX,
            jitter: None,
            remaining: None,
        }
    }

    /// The executor's retry of a node that ended in `infra_error`: 1 s, doubling, at most
    /// 60 s, plus up to 25% jitter. The pause before the retry that follows attempt `n`
    /// (counted from 1) is `Backoff::node_retry(seed).nth(n - 1)`; a per-process seed such as
    /// the pid keeps concurrent runners apart.
    pub fn node_retry(seed: u64) -> Self {
        Self::new(Duration::from_secs(1))
            .cap(Duration::from_secs(60))
            .jitter(0.25, seed)
    }

    /// Multiplies the pause by `factor` after each item (1 keeps it constant; default 2).
    pub fn factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The longest pause before jitter.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self.next = self.next.min(cap);
        self
    }

    /// Adds to each pause a part of it drawn from `[0, fraction)`, from a generator seeded
    /// with `seed`. A fraction that is negative or not a number counts as 0.
    pub fn jitter(mut self, fraction: f64, seed: u64) -> Self {
        let fraction = if fraction.is_finite() && fraction > 0.0 {
            fraction
        } else {
            0.0
        };
        self.jitter = Some(Jitter {
            fraction,
            state: seed,
        });
        self
    }

    /// Ends the sequence after `count` pauses.
    pub fn limit(mut self, count: u32) -> Self {
        self.remaining = Some(count);
        self
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.checked_sub(1)?;
        }
        let pause = self.next;
        self.next = pause.saturating_mul(self.factor).min(self.cap);
        Some(match &mut self.jitter {
            Some(jitter) => {
                let extra = pause.mul_f64(jitter.fraction * jitter.draw());
                pause.saturating_add(extra)
            }
            None => pause,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining {
            Some(n) => (n as usize, Some(n as usize)),
            None => (usize::MAX, None),
        }
    }
}

impl FusedIterator for Backoff {}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(backoff: Backoff, n: usize) -> Vec<f64> {
        backoff.take(n).map(|d| d.as_secs_f64()).collect()
    }

    #[test]
    fn pauses_double_from_the_first() {
        assert_eq!(
            secs(Backoff::new(Duration::from_millis(500)), 5),
            [0.5, 1.0, 2.0, 4.0, 8.0]
        );
        assert_eq!(
            secs(Backoff::new(Duration::from_secs(3)).factor(3), 3),
            [3.0, 9.0, 27.0]
        );
        assert_eq!(
            secs(Backoff::new(Duration::from_secs(3)).factor(1), 3),
            [3.0, 3.0, 3.0]
        );
    }

    #[test]
    fn pauses_stop_growing_at_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(10)).cap(Duration::from_secs(60));
        assert_eq!(secs(backoff, 6), [10.0, 20.0, 40.0, 60.0, 60.0, 60.0]);
        let below = Backoff::new(Duration::from_secs(90)).cap(Duration::from_secs(60));
        assert_eq!(secs(below, 2), [60.0, 60.0]);
        let huge = Backoff::new(Duration::MAX / 2).cap(Duration::MAX);
        assert_eq!(huge.take(3).last(), Some(Duration::MAX), "saturates");
    }

    #[test]
    fn a_limit_ends_the_sequence_for_good() {
        let mut backoff = Backoff::new(Duration::from_secs(1)).limit(2);
        assert_eq!(backoff.size_hint(), (2, Some(2)));
        assert_eq!(backoff.next(), Some(Duration::from_secs(1)));
        assert_eq!(backoff.next(), Some(Duration::from_secs(2)));
        assert_eq!(backoff.next(), None);
        assert_eq!(backoff.next(), None);
        assert_eq!(Backoff::new(Duration::from_secs(1)).limit(0).count(), 0);
    }

    #[test]
    fn jitter_stays_within_its_fraction_above_the_pause() {
        for seed in 0..200 {
            let plain = Backoff::new(Duration::from_secs(1)).cap(Duration::from_secs(60));
            let jittered = plain.clone().jitter(0.25, seed);
            for (d, j) in plain.zip(jittered).take(10) {
                assert!(j >= d, "seed {seed}: {j:?} < {d:?}");
                assert!(j < d + d / 4, "seed {seed}: {j:?} >= 1.25 x {d:?}");
            }
        }
    }

    #[test]
    fn jitter_is_deterministic_per_seed_and_varies_between_seeds() {
        let backoff = |seed| {
            Backoff::new(Duration::from_secs(8))
                .factor(1)
                .jitter(1.0, seed)
        };
        let a: Vec<Duration> = backoff(7).take(5).collect();
        assert_eq!(a, backoff(7).take(5).collect::<Vec<_>>());
        assert_ne!(a, backoff(8).take(5).collect::<Vec<_>>());
        let distinct: std::collections::BTreeSet<Duration> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 5, "{a:?}");
    }

    #[test]
    fn a_fraction_that_is_not_positive_adds_nothing() {
        for fraction in [0.0, -1.0, f64::NAN] {
            let backoff = Backoff::new(Duration::from_secs(1)).jitter(fraction, 3);
            assert_eq!(secs(backoff, 3), [1.0, 2.0, 4.0]);
        }
    }

    #[test]
    fn the_node_retry_policy_is_one_second_doubling_to_a_minute_plus_a_quarter() {
        for seed in [0, 1, u64::from(std::process::id())] {
            let pauses: Vec<Duration> = Backoff::node_retry(seed).take(9).collect();
            let bases = [1, 2, 4, 8, 16, 32, 60, 60, 60];
            for (pause, base) in pauses.iter().zip(bases) {
                let base = Duration::from_secs(base);
                assert!(
                    *pause >= base && *pause < base + base / 4,
                    "{pause:?} vs {base:?}"
                );
            }
        }
    }
}
