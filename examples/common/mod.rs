//! What the examples share: their common flags (`clap`), logging set-up
//! (libraries log through `log` only; every line escaped so no peer can
//! forge one), a rate-limited path for what peers can trigger in numbers,
//! and what the chat examples need to be safe to deploy ([`chat`]).

pub mod chat;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::Digest;

/// Sends `log` records at `level` and above to stderr as `[LEVEL] message`,
/// the message [`chat::Escaped`]: a name, a close reason or any other
/// string a peer chose cannot hold a line break, so it cannot start a log
/// line of its own.
#[allow(dead_code)] // the heartbeat example sets up its own format
pub fn init_logging(level: log::LevelFilter) -> Result<(), fern::InitError> {
    fern::Dispatch::new()
        .format(|out, msg, rec| {
            out.finish(format_args!("[{}] {}", rec.level(), chat::Escaped(msg)))
        })
        .level(level)
        .chain(std::io::stderr())
        .apply()?;
    Ok(())
}

/// `--listen ADDR`, shared by the server examples. Each gives its own
/// default: `#[command(mut_arg("listen", |a| a.default_value("...")))]`.
#[derive(clap::Args, Debug, Clone)]
#[allow(dead_code)] // not every example that shares this module uses it
pub struct ListenArgs {
    /// The address to listen on
    #[arg(long, value_name = "ADDR", required = false)]
    pub listen: String,
}

/// `--listen ADDR`, `--count N` and the TLS flags of the server examples.
#[derive(clap::Args)]
#[allow(dead_code)]
pub struct ServerArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// How many event-loop threads serve the address (Workerman's `count`)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `--tls-cert PEM --tls-key PEM`, or `--tls-self-signed`; none: no TLS.
#[derive(clap::Args, Debug, Clone)]
#[allow(dead_code)]
pub struct TlsArgs {
    /// Speak TLS with this certificate chain (PEM file; needs --tls-key)
    #[arg(
        long = "tls-cert",
        value_name = "PEM",
        requires = "key",
        conflicts_with = "self_signed"
    )]
    pub cert: Option<String>,
    /// The private key of --tls-cert (PEM file)
    #[arg(long = "tls-key", value_name = "PEM", requires = "cert")]
    pub key: Option<String>,
    /// Speak TLS with a certificate for 127.0.0.1 and localhost made at start
    #[arg(long = "tls-self-signed")]
    pub self_signed: bool,
}

/// A server's TLS configuration and, when made at start, its certificate.
#[allow(dead_code)]
pub type ServerTls = (lubdub::TlsConfig, Option<String>);

#[allow(dead_code)]
impl TlsArgs {
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
