//! Client connections over loopback: queueing, connect errors, backoff,
//! reconnect after a server restart, spread, cancellation.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{recv, wait_until};
use lubdub::{
    Backoff, Client, CloseReason, ConfigError, ConnError, Connection, Error, EventLoop, LoopHandle,
    Misuse, ReconnectPolicy, Text, Timer, Worker, WorkerHandle,
};

fn echo_server(addr: &str) -> WorkerHandle<Text> {
    let mut w = Worker::<Text>::new(addr).unwrap();
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    w.start().unwrap()
}

/// Runs a standalone event loop on a thread; `setup` runs on it.
fn spawn_loop(
    setup: impl FnOnce(&LoopHandle) + Send + 'static,
) -> (LoopHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        EventLoop::run(move |h| {
            setup(h);
            tx.send(h.clone()).unwrap();
        })
    });
    (recv(&rx), t)
}

/// A port nothing listens on (bound then released).
fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn sends_before_connect_are_delivered_in_order() {
    let server = echo_server("text://127.0.0.1:0");
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.on_message(move |_, m| tx.send(m).unwrap());
        let conn = client.connect().unwrap();
        assert!(
            !conn.is_connected(),
            "connect() returns before the connection is up"
        );
        for i in 0..100 {
            assert!(conn.send(&format!("msg {i}")).is_queued());
        }
    });
    for i in 0..100 {
        assert_eq!(recv(&rx), format!("msg {i}"));
    }
    lp.stop();
    t.join().unwrap();
    server.stop_and_wait();
}

#[test]
fn refused_connects_back_off_with_growing_jittered_delays_then_give_up() {
    let addr = dead_port();
    let policy = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(160),
        max_attempts: Some(5),
        healthy_after: Duration::from_secs(10),
        seed: Some(42),
    };
    // The exact schedule this seed produces, computed without any I/O.
    let mut expected = ReconnectPolicy::new(policy.clone());
    let delays: Vec<Duration> = (0..5).map(|_| expected.next_delay().unwrap()).collect();
    assert!(expected.next_delay().is_none());
    for (n, d) in delays.iter().enumerate() {
        assert!(*d <= expected.ceiling(n as u32));
    }
    assert_eq!(
        (0..5)
            .map(|n| expected.ceiling(n).as_millis())
            .collect::<Vec<_>>(),
        [20, 40, 80, 160, 160],
        "ceilings grow exponentially up to the cap"
    );
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]) && delays.iter().any(|d| d.as_millis() % 20 != 0),
        "delays are jittered, not the ceilings: {delays:?}"
    );

    let (tx, rx) = mpsc::channel();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.auto_reconnect(policy);
        client.on_error(move |_, e| {
            let ev = match e {
                ConnError::ConnectFailed { addr: a, source } => {
                    assert_eq!(a, &addr, "the error names the address");
                    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
                    "failed".to_string()
                }
                ConnError::ReconnectGaveUp { attempts } => format!("gave up {attempts}"),
                other => format!("other {other}"),
            };
            tx.send((Instant::now(), ev)).unwrap();
        });
        client.connect().unwrap();
    });
    let mut times = vec![];
    for _ in 0..6 {
        let (at, ev) = recv(&rx);
        assert_eq!(ev, "failed");
        times.push(at);
    }
    assert_eq!(recv(&rx).1, "gave up 5");
    for (i, d) in delays.iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(
            gap >= *d,
            "attempt {} came after {gap:?}, before its delay {d:?}",
            i + 1
        );
    }
    lp.stop();
    t.join().unwrap();
}

#[test]
fn clients_reconnect_after_the_server_restarts_on_the_same_port() {
    let server = echo_server("text://127.0.0.1:0");
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel::<String>();
    let conn_slot: Arc<Mutex<Option<Connection<Text>>>> = Arc::default();
    let slot = conn_slot.clone();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.auto_reconnect(Backoff {
            base: Duration::from_millis(50),
            ..Backoff::default()
        });
        let t1 = tx.clone();
        client.on_connect(move |_| t1.send("connect".into()).unwrap());
        let t2 = tx.clone();
        client.on_close(move |_, r| t2.send(format!("close {r}")).unwrap());
        client.on_message(move |_, m| tx.send(m).unwrap());
        *slot.lock().unwrap() = Some(client.connect().unwrap());
    });
    let conn = conn_slot.lock().unwrap().clone().unwrap();
    assert_eq!(recv(&rx), "connect");
    let id = conn.id();
    let _ = conn.send("first");
    assert_eq!(recv(&rx), "first");

    server.stop_and_wait();
    assert_eq!(recv(&rx), "close closed by peer");
    // sends while disconnected are queued for the next session
    assert!(conn.send("queued while down").is_queued());
    let server = echo_server(&format!("text://{addr}"));
    assert_eq!(recv(&rx), "connect");
    assert_eq!(recv(&rx), "queued while down");
    let _ = conn.send("second");
    assert_eq!(recv(&rx), "second");
    assert_eq!(
        conn.id(),
        id,
        "the same connection handle across reconnects"
    );
    lp.stop();
    t.join().unwrap();
    server.stop_and_wait();
}

#[test]
fn two_hundred_clients_spread_their_reconnects_over_the_backoff_window() {
    const N: usize = 200;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let start_server = |addr: &str, arrivals: Arc<Mutex<Vec<Instant>>>| {
        let mut w = Worker::<Text>::new(addr).unwrap();
        w.on_connect(move |_| arrivals.lock().unwrap().push(Instant::now()));
        w.start().unwrap()
    };
    let server = start_server("text://127.0.0.1:0", arrivals.clone());
    let addr = server.local_addr();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.auto_reconnect(Backoff {
            base: Duration::from_millis(1000),
            cap: Duration::from_millis(4000),
            ..Backoff::default()
        });
        for _ in 0..N {
            client.connect().unwrap();
        }
    });
    wait_until("all clients connected", || server.connections().len() == N);
    server.stop_and_wait();
    arrivals.lock().unwrap().clear();
    let server = start_server(&format!("text://{addr}"), arrivals.clone());
    wait_until("all clients reconnected", || {
        arrivals.lock().unwrap().len() == N
    });
    let mut times = arrivals.lock().unwrap().clone();
    times.sort();
    let spread = times[N - 1] - times[0];
    // busiest 50 ms window
    let busiest = (0..N)
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_millis(50))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        spread >= Duration::from_millis(500),
        "reconnects spread over only {spread:?}"
    );
    // Without jitter all N arrive within a few milliseconds; with it, about
    // a tenth of them share a 50 ms window. N / 2 leaves room for a stall
    // of a few hundred milliseconds on a loaded machine bunching arrivals.
    assert!(
        busiest <= N / 2,
        "{busiest} of {N} reconnects arrived within 50 ms"
    );
    lp.stop();
    t.join().unwrap();
    server.stop_and_wait();
}

#[test]
fn close_cancels_pending_reconnects_and_nothing_fires_afterwards() {
    let addr = dead_port();
    let failures = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let f = failures.clone();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.auto_reconnect(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(100),
            ..Backoff::default()
        });
        let failed = f.clone();
        client.on_error(move |_, _| {
            f.fetch_add(1, Ordering::SeqCst);
        });
        let conn = client.connect().unwrap();
        let c = conn.clone();
        let client = Arc::new(client);
        // close from a timer once the first attempt failed (a reconnect is
        // then pending)
        let cl = client.clone();
        Timer::add(Duration::from_millis(5), move || {
            if failed.load(Ordering::SeqCst) >= 1 && !c.is_closing() && cl.connections().len() == 1
            {
                c.close();
            }
        })
        .unwrap();
        tx.send((conn, client)).unwrap();
    });
    let (conn, client) = recv(&rx);
    wait_until("client finished for good", || {
        client.connections().is_empty()
    });
    assert!(conn.is_closed());
    assert!(!conn.send("x").is_queued());
    assert!(
        conn.reconnect(Duration::ZERO).is_err(),
        "a closed client stays closed"
    );
    let n = failures.load(Ordering::SeqCst);
    assert!(n >= 1, "close() came only after a failed attempt");
    // With a 100 ms ceiling, three more attempts would come in 300 ms. This
    // sleep is a window in which something must NOT happen (there is no
    // event for "no attempt"); a stall can only hide an attempt, never fail
    // the test.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        failures.load(Ordering::SeqCst),
        n,
        "no attempt after close()"
    );
    lp.stop();
    t.join().unwrap();
}

#[test]
fn manual_reconnect_like_workerman_and_cancel() {
    let server = echo_server("text://127.0.0.1:0");
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel::<String>();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        let t1 = tx.clone();
        let sessions = Arc::new(AtomicUsize::new(0));
        client.on_connect(move |c| {
            let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
            t1.send(format!("connect {n}")).unwrap();
            let _ = c.send(&format!("hello {n}"));
        });
        let t2 = tx.clone();
        client.on_message(move |c, m| {
            t2.send(m.clone()).unwrap();
            if m == "hello 1" {
                // Workerman style: reconnect from a callback
                c.reconnect(Duration::from_millis(20)).unwrap();
            } else if m == "hello 2" {
                // as short as the first, so an ignored cancel would show
                c.reconnect(Duration::from_millis(20)).unwrap();
                c.cancel_reconnect();
            }
        });
        client.on_close(move |_, r| tx.send(format!("close {r}")).unwrap());
        client.connect().unwrap();
    });
    assert_eq!(recv(&rx), "connect 1");
    assert_eq!(recv(&rx), "hello 1");
    assert_eq!(recv(&rx), "close reconnect requested");
    assert_eq!(recv(&rx), "connect 2");
    assert_eq!(recv(&rx), "hello 2");
    assert_eq!(recv(&rx), "close reconnect requested");
    // Cancelled: no third session, which would have come 20 ms after the
    // close. A window in which something must NOT happen (there is no event
    // for "no reconnect"); a stall can only hide a session, never fail this.
    match rx.recv_timeout(Duration::from_millis(300)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("after cancel_reconnect: {other:?}"),
    }
    lp.stop();
    t.join().unwrap();
    server.stop_and_wait();
}

#[test]
fn client_inside_a_worker_shares_its_loop_and_timers() {
    let server = echo_server("text://127.0.0.1:0");
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel::<String>();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_worker_start(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        let t1 = tx.clone();
        client.on_message(move |_, m| t1.send(m).unwrap());
        let t2 = tx.clone();
        client.on_close(move |_, r| t2.send(format!("close {r}")).unwrap());
        let conn = client.connect().unwrap();
        let mut n = 0;
        Timer::add(Duration::from_millis(10), move || {
            n += 1;
            let _ = conn.send(&format!("tick {n}"));
        })
        .unwrap();
    });
    let h = w.start().unwrap();
    for n in 1..=3 {
        assert_eq!(recv(&rx), format!("tick {n}"));
    }
    h.stop_and_wait();
    // The worker's stop closes its clients for good, once. The loop thread
    // has been joined, so every callback it ran has sent by now: what is in
    // the channel is all there will be, no wait needed.
    let closes: Vec<String> = rx.try_iter().filter(|m| m.starts_with("close")).collect();
    assert_eq!(
        closes,
        [format!("close {}", CloseReason::WorkerStopped)],
        "exactly one close"
    );
    server.stop_and_wait();
}

#[test]
fn connect_timeout_is_reported_as_a_connect_failure() {
    use socket2::{Domain, Socket, Type};
    // A listener that never accepts, its backlog filled: further SYNs are
    // dropped and a connect hangs until our timeout.
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    let (tx, rx) = mpsc::channel();
    // Taken before the attempt starts, so a stall cannot break the bound.
    let started = Instant::now();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::<Text>::new(addr).unwrap();
        client.connect_timeout(Duration::from_millis(300));
        client.on_error(move |_, e| {
            if let ConnError::ConnectFailed { source, .. } = e {
                tx.send(source.kind()).unwrap();
            }
        });
        client.connect().unwrap();
    });
    assert_eq!(recv(&rx), std::io::ErrorKind::TimedOut);
    // our timeout, not an early failure (the kernel's own gives up after
    // minutes; `recv` bounds the wait)
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "timed out after {took:?}"
    );
    lp.stop();
    t.join().unwrap();
    drop(fillers);
}

#[test]
fn client_off_a_loop_is_an_error() {
    let client = Client::<Text>::new("text://127.0.0.1:9").unwrap();
    assert!(matches!(
        client.connect(),
        Err(Error::Misuse(Misuse::NoEventLoop))
    ));
    assert!(matches!(
        Client::<Text>::new("frame://127.0.0.1:9"),
        Err(Error::Config(ConfigError::SchemeMismatch { .. }))
    ));
}
