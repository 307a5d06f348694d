//! A reconnecting text client: `cargo run --example client -- --connect 127.0.0.1:1234`
//!
//! Start the echo example first (`cargo run --example echo`). The client
//! sends a line every second and prints the replies; stop and restart the
//! server and watch it reconnect with jittered exponential backoff.

mod common;

use std::time::Duration;

use clap::Parser;
use lubdub::{Backoff, Client, EventLoop, Text, Timer};

/// A reconnecting text client: sends a line every second, prints the replies.
#[derive(Parser)]
struct Cli {
    /// The server to connect to
    #[arg(long, value_name = "ADDR", default_value = "text://127.0.0.1:1234")]
    connect: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Cli { connect } = Cli::parse();
    common::init_logging(log::LevelFilter::Info)?;

    let mut client = Client::<Text>::new(connect.as_str())?;
    client
        .auto_reconnect(Backoff::default())
        .connect_timeout(Duration::from_secs(5));
    client.on_connect(|c| log::info!("connected to {} from {}", c.remote_addr(), c.local_addr()));
    client.on_message(|_, line| println!("reply: {line}"));
    client.on_close(|_, reason| log::warn!("disconnected: {reason}; reconnecting with backoff"));
    client.on_error(|_, err| log::warn!("{err}"));

    EventLoop::run(move |_| {
        let conn = match client.connect() {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}");
                return;
            }
        };
        let mut n = 0u64;
        Timer::add(Duration::from_secs(1), move || {
            n += 1;
            if conn.is_connected() {
                let _ = conn.send(&format!("hello {n}"));
            }
        })
        .expect("on the event loop");
    });
    Ok(())
}
