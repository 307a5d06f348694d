//! The cost of one idle-sweep pass over 10,000 connections when nothing
//! expires (target: under 100 µs in release builds). Run with
//! `cargo test -p lubdub-heartbeat --release --test sweep_cost -- --nocapture`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use lubdub_heartbeat::{IdleSweep, Liveness, SweepConfig};

/// What a `Connection` is to the sweep: an `Arc` to a struct holding the
/// last-read timestamp as nanoseconds after a process-wide epoch.
#[derive(Clone)]
struct Stand(Arc<Inner>);

struct Inner {
    last_active: AtomicU64,
    loop_index: usize,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

impl Liveness for Stand {
    fn last_active(&self) -> Instant {
        epoch() + Duration::from_nanos(self.0.last_active.load(Ordering::Relaxed))
    }
    fn loop_index(&self) -> usize {
        self.0.loop_index
    }
}

#[test]
fn sweep_of_10k_idle_free_connections() {
    let n = 10_000u64;
    let base = epoch();
    let map: DashMap<u64, Stand> = (0..n)
        .map(|i| {
            let at = Duration::from_secs(10) + Duration::from_millis(i % 40_000);
            let s = Stand(Arc::new(Inner {
                last_active: AtomicU64::new(at.as_nanos() as u64),
                loop_index: (i % 2) as usize,
            }));
            (i, s)
        })
        .collect();
    let now = base + Duration::from_secs(60);
    // What each event loop's timer walks: its slab of connections.
    let slab: Vec<Option<Stand>> = map.iter().map(|e| Some(e.value().clone())).collect();
    let mut sweep = IdleSweep::new(SweepConfig::default(), base);
    let mut expired = Vec::new();
    let best_of = |f: &mut dyn FnMut() -> usize| {
        for _ in 0..20 {
            f();
        }
        let mut best = Duration::MAX;
        for _ in 0..200 {
            let t = Instant::now();
            assert_eq!(f(), n as usize);
            best = best.min(t.elapsed());
        }
        best
    };
    let slab_best = best_of(&mut || sweep.scan_iter(slab.iter().flatten(), now, &mut expired));
    let map_best = best_of(&mut || sweep.scan(&map, None, now, &mut expired));
    assert!(expired.is_empty());
    assert_eq!(expired.capacity(), 0, "nothing allocated");
    let r = sweep.run(&map, Some(1), now, &mut expired);
    assert_eq!((r.scanned, r.expired), ((n / 2) as usize, 0));
    println!(
        "sweep of {n} connections, nothing expired: slab (what the plugin walks) {slab_best:?}, \
         DashMap::iter {map_best:?}"
    );
    if !cfg!(debug_assertions) {
        assert!(
            slab_best < Duration::from_micros(100),
            "best pass took {slab_best:?}"
        );
    }
}
