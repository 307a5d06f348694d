//! Reconnect control shared by a client connection's handle and its
//! supervisor task: what the application asked for (close, reconnect,
//! cancel) and what the supervisor reports (connected, healthy).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use event_listener::Event;

/// Reconnect control shared by a client connection's handle and supervisor.
pub(crate) struct ClientCtl {
    /// An automatic reconnect policy is on.
    auto: bool,
    /// Unsent messages wait for the next session (`Client::keep_unsent`).
    keep_unsent: bool,
    /// Waiting for an explicit `reconnect()` (no policy, gave up, cancelled).
    idle: AtomicBool,
    user_closed: AtomicBool,
    connected: AtomicBool,
    healthy: AtomicBool,
    cancel: AtomicBool,
    pending: Mutex<Option<Duration>>,
    pub attempts: AtomicU32,
    pub event: Event,
}

/// What interrupted a supervisor's wait.
pub(crate) enum Wake {
    Closed,
    Reconnect(Duration),
    Cancelled,
    Elapsed,
}

impl ClientCtl {
    pub fn new(auto: bool, keep_unsent: bool) -> Self {
        ClientCtl {
            auto,
            keep_unsent,
            idle: AtomicBool::new(false),
            user_closed: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            pending: Mutex::new(None),
            attempts: AtomicU32::new(0),
            event: Event::new(),
        }
    }

    /// Sends between sessions queue for the next one: a reconnect is coming.
    pub fn keeps_queue(&self) -> bool {
        self.auto && self.keep_unsent && !self.is_user_closed() && !self.idle.load(Ordering::SeqCst)
    }

    /// Whether whole messages unsent at the end of a session are kept.
    pub fn keeps_unsent(&self) -> bool {
        self.keep_unsent
    }

    pub fn user_close(&self) {
        self.user_closed.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_user_closed(&self) -> bool {
        self.user_closed.load(Ordering::SeqCst)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }

    pub fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
    }

    pub fn request_reconnect(&self, after: Duration) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(after);
        self.cancel.store(false, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn cancel_reconnect(&self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.cancel.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether a cancel was requested since the last look (and forgets it).
    pub fn take_cancel(&self) -> bool {
        self.cancel.swap(false, Ordering::SeqCst)
    }

    pub fn mark_healthy(&self) {
        self.healthy.store(true, Ordering::SeqCst);
    }

    /// Whether the session was proven healthy since the last look (and forgets it).
    pub fn take_healthy(&self) -> bool {
        self.healthy.swap(false, Ordering::SeqCst)
    }

    pub fn take_pending(&self) -> Option<Duration> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn has_pending(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Waits until `deadline` (forever if `None`) or a control request.
    pub async fn wait(&self, deadline: Option<Instant>) -> Wake {
        loop {
            if self.is_user_closed() {
                return Wake::Closed;
            }
            if let Some(after) = self.take_pending() {
                return Wake::Reconnect(after);
            }
            if self.take_cancel() {
                return Wake::Cancelled;
            }
            let listener = self.event.listen();
            if self.is_user_closed() || self.cancel.load(Ordering::SeqCst) || self.has_pending() {
                continue;
            }
            let elapsed = futures_lite::future::or(
                async {
                    listener.await;
                    false
                },
                async {
                    match deadline {
                        Some(d) => {
                            crate::event_loop::sleep_until(d).await;
                            true
                        }
                        None => futures_lite::future::pending().await,
                    }
                },
            )
            .await;
            if elapsed {
                return Wake::Elapsed;
            }
        }
    }

    /// Waits until the application closes the connection for good.
    pub async fn closed(&self) {
        while !self.is_user_closed() {
            let l = self.event.listen();
            if self.is_user_closed() {
                break;
            }
            l.await;
        }
    }
}
