//! A connection's send queue: encoded bytes waiting for the writer, the
//! protocol's encoder state, and the send-buffer accounting. Guarded by the
//! connection's own lock (never a global one), so any thread can send.

use crate::protocol::Protocol;

/// The send queue of one connection.
pub(crate) struct Outbox<P: Protocol> {
    /// Encoded bytes not yet taken by the writer.
    pub buf: Vec<u8>,
    /// Bytes taken by the writer and not yet written.
    pub in_flight: usize,
    /// The buffer crossed the limit and has not drained yet.
    pub full: bool,
    /// `on_buffer_full` is due (a send from another thread filled it).
    pub full_pending: bool,
    /// Sends dropped since the last `on_error` report.
    pub dropped: u64,
    /// No more sends accepted.
    pub closed: bool,
    /// The connection's task is running now and will look at the queue
    /// before it sleeps, so senders need not wake it.
    pub polling: bool,
    /// Messages queued by `send` (counted under this lock, by any thread).
    pub messages_out: u64,
    /// The protocol's per-connection encoder state.
    pub encoder: P::Encoder,
}

impl<P: Protocol> Outbox<P> {
    pub fn new(encoder: P::Encoder) -> Self {
        Outbox {
            buf: Vec::new(),
            in_flight: 0,
            full: false,
            full_pending: false,
            dropped: 0,
            closed: false,
            polling: false,
            messages_out: 0,
            encoder,
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len() + self.in_flight
    }
}
