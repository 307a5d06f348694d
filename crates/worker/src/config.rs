//! `WorkerConfig`: a worker's settings from a config file (any serde format).

use serde::Deserialize;

use crate::limits::Limits;

/// Worker settings that can come from a config file (any serde format): the
/// address, the loops, the name, TLS, and the [`Limits`] in a `limits`
/// table of their own (the same type `Worker::limits` takes).
///
/// ```
/// use lubdub_worker::WorkerConfig;
///
/// let cfg: WorkerConfig = serde_json::from_str(r#"{
///     "listen": "text://127.0.0.1:0", "count": 2, "name": "chat",
///     "limits": { "send_buffer_size": 65536 }
/// }"#).unwrap();
/// assert_eq!(cfg.count, 2);
/// assert_eq!(cfg.limits.send_buffer_size, 65536);
/// assert_eq!(cfg.limits.close_timeout.as_millis(), 5000); // default
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
    /// TLS for every connection, from PEM files. Default: none (required
    /// by a TLS scheme such as `wss://`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Every limit (see [`Limits`]); each field defaults on its own.
    #[serde(default)]
    pub limits: Limits,
}

/// A certificate chain and its private key in PEM files (see
/// [`TlsConfig::from_pem_files`](crate::TlsConfig::from_pem_files)).
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
