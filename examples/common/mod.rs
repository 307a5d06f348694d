//! Logging set-up shared by the examples (libraries log through `log` only),
//! with a rate-limited path for what peers can trigger in numbers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest;

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

/// `--listen ADDR`, `--count N` and the TLS flags of the server examples.
#[allow(dead_code)] // not every example that shares this module uses it
pub struct ServerArgs {
    pub listen: String,
    pub count: usize,
    pub tls: TlsArgs,
}

/// `--tls-cert PEM --tls-key PEM`, or `--tls-self-signed`.
#[derive(Default)]
#[allow(dead_code)]
pub struct TlsArgs {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub self_signed: bool,
}

/// A server's TLS configuration and, when made at start, its certificate.
#[allow(dead_code)]
pub type ServerTls = (lubdub::TlsConfig, Option<String>);

#[allow(dead_code)]
pub const TLS_USAGE: &str = "[--tls-cert PEM --tls-key PEM | --tls-self-signed]";

#[allow(dead_code)]
impl TlsArgs {
    /// Takes `arg` (and its value from `args`) if it is a TLS flag.
    pub fn take(
        &mut self,
        arg: &str,
        args: &mut impl Iterator<Item = String>,
    ) -> Result<bool, Box<dyn std::error::Error>> {
        match arg {
            "--tls-cert" => self.cert = Some(args.next().ok_or("--tls-cert needs a PEM file")?),
            "--tls-key" => self.key = Some(args.next().ok_or("--tls-key needs a PEM file")?),
            "--tls-self-signed" => self.self_signed = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The TLS configuration the flags ask for, if any. A self-signed
    /// certificate for 127.0.0.1 and localhost is made at start with
    /// `rcgen`, and its SHA-256 fingerprint printed, so a browser or client
    /// can check what it is told to trust.
    pub fn config(&self) -> Result<Option<lubdub::TlsConfig>, Box<dyn std::error::Error>> {
        Ok(self.config_and_cert()?.map(|(config, _)| config))
    }

    /// [`config`](Self::config), with the certificate PEM when it was made
    /// here (a client in the same process can trust exactly it).
    pub fn config_and_cert(&self) -> Result<Option<ServerTls>, Box<dyn std::error::Error>> {
        match (&self.cert, &self.key, self.self_signed) {
            (Some(cert), Some(key), false) => {
                Ok(Some((lubdub::TlsConfig::from_pem_files(cert, key)?, None)))
            }
            (None, None, true) => {
                let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
                let made = rcgen::generate_simple_self_signed(names)?;
                let fingerprint: Vec<String> = sha2::Sha256::digest(made.cert.der())
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect();
                println!(
                    "self-signed certificate for 127.0.0.1 and localhost, SHA-256 fingerprint {}",
                    fingerprint.join(":")
                );
                let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
                let config = lubdub::TlsConfig::from_pem(cert.as_bytes(), key.as_bytes())?;
                Ok(Some((config, Some(cert))))
            }
            (None, None, false) => Ok(None),
            _ => Err("use --tls-cert PEM with --tls-key PEM, or --tls-self-signed alone".into()),
        }
    }
}

/// Parses `[--listen ADDR] [--count N]` and the TLS flags (defaults:
/// `default_listen`, 1, no TLS); `None` after printing usage for `-h`/`--help`.
#[allow(dead_code)]
pub fn server_args(
    example: &str,
    default_listen: &str,
) -> Result<Option<ServerArgs>, Box<dyn std::error::Error>> {
    let mut out = ServerArgs {
        listen: default_listen.to_string(),
        count: 1,
        tls: TlsArgs::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if out.tls.take(&arg, &mut args)? {
            continue;
        }
        match arg.as_str() {
            "--listen" => out.listen = args.next().ok_or("--listen needs an address")?,
            "--count" => out.count = args.next().ok_or("--count needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: {example} [--listen ADDR] [--count N] {TLS_USAGE}");
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
