//! Error and close-reason types.

use std::fmt;
use std::io;

use crate::protocol::{ProtocolError, SessionClose};

/// What a fallible lubdub call returns (`Worker::new`, `start`, `run`,
/// `Client::connect`, `Timer::add`, `Connection::reconnect`...): a
/// configuration to fix, a refusal from the system, or a call made where it
/// cannot work. What goes wrong on a live connection is a [`ConnError`],
/// given to `on_error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting or an address is invalid: fix the configuration.
    Config(ConfigError),
    /// The system refused: binding the port, starting a thread, reading a
    /// certificate file.
    Io(io::Error),
    /// The call cannot work here (a client-only call on a server
    /// connection, a loop-bound call off an event loop).
    Misuse(Misuse),
}

/// A configuration that cannot work; see [`Error::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A listen or connect address could not be parsed or resolved.
    Address(String),
    /// The address names a different protocol than the worker speaks.
    SchemeMismatch {
        /// The scheme of the worker's protocol.
        expected: &'static str,
        /// The scheme found in the address.
        found: String,
    },
    /// TLS settings that cannot work (no certificate in a file, a key that
    /// does not match, an invalid server name).
    Tls(String),
    /// Any other invalid value (a zero count, a TLS address without TLS).
    Invalid(String),
}

/// A call made where it cannot work; see [`Error::Misuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misuse {
    /// A client-only operation was used on a server connection.
    NotAClient,
    /// `Timer` or another loop-bound API was used outside a running event loop.
    NoEventLoop,
    /// The operation is not valid in the current state (`reconnect` after
    /// the application closed the client, say).
    InvalidState(&'static str),
}

/// What went wrong on one connection: the argument of `on_error`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnError {
    /// An I/O error on the socket (a reset by the peer, say).
    Io(io::Error),
    /// The peer sent bytes the protocol refused (the connection is closed).
    Protocol(ProtocolError),
    /// Sends were dropped because the connection's send buffer was full.
    SendBufferFull {
        /// Messages dropped since the last report.
        dropped: u64,
        /// The send buffer limit in bytes.
        limit: usize,
    },
    /// A user callback panicked; the connection it ran for is closed.
    CallbackPanic {
        /// Which callback (`on_message`, `timer`, ...).
        callback: &'static str,
        /// The panic message.
        message: String,
    },
    /// A client could not connect (refused, unreachable, timed out...).
    ConnectFailed {
        /// The address it tried.
        addr: std::net::SocketAddr,
        /// The OS error (`TimedOut` for the connect timeout).
        source: io::Error,
    },
    /// A client's automatic reconnect policy used up its attempts.
    ReconnectGaveUp {
        /// Failed attempts in a row.
        attempts: u32,
    },
    /// A graceful close could not flush the send buffer in time.
    FlushTimeout,
    /// The worker stayed over its memory budget and this connection, among
    /// the largest holders, was closed (with `CloseReason::Overload`).
    Overload {
        /// Bytes this connection held (rounded down to 64 KiB).
        held: usize,
        /// The worker's memory budget in bytes.
        budget: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Misuse(e) => e.fmt(f),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Address(a) => write!(f, "bad address: {a}"),
            ConfigError::SchemeMismatch { expected, found } => write!(
                f,
                "address scheme `{found}://` does not match the protocol `{expected}://`"
            ),
            ConfigError::Tls(what) => write!(f, "TLS: {what}"),
            ConfigError::Invalid(what) => f.write_str(what),
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::NotAClient => f.write_str("not a client connection"),
            Misuse::NoEventLoop => f.write_str("not called on a running lubdub event loop"),
            Misuse::InvalidState(what) => write!(f, "invalid in this state: {what}"),
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "I/O error: {e}"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::SendBufferFull { dropped, limit } => write!(
                f,
                "send buffer full ({limit} bytes): {dropped} message(s) dropped"
            ),
            ConnError::CallbackPanic { callback, message } => {
                write!(f, "{callback} panicked: {message}")
            }
            ConnError::ConnectFailed { addr, source } => {
                write!(f, "connect to {addr} failed: {source}")
            }
            ConnError::ReconnectGaveUp { attempts } => {
                write!(f, "gave up reconnecting after {attempts} failed attempt(s)")
            }
            ConnError::FlushTimeout => write!(f, "timed out flushing the send buffer on close"),
            ConnError::Overload { held, budget } => write!(
                f,
                "over the memory budget of {} MiB: closed, holding {} KiB",
                budget >> 20,
                held >> 10
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::Misuse(e) => Some(e),
        }
    }
}

impl std::error::Error for ConfigError {}
impl std::error::Error for Misuse {}

impl std::error::Error for ConnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnError::Io(e) => Some(e),
            ConnError::Protocol(e) => Some(e),
            ConnError::ConnectFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<Misuse> for Error {
    fn from(e: Misuse) -> Self {
        Error::Misuse(e)
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> Self {
        ConnError::Protocol(e)
    }
}

/// Why a connection closed; passed to `on_close`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// `close()` or `close_with()` was called.
    Local,
    /// `destroy()` was called: closed at once, unsent data discarded.
    Destroyed,
    /// The peer closed its side (end of stream).
    PeerClosed,
    /// A socket error such as a reset by the peer.
    Io(std::io::ErrorKind),
    /// The peer violated the protocol (see `on_error` for the detail).
    Protocol,
    /// The protocol's own close ended the session: a WebSocket close frame
    /// with its code and reason (`by_peer` when the peer sent it first).
    Session(SessionClose),
    /// A user callback panicked.
    Panic,
    /// A graceful close did not drain the send buffer within the close timeout.
    FlushTimeout,
    /// The worker is stopping.
    WorkerStopped,
    /// The worker handed its clients to a new process (a reload): the
    /// protocol's goodbye asked the peer to reconnect (WebSocket 1012).
    Restart,
    /// The heartbeat found the peer silent for longer than its timeout.
    HeartbeatTimeout,
    /// No whole first message arrived within the first-message timeout.
    FirstMessageTimeout,
    /// A message had started arriving and no byte of it came for the
    /// message timeout (`Limits::message_timeout`).
    MessageTimeout,
    /// The protocol's handshake did not finish within the handshake timeout.
    HandshakeTimeout,
    /// The worker stayed over its memory budget and this connection was
    /// among the largest holders.
    Overload,
    /// An application-defined reason given to `close_with_reason`.
    Custom(String),
}

impl CloseReason {
    /// Whether the close was caused by an error (not by either side's wish).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            CloseReason::Io(_)
                | CloseReason::Protocol
                | CloseReason::Panic
                | CloseReason::FlushTimeout
                | CloseReason::HeartbeatTimeout
                | CloseReason::FirstMessageTimeout
                | CloseReason::MessageTimeout
                | CloseReason::HandshakeTimeout
                | CloseReason::Overload
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Destroyed => f.write_str("destroyed"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Io(k) => write!(f, "socket error: {k}"),
            CloseReason::Protocol => f.write_str("protocol error"),
            CloseReason::Session(c) => c.fmt(f),
            CloseReason::Panic => f.write_str("callback panicked"),
            CloseReason::FlushTimeout => f.write_str("flush timeout"),
            CloseReason::WorkerStopped => f.write_str("worker stopped"),
            CloseReason::Restart => f.write_str("restart: told to reconnect"),
            CloseReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            CloseReason::FirstMessageTimeout => f.write_str("first-message timeout"),
            CloseReason::MessageTimeout => {
                f.write_str("message timeout: a partial message stopped")
            }
            CloseReason::HandshakeTimeout => f.write_str("handshake timeout"),
            CloseReason::Overload => f.write_str("overload: over the memory budget"),
            CloseReason::Custom(s) => f.write_str(s),
        }
    }
}
