//! The closing side of a connection's state machine: the peer's end, socket
//! errors, the graceful close (flush, goodbye, half-close, linger), the
//! exactly-once `on_close`, and the memory budget's closes.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Lifecycle, Phase, SocketAction, Tenure};
use crate::connection::{FINISHED, NO_LINGER};
use crate::error::{CloseReason, Error};
use crate::event_loop::catch;
use crate::handlers::report;
use crate::memory::{release, MemoryBudget, RECHECK};
use crate::protocol::{Closing, Protocol};

impl<P: Protocol> Lifecycle<P> {
    /// The peer's FIN: nothing more will come.
    pub fn on_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Lingering => self.finish(self.reason()),
            Phase::Closed => {}
            _ => {
                self.peer_eof = true;
                self.conn.set_reason(CloseReason::PeerClosed);
                self.begin_closing(now);
            }
        }
    }

    /// A socket error: report it and close at once.
    pub fn on_io_error(&mut self, op: &str, e: io::Error) {
        if self.phase == Phase::Closed {
            return;
        }
        log::debug!("connection {}: {op} failed: {e}", self.conn.id());
        let kind = e.kind();
        self.conn.set_reason(CloseReason::Io(kind));
        report(&self.conn, &Error::Io(e));
        self.finish(CloseReason::Io(kind));
    }

    /// The stream ended without the transport's own close (a TLS
    /// truncation): reported; the shell then handles it as the peer's FIN.
    pub fn on_truncation(&mut self) {
        log::debug!(
            "connection {} ({}): the peer closed without a TLS close_notify",
            self.conn.id(),
            self.conn.remote_addr()
        );
        report(
            &self.conn,
            &Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed without a TLS close_notify (truncation)",
            )),
        );
    }

    pub(super) fn reason(&self) -> CloseReason {
        self.conn.close_reason().unwrap_or(CloseReason::Local)
    }

    /// Stops taking input and queues the protocol's goodbye; the rest of
    /// the close happens as the queue drains.
    pub(super) fn begin_closing(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::New | Phase::Handshake | Phase::Open) {
            return;
        }
        let reason = self.reason();
        {
            let mut ob = self.conn.outbox();
            ob.closed = true;
            let ob = &mut *ob;
            let closing = match &reason {
                CloseReason::Local | CloseReason::Custom(_) => Some(Closing::Local {
                    code: None,
                    reason: "",
                }),
                CloseReason::Session(c) => Some(Closing::Session(c)),
                CloseReason::Protocol => self
                    .rare
                    .as_deref()
                    .and_then(|r| r.violation.as_ref())
                    .map(Closing::Violation),
                CloseReason::WorkerStopped => Some(Closing::GoingAway),
                CloseReason::Panic => Some(Closing::InternalError),
                CloseReason::HeartbeatTimeout
                | CloseReason::FirstMessageTimeout
                | CloseReason::HandshakeTimeout => Some(Closing::Timeout),
                // The peer is gone or the socket broke: no goodbye.
                _ => None,
            };
            if let Some(closing) = closing {
                self.conn
                    .endpoint()
                    .protocol
                    .encode_close(&mut ob.encoder, &closing, &mut ob.buf);
            }
        }
        self.phase = Phase::Closing;
        self.first_message_deadline = None;
        let close_timeout = self.conn.endpoint().limits.close_timeout;
        let gone = Self::presumed_gone(&reason);
        let rare = self.rare();
        if reason != CloseReason::PeerClosed {
            rare.pending.clear();
        }
        rare.handshake_deadline = None;
        if gone {
            // Send what the socket takes now (a goodbye), but wait neither
            // for a flush nor for the peer's FIN.
            rare.close_deadline = Some(now);
            self.conn.inner.flags.fetch_or(NO_LINGER, Ordering::AcqRel);
        } else {
            rare.close_deadline = Some(now + close_timeout);
        }
    }

    /// The close deadline has passed.
    fn close_due(&self, now: Instant) -> bool {
        self.rare_ref()
            .and_then(|r| r.close_deadline)
            .is_some_and(|d| now >= d)
    }

    pub(super) fn presumed_gone(reason: &CloseReason) -> bool {
        matches!(
            reason,
            CloseReason::HeartbeatTimeout
                | CloseReason::FirstMessageTimeout
                | CloseReason::HandshakeTimeout
        )
    }

    /// After a turn's writes: whether to shut down writing or close, as the
    /// close proceeds (flushed, the peer's FIN, the close deadline).
    pub fn socket_action(&mut self, now: Instant) -> Option<SocketAction> {
        match self.phase {
            Phase::Closing => {
                let flushed = self.flushed && self.transport_pending == 0;
                if flushed && !self.async_busy() {
                    if self.peer_eof {
                        // The peer's FIN is in and nothing is left unread:
                        // closing sends our FIN after the flushed bytes, with
                        // no reset to fear, so no half-close and no linger.
                        self.finish(self.reason());
                        return Some(SocketAction::Close);
                    }
                    // Everything was sent: the application sees the close
                    // now, while the socket waits (bounded) for the peer's FIN.
                    self.phase = Phase::Lingering;
                    self.announce(self.reason());
                    return Some(SocketAction::Shutdown);
                }
                if self.close_due(now) {
                    let reason = self.reason();
                    if !flushed && !Self::presumed_gone(&reason) {
                        log::debug!(
                            "connection {}: close timed out with data unsent",
                            self.conn.id()
                        );
                        report(&self.conn, &Error::FlushTimeout);
                        self.finish(CloseReason::FlushTimeout);
                    } else {
                        self.finish(reason);
                    }
                    return Some(SocketAction::Close);
                }
                None
            }
            Phase::Lingering => {
                let stop = self.conn.flags() & NO_LINGER != 0;
                if stop || self.close_due(now) {
                    self.finish(self.reason());
                    return Some(SocketAction::Close);
                }
                None
            }
            Phase::Closed => Some(SocketAction::Close),
            _ => None,
        }
    }

    /// The application-visible close: `on_close` exactly once (only for a
    /// connection that reached Open), then out of the map. The socket may
    /// still linger after this.
    pub(super) fn announce(&mut self, reason: CloseReason) {
        if self.announced {
            return;
        }
        self.announced = true;
        let conn = self.conn.clone();
        conn.set_reason(reason);
        let reason = conn.close_reason().unwrap_or(CloseReason::Local);
        conn.inner.flags.fetch_or(FINISHED, Ordering::AcqRel);
        let dropped = {
            let mut ob = conn.outbox();
            ob.closed = true;
            // A client keeps whole messages not yet taken by the writer for
            // its next session (unless told not to); bytes in flight may be
            // half-written: dropped.
            let keep = self.tenure == Tenure::Session
                && conn.inner.client.as_ref().is_some_and(|c| c.keeps_unsent());
            if !keep {
                release(&mut ob.buf);
            }
            std::mem::take(&mut ob.dropped)
        };
        // The episode of dropped sends ends with the connection.
        if let Some(rare) = &mut self.rare {
            rare.drops_since = None;
            rare.pending.clear();
            rare.inflight = None;
        }
        self.report_drops(dropped);
        if self.established {
            log::debug!("connection {} closed: {reason}", conn.id());
            let handlers = &conn.endpoint().handlers;
            for plugin in &handlers.plugins {
                if let Err(msg) = catch(|| plugin.on_close(&conn, &reason)) {
                    log::error!("connection {}: plugin on_close panicked: {msg}", conn.id());
                }
            }
            if let Some(cb) = &handlers.on_close {
                if let Err(msg) = catch(|| cb(&conn, &reason)) {
                    log::error!("connection {}: on_close panicked: {msg}", conn.id());
                }
            }
        }
        self.map_entry = None;
    }

    /// The end: announces the close if not done yet and releases everything.
    pub(super) fn finish(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if matches!(reason, CloseReason::FlushTimeout | CloseReason::Overload) {
            // Overrides the close that was under way, if any.
            self.conn.force_reason(reason.clone());
        }
        self.phase = Phase::Closed;
        self.announce(reason);
        self.conn.outbox().in_flight = 0;
        self.conn.endpoint().sockets.fetch_sub(1, Ordering::Relaxed);
        release(&mut self.rbuf);
        self.rpos = 0;
        release(&mut self.wbuf);
        self.wpos = 0;
        release(&mut self.wire_out);
        self.rare = None;
        self.charge(0, Instant::now());
    }

    /// Moves this connection's charge on the worker's memory budget.
    pub(super) fn charge(&mut self, charge: usize, now: Instant) {
        if charge != self.charge {
            self.conn
                .endpoint()
                .memory
                .recharge(self.charge, charge, now);
            self.charge = charge;
        }
    }

    /// Holds a connection that holds memory while the worker is over its
    /// budget, and closes it if the worker stays over and it is among the
    /// largest holders. Returns whether it closed.
    pub(super) fn enforce_memory_budget(&mut self, now: Instant) -> bool {
        let budget = &self.conn.endpoint().memory;
        let pressure = budget.is_over() || budget.in_episode();
        if self.charge == 0 || !pressure || self.phase == Phase::Lingering {
            self.mem_hold = false;
            if let Some(rare) = &mut self.rare {
                rare.mem_check = None;
            }
            return false;
        }
        if budget.over_too_long(now) && MemoryBudget::class_of(self.charge) == budget.top_class() {
            let (held, limit) = (self.charge, budget.limit());
            log::debug!(
                "connection {} ({}): closed over the memory budget, holding {} KiB",
                self.conn.id(),
                self.conn.remote_addr(),
                held >> 10
            );
            report(
                &self.conn,
                &Error::Overload {
                    held,
                    budget: limit,
                },
            );
            self.finish(CloseReason::Overload);
            return true;
        }
        // Over the budget: hold. Back under it but still in the episode
        // (above the low watermark): read again, but look again soon, as
        // the largest may still have to go.
        self.mem_hold = budget.is_over();
        self.rare().mem_check = Some(now + RECHECK);
        false
    }
}
