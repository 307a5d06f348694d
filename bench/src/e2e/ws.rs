//! The load generator's WebSocket mode against the real peers, over
//! loopback in this process.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::load::ws::{WsUnit, PATH};
use crate::load::ws_codec::{close_reply, push_close, upgrade, Upgraded};
use crate::peers::ws::{echo_tungstenite, fastwebsockets_conn, tungstenite_config};

/// Over real loopback, against the tungstenite and fastwebsockets
/// peers as the scenarios run them: the upgrade answer passes the
/// check, 3 x 16 pipelined messages come back and check out by
/// position, and the close handshake ends with the server's close
/// frame and EOF.
#[test]
fn loopback_upgrade_echo_and_close_against_the_peers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for fast in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (sock, _) = listener.accept().await.unwrap();
                sock.set_nodelay(true).unwrap();
                if fast {
                    fastwebsockets_conn(sock, Arc::new(AtomicUsize::new(0))).await;
                } else {
                    let ws = tokio_tungstenite::accept_async_with_config(
                        sock,
                        Some(tungstenite_config(None)),
                    )
                    .await
                    .unwrap();
                    echo_tungstenite(ws).await;
                }
            });
            let mut s = TcpStream::connect(addr).await.unwrap();
            let up = upgrade(&mut s, &addr.to_string(), PATH, false)
                .await
                .unwrap();
            assert_eq!(up, Upgraded::default(), "fast={fast}");
            for payload in [32, 4096] {
                let unit = WsUnit::text(payload);
                let depth = 16;
                let mut scratch = vec![0u8; unit.reply_size()];
                for round in 0..3u64 {
                    let mut out = vec![0u8; depth * unit.request_size()];
                    for (i, u) in out.chunks_exact_mut(unit.request_size()).enumerate() {
                        unit.fill_request(4, round * depth as u64 + i as u64, u);
                    }
                    s.write_all(&out).await.unwrap();
                    let mut reply = vec![0u8; depth * unit.reply_size()];
                    s.read_exact(&mut reply).await.unwrap();
                    let start = round * reply.len() as u64;
                    unit.check(4, start, &reply, &mut scratch).unwrap();
                }
            }
            let mut close = Vec::new();
            push_close(&mut close, [9, 9, 9, 9]);
            s.write_all(&close).await.unwrap();
            close_reply(&mut s, &mut [0u8; 256]).await.unwrap();
            server.await.unwrap();
        }
    });
}
