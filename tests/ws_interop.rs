//! lubdub's WebSocket against real peers over loopback: Python `websockets`
//! (client and server) and Node `ws` (client). The peers are the scripts in
//! tests/interop, run as child processes; they print one JSON line per case
//! and the test checks those lines and what the lubdub side saw.
//!
//! Cases: text, binary, 1 MiB messages, fragmented messages, pings both
//! ways, close codes both ways, permessage-deflate.
//!
//! Peers are installed by .ci/run (`pip install websockets==17.4`,
//! `npm ci` in tests/interop/node); a missing peer fails the test with what
//! to install.

mod ws_support;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use lubdub::ws::{DeflateConfig, Message, Ws, WsConfig};
use lubdub::{Client, CloseReason, ConnStats, Connection, EventLoop, LoopHandle, SessionClose};
use serde_json::Value;
use ws_support::echo_server::{assert_messages, short, EchoServer};
use ws_support::{binary_payload, recv, text_payload, ChildGuard, MIB};

/// The peer's report of its echoes: each came back equal and of the type sent.
fn assert_echoes(case: &str, report: &Value, want: &[Message]) {
    let echoes = report["echoes"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no echoes in {report}"));
    assert_eq!(echoes.len(), want.len(), "{case}: {report}");
    for (e, w) in echoes.iter().zip(want) {
        let kind = if matches!(w, Message::Text(_)) {
            "text"
        } else {
            "binary"
        };
        assert_eq!(e["sent_type"], kind, "{case}: {e}");
        assert_eq!(e["type"], kind, "{case}: echo type {e}");
        assert_eq!(e["len"], w.as_bytes().len(), "{case}: {e}");
        assert_eq!(e["equal"], true, "{case}: the echo differs: {e}");
    }
}

fn text(s: &str) -> Message {
    Message::Text(s.to_owned())
}

fn peer_close(code: u16, reason: &str) -> CloseReason {
    CloseReason::Session(SessionClose::by_peer(code, reason))
}

// ---------------------------------------------------------------------------
// The client peers (Python websockets, Node ws) run the same cases; the
// checks are shared.
// ---------------------------------------------------------------------------

/// Which client peer runs the cases.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Python,
    Node,
}

impl Peer {
    fn run(self, url: &str, cases: &[&str]) -> ChildGuard {
        let mut cmd = match self {
            Peer::Python => ws_support::python_script("ws_client.py"),
            Peer::Node => ws_support::node_script("ws_client.mjs"),
        };
        cmd.arg(url).args(cases);
        ChildGuard::spawn(&format!("{self:?} client"), &mut cmd)
    }

    /// Runs `cases` against `server`; returns each case's report.
    fn cases(self, server: &EchoServer, cases: &[&str]) -> Vec<Value> {
        let mut child = self.run(&server.url(), cases);
        let mut reports = Vec::new();
        for case in cases {
            let report = child.json();
            assert_eq!(report["case"], *case, "{self:?}: {report}");
            reports.push(report);
        }
        let done = child.json();
        assert_eq!(done["done"], true, "{self:?}: {done}");
        child.expect_success();
        reports
    }
}

fn text_and_binary(peer: Peer) {
    let server = EchoServer::start(WsConfig::default());
    let reports = peer.cases(&server, &["text", "binary"]);

    let want = [text("hello ✓"), text("")];
    assert_echoes("text", &reports[0], &want);
    let s = server.session("text");
    s.assert_clean("text");
    assert_messages("text", &s.data(), &want);
    assert_eq!(s.close, Some(peer_close(1000, "")), "text: a normal close");

    let want = [
        Message::Binary((0..=255).collect()),
        Message::Binary(vec![]),
    ];
    assert_echoes("binary", &reports[1], &want);
    let s = server.session("binary");
    s.assert_clean("binary");
    assert_messages("binary", &s.data(), &want);
}

fn one_mib_messages(peer: Peer) {
    let server = EchoServer::start(WsConfig::default());
    let reports = peer.cases(&server, &["big"]);
    let want = [
        Message::Text(text_payload(MIB)),
        Message::Binary(binary_payload(MIB, 1)),
    ];
    assert_echoes("big", &reports[0], &want);
    let s = server.session("big");
    s.assert_clean("big");
    assert_messages("big", &s.data(), &want);
    assert!(
        s.stats.bytes_in >= 2 * MIB as u64 && s.stats.bytes_out >= 2 * MIB as u64,
        "big: no compression, so at least the payloads crossed: {:?}",
        s.stats
    );
}

fn fragmented_messages(peer: Peer) {
    let server = EchoServer::start(WsConfig::default());
    let reports = peer.cases(&server, &["fragmented"]);
    let want = [
        text("frag-1 ✓ frag-2 ünï frag-3"),
        Message::Binary(vec![0, 1, 2, 3]),
        Message::Binary(binary_payload(MIB, 1)),
    ];
    assert_echoes("fragmented", &reports[0], &want);
    let s = server.session("fragmented");
    s.assert_clean("fragmented");
    // Each fragmented message reaches on_message once, whole.
    assert_messages("fragmented", &s.data(), &want);
}

fn pings_both_ways(peer: Peer) {
    let server = EchoServer::start(WsConfig::default());
    let reports = peer.cases(&server, &["ping"]);
    let r = &reports[0];
    assert!(
        r["pong_latency"].as_f64().is_some_and(|l| l >= 0.0),
        "ping: the peer's ping was answered: {r}"
    );
    assert_eq!(r["after_ping"], "pinged", "ping: {r}");
    assert_echoes("ping", r, &[text("after ping")]);
    let s = server.session("ping");
    s.assert_clean("ping");
    // Pings are answered by the protocol, not delivered (deliver_pings is
    // off); the peer's pong to our ping is delivered with its payload.
    assert_eq!(
        s.messages,
        [
            text("please ping"),
            Message::Pong(b"lubdub-ping".to_vec()),
            text("after ping")
        ],
        "ping: what on_message saw"
    );
}

fn close_codes(peer: Peer) {
    let server = EchoServer::start(WsConfig::default());
    let reports = peer.cases(&server, &["close", "server-close"]);

    // The peer closes with 4001 "bye": on_close sees it, and the echo of
    // the close frame carries the same code back.
    let r = &reports[0];
    assert_eq!(r["close_code"], 4001, "close: the echoed code: {r}");
    let s = server.session("close");
    s.assert_clean("close");
    assert_eq!(
        s.close,
        Some(CloseReason::Session(SessionClose {
            code: 4001,
            reason: "bye".into(),
            by_peer: true
        })),
        "close: on_close"
    );

    // lubdub closes with 4002 "done": the peer sees that code and reason.
    let r = &reports[1];
    assert_eq!(r["rcvd_code"], 4002, "server-close: {r}");
    assert_eq!(r["rcvd_reason"], "done", "server-close: {r}");
    assert_eq!(r["close_code"], 4002, "server-close: {r}");
    assert!(r.get("unexpected").is_none(), "server-close: {r}");
    let s = server.session("server-close");
    s.assert_clean("server-close");
    assert_messages("server-close", &s.data(), &[text("please close")]);
    assert_eq!(
        s.close,
        Some(CloseReason::Session(SessionClose::local(4002, "done"))),
        "server-close: on_close"
    );
}

fn permessage_deflate(peer: Peer) {
    let server = EchoServer::start(WsConfig::default().deflate(DeflateConfig::default()));
    let reports = peer.cases(&server, &["deflate"]);
    let r = &reports[0];
    let header = r["extensions_header"].as_str().unwrap_or_default();
    assert!(
        header.starts_with("permessage-deflate"),
        "deflate: the server's answer names the extension: {r}"
    );
    assert_eq!(
        r["extensions"],
        serde_json::json!(["permessage-deflate"]),
        "deflate: negotiated on the peer's side: {r}"
    );
    let want = [
        text("small ✓"),
        Message::Text(text_payload(MIB)),
        Message::Binary(binary_payload(64 * 1024, 1)),
        Message::Text(text_payload(64 * 1024)),
    ];
    assert_echoes("deflate", r, &want);
    let s = server.session("deflate");
    s.assert_clean("deflate");
    assert_eq!(s.deflate, Some(true), "deflate: the server accepted it");
    assert_messages("deflate", &s.data(), &want);
    // The repetitive MiB crossed compressed both ways: the wire carried far
    // less than the payloads (about 1.2 MiB), so both sides compressed and
    // both inflated.
    let payloads = want.iter().map(|m| m.as_bytes().len()).sum::<usize>() as u64;
    assert!(
        s.stats.bytes_in < payloads / 4 && s.stats.bytes_out < payloads / 4,
        "deflate: {payloads} bytes of payload, wire {:?}",
        s.stats
    );
}

#[test]
fn python_client_text_and_binary() {
    text_and_binary(Peer::Python);
}

#[test]
fn python_client_one_mib_messages() {
    one_mib_messages(Peer::Python);
}

#[test]
fn python_client_fragmented_messages_arrive_whole() {
    fragmented_messages(Peer::Python);
}

#[test]
fn python_client_pings_and_lubdub_pings() {
    pings_both_ways(Peer::Python);
}

#[test]
fn python_client_close_codes_both_ways() {
    close_codes(Peer::Python);
}

#[test]
fn python_client_negotiates_permessage_deflate() {
    permessage_deflate(Peer::Python);
}

#[test]
fn node_client_text_and_binary() {
    text_and_binary(Peer::Node);
}

#[test]
fn node_client_one_mib_messages() {
    one_mib_messages(Peer::Node);
}

#[test]
fn node_client_fragmented_messages_arrive_whole() {
    fragmented_messages(Peer::Node);
}

#[test]
fn node_client_pings_and_lubdub_pings() {
    pings_both_ways(Peer::Node);
}

#[test]
fn node_client_close_codes_both_ways() {
    close_codes(Peer::Node);
}

#[test]
fn node_client_negotiates_permessage_deflate() {
    permessage_deflate(Peer::Node);
}

// ---------------------------------------------------------------------------
// lubdub's Client<Ws> against a Python websockets server (ws_server.py).
// ---------------------------------------------------------------------------

/// What the lubdub client saw.
#[derive(Debug)]
enum ClientEv {
    Handshake { status: u16, deflate: bool },
    Connect,
    Message(Message),
    Close(CloseReason, ConnStats),
    Error(String),
}

/// The Python server, its port, and the line it prints per closed connection.
struct PyServer {
    child: ChildGuard,
    port: u16,
}

impl PyServer {
    fn start(deflate: bool) -> Self {
        let mut cmd = ws_support::python_script("ws_server.py");
        if deflate {
            cmd.arg("--deflate");
        }
        let child = ChildGuard::spawn("Python server", &mut cmd);
        let hello = child.json();
        assert_eq!(hello["event"], "listening", "{hello}");
        let port = hello["port"].as_u64().expect("a port") as u16;
        PyServer { child, port }
    }

    /// The server's report of the next connection that ended.
    fn closed(&self) -> Value {
        let v = self.child.json();
        assert_eq!(v["event"], "closed", "{v}");
        v
    }
}

/// A lubdub client on its own event loop thread, connected to `url`;
/// stopped (loop and thread) on drop.
struct LubdubClient {
    conn: Connection<Ws>,
    events: Receiver<ClientEv>,
    /// The server's 101 accepted permessage-deflate.
    deflate: bool,
    lp: Option<LoopHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LubdubClient {
    fn connect(url: &str, config: WsConfig) -> Self {
        let (tx, events) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let url = url.to_owned();
        let thread = std::thread::spawn(move || {
            EventLoop::run(move |lp| {
                let mut client = Client::with_protocol(url.as_str(), Ws::server(config)).unwrap();
                let tx = Arc::new(Mutex::new(tx));
                let send = move |ev: ClientEv| {
                    let _ = tx.lock().unwrap().send(ev);
                };
                {
                    let send = send.clone();
                    client.on_handshake(move |_, hs| {
                        if let lubdub::ws::Handshake::Response(res) = hs {
                            send(ClientEv::Handshake {
                                status: res.status(),
                                deflate: res.deflate(),
                            });
                        }
                        Ok(())
                    });
                }
                {
                    let send = send.clone();
                    client.on_connect(move |_| send(ClientEv::Connect));
                }
                {
                    let send = send.clone();
                    client.on_message(move |_, m| send(ClientEv::Message(m)));
                }
                {
                    let send = send.clone();
                    client.on_close(move |c, r| send(ClientEv::Close(r.clone(), c.stats())));
                }
                client.on_error(move |_, e| send(ClientEv::Error(e.to_string())));
                let conn = client.connect().unwrap();
                ready_tx.send((lp.clone(), conn)).unwrap();
            })
        });
        let (lp, conn) = recv(&ready, "the client's event loop");
        let deflate = match recv(&events, "the handshake") {
            ClientEv::Handshake {
                status: 101,
                deflate,
            } => deflate,
            other => panic!("expected the 101 handshake, got {other:?}"),
        };
        let c = LubdubClient {
            conn,
            events,
            deflate,
            lp: Some(lp),
            thread: Some(thread),
        };
        match c.next() {
            ClientEv::Connect => {}
            other => panic!("expected on_connect, got {other:?}"),
        }
        c
    }

    /// The next event; an error fails the test.
    fn next(&self) -> ClientEv {
        match recv(&self.events, "a client event") {
            ClientEv::Error(e) => panic!("the lubdub client reported an error: {e}"),
            ev => ev,
        }
    }

    /// The next data message; errors and closes fail the test.
    fn message(&self) -> Message {
        match self.next() {
            ClientEv::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Sends `m` and checks that the same message comes back.
    fn echo(&self, m: Message) {
        assert!(self.conn.send(&m).is_queued(), "send {}", short(&m));
        let back = self.message();
        assert!(back == m, "echo: sent {}, got {}", short(&m), short(&back));
    }

    /// The close reason and the connection's counters.
    fn closed(&self) -> (CloseReason, ConnStats) {
        match self.next() {
            ClientEv::Close(r, s) => (r, s),
            other => panic!("expected the close, got {other:?}"),
        }
    }
}

impl Drop for LubdubClient {
    fn drop(&mut self) {
        if let Some(lp) = self.lp.take() {
            lp.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn lubdub_client_echoes_with_python_server_text_binary_one_mib_fragments() {
    let server = PyServer::start(false);
    let client = LubdubClient::connect(
        &format!("ws://127.0.0.1:{}/echo?who=lubdub", server.port),
        WsConfig::default(),
    );
    client.echo(text("hello ✓"));
    client.echo(text(""));
    client.echo(Message::Binary((0..=255).collect()));
    client.echo(Message::Binary(vec![]));
    client.echo(Message::Text(text_payload(MIB)));
    client.echo(Message::Binary(binary_payload(MIB, 1)));
    // Fragmented by the server: each reaches on_message once, whole.
    assert!(client.conn.send(&text("please fragment")).is_queued());
    assert_eq!(client.message(), text("frag-1 ✓ frag-2 ünï frag-3"));
    let big = client.message();
    assert!(
        big == Message::Binary(binary_payload(MIB, 2)),
        "the 16-fragment MiB: got {}",
        short(&big)
    );
    // lubdub closes with 4002 "done": the server receives that code.
    client.conn.close_session(4002, "done");
    let (reason, _) = client.closed();
    assert_eq!(
        reason,
        CloseReason::Session(SessionClose::local(4002, "done")),
        "on_close after close_session"
    );
    let report = server.closed();
    assert_eq!(report["path"], "/echo?who=lubdub", "{report}");
    assert_eq!(report["rcvd_code"], 4002, "{report}");
    assert_eq!(report["rcvd_reason"], "done", "{report}");
    assert_eq!(report["extensions"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["received"].as_array().map(Vec::len),
        Some(7),
        "{report}"
    );
}

#[test]
fn lubdub_client_pings_python_server_and_answers_its_pings() {
    let server = PyServer::start(false);
    let client = LubdubClient::connect(
        &format!("ws://127.0.0.1:{}/ping", server.port),
        WsConfig::default(),
    );
    // Our ping: websockets answers with a pong of the same payload, which
    // on_message delivers.
    assert!(client
        .conn
        .send(&Message::Ping(b"lubdub-ping".to_vec()))
        .is_queued());
    assert_eq!(client.message(), Message::Pong(b"lubdub-ping".to_vec()));
    // Its ping: lubdub answers by itself (not delivered: deliver_pings is
    // off), and the server says whether the pong came.
    assert!(client.conn.send(&text("please ping")).is_queued());
    assert_eq!(client.message(), text("pong ok"));
    client.conn.close();
    assert_eq!(client.closed().0, CloseReason::Local);
    let report = server.closed();
    assert_eq!(
        report["rcvd_code"], 1000,
        "a plain close() is 1000: {report}"
    );
}

#[test]
fn python_server_close_4001_reaches_lubdub_on_close() {
    let server = PyServer::start(false);
    let client = LubdubClient::connect(
        &format!("ws://127.0.0.1:{}/close", server.port),
        WsConfig::default(),
    );
    assert!(client.conn.send(&text("please close")).is_queued());
    let (reason, _) = client.closed();
    assert_eq!(
        reason,
        CloseReason::Session(SessionClose {
            code: 4001,
            reason: "bye".into(),
            by_peer: true
        })
    );
    let report = server.closed();
    // lubdub echoed the code of the server's close frame.
    assert_eq!(report["rcvd_code"], 4001, "{report}");
}

#[test]
fn lubdub_client_negotiates_permessage_deflate_with_python_server() {
    let server = PyServer::start(true);
    let client = LubdubClient::connect(
        &format!("ws://127.0.0.1:{}/deflate", server.port),
        WsConfig::default().deflate(DeflateConfig::default()),
    );
    assert!(client.deflate, "the server's 101 accepted deflate");
    client.echo(text("small ✓"));
    client.echo(Message::Text(text_payload(MIB)));
    client.echo(Message::Binary(binary_payload(64 * 1024, 1)));
    assert!(client.conn.send(&text("please fragment")).is_queued());
    assert_eq!(client.message(), text("frag-1 ✓ frag-2 ünï frag-3"));
    assert!(client.message() == Message::Binary(binary_payload(MIB, 2)));
    client.conn.close_session(4002, "done");
    let (_, stats) = client.closed();
    let report = server.closed();
    assert_eq!(report["rcvd_code"], 4002, "{report}");
    let offer = report["request_extensions"].as_str().unwrap_or_default();
    assert!(
        offer.starts_with("permessage-deflate"),
        "lubdub offered deflate: {report}"
    );
    assert_eq!(
        report["extensions"],
        serde_json::json!(["permessage-deflate"]),
        "negotiated on the server's side: {report}"
    );
    // The client sent over 1.1 MiB of payload, the repetitive MiB
    // compressed to a few KiB; the random 64 KiB stays about as it is.
    assert!(
        stats.bytes_out < 256 * 1024,
        "deflate: client wire {stats:?}"
    );
}
