//! Logging set-up shared by the examples (libraries log through `log` only),
//! with a rate-limited path for what peers can trigger in numbers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sends `log` records at `level` and above to stderr as `[LEVEL] message`.
#[allow(dead_code)] // the heartbeat example sets up its own format
pub fn init_logging(level: log::LevelFilter) -> Result<(), fern::InitError> {
    fern::Dispatch::new()
        .format(|out, msg, rec| out.finish(format_args!("[{}] {msg}", rec.level())))
        .level(level)
        .chain(std::io::stderr())
        .apply()?;
    Ok(())
}

/// `--listen ADDR` and `--count N` of the echo examples.
#[allow(dead_code)] // not every example that shares this module uses it
pub struct ServerArgs {
    pub listen: String,
    pub count: usize,
}

/// Parses `[--listen ADDR] [--count N]` (defaults: `default_listen`, 1);
/// `None` after printing usage for `-h`/`--help`.
#[allow(dead_code)]
pub fn server_args(
    example: &str,
    default_listen: &str,
) -> Result<Option<ServerArgs>, Box<dyn std::error::Error>> {
    let mut out = ServerArgs {
        listen: default_listen.to_string(),
        count: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => out.listen = args.next().ok_or("--listen needs an address")?,
            "--count" => out.count = args.next().ok_or("--count needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: {example} [--listen ADDR] [--count N]");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(Some(out))
}

/// At most this many rate-limited lines a second; the rest are counted.
const LINES_PER_SECOND: u32 = 20;

struct Window {
    start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

static WINDOW: Mutex<Window> = Mutex::new(Window {
    start: None,
    lines: 0,
    suppressed: 0,
});

/// Logs through a rate-limited path: at most 20 lines a second across the
/// process, then one line saying how many were suppressed. What peers can
/// cause in numbers (connects, closes, errors under an attack) goes here,
/// so a flood of them cannot turn into a flood of log lines.
#[allow(dead_code)]
pub fn write_limited(level: log::Level, args: std::fmt::Arguments<'_>) {
    let now = Instant::now();
    let suppressed = {
        let mut w = WINDOW.lock().unwrap_or_else(|e| e.into_inner());
        let new_window = w
            .start
            .map_or(true, |s| now.duration_since(s) >= Duration::from_secs(1));
        let mut report = 0;
        if new_window {
            report = std::mem::take(&mut w.suppressed);
            w.start = Some(now);
            w.lines = 0;
        }
        if w.lines >= LINES_PER_SECOND {
            w.suppressed += 1;
            return;
        }
        w.lines += 1;
        report
    };
    if suppressed > 0 {
        log::warn!("({suppressed} log lines suppressed in the last second)");
    }
    log::log!(level, "{args}");
}

/// `log_limited!(Level::Warn, "...", args)`: [`write_limited`] with `format_args!`.
#[allow(unused_macros)]
macro_rules! log_limited {
    ($level:expr, $($arg:tt)+) => {
        $crate::common::write_limited($level, format_args!($($arg)+))
    };
}
#[allow(unused_imports)]
pub(crate) use log_limited;
