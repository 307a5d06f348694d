//! `WorkerConfig`: a worker's settings from a config file (any serde format).

use serde::Deserialize;

use crate::endpoint::{Backpressure, DEFAULT_MAX_PACKAGE_SIZE, DEFAULT_SEND_BUFFER_SIZE};

/// Worker settings that can come from a config file (any serde format).
///
/// ```
/// use lubdub_worker::WorkerConfig;
///
/// let cfg: WorkerConfig = serde_json::from_str(r#"{
///     "listen": "text://127.0.0.1:0", "count": 2, "name": "chat",
///     "send_buffer_size": 65536
/// }"#).unwrap();
/// assert_eq!(cfg.count, 2);
/// assert_eq!(cfg.close_timeout_ms, 5000); // default
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Listen address, `scheme://host:port` or `host:port`. Required.
    pub listen: String,
    /// Event-loop threads. Default 1 (Workerman's `count`).
    #[serde(default = "default_count")]
    pub count: usize,
    /// Worker name, used in thread names and logs. Default `"none"`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Per-connection send buffer limit in bytes. Default 1 MiB.
    #[serde(default = "default_send_buffer")]
    pub send_buffer_size: usize,
    /// Largest incomplete message buffered per connection. Default 10 MiB.
    #[serde(default = "default_max_package")]
    pub max_package_size: usize,
    /// Graceful close timeout in milliseconds. Default 5000.
    #[serde(default = "default_close_timeout")]
    pub close_timeout_ms: u64,
    /// How long `stop` waits for connections to flush, in milliseconds. Default 5000.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_ms: u64,
    /// Most connections at once; more are accepted and closed. Default: no limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Close connections without a whole first message after this many
    /// milliseconds. Default: none.
    #[serde(default)]
    pub first_message_timeout_ms: Option<u64>,
    /// Close connections whose protocol handshake has not finished after
    /// this many milliseconds. Default 10000.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// What a full send buffer does: `"pause_recv"` (default) or `"drop"`.
    #[serde(default)]
    pub backpressure: Backpressure,
    /// Most bytes all connections may buffer together. Default: see
    /// [`default_memory_budget`](crate::default_memory_budget).
    #[serde(default)]
    pub memory_budget: Option<usize>,
    /// TLS for every connection, from PEM files. Default: none (required
    /// by a TLS scheme such as `wss://`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key in PEM files (see
/// [`TlsConfig::from_pem_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key: PKCS#8, PKCS#1 or SEC1.
    pub key: std::path::PathBuf,
}

fn default_count() -> usize {
    1
}
pub(crate) fn default_name() -> String {
    "none".into()
}
fn default_send_buffer() -> usize {
    DEFAULT_SEND_BUFFER_SIZE
}
fn default_max_package() -> usize {
    DEFAULT_MAX_PACKAGE_SIZE
}
fn default_close_timeout() -> u64 {
    5000
}
fn default_stop_timeout() -> u64 {
    5000
}
fn default_handshake_timeout() -> u64 {
    10_000
}
