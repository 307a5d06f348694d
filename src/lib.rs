//! # lubdub
//!
//! A Workerman-style event framework for Rust: pick a protocol, write
//! `on_connect` / `on_message` / `on_close` callbacks, add timers with
//! [`Timer::add`], and run a [`Worker`]. Built on the smol family (a
//! reactor per event loop: epoll through rustix on Linux, `polling`
//! elsewhere, with the loop's own timers; async-executor); no tokio.
//!
//! ```no_run
//! use lubdub::{Text, Worker};
//!
//! let mut worker = Worker::<Text>::new("text://0.0.0.0:1234")?;
//! worker.on_message(|conn, line| {
//!     let _ = conn.send(&format!("you said: {line}"));
//! });
//! worker.run()?;
//! # Ok::<(), lubdub::Error>(())
//! ```
//!
//! This crate re-exports the member crates:
//! * [`lubdub_worker`]: `Worker`, `Connection`, `Client`, `Timer`;
//! * [`protocol`] (`lubdub-protocol`): the sans-IO `Protocol` trait, its
//!   per-connection `Decoder` and `Encoder` sessions, and `Codec`;
//! * [`lubdub_text`]: Workerman's Text protocol ([`Text`], [`TextBytes`]);
//! * [`lubdub_frame`]: binary length-prefixed protocols ([`Frame`],
//!   [`LengthField`], the C# seed's [`PacketCodec`] and [`Packet`]);
//! * [`ws`] (`lubdub-ws`): WebSocket, server and client ([`Ws`]).

pub use lubdub_worker::{
    default_max_connections, default_memory_budget, plugin, protocol, Backoff, Backpressure,
    Client, CloseReason, Closing, Codec, ConfigError, ConnError, ConnInfo, ConnState, ConnStats,
    Connection, Decoded, Decoder, Drain, Encoder, Error, EventLoop, Flow, IntoListenAddr, Limits,
    ListenAddr, LoopHandle, LoopStats, Misuse, Plugin, Protocol, ProtocolError, Raw,
    ReconnectPolicy, Reject, SendStatus, SessionClose, Start, Timer, TimerId, TlsClientConfig,
    TlsConfig, TlsFiles, Wire, Worker, WorkerConfig, WorkerHandle, CLOSE_KINDS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_PACKAGE_SIZE, DEFAULT_SEND_BUFFER_SIZE,
    LAG_BUCKETS,
};

pub use lubdub_text::{Text, TextBytes, TextConfig};

pub use lubdub_frame::{Frame, LengthField, LengthFieldBuilder, Packet, PacketCodec};

pub mod ws;
pub use ws::{WebSocketHooks, Ws};

/// The heartbeat plugin (`lubdub-heartbeat`): idle sweep, server pings,
/// client heartbeat. See `docs/heartbeat.md`.
pub use lubdub_heartbeat as heartbeat;

/// Users, groups and broadcasts, on one node or across many over Redis
/// (`lubdub-hub`). See `docs/hub.md`.
pub use lubdub_hub as hub;

/// The protocol crates, by name.
pub mod protocols {
    pub use lubdub_frame as frame;
    pub use lubdub_resp as resp;
    pub use lubdub_text as text;
    pub use lubdub_ws as ws;
}

/// The README's code blocks, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}

#[cfg(feature = "cli")]
pub mod cli;

#[cfg(feature = "metrics")]
pub mod metrics;
