//! The connection callbacks of a worker or client and their setters. They
//! are run by the dispatcher (`crate::dispatch`), never by a connection's
//! state machine or by `send`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::connection::Connection;
use crate::error::{CloseReason, ConnError};
use crate::event_loop::catch;
use crate::protocol::{Protocol, Reject};

/// A boxed, loop-local future returned by async message handlers.
pub(crate) type LocalBoxFuture = Pin<Box<dyn Future<Output = ()> + 'static>>;

pub(crate) type ConnFn<P> = Arc<dyn Fn(&Connection<P>) + Send + Sync>;
pub(crate) type CloseFn<P> = Arc<dyn Fn(&Connection<P>, &CloseReason) + Send + Sync>;
pub(crate) type ErrorFn<P> = Arc<dyn Fn(&Connection<P>, &ConnError) + Send + Sync>;
pub(crate) type MessageFn<P> = Arc<dyn Fn(&Connection<P>, <P as Protocol>::Message) + Send + Sync>;
pub(crate) type AsyncMessageFn<P> =
    Arc<dyn Fn(Connection<P>, <P as Protocol>::Message) -> LocalBoxFuture + Send + Sync>;
pub(crate) type HandshakeFn<P> =
    Arc<dyn Fn(&Connection<P>, &<P as Protocol>::Handshake) -> Result<(), Reject> + Send + Sync>;

/// How inbound messages are handed to the application.
pub(crate) enum MessageHandler<P: Protocol> {
    Sync(MessageFn<P>),
    Async(AsyncMessageFn<P>),
}

impl<P: Protocol> Clone for MessageHandler<P> {
    fn clone(&self) -> Self {
        match self {
            MessageHandler::Sync(f) => MessageHandler::Sync(f.clone()),
            MessageHandler::Async(f) => MessageHandler::Async(f.clone()),
        }
    }
}

/// The connection callbacks of a worker (or client).
pub(crate) struct Handlers<P: Protocol> {
    pub on_handshake: Option<HandshakeFn<P>>,
    pub on_connect: Option<ConnFn<P>>,
    pub on_message: Option<MessageHandler<P>>,
    pub on_close: Option<CloseFn<P>>,
    pub on_error: Option<ErrorFn<P>>,
    pub on_buffer_full: Option<ConnFn<P>>,
    pub on_buffer_drain: Option<ConnFn<P>>,
    pub plugins: Vec<Arc<dyn crate::plugin::Plugin<P>>>,
}

impl<P: Protocol> Default for Handlers<P> {
    fn default() -> Self {
        Handlers {
            on_handshake: None,
            on_connect: None,
            on_message: None,
            on_close: None,
            on_error: None,
            on_buffer_full: None,
            on_buffer_drain: None,
            plugins: Vec::new(),
        }
    }
}

impl<P: Protocol> Clone for Handlers<P> {
    fn clone(&self) -> Self {
        Handlers {
            on_handshake: self.on_handshake.clone(),
            on_connect: self.on_connect.clone(),
            on_message: self.on_message.clone(),
            on_close: self.on_close.clone(),
            on_error: self.on_error.clone(),
            on_buffer_full: self.on_buffer_full.clone(),
            on_buffer_drain: self.on_buffer_drain.clone(),
            plugins: self.plugins.clone(),
        }
    }
}

/// The connection callback setters shared by `Worker` and `Client`: both
/// hold a `handlers: Handlers<P>` field. Every path is `$crate::`, so the
/// macro needs no import where it is expanded.
macro_rules! connection_callbacks {
    () => {
        /// Inspects a finished protocol handshake (a WebSocket upgrade
        /// request, say) before `on_connect`: return `Err(Reject)` to refuse
        /// the peer with that answer, after which the connection closes and
        /// neither `on_connect` nor `on_close` runs for it. The connection's
        /// context may be set here. Protocols without a handshake never call it.
        pub fn on_handshake(
            &mut self,
            f: impl Fn(
                    &$crate::Connection<P>,
                    &<P as $crate::protocol::Protocol>::Handshake,
                ) -> ::std::result::Result<(), $crate::protocol::Reject>
                + Send
                + Sync
                + 'static,
        ) -> &mut Self {
            self.handlers.on_handshake = Some(::std::sync::Arc::new(f));
            self
        }

        /// Runs when a connection is established (after the protocol's
        /// handshake, if it has one), before any message (for a client: at
        /// each (re)connect).
        pub fn on_connect(
            &mut self,
            f: impl Fn(&$crate::Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_connect = Some(::std::sync::Arc::new(f));
            self
        }

        /// Runs for each decoded message, in order.
        pub fn on_message(
            &mut self,
            f: impl Fn(&$crate::Connection<P>, <P as $crate::protocol::Protocol>::Message)
                + Send
                + Sync
                + 'static,
        ) -> &mut Self {
            self.handlers.on_message = Some($crate::handlers::MessageHandler::Sync(
                ::std::sync::Arc::new(f),
            ));
            self
        }

        /// Like `on_message`, for handlers that must await (a database
        /// call, say). The loop keeps serving other connections while the
        /// future runs; one connection's messages are still handled one at a
        /// time, in order. Up to `async_queue` messages are decoded ahead,
        /// then reading pauses. The future runs on the connection's loop and
        /// need not be `Send`. Replaces any `on_message` handler.
        pub fn on_message_async<F, Fut>(&mut self, f: F) -> &mut Self
        where
            F: Fn($crate::Connection<P>, <P as $crate::protocol::Protocol>::Message) -> Fut
                + Send
                + Sync
                + 'static,
            Fut: ::std::future::Future<Output = ()> + 'static,
        {
            self.handlers.on_message = Some($crate::handlers::MessageHandler::Async(
                ::std::sync::Arc::new(move |c, m| {
                    ::std::boxed::Box::pin(f(c, m)) as $crate::handlers::LocalBoxFuture
                }),
            ));
            self
        }

        /// Runs exactly once per connection (client: per session) that ran
        /// `on_connect`, after it closed for any reason, with the reason.
        pub fn on_close(
            &mut self,
            f: impl Fn(&$crate::Connection<P>, &$crate::CloseReason) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_close = Some(::std::sync::Arc::new(f));
            self
        }

        /// Runs on a connection error: a protocol violation, dropped sends,
        /// a panicking callback, a socket error, a close that could not
        /// flush, a client's failed connect attempt.
        pub fn on_error(
            &mut self,
            f: impl Fn(&$crate::Connection<P>, &$crate::ConnError) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_error = Some(::std::sync::Arc::new(f));
            self
        }

        /// Runs when a connection's send buffer reaches its limit, once per
        /// episode, on the connection's loop: after the `send` that filled
        /// it returned (never inside it) and before the connection's next
        /// message is delivered.
        pub fn on_buffer_full(
            &mut self,
            f: impl Fn(&$crate::Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_buffer_full = Some(::std::sync::Arc::new(f));
            self
        }

        /// Runs when a full send buffer has been completely written out.
        pub fn on_buffer_drain(
            &mut self,
            f: impl Fn(&$crate::Connection<P>) + Send + Sync + 'static,
        ) -> &mut Self {
            self.handlers.on_buffer_drain = Some(::std::sync::Arc::new(f));
            self
        }

        /// Installs a plugin (the heartbeat, say). Its hooks run before the
        /// callbacks of the same name, in the order plugins were added.
        pub fn plugin(&mut self, plugin: impl $crate::plugin::Plugin<P>) -> &mut Self {
            self.handlers.plugins.push(::std::sync::Arc::new(plugin));
            self
        }
    };
}
pub(crate) use connection_callbacks;

impl<P: Protocol> Handlers<P> {
    /// Calls `on_error`, guarding against a panic in it.
    pub fn report(&self, conn: &Connection<P>, err: &ConnError) {
        if let Some(cb) = &self.on_error {
            if let Err(msg) = catch(|| cb(conn, err)) {
                log::error!("connection {}: on_error panicked: {msg}", conn.id());
            }
        }
    }
}
