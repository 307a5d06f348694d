//! The servers under test and what they are compared with, each run in a
//! child process of its own (this binary re-executed with a hidden
//! subcommand, or another program): lubdub next to tokio, tokio-rustls,
//! tokio-tungstenite, fastwebsockets, nginx and Socket.IO.
//!
//! * `serve`: what every server child shares (start, reports, the tokio
//!   accept loop and echo);
//! * `tcp` (with `sweep`), `tls` (with `nginx`), `ws`, `http`, `hub`: the servers of
//!   each scenario family;
//! * `timers`, `client`: the children that measure lubdub's timers and
//!   client side against tokio's.

pub mod client;
pub mod http;
pub mod hub;
pub mod nginx;
pub mod serve;
pub mod sweep;
pub mod tcp;
pub mod timers;
pub mod tls;
pub mod ws;
