//! Error and close-reason types.

use std::fmt;
use std::io;

use crate::protocol::{ProtocolError, SessionClose};

/// Everything that can go wrong in lubdub's worker, one small enum.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a socket or listener.
    Io(io::Error),
    /// The peer sent bytes the protocol refused (the connection is closed).
    Protocol(ProtocolError),
    /// A listen or connect address could not be parsed or resolved.
    Address(String),
    /// The address names a different protocol than the worker speaks.
    SchemeMismatch {
        /// The scheme of the worker's protocol.
        expected: &'static str,
        /// The scheme found in the address.
        found: String,
    },
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
    /// A client-only operation was used on a server connection.
    NotAClient,
    /// A graceful close could not flush the send buffer in time.
    FlushTimeout,
    /// `Timer` or another loop-bound API was used outside a running event loop.
    NoEventLoop,
    /// The worker stayed over its memory budget and this connection, among
    /// the largest holders, was closed (with `CloseReason::Overload`).
    Overload {
        /// Bytes this connection held (rounded down to 64 KiB).
        held: usize,
        /// The worker's memory budget in bytes.
        budget: usize,
    },
    /// The operation is not valid in the connection's current state
    /// (`reconnect` after the application closed the client, say).
    InvalidState(&'static str),
    /// An invalid configuration value.
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Address(a) => write!(f, "bad address: {a}"),
            Error::SchemeMismatch { expected, found } => {
                write!(
                    f,
                    "address scheme `{found}://` does not match the protocol `{expected}://`"
                )
            }
            Error::SendBufferFull { dropped, limit } => write!(
                f,
                "send buffer full ({limit} bytes): {dropped} message(s) dropped"
            ),
            Error::CallbackPanic { callback, message } => {
                write!(f, "{callback} panicked: {message}")
            }
            Error::ConnectFailed { addr, source } => {
                write!(f, "connect to {addr} failed: {source}")
            }
            Error::ReconnectGaveUp { attempts } => {
                write!(f, "gave up reconnecting after {attempts} failed attempt(s)")
            }
            Error::NotAClient => write!(f, "not a client connection"),
            Error::FlushTimeout => write!(f, "timed out flushing the send buffer on close"),
            Error::NoEventLoop => write!(f, "not called on a running lubdub event loop"),
            Error::InvalidState(what) => write!(f, "invalid in this state: {what}"),
            Error::Overload { held, budget } => write!(
                f,
                "over the memory budget of {} MiB: closed, holding {} KiB",
                budget >> 20,
                held >> 10
            ),
            Error::Config(c) => write!(f, "invalid configuration: {c}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::ConnectFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
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
    /// The heartbeat found the peer silent for longer than its timeout.
    HeartbeatTimeout,
    /// No whole first message arrived within the first-message timeout.
    FirstMessageTimeout,
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
            CloseReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            CloseReason::FirstMessageTimeout => f.write_str("first-message timeout"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timeout"),
            CloseReason::Overload => f.write_str("overload: over the memory budget"),
            CloseReason::Custom(s) => f.write_str(s),
        }
    }
}
