//! A WebSocket echo server: `cargo run --example ws_echo -- --listen 127.0.0.1:8081`
//!
//! Every text message comes back as text and every binary message as
//! binary, on any path. Pings are answered by the protocol itself.
//!
//! `--memory-budget 256M` sets the worker's memory budget (default: a
//! 64th of the machine's memory); `--print-closes` prints a line per
//! close (`close ID Reason`) and per error (`error ID what`) on stdout,
//! for tests that watch what the server did with each connection.

mod common;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::ws::{DeflateConfig, Message, Ws, WsConfig};
use lubdub::{Backpressure, Limits, Worker};

/// A WebSocket echo server: every text and binary message comes back.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("ws://127.0.0.1:8081")))]
struct Cli {
    #[command(flatten)]
    server: common::ServerArgs,
    /// The worker's memory budget in bytes, with an optional K, M or G
    /// suffix (binary units): 256M
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    memory_budget: Option<usize>,
    /// Print `close ID REASON` and `error ID ERROR` lines on stdout
    #[arg(long)]
    print_closes: bool,
}

/// `123`, `64K`, `256M`, `1G` (binary units) as bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let (digits, shift) = match s.trim().char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        _ => (s.trim(), 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 256M"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let common::ServerArgs {
        listen: common::ListenArgs { listen },
        count,
        tls,
    } = cli.server;
    common::init_logging(log::LevelFilter::Info)?;

    // `LUBDUB_WS_DEFLATE=1` turns permessage-deflate on (the tests do);
    // `LUBDUB_WS_DEFLATE=takeover` with context takeover both ways and
    // 15-bit windows (better compression, 32 KiB per connection and
    // direction kept between messages).
    let mut config = WsConfig::default();
    match std::env::var("LUBDUB_WS_DEFLATE").ok().as_deref() {
        None => {}
        Some("takeover") => {
            let takeover = DeflateConfig::default()
                .server_no_context_takeover(false)
                .client_max_window_bits(15);
            config = config.deflate(takeover);
        }
        Some(_) => config = config.deflate(DeflateConfig::default()),
    }
    if let Some(max) = std::env::var("LUBDUB_WS_MAX_MESSAGE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config = config.max_message_size(max).max_frame_size(max);
    }
    // The worker's message limit counts what the session holds (a zlib
    // stream too) and frame headers still buffered: 64 KiB above the
    // WebSocket limit, the WebSocket limit decides (docs/limits.md).
    let limits = Limits::default()
        .backpressure(Backpressure::PauseRecv)
        .max_package_size(config.max_message_size + 64 * 1024);
    let mut limits = limits;
    if let Some(budget) = cli.memory_budget {
        limits = limits.memory_budget(budget);
    }
    let mut worker = Worker::with_protocol(listen.as_str(), Ws::server(config))?;
    worker.count(count).name("ws-echo").limits(limits);
    worker.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    if cli.print_closes {
        worker.on_close(|conn, reason| println!("close {} {reason:?}", conn.id()));
        worker.on_error(|conn, err| println!("error {} {err}", conn.id()));
    } else {
        worker.on_error(|conn, err| log_limited!(Level::Warn, "{}: {err}", conn.id()));
    }
    if let Some(config) = tls.config()? {
        worker.tls(config);
    }
    worker.on_worker_start(|w| println!("ws echo listening on ws://{}", w.local_addr()));
    worker.run()?;
    Ok(())
}
