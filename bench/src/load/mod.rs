//! The load generators: what drives the servers and measures them. They
//! run in the runner process (one thread, a tokio current_thread runtime)
//! or, for the attack scenario, in child processes of their own.
//!
//! * `measure`, `connect`: the window and drain skeleton, how
//!   connections are opened (what messages carry is `payload.rs`);
//! * `tcp`, `tls`, `ws`, `http`: the load over TCP, TLS, WebSocket and HTTP, with the
//!   one idle-memory skeleton (`idle`) and the one WebSocket client codec
//!   (`ws_codec`);
//! * `hub` (with `socketio`): the hub scenarios' fan-out loads;
//! * `healthy`, `attackers`: the attack scenario's client processes.

pub mod attackers;
pub mod connect;
pub mod healthy;
pub mod http;
pub mod hub;
pub mod idle;
pub mod measure;
pub mod socketio;
pub mod tcp;
pub mod tls;
pub mod ws;
pub mod ws_codec;
