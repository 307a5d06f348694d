//! The heartbeat over real loopback sockets.
//!
//! The rules themselves (detection bounds, stall forgiveness, ping and
//! client state machines) are tested in virtual time in the
//! `lubdub-heartbeat` unit tests; these are end-to-end checks that the
//! plugins drive those machines right over real sockets and threads.
//!
//! Every assertion here must hold on a loaded 2-core machine where any one
//! thread (a test thread, a peer thread, an event loop) may be stalled for
//! up to [`STALL`] at any point. A stall only makes things later, so:
//! * lower bounds ("not closed before the timeout") are measured from
//!   instants taken *before* the thing that starts the clock;
//! * "closed within" bounds are at least timeout + check interval +
//!   [`SLACK`] (one stall plus a second of noise);
//! * a peer that must stay open sends at least every 100 ms against a
//!   timeout of [`LIVE_TIMEOUT`], so a stall of its thread (or of the loop
//!   reading it) cannot make it look silent;
//! * events are awaited through channels fed by callbacks; a timed wait is
//!   used only to check that something does *not* happen within a window.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{recv, WAIT};
use lubdub::heartbeat::{
    unix_ms, AckSample, Heartbeat, HeartbeatHandle, PacketHeartbeat, RoundTrip, TextHeartbeat,
};
use lubdub::Text;
use lubdub::{
    Client, CloseReason, Connection, EventLoop, Limits, Plugin, Protocol, Worker, WorkerHandle,
};
use lubdub::{Packet, PacketCodec};

/// The longest stall of one thread (or of the whole process) the tests
/// must survive.
const STALL: Duration = Duration::from_secs(1);
/// Timeout wherever a live peer must *not* be closed: twice [`STALL`], so a
/// peer sending every 50-100 ms is heard from well within it even when its
/// thread, or the loop reading it, stalls for a whole [`STALL`].
const LIVE_TIMEOUT: Duration = Duration::from_secs(2 * STALL.as_secs());
/// Slack on top of "closed within" bounds: one [`STALL`] plus 1 s of
/// scheduling noise.
const SLACK: Duration = Duration::from_secs(STALL.as_secs() + 1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Connect(u64, SocketAddr),
    Close(u64, SocketAddr, CloseReason),
    Message(u64, String),
    BufferFull(u64),
}

/// Starts `w` with the plugin and event-reporting callbacks.
fn start<P: Protocol>(
    mut w: Worker<P>,
    plugin: impl Plugin<P>,
    show: impl Fn(&P::Message) -> String + Send + Sync + 'static,
) -> (WorkerHandle<P>, Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    w.plugin(plugin);
    let t = Mutex::new(tx.clone());
    w.on_connect(move |c| {
        let _ = t.lock().unwrap().send(Ev::Connect(c.id(), c.remote_addr()));
    });
    let t = Mutex::new(tx.clone());
    w.on_close(move |c, r| {
        let _ = t
            .lock()
            .unwrap()
            .send(Ev::Close(c.id(), c.remote_addr(), r.clone()));
    });
    let t = Mutex::new(tx.clone());
    w.on_buffer_full(move |c| {
        let _ = t.lock().unwrap().send(Ev::BufferFull(c.id()));
    });
    let t = Mutex::new(tx);
    w.on_message(move |c, m| {
        let _ = t.lock().unwrap().send(Ev::Message(c.id(), show(&m)));
    });
    (w.start().unwrap(), rx)
}

/// Waits for the close of the connection from `peer`, skipping other
/// events; returns its reason and when it was seen.
fn await_close(
    rx: &Receiver<Ev>,
    peer: SocketAddr,
    others: &mut Vec<Ev>,
) -> (CloseReason, Instant) {
    loop {
        match recv(rx) {
            Ev::Close(_, a, r) if a == peer => return (r, Instant::now()),
            ev => others.push(ev),
        }
    }
}

/// Collects events for `d` and fails if `peer` closed meanwhile.
///
/// A window that checks that something does *not* happen; a stall of this
/// thread can only shorten what it sees, never fail it wrongly.
fn assert_stays_open(rx: &Receiver<Ev>, peer: SocketAddr, d: Duration, others: &mut Vec<Ev>) {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ev::Close(_, a, r)) if a == peer => panic!("{peer} closed: {r}"),
            Ok(ev) => others.push(ev),
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => panic!("event channel closed"),
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// A thread that sends `line` every `every` until stopped, optionally
/// reading one reply line each time. Returns the replies. (Its sleep paces
/// a peer's beats; it synchronises nothing.)
fn beater(
    stream: TcpStream,
    line: &'static str,
    every: Duration,
    read_replies: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        let mut replies = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
            if read_replies {
                let mut s = String::new();
                if r.read_line(&mut s).unwrap_or(0) == 0 {
                    break;
                }
                replies.push(s.trim_end().to_string());
            }
            std::thread::sleep(every);
        }
        replies
    })
}

fn text_worker() -> Worker<Text> {
    Worker::<Text>::new("text://127.0.0.1:0").unwrap()
}

#[test]
fn silent_peer_is_closed_within_the_bound_and_beating_peer_stays() {
    // The exact bound (never before the timeout, at most timeout + check
    // interval after the last byte, whatever the phase) is tested in virtual
    // time by `sweep::tests::silent_peer_closed_within_timeout_plus_check_interval`.
    // Here, end to end: a lower bound from before the connect, a generous
    // upper bound, and a beater that a stall cannot make look silent.
    let check = ms(100);
    let timeout = LIVE_TIMEOUT;
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(check)
        .timeout(timeout)
        .goodbye("bye: heartbeat timeout");
    let handle = hb.handle();
    let (server, rx) = start(text_worker(), hb, |m| m.clone());
    let addr = server.local_addr();

    let stop = Arc::new(AtomicBool::new(false));
    let talker = connect(addr);
    let talker_addr = talker.local_addr().unwrap();
    let talking = beater(talker, "ping\n", ms(50), true, stop.clone());

    let t0 = Instant::now();
    let mut silent = connect(addr);
    let silent_addr = silent.local_addr().unwrap();
    let mut others = Vec::new();
    let (reason, at) = await_close(&rx, silent_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    // t0 is before the connect, so a stall cannot break the lower bound.
    let took = at - t0;
    assert!(took >= timeout, "closed after {took:?}, before the timeout");
    assert!(
        took <= timeout + check + SLACK,
        "closed after {took:?}, beyond timeout + check interval + slack"
    );
    // The peer got the goodbye, then the end of the stream.
    let mut got = String::new();
    silent.read_to_string(&mut got).unwrap();
    assert_eq!(got, "bye: heartbeat timeout\n");

    // The beating peer connected before the silent one: a sweep that took
    // its beats for silence would have closed it no later than the silent
    // one. It stays for another half timeout (five sweeps) too.
    assert_stays_open(&rx, talker_addr, timeout / 2, &mut others);
    stop.store(true, Ordering::SeqCst);
    let replies = talking.join().unwrap();
    assert!(replies.len() >= 10, "{replies:?}");
    assert!(replies.iter().all(|r| r == "pong"), "{replies:?}");
    // Heartbeats are consumed: the application saw no message.
    assert!(
        !others.iter().any(|e| matches!(e, Ev::Message(..))),
        "{others:?}"
    );
    let st = handle.stats();
    assert_eq!(st.idle_timeouts, 1);
    assert!(st.beats_in >= 10 && st.pongs_sent >= 10, "{st:?}");
    server.stop_and_wait();
}

#[test]
fn peer_that_stops_reading_but_still_talks_is_alive_a_mute_one_is_not() {
    // The server floods both peers until their send buffers are full; neither
    // peer reads. The sweep judges inbound bytes only: the talker's pings
    // keep it alive although nothing reaches it, and the server's outbound
    // flood does not keep the mute peer alive. The talker beats every 50 ms
    // against a LIVE_TIMEOUT, so a stall of its thread cannot get it closed.
    let check = ms(100);
    let timeout = LIVE_TIMEOUT;
    let close_timeout = ms(200);
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(check)
        .timeout(timeout);
    let mut w = text_worker();
    w.limits(
        Limits::default()
            .send_buffer_size(64 * 1024)
            .close_timeout(close_timeout),
    )
    .on_error(|_, _| {});
    let (tx, flood_rx) = mpsc::channel::<u64>();
    w.plugin(FloodOn {
        chunk: "x".repeat(16 * 1024),
        done: Mutex::new(tx),
    });
    let (server, rx) = start(w, hb, |m| m.clone());
    let addr = server.local_addr();

    let mut talker = connect(addr);
    let talker_addr = talker.local_addr().unwrap();
    talker.write_all(b"flood\n").unwrap();
    let mut mute = connect(addr);
    let mute_addr = mute.local_addr().unwrap();
    mute.write_all(b"flood\n").unwrap();
    // both floods ran into full buffers
    let flooded = [recv(&flood_rx), recv(&flood_rx)];
    assert_ne!(flooded[0], flooded[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let talking = beater(talker, "ping\n", ms(50), false, stop.clone());

    let mut others = Vec::new();
    // t0 is after the mute peer's last byte (its flood request was handled),
    // so this upper bound is sound; a stall only makes it generous.
    let t0 = Instant::now();
    let (reason, _) = await_close(&rx, mute_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    let took = t0.elapsed();
    assert!(
        took <= timeout + check + close_timeout + SLACK,
        "mute peer closed after {took:?}"
    );
    // The talker was silent since before the mute peer's flood request,
    // apart from its pings: had they not counted, it would have gone first.
    assert_stays_open(&rx, talker_addr, timeout / 2, &mut others);
    let full: Vec<u64> = others
        .iter()
        .filter_map(|e| match e {
            Ev::BufferFull(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(full.len(), 2, "both send buffers filled: {others:?}");
    stop.store(true, Ordering::SeqCst);
    talking.join().unwrap();
    drop(mute);
    server.stop_and_wait();
}

/// On `flood`, sends chunks until the send buffer refuses one.
struct FloodOn {
    chunk: String,
    done: Mutex<Sender<u64>>,
}

impl Plugin<Text> for FloodOn {
    fn on_message(&self, conn: &Connection<Text>, msg: &String) -> lubdub::Flow {
        if msg == "flood" {
            while conn.send(&self.chunk).is_queued() {}
            let _ = self.done.lock().unwrap().send(conn.id());
            return lubdub::Flow::Consumed;
        }
        lubdub::Flow::Continue
    }
}

#[test]
fn slow_upload_of_one_big_message_is_not_silence() {
    // Workerman's example sets lastMessageTime in onMessage only, so a
    // message that takes longer than the timeout to arrive looks dead.
    // Here every read counts. That is the worker's per-read clock, which
    // the sweep's unit tests stand in for with a fake: only a real socket
    // shows it. The upload takes twice the timeout, in pieces 50 ms apart
    // (the sleep paces the upload): a stall of this thread leaves a gap of
    // about STALL, well under the LIVE_TIMEOUT.
    let timeout = LIVE_TIMEOUT;
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(ms(100))
        .timeout(timeout);
    let (server, rx) = start(text_worker(), hb, |m| m.clone());
    let mut up = connect(server.local_addr());
    let up_addr = up.local_addr().unwrap();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < timeout * 2 {
        up.write_all(&[b'x'; 100]).unwrap();
        sent += 100;
        std::thread::sleep(ms(50));
    }
    up.write_all(b"\n").unwrap();
    loop {
        match recv(&rx) {
            Ev::Message(_, m) => {
                assert_eq!(m.len(), sent);
                break;
            }
            Ev::Close(_, a, r) if a == up_addr => panic!("uploader closed: {r}"),
            _ => {}
        }
    }
    server.stop_and_wait();
}

#[test]
fn csharp_seed_exchange_byte_for_byte() {
    // The byte layouts are unit-tested (`codec::tests::packet_seed_bytes`);
    // this is the whole exchange over a socket. The client beats every
    // ~100 ms against a LIVE_TIMEOUT, so a stall of this thread cannot get
    // it closed while it beats.
    let timeout = LIVE_TIMEOUT;
    let hb = Heartbeat::server(PacketHeartbeat::new()) // hello: interval 5 s
        .check_interval(ms(100))
        .timeout(timeout);
    let handle = hb.handle();
    let w = Worker::<PacketCodec>::new("packet://127.0.0.1:0").unwrap();
    let (server, rx) = start(w, hb, |p: &Packet| format!("{} {:?}", p.id, p.body));
    let mut client = connect(server.local_addr());
    let client_addr = client.local_addr().unwrap();

    // 1. S -> C: SYS_START_HEARTBEAT with the interval (5 s)
    let mut hello = [0u8; 7];
    client.read_exact(&mut hello).unwrap();
    assert_eq!(hello, [0x07, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0x05]);

    // 2. C -> S: SYS_UPDATE_HEARTBEAT, for one and a half timeouts
    let mut others = Vec::new();
    let beat = [0x06, 0x00, 0x00, 0x00, 0xFD, 0xFF];
    let start = Instant::now();
    while start.elapsed() < timeout * 3 / 2 {
        client.write_all(&beat).unwrap();
        // the connection must still be up: no close event meanwhile (this
        // window also paces the beats)
        assert_stays_open(&rx, client_addr, ms(100), &mut others);
    }
    // an application packet still reaches on_message: heartbeats did not
    client
        .write_all(&[0x07, 0x00, 0x00, 0x00, 0x01, 0x00, 0x2A])
        .unwrap();
    loop {
        match recv(&rx) {
            Ev::Message(_, m) => {
                assert_eq!(m, "1 [42]");
                break;
            }
            ev => others.push(ev),
        }
    }
    assert!(
        !others.iter().any(|e| matches!(e, Ev::Message(..))),
        "heartbeats were consumed: {others:?}"
    );
    assert!(handle.stats().beats_in >= 5);

    // 3. The client stops: closed for heartbeat timeout (awaited, no upper
    //    bound: test 1 has one), and the server never answered a
    //    SYS_UPDATE_HEARTBEAT (the seed scheme has no pong).
    let (reason, _) = await_close(&rx, client_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "unexpected bytes {rest:02X?}");
    assert_eq!(handle.stats().pongs_sent, 0);
    server.stop_and_wait();
}

#[test]
fn text_client_sending_only_ping_stays_and_gets_pong() {
    // A client whose only traffic is pings, one every ~100 ms (the sleep
    // paces them), for one and a half LIVE_TIMEOUTs: a stall of this thread
    // cannot make it look silent.
    let timeout = LIVE_TIMEOUT;
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(ms(100))
        .timeout(timeout);
    let (server, rx) = start(text_worker(), hb, |m| m.clone());
    let client = connect(server.local_addr());
    let client_addr = client.local_addr().unwrap();
    let mut w = client.try_clone().unwrap();
    let mut r = BufReader::new(client);
    let mut line = String::new();
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < timeout * 3 / 2 {
        w.write_all(b"ping\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "pong\n", "closed while pinging?");
        rounds += 1;
        std::thread::sleep(ms(100));
    }
    assert!(rounds >= 8, "{rounds} rounds");
    // a sequenced ping gets the sequence and the server's clock back
    w.write_all(b"ping 42\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    let parts: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(parts[..2], ["pong", "42"]);
    let server_ms: u64 = parts[2].parse().unwrap();
    let now_ms = unix_ms(SystemTime::now());
    assert!(
        server_ms.abs_diff(now_ms) < 5_000,
        "{server_ms} vs {now_ms}"
    );
    // chat lines that merely start with the word are application messages
    w.write_all(b"ping me later\n").unwrap();
    let mut others = Vec::new();
    loop {
        match recv(&rx) {
            Ev::Message(_, m) => {
                assert_eq!(m, "ping me later");
                break;
            }
            Ev::Close(_, a, r) if a == client_addr => panic!("closed: {r}"),
            ev => others.push(ev),
        }
    }
    assert!(!others.iter().any(|e| matches!(e, Ev::Message(..))));
    server.stop_and_wait();
}

#[test]
fn pass_through_delivers_heartbeats_to_on_message_too() {
    let hb = Heartbeat::server(TextHeartbeat::new()).pass_through(true);
    let (server, rx) = start(text_worker(), hb, |m| m.clone());
    let client = connect(server.local_addr());
    let mut w = client.try_clone().unwrap();
    let mut r = BufReader::new(client);
    w.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "pong\n");
    loop {
        if let Ev::Message(_, m) = recv(&rx) {
            assert_eq!(m, "ping");
            break;
        }
    }
    server.stop_and_wait();
}

#[test]
fn server_pings_measure_rtt_and_unanswered_pings_close_for_heartbeat_timeout() {
    // The ping rules are unit-tested in virtual time (`ping::tests`). Here
    // the acker's thread answers each ping as it comes; the ack timeout is a
    // LIVE_TIMEOUT so that a stall of that thread (or of the loop) cannot
    // leave a ping unanswered for long enough to close it.
    let ack_timeout = LIVE_TIMEOUT;
    let ping_interval = ms(100);
    let (ack_tx, ack_rx) = mpsc::channel::<(u64, AckSample)>();
    let ack_tx = Mutex::new(ack_tx);
    let hb = Heartbeat::server(TextHeartbeat::new())
        .timeout(Duration::from_secs(30)) // the sweep stays out of the way
        .ping_interval(ping_interval)
        .ack_timeout(ack_timeout)
        .metadata(|_, buf| buf.extend_from_slice(b"v=1"))
        .on_ack(move |c, a| {
            let _ = ack_tx.lock().unwrap().send((c.id(), *a));
        });
    let handle: HeartbeatHandle<Text> = hb.handle();
    let (server, rx) = start(text_worker(), hb, |m| m.clone());
    let addr = server.local_addr();

    // The acker answers every ping with its sequence number.
    let acker = connect(addr);
    let acker_addr = acker.local_addr().unwrap();
    let pings_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let t = {
        let seen = pings_seen.clone();
        let mut w = acker.try_clone().unwrap();
        std::thread::spawn(move || {
            let r = BufReader::new(acker);
            for line in r.lines() {
                let Ok(line) = line else { break };
                let parts: Vec<&str> = line.splitn(4, ' ').collect();
                if parts[0] == "ping"
                    && w.write_all(format!("pong {}\n", parts[1]).as_bytes())
                        .is_err()
                {
                    break;
                }
                seen.lock().unwrap().push(line);
            }
        })
    };
    let mut others = Vec::new();
    let acker_id = loop {
        match recv(&rx) {
            Ev::Connect(id, a) if a == acker_addr => break id,
            ev => others.push(ev),
        }
    };
    // three acked pings, each with an RTT
    for _ in 0..3 {
        let (id, a) = recv(&ack_rx);
        assert_eq!(id, acker_id);
        // a loopback round trip, even across a stall
        assert!(a.rtt <= SLACK, "{a:?}");
        assert!(a.stats.min <= a.stats.latest);
    }
    let rtt = handle.rtt_by_id(acker_id).expect("rtt measured");
    assert!(rtt.samples >= 3);
    {
        let seen = pings_seen.lock().unwrap();
        let first: Vec<&str> = seen[0].split(' ').collect();
        assert_eq!(first[0], "ping");
        let seq: u32 = first[1].parse().unwrap();
        assert_eq!(seq, 1);
        let server_ms: u64 = first[2].parse().unwrap();
        assert!(server_ms.abs_diff(unix_ms(SystemTime::now())) < 5_000);
        assert_eq!(first[3], "v=1", "metadata rides along");
    }

    // The mute one reads the pings but never answers: closed for heartbeat
    // timeout once a ping waits longer than the ack timeout.
    // t0 is taken before the connect, so the lower bound survives a stall.
    let t0 = Instant::now();
    let mute = connect(addr);
    let mute_addr = mute.local_addr().unwrap();
    let (reason, at) = await_close(&rx, mute_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    // first ping within one interval, then the ack timeout
    assert!(at - t0 >= ack_timeout, "{:?}", at - t0);
    assert!(
        at - t0 <= ping_interval + ack_timeout + SLACK,
        "{:?}",
        at - t0
    );
    let mut got = String::new();
    BufReader::new(mute).read_to_string(&mut got).unwrap();
    assert!(got.starts_with("ping 1 "), "{got:?}");

    // the acker is untouched: it has been pinged throughout the mute
    // peer's life, and stays for another half ack timeout
    assert_stays_open(&rx, acker_addr, ack_timeout / 2, &mut others);
    let st = handle.stats();
    assert_eq!(st.ack_timeouts, 1);
    assert_eq!(st.idle_timeouts, 0);
    assert!(st.acks >= 3 && st.pings_sent > st.acks, "{st:?}");
    // every ack's round trip is in the histogram (a metrics scrape's source)
    assert_eq!(st.rtt_buckets.iter().sum::<u64>(), st.acks, "{st:?}");
    assert!(st.rtt_sum > Duration::ZERO && st.rtt_sum <= SLACK * st.acks as u32);
    server.stop_and_wait();
    t.join().unwrap();
}

#[test]
fn unregistered_connection_is_exempt_until_registered_again() {
    // Short real intervals are safe here: no peer has to beat to stay open
    // (the exempt one is exempt whatever the clock says), closes are
    // awaited with no upper bound, and the one window only checks that the
    // exempt peer is *not* closed.
    let timeout = ms(300);
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(ms(100))
        .timeout(timeout);
    let handle = hb.handle();
    let mut w = text_worker();
    let first = AtomicBool::new(true);
    let h2 = handle.clone();
    w.on_connect(move |c| {
        if first.swap(false, Ordering::SeqCst) {
            assert!(h2.unregister(c));
            assert!(!h2.is_registered(c));
        }
    });
    // `start` installs its own on_connect: report through on_worker_start
    // is not needed, the close events say enough.
    let (server, rx) = start_keep_connect(w, hb);
    let a = connect(server.local_addr());
    let a_addr = a.local_addr().unwrap();
    let mut others = Vec::new();
    let a_id = loop {
        match recv(&rx) {
            Ev::Connect(id, x) if x == a_addr => break id,
            ev => others.push(ev),
        }
    };
    let b = connect(server.local_addr());
    let b_addr = b.local_addr().unwrap();
    let (reason, _) = await_close(&rx, b_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    assert_stays_open(&rx, a_addr, timeout * 3, &mut others);
    // back under the heartbeat: it has been silent all along, so it goes
    let conn = server.connections().get(&a_id).unwrap().clone();
    assert!(handle.register(&conn));
    let (reason, _) = await_close(&rx, a_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    server.stop_and_wait();
}

/// Like `start`, but keeps the worker's own `on_connect` and reports
/// connects through the plugin chain instead.
fn start_keep_connect(
    mut w: Worker<Text>,
    hb: impl Plugin<Text>,
) -> (WorkerHandle<Text>, Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    w.plugin(hb);
    w.plugin(Report(Mutex::new(tx)));
    (w.start().unwrap(), rx)
}

struct Report(Mutex<Sender<Ev>>);

impl Plugin<Text> for Report {
    fn on_connect(&self, c: &Connection<Text>) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Connect(c.id(), c.remote_addr()));
    }
    fn on_close(&self, c: &Connection<Text>, r: &CloseReason) {
        let _ = self
            .0
            .lock()
            .unwrap()
            .send(Ev::Close(c.id(), c.remote_addr(), r.clone()));
    }
}

#[test]
fn each_loop_sweeps_only_its_own_connections() {
    // Every peer is silent and every close is awaited with no time bound,
    // so the short real intervals cannot flake. The scan's per-loop filter
    // is unit-tested (`sweep::tests::scan_finds_only_the_silent_and_only_on_its_loop`);
    // here each timeout must run on the loop that owns the connection.
    let (tx, sweeper_rx) = mpsc::channel::<(usize, Option<usize>)>();
    let tx = Mutex::new(tx);
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(ms(50))
        .timeout(ms(200))
        .on_timeout(move |c, _| {
            let sweeper = WorkerHandle::<Text>::current_loop();
            let _ = tx.lock().unwrap().send((c.loop_index(), sweeper));
        });
    let handle = hb.handle();
    let mut w = text_worker();
    w.count(2);
    let (server, rx) = start(w, hb, |m| m.clone());
    let clients: Vec<TcpStream> = (0..8).map(|_| connect(server.local_addr())).collect();
    let mut closed = HashMap::new();
    while closed.len() < clients.len() {
        if let Ev::Close(id, _, r) = recv(&rx) {
            assert_eq!(r, CloseReason::HeartbeatTimeout);
            assert!(closed.insert(id, r).is_none());
        }
    }
    // one timeout per connection, although two loops sweep, each by the
    // connection's own loop
    assert_eq!(handle.stats().idle_timeouts, 8);
    assert_eq!(handle.tracked(), 0);
    let sweepers: Vec<_> = sweeper_rx.try_iter().collect();
    assert_eq!(sweepers.len(), 8, "{sweepers:?}");
    for (owner, sweeper) in sweepers {
        assert_eq!(Some(owner), sweeper, "swept by another loop");
    }
    server.stop_and_wait();
}

#[test]
fn client_heartbeat_measures_rtt_and_clock_offset_against_a_lubdub_server() {
    // Both sides must keep the session up: the client pings every ~100 ms,
    // and both timeouts are LIVE_TIMEOUTs, so a stall of either loop cannot
    // make the other side look dead. (The estimators themselves are
    // unit-tested: `client::tests::rtt_and_clock_offset_from_the_best_sample`.)
    let server_timeout = LIVE_TIMEOUT;
    let server_hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(ms(100))
        .timeout(server_timeout);
    let (server, _rx) = start(text_worker(), server_hb, |m| m.clone());
    let addr = server.local_addr();

    let (rt_tx, rt_rx) = mpsc::channel::<RoundTrip>();
    let rt_tx = Mutex::new(rt_tx);
    let hb = Heartbeat::client(TextHeartbeat::new())
        .interval(ms(100))
        .timeout(LIVE_TIMEOUT)
        .seed(7)
        .on_round_trip(move |_, rt| {
            let _ = rt_tx.lock().unwrap().send(*rt);
        });
    let h = hb.handle();
    let (close_tx, close_rx) = mpsc::channel::<CloseReason>();
    let conn_slot: Arc<Mutex<Option<Connection<Text>>>> = Arc::default();
    let slot = conn_slot.clone();
    let (lp_tx, lp_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        EventLoop::run(move |lp| {
            let mut client = Client::<Text>::new(addr).unwrap();
            client.plugin(hb);
            let close_tx = Mutex::new(close_tx);
            client.on_close(move |_, r| {
                let _ = close_tx.lock().unwrap().send(r.clone());
            });
            *slot.lock().unwrap() = Some(client.connect().unwrap());
            lp_tx.send(lp.clone()).unwrap();
        })
    });
    let lp = recv(&lp_rx);
    // Round trips keep coming: the client beats while otherwise quiet, the
    // server answers, and stays for one and a half of its timeouts.
    //
    // The clock offset is the sample with the lowest RTT among the last
    // `clock_samples` (8); with one clock, a sample's error is at most half
    // its RTT plus the 1 ms resolution of the wire. So the collection also
    // runs on until 8 round trips in a row took under QUICK: a stall just
    // before the read cannot then spoil the estimate.
    const QUICK: Duration = Duration::from_millis(100);
    let start = Instant::now();
    let mut n = 0;
    let mut quick_in_a_row = 0;
    while start.elapsed() < server_timeout * 3 / 2 || quick_in_a_row < 8 {
        assert!(
            start.elapsed() < WAIT,
            "no 8 round trips in a row under {QUICK:?}"
        );
        let rt = recv(&rt_rx);
        assert!(rt.rtt <= SLACK, "{rt:?}");
        assert!(
            rt.server_time.is_some(),
            "sequenced pings get the server's time"
        );
        n += 1;
        quick_in_a_row = if rt.rtt < QUICK {
            quick_in_a_row + 1
        } else {
            0
        };
    }
    assert!(n >= 6, "{n} round trips");
    assert!(close_rx.try_recv().is_err(), "no close while beating");
    let conn = conn_slot.lock().unwrap().clone().unwrap();
    let rtt = h.rtt(&conn).unwrap();
    assert!(rtt.samples >= 6);
    // same host, same clock: the estimate is within half a quick round
    // trip plus the millisecond resolution of the wire
    let off = h.clock_offset_us(&conn).unwrap();
    let bound = (QUICK / 2 + ms(1)).as_micros() as i64;
    assert!(off.abs() <= bound, "offset {off} us, bound {bound} us");
    assert_eq!(h.interval(&conn), Some(ms(100)));
    assert!(h.stats().pings_sent >= 6);
    lp.stop();
    t.join().unwrap();
    server.stop_and_wait();
}

#[test]
fn client_heartbeat_declares_a_silent_server_dead() {
    // Nothing here has to stay alive, so the short real intervals stay:
    // the lower bound is measured from before the session starts, the upper
    // one has SLACK, and the pings are counted by the "server" once the
    // close has reached it. The exact bound is unit-tested
    // (`client::tests::dead_server_detected_at_the_timeout`).
    //
    // A "server" that accepts and reads but never writes a byte; it reports
    // the pings it read once the client has closed.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (pings_tx, pings_rx) = mpsc::channel::<usize>();
    std::thread::spawn(move || {
        let mut pings = 0;
        if let Ok((s, _)) = listener.accept() {
            for line in BufReader::new(s).lines() {
                match line {
                    Ok(l) if l.starts_with("ping ") => pings += 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let _ = pings_tx.send(pings);
    });
    let timeout = ms(400);
    let hb = Heartbeat::client(TextHeartbeat::new())
        .interval(ms(100))
        .timeout(timeout);
    let h = hb.handle();
    let (close_tx, close_rx) = mpsc::channel::<(CloseReason, Instant)>();
    let (lp_tx, lp_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        EventLoop::run(move |lp| {
            let mut client = Client::<Text>::new(addr).unwrap();
            client.plugin(hb);
            let close_tx = Mutex::new(close_tx);
            client.on_close(move |_, r| {
                let _ = close_tx.lock().unwrap().send((r.clone(), Instant::now()));
            });
            client.connect().unwrap();
            lp_tx.send((lp.clone(), Instant::now())).unwrap();
        })
    });
    // t0 is taken before the connection is up (connect() only starts it),
    // `at` in on_close: both on the loop, so a stall of this thread does not
    // move them.
    let (lp, t0) = recv(&lp_rx);
    let (reason, at) = recv(&close_rx);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    assert!(at - t0 >= timeout, "{:?}", at - t0);
    assert!(at - t0 <= timeout + SLACK, "{:?}", at - t0);
    let pings = recv(&pings_rx);
    assert!(pings >= 2, "it kept pinging meanwhile: {pings} ping(s)");
    assert_eq!(h.stats().timeouts, 1);
    lp.stop();
    t.join().unwrap();
}

#[test]
fn client_heartbeat_timeout_hands_over_to_reconnect_and_beats_again() {
    // The first session's server never answers; the second one does. The
    // client's timeout is a LIVE_TIMEOUT so that a stall of the answering
    // thread cannot get the second session declared dead too.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, s) in listener.incoming().enumerate() {
            let Ok(s) = s else { break };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines() {
                    let Ok(line) = line else { break };
                    if n > 0 {
                        if let Some(seq) = line.strip_prefix("ping ") {
                            if w.write_all(format!("pong {seq}\n").as_bytes()).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    let (tx, rx) = mpsc::channel::<String>();
    let t1 = Mutex::new(tx.clone());
    let hb = Heartbeat::client(TextHeartbeat::new())
        .interval(ms(100))
        .timeout(LIVE_TIMEOUT)
        .on_round_trip(move |_, rt| {
            let _ = t1.lock().unwrap().send(format!("rtt {}", rt.seq));
        });
    let h = hb.handle();
    let (lp_tx, lp_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        EventLoop::run(move |lp| {
            let mut client = Client::<Text>::new(addr).unwrap();
            client.plugin(hb).auto_reconnect(lubdub::Backoff {
                base: ms(20),
                cap: ms(50),
                seed: Some(3),
                ..lubdub::Backoff::default()
            });
            let t2 = Mutex::new(tx.clone());
            client.on_connect(move |_| {
                let _ = t2.lock().unwrap().send("connect".into());
            });
            let t3 = Mutex::new(tx);
            client.on_close(move |_, r| {
                let _ = t3.lock().unwrap().send(format!("close {r}"));
            });
            let conn = client.connect().unwrap();
            lp_tx.send((lp.clone(), conn)).unwrap();
        })
    });
    let (lp, conn): (_, Connection<Text>) = recv(&lp_rx);
    assert_eq!(recv(&rx), "connect");
    assert_eq!(
        recv(&rx),
        format!("close {}", CloseReason::HeartbeatTimeout)
    );
    assert_eq!(recv(&rx), "connect");
    // the new session beats and measures from its own ping 1
    assert_eq!(recv(&rx), "rtt 1");
    assert_eq!(recv(&rx), "rtt 2");
    assert!(h.rtt(&conn).is_some());
    assert_eq!(h.stats().timeouts, 1);
    lp.stop();
    t.join().unwrap();
}

#[test]
fn a_starved_loop_does_not_mass_close_when_it_resumes() {
    // The event loop is blocked for longer than the timeout while two peers
    // keep beating; their bytes wait in the kernel. The block is arranged
    // (by `StallOnThirdConnect`, once all three peers are accepted) so that
    // the late sweep tick runs right after it, in the same batch of due
    // timers, before the loop reads anything: without stall tolerance every
    // peer would look silent and be closed. The forgiveness rule itself is
    // unit-tested (`sweep::tests::stall_does_not_mass_close_and_extends_deadlines_by_the_stall`).
    //
    // The beaters beat every 50 ms against a LIVE_TIMEOUT, so a stall of
    // their threads cannot get them closed; the block is half a second
    // longer than that timeout, so without forgiveness they would be.
    let check = ms(100);
    let timeout = LIVE_TIMEOUT;
    let block = timeout + ms(500);
    let hb = Heartbeat::server(TextHeartbeat::new())
        .check_interval(check)
        .timeout(timeout);
    let handle = hb.handle();
    let mut w = text_worker();
    let (blocked_tx, blocked_rx) = mpsc::channel::<Instant>();
    // Added before the heartbeat (which `start` adds), so its
    // on_worker_start runs first and its grid starts no later than the
    // sweep's.
    w.plugin(StallOnThirdConnect {
        check,
        block,
        grid0: Mutex::new(None),
        connects: AtomicUsize::new(0),
        resumed: Mutex::new(blocked_tx),
    });
    let (server, rx) = start(w, hb, |m| m.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let mut beaters = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let s = connect(server.local_addr());
        addrs.push(s.local_addr().unwrap());
        beaters.push(beater(s, "ping\n", ms(50), false, stop.clone()));
    }
    let silent = connect(server.local_addr());
    let silent_addr = silent.local_addr().unwrap();
    let resumed = recv(&blocked_rx);
    let mut others = Vec::new();
    // The silent peer is still closed, with its deadline moved by the stall.
    let (reason, at) = await_close(&rx, silent_addr, &mut others);
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    assert!(at >= resumed, "closed during the stall?");
    // A mass close would have come with the first sweep after the block,
    // before the silent peer's close; watch ten more sweeps anyway.
    assert_stays_open(&rx, addrs[0], check * 10, &mut others);
    assert!(
        !others.iter().any(|e| matches!(e, Ev::Close(..))),
        "{others:?}"
    );
    let st = handle.stats();
    assert!(st.stalls >= 1, "{st:?}");
    assert_eq!(st.idle_timeouts, 1);
    stop.store(true, Ordering::SeqCst);
    for b in beaters {
        b.join().unwrap();
    }
    server.stop_and_wait();
}

/// Blocks the loop once the third connection is accepted: a short block
/// from 50 ms before a sweep tick until after it, so that the long block
/// (due 10 ms before the tick) and the tick are then due together and run
/// in deadline order, the long block first, then the late sweep. (Sleeping
/// is the stall under test here, not a synchronisation.)
struct StallOnThirdConnect {
    check: Duration,
    block: Duration,
    /// When the loop started: the sweep's tick grid starts just after.
    grid0: Mutex<Option<Instant>>,
    connects: AtomicUsize,
    resumed: Mutex<Sender<Instant>>,
}

impl Plugin<Text> for StallOnThirdConnect {
    fn on_worker_start(&self, _: &WorkerHandle<Text>) {
        *self.grid0.lock().unwrap() = Some(Instant::now());
    }

    fn on_connect(&self, _: &Connection<Text>) {
        if self.connects.fetch_add(1, Ordering::SeqCst) + 1 != 3 {
            return;
        }
        let now = Instant::now();
        let mut tick = self.grid0.lock().unwrap().expect("loop started") + self.check;
        while tick < now + ms(60) {
            tick += self.check;
        }
        lubdub::Timer::once(tick - ms(50) - now, || std::thread::sleep(ms(100))).unwrap();
        let tx = self.resumed.lock().unwrap().clone();
        let block = self.block;
        lubdub::Timer::once(tick - ms(10) - now, move || {
            std::thread::sleep(block);
            let _ = tx.send(Instant::now());
        })
        .unwrap();
    }
}
