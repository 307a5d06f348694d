//! Heartbeats over WebSocket: control frames, which browsers answer.

use lubdub_ws::{Message, Ws};

use crate::codec::{Beat, HeartbeatCodec, Ping, Pong};

/// Heartbeats as WebSocket ping and pong frames ([`Ws`]).
///
/// Browsers cannot send pings from JavaScript, but every browser answers a
/// ping frame with a pong carrying the same payload: so the server pings
/// (`Heartbeat::server(WsHeartbeat).ping_interval(..)`) and the pongs give
/// each connection's round-trip time. Any inbound frame counts as life for
/// the idle sweep. A lubdub `Client<Ws>` pings the same way with the client
/// heartbeat, and the server's protocol answers by itself.
///
/// Payload of a ping (at most 125 bytes, a control frame's limit):
///
/// ```text
/// +-----------------+-------------------+----------------------+
/// | seq: u32 BE (4) | unix_ms: u64 BE (8) | meta (rest, ≤ 113) |
/// +-----------------+-------------------+----------------------+
/// ```
///
/// `unix_ms` and `meta` are optional; a bare keepalive has an empty
/// payload. A pong echoes the ping's payload, so it tells `seq` (and our
/// own time, not the peer's: no clock offset is measured over WebSocket).
/// Every pong is consumed by the heartbeat, an unsolicited one too; pings
/// never reach it (the protocol answers them).
///
/// ```
/// use lubdub_heartbeat::{Beat, HeartbeatCodec, Ping, WsHeartbeat};
/// use lubdub_ws::{Message, Ws};
///
/// let mut sent = Vec::new();
/// let ping = Beat::Ping(Ping { seq: Some(7), unix_ms: Some(1), meta: b"" });
/// HeartbeatCodec::<Ws>::encode(&WsHeartbeat, &ping, &mut |m: &Message| sent.push(m.clone()));
/// let Message::Ping(payload) = &sent[0] else { panic!() };
/// let pong = Message::Pong(payload.clone());
/// let beat = HeartbeatCodec::<Ws>::classify(&WsHeartbeat, &pong);
/// assert!(matches!(beat, Some(Beat::Pong(p)) if p.seq == Some(7)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WsHeartbeat;

/// A control frame's payload limit.
const CONTROL_MAX: usize = 125;

fn payload(seq: Option<u32>, unix_ms: Option<u64>, meta: &[u8]) -> Vec<u8> {
    let Some(seq) = seq else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(12 + meta.len());
    out.extend_from_slice(&seq.to_be_bytes());
    if let Some(ms) = unix_ms {
        out.extend_from_slice(&ms.to_be_bytes());
        let room = CONTROL_MAX - out.len();
        if meta.len() <= room {
            out.extend_from_slice(meta);
        }
    }
    out
}

impl HeartbeatCodec<Ws> for WsHeartbeat {
    #[inline]
    fn classify<'a>(&self, msg: &'a Message) -> Option<Beat<'a>> {
        let Message::Pong(p) = msg else {
            return None;
        };
        let seq = p
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        Some(Beat::Pong(Pong { seq, unix_ms: None }))
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&Message)) {
        match beat {
            Beat::Ping(Ping { seq, unix_ms, meta }) => {
                emit(&Message::Ping(payload(*seq, *unix_ms, meta)))
            }
            Beat::Pong(Pong { seq, unix_ms }) => emit(&Message::Pong(payload(*seq, *unix_ms, b""))),
            // No WebSocket frame says "send heartbeats every N": the server pings.
            Beat::Hello { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(beat: Beat<'_>) -> Vec<Message> {
        let mut out = Vec::new();
        HeartbeatCodec::<Ws>::encode(&WsHeartbeat, &beat, &mut |m: &Message| out.push(m.clone()));
        out
    }

    #[test]
    fn pings_are_control_frames_within_125_bytes() {
        let meta = [b'm'; 200];
        let full = encode(Beat::Ping(Ping {
            seq: Some(1),
            unix_ms: Some(2),
            meta: &meta[..113],
        }));
        assert!(matches!(&full[..], [Message::Ping(p)] if p.len() == 125));
        let too_long = encode(Beat::Ping(Ping {
            seq: Some(1),
            unix_ms: Some(2),
            meta: &meta,
        }));
        assert!(
            matches!(&too_long[..], [Message::Ping(p)] if p.len() == 12),
            "meta dropped"
        );
        let bare = encode(Beat::Ping(Ping::default()));
        assert!(matches!(&bare[..], [Message::Ping(p)] if p.is_empty()));
        assert!(encode(Beat::Hello {
            interval: std::time::Duration::from_secs(1)
        })
        .is_empty());
    }

    #[test]
    fn every_pong_is_a_beat_and_nothing_else_is() {
        let c = |m: &Message| {
            HeartbeatCodec::<Ws>::classify(&WsHeartbeat, m).map(|b| match b {
                Beat::Pong(p) => p.seq,
                _ => panic!("{b:?}"),
            })
        };
        assert_eq!(c(&Message::Pong(vec![0, 0, 1, 2, 9, 9])), Some(Some(258)));
        assert_eq!(c(&Message::Pong(vec![])), Some(None));
        assert_eq!(c(&Message::Pong(vec![1, 2])), Some(None), "unsolicited");
        assert_eq!(c(&Message::Text("pong".into())), None);
        assert_eq!(c(&Message::Binary(vec![0, 0, 0, 1])), None);
        assert_eq!(c(&Message::Ping(vec![0, 0, 0, 1])), None);
    }
}
