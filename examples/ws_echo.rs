//! A WebSocket echo server: `cargo run --example ws_echo -- --listen 127.0.0.1:8081`
//!
//! Every text message comes back as text and every binary message as
//! binary, on any path. Pings are answered by the protocol itself.

mod common;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::ws::{Message, Ws, WsConfig};
use lubdub::{Backpressure, Limits, Worker};

/// A WebSocket echo server: every text and binary message comes back.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("ws://127.0.0.1:8081")))]
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

    // `LUBDUB_WS_DEFLATE=1` turns permessage-deflate on (the tests do).
    let mut config = WsConfig::default();
    if std::env::var_os("LUBDUB_WS_DEFLATE").is_some() {
        config = config.deflate(Default::default());
    }
    let mut limits = Limits::default().backpressure(Backpressure::PauseRecv);
    if let Some(max) = std::env::var("LUBDUB_WS_MAX_MESSAGE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // The worker's message limit counts what the session reassembles
        // too: raise both.
        config = config.max_message_size(max).max_frame_size(max);
        limits = limits.max_package_size(max);
    }
    let mut worker = Worker::with_protocol(listen.as_str(), Ws::server(config))?;
    worker.count(count).name("ws-echo").limits(limits);
    worker.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    worker.on_error(|conn, err| log_limited!(Level::Warn, "{}: {err}", conn.id()));
    if let Some(config) = tls.config()? {
        worker.tls(config);
    }
    worker.on_worker_start(|w| println!("ws echo listening on ws://{}", w.local_addr()));
    worker.run()?;
    Ok(())
}
