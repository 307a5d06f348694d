//! What a client connection's handle must share with its supervisor task:
//! the application's requests (close for good, reconnect, cancel a
//! reconnect, the link proved healthy) and the event that wakes the
//! supervisor. Everything else about reconnecting (the policy, attempts,
//! whether it waits for an explicit reconnect) is the supervisor's own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use event_listener::Event;

/// The requests a client connection's handle makes to its supervisor.
pub(crate) struct ClientCtl {
    user_closed: AtomicBool,
    healthy: AtomicBool,
    cancel: AtomicBool,
    pending: Mutex<Option<Duration>>,
    event: Event,
}

/// What interrupted a supervisor's wait.
pub(crate) enum Wake {
    Closed,
    Reconnect(Duration),
    Cancelled,
    Elapsed,
}

impl ClientCtl {
    pub fn new() -> Self {
        ClientCtl {
            user_closed: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            pending: Mutex::new(None),
            event: Event::new(),
        }
    }

    pub fn user_close(&self) {
        self.user_closed.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_user_closed(&self) -> bool {
        self.user_closed.load(Ordering::SeqCst)
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
