//! A text echo server: `cargo run --example echo -- --listen 127.0.0.1:1234 --count 2`
//! then `nc 127.0.0.1 1234` and type lines.

mod common;

use lubdub::{Text, Worker};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(common::ServerArgs { listen, count }) =
        common::server_args("echo", "text://127.0.0.1:1234")?
    else {
        return Ok(());
    };
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
