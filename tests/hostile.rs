//! A suite that tries to break the server over real loopback sockets. Each
//! case checks that the bad peer gets a clear error and a close, and that a
//! healthy client on the same worker keeps round-tripping meanwhile.
//! (Bogus frame lengths, a header cut then EOF, and a reset mid-frame, with a
//! healthy client alongside: `tests/frame.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{recv, wait_until, LineClient, WAIT};
use lubdub::{CloseReason, ConnError, Limits, Raw, SendStatus, Text, Timer, Worker, WorkerHandle};

fn echo() -> Worker<Text> {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    w
}

fn rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_text_input_closes_only_the_offender_with_a_clear_error() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::with_protocol("text://127.0.0.1:0", Text::with_max_length(1024)).unwrap();
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    let t = tx.clone();
    w.on_error(move |_, e| t.send(format!("error {e}")).unwrap());
    w.on_close(move |_, r| tx.send(format!("close {r}")).unwrap());
    let h = w.start().unwrap();
    let mut healthy = LineClient::connect(h.local_addr());
    let long_line = vec![b'a'; 4096];
    let cases: [(&[u8], &str); 3] = [
        (&long_line, "error protocol error: message of"),
        (b"caf\xc3(\n", "error protocol error: invalid UTF-8"),
        (b"ok\n\xff\xfe\xfd\n", "error protocol error: invalid UTF-8"),
    ];
    for (bytes, want) in cases {
        let mut bad = LineClient::connect(h.local_addr());
        bad.send(bytes);
        let err = recv(&rx);
        assert!(err.starts_with(want), "{err}");
        assert_eq!(recv(&rx), "close protocol error");
        let _ = bad.read_to_eof();
        assert_eq!(healthy.roundtrip("still here"), "still here");
    }
    h.stop_and_wait();
}

#[test]
fn slow_sender_one_byte_at_a_time() {
    let h = echo().start().unwrap();
    let mut healthy = LineClient::connect(h.local_addr());
    let mut slow = LineClient::connect(h.local_addr());
    let local = slow.stream.local_addr().unwrap();
    let line = b"the slowest line ever sent\n";
    for (i, b) in line.iter().enumerate() {
        slow.send(std::slice::from_ref(b));
        // the server really sees each byte on its own
        wait_until("byte read", || {
            h.connections().iter().any(|e| {
                e.value().remote_addr() == local && e.value().stats().bytes_in == i as u64 + 1
            })
        });
        if i % 8 == 0 {
            assert_eq!(healthy.roundtrip("ok"), "ok");
        }
    }
    assert_eq!(slow.line(), "the slowest line ever sent\n");
    h.stop_and_wait();
}

#[test]
fn silent_connections_hit_the_first_message_timeout() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo();
    w.limits(Limits::default().first_message_timeout(Some(Duration::from_millis(200))));
    w.on_close(move |_, r| tx.send(r.clone()).unwrap());
    let h = w.start().unwrap();
    let mut talker = LineClient::connect(h.local_addr());
    assert_eq!(talker.roundtrip("hi"), "hi");
    let mut silent: Vec<LineClient> = (0..5)
        .map(|_| LineClient::connect(h.local_addr()))
        .collect();
    for _ in 0..5 {
        assert_eq!(recv(&rx), CloseReason::FirstMessageTimeout);
    }
    for s in &mut silent {
        assert!(s.read_to_eof().is_empty());
    }
    // the talker sent its first message in time and stays
    assert_eq!(talker.roundtrip("still here"), "still here");
    h.stop_and_wait();
}

#[test]
fn max_connections_refuses_the_excess_and_recovers() {
    let mut w = echo();
    w.limits(Limits::default().max_connections(Some(3)));
    let h = w.start().unwrap();
    let mut ok: Vec<LineClient> = (0..3)
        .map(|i| {
            let mut c = LineClient::connect(h.local_addr());
            assert_eq!(c.roundtrip(&i.to_string()), i.to_string());
            c
        })
        .collect();
    let mut extra = LineClient::connect(h.local_addr());
    extra.send(b"let me in\n");
    assert!(extra.read_to_eof().is_empty(), "refused: closed at once");
    assert_eq!(h.rejected(), 1);
    assert_eq!(h.connections().len(), 3);
    drop(ok.pop());
    wait_until("a slot frees", || h.connections().len() == 2);
    let mut again = LineClient::connect(h.local_addr());
    assert_eq!(again.roundtrip("in"), "in");
    h.stop_and_wait();
}

/// A line client connected from `source` (a loopback address of its own).
fn connect_from(source: &str, server: std::net::SocketAddr) -> LineClient {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: std::net::SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&server.into()).unwrap();
    LineClient::from_stream(sock.into())
}

#[test]
fn max_connections_per_ip_refuses_one_address_and_serves_the_others() {
    let mut w = echo();
    w.limits(
        Limits::default()
            .max_connections(None)
            .max_connections_per_ip(Some(2)),
    );
    let h = w.start().unwrap();
    let mut first: Vec<LineClient> = (0..2)
        .map(|i| {
            let mut c = connect_from("127.0.0.1", h.local_addr());
            assert_eq!(c.roundtrip(&i.to_string()), i.to_string());
            c
        })
        .collect();
    let mut extra = connect_from("127.0.0.1", h.local_addr());
    extra.send(b"let me in\n");
    assert!(extra.read_to_eof().is_empty(), "refused: closed at once");
    assert_eq!(h.rejected(), 1);
    // Another address has its own allowance.
    let mut other = connect_from("127.0.0.2", h.local_addr());
    assert_eq!(other.roundtrip("from elsewhere"), "from elsewhere");
    // A closed connection gives its slot back.
    drop(first.pop());
    wait_until("the socket is gone", || h.live_tasks() == 2);
    let mut again = connect_from("127.0.0.1", h.local_addr());
    assert_eq!(again.roundtrip("in"), "in");
    h.stop_and_wait();
}

#[test]
fn the_limits_for_a_public_port_are_on_by_default() {
    let l = Limits::default();
    assert_eq!(l.max_connections, Some(lubdub::default_max_connections()));
    assert_eq!(l.max_connections_per_ip, Some(1024));
    assert_eq!(l.first_message_timeout, Some(Duration::from_secs(60)));
    assert_eq!(l.message_timeout, Some(Duration::from_secs(30)));
    assert_eq!(l.handshake_timeout, Duration::from_secs(10));
    // The open-file limit, less a reserve for everything else.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    if rl.rlim_cur != libc::RLIM_INFINITY {
        assert_eq!(
            lubdub::default_max_connections(),
            (rl.rlim_cur as usize).saturating_sub(64).max(64)
        );
    }
}

#[test]
fn per_connection_max_package_size() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo();
    w.on_connect(|c| c.set_max_package_size(16));
    w.on_error(move |_, e| {
        tx.send(matches!(
            e,
            ConnError::Protocol(lubdub::ProtocolError::TooLarge { len: 22, max: 16 })
        ))
        .unwrap()
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.roundtrip("short enough"), "short enough");
    // a complete 22-byte line in one read is refused too, not only a partial one
    c.send(b"this line is too long\n");
    assert!(recv(&rx));
    assert!(c.read_to_eof().is_empty());
    h.stop_and_wait();
}

#[test]
fn a_reader_that_never_reads_while_we_push_100_mb() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 100 * 1024 * 1024;
    let (tx, rx) = mpsc::channel::<String>();
    let mut w = Worker::<Raw>::new("tcp://127.0.0.1:0").unwrap();
    w.limits(Limits::default().close_timeout(Duration::from_millis(300)));
    let t = tx.clone();
    w.on_buffer_full(move |_| t.send("full".into()).unwrap());
    let t = tx.clone();
    w.on_error(move |_, e| {
        if matches!(e, ConnError::FlushTimeout) {
            t.send("flush timeout".into()).unwrap();
        }
    });
    let t = tx.clone();
    w.on_close(move |_, r| t.send(format!("close {r}")).unwrap());
    w.on_message(move |c, _| {
        let c = c.clone();
        let chunk = vec![7u8; CHUNK];
        let mut offered = 0usize;
        let mut dropped = 0usize;
        let tx = tx.clone();
        let id = std::rc::Rc::new(std::cell::Cell::new(None));
        let me = id.clone();
        id.set(Some(
            Timer::add(Duration::ZERO, move || {
                for _ in 0..64 {
                    if offered >= TOTAL {
                        tx.send(format!("offered {offered} dropped {dropped}"))
                            .unwrap();
                        Timer::del(me.get().unwrap());
                        return;
                    }
                    offered += CHUNK;
                    if let SendStatus::BufferFull = c.send(&chunk) {
                        dropped += CHUNK;
                    }
                }
            })
            .unwrap(),
        ));
    });
    let h = w.start().unwrap();
    let before = rss_kib();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.write_all(b"push").unwrap();
    let mut saw_full = false;
    let summary = loop {
        let ev = recv(&rx);
        if ev == "full" {
            saw_full = true;
        } else {
            break ev;
        }
    };
    assert!(saw_full);
    let dropped: usize = summary.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        dropped > TOTAL / 2,
        "most of 100 MB is refused, not buffered: {summary}"
    );
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB while 100 MB were offered"
    );
    // the stuck connection can still be closed: bounded by the close timeout
    let conn = h.connections().iter().next().unwrap().value().clone();
    conn.close();
    assert_eq!(recv(&rx), "flush timeout");
    // The close did not complete cleanly: `on_close` says so.
    assert_eq!(recv(&rx), format!("close {}", CloseReason::FlushTimeout));
    wait_until("task gone", || h.live_tasks() == 0);
    drop(s);
    h.stop_and_wait();
}

#[test]
fn ten_thousand_connect_close_cycles_leave_nothing_behind() {
    const N: usize = 10_000;
    let connects = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut w = echo();
    let c2 = connects.clone();
    w.on_connect(move |_| {
        c2.fetch_add(1, Ordering::Relaxed);
    });
    let c3 = closes.clone();
    w.on_close(move |_, _| {
        c3.fetch_add(1, Ordering::Relaxed);
    });
    w.on_message(move |c, m| {
        if m == "timers?" {
            let _ = c.send(&Timer::count().to_string());
            tx.send(()).unwrap();
        } else {
            let _ = c.send(&m);
        }
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut probe = LineClient::connect(addr);
    assert_eq!(probe.roundtrip("warm"), "warm");
    let before = rss_kib();
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                for i in 0..N / 4 {
                    let mut c = TcpStream::connect(addr).unwrap();
                    if i % 2 == 0 {
                        // half of them say something first, half leave at once
                        c.set_read_timeout(Some(WAIT)).unwrap();
                        c.write_all(format!("{t}\n").as_bytes()).unwrap();
                        let mut b = [0u8; 2];
                        c.read_exact(&mut b).unwrap();
                    }
                }
            });
        }
    });
    wait_until("every cycle closed", || closes.load(Ordering::Relaxed) == N);
    assert_eq!(connects.load(Ordering::Relaxed), N + 1);
    wait_until("only the probe is left", || {
        h.connections().len() == 1 && h.live_tasks() == 1
    });
    assert_eq!(probe.roundtrip("timers?"), "0", "no timer left behind");
    recv(&rx);
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB over {N} cycles");
    h.stop_and_wait();
}

#[test]
fn panics_in_every_callback_kind_leave_the_worker_serving() {
    use lubdub::{Connection, Flow, Plugin};
    struct Bomb;
    impl Plugin<Text> for Bomb {
        fn on_worker_start(&self, _: &WorkerHandle<Text>) {
            panic!("plugin start");
        }
        fn on_message(&self, _: &Connection<Text>, m: &String) -> Flow {
            if m == "plugin" {
                panic!("plugin message");
            }
            Flow::Continue
        }
        fn on_close(&self, _: &Connection<Text>, _: &CloseReason) {
            panic!("plugin close");
        }
    }
    let errors = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.limits(Limits::default().send_buffer_size(8)).plugin(Bomb);
    w.on_worker_start(|_| {
        Timer::once(Duration::from_millis(1), || panic!("timer")).unwrap();
        panic!("worker start");
    });
    w.on_worker_stop(|_| panic!("worker stop"));
    w.on_buffer_full(|_| panic!("buffer full"));
    w.on_buffer_drain(|_| panic!("buffer drain"));
    let e2 = errors.clone();
    w.on_error(move |_, _| {
        e2.fetch_add(1, Ordering::SeqCst);
        panic!("on_error itself");
    });
    w.on_close(|_, _| panic!("close"));
    w.on_message(|c, m| match m.as_str() {
        "message" => panic!("message"),
        "full" => {
            let _ = c.send("0123456789");
        }
        _ => {
            let _ = c.send(&m);
        }
    });
    let h = w.start().unwrap();
    for trigger in ["message", "plugin", "full"] {
        let mut bad = LineClient::connect(h.local_addr());
        bad.send(format!("{trigger}\n").as_bytes());
        let _ = bad.read_to_eof();
        let mut good = LineClient::connect(h.local_addr());
        assert_eq!(
            good.roundtrip("alive"),
            "alive",
            "after a panic in {trigger}"
        );
    }
    assert!(
        errors.load(Ordering::SeqCst) >= 3,
        "panics are reported through on_error"
    );
    h.stop_and_wait(); // on_worker_stop panics: stopping still completes
}

#[test]
fn async_handler_panic_closes_only_its_connection() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message_async(|c, m| async move {
        if m == "boom" {
            panic!("async boom");
        }
        let _ = c.send(&m);
    });
    let h = w.start().unwrap();
    let mut bad = LineClient::connect(h.local_addr());
    bad.send(b"boom\n");
    assert!(bad.read_to_eof().is_empty());
    let mut good = LineClient::connect(h.local_addr());
    assert_eq!(good.roundtrip("fine"), "fine");
    h.stop_and_wait();
}

/// Parent side: runs `fd_exhaustion_child` in a child process whose fd
/// limit is low, exhausts it, and checks the accept loop.
#[test]
fn fd_exhaustion_backs_off_without_spinning_and_recovers() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fd_exhaustion_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LUBDUB_FD_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut read_tagged = |tag: &str| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "child ended before {tag}"
            );
            // libtest may print its own text before ours on the same line
            if let Some(i) = line.find(tag) {
                return line[i + tag.len()..].trim().to_string();
            }
        }
    };
    let port: u16 = read_tagged("PORT").parse().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // far more connections than the child's 64 descriptors
    let mut conns: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    writeln!(stdin, "cpu").unwrap();
    let cpu_ms: u64 = read_tagged("CPU").parse().unwrap();
    assert!(
        cpu_ms < 400,
        "the accept loop burned {cpu_ms} ms of CPU in 1 s while out of fds"
    );
    // free descriptors: the backlog is accepted and served again
    let mut last = conns.pop().unwrap();
    conns.truncate(10);
    last.set_read_timeout(Some(WAIT)).unwrap();
    last.write_all(b"alive?\n").unwrap();
    let mut reply = [0u8; 7];
    last.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"alive?\n");
    writeln!(stdin, "logs").unwrap();
    let logs = read_tagged("LOGS");
    let count = |key: &str| -> usize {
        logs.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Hundreds of accepts failed; each run of failures (freeing fds lets
    // the backlog refill them, so there may be a second) logs one warning
    // and one recovery note.
    let (warn, recovered) = (count("warn="), count("recovered="));
    assert!((1..=3).contains(&warn), "{logs}");
    assert_eq!(warn, recovered, "{logs}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
#[ignore = "run in a child process by fd_exhaustion_backs_off_without_spinning_and_recovers"]
fn fd_exhaustion_child() {
    use std::io::BufRead;
    if std::env::var_os("LUBDUB_FD_CHILD").is_none() {
        return;
    }
    struct Counter;
    static WARN: AtomicUsize = AtomicUsize::new(0);
    static RECOVERED: AtomicUsize = AtomicUsize::new(0);
    impl log::Log for Counter {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            let msg = r.args().to_string();
            if r.level() == log::Level::Warn && msg.contains("accept failed") {
                WARN.fetch_add(1, Ordering::SeqCst);
            }
            if msg.contains("accepting again") {
                RECOVERED.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn flush(&self) {}
    }
    log::set_logger(&Counter).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let h = echo().start().unwrap();
    println!("PORT {}", h.local_addr().port());
    let cpu = || {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        ms(u.ru_utime) + ms(u.ru_stime)
    };
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().as_str() {
            "cpu" => {
                // wait until the listener is out of descriptors, then measure
                wait_until("fd exhaustion", || WARN.load(Ordering::SeqCst) > 0);
                let start = cpu();
                std::thread::sleep(Duration::from_secs(1));
                println!("CPU {}", cpu() - start);
            }
            "logs" => println!(
                "LOGS warn={} recovered={}",
                WARN.load(Ordering::SeqCst),
                RECOVERED.load(Ordering::SeqCst)
            ),
            _ => {}
        }
    }
    h.stop_and_wait();
}

#[test]
fn a_presumed_dead_peer_is_closed_without_waiting_for_a_flush() {
    // The server fills the socket of a peer that neither reads nor writes;
    // the first-message timeout (like the heartbeat's timeout) must close it
    // at once, not after the 30 s close timeout it would spend flushing.
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Raw>::new("tcp://127.0.0.1:0").unwrap();
    w.limits(
        Limits::default()
            .first_message_timeout(Some(Duration::from_millis(300)))
            .close_timeout(Duration::from_secs(30)),
    );
    w.on_connect(|c| {
        let chunk = vec![1u8; 64 * 1024];
        while c.send(&chunk).is_queued() {}
    });
    let t = tx.clone();
    w.on_error(move |_, e| t.send(format!("error {e}")).unwrap());
    w.on_close(move |_, r| tx.send(format!("close {r}")).unwrap());
    let h = w.start().unwrap();
    let started = std::time::Instant::now();
    let _s = TcpStream::connect(h.local_addr()).unwrap();
    let mut evs = vec![recv(&rx)];
    while !evs.last().unwrap().starts_with("close") {
        evs.push(recv(&rx));
    }
    assert_eq!(
        evs.last().unwrap(),
        "close first-message timeout",
        "{evs:?}"
    );
    assert!(
        !evs.iter().any(|e| e.contains("flush")),
        "no flush timeout for a dead peer: {evs:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after {:?}",
        started.elapsed()
    );
    wait_until("socket released", || h.live_tasks() == 0);
    h.stop_and_wait();
}
