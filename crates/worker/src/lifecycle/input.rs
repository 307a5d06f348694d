//! The input side of a connection's state machine: bytes in, decoded one
//! item per [`Lifecycle::poll_event`], the handshake's verdict, and the
//! violations that close.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{
    Event, Lifecycle, Phase, Verdict, ACTIONS, LINGER_DISCARD_MAX, SESSION_GROWTH_PER_TURN,
};
use crate::clock::{bump, monotonic_nanos};
use crate::error::{CloseReason, ConnError};
use crate::memory::{release, reserve_gently};
use crate::protocol::{Decoded, Decoder, Protocol, ProtocolError, SessionClose, Wire};

/// One step of `decode_next`.
enum Step<P: Protocol> {
    /// An event to yield.
    Event(Event<P>),
    /// An item without an event was consumed: decode the next.
    Next,
    /// Nothing whole yet: wait for bytes.
    Wait,
    /// Decoding stopped (a violation closes the connection).
    Stop,
}

impl<P: Protocol> Lifecycle<P> {
    /// Bytes arrived from the peer: the first `len` bytes of `buf`. When
    /// this connection holds no partial message, `buf` itself (the loop's
    /// read buffer) is lent to it until
    /// [`reclaim_read_buffer`](Self::reclaim_read_buffer): nothing is copied
    /// unless something is left over.
    pub fn handle_read(&mut self, buf: &mut Vec<u8>, len: usize, now: Instant) {
        let inner = &self.conn.inner;
        inner
            .last_active
            .store(monotonic_nanos(now), Ordering::Relaxed);
        bump(&inner.bytes_in, len as u64);
        if !self.is_receiving() {
            // Lingering: whatever the peer still sends is discarded, up to
            // a bound: a peer that keeps streaming after our FIN (an
            // attacker's endless line) is not waited for.
            let discarded = {
                let rare = self.rare();
                rare.discarded += len;
                rare.discarded
            };
            if self.phase == Phase::Lingering && discarded > LINGER_DISCARD_MAX {
                self.finish(self.reason());
            }
            return;
        }
        if self.rbuf_lent {
            // Two reads without a reclaim between them (the shell reclaims
            // after each): keep what is left; the loop makes a new buffer.
            drop(self.own_leftover());
        }
        if self.rpos == self.rend {
            // Nothing buffered: decode straight from the loop's buffer.
            release(&mut self.rbuf);
            std::mem::swap(&mut self.rbuf, buf);
            self.rpos = 0;
            self.rend = len;
            self.rbuf_lent = true;
        } else {
            // Compact once per read (deliveries only move `rpos`), then
            // append.
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            reserve_gently(&mut self.rbuf, len);
            self.rbuf.extend_from_slice(&buf[..len]);
            self.rend = self.rbuf.len();
        }
    }

    /// The read is over (its events were polled): gives the loop's buffer
    /// back into `buf`, keeping what was not decoded (a partial message,
    /// or messages a hold kept back) in a buffer of the connection's own, of
    /// exactly that size.
    pub fn reclaim_read_buffer(&mut self, buf: &mut Vec<u8>) {
        if self.rbuf_lent {
            *buf = self.own_leftover();
        }
    }

    /// Moves the unconsumed part of a lent read buffer into a buffer of the
    /// connection's own; returns the lent one.
    fn own_leftover(&mut self) -> Vec<u8> {
        self.rbuf_lent = false;
        let own = if self.rpos == self.rend {
            Vec::new()
        } else {
            self.rbuf[self.rpos..self.rend].to_vec()
        };
        let lent = std::mem::replace(&mut self.rbuf, own);
        self.rpos = 0;
        self.rend = self.rbuf.len();
        lent
    }

    /// The next event: one queued by an input, one caused by the handle's
    /// requests (a close, a full buffer), or the next decoded item (a
    /// message, the handshake) unless delivery is held back. `None` when
    /// there is nothing to yield now.
    // Inlined into the shell's event loop with `decode_next`: together they
    // are the per-message path (measured with callgrind: a call boundary
    // here cost ~40 instructions a message, a tenth of an echo's total).
    #[inline(always)]
    pub fn poll_event(&mut self, now: Instant) -> Option<Event<P>> {
        let requests = self.conn.inner.requests();
        if self.connected_due || self.rare.is_some() || requests & ACTIONS != 0 {
            return self.poll_event_slow(requests, now);
        }
        // The common case, once per message: nothing queued, no request.
        // (Decoding may queue an event: a violation's error.)
        self.decode_next(requests, now).or_else(|| self.pop_event())
    }

    fn poll_event_slow(&mut self, requests: u8, now: Instant) -> Option<Event<P>> {
        if let Some(event) = self.pop_event() {
            return Some(event);
        }
        if requests & ACTIONS != 0 {
            self.act_on_requests(requests, now);
            if let Some(event) = self.pop_event() {
                return Some(event);
            }
        }
        let decoded = self.decode_next(self.conn.inner.requests(), now);
        decoded.or_else(|| self.pop_event())
    }

    fn pop_event(&mut self) -> Option<Event<P>> {
        if self.connected_due {
            self.connected_due = false;
            return Some(Event::Connected);
        }
        self.rare.as_mut().and_then(|r| r.events.pop_front())
    }

    /// Decodes items at `rpos` until one is worth an event; consumed
    /// control items only cost budget.
    #[inline(always)]
    fn decode_next(&mut self, requests: u8, now: Instant) -> Option<Event<P>> {
        loop {
            if !self.is_receiving() || self.rpos == self.rend {
                // Nothing to decode: the decode contract makes an empty
                // buffer `Incomplete` for every decoder.
                self.held_input = false;
                return None;
            }
            if self.hold_delivery_with(requests) {
                self.held_input = true;
                return None;
            }
            let rest = &self.rbuf[self.rpos..self.rend];
            let mut asked = None;
            let protocol = &self.conn.inner.config.protocol;
            let mut wire = Wire::new(&mut self.wire_out, &mut asked);
            let decoded = self.decoder.decode(protocol, rest, &mut wire);
            let available = rest.len();
            let step = match decoded {
                // The hot path: a whole message, in the open phase, within
                // the limit.
                Ok(Decoded::Message { msg, consumed })
                    if consumed != 0
                        && consumed <= available
                        && self.phase == Phase::Open
                        && consumed <= self.conn.max_package_size() =>
                {
                    self.consume(consumed);
                    if let Some(rare) = &mut self.rare {
                        rare.first_message_deadline = None;
                    }
                    bump(&self.conn.inner.messages_in, 1);
                    self.budget -= 1;
                    if asked.is_none() {
                        // More may follow at `rpos`: the next poll decodes it.
                        self.held_input = self.rpos < self.rend;
                        return Some(Event::Message(msg));
                    }
                    Step::Event(Event::Message(msg))
                }
                Ok(Decoded::Incomplete) => {
                    self.check_partial(available, now);
                    Step::Wait
                }
                other => self.decoded_other(other, available, now),
            };
            if let Some(close) = asked {
                self.close_for(CloseReason::Session(close), now);
                return match step {
                    Step::Event(event) => Some(event),
                    _ => None,
                };
            }
            match step {
                Step::Event(event) => {
                    // More may follow at `rpos`: the next poll decodes it.
                    self.held_input = self.rpos < self.rend;
                    return Some(event);
                }
                Step::Next => {}
                Step::Wait => {
                    self.held_input = false;
                    return None;
                }
                Step::Stop => return None,
            }
        }
    }

    /// What `decode_next` does with anything but a message it can deliver
    /// at once or an incomplete item: a control item, the handshake, a
    /// violation. Out of the per-message path.
    #[inline(never)]
    fn decoded_other(
        &mut self,
        decoded: Result<Decoded<P::Message, P::Handshake>, ProtocolError>,
        available: usize,
        now: Instant,
    ) -> Step<P> {
        let consumed = match &decoded {
            Ok(Decoded::Message { consumed, .. })
            | Ok(Decoded::Handshake { consumed, .. })
            | Ok(Decoded::Consumed(consumed)) => *consumed,
            Ok(Decoded::Incomplete) | Err(_) => 0,
        };
        let violation = match decoded {
            Err(e) => e,
            Ok(Decoded::Incomplete) => return Step::Wait,
            Ok(_) if consumed == 0 || consumed > available => {
                ProtocolError::Malformed("decoder reported an impossible length")
            }
            Ok(Decoded::Message { .. }) if consumed > self.conn.max_package_size() => {
                ProtocolError::TooLarge {
                    len: consumed as u64,
                    max: self.conn.max_package_size() as u64,
                }
            }
            Ok(Decoded::Message { .. }) => {
                self.consume(consumed);
                ProtocolError::Malformed("a message before the handshake finished")
            }
            Ok(Decoded::Consumed(_)) => {
                self.consume(consumed);
                self.budget -= 1;
                // A piece of a message the session keeps counts whole.
                self.check_session_size(now);
                return Step::Next;
            }
            Ok(Decoded::Handshake { data, .. }) => {
                self.consume(consumed);
                if self.phase != Phase::Handshake {
                    ProtocolError::Malformed("a second handshake")
                } else {
                    self.awaiting_verdict = true;
                    return Step::Event(Event::Handshake(data));
                }
            }
        };
        self.protocol_error(violation, now);
        Step::Stop
    }

    /// `n` bytes at `rpos` were used; an own buffer emptied is freed.
    #[inline]
    fn consume(&mut self, n: usize) {
        self.rpos += n;
        if self.rpos == self.rend && !self.rbuf_lent {
            self.rpos = 0;
            self.rend = 0;
            if self.rbuf.capacity() > 0 {
                release(&mut self.rbuf);
            }
        }
    }

    /// The session took a piece of a message (a WebSocket fragment) into
    /// its own buffer: what it holds must stay within the message limit,
    /// and once it grew by [`SESSION_GROWTH_PER_TURN`] in this poll, the
    /// poll stops decoding so that the memory budget weighs it first.
    fn check_session_size(&mut self, now: Instant) {
        let held = self.decoder.held_bytes();
        if held > 0 {
            let available = self.rend - self.rpos;
            self.check_partial(available, now);
            let rare = self.rare();
            if rare.session_stop == 0 {
                rare.session_stop = held.saturating_add(SESSION_GROWTH_PER_TURN);
            } else if held >= rare.session_stop {
                self.budget = 0;
            }
        }
    }

    /// The decoder waits for more of a message: what it will be made of
    /// (the bytes not consumed and what the session holds) must stay
    /// within the connection's message limit.
    fn check_partial(&mut self, available: usize, now: Instant) {
        let max = self.conn.max_package_size();
        let partial = available.saturating_add(self.decoder.held_bytes());
        if partial > max {
            self.protocol_error(
                ProtocolError::TooLarge {
                    len: partial as u64,
                    max: max as u64,
                },
                now,
            );
            self.rpos = self.rend;
            if !self.rbuf_lent {
                release(&mut self.rbuf);
                self.rpos = 0;
                self.rend = 0;
            }
        }
    }

    /// The hook's verdict on the handshake yielded by
    /// [`Event::Handshake`]: the protocol writes its acceptance (then
    /// `Connected`) or its refusal (then the connection closes after
    /// flushing it).
    pub fn handle_verdict(&mut self, handshake: P::Handshake, verdict: Verdict, now: Instant) {
        self.awaiting_verdict = false;
        if self.phase != Phase::Handshake {
            return;
        }
        let mut asked = None;
        let protocol = &self.conn.inner.config.protocol;
        let mut wire = Wire::new(&mut self.wire_out, &mut asked);
        match verdict {
            Verdict::Accept => {
                {
                    let mut mb = self.conn.inner.mailbox();
                    self.decoder
                        .accept(protocol, &handshake, &mut mb.encoder, &mut wire);
                }
                if asked.is_none() {
                    self.establish();
                }
            }
            Verdict::Reject(reject) => {
                log::debug!(
                    "connection {} ({}): handshake refused with status {}",
                    self.conn.id(),
                    self.conn.remote_addr(),
                    reject.status
                );
                self.decoder
                    .reject(protocol, &handshake, &reject, &mut wire);
                wire.close(SessionClose::local(reject.status, "handshake refused"));
            }
            Verdict::Abort => {}
        }
        if let Some(close) = asked {
            self.close_for(CloseReason::Session(close), now);
        }
    }

    /// The peer violated the protocol: report it and close with the
    /// protocol's goodbye for the violation.
    pub(super) fn protocol_error(&mut self, e: ProtocolError, now: Instant) {
        log::debug!(
            "connection {} ({}): {e}",
            self.conn.id(),
            self.conn.remote_addr()
        );
        // The goodbye is written from the violation when closing starts;
        // then the error goes to the application.
        self.rare().violation.get_or_insert(e);
        self.close_for(CloseReason::Protocol, now);
        if let Some(e) = self.rare().violation.take() {
            self.emit(Event::error(ConnError::Protocol(e)));
        }
    }
}
