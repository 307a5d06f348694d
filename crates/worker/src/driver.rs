//! The I/O shell around a connection's state machine: one task per
//! connection that feeds `crate::lifecycle::Lifecycle` from a real socket
//! and hands the events it yields to `crate::dispatch::Dispatcher`.
//!
//! A poll reads through the connection's `Transport` into the loop's shared
//! 64 KiB buffer and lends it to the state machine, drains its events (each
//! dispatched to the plugins and callbacks before the next is decoded), then
//! writes everything the callbacks queued in one `write`, so replies to a
//! batch of pipelined requests leave in one syscall. Everything else
//! (phases, requests, deadlines, episodes) is the state machine's; this file
//! only moves bytes and events, keeps the deadline timer armed, charges the
//! memory budget and decides when the task sleeps.

use std::future::Future;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::connection::Connection;
use crate::dispatch::{Dispatcher, Site};
use crate::event_loop::{LoopCtx, Resident, Sleep};
use crate::lifecycle::{Lifecycle, Phase, SocketAction, Tenure};
use crate::mailbox::req;
use crate::memory::MemoryAccount;
use crate::protocol::Protocol;
use crate::reactor::Io;
use crate::stats::Retired;
use crate::transport::{Received, Transport};

/// Reads per poll before yielding to other connections.
const READS_PER_POLL: usize = 8;

/// Why a turn's reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadStop {
    /// Nothing more to read now (a read is registered), or the socket is done.
    Idle,
    /// The read budget is used up, with data possibly left.
    Budget,
    /// The loop's read budget for this pass was spent before this
    /// connection read anything: it goes first in the next pass.
    Starved,
    /// Input is held back: nothing was registered for the next read.
    Held,
}

/// The task of one connection (a server connection, or one session of a
/// client connection).
pub(crate) struct ConnDriver<P: Protocol, T: Transport> {
    core: Lifecycle<P>,
    dispatcher: Dispatcher<P>,
    memory: MemoryAccount,
    stream: Option<Io<TcpStream>>,
    transport: T,
    resident: Resident,
    deadline: Sleep,
}

impl<P: Protocol, T: Transport> ConnDriver<P, T> {
    /// The task of `conn` over `stream`; counted as an open socket of the
    /// site's endpoint until it ends.
    pub fn new(
        conn: Connection<P>,
        tenure: Tenure,
        site: &Arc<Site<P>>,
        stream: Io<TcpStream>,
        transport: T,
        ctx: &std::rc::Rc<LoopCtx>,
    ) -> Self {
        site.endpoint.sockets.fetch_add(1, Ordering::Relaxed);
        ctx.counters.socket_opened();
        ConnDriver {
            core: Lifecycle::new(conn, tenure),
            dispatcher: Dispatcher::new(site.clone(), tenure == Tenure::Whole),
            memory: MemoryAccount::default(),
            stream: Some(stream),
            transport,
            resident: Resident::new(ctx),
            deadline: Sleep::never(),
        }
    }

    /// Hands every event the state machine has now to the dispatcher, in
    /// order, and feeds back what dispatching asks (a handshake verdict)
    /// and the async handler's backlog.
    #[inline]
    fn pump(&mut self, now: Instant) {
        if self.core.has_work() {
            self.dispatcher.drain(&mut self.core, now);
        }
    }

    /// Runs the async handler, then what it changed.
    fn run_async(&mut self, cx: &mut Context<'_>, now: Instant) {
        if !self.dispatcher.has_async_work() {
            return;
        }
        self.dispatcher.poll_async(self.core.conn(), cx);
        let (queued, busy) = self.dispatcher.app_backlog();
        self.core.set_app_backlog(queued, busy);
        self.pump(now);
    }

    /// Reads while the core wants input and the socket has some.
    fn read(&mut self, cx: &mut Context<'_>, now: Instant) -> ReadStop {
        let mut reads = 0;
        let ctx = self.resident.ctx().clone();
        loop {
            // Before the protocol starts, only the transport's own
            // handshake (TLS) wants bytes; once it is done, the protocol.
            self.start_when_ready(now);
            let wanted = match self.core.phase() {
                Phase::New => self.transport.is_handshaking(),
                _ => self.core.wants_read(),
            };
            if !wanted {
                // Input is held back (a pause, a full send buffer, the
                // async queue): no read and so no wake-up is registered;
                // the turn must look again if the hold lifts before it ends.
                return ReadStop::Held;
            }
            let Some(stream) = self.stream.as_ref() else {
                return ReadStop::Idle;
            };
            // Read only when the reactor says the socket may have bytes;
            // `Pending` registers for the next edge.
            match stream.poll_readable(cx) {
                Poll::Pending => return ReadStop::Idle,
                Poll::Ready(Err(e)) => {
                    self.core.handle_io_error("read", e);
                    return ReadStop::Idle;
                }
                Poll::Ready(Ok(())) => {}
            }
            if reads == READS_PER_POLL {
                return ReadStop::Budget;
            }
            if !ctx.may_read() {
                // The loop read its fill for this pass: let it look at its
                // sockets (a healthy client's ping) before reading more.
                return if reads == 0 {
                    ReadStop::Starved
                } else {
                    ReadStop::Budget
                };
            }
            reads += 1;
            let mut scratch = ctx.take_scratch();
            let res = self.transport.read(stream, &mut scratch);
            let go_on = match res {
                Ok(Received::Data(n)) => {
                    ctx.spend_read(n);
                    // Application bytes can come in the same read as the
                    // end of the transport's handshake: start first.
                    self.start_when_ready(now);
                    self.core.handle_read(&mut scratch, n, now);
                    self.pump(now);
                    self.core.reclaim_read_buffer(&mut scratch);
                    true
                }
                Ok(Received::Nothing | Received::WouldBlock) => true,
                Ok(Received::Eof) => {
                    if self.transport.take_truncation() {
                        self.core.handle_truncation();
                    }
                    self.core.handle_eof(now);
                    false
                }
                Err(e) => {
                    self.core.handle_io_error("read", e);
                    false
                }
            };
            ctx.put_scratch(scratch);
            if !go_on {
                return ReadStop::Idle;
            }
        }
    }

    /// Writes what the core has to send until done or the socket is full.
    fn write(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(stream) = self.stream.as_ref() else {
                return;
            };
            let Some(bytes) = self.core.poll_transmit() else {
                break;
            };
            match self.transport.write(stream, cx, bytes) {
                Poll::Ready(Ok(0)) => {
                    self.core
                        .handle_io_error("write", io::ErrorKind::WriteZero.into());
                    return;
                }
                Poll::Ready(Ok(n)) => self.core.handle_written(n),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    self.core.handle_io_error("write", e);
                    return;
                }
                Poll::Pending => {
                    self.core.set_transport_pending(self.transport.pending());
                    self.core.handle_write_blocked();
                    return;
                }
            }
        }
        // What the transport itself holds (TLS records, its handshake).
        if let Some(stream) = self.stream.as_ref() {
            if let Poll::Ready(Err(e)) = self.transport.poll_flush(stream, cx) {
                self.core.handle_io_error("write", e);
                return;
            }
        }
        self.core.set_transport_pending(self.transport.pending());
    }

    /// Starts the protocol once the transport's own handshake is done (at
    /// once for plain TCP); until then its deadline runs.
    fn start_when_ready(&mut self, now: Instant) {
        if self.core.phase() != Phase::New {
            return;
        }
        if self.transport.is_handshaking() {
            self.core.expect_transport_handshake(now);
        } else {
            self.core.start(now);
        }
    }

    /// Keeps a stopping loop able to close this connection. A server
    /// connection in the endpoint's map is closed by the worker's walk of
    /// the map, so it needs no closer of its own (this keeps an idle
    /// connection small); out of the map (handshaking, lingering after its
    /// close) it leaves one. A client session is closed through its
    /// supervisor's closer.
    fn stay_reachable_on_stop(&mut self) {
        let needs_closer = self.core.tenure() == Tenure::Whole && !self.dispatcher.in_map();
        if needs_closer == self.resident.has_closer() {
            return;
        }
        if needs_closer {
            let conn = self.core.conn().clone();
            self.resident.on_stop(move || conn.close_for_stop());
        } else {
            self.resident.clear_on_stop();
        }
    }

    fn closed(&mut self) -> Poll<()> {
        self.memory
            .charge(&self.dispatcher.site().endpoint.memory, 0, Instant::now());
        if let Some(stream) = self.stream.as_ref() {
            self.transport.close(stream);
        }
        self.stream = None;
        self.deadline.set(None);
        Poll::Ready(())
    }
}

// No field is ever pinned in place: the core and the sleep are plain
// values and the in-flight future is boxed.
impl<P: Protocol, T: Transport> Unpin for ConnDriver<P, T> {}

impl<P: Protocol, T: Transport> Future for ConnDriver<P, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.core.is_closed() {
            return this.closed();
        }
        let inner = &this.core.conn().inner;
        if this.resident.ctx().is_stopping() && inner.requests() & req::NO_LINGER == 0 {
            // Spawned or handshaking when the stop came: close now.
            this.core.conn().close_for_stop();
        }
        let mut now = Instant::now();
        inner.waker.register(cx.waker());
        inner.mailbox().polling = true;
        this.core.begin_turn();
        this.start_when_ready(now);
        loop {
            let requests = this.core.conn().inner.requests();
            let verdict = this
                .memory
                .verdict(&this.dispatcher.site().endpoint.memory, now);
            this.core.handle_memory(verdict, now);
            this.core.handle_turn(now);
            this.pump(now);
            if this.core.is_closed() {
                return this.closed();
            }
            this.run_async(cx, now);
            let read_stop = this.read(cx, now);
            this.start_when_ready(now);
            this.pump(now);
            this.run_async(cx, now);
            if this.core.conn().inner.requests() & req::DESTROY != 0 && !this.core.is_closed() {
                continue;
            }
            this.write(cx);
            this.pump(now);
            match this.core.poll_socket_action(now) {
                Some(SocketAction::Close) => {
                    this.pump(now);
                    return this.closed();
                }
                Some(SocketAction::Shutdown) => {
                    this.pump(now);
                    if let Some(stream) = this.stream.as_ref() {
                        let _ = this.transport.shutdown(stream);
                    }
                    continue;
                }
                None => {}
            }
            // Out of reads or messages for this poll: let the loop's other
            // tasks run, and come back (input may be left undelivered).
            let yield_now = matches!(read_stop, ReadStop::Budget | ReadStop::Starved)
                || this.core.budget_spent();
            // A hold that lifted during this turn (the send buffer drained
            // in the write above, say) left no read registered: read now.
            if read_stop == ReadStop::Held && !yield_now && this.core.wants_read() {
                continue;
            }
            this.deadline.set(this.core.poll_deadline());
            if Pin::new(&mut this.deadline).poll(cx).is_ready() {
                now = Instant::now();
                continue;
            }
            let end = this.core.end_turn(requests, yield_now);
            let budget = &this.dispatcher.site().endpoint.memory;
            this.memory.charge(budget, end.held, now);
            if end.more {
                continue;
            }
            if read_stop == ReadStop::Starved {
                this.resident.ctx().defer_starved(cx.waker());
            } else if yield_now {
                this.resident.ctx().defer(cx.waker());
            }
            this.stay_reachable_on_stop();
            return Poll::Pending;
        }
    }
}

impl<P: Protocol, T: Transport> Drop for ConnDriver<P, T> {
    fn drop(&mut self) {
        // Dropped alive (the loop is ending): `on_close` still runs once.
        if !self.core.is_closed() {
            self.core.abandon();
            self.pump(Instant::now());
            self.memory
                .charge(&self.dispatcher.site().endpoint.memory, 0, Instant::now());
        }
        let endpoint = &self.dispatcher.site().endpoint;
        endpoint.sockets.fetch_sub(1, Ordering::Relaxed);
        let conn = self.core.conn();
        let stats = conn.stats();
        let totals = Retired {
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            messages_in: stats.messages_in,
            messages_out: stats.messages_out,
            buffer_full: stats.buffer_full,
        };
        self.resident
            .ctx()
            .counters
            .retire(totals, self.core.outcome().as_ref());
        if let (Some(per_ip), Tenure::Whole) = (&endpoint.per_ip, self.core.tenure()) {
            per_ip.release(self.core.conn().remote_addr().ip());
        }
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use crate::protocol::Raw;

    /// The task of an idle connection is most of its memory after the
    /// kernel's socket (`idle-mem` in the bench): what few connections need
    /// lives in boxes of their own (`lifecycle::Rare`, the dispatcher's
    /// async runner). 256 bytes on x86-64 before the event-returning core,
    /// and after it: see docs/benchmarks.md for the idle memory it measures.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let driver = std::mem::size_of::<super::ConnDriver<Raw, crate::transport::Plain>>();
        assert!(driver <= 256, "ConnDriver<Raw, Plain> is {driver} bytes");
    }
}
