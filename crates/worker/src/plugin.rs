//! Plugins: behaviour installed on a worker (or client) with one call, running
//! around the user's callbacks. The heartbeat is one.

use crate::connection::Connection;
use crate::error::CloseReason;
use crate::handle::WorkerHandle;
use crate::protocol::Protocol;

/// What a plugin decided about an inbound message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Hand the message on (to later plugins, then `on_message`).
    Continue,
    /// The plugin consumed it; `on_message` does not see it.
    Consumed,
}

/// Hooks a plugin may implement; every method has a no-op default.
///
/// Hooks run on the connection's event loop, before the user's callback of
/// the same name (`on_close` too, so a plugin can still inspect the
/// connection), in the order the plugins were added. They must not block.
/// A panic in a hook is handled like a panic in a user callback.
pub trait Plugin<P: Protocol>: Send + Sync + 'static {
    /// A worker's event loop started (each loop calls it once). Timers added
    /// here belong to that loop.
    fn on_worker_start(&self, _worker: &WorkerHandle<P>) {}

    /// A worker's event loop is stopping.
    fn on_worker_stop(&self, _worker: &WorkerHandle<P>) {}

    /// A connection was established.
    fn on_connect(&self, _conn: &Connection<P>) {}

    /// A message arrived; return [`Flow::Consumed`] to keep it from the
    /// application.
    fn on_message(&self, _conn: &Connection<P>, _msg: &P::Message) -> Flow {
        Flow::Continue
    }

    /// A connection closed (runs exactly once per connection).
    fn on_close(&self, _conn: &Connection<P>, _reason: &CloseReason) {}
}
