//! The dispatcher: for each [`Event`] a connection's state machine yields,
//! the plugins' hook and then the application's callback of the same name,
//! in order, each guarded against panics; the async message handler's runner;
//! and a server connection's place in the connections map.
//!
//! This is where user code runs for a connection (timers aside). It runs
//! between two steps of the state machine, never inside one, and never
//! inside `Connection::send`: a callback may take any lock it likes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::connection::Connection;
use crate::endpoint::Endpoint;
use crate::error::{CloseReason, ConnError};
use crate::event_loop::catch;
use crate::handlers::{Handlers, LocalBoxFuture, MessageHandler};
use crate::lifecycle::{Event, Lifecycle, Verdict, MESSAGES_PER_TURN};
use crate::plugin::Flow;
use crate::protocol::Protocol;

/// What the connections of one worker (or one client) run events with.
pub(crate) struct Site<P: Protocol> {
    /// The callbacks and plugins.
    pub handlers: Handlers<P>,
    /// The connections map, the socket count and the memory budget.
    pub endpoint: Arc<Endpoint<P>>,
}

/// What dispatching an event asks of the state machine.
pub(crate) enum Dispatched<P: Protocol> {
    /// Nothing.
    Done,
    /// The handshake hook's verdict, for `Lifecycle::handle_verdict`.
    Verdict(P::Handshake, Verdict),
}

/// Messages waiting for the async handler, and the one it runs.
struct AsyncRunner<P: Protocol> {
    pending: VecDeque<P::Message>,
    inflight: Option<LocalBoxFuture>,
}

/// One connection's dispatcher.
pub(crate) struct Dispatcher<P: Protocol> {
    site: Arc<Site<P>>,
    /// A server connection enters the map when established and leaves it
    /// after `on_close`; a client's supervisor keeps its entry instead.
    maps: bool,
    in_map: bool,
    /// Boxed when the async handler first gets a message.
    runner: Option<Box<AsyncRunner<P>>>,
}

impl<P: Protocol> Dispatcher<P> {
    /// A dispatcher for a connection of `site`; `maps`: it puts the
    /// connection in the map while established.
    pub fn new(site: Arc<Site<P>>, maps: bool) -> Self {
        Dispatcher {
            site,
            maps,
            in_map: false,
            runner: None,
        }
    }

    /// What the connection's worker (or client) shares.
    pub fn site(&self) -> &Arc<Site<P>> {
        &self.site
    }

    /// Whether the connection is in its endpoint's connections map (where a
    /// stopping worker finds it).
    pub fn in_map(&self) -> bool {
        self.in_map
    }

    /// Hands every event `core` has now to the plugins and callbacks, in
    /// order, and feeds back what dispatching asks (a handshake verdict)
    /// and the async handler's backlog. What the shell does after each of
    /// its steps; the state machine's tests do the same.
    #[inline(never)]
    pub fn drain(&mut self, core: &mut Lifecycle<P>, now: Instant) {
        let async_handler = self.has_async_handler();
        while let Some(event) = core.poll_event(now) {
            match event {
                // The hot path: one message, straight to its handlers.
                Event::Message(msg) => self.deliver(core.conn(), msg),
                other => {
                    if let Dispatched::Verdict(data, verdict) = self.dispatch(core.conn(), other) {
                        core.handle_verdict(data, verdict, now);
                    }
                }
            }
            if async_handler {
                let (queued, busy) = self.app_backlog();
                core.set_app_backlog(queued, busy);
            }
        }
        if core.drops_app_backlog() {
            self.drop_app_backlog();
            let (queued, busy) = self.app_backlog();
            core.set_app_backlog(queued, busy);
        }
    }

    /// Runs the plugins and the callback for `event`.
    pub fn dispatch(&mut self, conn: &Connection<P>, event: Event<P>) -> Dispatched<P> {
        let handlers = &self.site.handlers;
        match event {
            Event::Handshake(data) => {
                let mut verdict = Verdict::Accept;
                if let Some(hook) = &handlers.on_handshake {
                    let mut answer = Ok(());
                    verdict = if guard(handlers, conn, "on_handshake", || {
                        answer = hook(conn, &data)
                    }) {
                        match answer {
                            Ok(()) => Verdict::Accept,
                            Err(reject) => Verdict::Reject(reject),
                        }
                    } else {
                        Verdict::Abort
                    };
                }
                return Dispatched::Verdict(data, verdict);
            }
            Event::Connected => {
                if self.maps {
                    self.site
                        .endpoint
                        .connections
                        .insert(conn.id(), conn.clone());
                    self.in_map = true;
                }
                for plugin in &handlers.plugins {
                    if !guard(handlers, conn, "plugin on_connect", || {
                        plugin.on_connect(conn)
                    }) {
                        return Dispatched::Done;
                    }
                }
                if let Some(cb) = &handlers.on_connect {
                    guard(handlers, conn, "on_connect", || cb(conn));
                }
            }
            Event::Message(msg) => self.deliver(conn, msg),
            Event::BufferFull => {
                if let Some(cb) = &handlers.on_buffer_full {
                    guard(handlers, conn, "on_buffer_full", || cb(conn));
                }
            }
            Event::BufferDrain => {
                if let Some(cb) = &handlers.on_buffer_drain {
                    guard(handlers, conn, "on_buffer_drain", || cb(conn));
                }
            }
            Event::Error(err) => handlers.report(conn, &err),
            Event::Closed(reason) => self.closed(conn, &reason),
        }
        Dispatched::Done
    }

    /// Whether messages go to an async handler (whose backlog the state
    /// machine must know).
    pub fn has_async_handler(&self) -> bool {
        matches!(
            self.site.handlers.on_message,
            Some(MessageHandler::Async(_))
        )
    }

    /// A message: the plugins' `on_message`, then the handler's. Inlined
    /// into the shell's event loop: the per-message path (see
    /// `Lifecycle::poll_event`).
    #[inline(always)]
    pub fn deliver(&mut self, conn: &Connection<P>, msg: P::Message) {
        let handlers = &self.site.handlers;
        for plugin in &handlers.plugins {
            let mut flow = Flow::Continue;
            if !guard(handlers, conn, "plugin on_message", || {
                flow = plugin.on_message(conn, &msg)
            }) || flow == Flow::Consumed
            {
                return;
            }
        }
        match &handlers.on_message {
            Some(MessageHandler::Sync(f)) => {
                guard(handlers, conn, "on_message", || f(conn, msg));
            }
            Some(MessageHandler::Async(_)) => {
                self.runner
                    .get_or_insert_with(|| {
                        Box::new(AsyncRunner {
                            pending: VecDeque::new(),
                            inflight: None,
                        })
                    })
                    .pending
                    .push_back(msg);
            }
            None => {}
        }
    }

    /// `on_close` (plugins first), then out of the map.
    fn closed(&mut self, conn: &Connection<P>, reason: &CloseReason) {
        let handlers = &self.site.handlers;
        self.runner = None;
        for plugin in &handlers.plugins {
            if let Err(msg) = catch(|| plugin.on_close(conn, reason)) {
                log::error!("connection {}: plugin on_close panicked: {msg}", conn.id());
            }
        }
        if let Some(cb) = &handlers.on_close {
            if let Err(msg) = catch(|| cb(conn, reason)) {
                log::error!("connection {}: on_close panicked: {msg}", conn.id());
            }
        }
        if self.in_map {
            self.site.endpoint.connections.remove(&conn.id());
            self.in_map = false;
        }
    }

    /// Whether the async handler has messages or one running.
    #[inline]
    pub fn has_async_work(&self) -> bool {
        self.runner.is_some()
    }

    /// Messages the async handler has not taken yet, and whether it runs one.
    pub fn app_backlog(&self) -> (usize, bool) {
        self.runner
            .as_ref()
            .map_or((0, false), |r| (r.pending.len(), r.inflight.is_some()))
    }

    /// Drops the messages the async handler has not started (the
    /// connection closes); the one it runs finishes.
    pub fn drop_app_backlog(&mut self) {
        if let Some(runner) = &mut self.runner {
            runner.pending.clear();
        }
    }

    /// Runs the async handler: one message at a time, in order, at most
    /// [`MESSAGES_PER_TURN`] started per call.
    pub fn poll_async(&mut self, conn: &Connection<P>, cx: &mut Context<'_>) {
        let Some(runner) = self.runner.as_deref_mut() else {
            return;
        };
        let handlers = &self.site.handlers;
        let mut started = 0;
        loop {
            if runner.inflight.is_none() {
                if started == MESSAGES_PER_TURN {
                    return;
                }
                let Some(msg) = runner.pending.pop_front() else {
                    return;
                };
                let Some(MessageHandler::Async(f)) = &handlers.on_message else {
                    return;
                };
                started += 1;
                match catch(|| f(conn.clone(), msg)) {
                    Ok(fut) => runner.inflight = Some(fut),
                    Err(message) => {
                        async_panicked(handlers, conn, runner, message);
                        return;
                    }
                }
            }
            let Some(fut) = runner.inflight.as_mut() else {
                return;
            };
            match catch(|| fut.as_mut().poll(cx)) {
                Ok(Poll::Ready(())) => runner.inflight = None,
                Ok(Poll::Pending) => return,
                Err(message) => {
                    runner.inflight = None;
                    async_panicked(handlers, conn, runner, message);
                    return;
                }
            }
        }
    }
}

/// An async handler panicked: reported, and the connection closes.
fn async_panicked<P: Protocol>(
    handlers: &Handlers<P>,
    conn: &Connection<P>,
    runner: &mut AsyncRunner<P>,
    message: String,
) {
    log::error!(
        "connection {}: on_message future panicked: {message}",
        conn.id()
    );
    handlers.report(
        conn,
        &ConnError::CallbackPanic {
            callback: "on_message (async)",
            message,
        },
    );
    conn.close_with_reason(CloseReason::Panic);
    runner.pending.clear();
}

/// Runs a user callback for `conn`; a panic is logged, reported through
/// `on_error` and closes the connection. Returns whether it completed.
/// Inlined: it runs once per message.
#[inline(always)]
fn guard<P: Protocol>(
    handlers: &Handlers<P>,
    conn: &Connection<P>,
    callback: &'static str,
    f: impl FnOnce(),
) -> bool {
    match catch(f) {
        Ok(()) => true,
        Err(message) => {
            log::error!(
                "connection {} ({}): {callback} panicked: {message}",
                conn.id(),
                conn.remote_addr()
            );
            handlers.report(conn, &ConnError::CallbackPanic { callback, message });
            conn.close_with_reason(CloseReason::Panic);
            false
        }
    }
}
