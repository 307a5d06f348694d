//! The connection state machine in virtual time, quinn-proto style: no
//! socket, no loop, no real clock. A test feeds reads, EOFs, write results
//! and instants by hand and checks the bytes it asks to write, the socket
//! actions and the callbacks, in order.
//!
//! One file over 600 lines on purpose: every test uses the `Lines`
//! protocol and the `Harness` defined at the top, and reads as a walk
//! through one path of the state machine; splitting them by topic would
//! only scatter that shared vocabulary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::*;
use crate::connection::SendStatus;
use crate::endpoint::{Backpressure, Endpoint, Limits};
use crate::error::Error;
use crate::handlers::{Handlers, MessageHandler};
use crate::plugin::Plugin;
use crate::protocol::Closing;
use crate::protocol::{Decoded, Reject};
use std::io;

/// A line protocol with every v2 feature, to drive each lifecycle path:
/// `HELLO name` is the handshake (when on), `ping` is answered with `pong`
/// on the wire, `bye` is the peer's close, `bad` is a violation.
#[derive(Clone, Default)]
struct Lines {
    handshake: bool,
}

#[derive(Default)]
struct LinesEncoder {
    accepted: bool,
}

impl Protocol for Lines {
    const SCHEME: &'static str = "lines";
    type Message = String;
    type Outgoing = str;
    type Encoder = LinesEncoder;
    type Handshake = String;

    fn encoder(&self) -> LinesEncoder {
        LinesEncoder::default()
    }

    fn start(&mut self, _wire: &mut Wire<'_>) -> Start {
        if self.handshake {
            Start::Handshake
        } else {
            Start::Established
        }
    }

    fn decode(
        &mut self,
        src: &[u8],
        wire: &mut Wire<'_>,
    ) -> Result<Decoded<String, String>, ProtocolError> {
        let Some(i) = src.iter().position(|&b| b == b'\n') else {
            if src.len() > 64 {
                return Err(ProtocolError::TooLarge {
                    len: src.len() as u64,
                    max: 64,
                });
            }
            return Ok(Decoded::Incomplete);
        };
        let consumed = i + 1;
        let line = std::str::from_utf8(&src[..i]).map_err(|e| ProtocolError::InvalidData {
            expected: "UTF-8",
            offset: e.valid_up_to(),
        })?;
        if self.handshake {
            let name = line
                .strip_prefix("HELLO ")
                .ok_or(ProtocolError::Malformed("expected HELLO"))?;
            self.handshake = false;
            return Ok(Decoded::Handshake {
                data: name.to_owned(),
                consumed,
            });
        }
        match line {
            "ping" => {
                wire.write(b"pong\n");
                Ok(Decoded::Consumed(consumed))
            }
            "bye" => {
                wire.close(SessionClose::by_peer(1000, "bye"));
                Ok(Decoded::Consumed(consumed))
            }
            "bad" => Err(ProtocolError::Malformed("bad line")),
            _ => Ok(Decoded::Message {
                msg: line.to_owned(),
                consumed,
            }),
        }
    }

    fn accept(&mut self, name: &String, encoder: &mut LinesEncoder, wire: &mut Wire<'_>) {
        encoder.accepted = true;
        wire.write(format!("WELCOME {name}\n").as_bytes());
    }

    fn reject(&mut self, _name: &String, reject: &Reject, wire: &mut Wire<'_>) {
        wire.write(format!("DENIED {}\n", reject.status).as_bytes());
        wire.close(SessionClose::local(reject.status, "denied"));
    }

    fn encode(
        &self,
        _: &mut LinesEncoder,
        msg: &str,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        dst.extend_from_slice(msg.as_bytes());
        dst.push(b'\n');
        Ok(())
    }

    fn encode_close(&self, _: &mut LinesEncoder, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        let tag = match closing {
            Closing::Local { code, reason } => format!("local {} {reason}", code.unwrap_or(1000)),
            Closing::Session(c) => format!("echo {}", c.code),
            Closing::Violation(_) => "violation".into(),
            Closing::GoingAway => "going away".into(),
            Closing::InternalError => "internal".into(),
            Closing::Timeout => "timeout".into(),
            _ => "other".into(),
        };
        dst.extend_from_slice(format!("goodbye {tag}\n").as_bytes());
    }
}

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

struct CountingWaker(std::sync::atomic::AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// One connection's state machine with a recording set of callbacks.
struct Harness {
    core: Lifecycle<Lines>,
    conn: Connection<Lines>,
    log: Log,
    now: Instant,
    waker: Waker,
}

/// Callbacks that log what happens; `on_message` acts on some lines
/// (`close`, `destroy`, `pause`, `panic`, `send X`).
fn recording(log: &Log) -> Handlers<Lines> {
    let mut h = Handlers::default();
    let l = log.clone();
    h.on_connect = Some(Arc::new(move |c: &Connection<Lines>| {
        push(
            &l,
            format!(
                "connect in_map={}",
                c.endpoint().connections.contains_key(&c.id())
            ),
        )
    }));
    let l = log.clone();
    h.on_message = Some(MessageHandler::Sync(Arc::new(
        move |c: &Connection<Lines>, m: String| {
            push(&l, format!("msg {m}"));
            match m.as_str() {
                "close" => c.close(),
                "destroy" => c.destroy(),
                "pause" => c.pause_recv(),
                "panic" => panic!("boom in on_message"),
                m if m.starts_with("send ") => {
                    let _ = c.send(&m[5..]);
                }
                _ => {}
            }
        },
    )));
    let l = log.clone();
    h.on_close = Some(Arc::new(move |c: &Connection<Lines>, r: &CloseReason| {
        push(
            &l,
            format!(
                "close {r} in_map={}",
                c.endpoint().connections.contains_key(&c.id())
            ),
        )
    }));
    let l = log.clone();
    h.on_error = Some(Arc::new(move |_: &Connection<Lines>, e: &Error| {
        push(&l, format!("error {e}"))
    }));
    let l = log.clone();
    h.on_buffer_full = Some(Arc::new(move |_: &Connection<Lines>| push(&l, "full")));
    let l = log.clone();
    h.on_buffer_drain = Some(Arc::new(move |_: &Connection<Lines>| push(&l, "drain")));
    h
}

impl Harness {
    fn new(
        protocol: Lines,
        limits: Limits,
        tenure: Tenure,
        edit: impl FnOnce(&mut Handlers<Lines>, &Log),
    ) -> Self {
        let log: Log = Arc::default();
        let mut handlers = recording(&log);
        edit(&mut handlers, &log);
        let ep = Arc::new(Endpoint::new(protocol, handlers, limits));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let conn = Connection::new(ep, addr, addr, 0, 0, None);
        let core = Lifecycle::new(conn.clone(), tenure);
        Harness {
            core,
            conn,
            log,
            now: Instant::now(),
            waker: Waker::from(Arc::new(CountingWaker(Default::default()))),
        }
    }

    /// A connection of an existing endpoint (several share its budget).
    fn attach(ep: &Arc<Endpoint<Lines>>, log: &Log, now: Instant) -> Self {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let conn = Connection::new(ep.clone(), addr, addr, 0, 0, None);
        Harness {
            core: Lifecycle::new(conn.clone(), Tenure::Whole),
            conn,
            log: log.clone(),
            now,
            waker: Waker::from(Arc::new(CountingWaker(Default::default()))),
        }
    }

    /// The end of a poll, as the shell ends it (charges the budget).
    fn end(&mut self) -> bool {
        self.core.more_work(self.conn.flags(), false, self.now)
    }

    fn server() -> Self {
        Self::new(
            Lines::default(),
            Limits::default(),
            Tenure::Whole,
            |_, _| {},
        )
    }

    fn started(mut self) -> Self {
        self.core.begin_turn(&self.waker.clone());
        self.core.start(self.now);
        self
    }

    /// One turn of the shell without socket I/O: requests, deadlines, the
    /// async handler.
    fn turn(&mut self) {
        self.core.begin_turn(&self.waker.clone());
        self.core.process(self.now);
        let waker = self.waker.clone();
        self.core.poll_async(&mut Context::from_waker(&waker));
    }

    fn read(&mut self, bytes: &str) {
        self.core.on_read(bytes.as_bytes(), self.now);
        self.turn();
    }

    /// Everything the core wants written, as if the socket took it all.
    fn written(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(bytes) = self.core.transmit() {
            let n = bytes.len();
            out.extend_from_slice(bytes);
            self.core.on_written(n);
        }
        String::from_utf8(out).unwrap()
    }

    fn action(&mut self) -> Option<SocketAction> {
        self.core.socket_action(self.now)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn events(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn map_len(&self) -> usize {
        self.conn.endpoint().connections.len()
    }

    fn sockets(&self) -> usize {
        self.conn.endpoint().sockets.load(Ordering::Relaxed)
    }
}

#[test]
fn start_establishes_on_connect_runs_inside_the_map() {
    let mut h = Harness::server();
    assert_eq!(h.core.phase(), Phase::New);
    assert_eq!(h.sockets(), 1);
    h = h.started();
    assert_eq!(h.core.phase(), Phase::Open);
    assert_eq!(h.events(), ["connect in_map=true"]);
    assert!(h.core.wants_read());
}

#[test]
fn messages_split_across_reads_arrive_whole_and_in_order() {
    let mut h = Harness::server().started();
    h.events();
    h.read("a\nb");
    h.read("\nc\n");
    assert_eq!(h.events(), ["msg a", "msg b", "msg c"]);
    assert_eq!(h.conn.stats().messages_in, 3);
    assert_eq!(h.conn.stats().bytes_in, 6);
}

#[test]
fn sends_of_a_turn_leave_in_one_write() {
    let mut h = Harness::server().started();
    h.read("send x\nsend y\n");
    assert_eq!(h.written(), "x\ny\n");
    assert_eq!(h.conn.stats().write_calls, 1);
}

#[test]
fn close_flushes_then_goodbye_then_half_close_then_waits_for_the_fin() {
    let mut h = Harness::server().started();
    h.read("send last\nclose\nnever delivered\n");
    assert_eq!(h.core.phase(), Phase::Closing);
    assert!(!h.core.wants_read());
    assert_eq!(h.written(), "last\ngoodbye local 1000 \n");
    // on_close runs once everything is flushed, then the map forgets it.
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    assert_eq!(h.core.phase(), Phase::Lingering);
    let ev = h.events();
    assert_eq!(ev.last().unwrap(), "close closed locally in_map=true");
    assert!(!ev.iter().any(|e| e.contains("never delivered")));
    assert_eq!(h.map_len(), 0);
    // Lingering: what the peer still sends is read and discarded.
    assert!(h.core.wants_read());
    h.read("late\n");
    assert!(h.events().is_empty());
    assert_eq!(h.action(), None);
    h.core.on_eof(h.now);
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.core.is_closed());
    assert_eq!(h.sockets(), 0);
    assert!(h.events().is_empty(), "on_close ran exactly once");
}

#[test]
fn a_peer_that_keeps_streaming_after_our_fin_is_not_waited_for() {
    let mut h = Harness::server().started();
    h.read("bad\n");
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    let chunk = "x".repeat(16 * 1024);
    for _ in 0..4 {
        h.read(&chunk);
        assert_eq!(h.action(), None, "a little is read and discarded");
    }
    h.read(&chunk);
    assert_eq!(h.action(), Some(SocketAction::Close), "past 64 KiB: closed");
}

#[test]
fn close_session_carries_the_code_and_reason_to_the_goodbye() {
    let mut h = Harness::server().started();
    h.conn.close_session(4001, "kicked");
    h.turn();
    assert_eq!(h.written(), "goodbye echo 4001\n");
    assert_eq!(
        h.conn.close_reason(),
        Some(CloseReason::Session(SessionClose::local(4001, "kicked")))
    );
}

#[test]
fn linger_ends_at_the_close_timeout() {
    let mut h = Harness::server().started();
    h.conn.close();
    h.turn();
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    let timeout = h.conn.endpoint().limits.close_timeout;
    assert_eq!(h.core.next_deadline(), Some(h.now + timeout));
    h.advance(timeout - Duration::from_millis(1));
    assert_eq!(h.action(), None);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.core.is_closed());
}

#[test]
fn a_stopping_loop_ends_the_linger_at_once() {
    let mut h = Harness::server().started();
    h.conn.close();
    h.turn();
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    h.conn.close_for_stop();
    assert_eq!(h.action(), Some(SocketAction::Close));
}

#[test]
fn the_peers_fin_closes_after_the_flush_without_half_close_or_linger() {
    let mut h = Harness::server().started();
    h.events();
    h.read("send reply\n");
    h.core.on_eof(h.now);
    h.turn();
    assert_eq!(h.core.phase(), Phase::Closing);
    assert_eq!(h.written(), "reply\n", "no goodbye to a peer that left");
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(
        h.events(),
        ["msg send reply", "close closed by peer in_map=true"]
    );
}

#[test]
fn destroy_drops_the_queue_and_closes_at_once() {
    let mut h = Harness::server().started();
    let _ = h.conn.send("unsent");
    h.conn.destroy();
    h.turn();
    assert!(h.core.is_closed());
    assert_eq!(h.written(), "");
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(h.events().last().unwrap(), "close destroyed in_map=true");
    assert_eq!(h.map_len(), 0);
}

#[test]
fn a_flush_that_times_out_is_reported_and_closes_with_flush_timeout() {
    let mut h = Harness::server().started();
    h.events();
    let _ = h.conn.send("stuck");
    h.conn.close();
    h.turn();
    assert!(h.core.transmit().is_some());
    h.core.on_write_blocked();
    assert_eq!(
        h.conn.send_buffer_len(),
        "stuck\ngoodbye local 1000 \n".len()
    );
    h.advance(h.conn.endpoint().limits.close_timeout);
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(
        h.events(),
        [
            "error timed out flushing the send buffer on close",
            "close flush timeout in_map=true"
        ]
    );
    assert_eq!(h.conn.close_reason(), Some(CloseReason::FlushTimeout));
}

#[test]
fn first_message_timeout_closes_without_waiting_for_flush_or_fin() {
    let limits = Limits {
        first_message_timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _| {}).started();
    h.events();
    assert_eq!(h.core.next_deadline(), Some(h.now + Duration::from_secs(2)));
    h.advance(Duration::from_secs(2));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Closing);
    // The goodbye goes into the socket if it takes it; nothing waits.
    assert!(h.core.transmit().is_some());
    h.core.on_write_blocked();
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(h.events(), ["close first-message timeout in_map=true"]);
}

#[test]
fn a_whole_message_in_time_clears_the_first_message_deadline() {
    let limits = Limits {
        first_message_timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _| {}).started();
    h.read("hi\n");
    assert_eq!(h.core.next_deadline(), None);
    h.advance(Duration::from_secs(60));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Open);
}

fn handshaking(hook: Option<Result<(), Reject>>) -> Harness {
    Harness::new(
        Lines { handshake: true },
        Limits::default(),
        Tenure::Whole,
        move |h, log| {
            if let Some(verdict) = hook {
                let log = log.clone();
                h.on_handshake = Some(Arc::new(move |c: &Connection<Lines>, name: &String| {
                    push(
                        &log,
                        format!(
                            "handshake {name} in_map={}",
                            c.endpoint().connections.contains_key(&c.id())
                        ),
                    );
                    verdict.clone()
                }));
            }
        },
    )
    .started()
}

#[test]
fn a_handshake_comes_before_on_connect_and_the_map() {
    let mut h = handshaking(Some(Ok(())));
    assert_eq!(h.core.phase(), Phase::Handshake);
    assert_eq!(h.map_len(), 0);
    assert!(h.events().is_empty());
    // Sends queued meanwhile wait for the handshake.
    let _ = h.conn.send("early");
    assert_eq!(h.written(), "");
    h.read("HELLO bob\nhi\n");
    assert_eq!(
        h.events(),
        [
            "handshake bob in_map=false",
            "connect in_map=true",
            "msg hi"
        ]
    );
    assert_eq!(h.written(), "WELCOME bob\nearly\n");
    assert_eq!(h.core.phase(), Phase::Open);
}

#[test]
fn without_a_hook_the_handshake_is_accepted() {
    let mut h = handshaking(None);
    h.read("HELLO ann\n");
    assert_eq!(h.events(), ["connect in_map=true"]);
    assert_eq!(h.written(), "WELCOME ann\n");
}

#[test]
fn a_refused_handshake_gets_its_answer_and_a_close_without_callbacks() {
    let mut h = handshaking(Some(Err(Reject::new(403))));
    let _ = h.conn.send("never");
    h.read("HELLO eve\nsneaky\n");
    assert_eq!(h.events(), ["handshake eve in_map=false"]);
    assert_eq!(h.core.phase(), Phase::Closing);
    assert_eq!(h.written(), "DENIED 403\n");
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    h.core.on_eof(h.now);
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.events().is_empty(), "neither on_connect nor on_close");
    assert_eq!(h.map_len(), 0);
    assert_eq!(h.sockets(), 0);
}

#[test]
fn a_handshake_that_never_finishes_times_out() {
    let mut h = handshaking(Some(Ok(())));
    h.read("HEL");
    let limit = h.conn.endpoint().limits.handshake_timeout;
    assert_eq!(h.core.next_deadline(), Some(h.now + limit));
    h.advance(limit);
    h.turn();
    assert_eq!(h.conn.close_reason(), Some(CloseReason::HandshakeTimeout));
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    // Presumed gone: no wait for the FIN.
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.events().is_empty());
}

#[test]
fn the_protocols_own_answers_leave_before_queued_messages() {
    let mut h = Harness::server().started();
    h.events();
    let _ = h.conn.send("queued");
    h.read("ping\n");
    assert!(h.events().is_empty(), "a consumed ping is no message");
    assert_eq!(h.written(), "pong\nqueued\n");
}

#[test]
fn the_protocols_close_reaches_on_close_and_is_echoed() {
    let mut h = Harness::server().started();
    h.events();
    h.read("bye\nafter\n");
    assert_eq!(h.written(), "goodbye echo 1000\n");
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    assert_eq!(h.events(), ["close peer close 1000: bye in_map=true"]);
    assert_eq!(
        h.conn.close_reason(),
        Some(CloseReason::Session(SessionClose::by_peer(1000, "bye")))
    );
}

#[test]
fn a_violation_is_reported_once_and_closes_with_the_protocols_goodbye() {
    let mut h = Harness::server().started();
    h.events();
    h.read("ok\nbad\nok2\n");
    assert_eq!(h.written(), "goodbye violation\n");
    h.action();
    assert_eq!(
        h.events(),
        [
            "msg ok",
            "error protocol error: malformed input: bad line",
            "close protocol error in_map=true"
        ]
    );
}

#[test]
fn an_oversized_partial_message_is_refused() {
    let mut h = Harness::server().started();
    h.events();
    h.conn.set_max_package_size(10);
    h.read("0123456789ab");
    assert_eq!(h.conn.close_reason(), Some(CloseReason::Protocol));
    let ev = h.events();
    assert!(ev[0].contains("exceeds the maximum of 10"), "{ev:?}");
}

#[test]
fn pause_holds_queued_input_until_resume_then_delivers_it_in_order() {
    let mut h = Harness::server().started();
    h.events();
    h.read("one\npause\ntwo\nthree\n");
    assert_eq!(h.events(), ["msg one", "msg pause"]);
    assert!(!h.core.wants_read());
    h.turn();
    assert!(h.events().is_empty());
    h.conn.resume_recv();
    h.turn();
    assert_eq!(h.events(), ["msg two", "msg three"]);
    assert!(h.core.wants_read());
}

#[test]
fn one_poll_takes_at_most_its_message_budget_then_yields() {
    let mut h = Harness::server().started();
    h.events();
    let flood: String = (0..600).map(|i| format!("{i}\n")).collect();
    h.core.begin_turn(&h.waker.clone());
    h.core.on_read(flood.as_bytes(), h.now);
    assert_eq!(h.events().len(), MESSAGES_PER_TURN as usize);
    assert!(h.core.budget_spent());
    assert!(!h.core.wants_read(), "the task must yield, not read on");
    h.turn();
    h.turn();
    let rest = h.events();
    assert_eq!(rest.len(), 600 - MESSAGES_PER_TURN as usize);
    assert_eq!(rest.last().unwrap(), "msg 599", "in order, none lost");
    assert!(h.core.wants_read());
}

/// A future that stays pending until its gate opens.
struct Gate(Arc<Mutex<bool>>);

impl std::future::Future for Gate {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if *self.0.lock().unwrap() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn async_handlers_run_one_at_a_time_in_order_with_bounded_read_ahead() {
    let gate = Arc::new(Mutex::new(false));
    let limits = Limits {
        async_queue: 2,
        ..Limits::default()
    };
    let g = gate.clone();
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, move |h, log| {
        let log = log.clone();
        h.on_message = Some(MessageHandler::Async(Arc::new(move |_c, m: String| {
            let log = log.clone();
            let gate = Gate(g.clone());
            Box::pin(async move {
                push(&log, format!("start {m}"));
                gate.await;
                push(&log, format!("end {m}"));
            }) as LocalBoxFuture
        })));
    })
    .started();
    h.events();
    h.read("a\nb\nc\nd\n");
    // "a" runs; "b" waits, and the next turn queues "c" up to the bound
    // of 2; "d" stays in the read buffer and reading stops.
    h.turn();
    assert_eq!(h.events(), ["start a"]);
    assert!(!h.core.wants_read());
    *gate.lock().unwrap() = true;
    h.turn();
    h.turn();
    assert_eq!(
        h.events(),
        ["end a", "start b", "end b", "start c", "end c", "start d", "end d"]
    );
    assert!(h.core.wants_read());
}

#[test]
fn held_input_is_delivered_once_the_async_queue_drains_within_the_turn() {
    // Handlers that finish at once: the queue fills (64), drains in the
    // same turn, and the rest of one big read must still be delivered
    // without another byte from the peer.
    let mut h = Harness::new(
        Lines::default(),
        Limits::default(),
        Tenure::Whole,
        |h, log| {
            let log = log.clone();
            h.on_message = Some(MessageHandler::Async(Arc::new(move |_c, m: String| {
                let log = log.clone();
                Box::pin(async move { push(&log, m) }) as LocalBoxFuture
            })));
        },
    )
    .started();
    h.events();
    let batch: String = (0..1000).map(|i| format!("{i}\n")).collect();
    h.read(&batch);
    let mut turns = 0;
    while h.log.lock().unwrap().len() < 1000 {
        turns += 1;
        assert!(turns < 100, "stalled at {}", h.log.lock().unwrap().len());
        // What the shell asks before it sleeps: is there more to do?
        assert!(
            h.end(),
            "held input left undelivered with nothing to wake the task"
        );
        h.turn();
    }
    let ev = h.events();
    assert_eq!(ev.first().unwrap(), "0");
    assert_eq!(ev.last().unwrap(), "999");
}

#[test]
fn a_panic_in_on_message_closes_that_connection_and_is_reported() {
    let mut h = Harness::server().started();
    h.events();
    h.read("panic\nnext\n");
    h.written();
    h.action();
    assert_eq!(
        h.events(),
        [
            "msg panic",
            "error on_message panicked: boom in on_message",
            "close callback panicked in_map=true"
        ]
    );
}

#[test]
fn a_panic_in_each_callback_is_contained() {
    // (callback, how to trigger it, the close reason expected)
    type Edit = fn(&mut Handlers<Lines>);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "on_connect",
            |h| h.on_connect = Some(Arc::new(|_: &Connection<Lines>| panic!("x"))),
            "",
        ),
        (
            "plugin on_connect",
            |h| h.plugins.push(Arc::new(PanickyPlugin { on: "connect" })),
            "",
        ),
        (
            "plugin on_message",
            |h| h.plugins.push(Arc::new(PanickyPlugin { on: "message" })),
            "hello\n",
        ),
        (
            "on_buffer_full",
            |h| h.on_buffer_full = Some(Arc::new(|_: &Connection<Lines>| panic!("x"))),
            "send 0123456789\n",
        ),
    ];
    for (callback, edit, input) in cases {
        let limits = Limits {
            send_buffer_size: 8,
            ..Limits::default()
        };
        let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |handlers, _| {
            edit(handlers)
        })
        .started();
        h.read(input);
        h.written();
        h.action();
        let ev = h.events();
        assert!(
            ev.iter()
                .any(|e| e == &format!("error {callback} panicked: x")),
            "{callback}: {ev:?}"
        );
        assert_eq!(
            h.conn.close_reason(),
            Some(CloseReason::Panic),
            "{callback}"
        );
    }
}

struct PanickyPlugin {
    on: &'static str,
}

impl Plugin<Lines> for PanickyPlugin {
    fn on_connect(&self, _: &Connection<Lines>) {
        if self.on == "connect" {
            panic!("x")
        }
    }
    fn on_message(&self, _: &Connection<Lines>, _: &String) -> crate::plugin::Flow {
        if self.on == "message" {
            panic!("x")
        }
        crate::plugin::Flow::Continue
    }
    fn on_close(&self, _: &Connection<Lines>, _: &CloseReason) {
        if self.on == "close" {
            panic!("x")
        }
    }
}

#[test]
fn a_panic_in_on_close_or_on_error_still_removes_the_connection() {
    let mut h = Harness::new(
        Lines::default(),
        Limits::default(),
        Tenure::Whole,
        |h, _| {
            h.on_close = Some(Arc::new(|_: &Connection<Lines>, _: &CloseReason| {
                panic!("x")
            }));
            h.on_error = Some(Arc::new(|_: &Connection<Lines>, _: &Error| panic!("x")));
            h.plugins.push(Arc::new(PanickyPlugin { on: "close" }));
        },
    )
    .started();
    h.read("bad\n");
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    assert_eq!(h.map_len(), 0);
}

#[test]
fn a_panic_in_the_handshake_hook_refuses_the_peer() {
    let mut h = Harness::new(
        Lines { handshake: true },
        Limits::default(),
        Tenure::Whole,
        |h, _| h.on_handshake = Some(Arc::new(|_: &Connection<Lines>, _: &String| panic!("x"))),
    )
    .started();
    h.read("HELLO x\n");
    assert_eq!(h.conn.close_reason(), Some(CloseReason::Panic));
    assert_eq!(h.events(), ["error on_handshake panicked: x"]);
    assert_eq!(h.map_len(), 0);
}

#[test]
fn a_panic_in_an_async_handler_closes_only_after_reporting() {
    let mut h = Harness::new(
        Lines::default(),
        Limits::default(),
        Tenure::Whole,
        |h, _| {
            h.on_message = Some(MessageHandler::Async(Arc::new(|_c, _m: String| {
                Box::pin(async { panic!("x") }) as LocalBoxFuture
            })));
        },
    )
    .started();
    h.events();
    h.read("a\n");
    assert_eq!(h.events(), ["error on_message (async) panicked: x"]);
    assert_eq!(h.conn.close_reason(), Some(CloseReason::Panic));
}

fn small_buffer(backpressure: Backpressure) -> Harness {
    let limits = Limits {
        send_buffer_size: 8,
        backpressure,
        ..Limits::default()
    };
    let h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _| {}).started();
    h.events();
    h
}

#[test]
fn drop_mode_reports_a_full_buffers_drops_once_when_it_drains() {
    let mut h = small_buffer(Backpressure::Drop);
    h.read("send 0123456789\nsend more\nsend again\nnext\n");
    assert_eq!(
        h.events(),
        [
            "msg send 0123456789",
            "full",
            "msg send more",
            "msg send again",
            "msg next"
        ],
        "Drop mode keeps reading; no error per dropped send"
    );
    assert_eq!(h.written(), "0123456789\n");
    assert_eq!(
        h.events(),
        [
            "error send buffer full (8 bytes): 2 message(s) dropped",
            "drain"
        ]
    );
}

#[test]
fn a_million_drops_make_one_report_a_second_while_the_buffer_stays_full() {
    let mut h = small_buffer(Backpressure::Drop);
    let _ = h.conn.send("0123456789");
    assert!(h.core.transmit().is_some());
    h.core.on_write_blocked();
    let mut refused = 0;
    for _ in 0..1_000_000 {
        if let SendStatus::BufferFull = h.conn.send("x") {
            refused += 1;
        }
    }
    assert_eq!(refused, 1_000_000);
    h.turn();
    assert_eq!(h.events(), ["full"], "the first drop starts the episode");
    let first = h.core.next_deadline().unwrap();
    assert_eq!(first, h.now + Duration::from_secs(1));
    h.advance(Duration::from_millis(999));
    h.turn();
    assert!(h.events().is_empty());
    h.advance(Duration::from_millis(1));
    h.turn();
    assert_eq!(
        h.events(),
        ["error send buffer full (8 bytes): 1000000 message(s) dropped"]
    );
    for _ in 0..10 {
        let _ = h.conn.send("x");
    }
    h.turn();
    h.advance(Duration::from_millis(500));
    h.turn();
    assert!(h.events().is_empty(), "at most one report a second");
    // The connection closes while still full: the rest is reported then.
    h.conn.destroy();
    h.turn();
    assert_eq!(
        h.events(),
        [
            "error send buffer full (8 bytes): 10 message(s) dropped",
            "close destroyed in_map=true"
        ]
    );
}

#[test]
fn pause_recv_stops_reading_while_the_buffer_is_over_the_limit_and_resumes_on_drain() {
    let mut h = small_buffer(Backpressure::PauseRecv);
    h.read("send 0123456789\nsend a\nb\n");
    assert_eq!(h.events(), ["msg send 0123456789", "full"]);
    assert!(!h.core.wants_read(), "reading pauses");
    assert!(h.core.transmit().is_some());
    h.core.on_write_blocked();
    h.turn();
    assert!(
        h.events().is_empty(),
        "still held while the peer does not read"
    );
    assert_eq!(h.written(), "0123456789\n");
    assert_eq!(h.events(), ["drain"]);
    assert!(h.core.wants_read());
    h.turn();
    assert_eq!(h.events(), ["msg send a", "msg b"]);
    assert_eq!(h.written(), "a\n");
}

#[test]
fn pause_recv_keeps_sends_up_to_twice_the_limit_then_drops() {
    let mut h = small_buffer(Backpressure::PauseRecv);
    assert!(h.conn.send("0123456789").is_queued(), "crosses the limit");
    assert!(h.conn.send("abcde").is_queued(), "under twice the limit");
    assert!(matches!(h.conn.send("x"), SendStatus::BufferFull));
    assert_eq!(h.events(), ["full"]);
    assert_eq!(h.written(), "0123456789\nabcde\n");
    assert_eq!(
        h.events(),
        [
            "error send buffer full (8 bytes): 1 message(s) dropped",
            "drain"
        ]
    );
}

#[test]
fn a_socket_error_is_reported_and_closes_at_once() {
    let mut h = Harness::server().started();
    h.events();
    h.core
        .on_io_error("read", io::ErrorKind::ConnectionReset.into());
    assert!(h.core.is_closed());
    let ev = h.events();
    assert!(ev[0].starts_with("error I/O error"), "{ev:?}");
    assert_eq!(ev[1], "close socket error: connection reset in_map=true");
    // Exactly once, whatever comes after.
    h.core.on_eof(h.now);
    h.core
        .on_io_error("write", io::ErrorKind::BrokenPipe.into());
    drop(h.core);
    assert!(h.log.lock().unwrap().is_empty());
}

#[test]
fn dropped_alive_it_still_closes_once_with_worker_stopped() {
    let h = Harness::server().started();
    h.events();
    let log = h.log.clone();
    let conn = h.conn.clone();
    drop(h);
    assert_eq!(*log.lock().unwrap(), ["close worker stopped in_map=true"]);
    assert!(conn.endpoint().connections.is_empty());
    assert_eq!(conn.endpoint().sockets.load(Ordering::Relaxed), 0);
}

#[test]
fn a_client_session_keeps_its_queue_and_leaves_the_map_to_its_supervisor() {
    let mut h = Harness::new(
        Lines::default(),
        Limits::default(),
        Tenure::Session,
        |_, _| {},
    );
    let entry = MapEntry::insert(&h.conn);
    h = h.started();
    assert_eq!(h.events(), ["connect in_map=true"]);
    h.core
        .on_io_error("read", io::ErrorKind::ConnectionReset.into());
    // Sends between sessions queue for the next one (the supervisor
    // decides whether they are accepted; here the queue is simply kept).
    h.conn.reset_session(true);
    let _ = h.conn.send("next session");
    assert_eq!(h.map_len(), 1, "still the supervisor's");
    let mut next = Lifecycle::new(h.conn.clone(), Tenure::Session);
    next.start(h.now);
    let mut out = Vec::new();
    while let Some(b) = next.transmit() {
        out.extend_from_slice(b);
        let n = b.len();
        next.on_written(n);
    }
    assert_eq!(out, b"next session\n");
    drop(entry);
    assert_eq!(h.map_len(), 0);
}

#[test]
fn over_the_memory_budget_holders_pause_small_ones_go_on_and_the_largest_is_closed() {
    use crate::memory::{GRACE, UNIT};
    let log: Log = Arc::default();
    let limits = Limits {
        memory_budget: 4 * UNIT,
        send_buffer_size: 64 * UNIT,
        ..Limits::default()
    };
    let ep = Arc::new(Endpoint::new(Lines::default(), recording(&log), limits));
    let t0 = Instant::now();
    let mut big = Harness::attach(&ep, &log, t0).started();
    let mut mid = Harness::attach(&ep, &log, t0).started();
    let mut small = Harness::attach(&ep, &log, t0).started();
    log.lock().unwrap().clear();
    // Two peers that do not read: their queues stay charged.
    for (h, units) in [(&mut big, 4), (&mut mid, 2)] {
        let _ = h.conn.send(&"x".repeat(units * UNIT));
        assert!(h.core.transmit().is_some());
        h.core.on_write_blocked();
        h.end();
    }
    assert_eq!(ep.memory.used(), 6 * UNIT);
    assert!(ep.memory.is_over());
    for h in [&mut big, &mut mid] {
        h.turn();
        assert!(!h.core.wants_read(), "a holder stops reading");
    }
    assert_eq!(big.core.next_deadline(), Some(t0 + crate::memory::RECHECK));
    small.read("hi\n");
    assert_eq!(small.events(), ["msg hi"], "a small connection is served");
    // Still over after the grace period: only the largest class closes.
    for h in [&mut mid, &mut big, &mut small] {
        h.advance(GRACE);
        h.turn();
    }
    assert!(!mid.core.is_closed());
    assert!(big.core.is_closed());
    let ev = log.lock().unwrap().clone();
    assert_eq!(
        ev,
        [
            "error over the memory budget of 0 MiB: closed, holding 256 KiB",
            "close overload: over the memory budget in_map=true"
        ]
    );
    assert_eq!(big.conn.close_reason(), Some(CloseReason::Overload));
    // Under the budget again: the others read again.
    assert_eq!(ep.memory.used(), 2 * UNIT);
    mid.turn();
    assert!(mid.core.wants_read());
}
