//! [`Limits`]: every bound a worker or client puts on its connections, in
//! one place, with documented defaults; built in code or loaded with serde.

use std::time::Duration;

use serde::Deserialize;

use crate::memory::{default_memory_budget, UNIT};

/// Default per-connection send buffer limit: 1 MiB (Workerman's).
pub const DEFAULT_SEND_BUFFER_SIZE: usize = 1024 * 1024;
/// Default maximum buffered package size: 10 MiB (Workerman's).
pub const DEFAULT_MAX_PACKAGE_SIZE: usize = 10 * 1024 * 1024;
/// Default most connections from one source address: 1,024.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// The default `max_connections`: the process's open-file limit (its soft
/// `RLIMIT_NOFILE`) less 64 descriptors for everything else, at least 64;
/// 65,536 where the limit cannot be read or is unlimited.
pub fn default_max_connections() -> usize {
    open_file_limit().map_or(65_536, |n| n.saturating_sub(64).max(64))
}

/// Every limit of a [`Worker`](crate::Worker)'s (or a
/// [`Client`](crate::Client)'s) connections, on by default, in one value.
///
/// Build it from the defaults and change what you need, or load it with
/// serde (durations in milliseconds, fields named `*_ms`; every field is
/// optional and defaults as documented; unknown fields are refused):
///
/// ```
/// use std::time::Duration;
/// use lubdub_worker::Limits;
///
/// let limits = Limits::default()
///     .send_buffer_size(64 * 1024)
///     .first_message_timeout(Some(Duration::from_secs(5)));
/// assert_eq!(limits.close_timeout, Duration::from_secs(5)); // a default
///
/// let loaded: Limits = serde_json::from_str(r#"{
///     "send_buffer_size": 65536, "first_message_timeout_ms": 5000
/// }"#).unwrap();
/// assert_eq!(loaded, limits);
/// ```
///
/// docs/limits.md explains each limit and what happens when it is reached.
/// A client ignores the worker-only ones (`max_connections`,
/// `stop_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Send buffer limit per connection in bytes. Default 1 MiB.
    pub send_buffer_size: usize,
    /// Largest message (or incomplete message, counting what the
    /// protocol's session holds) per connection, in bytes, whatever the
    /// protocol's own limit. Default 10 MiB.
    pub max_package_size: usize,
    /// How long a graceful close may take to flush and see the peer's FIN
    /// before the socket is dropped. Default 5 s.
    #[serde(rename = "close_timeout_ms", with = "millis")]
    pub close_timeout: Duration,
    /// Messages decoded ahead while an async handler runs (per connection)
    /// before reading pauses. Default 64.
    pub async_queue: usize,
    /// Close connections that have not sent a whole first message within
    /// this time: a connection that never speaks holds a descriptor for
    /// nothing. Default 60 s; `None` turns it off (a server-push service
    /// whose clients never send, unless they answer the heartbeat: a
    /// WebSocket pong or a `ping` line is a message).
    #[serde(rename = "first_message_timeout_ms", with = "optional_millis")]
    pub first_message_timeout: Option<Duration>,
    /// Close a connection whose partial message (bytes of it buffered, or
    /// held by the protocol's session) received no byte for this long: a
    /// peer that starts a large message and stops holds its memory
    /// otherwise. Default 30 s; `None` turns it off.
    #[serde(rename = "message_timeout_ms", with = "optional_millis")]
    pub message_timeout: Option<Duration>,
    /// Close connections whose handshake (TLS, then the protocol's: a
    /// WebSocket upgrade, say) has not finished within this time.
    /// Default 10 s.
    #[serde(rename = "handshake_timeout_ms", with = "millis")]
    pub handshake_timeout: Duration,
    /// What a full send buffer does to the connection. Default
    /// [`Backpressure::PauseRecv`].
    pub backpressure: Backpressure,
    /// Most bytes buffered (incomplete input, queued output, what the
    /// protocols' sessions hold) by all the connections of a worker
    /// together. Default: [`default_memory_budget`] (a 64th of the
    /// machine's memory, between 64 MiB and 512 MiB).
    pub memory_budget: usize,
    /// Worker only: most connections open at once (all loops together;
    /// handshaking and closing sockets count too, as they hold a
    /// descriptor). Connections beyond it are accepted and closed at once,
    /// without callbacks, and counted in `WorkerHandle::rejected`.
    /// Default: [`default_max_connections`] (the process's open-file limit
    /// less 64, so accepting never runs out of descriptors); `None` for no
    /// limit.
    pub max_connections: Option<usize>,
    /// Worker only: most connections open at once from one source address,
    /// refused like `max_connections`'s. Default 1,024; `None` for no
    /// limit. Behind a reverse proxy every connection comes from the
    /// proxy's address: raise it or turn it off there (docs/limits.md).
    pub max_connections_per_ip: Option<usize>,
    /// Worker only: how long stopping waits for connections to flush
    /// before dropping them. Default 5 s.
    #[serde(rename = "stop_timeout_ms", with = "millis")]
    pub stop_timeout: Duration,
}

/// The process's soft limit of open files, if it has one.
fn open_file_limit() -> Option<usize> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0;
    (ok && rl.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(rl.rlim_cur).unwrap_or(usize::MAX))
}

/// What happens when a connection's send buffer reaches its limit
/// (`send_buffer_size`). `on_buffer_full` fires either way, once per episode,
/// and `on_buffer_drain` when it has been written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backpressure {
    /// Stop reading from the connection until its send buffer drains: a
    /// peer that does not read what it asked for cannot make the server
    /// read, decode and answer more (what Workerman users write by hand in
    /// `onBufferFull` / `onBufferDrain`). Sends still go into the buffer up
    /// to twice the limit, so replies to requests already read are not
    /// lost; past that they are dropped and counted as with `Drop`.
    #[default]
    PauseRecv,
    /// Workerman's behaviour: keep reading; sends past the limit are
    /// dropped, counted, and reported through `on_error` once per episode
    /// (when the buffer drains or the connection closes, and at most once a
    /// second while it stays full).
    Drop,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            send_buffer_size: DEFAULT_SEND_BUFFER_SIZE,
            max_package_size: DEFAULT_MAX_PACKAGE_SIZE,
            close_timeout: Duration::from_secs(5),
            async_queue: 64,
            first_message_timeout: Some(Duration::from_secs(60)),
            message_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            backpressure: Backpressure::default(),
            memory_budget: default_memory_budget(),
            max_connections: Some(default_max_connections()),
            max_connections_per_ip: Some(DEFAULT_MAX_CONNECTIONS_PER_IP),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// Sets [`send_buffer_size`](Self::send_buffer_size) (at least 1).
    pub fn send_buffer_size(mut self, bytes: usize) -> Self {
        self.send_buffer_size = bytes.max(1);
        self
    }

    /// Sets [`max_package_size`](Self::max_package_size) (at least 1).
    pub fn max_package_size(mut self, bytes: usize) -> Self {
        self.max_package_size = bytes.max(1);
        self
    }

    /// Sets [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets [`async_queue`](Self::async_queue) (at least 1).
    pub fn async_queue(mut self, messages: usize) -> Self {
        self.async_queue = messages.max(1);
        self
    }

    /// Sets [`first_message_timeout`](Self::first_message_timeout).
    pub fn first_message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.first_message_timeout = timeout;
        self
    }

    /// Sets [`message_timeout`](Self::message_timeout).
    pub fn message_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.message_timeout = timeout;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`backpressure`](Self::backpressure).
    pub fn backpressure(mut self, mode: Backpressure) -> Self {
        self.backpressure = mode;
        self
    }

    /// Sets [`memory_budget`](Self::memory_budget) (at least 64 KiB, the
    /// budget's charging unit).
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes.max(UNIT);
        self
    }

    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// Sets [`max_connections_per_ip`](Self::max_connections_per_ip).
    pub fn max_connections_per_ip(mut self, max: Option<usize>) -> Self {
        self.max_connections_per_ip = max;
        self
    }

    /// Sets [`stop_timeout`](Self::stop_timeout).
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The values a loaded configuration may not have: zero sizes.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("send_buffer_size", self.send_buffer_size),
            ("max_package_size", self.max_package_size),
            ("async_queue", self.async_queue),
        ] {
            if value == 0 {
                return Err(format!("limits: {name} must be at least 1"));
            }
        }
        if self.memory_budget < UNIT {
            return Err(format!(
                "limits: memory_budget must be at least {UNIT} bytes"
            ));
        }
        Ok(())
    }

    /// The queue size at which sends are dropped.
    pub(crate) fn drop_threshold(&self) -> usize {
        match self.backpressure {
            Backpressure::PauseRecv => self.send_buffer_size.saturating_mul(2),
            Backpressure::Drop => self.send_buffer_size,
        }
    }
}

/// A `Duration` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An `Option<Duration>` as whole milliseconds or `null`.
mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_is_the_defaults_and_unknown_fields_are_refused() {
        let loaded: Limits = serde_json::from_str("{}").unwrap();
        assert_eq!(loaded, Limits::default());
        assert!(serde_json::from_str::<Limits>(r#"{"send_buffer": 1}"#).is_err());
        assert!(serde_json::from_str::<Limits>(r#"{"close_timeout": 1}"#).is_err());
    }

    #[test]
    fn every_field_loads() {
        let loaded: Limits = serde_json::from_str(
            r#"{"send_buffer_size": 1, "max_package_size": 2, "close_timeout_ms": 3,
                "async_queue": 4, "first_message_timeout_ms": null, "message_timeout_ms": 9,
                "handshake_timeout_ms": 5,
                "backpressure": "drop", "memory_budget": 1048576, "max_connections": 7,
                "max_connections_per_ip": null,
                "stop_timeout_ms": 8}"#,
        )
        .unwrap();
        let built = Limits::default()
            .send_buffer_size(1)
            .max_package_size(2)
            .close_timeout(Duration::from_millis(3))
            .async_queue(4)
            .first_message_timeout(None)
            .message_timeout(Some(Duration::from_millis(9)))
            .handshake_timeout(Duration::from_millis(5))
            .backpressure(Backpressure::Drop)
            .memory_budget(1 << 20)
            .max_connections(Some(7))
            .max_connections_per_ip(None)
            .stop_timeout(Duration::from_millis(8));
        assert_eq!(loaded, built);
        assert!(loaded.check().is_ok());
    }

    #[test]
    fn zero_sizes_are_refused_when_loaded_and_raised_when_built() {
        let zero: Limits = serde_json::from_str(r#"{"send_buffer_size": 0}"#).unwrap();
        assert!(zero.check().unwrap_err().contains("send_buffer_size"));
        let tiny: Limits = serde_json::from_str(r#"{"memory_budget": 1}"#).unwrap();
        assert!(tiny.check().is_err());
        assert_eq!(Limits::default().send_buffer_size(0).send_buffer_size, 1);
        assert_eq!(Limits::default().memory_budget(1).memory_budget, UNIT);
    }
}
