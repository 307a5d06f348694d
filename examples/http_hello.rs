//! An HTTP/1.1 server: `cargo run --example http_hello -- --listen http://127.0.0.1:8080`
//!
//! * `GET /` answers `hello`;
//! * `POST /echo` sends the body back;
//! * `GET /events` is a Server-Sent Events stream: a `tick` event every
//!   second, resumed after `Last-Event-ID` when the client reconnects,
//!   with `: ping` comments from the heartbeat plugin every 15 s.
//!
//! `--tls-self-signed` (or `--tls-cert`/`--tls-key`) with an `https://`
//! address serves it over TLS.

mod common;

use std::time::Duration;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::heartbeat::{Heartbeat, SseHeartbeat};
use lubdub::http::http::{Response, StatusCode};
use lubdub::http::{Event, Http, Reply, Request};
use lubdub::{Connection, Timer, TimerId, Worker};

/// An HTTP server: a page, an echo and a Server-Sent Events stream.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("http://127.0.0.1:8080")))]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
}

fn answer(conn: &Connection<Http>, req: &Request) {
    match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/") => {
            let _ = conn.send(&req.respond(Response::new(b"hello\n".to_vec())));
        }
        ("POST", "/echo") => {
            let _ = conn.send(&req.respond(Response::new(req.body().clone())));
        }
        ("GET", "/events") => {
            let mut n: u64 = req
                .last_event_id()
                .and_then(|id| id.parse().ok())
                .unwrap_or(0);
            let _ = conn.send(&req.event_stream());
            let handle = conn.clone();
            // One event a second until the connection closes.
            let timer = Timer::add(Duration::from_secs(1), move || {
                n += 1;
                let event = Event::data(format!("tick {n}"))
                    .event("tick")
                    .id(n.to_string());
                let _ = handle.send(&Reply::Event(event));
            });
            if let Ok(id) = timer {
                // Deleted in on_close.
                conn.set_context(id);
            }
        }
        _ => {
            let mut resp = Response::new(b"not found\n".to_vec());
            *resp.status_mut() = StatusCode::NOT_FOUND;
            let _ = conn.send(&req.respond(resp));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let common::ServerArgs {
        listen: common::ListenArgs { listen },
        count,
        tls,
    } = Cli::parse().server;
    common::init_logging(log::LevelFilter::Info)?;

    let mut worker = Worker::<Http>::new(listen.as_str())?;
    worker.count(count).name("http-hello");
    worker.plugin(
        Heartbeat::server(SseHeartbeat)
            .no_idle_timeout()
            .ping_interval(Duration::from_secs(15)),
    );
    worker.on_message(|conn, req| answer(conn, &req));
    worker.on_close(|conn, _| {
        if let Some(id) = conn.context::<TimerId>() {
            Timer::del(*id);
        }
    });
    worker.on_error(|conn, err| log_limited!(Level::Warn, "{}: {err}", conn.id()));
    if let Some(config) = tls.config()? {
        worker.tls(config);
    }
    worker.on_worker_start(|w| println!("http hello listening on {}", w.local_addr()));
    worker.run()?;
    Ok(())
}
