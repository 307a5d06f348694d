//! Worker, connections and callbacks over real loopback sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{recv, wait_until, LineClient, WAIT};
use lubdub::{
    Backpressure, CloseReason, ConfigError, ConnError, Error, Limits, ListenAddr, Misuse, Raw,
    SendStatus, Text, Timer, Worker, WorkerConfig,
};

fn echo_worker() -> Worker<Text> {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, line| {
        let _ = c.send(&line);
    });
    w
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Start,
    Connect(u64, bool),
    Message(u64, String),
    Close(u64, CloseReason, bool),
    Stop,
}

#[test]
fn callbacks_run_in_order_and_map_membership_brackets_them() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    let map: Arc<Mutex<Option<lubdub::WorkerHandle<Text>>>> = Arc::default();
    {
        let tx = tx.clone();
        let map2 = map.clone();
        w.on_worker_start(move |h| {
            *map2.lock().unwrap() = Some(h.clone());
            tx.send(Ev::Start).unwrap();
        });
    }
    let in_map = {
        let map = map.clone();
        move |id: u64| {
            map.lock()
                .unwrap()
                .as_ref()
                .unwrap()
                .connections()
                .contains_key(&id)
        }
    };
    {
        let tx = tx.clone();
        let in_map = in_map.clone();
        w.on_connect(move |c| tx.send(Ev::Connect(c.id(), in_map(c.id()))).unwrap());
    }
    {
        let tx = tx.clone();
        w.on_message(move |c, m| {
            tx.send(Ev::Message(c.id(), m.clone())).unwrap();
            let _ = c.send(&m);
        });
    }
    {
        let tx = tx.clone();
        let in_map = in_map.clone();
        w.on_close(move |c, r| {
            tx.send(Ev::Close(c.id(), r.clone(), in_map(c.id())))
                .unwrap()
        });
    }
    {
        w.on_worker_stop(move |_| tx.send(Ev::Stop).unwrap());
    }
    let h = w.start().unwrap();
    assert_eq!(recv(&rx), Ev::Start);
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.roundtrip("hi"), "hi");
    let Ev::Connect(id, true) = recv(&rx) else {
        panic!("connection must be in the map during on_connect")
    };
    assert_eq!(recv(&rx), Ev::Message(id, "hi".into()));
    drop(c);
    assert_eq!(recv(&rx), Ev::Close(id, CloseReason::PeerClosed, true));
    wait_until("connection leaves the map", || h.connections().is_empty());
    h.stop_and_wait();
    assert_eq!(recv(&rx), Ev::Stop);
    assert!(rx.try_recv().is_err(), "no other event");
}

#[test]
fn thousand_concurrent_clients_keep_the_map_consistent() {
    const N: usize = 1000;
    let connects = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let mut w = echo_worker();
    w.count(2);
    {
        let connects = connects.clone();
        w.on_connect(move |_| {
            connects.fetch_add(1, Ordering::SeqCst);
        });
        let closes = closes.clone();
        w.on_close(move |_, _| {
            closes.fetch_add(1, Ordering::SeqCst);
        });
    }
    let h = w.start().unwrap();
    let addr = h.local_addr();
    // 4 threads open 250 connections each and do one round trip on each.
    let clients: Vec<Vec<LineClient>> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..4)
            .map(|t| {
                s.spawn(move || {
                    (0..N / 4)
                        .map(|i| {
                            let mut c = LineClient::connect(addr);
                            let msg = format!("{t}-{i}");
                            assert_eq!(c.roundtrip(&msg), msg);
                            c
                        })
                        .collect()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    wait_until("all connected", || h.connections().len() == N);
    assert_eq!(connects.load(Ordering::SeqCst), N);
    // every entry is a live connection with a distinct id
    let ids: std::collections::HashSet<u64> = h.connections().iter().map(|e| *e.key()).collect();
    assert_eq!(ids.len(), N);
    // leave concurrently
    std::thread::scope(|s| {
        for group in clients {
            s.spawn(move || drop(group));
        }
    });
    wait_until("all closed", || closes.load(Ordering::SeqCst) == N);
    wait_until("map empty", || h.connections().is_empty());
    assert_eq!(connects.load(Ordering::SeqCst), N);
    h.stop_and_wait();
}

#[test]
fn pipelined_lines_split_at_every_byte_boundary() {
    let h = echo_worker().start().unwrap();
    let stream: &[u8] = b"alpha\r\nbe\rta\n\nunicode \xc3\xa9\xe2\x82\xac\r\nlast\n";
    let want = "alpha\nbe\rta\n\nunicode é€\nlast\n";
    for cut in 1..stream.len() {
        let mut c = LineClient::connect(h.local_addr());
        c.send(&stream[..cut]);
        // wait until the server has read the first part, so the cut is real
        wait_until("server read the first part", || {
            h.connections().iter().any(|e| {
                e.value().remote_addr() == c.stream.local_addr().unwrap()
                    && e.value().stats().bytes_in == cut as u64
            })
        });
        c.send(&stream[cut..]);
        let mut got = String::new();
        for _ in 0..5 {
            got.push_str(&c.line());
        }
        assert_eq!(got, want, "cut at {cut}");
    }
    h.stop_and_wait();
}

#[test]
fn over_long_line_closes_only_that_connection_with_an_error() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::with_protocol("text://127.0.0.1:0", Text::with_max_length(64)).unwrap();
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    {
        let tx2 = tx.clone();
        w.on_error(move |c, e| {
            let tx = &tx2;
            let too_large = matches!(
                e,
                ConnError::Protocol(lubdub::ProtocolError::TooLarge { .. })
            );
            tx.send((c.id(), format!("error {too_large}"))).unwrap();
        });
        w.on_close(move |c, r| tx.send((c.id(), format!("close {r:?}"))).unwrap());
    }
    let h = w.start().unwrap();
    let mut good = LineClient::connect(h.local_addr());
    assert_eq!(good.roundtrip("before"), "before");
    let mut bad = LineClient::connect(h.local_addr());
    bad.send(&[b'x'; 100]);
    let (id, e) = recv(&rx);
    assert_eq!(e, "error true");
    assert_eq!(recv(&rx), (id, "close Protocol".to_string()));
    assert!(bad.read_to_eof().is_empty());
    assert_eq!(good.roundtrip("after"), "after");
    // a line of exactly the maximum (63 bytes + \n) is fine
    let max = "y".repeat(63);
    assert_eq!(good.roundtrip(&max), max);
    h.stop_and_wait();
}

#[test]
fn invalid_utf8_is_a_protocol_error_and_closes() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker();
    w.on_error(move |_, e| {
        tx.send(matches!(
            e,
            ConnError::Protocol(lubdub::ProtocolError::InvalidData {
                expected: "UTF-8",
                ..
            })
        ))
        .unwrap();
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"ok\n\xff\xfe\n");
    assert_eq!(c.line(), "ok\n");
    assert!(recv(&rx));
    assert!(c.read_to_eof().is_empty());
    h.stop_and_wait();
}

#[test]
fn send_buffer_limit_full_then_drain_with_a_client_that_stops_reading() {
    const LIMIT: usize = 64 * 1024;
    let (tx, rx) = mpsc::channel::<String>();
    let dropped = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<Raw>::new("tcp://127.0.0.1:0").unwrap();
    // Workerman's drop-and-report; `PauseRecv` (the default) is tested in
    // tests/overload.rs.
    w.limits(
        Limits::default()
            .send_buffer_size(LIMIT)
            .backpressure(Backpressure::Drop),
    );
    {
        let tx1 = tx.clone();
        w.on_buffer_full(move |c| {
            tx1.send(format!("full {}", c.send_buffer_len() >= LIMIT))
                .unwrap()
        });
        let tx = tx.clone();
        let tx2 = tx.clone();
        w.on_buffer_drain(move |c| tx2.send(format!("drain {}", c.send_buffer_len())).unwrap());
        let dropped = dropped.clone();
        w.on_error(move |_, e| {
            if let ConnError::SendBufferFull { dropped: n, limit } = e {
                assert_eq!(*limit, LIMIT);
                dropped.fetch_add(*n as usize, Ordering::SeqCst);
            }
        });
        // On "go", push 16 KiB chunks from a timer, 64 per loop turn, until
        // one is dropped: loopback socket buffers absorb megabytes first.
        let max_seen = max_seen.clone();
        w.on_message(move |c, _| {
            let c = c.clone();
            let chunk = vec![b'z'; 16 * 1024];
            let max_seen = max_seen.clone();
            let tx = tx.clone();
            let mut queued = 0usize;
            let mut done = false;
            Timer::add(Duration::ZERO, move || {
                for _ in 0..64 {
                    if done {
                        return;
                    }
                    match c.send(&chunk) {
                        SendStatus::Queued => queued += 1,
                        SendStatus::BufferFull => {
                            done = true;
                            tx.send(format!("queued {queued}")).unwrap();
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                    max_seen.fetch_max(c.send_buffer_len(), Ordering::SeqCst);
                    assert!(queued < 4096, "the buffer never filled");
                }
            })
            .unwrap();
        });
    }
    let h = w.start().unwrap();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"go").unwrap();
    // kernel buffers absorb megabytes first, so full/drain may alternate
    // before the client-side window closes for good. `on_buffer_full` runs
    // on the connection's loop after the send that filled the buffer
    // returned (here after the timer's turn), never inside `send`.
    let mut fulls = 0;
    let mut queued_msg = None;
    while fulls == 0 || queued_msg.is_none() {
        let ev = recv(&rx);
        match ev.as_str() {
            "full true" => fulls += 1,
            e if e.starts_with("drain") => {}
            _ => queued_msg = Some(ev),
        }
    }
    let queued_msg = queued_msg.unwrap();
    assert!(fulls >= 1, "on_buffer_full fired");
    let queued: usize = queued_msg
        .strip_prefix("queued ")
        .unwrap_or_else(|| panic!("{queued_msg}"))
        .parse()
        .unwrap();
    // memory stays bounded: never more than the limit plus one chunk queued
    assert!(max_seen.load(Ordering::SeqCst) <= LIMIT + 16 * 1024);
    // now read everything: the buffer drains
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while total < queued * 16 * 1024 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        total += n;
    }
    assert_eq!(total, queued * 16 * 1024, "exactly the queued bytes arrive");
    assert_eq!(recv(&rx), "drain 0");
    // The episode's one drop was reported once: when the buffer drained
    // (before the drain event), or after a second if the machine stalled.
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    h.stop_and_wait();
}

#[test]
fn panic_in_a_callback_closes_that_connection_only() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| {
        if m == "boom" {
            panic!("user bug");
        }
        let _ = c.send(&m);
    });
    {
        let tx2 = tx.clone();
        w.on_error(move |_, e| {
            let tx = &tx2;
            if let ConnError::CallbackPanic { callback, message } = e {
                tx.send(format!("{callback}: {message}")).unwrap();
            }
        });
        w.on_close(move |_, r| tx.send(format!("close {r}")).unwrap());
    }
    let h = w.start().unwrap();
    let mut good = LineClient::connect(h.local_addr());
    let mut bad = LineClient::connect(h.local_addr());
    assert_eq!(good.roundtrip("1"), "1");
    bad.send(b"boom\n");
    assert_eq!(recv(&rx), "on_message: user bug");
    assert_eq!(recv(&rx), "close callback panicked");
    assert!(bad.read_to_eof().is_empty());
    assert_eq!(good.roundtrip("2"), "2");
    h.stop_and_wait();
}

#[test]
fn panics_in_connect_close_and_timer_do_not_stop_the_worker() {
    let mut w = echo_worker();
    let first = Arc::new(AtomicUsize::new(0));
    {
        let first = first.clone();
        w.on_connect(move |_| {
            if first.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("connect bug");
            }
        });
    }
    w.on_close(|_, _| panic!("close bug"));
    w.on_worker_start(|_| {
        Timer::add(Duration::from_millis(1), || panic!("timer bug")).unwrap();
    });
    let h = w.start().unwrap();
    let mut c1 = LineClient::connect(h.local_addr());
    assert!(
        c1.read_to_eof().is_empty(),
        "panicking on_connect closes it"
    );
    drop(c1); // the server lingers for our FIN before it forgets the connection
    wait_until("first closed", || h.connections().is_empty());
    for i in 0..3 {
        let mut c = LineClient::connect(h.local_addr());
        assert_eq!(c.roundtrip(&i.to_string()), i.to_string());
    }
    h.stop_and_wait();
}

#[test]
fn graceful_stop_delivers_queued_data() {
    const SIZE: usize = 4 * 1024 * 1024;
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Raw>::new("tcp://127.0.0.1:0").unwrap();
    w.limits(
        Limits::default()
            .send_buffer_size(SIZE * 2)
            .stop_timeout(WAIT),
    );
    w.on_message(move |c, _| {
        // queue far more than the socket buffers hold, then report
        let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        assert!(c.send(&payload).is_queued());
        tx.send(c.send_buffer_len()).unwrap();
    });
    let h = w.start().unwrap();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"x").unwrap();
    assert!(recv(&rx) > 0);
    // stop while megabytes are still queued, then start reading
    let stopper = {
        let h = h.clone();
        std::thread::spawn(move || h.stop_and_wait())
    };
    let mut got = Vec::with_capacity(SIZE);
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    stopper.join().unwrap();
}

#[test]
fn close_flushes_destroy_does_not_and_close_with_sends_last_words() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| match m.as_str() {
        "close" => {
            let _ = c.send("a");
            let _ = c.send("b");
            c.close();
            assert!(!c.send("after close").is_queued());
        }
        "bye" => c.close_with("goodbye"),
        "destroy" => {
            let _ = c.send("never");
            c.destroy();
        }
        other => {
            let _ = c.send(other);
        }
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"close\n");
    assert_eq!(c.read_to_eof(), b"a\nb\n");
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"bye\n");
    assert_eq!(c.read_to_eof(), b"goodbye\n");
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"destroy\n");
    assert!(c.read_to_eof().is_empty());
    h.stop_and_wait();
}

#[test]
fn pause_and_resume_recv() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(move |c, m| {
        tx.send(m.clone()).unwrap();
        if m == "pause" {
            c.pause_recv();
            let c = c.clone();
            Timer::once(Duration::from_millis(50), move || {
                let _ = c.send("resuming");
                c.resume_recv();
            })
            .unwrap();
        }
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    // all in one write: the lines after "pause" are already read but held
    c.send(b"pause\nx\ny\n");
    assert_eq!(recv(&rx), "pause");
    assert_eq!(c.line(), "resuming\n");
    assert_eq!(recv(&rx), "x");
    assert_eq!(recv(&rx), "y");
    h.stop_and_wait();
}

#[test]
fn async_handler_keeps_per_connection_order_and_does_not_block_others() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message_async(|c, m| async move {
        // a slow "database call": later messages are quicker
        let ms: u64 = m.parse().unwrap_or(0);
        async_io_sleep(Duration::from_millis(ms)).await;
        let _ = c.send(&m);
    });
    let h = w.start().unwrap();
    let mut slow = LineClient::connect(h.local_addr());
    slow.send(b"2000\n200\n100\n0\n");
    let mut fast = LineClient::connect(h.local_addr());
    let t = std::time::Instant::now();
    assert_eq!(fast.roundtrip("0"), "0");
    // the slow connection's first handler sleeps 2 s; a blocked loop would
    // make this round trip wait for it
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "other connections are not blocked"
    );
    for want in ["2000", "200", "100", "0"] {
        assert_eq!(slow.line(), format!("{want}\n"));
    }
    h.stop_and_wait();
}

/// A timer future on the loop, built from `Timer::once` (no extra runtime).
async fn async_io_sleep(d: Duration) {
    let (tx, rx) = futures_lite::future::block_on(async { std::sync::mpsc::channel::<()>() });
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker_slot: Arc<Mutex<Option<std::task::Waker>>> = Arc::default();
    {
        let done = done.clone();
        let slot = waker_slot.clone();
        Timer::once(d, move || {
            done.store(true, Ordering::SeqCst);
            let _ = tx.send(());
            if let Some(w) = slot.lock().unwrap().take() {
                w.wake();
            }
        })
        .unwrap();
    }
    futures_lite::future::poll_fn(|cx| {
        if done.load(Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        *waker_slot.lock().unwrap() = Some(cx.waker().clone());
        std::task::Poll::Pending
    })
    .await;
    drop(rx);
}

#[test]
fn ipv6_port_zero_count_and_config() {
    let mut w = Worker::<Text>::new("text://[::1]:0").unwrap();
    w.count(2).on_message(|c, m| {
        let _ = c.send(&m);
    });
    let h = w.start().unwrap();
    assert!(h.local_addr().is_ipv6());
    assert_ne!(h.local_addr().port(), 0);
    assert_eq!(h.count(), 2);
    for i in 0..8 {
        let mut c = LineClient::connect(h.local_addr());
        assert_eq!(c.roundtrip(&format!("v6 {i}")), format!("v6 {i}"));
    }
    h.stop_and_wait();

    let cfg: WorkerConfig = serde_json::from_str(
        r#"{"listen": "text://127.0.0.1:0", "count": 1, "name": "cfg",
            "limits": {"send_buffer_size": 1000, "close_timeout_ms": 250}}"#,
    )
    .unwrap();
    let mut w = Worker::from_config(&cfg, Text::new()).unwrap();
    assert_eq!(w.limits_ref().send_buffer_size, 1000);
    assert_eq!(w.limits_ref().close_timeout, Duration::from_millis(250));
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    let h = w.start().unwrap();
    assert_eq!(h.name(), "cfg");
    assert_eq!(LineClient::connect(h.local_addr()).roundtrip("cfg"), "cfg");
    h.stop_and_wait();

    assert!(matches!(
        Worker::<Text>::new("frame://127.0.0.1:0"),
        Err(Error::Config(ConfigError::SchemeMismatch {
            expected: "text",
            ..
        }))
    ));
    let typed: ListenAddr = "127.0.0.1:0"
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .into();
    assert!(Worker::<Raw>::new(typed).is_ok());
}

#[test]
fn context_stats_and_last_activity() {
    struct Session {
        name: Mutex<String>,
    }
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_connect(|c| {
        c.set_context(Session {
            name: Mutex::new("anon".into()),
        })
    });
    w.on_message(|c, m| {
        let s = c.context::<Session>().unwrap();
        if let Some(n) = m.strip_prefix("name ") {
            *s.name.lock().unwrap() = n.to_string();
        }
        let st = c.stats();
        let reply = format!(
            "{} {} {}",
            s.name.lock().unwrap(),
            st.messages_in,
            st.bytes_in
        );
        let _ = c.send(&reply);
        assert!(c.context::<u32>().is_none(), "wrong type gives None");
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.roundtrip("hello"), "anon 1 6");
    let conn = h.connections().iter().next().unwrap().value().clone();
    let before = conn.last_active();
    assert_eq!(c.roundtrip("name bob"), "bob 2 15");
    assert!(
        conn.last_active() > before,
        "reads update the activity stamp"
    );
    // the counter is bumped right after the write returns: wait for it
    wait_until("bytes_out counted", || conn.stats().bytes_out == 9 + 9);
    assert_eq!(conn.stats().messages_out, 2);
    h.stop_and_wait();
}

#[test]
fn timer_outside_a_loop_is_an_error() {
    assert!(matches!(
        Timer::add(Duration::from_secs(1), || {}),
        Err(Misuse::NoEventLoop)
    ));
    assert!(matches!(
        Timer::once(Duration::ZERO, || {}),
        Err(Misuse::NoEventLoop)
    ));
    assert!(!Timer::del(
        lubdub_worker::timer_queue::TimerQueue::<()>::new().add(
            std::time::Instant::now(),
            Duration::ZERO,
            false,
            ()
        )
    ));
}

#[test]
fn plugins_run_before_callbacks_and_can_consume_messages() {
    use lubdub::{Connection, Flow, Plugin};
    struct Pinger(mpsc::Sender<String>);
    impl Plugin<Text> for Pinger {
        fn on_worker_start(&self, w: &lubdub::WorkerHandle<Text>) {
            self.0.send(format!("start {}", w.name())).unwrap();
        }
        fn on_connect(&self, c: &Connection<Text>) {
            let _ = c.send("welcome");
        }
        fn on_message(&self, c: &Connection<Text>, msg: &String) -> Flow {
            if msg == "ping" {
                let _ = c.send("pong");
                return Flow::Consumed;
            }
            Flow::Continue
        }
        fn on_close(&self, c: &Connection<Text>, r: &CloseReason) {
            self.0
                .send(format!("plugin close {} {r}", c.is_closed()))
                .unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker();
    w.name("plugged").plugin(Pinger(tx.clone()));
    w.on_close(move |_, _| tx.send("user close".into()).unwrap());
    let h = w.start().unwrap();
    assert_eq!(recv(&rx), "start plugged");
    let mut c = LineClient::connect(h.local_addr());
    assert_eq!(c.line(), "welcome\n");
    assert_eq!(c.roundtrip("ping"), "pong");
    assert_eq!(c.roundtrip("hello"), "hello");
    drop(c);
    assert_eq!(recv(&rx), "plugin close true closed by peer");
    assert_eq!(recv(&rx), "user close");
    h.stop_and_wait();
}

#[test]
fn sends_of_one_loop_turn_leave_in_one_write() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| {
        let n: usize = m.parse().unwrap();
        for i in 0..n {
            let _ = c.send(&format!("reply {i}"));
        }
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"100\n");
    for i in 0..100 {
        assert_eq!(c.line(), format!("reply {i}\n"));
    }
    let conn = h.connections().iter().next().unwrap().value().clone();
    wait_until("counted", || conn.stats().bytes_out > 0);
    assert_eq!(conn.stats().messages_out, 100);
    assert_eq!(conn.stats().write_calls, 1, "100 sends, one write syscall");
    // pipelined requests read together are answered with one write too
    c.send(b"3\n3\n3\n");
    for _ in 0..3 {
        for i in 0..3 {
            assert_eq!(c.line(), format!("reply {i}\n"));
        }
    }
    wait_until("counted", || conn.stats().messages_out == 109);
    assert!(conn.stats().write_calls <= 3);
    h.stop_and_wait();
}

/// Parent side: `Worker::run` in a child process stops on SIGTERM, runs
/// `on_worker_stop`, delivers what was queued, and exits.
/// Syscalls `read`/`write` (not `recv`/`send`) made so far by the calling
/// thread: `syscr` and `syscw` of `/proc/thread-self/io`.
#[cfg(target_os = "linux")]
fn thread_rw_syscalls() -> Option<(u64, u64)> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    let field = |name: &str| -> Option<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("syscr:")?, field("syscw:")?))
}

/// The loop's own wake-ups cost no notifier traffic: waking tasks after a
/// wait does not ring the eventfd, and a wait does not re-arm anything.
/// Sockets use `recv`/`send`, so over 200 round trips the loop thread's
/// `read`/`write` counts only move for reading `/proc` itself.
#[cfg(target_os = "linux")]
#[test]
fn loop_wakeups_make_no_notifier_syscalls() {
    if thread_rw_syscalls().is_none() {
        eprintln!("skipped: /proc/thread-self/io is not available (no task I/O accounting)");
        return;
    }
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|c, m| {
        if m == "io" {
            let (r, w) = thread_rw_syscalls().unwrap();
            let _ = c.send(&format!("{r} {w}"));
        } else {
            let _ = c.send(m.as_str());
        }
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    let counts = |c: &mut LineClient| -> (u64, u64) {
        let line = c.roundtrip("io");
        let mut it = line.split(' ').map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let (r0, w0) = counts(&mut c);
    for i in 0..200 {
        let m = format!("m{i}");
        assert_eq!(c.roundtrip(&m), m);
    }
    let (r1, w1) = counts(&mut c);
    // Each of the 200 round trips is at least one wait and one wake-up;
    // before, each cost a notifier write and two notifier reads.
    assert!(r1 - r0 <= 20, "loop thread made {} read syscalls", r1 - r0);
    assert!(w1 - w0 <= 20, "loop thread made {} write syscalls", w1 - w0);
    h.stop_and_wait();
}

/// `Connection::local_addr` is the address the peer connected to: the
/// listener's own for a listener bound to one address, the one `accept`
/// reports for a wildcard listener (two loopback addresses tried).
#[test]
fn connection_local_addr_is_the_address_connected_to() {
    for listen in ["text://127.0.0.1:0", "text://0.0.0.0:0"] {
        let mut w = Worker::<Text>::new(listen).unwrap();
        w.on_connect(|c| {
            let _ = c.send(&c.local_addr().to_string());
        });
        let h = w.start().unwrap();
        let port = h.local_addr().port();
        let targets: &[&str] = if listen.contains("0.0.0.0") {
            &["127.0.0.1", "127.0.0.2"]
        } else {
            &["127.0.0.1"]
        };
        for ip in targets {
            let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let mut c = LineClient::connect(addr);
            assert_eq!(c.line(), format!("{addr}\n"), "listening on {listen}");
        }
        h.stop_and_wait();
    }
}

/// A peer that sends its requests and half-closes gets every reply, then
/// EOF: the server flushes everything before its own FIN, and `on_close`
/// (PeerClosed) comes after.
#[test]
fn half_closed_peer_gets_every_reply_then_eof() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker();
    w.on_close(move |_, r| {
        let _ = tx.send(format!("{r:?}"));
    });
    let h = w.start().unwrap();
    let s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut sent = Vec::new();
    for i in 0..2000 {
        sent.extend_from_slice(format!("{i:0>127}\n").as_bytes());
    }
    let expected = sent.clone();
    let t = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    let r = (&s).read_to_end(&mut got);
    assert!(
        r.is_ok(),
        "{r:?} after {} of {} bytes",
        got.len(),
        expected.len()
    );
    t.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "replies differ from requests");
    assert_eq!(recv(&rx), "PeerClosed");
    wait_until("map empty", || h.connections().is_empty());
    h.stop_and_wait();
}

/// Bytes that arrive before the server has even accepted the connection
/// are read: a new socket is registered as not yet readable, and the
/// registration itself reports what is already there.
///
/// Deterministic: the loop is held in `on_worker_start`, before its accept
/// loop starts, until the client has connected, written, and the server's
/// kernel has acknowledged the bytes (they sit in the not-yet-accepted
/// socket). `on_connect` checks that order. After that the client does
/// nothing but read, so the only edge that can get the bytes read is the
/// one the registration raises; without it the read below times out.
#[test]
fn bytes_sent_before_the_accept_are_read() {
    use std::sync::atomic::AtomicBool;
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let gate_rx = Mutex::new(gate_rx);
    let written = Arc::new(AtomicBool::new(false));
    let (accepted_tx, accepted_rx) = mpsc::channel::<bool>();
    let accepted_tx = Mutex::new(accepted_tx);
    let mut w = echo_worker();
    w.on_worker_start(move |_| {
        // Returns when the test opens the gate (or fails and drops it).
        let _ = gate_rx.lock().unwrap().recv();
    });
    let seen = written.clone();
    w.on_connect(move |_| {
        let _ = accepted_tx
            .lock()
            .unwrap()
            .send(seen.load(Ordering::SeqCst));
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    c.send(b"early\n");
    wait_until("the server's kernel acknowledged the early bytes", || {
        common::unacked_bytes(&c.stream).unwrap_or(0) == 0
    });
    written.store(true, Ordering::SeqCst);
    gate_tx.send(()).unwrap();
    assert!(recv(&accepted_rx), "accepted before the bytes were written");
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(&c.stream), &mut line);
    assert!(
        matches!(read, Ok(n) if n > 0),
        "the bytes sent before the accept were not echoed within {WAIT:?} \
         (no readable edge after the accept?): {read:?}"
    );
    assert_eq!(line, "early\n");
    h.stop_and_wait();
}

#[test]
fn sigterm_stops_run_gracefully() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "run_until_signal_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("LUBDUB_SIGNAL_CHILD", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let port: u16 = loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
            if let Some(i) = line.find("PORT ") {
                break line[i + 5..].trim().parse().unwrap();
            }
        };
        let mut c = LineClient::connect(([127, 0, 0, 1], port).into());
        assert_eq!(c.roundtrip("hello"), "hello");
        // the child queues a reply larger than the socket buffers hold, then
        // we signal it while most of it is still in its send queue
        c.send(b"big\n");
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child ended early");
            if line.contains("QUEUED") {
                break;
            }
        }
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let got = c.read_to_eof();
        assert_eq!(
            got.len(),
            8 * 1024 * 1024 + 1,
            "the queued reply arrives whole"
        );
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("STOPPED"), "on_worker_stop ran: {rest}");
        assert!(child.wait().unwrap().success());
    }
}

#[test]
#[ignore = "run in a child process by sigterm_stops_run_gracefully"]
fn run_until_signal_child() {
    if std::env::var_os("LUBDUB_SIGNAL_CHILD").is_none() {
        return;
    }
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.limits(Limits::default().send_buffer_size(32 * 1024 * 1024));
    w.on_worker_start(|h| println!("PORT {}", h.local_addr().port()));
    w.on_worker_stop(|_| println!("STOPPED"));
    w.on_message(|c, m| {
        if m == "big" {
            assert!(c.send(&"x".repeat(8 * 1024 * 1024)).is_queued());
            println!("QUEUED");
        } else {
            let _ = c.send(&m);
        }
    });
    w.run().unwrap();
}

/// An async handler and a peer that pipelines far more than the async
/// queue (64) in one write: the input held back while the queue is full is
/// delivered as it drains, without the peer sending another byte (it once
/// stopped after 192 of 1,000 until more bytes came).
#[test]
fn an_async_handler_answers_every_pipelined_line() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message_async(|c, line| async move {
        let _ = c.send(&line);
    });
    let h = w.start().unwrap();
    let mut c = LineClient::connect(h.local_addr());
    let batch: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    c.send(batch.as_bytes());
    for i in 0..1000 {
        assert_eq!(c.line(), format!("line {i}\n"), "reply {i} of 1,000");
    }
    h.stop_and_wait();
}

#[test]
fn loop_stats_and_connection_infos_show_what_an_operator_asks() {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.count(2).on_message(|c, m| {
        if m == "kick" {
            c.close();
        } else {
            let _ = c.send(&m);
        }
    });
    w.on_worker_start(|_| {
        Timer::add(Duration::from_millis(5), || {}).unwrap();
    });
    let h = w.start().unwrap();
    let mut clients: Vec<LineClient> = (0..4)
        .map(|_| LineClient::connect(h.local_addr()))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for k in 0..=i {
            assert_eq!(c.roundtrip(&format!("{i}.{k}")), format!("{i}.{k}"));
        }
    }
    let mut kicked = clients.remove(0);
    kicked.send(b"kick\n");
    assert!(kicked.read_to_eof().is_empty());
    // Our FIN ends the server's linger: its socket (and its count) goes.
    drop(kicked);
    drop(clients.remove(0));
    wait_until("two closes counted", || {
        h.loop_stats().iter().map(|s| s.closed_total()).sum::<u64>() == 2
    });
    // A loop reports once its thread has started: on a loaded machine the
    // second may start after the connections of this test went to the first.
    wait_until("both loops report", || h.loop_stats().len() == 2);
    let stats = h.loop_stats();
    assert_eq!(stats.len(), 2, "one per loop");
    fn sum(stats: &[lubdub::LoopStats], f: impl Fn(&lubdub::LoopStats) -> u64) -> u64 {
        stats.iter().map(f).sum()
    }
    assert_eq!(sum(&stats, |s| s.accepted), 4);
    assert_eq!(sum(&stats, |s| s.connections as u64), 2);
    // 1 + 2 + 3 + 4 lines echoed, and the kick.
    assert_eq!(sum(&stats, |s| s.messages_in), 11);
    assert_eq!(sum(&stats, |s| s.messages_out), 10);
    let kind = |name| lubdub::CLOSE_KINDS.iter().position(|k| *k == name).unwrap();
    assert_eq!(sum(&stats, |s| s.closed[kind("local")]), 1);
    assert_eq!(sum(&stats, |s| s.closed[kind("peer_closed")]), 1);
    assert_eq!(sum(&stats, |s| s.handshake_failures), 0);
    assert!(stats.iter().all(|s| s.timers == 1), "each loop's timer");
    wait_until("the loops' lag sampled", || {
        h.loop_stats()
            .iter()
            .all(|s| s.lag_buckets.iter().sum::<u64>() > 0)
    });
    let infos: Vec<lubdub::ConnInfo> = h.connections().iter().map(|e| e.value().info()).collect();
    assert_eq!(infos.len(), 2);
    for info in &infos {
        assert_eq!(info.state, lubdub::ConnState::Open);
        assert_eq!(info.send_queue, 0);
        assert!(info.age >= info.idle);
        assert!(info.loop_index < 2);
        assert_eq!(info.stats.messages_in, info.stats.messages_out);
        assert!(clients
            .iter()
            .any(|c| c.stream.local_addr().unwrap() == info.remote));
    }
    h.stop_and_wait();
}
