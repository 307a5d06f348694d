//! The input side of a connection's state machine: bytes in, decoded by the
//! protocol, delivered to plugins and callbacks (sync or async, in order),
//! with the handshake's hook and the violations that close.

use std::task::{Context, Poll};
use std::time::Instant;

use super::{Lifecycle, Phase, LINGER_DISCARD_MAX};
use crate::clock::{bump, monotonic_nanos};
use crate::connection::DESTROY_REQ;
use crate::error::{CloseReason, Error};
use crate::event_loop::catch;
use crate::handlers::{guard, report, MessageHandler};
use crate::memory::{release, reserve_gently};
use crate::plugin::Flow;
use crate::protocol::{Decoded, Protocol, ProtocolError, SessionClose, Wire};
use std::sync::atomic::Ordering;

impl<P: Protocol> Lifecycle<P> {
    /// Whether delivering more input must wait.
    pub(super) fn hold_delivery(&self) -> bool {
        let limits = &self.conn.endpoint().limits;
        self.conn.flags() & self.hold_mask != 0
            || self.budget == 0
            || self.mem_hold
            || self.async_queued() >= limits.async_queue
            || self.wire_out.len() >= limits.send_buffer_size
    }

    /// Bytes arrived from the peer.
    pub fn on_read(&mut self, data: &[u8], now: Instant) {
        let inner = &self.conn.inner;
        inner
            .last_active
            .store(monotonic_nanos(now), Ordering::Relaxed);
        bump(&inner.bytes_in, data.len() as u64);
        if !self.is_receiving() {
            // Lingering: whatever the peer still sends is discarded, up to
            // a bound: a peer that keeps streaming after our FIN (an
            // attacker's endless line) is not waited for.
            let discarded = {
                let rare = self.rare();
                rare.discarded += data.len();
                rare.discarded
            };
            if self.phase == Phase::Lingering && discarded > LINGER_DISCARD_MAX {
                self.finish(self.reason());
            }
            return;
        }
        if self.rpos == self.rbuf.len() {
            // Nothing buffered: decode straight from the read, keep the rest.
            let used = self.dispatch(data);
            if used < data.len() {
                self.rbuf.clear();
                self.rpos = 0;
                self.rbuf.extend_from_slice(&data[used..]);
            }
        } else {
            // Compact once per read (not per delivery: a held-back buffer is
            // consumed by moving `rpos`), then append and decode.
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            reserve_gently(&mut self.rbuf, data.len());
            self.rbuf.extend_from_slice(data);
            let buf = std::mem::take(&mut self.rbuf);
            self.rpos = self.dispatch(&buf);
            self.rbuf = buf;
        }
        self.after_dispatch();
        let max = self.conn.max_package_size();
        let left = self.rbuf.len() - self.rpos;
        if left > max && !self.rbuf_undelivered && self.is_receiving() {
            self.protocol_error(ProtocolError::TooLarge {
                len: left as u64,
                max: max as u64,
            });
            release(&mut self.rbuf);
            self.rpos = 0;
        }
    }

    pub(super) fn after_dispatch(&mut self) {
        let left = self.rbuf.len() - self.rpos;
        self.rbuf_undelivered = self.hold_delivery() && left > 0;
        if left == 0 {
            self.rpos = 0;
            if self.rbuf.capacity() > 0 {
                release(&mut self.rbuf);
            }
        }
    }

    /// Delivers buffered input held back by a pause (or a full queue).
    pub(super) fn redeliver(&mut self) {
        if !self.rbuf_undelivered || self.hold_delivery() || !self.is_receiving() {
            return;
        }
        let buf = std::mem::take(&mut self.rbuf);
        let used = self.dispatch(&buf[self.rpos..]);
        self.rbuf = buf;
        self.rpos += used;
        self.after_dispatch();
    }

    /// Decodes and acts on whole items at the front of `data`; returns the
    /// bytes consumed.
    pub(super) fn dispatch(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while !self.hold_delivery() && self.is_receiving() {
            let rest = &data[pos..];
            let mut asked = None;
            let mut wire = Wire::new(&mut self.wire_out, &mut asked);
            let decoded = self.decoder.decode(rest, &mut wire);
            let consumed = match &decoded {
                Ok(Decoded::Incomplete) => 0,
                Ok(Decoded::Message { consumed, .. })
                | Ok(Decoded::Handshake { consumed, .. })
                | Ok(Decoded::Consumed(consumed)) => *consumed,
                Err(_) => 0,
            };
            match decoded {
                Ok(Decoded::Incomplete) => {}
                Err(e) => {
                    self.protocol_error(e);
                    break;
                }
                Ok(_) if consumed == 0 || consumed > rest.len() => {
                    self.protocol_error(ProtocolError::Malformed(
                        "decoder reported an impossible length",
                    ));
                    break;
                }
                Ok(Decoded::Message { msg, .. }) => {
                    let max = self.conn.max_package_size();
                    if consumed > max {
                        self.protocol_error(ProtocolError::TooLarge {
                            len: consumed as u64,
                            max: max as u64,
                        });
                        break;
                    }
                    pos += consumed;
                    if self.phase != Phase::Open {
                        self.protocol_error(ProtocolError::Malformed(
                            "a message before the handshake finished",
                        ));
                        break;
                    }
                    self.first_message_deadline = None;
                    bump(&self.conn.inner.messages_in, 1);
                    self.budget -= 1;
                    self.deliver(msg);
                }
                Ok(Decoded::Consumed(_)) => {
                    pos += consumed;
                    self.budget -= 1;
                }
                Ok(Decoded::Handshake {
                    data: handshake, ..
                }) => {
                    pos += consumed;
                    if self.phase != Phase::Handshake {
                        self.protocol_error(ProtocolError::Malformed("a second handshake"));
                        break;
                    }
                    self.handshake_done(handshake);
                }
            }
            if let Some(close) = asked {
                self.session_close(close);
                break;
            }
            if consumed == 0 {
                break;
            }
        }
        pos
    }

    /// The protocol finished its handshake: ask the hook, then accept
    /// (and establish) or refuse.
    pub(super) fn handshake_done(&mut self, handshake: P::Handshake) {
        let conn = self.conn.clone();
        let mut verdict = Ok(());
        if let Some(hook) = &conn.endpoint().handlers.on_handshake {
            if !guard(&conn, "on_handshake", || verdict = hook(&conn, &handshake)) {
                return;
            }
        }
        let mut asked = None;
        let mut wire = Wire::new(&mut self.wire_out, &mut asked);
        match verdict {
            Ok(()) => {
                {
                    let mut ob = conn.outbox();
                    self.decoder.accept(&handshake, &mut ob.encoder, &mut wire);
                }
                if asked.is_none() {
                    self.establish();
                }
            }
            Err(reject) => {
                log::debug!(
                    "connection {} ({}): handshake refused with status {}",
                    conn.id(),
                    conn.remote_addr(),
                    reject.status
                );
                self.decoder.reject(&handshake, &reject, &mut wire);
                wire.close(SessionClose::local(reject.status, "handshake refused"));
            }
        }
        if let Some(close) = asked {
            self.session_close(close);
        }
    }

    pub(super) fn deliver(&mut self, msg: P::Message) {
        let conn = &self.conn;
        let handlers = &conn.endpoint().handlers;
        for plugin in &handlers.plugins {
            let mut flow = Flow::Continue;
            if !guard(conn, "plugin on_message", || {
                flow = plugin.on_message(conn, &msg)
            }) || flow == Flow::Consumed
            {
                return;
            }
        }
        match &handlers.on_message {
            Some(MessageHandler::Sync(f)) => {
                guard(conn, "on_message", || f(conn, msg));
            }
            Some(MessageHandler::Async(_)) => self.rare().pending.push_back(msg),
            None => {}
        }
    }

    pub(super) fn protocol_error(&mut self, e: ProtocolError) {
        let conn = &self.conn;
        log::debug!("connection {} ({}): {e}", conn.id(), conn.remote_addr());
        let err = Error::Protocol(e);
        report(conn, &err);
        conn.close_with_reason(CloseReason::Protocol);
        if let Error::Protocol(e) = err {
            self.rare().violation.get_or_insert(e);
        }
    }

    /// Runs async handlers one at a time, in order.
    pub fn poll_async(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(rare) = self.rare.as_deref_mut() else {
                return;
            };
            if rare.inflight.is_none() {
                if self.conn.flags() & DESTROY_REQ != 0 || self.budget == 0 {
                    return;
                }
                let Some(msg) = rare.pending.pop_front() else {
                    return;
                };
                let Some(MessageHandler::Async(f)) = &self.conn.endpoint().handlers.on_message
                else {
                    return;
                };
                let conn = self.conn.clone();
                self.budget -= 1;
                match catch(|| f(conn, msg)) {
                    Ok(fut) => rare.inflight = Some(fut),
                    Err(message) => {
                        self.async_panicked(message);
                        return;
                    }
                }
            }
            let Some(fut) = rare.inflight.as_mut() else {
                return;
            };
            match catch(|| fut.as_mut().poll(cx)) {
                Ok(Poll::Ready(())) => rare.inflight = None,
                Ok(Poll::Pending) => return,
                Err(message) => {
                    rare.inflight = None;
                    self.async_panicked(message);
                    return;
                }
            }
        }
    }

    pub(super) fn async_panicked(&mut self, message: String) {
        let conn = &self.conn;
        log::error!(
            "connection {}: on_message future panicked: {message}",
            conn.id()
        );
        report(
            conn,
            &Error::CallbackPanic {
                callback: "on_message (async)",
                message,
            },
        );
        conn.close_with_reason(CloseReason::Panic);
        if let Some(rare) = &mut self.rare {
            rare.pending.clear();
        }
    }
}
