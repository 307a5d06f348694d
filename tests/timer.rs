//! `Timer` on a running event loop (the scheduling rules themselves are
//! tested in virtual time in `lubdub_worker::timer_queue`).

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use common::{recv, LineClient};
use lubdub::{Text, Timer, Worker};

/// Runs `setup` in `on_worker_start` of a fresh worker.
fn with_loop(
    setup: impl Fn(mpsc::Sender<String>) + Send + Sync + 'static,
) -> (lubdub::WorkerHandle<Text>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_worker_start(move |_| setup(tx.clone()));
    (w.start().unwrap(), rx)
}

#[test]
fn repeating_timer_repeats_and_deletes_itself_from_its_callback() {
    let (h, rx) = with_loop(|tx| {
        let n = Rc::new(Cell::new(0));
        let id = Rc::new(Cell::new(None));
        let id2 = id.clone();
        let t = Timer::add(Duration::from_millis(5), move || {
            n.set(n.get() + 1);
            tx.send(format!("tick {}", n.get())).unwrap();
            if n.get() == 3 {
                let deleted = Timer::del(id2.get().unwrap());
                tx.send(format!("deleted {deleted} left {}", Timer::count()))
                    .unwrap();
                // A sentinel due ten ticks later, instead of a timed look:
                // timers run in deadline order, so a fourth tick (due 5 ms
                // from now) would come before it. A late loop may skip that
                // tick past the sentinel and hide it, never fail the test.
                let tx = tx.clone();
                Timer::once(Duration::from_millis(50), move || {
                    tx.send("sentinel".into()).unwrap()
                })
                .unwrap();
            }
        })
        .unwrap();
        id.set(Some(t));
    });
    for want in [
        "tick 1",
        "tick 2",
        "tick 3",
        "deleted true left 0",
        "sentinel",
    ] {
        assert_eq!(recv(&rx), want);
    }
    h.stop_and_wait();
}

#[test]
fn one_shot_fires_once_and_delete_prevents_firing() {
    let (h, rx) = with_loop(|tx| {
        let t2 = tx.clone();
        Timer::once(Duration::from_millis(5), move || {
            t2.send("once".into()).unwrap()
        })
        .unwrap();
        let t3 = tx.clone();
        let doomed = Timer::once(Duration::from_millis(5), move || {
            t3.send("doomed".into()).unwrap()
        })
        .unwrap();
        assert!(Timer::del(doomed));
        assert!(!Timer::del(doomed), "second delete finds nothing");
        let t4 = tx.clone();
        Timer::once(Duration::from_millis(30), move || {
            t4.send("later".into()).unwrap()
        })
        .unwrap();
        // Timers run in deadline order, so "doomed" (5 ms) would come
        // before "later" however late the loop is, and a one-shot firing
        // again one delay after its run would come before this sentinel
        // (a late loop may only hide that, never fail the test).
        let t5 = tx.clone();
        Timer::once(Duration::from_millis(100), move || {
            t5.send("sentinel".into()).unwrap()
        })
        .unwrap();
    });
    assert_eq!(recv(&rx), "once");
    assert_eq!(recv(&rx), "later");
    assert_eq!(recv(&rx), "sentinel");
    h.stop_and_wait();
}

#[test]
fn zero_interval_runs_each_loop_turn_and_lets_io_through() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_worker_start(move |_| {
        let tx = tx.clone();
        let mut n = 0u64;
        Timer::add(Duration::ZERO, move || {
            n += 1;
            if n == 1000 {
                tx.send(n).unwrap();
            }
        })
        .unwrap();
    });
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    let h = w.start().unwrap();
    assert_eq!(recv(&rx), 1000);
    // the busy timer does not starve connections
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.roundtrip("still served"), "still served");
    h.stop_and_wait();
}

#[test]
fn del_all_and_timers_from_a_message_callback() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(move |c, m| match m.as_str() {
        "arm" => {
            for i in 0..3 {
                let c = c.clone();
                Timer::add(Duration::from_millis(10 + i), move || {
                    let _ = c.send("tick");
                })
                .unwrap();
            }
            let _ = c.send(&format!("armed {}", Timer::count()));
        }
        "disarm" => {
            Timer::del_all();
            let _ = c.send(&format!("disarmed {}", Timer::count()));
            tx.send(()).unwrap();
        }
        _ => {}
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.roundtrip("arm"), "armed 3");
    assert_eq!(c.line(), "tick\n");
    c.send(b"disarm\n");
    recv(&rx);
    loop {
        let l = c.line();
        if l == "disarmed 0\n" {
            break;
        }
        assert_eq!(l, "tick\n");
    }
    h.stop_and_wait();
}
