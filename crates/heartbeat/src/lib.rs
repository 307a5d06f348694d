//! Heartbeats for lubdub: find and close dead connections, keep live ones
//! alive through NATs, measure round trips.
//!
//! One plugin, installed with one call (usually through the facade, as
//! `lubdub::heartbeat`):
//!
//! ```no_run
//! use std::time::Duration;
//! use lubdub_heartbeat::{Heartbeat, TextHeartbeat};
//! use lubdub_text::Text;
//! use lubdub_worker::Worker;
//!
//! let mut worker = Worker::<Text>::new("text://0.0.0.0:1234")?;
//! let hb = Heartbeat::server(TextHeartbeat::new())   // Workerman: every 10 s, 55 s
//!     .ping_interval(Duration::from_secs(30))         // optional server pings, RTT
//!     .goodbye("bye: heartbeat timeout");
//! let handle = hb.handle(); // RTTs, unregister, counters, from any thread
//! worker.plugin(hb);
//! worker.run()?;
//! # Ok::<(), lubdub_worker::Error>(())
//! ```
//!
//! * [`ServerHeartbeat`]: Workerman's idle sweep (any inbound byte counts
//!   as life; a silent peer is closed within `timeout + check_interval`;
//!   stalls of the process are forgiven), answers to peers' pings, and
//!   optional MagicOnion-style server pings with per-connection RTT.
//! * [`ClientHeartbeat`]: for `lubdub::Client` connections: pings when
//!   quiet, declares a silent server dead so the reconnect policy takes
//!   over, RTT and server clock offset.
//! * [`HeartbeatCodec`]: what heartbeats look like per protocol:
//!   [`TextHeartbeat`] (`ping`/`pong` lines), [`FrameHeartbeat`] (reserved
//!   payload tags), [`PacketHeartbeat`] (the C# `SYS_START_HEARTBEAT` /
//!   `SYS_UPDATE_HEARTBEAT` scheme), [`Silent`] (sweep only).
//!
//! Every rule lives in a sans-IO state machine that takes the time as an
//! argument ([`IdleSweep`], [`PingState`], [`ClientBeat`], [`StallLog`],
//! [`RttEstimator`]), tested in virtual time; the plugins only read clocks,
//! walk connections and send what the machines decide. The design, wire
//! formats, defaults and a comparison with Workerman, the C# seed and
//! MagicOnion are in `docs/heartbeat.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod codec;
mod keepalive;
mod ping;
mod registry;
mod rtt;
mod server;
mod sweep;
mod time;
mod ws;

pub use client::{
    ClientAction, ClientBeat, ClientConfig, ClientIo, ClockSample, Entropy, RoundTrip, SplitMix64,
};
pub use codec::{
    Beat, FrameHeartbeat, HeartbeatCodec, PacketHeartbeat, Ping, Pong, Silent, TextHeartbeat,
    SYS_HEARTBEAT_ACK,
};
pub use keepalive::{ClientHeartbeat, ClientHeartbeatHandle, ClientStats, ServerPing};
pub use ping::{AckSample, PingConfig, PingState, PingVerdict, MAX_OUTSTANDING};
pub use rtt::{RttEstimator, RttStats};
pub use server::{
    HeartbeatHandle, HeartbeatStats, ServerConfig, ServerHeartbeat, Timeout, RTT_BUCKETS,
};
pub use sweep::{IdleSweep, Liveness, SweepConfig, SweepReport};
pub use time::{from_unix_ms, unix_ms, Stall, StallLog, Ticker};
pub use ws::WsHeartbeat;

use lubdub_worker::Protocol;

/// Entry point: `Heartbeat::server(codec)` and `Heartbeat::client(codec)`.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat;

impl Heartbeat {
    /// A server heartbeat with Workerman's defaults (sweep every 10 s,
    /// close after 55 s of inbound silence), speaking `codec`.
    pub fn server<P: Protocol, C: HeartbeatCodec<P>>(codec: C) -> ServerHeartbeat<P, C> {
        ServerHeartbeat::new(codec)
    }

    /// A client heartbeat (ping every 20 s ± 10 % when quiet, server dead
    /// after 60 s of silence), speaking `codec`.
    pub fn client<P: Protocol, C: HeartbeatCodec<P>>(codec: C) -> ClientHeartbeat<P, C> {
        ClientHeartbeat::new(codec)
    }
}
