//! A WebSocket chat with its own page: `cargo run --example ws_chat`, then
//! open <http://127.0.0.1:8080> in a browser (two tabs to chat). With
//! `-- --tls-self-signed` it serves <https://127.0.0.1:8080> and wss (the
//! browser asks to accept the certificate; its fingerprint is printed).
//!
//! * `GET /` serves the page (plain JavaScript: a name, a message box, the
//!   live list of messages). `/?name=ann&say=hello` joins and sends at once.
//! * The WebSocket is `/ws?name=NAME`; a missing or empty name is refused
//!   with `400` by `on_websocket_connect`, before `on_connect`.
//! * Each text message `m` from NAME reaches every connected client as
//!   `NAME: m`; joins and leaves reach everyone as `* NAME joined` and
//!   `* NAME left`.

mod common;

use std::sync::Arc;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::ws::{Message, Reject, WebSocketHooks, Ws, WsConfig};
use lubdub::{Connection, Worker, WorkerHandle};
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
<form id="join"><input id="name" placeholder="your name" autofocus><button>Join</button></form>
<form id="send"><input id="msg" placeholder="message" disabled><button disabled id="sendbtn">Send</button></form>
<p id="status">not connected</p>
<ul id="log"></ul>
<script>
const $ = (id) => document.getElementById(id);
let ws = null;
function show(text) {
  const li = document.createElement("li");
  li.textContent = text;
  if (text.startsWith("* ")) li.className = "notice";
  $("log").appendChild(li);
}
function join(name, first) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws?name=${encodeURIComponent(name)}`);
  ws.onopen = () => {
    $("status").textContent = `connected as ${name}`;
    $("msg").disabled = false;
    $("sendbtn").disabled = false;
    if (first) ws.send(first);
  };
  ws.onmessage = (ev) => show(ev.data);
  ws.onclose = (ev) => {
    $("status").textContent = `closed (${ev.code})`;
    $("msg").disabled = true;
    $("sendbtn").disabled = true;
  };
}
$("join").onsubmit = (ev) => { ev.preventDefault(); if (!ws) join($("name").value.trim()); };
$("send").onsubmit = (ev) => {
  ev.preventDefault();
  if (ws && $("msg").value) { ws.send($("msg").value); $("msg").value = ""; }
};
const params = new URLSearchParams(location.search);
if (params.get("name")) join(params.get("name"), params.get("say"));
</script>
</body>
</html>
"#;

/// The chat name of a connection, kept in its context.
struct Name(String);

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
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let common::ServerArgs {
        listen: common::ListenArgs { listen },
        count,
        tls,
    } = Cli::parse().server;
    common::init_logging(log::LevelFilter::Info)?;

    let ws = Ws::server(WsConfig::default()).serve_http(|req| {
        (req.path() == "/" || req.path() == "/index.html").then(|| {
            Reject::new(200)
                .header("Content-Type", "text/html; charset=utf-8")
                .header("Cache-Control", "no-store")
                .body(PAGE)
        })
    });
    let mut worker = Worker::with_protocol(listen.as_str(), ws)?;
    worker.count(count).name("ws-chat");
    // With TLS the page is https:// and its WebSocket wss://.
    let scheme = match tls.config()? {
        Some(config) => {
            worker.tls(config);
            "https"
        }
        None => "http",
    };
    worker.on_websocket_connect(|conn, req| {
        if req.path() != "/ws" {
            return Err(Reject::new(404).body("the chat is on /ws?name=NAME"));
        }
        let name = req
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("name="))
            .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        let name = name.trim();
        if name.is_empty() {
            return Err(Reject::new(400).body("a name is required: /ws?name=NAME"));
        }
        conn.set_context(Name(name.to_owned()));
        Ok(())
    });

    // The handle is known once the worker starts; callbacks reach it here.
    let handle: Arc<std::sync::OnceLock<WorkerHandle<Ws>>> = Arc::default();
    {
        let handle = handle.clone();
        worker.on_worker_start(move |w| {
            let _ = handle.set(w.clone());
            println!(
                "chat on {scheme}://{} (WebSocket on /ws?name=NAME)",
                w.local_addr()
            );
        });
    }
    let name_of = |c: &Connection<Ws>| c.context::<Name>().map(|n| n.0.clone()).unwrap_or_default();
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
        worker.on_message(move |c, msg| {
            if let (Message::Text(text), Some(w)) = (msg, handle.get()) {
                broadcast(w, &format!("{}: {text}", name_of(c)));
            }
        });
    }
    {
        let handle = handle.clone();
        worker.on_close(move |c, reason| {
            log_limited!(Level::Info, "{} left: {reason}", name_of(c));
            if let Some(w) = handle.get() {
                broadcast(w, &format!("* {} left", name_of(c)));
            }
        });
    }
    worker.on_error(|c, err| log_limited!(Level::Warn, "{}: {err}", c.id()));
    worker.run()?;
    Ok(())
}
