//! Overload over real loopback sockets: fairness between connections of one
//! loop, backpressure towards peers that do not read, reports per episode,
//! the memory budget, and memory given back after a burst.
//!
//! The timing tests take `SERIAL` so they do not compete with each other
//! for the two cores; their bounds are an order of magnitude above what
//! the behaviour gives and below what its absence gives.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{recv, wait_until, LineClient, WAIT};
use lubdub::{Backpressure, CloseReason, ConnError, Limits, Text, Worker};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts every log record, to show reports scale with episodes.
struct CountingLogger;

static LOG_RECORDS: AtomicUsize = AtomicUsize::new(0);

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("lubdub") {
            LOG_RECORDS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

fn echo_worker() -> Worker<Text> {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    w
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn one_flooding_connection_cannot_hold_the_loop() {
    let _serial = serial();
    let h = echo_worker().start().unwrap();
    let addr = h.local_addr();
    // The flood: tiny requests as fast as the socket takes them, replies
    // read and thrown away so backpressure never pauses it.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = TcpStream::connect(addr).unwrap();
    let mut reader = flood.try_clone().unwrap();
    let flooded = Arc::new(AtomicU64::new(0));
    let drain = std::thread::spawn({
        let stop = stop.clone();
        let flooded = flooded.clone();
        move || {
            let mut buf = vec![0u8; 1 << 16];
            reader
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = reader.read(&mut buf) {
                    flooded.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    });
    let writer = std::thread::spawn({
        let stop = stop.clone();
        let mut flood = flood;
        move || {
            let chunk = b"x\n".repeat(32 * 1024);
            while !stop.load(Ordering::Relaxed) {
                if flood.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    wait_until("the flood is being served", || {
        flooded.load(Ordering::Relaxed) > 1 << 20
    });
    let mut c = LineClient::connect(addr);
    let flood_before = flooded.load(Ordering::Relaxed);
    let mut rtts = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        assert_eq!(c.roundtrip(&format!("ping {i}")), format!("ping {i}"));
        rtts.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    rtts.sort();
    let (p50, p90) = (percentile(&rtts, 0.5), percentile(&rtts, 0.9));
    assert!(
        flooded.load(Ordering::Relaxed) > flood_before,
        "the flood went on meanwhile"
    );
    println!("ping-pong next to a flood: p50 {p50:?}, p90 {p90:?}");
    // One poll of the flooder takes at most 256 messages (a fraction of a
    // millisecond even unoptimised); without the budget a poll took every
    // message of 8 reads of 64 KiB, some 260,000 (hundreds of milliseconds
    // in a debug build).
    assert!(
        p50 < Duration::from_millis(20) && p90 < Duration::from_millis(60),
        "ping-pong next to a flood: p50 {p50:?}, p90 {p90:?}"
    );
    drop(c);
    h.stop_and_wait();
    let _ = writer.join();
    let _ = drain.join();
}

#[test]
fn a_peer_that_never_reads_stops_being_read_from() {
    let _serial = serial();
    for mode in [Backpressure::PauseRecv, Backpressure::Drop] {
        let mut w = echo_worker();
        w.limits(
            Limits::default()
                .backpressure(mode)
                .send_buffer_size(64 * 1024),
        );
        let h = w.start().unwrap();
        // Requests of 1 KiB, written without ever reading a reply.
        let mut s = TcpStream::connect(h.local_addr()).unwrap();
        s.set_nonblocking(true).unwrap();
        let line = [b"y".repeat(1023), b"\n".to_vec()].concat();
        let taken_in = || {
            h.connections()
                .iter()
                .map(|e| e.value().stats().bytes_in)
                .sum::<u64>()
        };
        let mut written = 0u64;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && written < 256 << 20 {
            match s.write(&line) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        let in_now = taken_in();
        match mode {
            Backpressure::PauseRecv => {
                // Kernel buffers (a few MiB each way on loopback) and twice
                // the send buffer: then the server stops reading.
                assert!(
                    in_now < 48 << 20,
                    "paused: took in {in_now} bytes of {written}"
                );
                assert!(written < 96 << 20, "the peer's writes block: {written}");
            }
            _ => assert!(
                in_now > 64 << 20,
                "Drop keeps reading: took in {in_now} bytes of {written}"
            ),
        }
        drop(s);
        h.stop_and_wait();
    }
}

#[test]
fn a_million_dropped_sends_make_a_bounded_number_of_reports_and_log_lines() {
    let _serial = serial();
    let _ = log::set_logger(&CountingLogger);
    log::set_max_level(log::LevelFilter::Trace);
    let reports = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.limits(
        Limits::default()
            .backpressure(Backpressure::Drop)
            .send_buffer_size(64 * 1024),
    );
    {
        let (reports, dropped) = (reports.clone(), dropped.clone());
        w.on_error(move |_, e| {
            if let ConnError::SendBufferFull { dropped: n, .. } = e {
                reports.fetch_add(1, Ordering::Relaxed);
                dropped.fetch_add(*n, Ordering::Relaxed);
            }
        });
    }
    w.on_close(move |_, r| tx.send(r.clone()).unwrap());
    w.on_message(|c, _| {
        let line = "z".repeat(1024);
        for _ in 0..1_000_000 {
            let _ = c.send(&line);
        }
    });
    let h = w.start().unwrap();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    let logged_before = LOG_RECORDS.load(Ordering::Relaxed);
    s.write_all(b"go\n").unwrap();
    // The peer never reads; after a second the episode is reported once.
    wait_until("the periodic report", || {
        reports.load(Ordering::Relaxed) >= 1
    });
    drop(s);
    // Our unread replies make the peer's close a reset, or a plain FIN.
    let reason = recv(&rx);
    assert!(
        matches!(reason, CloseReason::PeerClosed | CloseReason::Io(_)),
        "{reason:?}"
    );
    let total = dropped.load(Ordering::Relaxed);
    assert!(total > 900_000, "{total} drops counted");
    let (n_reports, n_logs) = (
        reports.load(Ordering::Relaxed),
        LOG_RECORDS.load(Ordering::Relaxed) - logged_before,
    );
    assert!(n_reports <= 3, "{n_reports} on_error calls for 1M drops");
    assert!(n_logs <= 20, "{n_logs} log records for 1M drops");
    h.stop_and_wait();
}

#[test]
fn over_the_memory_budget_the_largest_holders_close_and_small_ones_are_served() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker();
    w.limits(Limits::default().memory_budget(4 << 20));
    w.on_close(move |_, r| {
        let _ = tx.send(r.clone());
    });
    let h = w.start().unwrap();
    let mut healthy = LineClient::connect(h.local_addr());
    assert_eq!(healthy.roundtrip("before"), "before");
    // Eight peers each start a line of megabytes and never finish it,
    // far more than the 4 MiB budget.
    let chunk = vec![b'a'; 256 * 1024];
    let mut attackers: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(h.local_addr()).unwrap())
        .collect();
    for a in &mut attackers {
        a.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    // Until the worker closes a holder: how much a loaded machine lets
    // the attackers push per round varies (reads stop early when a
    // session grows fast), so the rounds go on, up to 8 MiB a peer (under
    // the 10 MiB message limit), rather than a fixed count.
    let mut overloads = 0;
    for _ in 0..32 {
        for a in &mut attackers {
            let _ = a.write_all(&chunk);
        }
        assert_eq!(healthy.roundtrip("during"), "during");
        while let Ok(r) = rx.try_recv() {
            assert_eq!(r, CloseReason::Overload);
            overloads += 1;
        }
        if overloads > 0 {
            break;
        }
    }
    let deadline = Instant::now() + WAIT;
    while h.buffered_bytes() > 4 << 20 && Instant::now() < deadline {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(50)) {
            assert_eq!(r, CloseReason::Overload);
            overloads += 1;
        }
    }
    while let Ok(r) = rx.try_recv() {
        assert_eq!(r, CloseReason::Overload);
        overloads += 1;
    }
    assert!(h.buffered_bytes() <= 4 << 20, "{}", h.buffered_bytes());
    assert!(overloads >= 1, "the largest holders were closed");
    assert!(overloads < 8, "not every holder: {overloads}");
    assert_eq!(healthy.roundtrip("after"), "after");
    drop(attackers);
    h.stop_and_wait();
}

/// Parent side of the RSS test: runs `memory_comes_back_child` alone in a
/// child process, so no other test's memory is counted.
#[test]
fn memory_comes_back_after_a_burst_of_large_incomplete_messages() {
    let _serial = serial();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "memory_comes_back_child",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rss back"), "{stdout}");
    for line in stdout.lines().filter(|l| l.starts_with("rss ")) {
        println!("{line}");
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "run in a child process by memory_comes_back_after_a_burst_of_large_incomplete_messages"]
fn memory_comes_back_child() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker();
    w.on_close(move |_, r| {
        let _ = tx.send(r.clone());
    });
    let h = w.start().unwrap();
    let mut healthy = LineClient::connect(h.local_addr());
    assert_eq!(healthy.roundtrip("warm"), "warm");
    let before = rss_kib();
    // Three waves of 24 peers, each sending 9 MiB of a line that never
    // ends (the limit is 10 MiB), then leaving: 216 MiB buffered per wave.
    let chunk = vec![b'b'; 1 << 20];
    for wave in 0..3 {
        let peers: Vec<_> = (0..24)
            .map(|_| {
                let addr = h.local_addr();
                let chunk = chunk.clone();
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    for _ in 0..9 {
                        s.write_all(&chunk).unwrap();
                    }
                    // Stay until the server has it all, then leave.
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                })
            })
            .collect();
        for _ in 0..24 {
            assert_eq!(recv(&rx), CloseReason::PeerClosed, "wave {wave}");
        }
        for p in peers {
            p.join().unwrap();
        }
        assert_eq!(healthy.roundtrip("between"), "between");
    }
    let limit = 2 * before + 64 * 1024;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = rss_kib();
    while after > limit && Instant::now() < deadline {
        // Traffic wakes the loop; it gives memory back when it goes idle.
        assert_eq!(healthy.roundtrip("idle"), "idle");
        std::thread::sleep(Duration::from_millis(100));
        after = rss_kib();
    }
    println!("rss before {before} KiB, after {after} KiB, limit {limit} KiB");
    assert!(after <= limit, "RSS {after} KiB > {limit} KiB");
    println!("rss back");
    h.stop_and_wait();
}
