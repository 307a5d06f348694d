//! lubdub's event loop: [`Worker`], [`Connection`], [`Timer`] and the
//! sans-IO [`Protocol`] trait.
//!
//! Most users depend on the `lubdub` facade crate, which re-exports this one.

mod addr;
mod client;
mod connection;
mod driver;
mod error;
mod event_loop;
mod idle_yield;
pub mod plugin;
mod poller;
pub mod protocol;
mod reactor;
mod timer;
pub mod timer_queue;
mod worker;

pub use addr::{IntoListenAddr, ListenAddr};
pub use client::{Backoff, Client, EventLoop, LoopHandle, ReconnectPolicy};
pub use connection::{
    monotonic_nanos, ConnStats, Connection, Limits, LocalBoxFuture, SendStatus,
    DEFAULT_MAX_PACKAGE_SIZE, DEFAULT_SEND_BUFFER_SIZE,
};
pub use error::{CloseReason, Error};
pub use plugin::{Flow, Plugin};
pub use protocol::{Decoded, Protocol, ProtocolError, Raw};
pub use timer::Timer;
pub use timer_queue::TimerId;
pub use worker::{Worker, WorkerConfig, WorkerHandle};
