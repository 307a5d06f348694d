//! The output side of a connection's state machine: what to write (the
//! protocol's own bytes first, then the send queue once established), what
//! was written, and the send-queue events.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Lifecycle, Phase, KEEP_CAPACITY};
use crate::clock::bump;
use crate::connection::OVER_LIMIT;
use crate::error::Error;
use crate::handlers::{fire_buffer_drain, fire_buffer_full, report};
use crate::memory::release;
use crate::protocol::Protocol;

/// While a send buffer stays full, dropped sends are reported at most this often.
pub(super) const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl<P: Protocol> Lifecycle<P> {
    /// Fires `on_buffer_full` flagged by a send from another thread, and
    /// keeps the episode of dropped sends: the first drop seen starts it,
    /// and a report is due a second later if the buffer is still full.
    pub(super) fn fire_send_events(&mut self, now: Instant) {
        let (full, dropped) = {
            let mut ob = self.conn.outbox();
            (std::mem::take(&mut ob.full_pending), ob.dropped)
        };
        if full {
            fire_buffer_full(&self.conn);
        }
        if dropped == 0 {
            return;
        }
        let since = self.rare().drops_since;
        match since {
            None => self.rare().drops_since = Some(now),
            Some(since) if now >= since + DROP_REPORT_INTERVAL => {
                let dropped = std::mem::take(&mut self.conn.outbox().dropped);
                self.report_drops(dropped);
                self.rare().drops_since = None;
            }
            Some(_) => {}
        }
    }

    /// Reports `dropped` sends as one error (one per episode).
    pub(super) fn report_drops(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        let conn = &self.conn;
        let limit = conn.endpoint().limits.send_buffer_size;
        log::debug!(
            "connection {}: {dropped} send(s) dropped, buffer full",
            conn.id()
        );
        report(conn, &Error::SendBufferFull { dropped, limit });
    }

    /// The next bytes to write, or `None` when everything is written.
    /// The protocol's own bytes go first; the application's queue only
    /// once the connection is established.
    pub fn transmit(&mut self) -> Option<&[u8]> {
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
        let mut drained = false;
        let mut dropped = 0;
        if self.established {
            let mut ob = self.conn.outbox();
            ob.in_flight = 0;
            if !ob.buf.is_empty() {
                std::mem::swap(&mut ob.buf, &mut self.wbuf);
                ob.in_flight = self.wbuf.len();
                drop(ob);
                self.wbuf_queued = true;
                self.flushed = false;
                return Some(&self.wbuf);
            }
            if ob.buf.capacity() > KEEP_CAPACITY {
                release(&mut ob.buf);
            }
            if ob.full {
                ob.full = false;
                self.conn
                    .inner
                    .flags
                    .fetch_and(!OVER_LIMIT, Ordering::AcqRel);
                drained = true;
                dropped = std::mem::take(&mut ob.dropped);
            }
        }
        self.flushed = true;
        self.write_blocked = false;
        if self.wbuf.capacity() > KEEP_CAPACITY {
            release(&mut self.wbuf);
        }
        if drained {
            // The episode ends: its drops are reported, then the drain.
            if let Some(rare) = &mut self.rare {
                rare.drops_since = None;
            }
            self.report_drops(dropped);
            fire_buffer_drain(&self.conn);
        }
        None
    }

    /// `n` bytes of what [`transmit`](Self::transmit) returned were written.
    pub fn on_written(&mut self, n: usize) {
        self.wpos += n;
        let inner = &self.conn.inner;
        bump(&inner.bytes_out, n as u64);
        bump(&inner.write_calls, 1);
    }

    /// The socket takes no more for now; writing resumes when it is writable.
    /// The transport's own pending bytes count as in flight too, so the
    /// send buffer limit covers them (a peer that does not read TLS records
    /// cannot grow them without bound).
    pub fn on_write_blocked(&mut self) {
        self.write_blocked = true;
        if self.wbuf_queued || self.transport_pending > 0 {
            let unwritten = if self.wbuf_queued {
                self.wbuf.len() - self.wpos
            } else {
                0
            };
            self.conn.outbox().in_flight = unwritten + self.transport_pending;
        }
    }
}
