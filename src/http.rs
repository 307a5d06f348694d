//! HTTP/1.1 for workers: the `lubdub-http` protocol crate.
//!
//! ```no_run
//! use lubdub::http::{http::Response, Http, Reply};
//! use lubdub::Worker;
//!
//! let mut worker = Worker::<Http>::new("http://127.0.0.1:8080")?;
//! worker.on_message(|conn, req| {
//!     let body = format!("hello from {}\n", req.uri().path());
//!     let _ = conn.send(&req.respond(Response::new(body.into_bytes())));
//! });
//! worker.run()?;
//! # Ok::<(), lubdub::Error>(())
//! ```
//!
//! Answer each request with [`Reply`]s in the order the requests came
//! (pipelining); a synchronous `on_message` does. See docs/http.md.

pub use lubdub_http::*;
