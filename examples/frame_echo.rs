//! Workerman Frame echo: `cargo run --example frame_echo -- --listen 127.0.0.1:1235`
//!
//! Each frame is a 4-byte big-endian length that counts itself, then the
//! payload; the server sends every payload back in a frame of its own.

mod common;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::{Backpressure, Frame, Limits, Worker};

/// A Workerman Frame echo server: every payload comes back in a frame.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("frame://127.0.0.1:1235")))]
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

    let mut worker = Worker::<Frame>::new(listen.as_str())?;
    worker
        .count(count)
        .name("frame-echo")
        .limits(Limits::default().backpressure(Backpressure::PauseRecv));
    worker.on_message(|conn, payload| {
        let _ = conn.send(&payload);
    });
    worker.on_error(|conn, err| log_limited!(Level::Warn, "{}: {err}", conn.id()));
    if let Some(config) = tls.config()? {
        worker.tls(config);
    }
    worker.on_worker_start(|w| println!("frame echo listening on {}", w.local_addr()));
    worker.run()?;
    Ok(())
}
