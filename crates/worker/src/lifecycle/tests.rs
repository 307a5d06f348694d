//! The connection state machine in virtual time, quinn-proto style: no
//! socket, no loop, no real clock. A test feeds reads, EOFs, write results
//! and instants by hand and checks the events it yields, the bytes it asks
//! to write and the socket actions, in order.
//!
//! Most tests run the events through the real dispatcher with recording
//! callbacks (what an application would see); the `event_stream` tests at
//! the end read the raw events. One file over 600 lines on purpose: every
//! test uses the `Lines` protocol and the `Harness` defined at the top, and
//! reads as a walk through one path of the state machine; splitting them by
//! topic would only scatter that shared vocabulary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::*;
use crate::connection::SendStatus;
use crate::dispatch::{Dispatcher, Site};
use crate::endpoint::{Endpoint, MapEntry};
use crate::handlers::{Handlers, LocalBoxFuture, MessageHandler};
use crate::limits::Limits;
use crate::mailbox::{ConnConfig, ConnShared};
use crate::memory::MemoryAccount;
use crate::plugin::Plugin;
use crate::protocol::{Closing, Decoded, Encoder, Reject, SessionClose, Start, Wire};
use std::io;

/// A line protocol with every feature a session can have, to drive each
/// lifecycle path: `HELLO name` is the handshake (when on), `ping` is
/// answered with `pong` on the wire, `bye` is the peer's close, `bad` is a
/// violation, `hold N` makes the session report `N` held bytes (a message
/// being reassembled outside the read buffer).
#[derive(Clone, Default)]
struct Lines {
    handshake: bool,
}

struct LinesDecoder {
    handshake: bool,
    held: usize,
}

#[derive(Default)]
struct LinesEncoder {
    accepted: bool,
}

impl Protocol for Lines {
    const SCHEME: &'static str = "lines";
    type Message = String;
    type Outgoing = str;
    type Handshake = String;
    type Decoder = LinesDecoder;
    type Encoder = LinesEncoder;

    fn decoder(&self) -> LinesDecoder {
        LinesDecoder {
            handshake: self.handshake,
            held: 0,
        }
    }

    fn encoder(&self) -> LinesEncoder {
        LinesEncoder::default()
    }
}

impl Decoder<Lines> for LinesDecoder {
    fn start(&mut self, _: &Lines, _wire: &mut Wire<'_>) -> Start {
        if self.handshake {
            Start::Handshake
        } else {
            Start::Established
        }
    }

    fn decode(
        &mut self,
        _: &Lines,
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
        if let Some(n) = line.strip_prefix("hold ") {
            self.held = n.parse().map_err(|_| ProtocolError::Malformed("hold N"))?;
            return Ok(Decoded::Consumed(consumed));
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

    fn accept(
        &mut self,
        _: &Lines,
        name: &String,
        encoder: &mut LinesEncoder,
        wire: &mut Wire<'_>,
    ) {
        encoder.accepted = true;
        wire.write(format!("WELCOME {name}\n").as_bytes());
    }

    fn reject(&mut self, _: &Lines, _name: &String, reject: &Reject, wire: &mut Wire<'_>) {
        wire.write(format!("DENIED {}\n", reject.status).as_bytes());
        wire.close(SessionClose::local(reject.status, "denied"));
    }

    fn held_bytes(&self) -> usize {
        self.held
    }
}

impl Encoder<Lines> for LinesEncoder {
    fn encode(&mut self, _: &Lines, msg: &str, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        dst.extend_from_slice(msg.as_bytes());
        dst.push(b'\n');
        Ok(())
    }

    fn encode_close(&mut self, _: &Lines, closing: &Closing<'_>, dst: &mut Vec<u8>) {
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
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One connection's state machine, its dispatcher with recording
/// callbacks, and what the shell would keep (its memory account).
struct Harness {
    core: Lifecycle<Lines>,
    dispatcher: Dispatcher<Lines>,
    memory: MemoryAccount,
    conn: Connection<Lines>,
    endpoint: Arc<Endpoint<Lines>>,
    log: Log,
    now: Instant,
    waker: Waker,
}

/// Callbacks that log what happens; `on_message` acts on some lines
/// (`close`, `destroy`, `pause`, `panic`, `send X`).
fn recording(log: &Log, ep: &Arc<Endpoint<Lines>>) -> Handlers<Lines> {
    let mut h = Handlers::default();
    let (l, e) = (log.clone(), ep.clone());
    h.on_connect = Some(Arc::new(move |c: &Connection<Lines>| {
        push(
            &l,
            format!("connect in_map={}", e.connections.contains_key(&c.id())),
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
    let (l, e) = (log.clone(), ep.clone());
    h.on_close = Some(Arc::new(move |c: &Connection<Lines>, r: &CloseReason| {
        push(
            &l,
            format!("close {r} in_map={}", e.connections.contains_key(&c.id())),
        )
    }));
    let l = log.clone();
    h.on_error = Some(Arc::new(move |_: &Connection<Lines>, e: &ConnError| {
        push(&l, format!("error {e}"))
    }));
    let l = log.clone();
    h.on_buffer_full = Some(Arc::new(move |_: &Connection<Lines>| push(&l, "full")));
    let l = log.clone();
    h.on_buffer_drain = Some(Arc::new(move |_: &Connection<Lines>| push(&l, "drain")));
    h
}

/// What the connections of one worker share, for `Harness::attach`.
struct Shared {
    config: Arc<ConnConfig<Lines>>,
    site: Arc<Site<Lines>>,
    log: Log,
}

impl Shared {
    fn new(
        protocol: Lines,
        limits: Limits,
        edit: impl FnOnce(&mut Handlers<Lines>, &Log, &Arc<Endpoint<Lines>>),
    ) -> Self {
        let log: Log = Arc::default();
        let endpoint = Arc::new(Endpoint::new(limits.memory_budget, None));
        let mut handlers = recording(&log, &endpoint);
        edit(&mut handlers, &log, &endpoint);
        Shared {
            config: Arc::new(ConnConfig { protocol, limits }),
            site: Arc::new(Site { handlers, endpoint }),
            log,
        }
    }
}

impl Harness {
    fn new(
        protocol: Lines,
        limits: Limits,
        tenure: Tenure,
        edit: impl FnOnce(&mut Handlers<Lines>, &Log, &Arc<Endpoint<Lines>>),
    ) -> Self {
        let shared = Shared::new(protocol, limits, edit);
        Self::attach(&shared, tenure, Instant::now())
    }

    /// A connection of an existing worker (several share its budget).
    fn attach(shared: &Shared, tenure: Tenure, now: Instant) -> Self {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let conn =
            Connection::from_shared(ConnShared::new(shared.config.clone(), addr, addr, 0, None));
        Harness {
            core: Lifecycle::new(conn.clone(), tenure),
            dispatcher: Dispatcher::new(shared.site.clone(), tenure == Tenure::Whole),
            memory: MemoryAccount::default(),
            endpoint: shared.site.endpoint.clone(),
            conn,
            log: shared.log.clone(),
            now,
            waker: Waker::from(Arc::new(CountingWaker(Default::default()))),
        }
    }

    fn server() -> Self {
        Self::new(
            Lines::default(),
            Limits::default(),
            Tenure::Whole,
            |_, _, _| {},
        )
    }

    fn started(mut self) -> Self {
        self.core.begin_turn();
        self.core.start(self.now);
        self.pump();
        self
    }

    /// What the shell does with events: each through the dispatcher, the
    /// verdicts and the async backlog back into the state machine.
    fn pump(&mut self) {
        self.dispatcher.drain(&mut self.core, self.now);
    }

    /// One turn of the shell without socket I/O: the memory verdict,
    /// requests, deadlines, events, the async handler.
    fn turn(&mut self) {
        self.core.begin_turn();
        let verdict = self.memory.verdict(&self.endpoint.memory, self.now);
        self.core.handle_memory(verdict, self.now);
        self.core.handle_turn(self.now);
        self.pump();
        let waker = self.waker.clone();
        self.dispatcher
            .poll_async(&self.conn, &mut Context::from_waker(&waker));
        let (queued, busy) = self.dispatcher.app_backlog();
        self.core.set_app_backlog(queued, busy);
        self.pump();
    }

    /// Bytes from the peer in one read (through a lent buffer, as the
    /// shell reads), then a turn.
    fn read(&mut self, bytes: &str) {
        self.read_only(bytes);
        self.turn();
    }

    /// Bytes from the peer in one read, their events dispatched.
    fn read_only(&mut self, bytes: &str) {
        let mut buf = bytes.as_bytes().to_vec();
        buf.resize(buf.len() + 16, 0xEE); // a lent buffer is longer than the read
        self.core.handle_read(&mut buf, bytes.len(), self.now);
        self.pump();
        self.core.reclaim_read_buffer(&mut buf);
        assert!(buf.len() >= bytes.len(), "the buffer came back");
    }

    /// Everything the core wants written, as if the socket took it all,
    /// then the events that caused (a drain) through the dispatcher.
    fn written(&mut self) -> String {
        let out = self.transmitted();
        self.pump();
        out
    }

    /// Everything the core wants written, as if the socket took it all.
    fn transmitted(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(bytes) = self.core.poll_transmit() {
            let n = bytes.len();
            out.extend_from_slice(bytes);
            self.core.handle_written(n);
        }
        String::from_utf8(out).unwrap()
    }

    /// The first chunk the core wants written, and the socket is then full.
    fn write_blocked(&mut self) {
        assert!(self.core.poll_transmit().is_some());
        self.core.handle_write_blocked();
    }

    fn action(&mut self) -> Option<SocketAction> {
        let action = self.core.poll_socket_action(self.now);
        self.pump();
        action
    }

    /// The end of a poll, as the shell ends it: more work? (and the
    /// memory budget charged).
    fn end(&mut self) -> bool {
        let end = self.core.end_turn(self.conn.inner.requests(), false);
        self.memory
            .charge(&self.endpoint.memory, end.held, self.now);
        end.more
    }

    fn eof(&mut self) {
        self.core.handle_eof(self.now);
        self.pump();
    }

    fn io_error(&mut self, op: &str, kind: io::ErrorKind) {
        self.core.handle_io_error(op, kind.into());
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn events(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn map_len(&self) -> usize {
        self.endpoint.connections.len()
    }

    fn limits(&self) -> &Limits {
        &self.conn.inner.config.limits
    }

    /// The reason the state machine holds for the close.
    fn reason(&self) -> CloseReason {
        self.core.reason()
    }
}

#[test]
fn start_establishes_on_connect_runs_inside_the_map() {
    let mut h = Harness::server();
    assert_eq!(h.core.phase(), Phase::New);
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
fn a_partial_message_waits_for_bytes_without_asking_for_another_turn() {
    let mut h = Harness::server().started();
    h.events();
    h.read("hel");
    assert!(!h.end(), "nothing to do until more bytes come");
    h.read("lo\nwor");
    assert_eq!(h.events(), ["msg hello"]);
    assert!(!h.end());
    h.read("ld\n");
    assert_eq!(h.events(), ["msg world"]);
}

/// Measured (`idle-mem` in the bench): an idle connection that carried
/// the rare state's box and an event queue's buffer cost 380 bytes more.
#[test]
fn an_established_idle_connection_carries_no_rare_state() {
    let mut h = Harness::server().started();
    h.read("hi\n");
    h.written();
    assert!(!h.end());
    assert!(h.core.rare.is_none(), "the rare state was shed");
    // A full-buffer episode needs it, and gives it back when it ends.
    h.conn.inner.mark(crate::mailbox::req::FULL);
    let _ = h.conn.send(&"x".repeat(2 << 20));
    h.turn();
    assert!(h.core.rare.is_some());
    h.written();
    h.end();
    assert!(h.core.rare.is_none());
}

#[test]
fn a_partial_message_that_stops_growing_is_closed_at_the_message_timeout() {
    let limits = Limits::default()
        .message_timeout(Some(Duration::from_secs(30)))
        .first_message_timeout(None);
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _, _| {}).started();
    h.events();
    assert_eq!(h.core.poll_deadline(), None, "nothing partial");
    h.read("the start of a li");
    assert_eq!(
        h.core.poll_deadline(),
        Some(h.now + Duration::from_secs(30))
    );
    // Growing keeps it alive: the deadline follows the last byte.
    h.advance(Duration::from_secs(20));
    h.read("ne that goes on");
    assert_eq!(
        h.core.poll_deadline(),
        Some(h.now + Duration::from_secs(30))
    );
    h.advance(Duration::from_secs(29));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Open);
    h.advance(Duration::from_secs(1));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Closing);
    assert_eq!(h.reason(), CloseReason::MessageTimeout);
    assert_eq!(h.written(), "goodbye timeout\n");
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    // Presumed gone: no wait for its FIN.
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(
        h.events(),
        ["close message timeout: a partial message stopped in_map=true"]
    );
}

#[test]
fn what_the_session_holds_is_a_partial_message_too_but_held_input_is_not() {
    let limits = Limits::default()
        .message_timeout(Some(Duration::from_secs(5)))
        .first_message_timeout(None);
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _, _| {}).started();
    h.events();
    // Whole lines held back by a pause: the peer is not the one stalling.
    h.read("pause\nqueued\n");
    assert_eq!(h.events(), ["msg pause"]);
    assert_eq!(h.core.poll_deadline(), None);
    h.conn.resume_recv();
    h.turn();
    assert_eq!(h.events(), ["msg queued"]);
    // A message reassembled by the session (a WebSocket message in
    // fragments) with nothing in the read buffer.
    h.read("hold 100\n");
    assert_eq!(h.core.poll_deadline(), Some(h.now + Duration::from_secs(5)));
    h.advance(Duration::from_secs(5));
    h.turn();
    assert_eq!(h.reason(), CloseReason::MessageTimeout);
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
    h.eof();
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.core.is_closed());
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
        h.reason(),
        CloseReason::Session(SessionClose::local(4001, "kicked"))
    );
}

#[test]
fn linger_ends_at_the_close_timeout() {
    let mut h = Harness::server().started();
    h.conn.close();
    h.turn();
    h.written();
    assert_eq!(h.action(), Some(SocketAction::Shutdown));
    let timeout = h.limits().close_timeout;
    assert_eq!(h.core.poll_deadline(), Some(h.now + timeout));
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
    h.eof();
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
    h.write_blocked();
    assert_eq!(
        h.conn.send_buffer_len(),
        "stuck\ngoodbye local 1000 \n".len()
    );
    h.advance(h.limits().close_timeout);
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(
        h.events(),
        [
            "error timed out flushing the send buffer on close",
            "close flush timeout in_map=true"
        ]
    );
    assert_eq!(h.reason(), CloseReason::FlushTimeout);
}

#[test]
fn first_message_timeout_closes_without_waiting_for_flush_or_fin() {
    let limits = Limits {
        first_message_timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _, _| {}).started();
    h.events();
    assert_eq!(h.core.poll_deadline(), Some(h.now + Duration::from_secs(2)));
    h.advance(Duration::from_secs(2));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Closing);
    // The goodbye goes into the socket if it takes it; nothing waits.
    h.write_blocked();
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert_eq!(h.events(), ["close first-message timeout in_map=true"]);
}

#[test]
fn a_whole_message_in_time_clears_the_first_message_deadline() {
    let limits = Limits {
        first_message_timeout: Some(Duration::from_secs(2)),
        ..Limits::default()
    };
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _, _| {}).started();
    h.read("hi\n");
    assert_eq!(h.core.poll_deadline(), None);
    h.advance(Duration::from_secs(60));
    h.turn();
    assert_eq!(h.core.phase(), Phase::Open);
}

fn handshaking(hook: Option<Result<(), Reject>>) -> Harness {
    Harness::new(
        Lines { handshake: true },
        Limits::default(),
        Tenure::Whole,
        move |h, log, ep| {
            if let Some(verdict) = hook {
                let (log, ep) = (log.clone(), ep.clone());
                h.on_handshake = Some(Arc::new(move |c: &Connection<Lines>, name: &String| {
                    push(
                        &log,
                        format!(
                            "handshake {name} in_map={}",
                            ep.connections.contains_key(&c.id())
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
    h.eof();
    assert_eq!(h.action(), Some(SocketAction::Close));
    assert!(h.events().is_empty(), "neither on_connect nor on_close");
    assert_eq!(h.map_len(), 0);
}

#[test]
fn a_handshake_that_never_finishes_times_out() {
    let mut h = handshaking(Some(Ok(())));
    h.read("HEL");
    let limit = h.limits().handshake_timeout;
    assert_eq!(h.core.poll_deadline(), Some(h.now + limit));
    h.advance(limit);
    h.turn();
    assert_eq!(h.reason(), CloseReason::HandshakeTimeout);
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
        h.reason(),
        CloseReason::Session(SessionClose::by_peer(1000, "bye"))
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
    assert_eq!(h.reason(), CloseReason::Protocol);
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
    h.core.begin_turn();
    h.read_only(&flood);
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
    let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, move |h, log, _| {
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
        |h, log, _| {
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
        let mut h = Harness::new(Lines::default(), limits, Tenure::Whole, |handlers, _, _| {
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
        assert_eq!(h.reason(), CloseReason::Panic, "{callback}");
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
        |h, _, _| {
            h.on_close = Some(Arc::new(|_: &Connection<Lines>, _: &CloseReason| {
                panic!("x")
            }));
            h.on_error = Some(Arc::new(|_: &Connection<Lines>, _: &ConnError| panic!("x")));
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
        |h, _, _| h.on_handshake = Some(Arc::new(|_: &Connection<Lines>, _: &String| panic!("x"))),
    )
    .started();
    h.read("HELLO x\n");
    assert_eq!(h.reason(), CloseReason::Panic);
    assert_eq!(h.events(), ["error on_handshake panicked: x"]);
    assert_eq!(h.map_len(), 0);
}

#[test]
fn a_panic_in_an_async_handler_closes_only_after_reporting() {
    let mut h = Harness::new(
        Lines::default(),
        Limits::default(),
        Tenure::Whole,
        |h, _, _| {
            h.on_message = Some(MessageHandler::Async(Arc::new(|_c, _m: String| {
                Box::pin(async { panic!("x") }) as LocalBoxFuture
            })));
        },
    )
    .started();
    h.events();
    h.read("a\n");
    assert_eq!(h.events(), ["error on_message (async) panicked: x"]);
    assert_eq!(h.reason(), CloseReason::Panic);
}

fn small_buffer(backpressure: Backpressure) -> Harness {
    let limits = Limits {
        send_buffer_size: 8,
        backpressure,
        ..Limits::default()
    };
    let h = Harness::new(Lines::default(), limits, Tenure::Whole, |_, _, _| {}).started();
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
    h.write_blocked();
    let mut refused = 0;
    for _ in 0..1_000_000 {
        if let SendStatus::BufferFull = h.conn.send("x") {
            refused += 1;
        }
    }
    assert_eq!(refused, 1_000_000);
    h.turn();
    assert_eq!(h.events(), ["full"], "the first drop starts the episode");
    let first = h.core.poll_deadline().unwrap();
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
    h.write_blocked();
    h.turn();
    assert!(
        h.events().is_empty(),
        "still held while the peer does not read"
    );
    // The drain lifts the hold: what was read is delivered at once.
    assert_eq!(h.written(), "0123456789\n");
    assert_eq!(h.events(), ["drain", "msg send a", "msg b"]);
    assert!(h.core.wants_read());
    assert_eq!(h.written(), "a\n");
}

#[test]
fn pause_recv_keeps_sends_up_to_twice_the_limit_then_drops() {
    let mut h = small_buffer(Backpressure::PauseRecv);
    assert!(h.conn.send("0123456789").is_queued(), "crosses the limit");
    assert!(h.conn.send("abcde").is_queued(), "under twice the limit");
    assert!(matches!(h.conn.send("x"), SendStatus::BufferFull));
    assert!(h.events().is_empty(), "nothing runs inside send");
    h.turn();
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
    h.io_error("read", io::ErrorKind::ConnectionReset);
    assert!(h.core.is_closed());
    let ev = h.events();
    assert!(ev[0].starts_with("error I/O error"), "{ev:?}");
    assert_eq!(ev[1], "close socket error: connection reset in_map=true");
    // Exactly once, whatever comes after.
    h.eof();
    h.io_error("write", io::ErrorKind::BrokenPipe);
    h.core.abandon();
    h.pump();
    assert!(h.log.lock().unwrap().is_empty());
}

#[test]
fn abandoned_alive_it_still_closes_once_with_worker_stopped() {
    let mut h = Harness::server().started();
    h.events();
    h.core.abandon();
    h.pump();
    assert_eq!(h.events(), ["close worker stopped in_map=true"]);
    assert_eq!(h.map_len(), 0);
    assert!(h.conn.is_closed());
    h.core.abandon();
    h.pump();
    assert!(h.events().is_empty());
}

#[test]
fn a_client_session_keeps_its_queue_and_leaves_the_map_to_its_supervisor() {
    let tenure = Tenure::Session {
        keep_unsent: true,
        queue_between: false,
    };
    let mut h = Harness::new(Lines::default(), Limits::default(), tenure, |_, _, _| {});
    let entry = MapEntry::insert(&h.endpoint, &h.conn);
    h = h.started();
    assert_eq!(h.events(), ["connect in_map=true"]);
    let _ = h.conn.send("unsent");
    h.io_error("read", io::ErrorKind::ConnectionReset);
    assert_eq!(h.map_len(), 1, "still the supervisor's");
    assert!(matches!(h.conn.send("refused"), SendStatus::Closed));
    // The supervisor starts the next session; sends are accepted again.
    h.conn.inner.reset_session(true);
    let _ = h.conn.send("next session");
    let mut next = Lifecycle::new(h.conn.clone(), tenure);
    next.start(h.now);
    while next.poll_event(h.now).is_some() {}
    let mut out = Vec::new();
    while let Some(b) = next.poll_transmit() {
        out.extend_from_slice(b);
        let n = b.len();
        next.handle_written(n);
    }
    assert_eq!(out, b"unsent\nnext session\n");
    drop(entry);
    assert_eq!(h.map_len(), 0);
}

#[test]
fn between_client_sessions_that_reconnect_sends_queue_for_the_next() {
    let tenure = Tenure::Session {
        keep_unsent: true,
        queue_between: true,
    };
    let mut h = Harness::new(Lines::default(), Limits::default(), tenure, |_, _, _| {}).started();
    h.io_error("read", io::ErrorKind::ConnectionReset);
    assert!(h.conn.send("queued meanwhile").is_queued());
    assert!(!h.conn.is_connected());
    // The application's close refuses sends even then.
    h.conn.close();
    assert!(matches!(h.conn.send("after close"), SendStatus::Closed));
}

#[test]
fn over_the_memory_budget_holders_pause_small_ones_go_on_and_the_largest_is_closed() {
    use crate::memory::{GRACE, RECHECK, UNIT};
    let limits = Limits {
        memory_budget: 4 * UNIT,
        send_buffer_size: 64 * UNIT,
        ..Limits::default()
    };
    let shared = Shared::new(Lines::default(), limits, |_, _, _| {});
    let ep = shared.site.endpoint.clone();
    let t0 = Instant::now();
    let mut big = Harness::attach(&shared, Tenure::Whole, t0).started();
    let mut mid = Harness::attach(&shared, Tenure::Whole, t0).started();
    let mut small = Harness::attach(&shared, Tenure::Whole, t0).started();
    shared.log.lock().unwrap().clear();
    // Two peers that do not read: their queues stay charged.
    for (h, units) in [(&mut big, 4), (&mut mid, 2)] {
        let _ = h.conn.send(&"x".repeat(units * UNIT));
        h.write_blocked();
        h.end();
    }
    assert_eq!(ep.memory.used(), 6 * UNIT);
    assert!(ep.memory.is_over());
    for h in [&mut big, &mut mid] {
        h.turn();
        assert!(!h.core.wants_read(), "a holder stops reading");
    }
    assert_eq!(big.core.poll_deadline(), Some(t0 + RECHECK));
    small.read("hi\n");
    assert_eq!(small.events(), ["msg hi"], "a small connection is served");
    // Still over after the grace period: only the largest class closes.
    for h in [&mut mid, &mut big, &mut small] {
        h.advance(GRACE);
        h.turn();
    }
    assert!(!mid.core.is_closed());
    assert!(big.core.is_closed());
    let ev = shared.log.lock().unwrap().clone();
    assert_eq!(
        ev,
        [
            "error over the memory budget of 0 MiB: closed, holding 256 KiB",
            "close overload: over the memory budget in_map=true"
        ]
    );
    assert_eq!(big.reason(), CloseReason::Overload);
    // The shell uncharges a closed connection.
    big.memory.charge(&ep.memory, 0, big.now);
    // Under the budget again: the others read again.
    assert_eq!(ep.memory.used(), 2 * UNIT);
    mid.turn();
    assert!(mid.core.wants_read());
}

#[test]
fn what_the_session_holds_counts_against_the_message_limit_and_the_budget() {
    let mut h = Harness::server().started();
    h.events();
    h.conn.set_max_package_size(1000);
    // The session holds 990 bytes of a message being reassembled: 10 more
    // bytes waiting in the read buffer are within the limit, 11 are not.
    h.read("hold 990\n0123456789");
    assert_eq!(h.core.held_bytes(), 990 + 10, "the session and the buffer");
    assert_eq!(h.core.phase(), Phase::Open);
    h.read("a");
    assert_eq!(h.core.phase(), Phase::Closing);
    assert_eq!(h.reason(), CloseReason::Protocol);
    let ev = h.events();
    assert!(ev[0].contains("1001") && ev[0].contains("1000"), "{ev:?}");
}

/// The raw events of the state machine, without a dispatcher, as the
/// driver sees them.
mod event_stream {
    use super::*;

    fn names(h: &mut Harness) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(event) = h.core.poll_event(h.now) {
            out.push(match event {
                Event::Handshake(name) => format!("Handshake({name})"),
                Event::Connected => "Connected".into(),
                Event::Message(m) => format!("Message({m})"),
                Event::BufferFull => "BufferFull".into(),
                Event::BufferDrain => "BufferDrain".into(),
                Event::Error(e) => format!("Error({e})"),
                Event::Closed(r) => format!("Closed({r})"),
            });
        }
        out
    }

    fn raw(protocol: Lines, limits: Limits) -> Harness {
        let mut h = Harness::new(protocol, limits, Tenure::Whole, |_, _, _| {});
        h.core.begin_turn();
        h.core.start(h.now);
        h
    }

    /// Lends `bytes` to the state machine without polling anything.
    fn feed(h: &mut Harness, bytes: &str) -> Vec<u8> {
        let mut buf = bytes.as_bytes().to_vec();
        h.core.handle_read(&mut buf, bytes.len(), h.now);
        buf
    }

    #[test]
    fn a_connections_life_is_a_stream_of_events() {
        let mut h = raw(Lines::default(), Limits::default());
        assert_eq!(names(&mut h), ["Connected"]);
        let mut buf = feed(&mut h, "a\nb\nbad\nnever\n");
        assert_eq!(
            names(&mut h),
            [
                "Message(a)",
                "Message(b)",
                "Error(protocol error: malformed input: bad line)"
            ]
        );
        h.core.reclaim_read_buffer(&mut buf);
        assert_eq!(h.transmitted(), "goodbye violation\n");
        assert_eq!(
            h.core.poll_socket_action(h.now),
            Some(SocketAction::Shutdown)
        );
        assert_eq!(names(&mut h), ["Closed(protocol error)"]);
        h.core.handle_eof(h.now);
        assert_eq!(h.core.poll_socket_action(h.now), Some(SocketAction::Close));
        assert!(names(&mut h).is_empty(), "Closed comes once");
    }

    #[test]
    fn messages_are_decoded_one_event_at_a_time() {
        let mut h = raw(Lines::default(), Limits::default());
        names(&mut h);
        let mut buf = feed(&mut h, "one\ntwo\nthree\n");
        let Some(Event::Message(first)) = h.core.poll_event(h.now) else {
            panic!("a message")
        };
        assert_eq!(first, "one");
        // What the application does with `one` (it closes) is seen before
        // `two` is decoded: nothing more is delivered.
        h.conn.close();
        assert!(names(&mut h).is_empty());
        h.core.reclaim_read_buffer(&mut buf);
        assert_eq!(h.core.phase(), Phase::Closing);
        assert_eq!(h.transmitted(), "goodbye local 1000 \n");
    }

    #[test]
    fn a_send_that_fills_the_buffer_yields_buffer_full_before_the_next_message() {
        let limits = Limits {
            send_buffer_size: 8,
            backpressure: Backpressure::Drop,
            ..Limits::default()
        };
        let mut h = raw(Lines::default(), limits);
        names(&mut h);
        feed(&mut h, "x\ny\n");
        let Some(Event::Message(x)) = h.core.poll_event(h.now) else {
            panic!("a message")
        };
        assert_eq!(x, "x");
        // What an `on_message` does: a send that crosses the limit. `send`
        // only queues and flags; nothing runs inside it.
        assert!(h.conn.send("0123456789").is_queued());
        assert_eq!(names(&mut h), ["BufferFull", "Message(y)"]);
        assert_eq!(h.transmitted(), "0123456789\n");
        assert_eq!(names(&mut h), ["BufferDrain"]);
        // A new crossing is a new episode.
        assert!(h.conn.send("abcdefghij").is_queued());
        h.core.handle_turn(h.now);
        assert_eq!(names(&mut h), ["BufferFull"]);
    }

    #[test]
    fn sends_that_stay_over_the_limit_start_no_new_episode() {
        let limits = Limits {
            send_buffer_size: 8,
            ..Limits::default()
        };
        let mut h = raw(Lines::default(), limits);
        names(&mut h);
        assert!(h.conn.send("0123456789").is_queued());
        assert!(h.conn.send("x").is_queued());
        assert!(h.conn.send("y").is_queued());
        h.core.handle_turn(h.now);
        assert_eq!(names(&mut h), ["BufferFull"]);
        assert!(!h.core.wants_read(), "PauseRecv holds reading");
    }

    #[test]
    fn a_handshake_waits_for_its_verdict() {
        let mut h = raw(Lines { handshake: true }, Limits::default());
        assert!(names(&mut h).is_empty());
        let mut buf = feed(&mut h, "HELLO ann\nhi\n");
        let Some(Event::Handshake(name)) = h.core.poll_event(h.now) else {
            panic!("the handshake")
        };
        assert_eq!(name, "ann");
        assert!(names(&mut h).is_empty(), "nothing before the verdict");
        assert!(!h.core.wants_read());
        h.core.handle_verdict(name, Verdict::Accept, h.now);
        assert_eq!(names(&mut h), ["Connected", "Message(hi)"]);
        h.core.reclaim_read_buffer(&mut buf);
        assert_eq!(h.transmitted(), "WELCOME ann\n");
    }

    #[test]
    fn a_refused_handshake_closes_without_connected_or_closed() {
        let mut h = raw(Lines { handshake: true }, Limits::default());
        let _ = feed(&mut h, "HELLO eve\n");
        let Some(Event::Handshake(name)) = h.core.poll_event(h.now) else {
            panic!("the handshake")
        };
        h.core
            .handle_verdict(name, Verdict::Reject(Reject::new(403)), h.now);
        assert!(names(&mut h).is_empty());
        assert_eq!(h.transmitted(), "DENIED 403\n");
        assert_eq!(
            h.core.poll_socket_action(h.now),
            Some(SocketAction::Shutdown)
        );
        h.core.handle_eof(h.now);
        assert_eq!(h.core.poll_socket_action(h.now), Some(SocketAction::Close));
        assert!(names(&mut h).is_empty());
    }

    #[test]
    fn the_deadline_is_data_and_a_timeout_is_an_event() {
        let limits = Limits {
            first_message_timeout: Some(Duration::from_secs(3)),
            ..Limits::default()
        };
        let mut h = raw(Lines::default(), limits);
        names(&mut h);
        assert_eq!(h.core.poll_deadline(), Some(h.now + Duration::from_secs(3)));
        h.advance(Duration::from_secs(3));
        h.core.handle_turn(h.now);
        h.transmitted();
        assert_eq!(
            h.core.poll_socket_action(h.now),
            Some(SocketAction::Shutdown)
        );
        assert_eq!(names(&mut h), ["Closed(first-message timeout)"]);
    }
}
