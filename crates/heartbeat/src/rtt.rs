//! Round-trip time estimation (RFC 6298).

use std::time::Duration;

/// Round-trip time statistics of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttStats {
    /// The most recent sample.
    pub latest: Duration,
    /// Smoothed RTT (RFC 6298 `SRTT`, gain 1/8).
    pub smoothed: Duration,
    /// RTT variation (RFC 6298 `RTTVAR`, gain 1/4).
    pub variation: Duration,
    /// The smallest sample seen.
    pub min: Duration,
    /// Number of samples.
    pub samples: u64,
}

impl RttStats {
    /// RFC 6298's retransmission timeout, `SRTT + max(G, 4 * RTTVAR)`, with
    /// clock granularity `granularity`: a sensible ack timeout for this peer.
    pub fn rto(&self, granularity: Duration) -> Duration {
        self.smoothed + granularity.max(self.variation * 4)
    }
}

/// RFC 6298 estimator: `SRTT` and `RTTVAR` with alpha = 1/8 and beta = 1/4,
/// plus the latest and minimum samples.
///
/// ```
/// use std::time::Duration;
/// use lubdub_heartbeat::RttEstimator;
///
/// let ms = Duration::from_millis;
/// let mut rtt = RttEstimator::new();
/// rtt.update(ms(100));
/// assert_eq!(rtt.stats().unwrap().smoothed, ms(100));
/// assert_eq!(rtt.stats().unwrap().variation, ms(50));
/// rtt.update(ms(200));
/// let s = rtt.stats().unwrap();
/// assert_eq!(s.smoothed, Duration::from_micros(112_500)); // 7/8*100 + 1/8*200
/// assert_eq!(s.variation, Duration::from_micros(62_500)); // 3/4*50 + 1/4*100
/// assert_eq!((s.latest, s.min, s.samples), (ms(200), ms(100), 2));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RttEstimator {
    stats: Option<RttStats>,
}

impl RttEstimator {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sample.
    pub fn update(&mut self, sample: Duration) {
        self.stats = Some(match self.stats {
            None => RttStats {
                latest: sample,
                smoothed: sample,
                variation: sample / 2,
                min: sample,
                samples: 1,
            },
            Some(s) => {
                let err = if s.smoothed > sample {
                    s.smoothed - sample
                } else {
                    sample - s.smoothed
                };
                RttStats {
                    latest: sample,
                    // RTTVAR first, with the old SRTT, as RFC 6298 2.3 says.
                    variation: (s.variation * 3 + err) / 4,
                    smoothed: (s.smoothed * 7 + sample) / 8,
                    min: s.min.min(sample),
                    samples: s.samples + 1,
                }
            }
        });
    }

    /// The statistics, once there is a sample.
    pub fn stats(&self) -> Option<RttStats> {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_and_tracks_min() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new();
        assert!(r.stats().is_none());
        r.update(ms(40));
        for _ in 0..100 {
            r.update(ms(10));
        }
        let s = r.stats().unwrap();
        assert!(s.smoothed < ms(11) && s.smoothed > ms(9), "{s:?}");
        assert!(s.variation < ms(1));
        assert_eq!(s.min, ms(10));
        assert_eq!(s.samples, 101);
        assert_eq!(s.rto(ms(100)), s.smoothed + ms(100));
        r.update(ms(5));
        assert_eq!(r.stats().unwrap().min, ms(5));
        assert_eq!(r.stats().unwrap().latest, ms(5));
    }
}
