//! Handing a worker's listening sockets to another worker (what a reload
//! does between two processes) and draining the old one, over real
//! loopback sockets.

mod common;

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{recv, LineClient, WAIT};
use lubdub::{CloseReason, ConfigError, Drain, Error, Misuse, Text, Worker, WorkerHandle};

/// A worker whose replies name it: `old:hello`, `new:hello`.
fn tagged(tag: &'static str, text: Text) -> Worker<Text> {
    let mut w = Worker::with_protocol("text://127.0.0.1:0", text).unwrap();
    w.on_message(move |c, line| {
        let _ = c.send(&format!("{tag}:{line}"));
    });
    w
}

fn successor(old: &WorkerHandle<Text>, count: usize) -> WorkerHandle<Text> {
    let mut new = tagged("new", Text::new());
    new.count(count)
        .adopt_listeners(old.listeners().expect("copies of the listeners"));
    new.start()
        .expect("the new worker starts on adopted sockets")
}

#[test]
fn connects_waiting_in_the_queue_when_the_old_worker_stops_accepting_are_served_by_the_new() {
    let old = tagged("old", Text::new()).start().unwrap();
    let addr = old.local_addr();
    let mut before = LineClient::connect(addr);
    assert_eq!(before.roundtrip("a"), "old:a");

    let new = successor(&old, 1);
    assert_eq!(new.local_addr(), addr, "the same socket, the same port");
    old.stop_accepting();
    assert!(!old.is_accepting());
    assert!(old.listeners().unwrap().is_empty(), "its copies are closed");

    // Every connect from now on lands on the adopted socket: none refused,
    // each served by the new worker.
    for i in 0..200 {
        let mut c = LineClient::from_stream(TcpStream::connect(addr).expect("never refused"));
        assert_eq!(c.roundtrip(&i.to_string()), format!("new:{i}"));
    }
    // The old worker keeps serving what it had.
    assert_eq!(before.roundtrip("b"), "old:b");
    old.stop_and_wait();
    new.stop_and_wait();
}

#[test]
fn connects_made_while_both_accept_are_all_served_by_one_or_the_other() {
    let old = tagged("old", Text::new()).start().unwrap();
    let addr = old.local_addr();
    let new = successor(&old, 1);
    let mut served = [0usize; 2];
    let mut clients = Vec::new();
    for i in 0..300 {
        let mut c = LineClient::from_stream(TcpStream::connect(addr).expect("never refused"));
        let reply = c.roundtrip(&i.to_string());
        match reply.split_once(':') {
            Some(("old", n)) if n == i.to_string() => served[0] += 1,
            Some(("new", n)) if n == i.to_string() => served[1] += 1,
            _ => panic!("unexpected reply {reply:?}"),
        }
        clients.push(c);
    }
    assert_eq!(served[0] + served[1], 300);
    old.stop_and_wait();
    new.stop_and_wait();
}

#[test]
fn a_successor_with_other_loop_counts_accepts_on_every_socket() {
    // Three loops, three SO_REUSEPORT sockets: the kernel spreads connects
    // over all three, so one loop adopting them must watch all three.
    let mut old = tagged("old", Text::new());
    old.count(3);
    let old = old.start().unwrap();
    let addr = old.local_addr();
    assert_eq!(old.listeners().unwrap().len(), 3);
    let one = successor(&old, 1);
    old.stop_accepting();
    for i in 0..120 {
        let mut c = LineClient::connect(addr);
        assert_eq!(c.roundtrip(&i.to_string()), format!("new:{i}"));
    }
    // And the other way: one socket, two loops sharing it.
    let two = successor(&one, 2);
    one.stop_accepting();
    for i in 0..50 {
        let mut c = LineClient::connect(addr);
        assert_eq!(c.roundtrip(&i.to_string()), format!("new:{i}"));
    }
    let loops: Vec<_> = two.loop_stats().iter().map(|s| s.accepted).collect();
    assert_eq!(
        loops.iter().sum::<u64>(),
        50,
        "accepted by the loops: {loops:?}"
    );
    for w in [old, one, two] {
        w.stop_and_wait();
    }
}

#[test]
fn a_socket_that_is_not_listening_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    drop(stream);
    // A connected socket passed off as a listener (a wrong fd handed over).
    let fake: TcpListener = socket2::Socket::from(accepted).into();
    let mut w = tagged("new", Text::new());
    w.adopt_listeners(vec![fake]);
    match w.start() {
        Err(Error::Config(ConfigError::Invalid(msg))) => assert!(msg.contains("listening")),
        other => panic!("expected a configuration error, got {:?}", other.err()),
    }
}

#[test]
fn a_restart_drain_tells_every_client_to_reconnect_and_ends_when_they_are_gone() {
    let (tx, rx) = mpsc::channel();
    let mut w = tagged("old", Text::new().restart_line("reconnect").unwrap());
    w.on_close(move |_, reason| {
        let _ = tx.send(reason.clone());
    });
    let old = w.start().unwrap();
    let mut clients: Vec<LineClient> = (0..40)
        .map(|i| {
            let mut c = LineClient::connect(old.local_addr());
            assert_eq!(c.roundtrip(&i.to_string()), format!("old:{i}"));
            c
        })
        .collect();
    let drainer = {
        let old = old.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let done = old
                .drain(
                    Drain::Restart {
                        spread: Duration::from_millis(200),
                    },
                    Instant::now() + WAIT,
                )
                .unwrap();
            (done, started.elapsed())
        })
    };
    for c in &mut clients {
        assert_eq!(c.line(), "reconnect\n");
        assert!(c.read_to_eof().is_empty(), "nothing after the goodbye");
    }
    drop(clients);
    let (done, took) = drainer.join().unwrap();
    assert!(done, "every socket closed before the deadline");
    assert!(
        took >= Duration::from_millis(150),
        "the goodbyes were spread over the 200 ms asked, not sent at once ({took:?})"
    );
    for _ in 0..40 {
        assert_eq!(recv(&rx), CloseReason::Restart);
    }
    assert_eq!(old.live_tasks(), 0);
    old.stop_and_wait();
}

#[test]
fn a_graceful_drain_keeps_connections_until_they_close_or_the_deadline() {
    let old = tagged("old", Text::new()).start().unwrap();
    let addr = old.local_addr();
    let mut stays = LineClient::connect(addr);
    let mut leaves = LineClient::connect(addr);
    assert_eq!(stays.roundtrip("x"), "old:x");
    assert_eq!(leaves.roundtrip("y"), "old:y");
    // A short deadline with a client that stays: not drained, still served.
    let done = old
        .drain(Drain::Graceful, Instant::now() + Duration::from_millis(100))
        .unwrap();
    assert!(!done);
    assert_eq!(stays.roundtrip("still"), "old:still");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "nothing listens any more"
    );
    drop(leaves);
    drop(stays);
    let done = old.drain(Drain::Graceful, Instant::now() + WAIT).unwrap();
    assert!(done, "drained once both clients left");
    old.stop_and_wait();
}

#[test]
fn drain_on_an_event_loop_is_refused() {
    let (tx, rx) = mpsc::channel();
    let mut w = tagged("old", Text::new());
    w.on_worker_start(move |h| {
        let _ = tx.send(h.drain(Drain::Graceful, Instant::now()));
    });
    let h = w.start().unwrap();
    assert!(matches!(recv(&rx), Err(Misuse::InvalidState(_))));
    assert!(h.is_accepting(), "a refused drain changes nothing");
    h.stop_and_wait();
}
