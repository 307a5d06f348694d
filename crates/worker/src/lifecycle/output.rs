//! The output side of a connection's state machine: what to write (the
//! protocol's own bytes first, then the send queue once established), what
//! was written, and the full-buffer and dropped-send episodes.

use std::time::Instant;

use super::{Event, Lifecycle, Phase, DROP_REPORT_INTERVAL, KEEP_CAPACITY};
use crate::clock::bump;
use crate::error::ConnError;
use crate::memory::release;
use crate::protocol::Protocol;

impl<P: Protocol> Lifecycle<P> {
    /// A send took the queue to its limit: a full-buffer episode starts
    /// (`BufferFull`), unless one is under way or the queue drained since.
    pub(super) fn buffer_filled(&mut self) {
        if self.full || matches!(self.phase, Phase::Lingering | Phase::Closed) {
            return;
        }
        let limit = self.conn.inner.config.limits.send_buffer_size;
        if self.conn.inner.mailbox().queued() < limit {
            return;
        }
        self.full = true;
        bump(&self.conn.inner.buffer_full, 1);
        self.emit(Event::BufferFull);
    }

    /// Keeps the episode of dropped sends: the first drop seen starts it,
    /// and a report is due a second later if the buffer is still full.
    pub(super) fn track_drops(&mut self, now: Instant) {
        let dropped = self.conn.inner.mailbox().dropped;
        if dropped == 0 {
            return;
        }
        match self.rare_ref().and_then(|r| r.drops_since) {
            None => self.rare().drops_since = Some(now),
            Some(since) if now >= since + DROP_REPORT_INTERVAL => {
                let dropped = std::mem::take(&mut self.conn.inner.mailbox().dropped);
                self.report_drops(dropped);
                self.rare().drops_since = None;
            }
            Some(_) => {}
        }
    }

    /// Reports `dropped` sends as one error (one per episode).
    pub(super) fn report_drops(&mut self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        let limit = self.conn.inner.config.limits.send_buffer_size;
        log::debug!(
            "connection {}: {dropped} send(s) dropped, buffer full",
            self.conn.id()
        );
        self.emit(Event::error(ConnError::SendBufferFull { dropped, limit }));
    }

    /// The next bytes to write, or `None` when everything is written.
    /// The protocol's own bytes go first; the application's queue only
    /// once the connection is established. The end of a full-buffer
    /// episode is found here (`BufferDrain`).
    pub fn poll_transmit(&mut self) -> Option<&[u8]> {
        if self.wpos < self.wbuf.len() {
            return Some(&self.wbuf[self.wpos..]);
        }
        if self.phase == Phase::Closed {
            return None;
        }
        self.wbuf.clear();
        self.wpos = 0;
        self.wbuf_queued = false;
        if !self.wire_out.is_empty() {
            std::mem::swap(&mut self.wire_out, &mut self.wbuf);
            self.flushed = false;
            return Some(&self.wbuf);
        }
        let mut dropped = None;
        if self.established {
            let mut mb = self.conn.inner.mailbox();
            mb.in_flight = 0;
            if !mb.queue.is_empty() {
                std::mem::swap(&mut mb.queue, &mut self.wbuf);
                mb.in_flight = self.wbuf.len();
                drop(mb);
                self.wbuf_queued = true;
                self.flushed = false;
                return Some(&self.wbuf);
            }
            if mb.queue.capacity() > KEEP_CAPACITY {
                release(&mut mb.queue);
            }
            if self.full {
                dropped = Some(std::mem::take(&mut mb.dropped));
            }
        }
        self.flushed = true;
        self.write_blocked = false;
        if self.wbuf.capacity() > KEEP_CAPACITY {
            release(&mut self.wbuf);
        }
        if let Some(dropped) = dropped {
            // The episode ends: its drops are reported, then the drain.
            self.full = false;
            if let Some(rare) = &mut self.rare {
                rare.drops_since = None;
            }
            self.report_drops(dropped);
            self.emit(Event::BufferDrain);
        }
        None
    }

    /// `n` bytes of what [`poll_transmit`](Self::poll_transmit) returned were written.
    pub fn handle_written(&mut self, n: usize) {
        self.wpos += n;
        let inner = &self.conn.inner;
        bump(&inner.bytes_out, n as u64);
        bump(&inner.write_calls, 1);
    }

    /// The socket takes no more for now; writing resumes when it is writable.
    /// The transport's own pending bytes count as in flight too, so the
    /// send buffer limit covers them (a peer that does not read TLS records
    /// cannot grow them without bound).
    pub fn handle_write_blocked(&mut self) {
        self.write_blocked = true;
        if self.wbuf_queued || self.transport_pending > 0 {
            let unwritten = if self.wbuf_queued {
                self.wbuf.len() - self.wpos
            } else {
                0
            };
            self.conn.inner.mailbox().in_flight = unwritten + self.transport_pending;
        }
    }
}
