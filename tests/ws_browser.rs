//! A real browser against lubdub's WebSocket: headless Chromium loads the
//! ws_chat example's page, which joins the chat over a WebSocket; a lubdub
//! `Client<Ws>` joins as bob; messages go both ways; the page's DOM and a
//! screenshot are read back.
//!
//! How the browser is driven, and why this way: Chromium runs with
//! `--remote-debugging-port=0` (the OS picks a free port, which Chromium
//! writes to `DevToolsActivePort` in its fresh `--user-data-dir`), and
//! tests/interop/cdp.py speaks the DevTools protocol to the page over the
//! Python `websockets` package the interop tests already need. Waiting for
//! chat lines is event-driven: a `MutationObserver` in the page resolves a
//! promise the driver awaits (`Runtime.evaluate` with `awaitPromise`), so
//! no fixed delays. `--dump-dom --virtual-time-budget` was not chosen: it
//! reads the DOM once, so nothing can happen between the browser joining
//! and the dump (bob could not join after ann, nor ann type after bob), and
//! virtual time is not tied to real sockets, so whether the WebSocket
//! exchange has finished by the dump depends on timing. Playwright would
//! work too, at the price of another npm package for what four CDP calls do.
//!
//! Needs: `chromium` (Debian package; `.ci/run` installs it), Python with
//! `websockets`, and the ws_chat example built (a plain `cargo test` builds
//! the examples; `cargo build --example ws_chat` otherwise).

mod chat_support;
mod ws_support;

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use lubdub::ws::{Message, Ws};
use lubdub::{Client, CloseReason, Connection, EventLoop, LoopHandle, TlsClientConfig};
use serde_json::{json, Value};
use ws_support::browser::{Browser, Page};
use ws_support::{recv, ChildGuard, TempDir, WAIT};

/// The chat example on a free loopback port; returns it and its port.
fn start_chat() -> (ChildGuard, u16) {
    ws_support::start_ws_chat(&[], &[], "http")
}

/// The chat page's own command.
impl Page {
    /// Types `text` into the page's message box and sends it.
    fn send(&mut self, text: &str) {
        let text = serde_json::to_string(text).unwrap();
        self.eval(&format!(
            "document.getElementById('msg').value = {text}; \
             document.getElementById('send').requestSubmit(); true"
        ));
    }

    /// Runs the page's `openWs(url)` with the network log recorded: its
    /// value, the WebSocket handshakes and the console log.
    fn open_ws(&mut self, url: &str) -> Value {
        self.command(json!({
            "cmd": "eval_network",
            "expr": format!("openWs({url:?})"),
        }))
    }
}

/// bob: a lubdub client of the chat on its own event loop thread.
struct Bob {
    conn: Connection<Ws>,
    heard: Receiver<String>,
    closed: Receiver<CloseReason>,
    lp: Option<LoopHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bob {
    fn join(port: u16, first: &str) -> Self {
        Self::join_with(port, first, None)
    }

    /// Over wss when given the CA to trust.
    fn join_with(port: u16, first: &str, ca: Option<String>) -> Self {
        Self::join_at(port, "/ws?name=bob", first, ca)
    }

    /// Joins on `target` (a path and query).
    fn join_at(port: u16, target: &str, first: &str, ca: Option<String>) -> Self {
        let target = target.to_owned();
        let (heard_tx, heard) = mpsc::channel();
        let (closed_tx, closed) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let first = first.to_owned();
        let thread = std::thread::spawn(move || {
            EventLoop::run(move |lp| {
                let scheme = if ca.is_some() { "wss" } else { "ws" };
                let url = format!("{scheme}://127.0.0.1:{port}{target}");
                let mut client = Client::<Ws>::new(url.as_str()).unwrap();
                if let Some(ca) = &ca {
                    client.tls(TlsClientConfig::with_ca_pem(ca.as_bytes()).unwrap());
                }
                client.on_connect(move |c| {
                    let _ = c.send(&Message::Text(first.clone()));
                });
                let heard_tx = Mutex::new(heard_tx);
                client.on_message(move |_, m| {
                    if let Message::Text(t) = m {
                        let _ = heard_tx.lock().unwrap().send(t);
                    }
                });
                let closed_tx = Arc::new(Mutex::new(closed_tx));
                client.on_close(move |_, r| {
                    let _ = closed_tx.lock().unwrap().send(r.clone());
                });
                let conn = client.connect().unwrap();
                ready_tx.send((lp.clone(), conn)).unwrap();
            })
        });
        let (lp, conn) = recv(&ready, "bob's event loop");
        Bob {
            conn,
            heard,
            closed,
            lp: Some(lp),
            thread: Some(thread),
        }
    }

    fn hears(&self, want: &str) {
        let got = recv(&self.heard, &format!("bob hearing {want:?}"));
        assert_eq!(got, want, "what bob heard");
    }
}

impl Drop for Bob {
    fn drop(&mut self) {
        if let Some(lp) = self.lp.take() {
            lp.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The PNG signature and the IHDR's width and height.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

#[test]
fn chromium_chats_through_the_ws_chat_page() {
    // Checked first: a missing component fails here with what to install.
    ws_support::python();
    ws_support::chromium();
    let (chat, port) = start_chat();
    let base = format!("http://127.0.0.1:{port}/");

    // ann: the browser opens the page, which joins and says hello.
    let browser = Browser::open(&format!("{base}?name=ann&say=hello"));
    let mut page = Page::attach(&browser, &base);
    page.wait_items(&["* ann joined", "ann: hello"]);
    assert_eq!(
        page.eval("document.getElementById('status').textContent"),
        "connected as ann"
    );

    // bob: a lubdub client joins and speaks; both see it.
    let bob = Bob::join(port, "hi from bob");
    bob.hears("* bob joined");
    bob.hears("bob: hi from bob");
    page.wait_items(&["* bob joined", "bob: hi from bob"]);

    // ann types into the page's form; bob hears it.
    page.send("how are you, bob?");
    bob.hears("ann: how are you, bob?");

    // bob leaves; the page shows it.
    bob.conn.close();
    assert_eq!(
        recv(&bob.closed, "bob's close"),
        CloseReason::Local,
        "bob's on_close"
    );
    let items = page.wait_items(&["* bob left"]);
    assert_eq!(
        items,
        [
            "* ann joined",
            "ann: hello",
            "* bob joined",
            "bob: hi from bob",
            "ann: how are you, bob?",
            "* bob left"
        ],
        "the page's chat log, in order"
    );

    // A screenshot of the page: a real PNG of the window's size.
    let shots = TempDir::new("screenshot");
    let path = shots.path().join("ws_chat.png");
    let answer = page.command(json!({"cmd": "screenshot", "path": path}));
    let png = std::fs::read(&path).expect("the screenshot file");
    assert_eq!(answer["bytes"], png.len(), "{answer}");
    let size = png_size(&png).expect("a PNG signature and IHDR");
    assert!(
        size.0 >= 100 && size.1 >= 100 && png.len() > 1000,
        "screenshot {size:?}, {} bytes",
        png.len()
    );
    if let Some(dir) = std::env::var_os("LUBDUB_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&path, Path::new(&dir).join("ws_chat.png"));
    }

    // Close the browser cleanly (the guards kill whatever is left).
    let answer = page.command(json!({"cmd": "close_browser"}));
    assert_eq!(answer["closed"], true, "{answer}");
    drop(page);
    let mut browser = browser;
    browser.child.wait_exit(WAIT);
    drop(chat);
}

/// ws_chat with `--jwt-secret`: the page takes its token from the address's
/// fragment, which no request carries, drops it from the address bar and
/// hands it only to the WebSocket; the name is the token's subject.
#[test]
fn chromium_joins_with_a_token_from_the_fragment() {
    ws_support::python();
    ws_support::chromium();
    let (chat, port) =
        ws_support::start_ws_chat(&["--jwt-secret", chat_support::SECRET], &[], "http");
    let base = format!("http://127.0.0.1:{port}/");
    let token = chat_support::token("ann");
    let browser = Browser::open(&format!("{base}?say=hello#token={token}"));
    let mut page = Page::attach(&browser, &base);
    page.wait_items(&["* ann joined", "ann: hello"]);
    assert_eq!(
        page.eval("document.getElementById('status').textContent"),
        "connected as ann"
    );
    // The token is gone from the address bar, the history entry and the
    // document.
    assert_eq!(page.eval("location.href"), format!("{base}?say=hello"));
    let signature = token.rsplit('.').next().unwrap();
    let expr = format!(
        "document.documentElement.outerHTML.includes('{signature}') || \
         location.href.includes('{signature}')"
    );
    assert_eq!(page.eval(&expr), false);

    // bob, a lubdub client with a token of his own.
    let bob_target = format!("/ws?token={}", chat_support::token("bob"));
    let bob = Bob::join_at(port, &bob_target, "hi ann", None);
    bob.hears("* bob joined");
    bob.hears("bob: hi ann");
    page.wait_items(&["* bob joined", "bob: hi ann"]);
    page.send("hi bob");
    bob.hears("ann: hi bob");
    // The server never logged a token.
    let log = chat.stderr();
    assert!(!log.contains(signature), "the token in the log:\n{log}");
    drop(bob);
    drop(page);
    drop(browser);
    drop(chat);
}

/// A page that runs the interop cases from the browser side against the
/// echo server of tests/ws_support/echo_server.rs and leaves its report in
/// `window.result` (a promise).
const CASES_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lubdub WebSocket interop</title></head>
<body><h1>lubdub WebSocket interop</h1><pre id="out">running</pre>
<script>
const UNIT = "lub ✓ ünïcø"; // tests/interop/payloads.py's TEXT_UNIT
function connect(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/${path}`);
    ws.binaryType = "arraybuffer";
    const queue = [], waiters = [];
    ws.onmessage = (ev) => { const w = waiters.shift(); if (w) w(ev.data); else queue.push(ev.data); };
    ws.closed = new Promise((r) => {
      ws.onclose = (ev) => r({ code: ev.code, reason: ev.reason, wasClean: ev.wasClean });
    });
    ws.next = () => queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiters.push(r));
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`WebSocket error on /${path}`));
  });
}
function same(a, b) {
  if (typeof a === "string") return a === b;
  if (!(b instanceof ArrayBuffer)) return false;
  const x = new Uint8Array(a), y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}
async function echo(ws, m) {
  ws.send(m);
  const back = await ws.next();
  return {
    sent_type: typeof m === "string" ? "text" : "binary",
    type: typeof back === "string" ? "text" : "binary",
    len: typeof m === "string" ? new TextEncoder().encode(m).length : m.byteLength,
    equal: same(m, back),
  };
}
window.result = (async () => {
  const out = {};
  const ws = await connect("browser");
  out.extensions = ws.extensions;
  out.echoes = [
    await echo(ws, "hello ✓"),
    await echo(ws, new Uint8Array(256).map((_, i) => i).buffer),
    await echo(ws, UNIT.repeat(65536)),
  ];
  ws.send("please ping"); // the server pings, then says "pinged"
  out.after_ping = await ws.next();
  ws.close(4001, "bye");
  out.close = await ws.closed;
  const ws2 = await connect("browser-server-close");
  ws2.send("please close");
  out.server_close = await ws2.closed;
  return out;
})().then(
  (r) => { document.getElementById("out").textContent = JSON.stringify(r, null, 1); return r; },
  (e) => ({ error: String(e) }),
);
</script></body></html>
"#;

#[test]
fn chromium_interop_cases_against_a_deflate_echo_server() {
    use lubdub::protocols::ws::DeflateConfig;
    use lubdub::ws::WsConfig;
    use lubdub::SessionClose;
    use ws_support::echo_server::{assert_messages, EchoServer};
    use ws_support::{text_payload, MIB};

    ws_support::python();
    ws_support::chromium();
    let server = EchoServer::with_page(
        WsConfig::default().deflate(DeflateConfig::default()),
        Some(CASES_PAGE),
    );
    let base = format!("http://{}/", server.addr());
    let browser = Browser::open(&base);
    let mut page = Page::attach(&browser, &base);
    let r = page.eval("window.result");
    assert!(r.get("error").is_none(), "the page failed: {r}");

    // Chromium offers permessage-deflate; the server accepted it.
    let ext = r["extensions"].as_str().unwrap_or_default();
    assert!(ext.starts_with("permessage-deflate"), "{r}");
    for (e, kind) in r["echoes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["text", "binary", "text"])
    {
        assert_eq!(e["sent_type"], kind, "{e}");
        assert_eq!(e["type"], kind, "{e}");
        assert_eq!(e["equal"], true, "{e}");
    }
    assert_eq!(r["after_ping"], "pinged", "{r}");
    // The page closed with 4001 "bye"; lubdub echoed the code.
    assert_eq!(r["close"]["code"], 4001, "{r}");
    assert_eq!(r["close"]["wasClean"], true, "{r}");
    // lubdub closed with 4002 "done"; the page saw both.
    assert_eq!(
        r["server_close"],
        json!({"code": 4002, "reason": "done", "wasClean": true}),
        "{r}"
    );

    let s = server.session("browser");
    s.assert_clean("browser");
    assert_eq!(s.deflate, Some(true));
    let big = text_payload(MIB);
    assert_messages(
        "browser",
        &s.messages.iter().collect::<Vec<_>>(),
        &[
            Message::Text("hello ✓".into()),
            Message::Binary((0..=255).collect()),
            Message::Text(big),
            Message::Text("please ping".into()),
            // The browser answered lubdub's ping.
            Message::Pong(b"lubdub-ping".to_vec()),
        ],
    );
    assert_eq!(
        s.close,
        Some(CloseReason::Session(SessionClose::by_peer(4001, "bye"))),
        "on_close of the page's close"
    );
    // The MiB of text crossed compressed both ways.
    assert!(
        s.stats.bytes_in < (MIB / 8) as u64 && s.stats.bytes_out < (MIB / 8) as u64,
        "wire bytes with deflate: {:?}",
        s.stats
    );
    let s = server.session("browser-server-close");
    s.assert_clean("browser-server-close");
    assert_eq!(
        s.close,
        Some(CloseReason::Session(SessionClose::local(4002, "done")))
    );

    let shots = TempDir::new("screenshot");
    let path = shots.path().join("interop.png");
    page.command(json!({"cmd": "screenshot", "path": path}));
    let png = std::fs::read(&path).expect("the screenshot file");
    assert!(png_size(&png).is_some(), "a PNG");
    if let Some(dir) = std::env::var_os("LUBDUB_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&path, Path::new(&dir).join("ws_interop_page.png"));
    }
    let answer = page.command(json!({"cmd": "close_browser"}));
    assert_eq!(answer["closed"], true, "{answer}");
    drop(page);
    let mut browser = browser;
    browser.child.wait_exit(WAIT);
}

/// The chat over TLS: the page on https, its WebSocket on wss, bob a lubdub
/// wss client trusting the test's own certificate. Chromium is told to
/// accept that self-signed certificate with `--ignore-certificate-errors`,
/// in this test only.
#[test]
fn chromium_chats_over_https_and_wss() {
    ws_support::python();
    ws_support::chromium();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a test certificate");
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let (chat, port) = ws_support::start_ws_chat(
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
        &[],
        "https",
    );
    let base = format!("https://127.0.0.1:{port}/");

    let browser = Browser::open_with(
        &format!("{base}?name=ann&say=secure%20hello"),
        &["--ignore-certificate-errors"],
    );
    let mut page = Page::attach(&browser, &base);
    page.wait_items(&["* ann joined", "ann: secure hello"]);
    assert_eq!(page.eval("location.protocol"), "https:");

    let bob = Bob::join_with(port, "hi over wss", Some(made.cert.pem()));
    bob.hears("* bob joined");
    bob.hears("bob: hi over wss");
    page.wait_items(&["* bob joined", "bob: hi over wss"]);
    page.send("still encrypted");
    bob.hears("ann: still encrypted");
    drop(bob);
    drop(page);
    drop(browser);
    drop(chat);
}

/// A page that opens a WebSocket when told to (`openWs(url)`): the answer
/// is `{opened, echo}` after an echo round trip, or `{opened, code}` when
/// the connection failed or closed first.
const ORIGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>origin check</title></head>
<body><pre id="out">idle</pre>
<script>
window.openWs = (url) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  let opened = false;
  ws.onopen = () => { opened = true; ws.send(`hello from ${location.origin}`); };
  ws.onmessage = (ev) => { resolve({ opened, echo: ev.data }); ws.close(1000); };
  ws.onerror = () => {};
  ws.onclose = (ev) => resolve({ opened, code: ev.code });
}).then((r) => { document.getElementById("out").textContent = JSON.stringify(r); return r; });
</script></body></html>
"#;

/// Cross-site WebSocket hijacking, with a real browser: a page served by
/// another origin (another port of 127.0.0.1) opens a WebSocket to a
/// lubdub server with the default Origin policy: Chromium sends that
/// page's `Origin`, the server answers 403, the page sees the connection
/// fail, and the handshake hook never runs. The server's own page (same
/// origin) connects and round-trips.
#[test]
fn chromium_a_page_of_another_origin_is_refused_and_the_same_origin_page_works() {
    use lubdub::ws::{Reject, WebSocketHooks, WsConfig};
    use lubdub::Worker;

    ws_support::python();
    ws_support::chromium();
    let page = |req: &lubdub::ws::Request| {
        (req.path() == "/").then(|| {
            Reject::new(200)
                .header("Content-Type", "text/html; charset=utf-8")
                .body(ORIGIN_PAGE)
        })
    };
    // The WebSocket server: its page on GET /, the default Origin policy.
    let mut w = Worker::with_protocol(
        "ws://127.0.0.1:0",
        Ws::server(WsConfig::default()).serve_http(page),
    )
    .unwrap();
    let (hook_tx, hooks) = mpsc::channel::<String>();
    let hook_tx = Mutex::new(hook_tx);
    w.on_websocket_connect(move |_, req| {
        let _ = hook_tx.lock().unwrap().send(req.path().to_owned());
        Ok(())
    });
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    let server = w.start().unwrap();
    // The other site: a worker on another port serving the same page.
    let other = Worker::with_protocol("ws://127.0.0.1:0", Ws::default().serve_http(page))
        .unwrap()
        .start()
        .unwrap();
    let (site, foreign) = (
        format!("http://{}/", server.local_addr()),
        format!("http://{}/", other.local_addr()),
    );
    let target = |path: &str| format!("ws://{}/{path}", server.local_addr());

    let browser = Browser::open(&foreign);
    let mut page_of_other = Page::attach(&browser, &foreign);
    let answer = page_of_other.open_ws(&target("cross"));
    let r = &answer["value"];
    assert_eq!(r["opened"], false, "{answer}");
    assert_eq!(r["code"], 1006, "{answer}");
    let shakes = answer["websockets"].as_array().cloned().unwrap_or_default();
    assert_eq!(shakes.len(), 1, "{answer}");
    assert_eq!(
        shakes[0]["origin"],
        foreign.trim_end_matches('/'),
        "{answer}"
    );
    // Chromium reports a refused handshake's status in its log only.
    let logged = answer["log"].as_array().cloned().unwrap_or_default();
    assert!(
        logged.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.contains("Unexpected response code: 403"))),
        "{answer}"
    );

    // The server's own page, in the same tab.
    page_of_other.eval(&format!("location.href = {site:?}; true"));
    drop(page_of_other);
    let mut own = Page::attach(&browser, &site);
    let answer = own.open_ws(&target("same"));
    let r = &answer["value"];
    assert_eq!(r["opened"], true, "{answer}");
    assert_eq!(
        r["echo"],
        format!("hello from {}", site.trim_end_matches('/')),
        "{answer}"
    );
    assert_eq!(answer["websockets"][0]["status"], 101, "{answer}");

    // The hook ran for the same-origin page only.
    assert_eq!(recv(&hooks, "the same-origin handshake"), "/same");
    assert_eq!(hooks.try_iter().collect::<Vec<_>>(), Vec::<String>::new());

    let answer = own.command(json!({"cmd": "close_browser"}));
    assert_eq!(answer["closed"], true, "{answer}");
    drop(own);
    let mut browser = browser;
    browser.child.wait_exit(WAIT);
    server.stop_and_wait();
    other.stop_and_wait();
}
