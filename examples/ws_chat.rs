//! A WebSocket chat with its own page: `cargo run --example ws_chat`, then
//! open <http://127.0.0.1:8080> in a browser (two tabs to chat). With
//! `-- --tls-self-signed` it serves <https://127.0.0.1:8080> and wss (the
//! browser asks to accept the certificate; its fingerprint is printed).
//!
//! * `GET /` serves the page (plain JavaScript: a name, a message box, the
//!   live list of messages). `/?name=ann&say=hello` joins and sends at once.
//! * The WebSocket is `/ws?name=NAME`. `on_websocket_connect` refuses,
//!   before `on_connect`: a name that is not 1 to 32 ASCII letters,
//!   digits, `_`, `-` or `.` with `400` (so no name starts with `* ` as
//!   notices do, or holds a control character), a name someone in the
//!   room has with `409`.
//! * Each text message `m` from NAME reaches every connected client as
//!   `NAME: m`, with control characters (line breaks, ESC...) escaped
//!   (`\n`, `\u{1b}`); joins and leaves reach everyone as `* NAME joined`
//!   and `* NAME left`.
//! * Each connection may send `--rate` messages a second (default 20) in
//!   bursts of `--burst` (40). Past that its messages are refused, with one
//!   notice (`* too many messages...`) per episode; a connection refused
//!   `--flood-close` times (100) in one episode is closed with 1008.
//! * Messages over 64 KiB are refused: the connection is closed with 1009.
//! * With `--jwt-secret SECRET` (or `CHAT_JWT_SECRET`), the name is the
//!   `sub` of an HS256 token with an `exp`, given as `/ws?token=JWT`; the
//!   `name` parameter is ignored and a missing or invalid token gets `401`.
//!   The page takes the token from its address's fragment
//!   (`/#token=JWT`), which the browser never sends to a server, removes
//!   it from the address bar and passes it only to the WebSocket.
//! * The log escapes what peers chose (names, close reasons): no peer can
//!   forge a log line.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use clap::Parser;
use common::chat::{check_name, clean, ChatArgs, JwtVerifier, RateLimiter, Verdict, MAX_MESSAGE};
use common::log_limited;
use log::Level;
use lubdub::ws::{Message, Reject, WebSocketHooks, Ws, WsConfig};
use lubdub::{Connection, Limits, Worker, WorkerHandle};
use percent_encoding::percent_decode_str;

/// The chat page: no framework, no build step.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lubdub chat</title>
<style>
  body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
  #log { list-style: none; padding: 0; border: 1px solid #ccc; min-height: 10em; }
  #log li { padding: 0.2em 0.5em; }
  #log li.notice { color: #777; font-style: italic; }
  form { display: flex; gap: 0.5em; margin: 0.5em 0; }
  #msg { flex: 1; }
</style>
</head>
<body>
<h1>lubdub chat</h1>
<form id="join"><input id="name" placeholder="your name" maxlength="32" autofocus><button>Join</button></form>
<form id="send"><input id="msg" placeholder="message" disabled><button disabled id="sendbtn">Send</button></form>
<p id="status">not connected</p>
<ul id="log"></ul>
<script>
const $ = (id) => document.getElementById(id);
const NAME = /^[A-Za-z0-9_.-]{1,32}$/;
let ws = null;
function show(text) {
  const li = document.createElement("li");
  li.textContent = text;
  if (text.startsWith("* ")) li.className = "notice";
  $("log").appendChild(li);
}
function join(query, label, first) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let opened = false;
  ws = new WebSocket(`${scheme}://${location.host}/ws?${query}`);
  ws.onopen = () => {
    opened = true;
    $("status").textContent = label ? `connected as ${label}` : "connected";
    $("msg").disabled = false;
    $("sendbtn").disabled = false;
    if (first) ws.send(first);
  };
  ws.onmessage = (ev) => show(ev.data);
  ws.onclose = (ev) => {
    $("status").textContent = opened
      ? `closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`
      : "refused: the name is invalid or taken, or the token is not valid";
    $("msg").disabled = true;
    $("sendbtn").disabled = true;
    ws = null;
  };
}
$("join").onsubmit = (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim();
  if (ws) return;
  if (!NAME.test(name)) {
    $("status").textContent = "a name is 1 to 32 ASCII letters, digits, _, - or .";
    return;
  }
  join(`name=${encodeURIComponent(name)}`, name);
};
$("send").onsubmit = (ev) => {
  ev.preventDefault();
  if (ws && $("msg").value) { ws.send($("msg").value); $("msg").value = ""; }
};
const params = new URLSearchParams(location.search);
// A token comes in the fragment (/#token=JWT), which the browser never
// sends to a server: it is taken out of the address bar at once and given
// only to the WebSocket. The name shown is the token's subject.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
if (token) {
  history.replaceState(null, "", location.pathname + location.search);
  $("join").hidden = true;
  let sub = "";
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    sub = String(JSON.parse(atob(b64)).sub || "");
  } catch (e) {}
  join(`token=${encodeURIComponent(token)}`, sub, params.get("say"));
} else if (params.get("name")) {
  join(`name=${encodeURIComponent(params.get("name"))}`, params.get("name"), params.get("say"));
}
</script>
</body>
</html>
"#;

/// The worker's limit on a message and what it is read with: the
/// WebSocket limits (`max_message_size`, `max_frame_size`) decide, with
/// their close code 1009, and this leaves room for a frame's header.
const PACKAGE_LIMIT: usize = MAX_MESSAGE + 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The names in the room: claimed at the upgrade, given back when the
/// member goes.
type Names = Arc<Mutex<HashSet<String>>>;

/// A claimed name, given back when dropped: when `on_close` clears the
/// member's context, or with the connection if it never got that far.
struct Claim {
    names: Names,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.names).remove(&self.name);
    }
}

/// A member of the chat: the connection's context.
struct Member {
    claim: Claim,
    limiter: Mutex<RateLimiter>,
}

fn name_of(c: &Connection<Ws>) -> String {
    c.context::<Member>()
        .map(|m| m.claim.name.clone())
        .unwrap_or_default()
}

/// The value of `key` in a query string, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// Who an upgrade request is: the subject of its token with
/// `--jwt-secret`, else the name it asks for. Neither the token nor a
/// refused name is logged or echoed.
fn identify(
    verifier: Option<&JwtVerifier>,
    conn: &Connection<Ws>,
    query: Option<&str>,
) -> Result<String, Reject> {
    let addr = conn.remote_addr();
    match verifier {
        Some(verifier) => {
            let token = query_param(query, "token").unwrap_or_default();
            verifier.verify(&token).map_err(|why| {
                log_limited!(Level::Info, "refused {addr}: token {why}");
                Reject::new(401)
                    .header("WWW-Authenticate", "Bearer")
                    .body(format!("a valid token is required: {why}"))
            })
        }
        None => {
            let name = query_param(query, "name").unwrap_or_default();
            check_name("a name", &name).map_err(|why| {
                log_limited!(Level::Info, "refused {addr}: invalid name");
                Reject::new(400).body(why)
            })?;
            Ok(name)
        }
    }
}

fn broadcast(worker: &WorkerHandle<Ws>, text: &str) {
    let msg = Message::Text(text.to_owned());
    // Collect first: never hold a map reference while sending.
    let members: Vec<Connection<Ws>> = worker
        .connections()
        .iter()
        .map(|e| e.value().clone())
        .collect();
    for conn in members {
        let _ = conn.send(&msg);
    }
}

/// A WebSocket chat with its own page on /.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("ws://127.0.0.1:8080")))]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Cli { server, chat } = Cli::parse();
    let common::ServerArgs {
        listen: common::ListenArgs { listen },
        count,
        tls,
    } = server;
    common::init_logging(log::LevelFilter::Info)?;
    let verifier = chat.verifier()?;
    let join_path = if verifier.is_some() {
        "/ws?token=JWT"
    } else {
        "/ws?name=NAME"
    };

    let config = WsConfig::default()
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    let ws = Ws::server(config).serve_http(|req| {
        (req.path() == "/" || req.path() == "/index.html").then(|| {
            Reject::new(200)
                .header("Content-Type", "text/html; charset=utf-8")
                .header("Cache-Control", "no-store")
                .header("Referrer-Policy", "no-referrer")
                .body(PAGE)
        })
    });
    let mut worker = Worker::with_protocol(listen.as_str(), ws)?;
    worker
        .count(count)
        .name("ws-chat")
        .limits(Limits::default().max_package_size(PACKAGE_LIMIT));
    // With TLS the page is https:// and its WebSocket wss://.
    let scheme = match tls.config()? {
        Some(config) => {
            worker.tls(config);
            "https"
        }
        None => "http",
    };
    let names: Names = Arc::default();
    {
        let chat = chat.clone();
        worker.on_websocket_connect(move |conn, req| {
            if req.path() != "/ws" {
                return Err(Reject::new(404).body("the chat is on /ws"));
            }
            let name = identify(verifier.as_ref(), conn, req.query())?;
            let claim = {
                let mut taken = lock(&names);
                if !taken.insert(name.clone()) {
                    log_limited!(
                        Level::Info,
                        "refused {}: {name} is taken",
                        conn.remote_addr()
                    );
                    return Err(Reject::new(409).body(format!("{name} is taken")));
                }
                Claim {
                    names: names.clone(),
                    name,
                }
            };
            conn.set_context(Member {
                claim,
                limiter: Mutex::new(chat.limiter(Instant::now())),
            });
            Ok(())
        });
    }

    // The handle is known once the worker starts; callbacks reach it here.
    let handle: Arc<OnceLock<WorkerHandle<Ws>>> = Arc::default();
    {
        let handle = handle.clone();
        worker.on_worker_start(move |w| {
            let _ = handle.set(w.clone());
            println!(
                "chat on {scheme}://{} (WebSocket on {join_path})",
                w.local_addr()
            );
        });
    }
    {
        let handle = handle.clone();
        worker.on_connect(move |c| {
            log_limited!(
                Level::Info,
                "{} joined from {}",
                name_of(c),
                c.remote_addr()
            );
            if let Some(w) = handle.get() {
                broadcast(w, &format!("* {} joined", name_of(c)));
            }
        });
    }
    {
        let handle = handle.clone();
        let notice = format!("* {}", chat.notice());
        worker.on_message(move |c, msg| {
            let Some(member) = c.context::<Member>() else {
                return;
            };
            if let Message::Ping(_) | Message::Pong(_) = msg {
                return;
            }
            let verdict = lock(&member.limiter).check(Instant::now());
            match verdict {
                Verdict::Pass => {}
                Verdict::Notify => {
                    let _ = c.send(&Message::Text(notice.clone()));
                    return;
                }
                Verdict::Refuse => return,
                Verdict::Close => {
                    log_limited!(Level::Warn, "{} kept flooding: closed", member.claim.name);
                    c.close_session(1008, "too many messages");
                    return;
                }
            }
            if let (Message::Text(text), Some(w)) = (msg, handle.get()) {
                broadcast(w, &format!("{}: {}", member.claim.name, clean(&text)));
            }
        });
    }
    {
        let handle = handle.clone();
        worker.on_close(move |c, reason| {
            let name = name_of(c);
            // Gives the name back before anyone hears that it is free.
            c.clear_context();
            log_limited!(Level::Info, "{name} left: {reason}");
            if let Some(w) = handle.get() {
                broadcast(w, &format!("* {name} left"));
            }
        });
    }
    worker.on_error(|c, err| log_limited!(Level::Warn, "{}: {err}", c.id()));
    worker.run()?;
    Ok(())
}
