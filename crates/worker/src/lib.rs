//! lubdub's event loop: [`Worker`], [`Connection`], [`Client`], [`Timer`],
//! over the sans-IO [`Protocol`] trait of `lubdub-protocol`.
//!
//! Most users depend on the `lubdub` facade crate, which re-exports this one.
//!
//! Inside, a connection is a state machine (`lifecycle`) that takes inputs
//! and yields events as data; a thin I/O shell (`driver`) feeds it from a
//! socket through a transport (`transport`: plain TCP or TLS) and hands its
//! events to a dispatcher (`dispatch`) that runs plugins and callbacks. The
//! handle (`connection`) only writes to the connection's mailbox
//! (`mailbox`). Each loop has its own epoll reactor (`reactor`, `poller`)
//! and timers (`event_loop`, `timer_queue`). docs/architecture.md draws the
//! whole picture.

mod addr;
mod client;
mod client_ctl;
mod clock;
mod config;
mod connection;
mod dispatch;
mod driver;
mod endpoint;
mod error;
mod event_loop;
mod handle;
mod handlers;
mod idle_yield;
mod lifecycle;
mod limits;
mod mailbox;
mod memory;
pub mod plugin;
mod poller;
mod reactor;
mod reconnect;
mod stats;
mod timer;
pub mod timer_queue;
mod tls;
mod transport;
mod worker;

/// The protocol trait and its types (the `lubdub-protocol` crate).
pub use lubdub_protocol as protocol;

pub use memory::default_memory_budget;

pub use addr::{IntoListenAddr, ListenAddr};
pub use client::{Client, EventLoop, LoopHandle};
pub use clock::monotonic_nanos;
pub use config::{TlsFiles, WorkerConfig};
pub use connection::{ConnInfo, ConnState, ConnStats, Connection, SendStatus};
pub use error::{CloseReason, ConfigError, ConnError, Error, Misuse};
pub use handle::{Drain, WorkerHandle};
pub use limits::{
    default_max_connections, Backpressure, Limits, DEFAULT_MAX_CONNECTIONS_PER_IP,
    DEFAULT_MAX_PACKAGE_SIZE, DEFAULT_SEND_BUFFER_SIZE,
};
pub use plugin::{Flow, Plugin};
pub use protocol::{
    Closing, Codec, Decoded, Decoder, Encoder, Protocol, ProtocolError, Raw, Reject, SessionClose,
    Start, Wire,
};
pub use reconnect::{Backoff, ReconnectPolicy};
pub use stats::{LoopStats, CLOSE_KINDS, LAG_BUCKETS};
pub use timer::Timer;
pub use timer_queue::TimerId;
pub use tls::{TlsClientConfig, TlsConfig};
pub use worker::Worker;
