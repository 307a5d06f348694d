//! The `attack-ws` attackers against the real servers, run in this process
//! over loopback: lubdub's `attack-ws` worker and the tokio-tungstenite
//! peer. What is checked is the plumbing (the attackers connect, upgrade,
//! send and count what the servers did), not how the servers fare.

use std::net::SocketAddr;
use std::time::Duration;

use lubdub::ws::Message;
use tokio::net::TcpListener;

use crate::load::attackers::{attack_for, Attack, AttackerResult, BIG, DUPLICATES};
use crate::peers::serve::{accept_each, MAX_MESSAGE};
use crate::peers::ws::{echo_tungstenite, lubdub_ws_attack_worker, tungstenite_config};

/// How long each attack runs against each server.
const TIME: Duration = Duration::from_millis(700);

/// Runs the attacks that end quickly or report at once against `addr`;
/// `deflate` says whether the server negotiates permessage-deflate.
fn attack_server(addr: SocketAddr, deflate: bool, who: &str) {
    let run = |kind: Attack, n: usize| -> AttackerResult {
        let r = attack_for(kind, addr, n, TIME).unwrap();
        assert!(r.connects >= n as u64, "{who} {kind:?}: {r:?}");
        r
    };
    let count = |r: &AttackerResult, key: &str| r.outcomes.get(key).copied().unwrap_or(0);

    // Every foreign-Origin attempt got an answer (whichever status).
    let r = run(Attack::WsOrigin, 2);
    let answered: u64 = r
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("http"))
        .map(|(_, n)| n)
        .sum();
    assert!(answered >= 2, "{who} ws-origin: {r:?}");

    // Each of the four duplicated headers was tried.
    let r = run(Attack::WsDupHeaders, 2);
    for (name, _) in DUPLICATES {
        let tried = r
            .outcomes
            .keys()
            .any(|k| k.starts_with(&format!("{name}:")));
        assert!(tried, "{who} ws-dupheaders, {name}: {r:?}");
    }

    // Deflate is negotiated where the server has it.
    let (on, off) = if deflate { (2, 0) } else { (0, 2) };
    for kind in [Attack::WsIdleDeflate, Attack::WsBomb] {
        let r = run(kind, 2);
        assert!(count(&r, "deflate-on") >= on, "{who} {kind:?}: {r:?}");
        assert!(count(&r, "deflate-off") >= off, "{who} {kind:?}: {r:?}");
    }

    // A big frame: upgraded, then either still open or ended by the server.
    let r = run(Attack::WsBigFrame, 2);
    let ended: u64 = r.outcomes.values().sum();
    assert!(r.open + ended >= 2, "{who} ws-bigframe: {r:?}");
}

#[test]
fn websocket_attackers_drive_lubdub_and_tungstenite() {
    const {
        assert!(
            BIG < MAX_MESSAGE,
            "the big message is one the servers must take"
        )
    };

    let mut w = lubdub_ws_attack_worker().unwrap();
    w.on_message(|conn, msg| {
        if let Message::Text(_) | Message::Binary(_) = msg {
            let _ = conn.send(&msg);
        }
    });
    let h = w.start().unwrap();
    attack_server(h.local_addr(), true, "lubdub");
    h.stop_and_wait();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(accept_each(listener, "tungstenite server", |sock| {
        tokio::spawn(async move {
            let config = Some(tungstenite_config(None));
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(sock, config).await {
                echo_tungstenite(ws).await;
            }
        });
    }));
    attack_server(addr, false, "tungstenite");
    rt.shutdown_background();
}
