//! Workerman Frame echo: `cargo run --example frame_echo -- --listen 127.0.0.1:1235`
//!
//! Each frame is a 4-byte big-endian length that counts itself, then the
//! payload; the server sends every payload back in a frame of its own.

mod common;

use common::log_limited;
use log::Level;
use lubdub::{Backpressure, Frame, Worker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(common::ServerArgs { listen, count, tls }) =
        common::server_args("frame_echo", "frame://127.0.0.1:1235")?
    else {
        return Ok(());
    };
    common::init_logging(log::LevelFilter::Info)?;

    let mut worker = Worker::<Frame>::new(listen.as_str())?;
    worker
        .count(count)
        .name("frame-echo")
        .backpressure(Backpressure::PauseRecv);
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
