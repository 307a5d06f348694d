//! A text echo server: `cargo run --example echo -- --listen 127.0.0.1:1234 --count 2`
//! then `nc 127.0.0.1 1234` and type lines.

mod common;

use lubdub::{Text, Worker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "text://127.0.0.1:1234".to_string();
    let mut count = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--count" => count = args.next().ok_or("--count needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: echo [--listen ADDR] [--count N]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    common::init_logging(log::LevelFilter::Info)?;

    let mut worker = Worker::<Text>::new(listen.as_str())?;
    worker.count(count).name("echo");
    worker.on_connect(|conn| log::info!("{} connected from {}", conn.id(), conn.remote_addr()));
    worker.on_message(|conn, line| {
        let _ = conn.send(&line);
    });
    worker.on_close(|conn, reason| log::info!("{} closed: {reason}", conn.id()));
    worker.on_error(|conn, err| log::warn!("{}: {err}", conn.id()));
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
