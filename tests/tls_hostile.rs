//! TLS under hostile or broken peers, over real loopback sockets: garbage
//! instead of a ClientHello, trickled, stalled and reset handshakes,
//! application bytes smuggled around a handshake, truncation, a peer that
//! never reads while 100 MB are pushed, 10,000 connect/close cycles. Each
//! case checks the bad peer is closed cleanly, nothing is delivered that
//! should not be, no socket is left behind, and a healthy TLS client on
//! the same worker keeps round-tripping.
//!
//! The peers are a raw rustls client (tests/tls_support) that can be made
//! to misbehave at any byte. Memory measurements run alone in a child
//! process (the `*_child` tests, `#[ignore]`d so they run only there).
//!
//! Four of these began as reproductions of bugs in the TLS transport: a
//! close_notify in the same read as data, plaintext past the read buffer,
//! and no close_notify when the peer closed first.

mod tls_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lubdub::{CloseReason, ConnError, Limits, Raw, SendStatus, Timer, Worker};
use tls_support::{
    client_hello, client_session, handshake, pki, queued_tls, recv, rss_kib, run_child_test,
    set_linger_zero, unacked_bytes, wait_until, Ev, TlsEcho, TlsLineClient, WAIT,
};

/// Timing-heavy tests take it, so they do not compete for the two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A plain TCP connection to `addr` with a read timeout of [`WAIT`].
fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads until the server ends the stream; returns what came. A reset
/// after the server's last bytes counts as an end too.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read to the end: {e} (after {} bytes)", out.len()),
        }
    }
}

/// Checks `bytes` is nothing but TLS alert records (content type 21, two
/// bytes each in plaintext): what a server may answer a bad peer with.
fn only_alerts(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 5 || rest[0] != 21 || rest[1] != 3 {
            return false;
        }
        let len = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        if rest.len() < 5 + len {
            return false;
        }
        rest = &rest[5 + len..];
    }
    true
}

/// A TLS echo server and a healthy client of it that has round-tripped.
fn server_and_healthy_client(
    tweak: impl FnOnce(&mut Worker<lubdub::Text>),
) -> (tls_support::Ca, TlsEcho, TlsLineClient, u64) {
    let (ca, leaf) = pki();
    let server = TlsEcho::start(leaf.server_config(), tweak);
    let mut healthy =
        TlsLineClient::connect(server.addr(), &ca.rustls_config(), "localhost").unwrap();
    assert_eq!(healthy.roundtrip("before"), "before");
    let Ev::Connect(id) = server.next("the healthy client's on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(server.next("its message"), Ev::Message(id, "before".into()));
    (ca, server, healthy, id)
}

/// Events of the server so far, apart from the healthy client's.
fn events_of_others(server: &TlsEcho, healthy: u64) -> Vec<Ev> {
    server
        .drain()
        .into_iter()
        .filter(|e| match e {
            Ev::Connect(id) | Ev::Message(id, _) | Ev::Close(id, _) | Ev::Error(id, _, _) => {
                *id != healthy
            }
        })
        .collect()
}

#[test]
fn garbage_instead_of_a_client_hello_is_closed_and_a_healthy_client_carries_on() {
    let (_ca, server, mut healthy, healthy_id) = server_and_healthy_client(|_| {});
    let mut random = tls_support::noise(4096, 1);
    // Not a handshake record's first byte, so the first five bytes already
    // fail (a plausible header would wait for its record instead).
    random[0] = 0xAB;
    let cases: [(&str, &[u8]); 4] = [
        ("random bytes", &random),
        (
            "a plaintext HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
        ("a plaintext text line", b"hello\n"),
        (
            "a TLS record header of another protocol version",
            b"\x16\x00\x01\x00\x05hello",
        ),
    ];
    for (case, bytes) in cases {
        let mut s = tcp(server.addr());
        s.write_all(bytes).unwrap();
        let answer = read_to_end(&mut s);
        assert!(
            only_alerts(&answer),
            "{case}: answered with TLS alerts at most, then closed: {answer:?}"
        );
        wait_until("the bad peer's socket closed", || {
            server.handle.live_tasks() == 1
        });
        let seen = events_of_others(&server, healthy_id);
        assert!(
            seen.iter()
                .all(|e| matches!(e, Ev::Error(_, _, Some(ErrorKind::InvalidData)))),
            "{case}: only a TLS error is reported, no session: {seen:?}"
        );
        println!("{case}: answer {answer:?}, events {seen:?}");
        assert_eq!(healthy.roundtrip(case), case);
        assert_eq!(
            server.next("the healthy client's message"),
            Ev::Message(healthy_id, case.into())
        );
    }
}

#[test]
fn a_handshake_trickled_one_byte_at_a_time_completes() {
    let (ca, server, mut healthy, healthy_id) = server_and_healthy_client(|_| {});
    let mut s = tcp(server.addr());
    let mut conn = client_session(&ca.rustls_config(), "localhost");
    let mut trickled = 0;
    handshake(&mut s, &mut conn, |s, flight| {
        for b in flight {
            s.write_all(std::slice::from_ref(b)).unwrap();
            // Each byte is its own segment: the next leaves only once the
            // server's kernel acknowledged this one.
            wait_until("the byte acknowledged", || unacked_bytes(s) == 0);
            trickled += 1;
        }
    })
    .unwrap();
    println!("{trickled} handshake bytes trickled one by one");
    assert!(trickled > 200, "the ClientHello alone is more: {trickled}");
    let mut slow = TlsLineClient::from_parts(conn, s);
    assert_eq!(slow.roundtrip("trickled"), "trickled");
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_ne!(id, healthy_id);
    assert_eq!(
        server.next("on_message"),
        Ev::Message(id, "trickled".into())
    );
    assert_eq!(healthy.roundtrip("meanwhile"), "meanwhile");
}

#[test]
fn a_stalled_handshake_is_closed_by_the_handshake_timeout() {
    let _serial = serial();
    const TIMEOUT: Duration = Duration::from_millis(500);
    // A stall of one thread (1 s) plus scheduling noise (1 s).
    const SLACK: Duration = Duration::from_secs(2);
    let (ca, server, mut healthy, healthy_id) = server_and_healthy_client(|w| {
        w.limits(Limits::default().handshake_timeout(TIMEOUT));
    });
    let hello = client_hello(&ca.rustls_config());
    let cases: [(&str, &[u8]); 3] = [
        ("a silent peer", b""),
        ("half a ClientHello", &hello[..hello.len() / 2]),
        // The whole ClientHello: the server answers and waits for our
        // Finished, which never comes.
        ("a ClientHello and no Finished", &hello),
    ];
    for (case, bytes) in cases {
        // Taken before the connect: a stall cannot break the lower bound.
        let t0 = Instant::now();
        let mut s = tcp(server.addr());
        s.write_all(bytes).unwrap();
        let answer = read_to_end(&mut s);
        let took = t0.elapsed();
        assert!(took >= TIMEOUT, "{case}: closed after {took:?}");
        assert!(took <= TIMEOUT + SLACK, "{case}: closed after {took:?}");
        println!(
            "{case}: closed after {took:?} ({} bytes came)",
            answer.len()
        );
        if !case.contains("no Finished") {
            // Before the server's first flight: an alert at most.
            assert!(only_alerts(&answer), "{case}: {answer:?}");
        }
        wait_until("the stalled socket closed", || {
            server.handle.live_tasks() == 1
        });
        let seen = events_of_others(&server, healthy_id);
        assert!(
            seen.iter().all(|e| matches!(e, Ev::Error(..))),
            "{case}: no session: {seen:?}"
        );
    }
    // The healthy client's handshake finished long before: its deadline
    // is gone, although it has been connected for longer than the timeout.
    assert_eq!(healthy.roundtrip("still here"), "still here");
}

#[test]
fn a_reset_mid_handshake_leaves_nothing_behind() {
    let (ca, server, mut healthy, healthy_id) = server_and_healthy_client(|_| {});
    let config = ca.rustls_config();
    let hello = client_hello(&config);
    for i in 0..20 {
        let s = tcp(server.addr());
        if i % 2 == 0 {
            // Half a ClientHello, in the server's kernel, then a reset.
            (&s).write_all(&hello[..hello.len() / 2]).unwrap();
            wait_until("half a ClientHello delivered", || unacked_bytes(&s) == 0);
        } else {
            // The whole ClientHello, the server's answer read, then a reset
            // where the server awaits our Finished.
            let mut s2 = s.try_clone().unwrap();
            s2.write_all(&hello).unwrap();
            let mut buf = [0u8; 4096];
            assert!(s2.read(&mut buf).unwrap() > 0, "the ServerHello");
        }
        set_linger_zero(&s);
        drop(s);
    }
    wait_until("every reset socket closed", || {
        server.handle.live_tasks() == 1
    });
    assert_eq!(server.handle.connections().len(), 1);
    let seen = events_of_others(&server, healthy_id);
    assert!(
        seen.iter().all(|e| matches!(e, Ev::Error(..))),
        "no session, at most errors: {seen:?}"
    );
    assert_eq!(healthy.roundtrip("after resets"), "after resets");
}

#[test]
fn no_application_bytes_are_delivered_before_the_handshake_completes() {
    let (ca, server, mut healthy, healthy_id) = server_and_healthy_client(|_| {});
    let config = ca.rustls_config();
    let app_line = b"please deliver me\n";
    // An application-data record carrying plaintext, as a peer that skips
    // the handshake might send it.
    let mut fake_record = vec![23, 3, 3, 0, app_line.len() as u8];
    fake_record.extend_from_slice(app_line);
    let hello = client_hello(&config);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a line before the ClientHello",
            [&app_line[..], &hello].concat(),
            false,
        ),
        (
            "a line right after the ClientHello",
            [&hello[..], app_line].concat(),
            false,
        ),
        (
            "an application-data record after the ClientHello",
            [&hello[..], &fake_record].concat(),
            false,
        ),
        (
            "an application-data record instead of our Finished",
            hello.clone(),
            true,
        ),
    ];
    for (case, bytes, then_fake) in cases {
        let mut s = tcp(server.addr());
        s.write_all(&bytes).unwrap();
        if then_fake {
            let mut buf = [0u8; 4096];
            assert!(s.read(&mut buf).unwrap() > 0, "{case}: the ServerHello");
            s.write_all(&fake_record).unwrap();
        }
        let _ = read_to_end(&mut s);
        wait_until("the smuggler's socket closed", || {
            server.handle.live_tasks() == 1
        });
        let seen = events_of_others(&server, healthy_id);
        assert!(
            seen.iter().all(|e| matches!(e, Ev::Error(..))),
            "{case}: no on_connect, no on_message: {seen:?}"
        );
        assert!(!seen.is_empty(), "{case}: the failed handshake is reported");
        println!("{case}: {seen:?}");
    }
    // on_message does fire for a completed handshake.
    assert_eq!(healthy.roundtrip("delivered"), "delivered");
    assert_eq!(
        server.next("the healthy message"),
        Ev::Message(healthy_id, "delivered".into())
    );
}

#[test]
fn a_truncation_is_reported_as_unexpected_eof_and_a_clean_close_is_not() {
    let (ca, server, _healthy, healthy_id) = server_and_healthy_client(|_| {});
    let config = ca.rustls_config();
    // A clean end: close_notify, then FIN.
    let mut clean = TlsLineClient::connect(server.addr(), &config, "localhost").unwrap();
    assert_eq!(clean.roundtrip("clean"), "clean");
    clean.close_notify().unwrap();
    clean.sock().shutdown(Shutdown::Write).unwrap();
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(server.next("on_message"), Ev::Message(id, "clean".into()));
    assert_eq!(
        server.next("on_close"),
        Ev::Close(id, CloseReason::PeerClosed)
    );
    // A truncation: FIN without close_notify.
    let mut cut = TlsLineClient::connect(server.addr(), &config, "localhost").unwrap();
    assert_eq!(cut.roundtrip("cut"), "cut");
    cut.sock().shutdown(Shutdown::Write).unwrap();
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(server.next("on_message"), Ev::Message(id, "cut".into()));
    match server.next("on_error") {
        Ev::Error(e, text, kind) => {
            assert_eq!(e, id);
            assert_eq!(kind, Some(ErrorKind::UnexpectedEof), "{text}");
            assert!(text.contains("close_notify"), "{text}");
        }
        ev => panic!("the truncation is reported first: {ev:?}"),
    }
    assert_eq!(
        server.next("on_close"),
        Ev::Close(id, CloseReason::PeerClosed)
    );
    wait_until("both sockets closed", || server.handle.live_tasks() == 1);
    assert!(events_of_others(&server, healthy_id).is_empty());
}

/// A bug: when the peer closes first (close_notify, FIN), the server
/// closes its socket without a close_notify of its own, which RFC 8446
/// (6.1) requires before closing the write side. Peers that wait for it
/// (OpenSSL's bidirectional `SSL_shutdown`, Python's `unwrap()`) get an
/// error; a rustls reader sees a truncation (UnexpectedEof).
#[test]
fn a_peer_that_closes_first_gets_our_close_notify() {
    let (ca, server, _healthy, _) = server_and_healthy_client(|_| {});
    let mut clean =
        TlsLineClient::connect(server.addr(), &ca.rustls_config(), "localhost").unwrap();
    assert_eq!(clean.roundtrip("clean"), "clean");
    clean.close_notify().unwrap();
    clean.sock().shutdown(Shutdown::Write).unwrap();
    // The server's end must come with its close_notify: a clean end (a
    // truncation is an UnexpectedEof error here).
    assert_eq!(clean.line().unwrap(), None);
}

/// Minimal reproduction of a bug: a peer sends its last data and its
/// close_notify in one flight, then waits for our close_notify with the
/// TCP stream open (as OpenSSL's bidirectional `SSL_shutdown` and Python's
/// `unwrap()` do). Both records are decrypted by one read; the line is
/// delivered, but the end of the stream is not, until some later bytes
/// or FIN wake the socket: the connection hangs.
#[test]
fn data_and_close_notify_in_one_flight_end_the_connection() {
    let (ca, server, _healthy, _) = server_and_healthy_client(|_| {});
    let mut s = tcp(server.addr());
    let mut conn = client_session(&ca.rustls_config(), "localhost");
    handshake(&mut s, &mut conn, |s, b| s.write_all(b).unwrap()).unwrap();
    conn.writer().write_all(b"last words\n").unwrap();
    conn.send_close_notify();
    // One write: both records arrive together.
    s.write_all(&queued_tls(&mut conn)).unwrap();
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(
        server.next("on_message"),
        Ev::Message(id, "last words".into())
    );
    assert_eq!(
        server.next("on_close"),
        Ev::Close(id, CloseReason::PeerClosed)
    );
    // The server answered with the echo and its own close_notify.
    let mut client = TlsLineClient::from_parts(conn, s);
    assert_eq!(client.line().unwrap().as_deref(), Some("last words"));
    assert_eq!(client.line().unwrap(), None);
}

/// The same bug on lubdub's client side: a server sends a line and its
/// close_notify in one flight and waits for the client's close_notify.
#[test]
fn a_client_sees_data_and_close_notify_in_one_flight() {
    let (ca, leaf) = pki();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (client, events) =
        tls_support::tls_text_client(port, ca.client_config().server_name("localhost"), |_| {});
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut conn = rustls::ServerConnection::new(leaf.server_config().rustls().clone()).unwrap();
    handshake(&mut s, &mut conn, |s, b| s.write_all(b).unwrap()).unwrap();
    let Ev::Connect(id) = recv(&events, "on_connect") else {
        panic!("on_connect first")
    };
    conn.writer().write_all(b"goodbye\n").unwrap();
    conn.send_close_notify();
    s.write_all(&queued_tls(&mut conn)).unwrap();
    assert_eq!(recv(&events, "the line"), Ev::Message(id, "goodbye".into()));
    assert_eq!(
        recv(&events, "on_close"),
        Ev::Close(id, CloseReason::PeerClosed)
    );
    client.stop();
}

// ---------------------------------------------------------------------------
// Memory: run alone in child processes.
// ---------------------------------------------------------------------------

#[test]
fn a_tls_peer_that_never_reads_while_we_push_100_mb_keeps_memory_bounded() {
    let _serial = serial();
    let out = run_child_test("push_100_mb_to_a_tls_peer_that_never_reads_child");
    for line in out.lines().filter(|l| l.starts_with("tls push:")) {
        println!("{line}");
    }
}

#[test]
#[ignore = "run in a child process by a_tls_peer_that_never_reads_while_we_push_100_mb_keeps_memory_bounded"]
fn push_100_mb_to_a_tls_peer_that_never_reads_child() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 100 * 1024 * 1024;
    let (ca, leaf) = pki();
    let (tx, rx) = mpsc::channel::<String>();
    let mut w = Worker::<Raw>::new("tcp://127.0.0.1:0").unwrap();
    w.tls(leaf.server_config())
        .limits(Limits::default().close_timeout(Duration::from_millis(300)));
    let t = tx.clone();
    w.on_buffer_full(move |_| {
        let _ = t.send("full".into());
    });
    let t = tx.clone();
    w.on_error(move |_, e| {
        if matches!(e, ConnError::FlushTimeout) {
            let _ = t.send("flush timeout".into());
        }
    });
    let t = tx.clone();
    w.on_close(move |_, r| {
        let _ = t.send(format!("close {r}"));
    });
    w.on_message(move |c, _| {
        // Offered from a timer, 4 MiB per tick, as fast as the loop runs.
        let c = c.clone();
        let chunk = vec![7u8; CHUNK];
        let (mut offered, mut dropped) = (0usize, 0usize);
        let tx = tx.clone();
        let id = std::rc::Rc::new(std::cell::Cell::new(None));
        let me = id.clone();
        id.set(Some(
            Timer::add(Duration::ZERO, move || {
                for _ in 0..64 {
                    if offered >= TOTAL {
                        let _ = tx.send(format!("offered {offered} dropped {dropped}"));
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
    // A TLS peer: handshake done, one request, then it never reads.
    let mut peer =
        TlsLineClient::connect(h.local_addr(), &ca.rustls_config(), "localhost").unwrap();
    let before = rss_kib();
    peer.send(b"push").unwrap();
    let mut saw_full = false;
    let summary = loop {
        let ev = recv(&rx, "the push");
        if ev == "full" {
            saw_full = true;
        } else {
            break ev;
        }
    };
    assert!(saw_full, "{summary}");
    let dropped: usize = summary.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        dropped > TOTAL / 2,
        "most of 100 MB is refused, not buffered: {summary}"
    );
    let grown = rss_kib().saturating_sub(before);
    println!("tls push: {summary}; RSS grew by {grown} KiB");
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB while 100 MB were offered over TLS"
    );
    // What was taken is bounded too: twice the send buffer (1 MiB) under
    // PauseRecv, not the 100 MB (and rustls' record queue, 64 KiB, apart).
    let queued = h
        .connections()
        .iter()
        .map(|e| e.value().send_buffer_len())
        .sum::<usize>();
    assert!(queued < (2 << 20) + CHUNK, "{queued} bytes queued");
    // The stuck connection can still be closed, bounded by the close timeout.
    let conn = h.connections().iter().next().unwrap().value().clone();
    conn.close();
    assert_eq!(recv(&rx, "the flush timeout"), "flush timeout");
    assert_eq!(
        recv(&rx, "on_close"),
        format!("close {}", CloseReason::FlushTimeout)
    );
    wait_until("the socket closed", || h.live_tasks() == 0);
    drop(peer);
    h.stop_and_wait();
}

#[test]
fn ten_thousand_tls_connect_close_cycles_leave_nothing_behind() {
    let _serial = serial();
    let out = run_child_test("ten_thousand_tls_cycles_child");
    for line in out.lines().filter(|l| l.starts_with("tls cycles:")) {
        println!("{line}");
    }
}

#[test]
#[ignore = "run in a child process by ten_thousand_tls_connect_close_cycles_leave_nothing_behind"]
fn ten_thousand_tls_cycles_child() {
    const N: usize = 10_000;
    const THREADS: usize = 2;
    let (ca, leaf) = pki();
    let connects = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<lubdub::Text>::new("text://127.0.0.1:0").unwrap();
    w.tls(leaf.server_config());
    let c = connects.clone();
    w.on_connect(move |_| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    let c = closes.clone();
    w.on_close(move |_, _| {
        c.fetch_add(1, Ordering::Relaxed);
    });
    w.on_error(|_, _| {});
    w.on_message(|c, m| {
        let reply = if m == "timers?" {
            Timer::count().to_string()
        } else {
            m
        };
        let _ = c.send(&reply);
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();
    // One client thread resumes sessions (the server's session cache
    // churns), the other makes full handshakes every time.
    let resuming = ca.rustls_config();
    let mut full = ca.rustls_config();
    Arc::make_mut(&mut full).resumption = rustls::client::Resumption::disabled();
    let mut probe = TlsLineClient::connect(addr, &full, "localhost").unwrap();
    assert_eq!(probe.roundtrip("warm"), "warm");
    let before = rss_kib();
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let config = if t == 0 {
                resuming.clone()
            } else {
                full.clone()
            };
            s.spawn(move || {
                for i in 0..N / THREADS {
                    let mut c = TlsLineClient::connect(addr, &config, "localhost")
                        .unwrap_or_else(|e| panic!("cycle {i} of thread {t}: {e}"));
                    match i % 4 {
                        // Says something, then a clean close.
                        0 => {
                            assert_eq!(c.roundtrip("x"), "x");
                            c.close_notify().unwrap();
                        }
                        // Says something, then leaves without close_notify.
                        1 => assert_eq!(c.roundtrip("y"), "y"),
                        // Leaves at once after the handshake, cleanly.
                        2 => c.close_notify().unwrap(),
                        // Leaves at once with a reset.
                        _ => set_linger_zero(c.sock()),
                    }
                }
            });
        }
    });
    let cycles = started.elapsed();
    wait_until("only the probe is left", || {
        h.connections().len() == 1 && h.live_tasks() == 1
    });
    // Every session that started ended. The three graceful quarters all
    // started; of the reset quarter, only those whose Finished the server
    // read before the reset did (a reset may discard it).
    let (connected, closed) = (
        connects.load(Ordering::Relaxed),
        closes.load(Ordering::Relaxed),
    );
    wait_until("on_close for every session", || {
        closes.load(Ordering::Relaxed) + 1 == connects.load(Ordering::Relaxed)
    });
    assert!(
        connected > 3 * N / 4 && connected <= N + 1,
        "{connected} sessions for {N} cycles"
    );
    assert_eq!(probe.roundtrip("timers?"), "0", "no timer left behind");
    let grown = rss_kib().saturating_sub(before);
    println!(
        "tls cycles: {N} in {cycles:?}, {} sessions; RSS grew by {grown} KiB",
        connected - 1
    );
    let _ = closed;
    assert!(
        grown < 16 * 1024,
        "RSS grew by {grown} KiB over {N} TLS cycles"
    );
    h.stop_and_wait();
}

/// Plaintext one read decrypts can exceed the 64 KiB read buffer: 64 KiB
/// of ciphertext plus the part of a record left from the previous read.
/// Here a 96,000-byte line comes in six records of 16,000 bytes: the first
/// read takes the first record and most of the second; the second read
/// (short: under 64 KiB) completes five records, 80,000 bytes of
/// plaintext. What did not fit the buffer must still be delivered,
/// although no more bytes will come (the peer waits for the echo).
#[test]
fn plaintext_beyond_the_read_buffer_is_delivered_without_more_input() {
    const RECORD: usize = 16_000;
    let (ca, server, _healthy, healthy_id) = server_and_healthy_client(|_| {});
    let mut s = tcp(server.addr());
    let mut conn = client_session(&ca.rustls_config(), "localhost");
    handshake(&mut s, &mut conn, |s, b| s.write_all(b).unwrap()).unwrap();
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_ne!(id, healthy_id);
    let mut line = vec![b'r'; 6 * RECORD];
    *line.last_mut().unwrap() = b'\n';
    // One record per write of 16,000 bytes.
    let mut records = Vec::new();
    for chunk in line.chunks(RECORD) {
        conn.writer().write_all(chunk).unwrap();
        records.push(queued_tls(&mut conn));
    }
    let record_len = records[0].len();
    assert!(records.iter().all(|r| r.len() == record_len));
    let wire = records.concat();
    // First flight: record 1 and all but 22 bytes of record 2.
    let first = 2 * record_len - 22;
    s.write_all(&wire[..first]).unwrap();
    let conn_of = || {
        server
            .handle
            .connections()
            .get(&id)
            .map(|c| c.value().clone())
    };
    wait_until("record 1 delivered", || {
        conn_of().is_some_and(|c| c.stats().bytes_in == RECORD as u64)
    });
    // Second flight, in one write (one read on loopback): under 64 KiB of
    // ciphertext completing records 2 to 6.
    let second = &wire[first..];
    assert!(second.len() < 64 * 1024, "{}", second.len());
    s.write_all(second).unwrap();
    let mut client = TlsLineClient::from_parts(conn, s);
    let echo = client.line().unwrap_or_else(|e| {
        panic!(
            "the echo of the 96,000-byte line: {e}; the server took {:?} bytes of it",
            conn_of().map(|c| c.stats().bytes_in)
        )
    });
    let echo = echo.expect("the echo");
    assert_eq!(echo.len(), line.len() - 1);
}
