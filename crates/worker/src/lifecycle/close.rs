//! The closing side of a connection's state machine: the peer's end, socket
//! errors, the graceful close (flush, goodbye, half-close, linger), the
//! exactly-once `Closed` event, and the memory budget's verdicts.

use std::io;
use std::time::Instant;

use super::{Event, Lifecycle, MemoryVerdict, Phase, SocketAction, Tenure};
use crate::error::{CloseReason, ConnError};
use crate::mailbox::{req, status, Mailbox};
use crate::memory::{release, RECHECK};
use crate::protocol::{Closing, Encoder, Protocol};

impl<P: Protocol> Lifecycle<P> {
    /// The peer's FIN: nothing more will come.
    pub fn handle_eof(&mut self, now: Instant) {
        match self.phase {
            Phase::Lingering => self.finish(self.reason()),
            Phase::Closed => {}
            _ => {
                self.peer_eof = true;
                self.close_for(CloseReason::PeerClosed, now);
            }
        }
    }

    /// A socket error: report it and close at once.
    pub fn handle_io_error(&mut self, op: &str, e: io::Error) {
        if self.phase == Phase::Closed {
            return;
        }
        log::debug!("connection {}: {op} failed: {e}", self.conn.id());
        let kind = e.kind();
        self.set_reason(CloseReason::Io(kind));
        self.emit(Event::error(ConnError::Io(e)));
        self.finish(CloseReason::Io(kind));
    }

    /// The stream ended without the transport's own close (a TLS
    /// truncation): reported; the shell then handles it as the peer's FIN.
    pub fn handle_truncation(&mut self) {
        log::debug!(
            "connection {} ({}): the peer closed without a TLS close_notify",
            self.conn.id(),
            self.conn.remote_addr()
        );
        self.emit(Event::error(ConnError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed without a TLS close_notify (truncation)",
        ))));
    }

    /// Closes gracefully for `reason` (unless a reason is known already).
    pub(super) fn close_for(&mut self, reason: CloseReason, now: Instant) {
        self.set_reason(reason);
        self.begin_closing(now);
    }

    /// Refuses further sends, unless this client session's end keeps the
    /// mailbox open for the next session.
    fn close_to_sends(&self, mb: &mut Mailbox<P>) {
        let keep_open = matches!(
            self.tenure,
            Tenure::Session {
                queue_between: true,
                ..
            }
        );
        if !keep_open {
            mb.accepting = false;
        }
    }

    /// Stops taking input and queues the protocol's goodbye; the rest of
    /// the close happens as the queue drains.
    fn begin_closing(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::New | Phase::Handshake | Phase::Open) {
            return;
        }
        let reason = self.reason();
        {
            let mut mb = self.conn.inner.mailbox();
            self.close_to_sends(&mut mb);
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
                CloseReason::Restart => Some(Closing::Restart),
                CloseReason::Panic => Some(Closing::InternalError),
                CloseReason::HeartbeatTimeout
                | CloseReason::FirstMessageTimeout
                | CloseReason::MessageTimeout
                | CloseReason::HandshakeTimeout => Some(Closing::Timeout),
                // The peer is gone or the socket broke: no goodbye.
                _ => None,
            };
            if let Some(closing) = closing {
                let mb = &mut *mb;
                mb.encoder
                    .encode_close(&self.conn.inner.config.protocol, &closing, &mut mb.queue);
            }
        }
        self.phase = Phase::Closing;
        self.conn.inner.publish(status::CLOSING);
        let close_timeout = self.conn.inner.config.limits.close_timeout;
        let gone = Self::presumed_gone(&reason);
        self.no_linger |= gone;
        let rare = self.rare();
        rare.handshake_deadline = None;
        rare.first_message_deadline = None;
        // Send what the socket takes now (a goodbye), but for a peer
        // presumed gone wait neither for a flush nor for its FIN.
        rare.close_deadline = Some(if gone { now } else { now + close_timeout });
    }

    /// The close deadline has passed.
    fn close_due(&self, now: Instant) -> bool {
        self.rare_ref()
            .and_then(|r| r.close_deadline)
            .is_some_and(|d| now >= d)
    }

    fn presumed_gone(reason: &CloseReason) -> bool {
        matches!(
            reason,
            CloseReason::HeartbeatTimeout
                | CloseReason::FirstMessageTimeout
                | CloseReason::MessageTimeout
                | CloseReason::HandshakeTimeout
        )
    }

    /// After a turn's writes: whether to shut down writing or close, as the
    /// close proceeds (flushed, the peer's FIN, the close deadline).
    pub fn poll_socket_action(&mut self, now: Instant) -> Option<SocketAction> {
        match self.phase {
            Phase::Closing => {
                let flushed = self.flushed && self.transport_pending == 0;
                let app_done = !self.app_busy && self.app_backlog == 0;
                if flushed && app_done {
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
                        self.emit(Event::error(ConnError::FlushTimeout));
                        self.finish(CloseReason::FlushTimeout);
                    } else {
                        self.finish(reason);
                    }
                    return Some(SocketAction::Close);
                }
                None
            }
            Phase::Lingering => {
                let stop = self.no_linger || self.conn.inner.requests() & req::NO_LINGER != 0;
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

    /// The application-visible close, once: the episode of dropped sends
    /// is reported, then `Closed` (only for a connection that reached
    /// Open). The socket may still linger after this.
    fn announce(&mut self, reason: CloseReason) {
        if self.announced {
            return;
        }
        self.announced = true;
        self.set_reason(reason);
        let reason = self.reason();
        self.conn.inner.publish(status::CLOSED);
        let dropped = {
            let mut mb = self.conn.inner.mailbox();
            self.close_to_sends(&mut mb);
            // A client may keep whole messages not yet taken by the writer
            // for its next session; bytes in flight may be half-written:
            // dropped.
            let keep = matches!(
                self.tenure,
                Tenure::Session {
                    keep_unsent: true,
                    ..
                }
            );
            if !keep {
                release(&mut mb.queue);
            }
            std::mem::take(&mut mb.dropped)
        };
        // The episode of dropped sends ends with the connection.
        if let Some(rare) = &mut self.rare {
            rare.drops_since = None;
        }
        self.report_drops(dropped);
        if self.established {
            log::debug!("connection {} closed: {reason}", self.conn.id());
            self.emit(Event::Closed(reason));
        }
    }

    /// The end: announces the close if not done yet and releases everything.
    pub(super) fn finish(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        if matches!(reason, CloseReason::FlushTimeout | CloseReason::Overload) {
            // Overrides the close that was under way, if any.
            self.rare().reason = Some(reason.clone());
        }
        self.phase = Phase::Closed;
        self.announce(reason);
        self.conn.inner.mailbox().in_flight = 0;
        if self.rbuf_lent {
            // The loop's buffer goes back at the reclaim; nothing is left.
            self.rpos = self.rend;
        } else {
            release(&mut self.rbuf);
            self.rpos = 0;
            self.rend = 0;
        }
        release(&mut self.wbuf);
        self.wpos = 0;
        release(&mut self.wire_out);
        self.awaiting_verdict = false;
        if let Some(rare) = &mut self.rare {
            // What is left to yield stays: the errors and `Closed`.
            rare.violation = None;
            rare.drops_since = None;
            rare.mem_check = None;
            rare.first_message_deadline = None;
            rare.handshake_deadline = None;
            rare.close_deadline = None;
        }
    }

    /// The memory budget's verdict on this connection (the shell asks the
    /// budget each turn, see `crate::memory::MemoryAccount`).
    #[inline]
    pub fn handle_memory(&mut self, verdict: MemoryVerdict, now: Instant) {
        if verdict == MemoryVerdict::Free && !self.mem_hold && self.rare.is_none() {
            // The common case: nothing to do.
            return;
        }
        if matches!(self.phase, Phase::Lingering | Phase::Closed) {
            self.mem_hold = false;
            return;
        }
        let check = match verdict {
            MemoryVerdict::Free => {
                self.mem_hold = false;
                None
            }
            MemoryVerdict::Hold => {
                self.mem_hold = true;
                Some(now + RECHECK)
            }
            MemoryVerdict::Watch => {
                self.mem_hold = false;
                Some(now + RECHECK)
            }
            MemoryVerdict::Close { held, budget } => {
                log::debug!(
                    "connection {} ({}): closed over the memory budget, holding {} KiB",
                    self.conn.id(),
                    self.conn.remote_addr(),
                    held >> 10
                );
                self.emit(Event::error(ConnError::Overload { held, budget }));
                self.finish(CloseReason::Overload);
                return;
            }
        };
        if check.is_some() || self.rare.is_some() {
            self.rare().mem_check = check;
        }
    }
}
