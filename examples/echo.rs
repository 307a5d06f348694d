//! A text echo server: `cargo run --example echo -- --listen 127.0.0.1:1234 --count 2`
//! then `nc 127.0.0.1 1234` and type lines. With `--tls-self-signed` (or
//! `--tls-cert PEM --tls-key PEM`) it speaks TLS: try
//! `openssl s_client -connect 127.0.0.1:1234 -quiet`.

mod common;

use clap::Parser;
use common::log_limited;
use log::Level;
use lubdub::{Backpressure, Limits, Text, Worker};

/// A text echo server: every line comes back.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("text://127.0.0.1:1234")))]
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

    let mut worker = Worker::<Text>::new(listen.as_str())?;
    // A peer that does not read its replies is not read from until it
    // does (the default, spelled out); errors and connection churn are
    // logged through a rate-limited path, so an attack cannot flood the log.
    worker
        .count(count)
        .name("echo")
        .limits(Limits::default().backpressure(Backpressure::PauseRecv));
    worker.on_connect(|conn| {
        log_limited!(
            Level::Info,
            "{} connected from {}",
            conn.id(),
            conn.remote_addr()
        )
    });
    worker.on_message(|conn, line| {
        let _ = conn.send(&line);
    });
    worker.on_close(|conn, reason| log_limited!(Level::Info, "{} closed: {reason}", conn.id()));
    worker.on_error(|conn, err| log_limited!(Level::Warn, "{}: {err}", conn.id()));
    if let Some(config) = tls.config()? {
        // Text over TLS: `openssl s_client -connect 127.0.0.1:1234`.
        worker.tls(config);
    }
    worker.on_worker_start(|w| {
        println!(
            "echo listening on {} — try: nc {} {}",
            w.local_addr(),
            w.local_addr().ip(),
            w.local_addr().port()
        );
    });
    worker.run()?;
    Ok(())
}
