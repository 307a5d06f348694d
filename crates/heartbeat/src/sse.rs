//! Keep-alives for Server-Sent Events: comments on open event streams.

use lubdub_http::{Http, Reply, Request};

use crate::codec::{Beat, HeartbeatCodec};

/// Heartbeats over HTTP ([`Http`]): each server ping is a Server-Sent
/// Events comment (`: ping`), which `EventSource` ignores and which keeps
/// proxies and NATs from dropping a quiet stream. The protocol writes it
/// only on connections with an open event stream (plain keep-alive
/// connections get nothing).
///
/// Nobody answers a comment, so these pings are never waited for
/// ([`HeartbeatCodec::answered`] is `false`), and an event-stream client
/// sends nothing once connected: turn the idle sweep off when streams stay
/// open longer than its timeout.
///
/// ```no_run
/// use std::time::Duration;
/// use lubdub_heartbeat::{Heartbeat, SseHeartbeat};
/// use lubdub_http::Http;
/// use lubdub_worker::Worker;
///
/// let mut worker = Worker::<Http>::new("http://0.0.0.0:8080")?;
/// worker.plugin(
///     Heartbeat::server(SseHeartbeat)
///         .no_idle_timeout()
///         .ping_interval(Duration::from_secs(15)),
/// );
/// # Ok::<(), lubdub_worker::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SseHeartbeat;

impl HeartbeatCodec<Http> for SseHeartbeat {
    #[inline]
    fn classify<'a>(&self, _msg: &'a Request) -> Option<Beat<'a>> {
        None
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&Reply)) {
        if let Beat::Ping(_) = beat {
            emit(&Reply::comment("ping"));
        }
    }

    fn answered(&self) -> bool {
        false
    }
}
