//! The reconnect schedule of a client: exponential backoff with full
//! jitter, as a state machine with no I/O and no clock.

use std::time::Duration;

use serde::Deserialize;

/// Automatic reconnect policy: exponential backoff with full jitter.
///
/// Before reconnect attempt `n` (0 for the first after a disconnect) the
/// client sleeps `random(0, min(cap, base * 2^n))`. The attempt counter goes
/// back to 0 only once a connection proved healthy: it stayed up for
/// `healthy_after`, or [`Connection::mark_healthy`] was called (the heartbeat
/// does after a round trip). Deserializable (durations in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// First backoff ceiling, in ms. Default 1000 (1 s).
    #[serde(rename = "base_ms", with = "millis")]
    pub base: Duration,
    /// Largest backoff ceiling, in ms. Default 30000 (30 s).
    #[serde(rename = "cap_ms", with = "millis")]
    pub cap: Duration,
    /// Give up after this many failed attempts in a row. Default: never.
    pub max_attempts: Option<u32>,
    /// A connection that stays up this long resets the backoff, in ms.
    /// Default 10000 (10 s).
    #[serde(rename = "healthy_after_ms", with = "millis")]
    pub healthy_after: Duration,
    /// Seed of the jitter generator; `None` seeds from the clock. Set it
    /// for reproducible schedules in tests.
    pub seed: Option<u64>,
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            max_attempts: None,
            healthy_after: Duration::from_secs(10),
            seed: None,
        }
    }
}

/// The reconnect schedule as a state machine (no I/O, no clock): what the
/// client's supervisor consults, public so schedules can be checked exactly.
///
/// ```
/// use std::time::Duration;
/// use lubdub_worker::{Backoff, ReconnectPolicy};
///
/// let mut p = ReconnectPolicy::new(Backoff { seed: Some(7), ..Backoff::default() });
/// for n in 0..8 {
///     let d = p.next_delay().unwrap();
///     assert!(d <= Duration::from_secs(1 << n).min(Duration::from_secs(30)));
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    cfg: Backoff,
    attempt: u32,
    rng: u64,
}

impl ReconnectPolicy {
    /// A fresh policy (attempt 0).
    pub fn new(cfg: Backoff) -> Self {
        // Each policy its own jitter: std's `RandomState` is seeded from the
        // OS once per process and differs for every instance.
        let rng = cfg.seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1
        });
        ReconnectPolicy {
            cfg,
            attempt: 0,
            rng,
        }
    }

    /// Failed attempts in a row since the last healthy connection.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The backoff ceiling for attempt `n`: `min(cap, base * 2^n)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.cfg
            .base
            .checked_mul(factor)
            .map_or(self.cfg.cap, |d| d.min(self.cfg.cap))
    }

    /// The delay before the next attempt, or `None` once `max_attempts`
    /// failed in a row. Advances the attempt counter.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.cfg.max_attempts.is_some_and(|max| self.attempt >= max) {
            return None;
        }
        let ceiling = self.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Some(ceiling.mul_f64(unit))
    }

    /// A connection ended after `lasted`; resets the counter if it was
    /// healthy (long enough, or proven by a heartbeat round trip).
    pub fn session_ended(&mut self, lasted: Duration, proven_healthy: bool) {
        if proven_healthy || lasted >= self.cfg.healthy_after {
            self.reset();
        }
    }

    /// Back to attempt 0.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: Option<u32>) -> ReconnectPolicy {
        ReconnectPolicy::new(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_attempts: max,
            healthy_after: Duration::from_secs(10),
            seed: Some(1),
        })
    }

    #[test]
    fn delays_are_full_jitter_under_a_growing_capped_ceiling() {
        let mut p = policy(None);
        let ceilings: Vec<u128> = (0..6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        let mut spread = Vec::new();
        for n in 0..200u32 {
            let d = p.next_delay().unwrap();
            assert!(d <= p.ceiling(n), "attempt {n}: {d:?}");
            if n >= 4 {
                spread.push(d.as_millis());
            }
        }
        // full jitter: the capped delays cover the whole [0, cap] range
        assert!(spread.iter().any(|&d| d < 250) && spread.iter().any(|&d| d > 750));
        assert!(
            p.ceiling(u32::MAX) == Duration::from_millis(1000),
            "no overflow"
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let a: Vec<_> = {
            let mut p = policy(None);
            (0..10).map(|_| p.next_delay()).collect()
        };
        let b: Vec<_> = {
            let mut p = policy(None);
            (0..10).map(|_| p.next_delay()).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn max_attempts_then_none() {
        let mut p = policy(Some(3));
        assert!(p.next_delay().is_some());
        assert!(p.next_delay().is_some());
        assert!(p.next_delay().is_some());
        assert_eq!(p.next_delay(), None);
        p.reset();
        assert!(p.next_delay().is_some());
    }

    #[test]
    fn counter_resets_only_after_a_healthy_session() {
        let mut p = policy(None);
        for _ in 0..4 {
            p.next_delay();
        }
        // flapping: connected, dropped at once, not proven healthy
        p.session_ended(Duration::from_millis(50), false);
        assert_eq!(p.attempt(), 4);
        // proven by a heartbeat round trip
        p.session_ended(Duration::from_millis(50), true);
        assert_eq!(p.attempt(), 0);
        for _ in 0..4 {
            p.next_delay();
        }
        // stayed up long enough
        p.session_ended(Duration::from_secs(10), false);
        assert_eq!(p.attempt(), 0);
    }

    #[test]
    fn backoff_deserializes_with_defaults() {
        let b: Backoff = serde_json::from_str(r#"{"base_ms": 250, "max_attempts": 7}"#).unwrap();
        assert_eq!(b.base, Duration::from_millis(250));
        assert_eq!(b.cap, Duration::from_secs(30));
        assert_eq!(b.max_attempts, Some(7));
    }
}
