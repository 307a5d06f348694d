//! The load generator's TLS mode end to end, against the real servers run
//! in this process: lubdub's TLS workers, the tokio-rustls and
//! tokio-tungstenite peers, nginx in front of a plain lubdub worker, and a
//! server that corrupts a reply.

use std::time::Duration;

use lubdub::{Text, TlsConfig, Worker};
use tokio::net::TcpListener;
use tokio_util::codec::{Framed, LinesCodec};

use crate::load::measure;
use crate::load::tcp::{round_trip, Unit};
use crate::load::tls::{self as load, TlsClient};
use crate::load::ws::WsUnit;
use crate::peers::nginx;
use crate::peers::serve::echo_framed;
use crate::peers::tls::{lubdub_text, lubdub_ws, tokio_tls_server, Kind};
use crate::pki::{server_config, Pki};
use crate::report::Window;

const WINDOW: Window = Window {
    warmup: Duration::from_millis(50),
    measure: Duration::from_millis(250),
};

fn me() -> u32 {
    std::process::id()
}

/// Runs `f` on a load-generator thread (tokio current_thread).
fn on_loadgen<T: Send, Fut: std::future::Future<Output = anyhow::Result<T>>>(
    f: impl FnOnce() -> Fut + Send,
) -> anyhow::Result<T> {
    measure::run(None, Duration::from_secs(60), f)
}

/// Pipelined echo, ping-pong, handshake churn and connects from many
/// source addresses over TLS, against `addr`.
async fn drive_text(client: &TlsClient, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let (t, session) = load::pipelined(client, addr, &[me()], 4, 4, Unit::text(32), WINDOW).await?;
    assert!(t.per_sec > 0.0, "pipelined echo completed messages");
    assert!(session.starts_with("TLSv1_3"), "{session}");
    let (t, _) = load::pipelined(client, addr, &[me()], 2, 2, Unit::text(4096), WINDOW).await?;
    assert!(t.per_sec > 0.0, "4 KiB lines");
    let (r, _) = load::pingpong(client, addr, &[me()], 3, Unit::text(32), WINDOW).await?;
    assert!(r.samples > 0 && r.p99_us > 0.0, "ping-pong round trips");
    let (t, _) = load::handshakes(client, addr, me(), 2, Unit::text(32), WINDOW).await?;
    assert!(t.per_sec > 0.0, "handshake churn completed cycles");
    let mut many = load::connect_many(client, addr, 3, 2, true).await?;
    round_trip(&mut many[2], Unit::text(32), 2, 0).await?;
    Ok(())
}

#[test]
fn tls_load_drives_lubdub_tls_and_tokio_rustls() {
    let pki = Pki::generate().unwrap();
    let client = TlsClient::trusting(&pki).unwrap();

    let h = lubdub_text(TlsConfig::from_pem_files(&pki.cert, &pki.key).unwrap())
        .unwrap()
        .start()
        .unwrap();
    let addr = h.local_addr();
    on_loadgen(|| drive_text(&client, addr)).unwrap();
    h.stop_and_wait();

    let config = server_config(&pki.cert, &pki.key).unwrap();
    on_loadgen(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(tokio_tls_server(listener, Kind::Text, config, None));
        drive_text(&client, addr).await?;
        server.abort();
        Ok(())
    })
    .unwrap();
}

#[test]
fn wss_load_drives_lubdub_ws_and_tokio_tungstenite() {
    let pki = Pki::generate().unwrap();
    let client = TlsClient::trusting(&pki).unwrap();
    let unit = WsUnit::text(32);

    let h = lubdub_ws(TlsConfig::from_pem_files(&pki.cert, &pki.key).unwrap())
        .unwrap()
        .start()
        .unwrap();
    let addr = h.local_addr();
    let (t, _) =
        on_loadgen(|| load::ws_pipelined(&client, addr, me(), 4, 4, unit, WINDOW)).unwrap();
    assert!(t.per_sec > 0.0);
    h.stop_and_wait();

    let config = server_config(&pki.cert, &pki.key).unwrap();
    let (t, _) = on_loadgen(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(tokio_tls_server(listener, Kind::Ws, config, None));
        let r = load::ws_pipelined(&client, addr, me(), 4, 4, unit, WINDOW).await;
        server.abort();
        r
    })
    .unwrap();
    assert!(t.per_sec > 0.0);
}

/// A TLS server whose echo changes one byte of a sampled line fails the
/// run: the TLS mode checks replies as the plain one does.
#[test]
fn a_tls_server_that_corrupts_a_reply_fails_the_run() {
    let pki = Pki::generate().unwrap();
    let client = TlsClient::trusting(&pki).unwrap();
    let config = server_config(&pki.cert, &pki.key).unwrap();
    let r = on_loadgen(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let server = tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let tls = acceptor.accept(sock).await.unwrap();
                    let mut framed = Framed::new(tls, LinesCodec::new());
                    echo_framed(&mut framed, |l: String| l.replacen('c', "x", 1)).await;
                });
            }
        });
        let r = load::pipelined(&client, addr, &[me()], 2, 2, Unit::text(32), WINDOW).await;
        server.abort();
        r
    });
    let e = format!("{:#}", r.expect_err("a corrupted reply must fail the run"));
    assert!(e.contains("differs"), "{e}");
}

/// nginx (the Debian package, with its stream module) terminates TLS in
/// front of a plain lubdub worker, and the TLS load runs through it. The
/// test fails if nginx is missing: `.ci/run` installs it.
#[test]
fn nginx_terminates_tls_in_front_of_plain_lubdub() {
    let bin = nginx::NginxBin::find().unwrap();
    let pki = Pki::generate().unwrap();
    let client = TlsClient::trusting(&pki).unwrap();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.on_message(|conn, line: String| {
        let _ = conn.send(&line);
    });
    let h = w.start().unwrap();
    let proxy =
        nginx::Nginx::start(&bin, &pki.cert, &pki.key, h.local_addr().port(), None).unwrap();
    let addr = proxy.addr();
    let pids = [proxy.pid(), me()];
    let (r, session) =
        on_loadgen(|| load::pingpong(&client, addr, &pids, 3, Unit::text(32), WINDOW)).unwrap();
    assert!(r.samples > 0, "round trips through nginx");
    assert!(session.starts_with("TLSv1_3"), "{session}");
    let (t, _) =
        on_loadgen(|| load::pipelined(&client, addr, &pids, 3, 4, Unit::text(32), WINDOW)).unwrap();
    assert!(t.per_sec > 0.0);
    let pid = proxy.pid();
    drop(proxy);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "nginx is gone once dropped"
    );
    h.stop_and_wait();
}
