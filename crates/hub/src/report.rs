//! Reporting a repeated fault once per episode: the first occurrence at
//! once, then at most one summary a minute while it goes on.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long an episode's summary waits.
const EPISODE: Duration = Duration::from_secs(60);

/// Occurrences of one fault, and when it was last reported.
#[derive(Default)]
pub(crate) struct Episodes {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Episodes {
    /// Counts one occurrence at `now`. Returns `Some(n)` when it is to be
    /// reported: the first of an episode (`n == 1`), or the first after a
    /// minute since the last report (`n` occurrences since then, this one
    /// included).
    pub fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, count) = &mut *s;
        *count += 1;
        match *last {
            Some(t) if now.saturating_duration_since(t) < EPISODE => None,
            _ => {
                let n = std::mem::take(count);
                *last = Some(now);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_makes_one_report_a_minute() {
        let e = Episodes::default();
        let t0 = Instant::now();
        assert_eq!(e.hit(t0), Some(1));
        for i in 1..1000 {
            assert_eq!(e.hit(t0 + Duration::from_millis(i)), None);
        }
        // A minute on: one summary of what came meanwhile.
        assert_eq!(e.hit(t0 + EPISODE), Some(1000));
        assert_eq!(e.hit(t0 + EPISODE + Duration::from_secs(1)), None);
        // Later, the next report counts the one held back too.
        assert_eq!(e.hit(t0 + 3 * EPISODE), Some(2));
        assert_eq!(e.hit(t0 + 3 * EPISODE), None);
    }
}
