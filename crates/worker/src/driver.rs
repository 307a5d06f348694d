//! The task that drives one connection: read, decode, dispatch, write, close.
//!
//! One future per connection, polled by the loop's executor. A poll reads
//! into the loop's shared 64 KiB buffer, decodes and dispatches every whole
//! message, then writes everything the callbacks queued in one `write`, so
//! replies to a batch of pipelined requests leave in one syscall. Partial
//! messages are copied into a per-connection buffer that is freed as soon as
//! it empties, so an idle connection holds no buffer at all.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::reactor::Io;

use crate::connection::{
    bump, mono_nanos, Connection, LocalBoxFuture, MessageHandler, CLOSE_REQ, DESTROY_REQ, FINISHED,
    NO_LINGER, PAUSED,
};
use crate::error::{CloseReason, Error};
use crate::event_loop::{catch, LoopCtx};
use crate::plugin::Flow;
use crate::protocol::{Decoded, Protocol, ProtocolError};

/// Reads per poll before yielding to other connections.
const READS_PER_POLL: usize = 8;
/// Buffers larger than this are released once empty.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Open,
    /// Flushing; then half-closed, waiting for the peer's FIN.
    Closing {
        shut: bool,
    },
    Done,
}

pub(crate) struct ConnDriver<P: Protocol> {
    conn: Connection<P>,
    stream: Option<Io<TcpStream>>,
    decoder: P,
    ctx: Rc<LoopCtx>,
    state: State,
    /// Unconsumed inbound bytes (a partial message), empty and unallocated
    /// most of the time.
    rbuf: Vec<u8>,
    /// `rbuf` may hold whole messages not yet delivered (reading was paused).
    rbuf_undelivered: bool,
    /// Bytes being written, taken from the outbox.
    wbuf: Vec<u8>,
    wpos: usize,
    write_blocked: bool,
    close_timer: Option<async_io::Timer>,
    pending: VecDeque<P::Message>,
    inflight: Option<LocalBoxFuture>,
    /// `on_close` ran.
    announced: bool,
    /// Deadline for the first whole message, if the worker sets one.
    first_timer: Option<async_io::Timer>,
    /// A read returned 0: the peer's FIN came and nothing is left unread.
    peer_eof: bool,
}

enum ReadOutcome {
    /// Would block, or reading is not wanted now.
    Idle,
    /// The read budget is used up while data may remain.
    Budget,
    Eof,
    Failed(io::Error),
}

impl<P: Protocol> ConnDriver<P> {
    pub fn new(conn: Connection<P>, stream: Io<TcpStream>, ctx: Rc<LoopCtx>) -> Self {
        let decoder = conn.endpoint().protocol.clone();
        let first_timer = conn_first_timer(&conn);
        // A client's supervisor accounts for its sessions.
        if !conn.is_client() {
            ctx.live.set(ctx.live.get() + 1);
        }
        conn.endpoint().tasks.fetch_add(1, Ordering::Relaxed);
        ConnDriver {
            conn,
            stream: Some(stream),
            decoder,
            ctx,
            state: State::Init,
            rbuf: Vec::new(),
            rbuf_undelivered: false,
            wbuf: Vec::new(),
            wpos: 0,
            write_blocked: false,
            close_timer: None,
            pending: VecDeque::new(),
            inflight: None,
            announced: false,
            first_timer,
            peer_eof: false,
        }
    }

    /// Runs a user callback; a panic is logged, reported and closes the connection.
    fn guard(conn: &Connection<P>, callback: &'static str, f: impl FnOnce()) -> bool {
        match catch(f) {
            Ok(()) => true,
            Err(message) => {
                log::error!(
                    "connection {} ({}): {callback} panicked: {message}",
                    conn.id(),
                    conn.remote_addr()
                );
                report(conn, &Error::CallbackPanic { callback, message });
                conn.close_with_reason(CloseReason::Panic);
                false
            }
        }
    }

    fn begin_closing(&mut self) {
        if !matches!(self.state, State::Open | State::Init) {
            return;
        }
        let reason = self.conn.close_reason().unwrap_or(CloseReason::Local);
        self.conn.outbox().closed = true;
        if reason != CloseReason::PeerClosed {
            self.pending.clear();
        }
        self.state = State::Closing { shut: false };
        if matches!(
            reason,
            CloseReason::HeartbeatTimeout | CloseReason::FirstMessageTimeout
        ) {
            // The peer is presumed gone: send what the socket takes now (a
            // goodbye), but neither wait for a flush nor for its FIN.
            self.conn.inner.flags.fetch_or(NO_LINGER, Ordering::AcqRel);
            self.close_timer = Some(async_io::Timer::after(std::time::Duration::ZERO));
            return;
        }
        let timeout = self.conn.endpoint().limits.close_timeout;
        self.close_timer = Some(async_io::Timer::after(timeout));
    }

    /// The application-visible close: runs `on_close` exactly once and
    /// removes the connection from the map. The socket may still linger
    /// (half-closed, waiting for the peer's FIN) after this.
    fn announce(&mut self, reason: CloseReason) {
        if self.announced {
            return;
        }
        self.announced = true;
        let conn = self.conn.clone();
        conn.set_reason(reason);
        let reason = conn.close_reason().unwrap_or(CloseReason::Local);
        conn.inner.flags.fetch_or(FINISHED, Ordering::AcqRel);
        {
            let mut ob = conn.outbox();
            ob.closed = true;
            // A client keeps whole messages not yet taken by the writer for
            // its next session; bytes in flight may be half-written: dropped.
            if !conn.is_client() {
                ob.buf = Vec::new();
            }
        }
        self.pending.clear();
        self.inflight = None;
        log::debug!("connection {} closed: {reason}", conn.id());
        for plugin in &conn.endpoint().handlers.plugins {
            if let Err(msg) = catch(|| plugin.on_close(&conn, &reason)) {
                log::error!("connection {}: plugin on_close panicked: {msg}", conn.id());
            }
        }
        if let Some(cb) = conn.endpoint().handlers.on_close.clone() {
            if let Err(msg) = catch(|| cb(&conn, &reason)) {
                log::error!("connection {}: on_close panicked: {msg}", conn.id());
            }
        }
        if !conn.is_client() {
            conn.endpoint().connections.remove(&conn.id());
        }
    }

    /// Final step: announces the close if not done yet and drops the socket.
    fn finish(&mut self, reason: CloseReason) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.announce(reason);
        self.conn.endpoint().tasks.fetch_sub(1, Ordering::Relaxed);
        self.conn.outbox().in_flight = 0;
        self.stream = None;
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.close_timer = None;
        if !self.conn.is_client() {
            self.ctx.closers.borrow_mut().remove(&self.conn.id());
            self.ctx.conn_finished();
        }
    }

    /// A socket error: report it through `on_error` and close at once.
    fn fail(&mut self, op: &str, e: io::Error) {
        log::debug!("connection {}: {op} failed: {e}", self.conn.id());
        let kind = e.kind();
        self.conn.set_reason(CloseReason::Io(kind));
        report(&self.conn, &Error::Io(e));
        self.finish(CloseReason::Io(kind));
    }

    /// Fires `on_buffer_full` and reports dropped sends, as flagged by `send`.
    fn fire_send_events(&mut self) {
        let (full, dropped) = {
            let mut ob = self.conn.outbox();
            let full = std::mem::take(&mut ob.full_pending);
            (full, std::mem::take(&mut ob.dropped))
        };
        let conn = &self.conn;
        if full {
            fire_buffer_full(conn);
        }
        if dropped > 0 {
            let limit = conn.endpoint().limits.send_buffer_size;
            log::debug!(
                "connection {}: {dropped} send(s) dropped, buffer full",
                conn.id()
            );
            report(conn, &Error::SendBufferFull { dropped, limit });
        }
    }

    /// Whether delivering more messages must wait.
    fn hold_delivery(&self) -> bool {
        self.conn.flags() & (CLOSE_REQ | DESTROY_REQ | PAUSED) != 0
            || self.pending.len() >= self.conn.endpoint().limits.async_queue
    }

    /// Decodes and delivers whole messages from `data`; returns bytes consumed.
    fn dispatch(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        while !self.hold_delivery() {
            match self.decoder.decode(&data[pos..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Message { msg, consumed }) => {
                    if consumed == 0 || consumed > data.len() - pos {
                        self.protocol_error(ProtocolError::Malformed(
                            "decoder reported an impossible length",
                        ));
                        break;
                    }
                    let max = self.conn.max_package_size();
                    if consumed > max {
                        self.protocol_error(ProtocolError::TooLarge {
                            len: consumed as u64,
                            max: max as u64,
                        });
                        break;
                    }
                    pos += consumed;
                    self.first_timer = None;
                    bump(&self.conn.inner.messages_in, 1);
                    self.deliver(msg);
                }
                Err(e) => {
                    self.protocol_error(e);
                    break;
                }
            }
        }
        pos
    }

    fn deliver(&mut self, msg: P::Message) {
        let conn = &self.conn;
        for plugin in &conn.endpoint().handlers.plugins {
            let mut flow = Flow::Continue;
            if !Self::guard(conn, "plugin on_message", || {
                flow = plugin.on_message(conn, &msg)
            }) || flow == Flow::Consumed
            {
                return;
            }
        }
        match &conn.endpoint().handlers.on_message {
            Some(MessageHandler::Sync(f)) => {
                Self::guard(conn, "on_message", || f(conn, msg));
            }
            Some(MessageHandler::Async(_)) => self.pending.push_back(msg),
            None => {}
        }
    }

    fn protocol_error(&mut self, e: ProtocolError) {
        let conn = &self.conn;
        log::debug!("connection {} ({}): {e}", conn.id(), conn.remote_addr());
        report(conn, &Error::Protocol(e));
        conn.close_with_reason(CloseReason::Protocol);
    }

    /// Delivers buffered messages held back by a pause.
    fn redeliver(&mut self) {
        if !self.rbuf_undelivered || self.hold_delivery() {
            return;
        }
        let buf = std::mem::take(&mut self.rbuf);
        let used = self.dispatch(&buf);
        self.rbuf = buf;
        self.rbuf.drain(..used);
        self.rbuf_undelivered = self.hold_delivery() && !self.rbuf.is_empty();
        self.release_rbuf();
    }

    fn release_rbuf(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = Vec::new();
        }
    }

    fn read_phase(&mut self, cx: &mut Context<'_>) -> ReadOutcome {
        let mut reads = 0;
        loop {
            if self.state != State::Open || self.hold_delivery() {
                return ReadOutcome::Idle;
            }
            let Some(stream) = self.stream.as_ref() else {
                return ReadOutcome::Idle;
            };
            // Read only when the reactor says the socket may have bytes.
            // After a read that drained it, this registers for the next
            // edge (the reactor took the waker that brought us here);
            // `Ready` means one already came.
            match stream.poll_readable(cx) {
                Poll::Pending => return ReadOutcome::Idle,
                Poll::Ready(Err(e)) => return ReadOutcome::Failed(e),
                Poll::Ready(Ok(())) => {}
            }
            if reads == READS_PER_POLL {
                return ReadOutcome::Budget;
            }
            reads += 1;
            let mut scratch = self.ctx.take_scratch();
            let res = std::io::Read::read(&mut stream.get_ref(), &mut scratch);
            let n = match res {
                Ok(0) => {
                    self.ctx.put_scratch(scratch);
                    return ReadOutcome::Eof;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stream.clear_readable();
                    self.ctx.put_scratch(scratch);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.ctx.put_scratch(scratch);
                    continue;
                }
                Err(e) => {
                    self.ctx.put_scratch(scratch);
                    return ReadOutcome::Failed(e);
                }
            };
            // A short read drained the socket: wait for the next edge instead
            // of reading again into an EAGAIN. Bytes (or a FIN) that arrive
            // after this read raise a new edge (epoll signals every arrival);
            // a FIN that came before it does not, so then read on to the 0.
            let drained = n < scratch.len() && stream.short_read_drains();
            if drained {
                stream.clear_readable();
            }
            let inner = &self.conn.inner;
            inner
                .last_active
                .store(mono_nanos(Instant::now()), Ordering::Relaxed);
            bump(&inner.bytes_in, n as u64);
            if self.rbuf.is_empty() {
                let used = self.dispatch(&scratch[..n]);
                self.rbuf.extend_from_slice(&scratch[used..n]);
                self.ctx.put_scratch(scratch);
            } else {
                self.rbuf.extend_from_slice(&scratch[..n]);
                self.ctx.put_scratch(scratch);
                let buf = std::mem::take(&mut self.rbuf);
                let used = self.dispatch(&buf);
                self.rbuf = buf;
                self.rbuf.drain(..used);
            }
            self.rbuf_undelivered = self.hold_delivery() && !self.rbuf.is_empty();
            self.release_rbuf();
            let max = self.conn.max_package_size();
            if self.rbuf.len() > max && !self.rbuf_undelivered {
                self.protocol_error(ProtocolError::TooLarge {
                    len: self.rbuf.len() as u64,
                    max: max as u64,
                });
                self.rbuf = Vec::new();
            }
        }
    }

    /// Runs async handlers one at a time, in order.
    fn poll_async(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.inflight.is_none() {
                if self.conn.flags() & DESTROY_REQ != 0 {
                    return;
                }
                let Some(msg) = self.pending.pop_front() else {
                    return;
                };
                let Some(MessageHandler::Async(f)) =
                    self.conn.endpoint().handlers.on_message.clone()
                else {
                    return;
                };
                let conn = self.conn.clone();
                match catch(|| f(conn, msg)) {
                    Ok(fut) => self.inflight = Some(fut),
                    Err(message) => {
                        self.async_panicked(message);
                        return;
                    }
                }
            }
            let fut = self.inflight.as_mut().expect("set above");
            match catch(|| fut.as_mut().poll(cx)) {
                Ok(Poll::Ready(())) => self.inflight = None,
                Ok(Poll::Pending) => return,
                Err(message) => {
                    self.inflight = None;
                    self.async_panicked(message);
                    return;
                }
            }
        }
    }

    fn async_panicked(&mut self, message: String) {
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
        self.pending.clear();
    }

    /// Writes queued bytes until done or the socket would block.
    /// Returns whether everything queued has been written.
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(true);
        };
        let mut wrote = 0u64;
        let mut calls = 0u64;
        let mut drained = false;
        let result = loop {
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
                let mut ob = self.conn.outbox();
                ob.in_flight = 0;
                if ob.buf.is_empty() {
                    if ob.buf.capacity() > KEEP_CAPACITY {
                        ob.buf = Vec::new();
                    }
                    if ob.full {
                        ob.full = false;
                        drained = true;
                    }
                    break Ok(true);
                }
                std::mem::swap(&mut ob.buf, &mut self.wbuf);
                ob.in_flight = self.wbuf.len();
            }
            calls += 1;
            match stream.poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    wrote += n as u64;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => {
                    self.conn.outbox().in_flight = self.wbuf.len() - self.wpos;
                    self.write_blocked = true;
                    break Ok(false);
                }
            }
        };
        if wrote > 0 {
            let inner = &self.conn.inner;
            bump(&inner.bytes_out, wrote);
            bump(&inner.write_calls, calls);
        }
        if matches!(result, Ok(true)) {
            self.write_blocked = false;
            if self.wbuf.capacity() > KEEP_CAPACITY {
                self.wbuf = Vec::new();
            }
        }
        if drained {
            let conn = &self.conn;
            if let Some(cb) = conn.endpoint().handlers.on_buffer_drain.clone() {
                Self::guard(conn, "on_buffer_drain", || cb(conn));
            }
        }
        result
    }

    /// Closing: once flushed, half-close and wait for the peer's FIN so the
    /// last bytes are not lost to a reset; give up at the close timeout.
    fn poll_closing(&mut self, cx: &mut Context<'_>, flushed: bool) -> Poll<()> {
        let State::Closing { shut } = self.state else {
            return Poll::Pending;
        };
        let reason = self.conn.close_reason().unwrap_or(CloseReason::Local);
        if flushed && self.inflight.is_none() && self.pending.is_empty() {
            let Some(stream) = self.stream.as_ref() else {
                self.finish(reason);
                return Poll::Ready(());
            };
            if self.peer_eof {
                // The peer's FIN is in and nothing is left unread: closing
                // the socket sends our FIN after the flushed bytes, with no
                // reset to fear, so neither half-close nor linger is needed.
                self.stream = None;
                self.finish(reason);
                return Poll::Ready(());
            }
            if !shut {
                let _ = stream.get_ref().shutdown(Shutdown::Write);
                self.state = State::Closing { shut: true };
                // Everything was sent: the application sees the close now,
                // while the socket waits (bounded) for the peer's FIN.
                self.announce(reason.clone());
                if !self.conn.is_client() {
                    // Out of the map now: let a stopping loop still end the linger.
                    let c = self.conn.clone();
                    self.ctx.closers.borrow_mut().insert(
                        c.id(),
                        Box::new(move || {
                            c.inner.flags.fetch_or(NO_LINGER, Ordering::AcqRel);
                            c.inner.waker.wake();
                        }),
                    );
                }
            }
            let Some(stream) = self.stream.as_ref() else {
                self.finish(reason);
                return Poll::Ready(());
            };
            // Discard whatever the peer still sends until it closes.
            let mut scratch = self.ctx.take_scratch();
            let mut done = false;
            for _ in 0..READS_PER_POLL {
                match stream.poll_read(cx, &mut scratch) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        done = true;
                        break;
                    }
                    Poll::Ready(Ok(_)) => cx.waker().wake_by_ref(),
                    Poll::Pending => break,
                }
            }
            self.ctx.put_scratch(scratch);
            // When the worker stops, do not wait for peers to close: what
            // they sent is read, so dropping the socket sends a FIN, not a reset.
            if done || self.conn.flags() & NO_LINGER != 0 {
                self.finish(reason);
                return Poll::Ready(());
            }
        }
        if let Some(t) = self.close_timer.as_mut() {
            if Pin::new(t).poll(cx).is_ready() {
                let presumed_gone = matches!(
                    reason,
                    CloseReason::HeartbeatTimeout | CloseReason::FirstMessageTimeout
                );
                if !flushed && !presumed_gone {
                    let conn = &self.conn;
                    log::debug!("connection {}: close timed out with data unsent", conn.id());
                    report(conn, &Error::FlushTimeout);
                }
                self.finish(reason);
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

fn conn_first_timer<P: Protocol>(conn: &Connection<P>) -> Option<async_io::Timer> {
    let limits = &conn.endpoint().limits;
    limits.first_message_timeout.map(async_io::Timer::after)
}

/// Calls `on_buffer_full`, guarding against a panic in it.
pub(crate) fn fire_buffer_full<P: Protocol>(conn: &Connection<P>) {
    if let Some(cb) = conn.endpoint().handlers.on_buffer_full.clone() {
        ConnDriver::<P>::guard(conn, "on_buffer_full", || cb(conn));
    }
}

/// Calls `on_error`, guarding against a panic in it.
pub(crate) fn report<P: Protocol>(conn: &Connection<P>, err: &Error) {
    if let Some(cb) = conn.endpoint().handlers.on_error.clone() {
        if let Err(msg) = catch(|| cb(conn, err)) {
            log::error!("connection {}: on_error panicked: {msg}", conn.id());
        }
    }
}

// No field is ever pinned in place: the decoder and messages are plain
// values and the in-flight future is boxed.
impl<P: Protocol> Unpin for ConnDriver<P> {}

impl<P: Protocol> Future for ConnDriver<P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.state == State::Done {
            return Poll::Ready(());
        }
        this.conn.inner.waker.register(cx.waker());
        this.conn.outbox().polling = true;
        if this.state == State::Init {
            this.state = State::Open;
            let conn = this.conn.clone();
            let mut ok = true;
            for plugin in &conn.endpoint().handlers.plugins {
                ok = ok && Self::guard(&conn, "plugin on_connect", || plugin.on_connect(&conn));
            }
            if let Some(cb) = conn.endpoint().handlers.on_connect.clone() {
                if ok {
                    Self::guard(&conn, "on_connect", || cb(&conn));
                }
            }
        }
        loop {
            let flags = this.conn.flags();
            if flags & DESTROY_REQ != 0 {
                this.finish(CloseReason::Destroyed);
                return Poll::Ready(());
            }
            if flags & CLOSE_REQ != 0 {
                this.begin_closing();
            }
            if let Some(t) = this.first_timer.as_mut() {
                if Pin::new(t).poll(cx).is_ready() {
                    this.first_timer = None;
                    log::debug!(
                        "connection {}: no message within the first-message timeout",
                        this.conn.id()
                    );
                    this.conn
                        .close_with_reason(CloseReason::FirstMessageTimeout);
                    continue;
                }
            }
            this.fire_send_events();
            this.redeliver();
            this.poll_async(cx);
            let mut yield_now = false;
            match this.read_phase(cx) {
                ReadOutcome::Idle => {}
                ReadOutcome::Budget => yield_now = true,
                ReadOutcome::Eof => {
                    this.peer_eof = true;
                    this.conn.set_reason(CloseReason::PeerClosed);
                    this.begin_closing();
                }
                ReadOutcome::Failed(e) => {
                    this.fail("read", e);
                    return Poll::Ready(());
                }
            }
            this.poll_async(cx);
            if this.conn.flags() & DESTROY_REQ != 0 {
                continue;
            }
            let flushed = match this.flush(cx) {
                Ok(f) => f,
                Err(e) => {
                    this.fail("write", e);
                    return Poll::Ready(());
                }
            };
            if this.conn.flags() & CLOSE_REQ != 0 && this.state == State::Open {
                continue;
            }
            if matches!(this.state, State::Closing { .. })
                && this.poll_closing(cx, flushed).is_ready()
            {
                return Poll::Ready(());
            }
            // Sleep only if nothing new arrived while we were busy.
            let mut ob = this.conn.outbox();
            let more = (!ob.buf.is_empty() && !this.write_blocked)
                || ob.full_pending
                || ob.dropped > 0
                || this.conn.flags() != flags
                || (this.inflight.is_none() && !this.pending.is_empty());
            if more && !yield_now {
                continue;
            }
            ob.polling = false;
            drop(ob);
            if yield_now || more {
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}

impl<P: Protocol> Drop for ConnDriver<P> {
    fn drop(&mut self) {
        // The executor dropped a live task (the loop is ending): on_close
        // still runs exactly once.
        if self.state != State::Done {
            self.finish(CloseReason::WorkerStopped);
        }
    }
}
