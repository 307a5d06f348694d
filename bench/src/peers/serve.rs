//! What every server child shares, lubdub's and the peers': the start
//! (`nofile`, then `port` on stdout, as `child::Server` expects), the
//! `conns N` reports, the tokio runtime and accept loop, and the echo a
//! tokio user writes over a `Framed` stream.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::{FutureExt, SinkExt, StreamExt};
use lubdub::{Protocol, Worker, WorkerHandle};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder, Framed};

use crate::sys;

/// Largest message either side accepts: lubdub's default maximum package
/// size (10 MiB), applied to the tokio codecs too.
pub const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// The start of every server child: it dies with the runner, raises its fd
/// limit and prints `nofile <soft-before> <soft> <hard>`, and pins itself
/// to `cpu` if given (before any thread is created: they all inherit the
/// mask).
pub fn start_server_child(cpu: Option<usize>) -> Result<()> {
    sys::die_with_parent();
    let lim = sys::raise_fd_limit()?;
    println!("nofile {} {} {}", lim.soft_before, lim.soft, lim.hard);
    if let Some(cpu) = cpu {
        sys::pin_current_thread(cpu)?;
    }
    Ok(())
}

/// Serves with a started lubdub worker: prints `port N`, then with
/// `report_conns` a `conns N` line every 50 ms until killed; without, waits
/// for the worker to stop.
pub fn run_lubdub<P: Protocol>(h: &WorkerHandle<P>, report_conns: bool) -> Result<()> {
    println!("port {}", h.local_addr().port());
    if report_conns {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            println!("conns {}", h.connections().len());
        }
    }
    h.wait();
    Ok(())
}

/// Serves with the worker of an attack scenario (`lubdub_attack_worker`,
/// `lubdub_ws_attack_worker`, its `on_message` installed): as the
/// examples' servers do, except that no logger is installed (the `log`
/// macros are then no-ops), so `on_error` only counts. Prints `port N`,
/// then `stat errors N` every 200 ms until killed.
pub fn run_attack_server<P: Protocol>(mut w: Worker<P>) -> Result<()> {
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = errors.clone();
    w.on_error(move |_, _| {
        e2.fetch_add(1, Ordering::Relaxed);
    });
    let h = w.start()?;
    println!("port {}", h.local_addr().port());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        println!("stat errors {}", errors.load(Ordering::Relaxed));
    }
}

/// Runs a tokio peer: a runtime (current_thread for one thread, else
/// multi_thread with `threads` workers), a listener on 127.0.0.1:0 whose
/// port is printed, and with `report_conns` a counter of live connections
/// printed every 50 ms; then `serve(listener, live)`.
pub fn run_tokio_peer<F, Fut>(threads: usize, report_conns: bool, serve: F) -> Result<()>
where
    F: FnOnce(TcpListener, Option<Arc<AtomicUsize>>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("port {}", listener.local_addr()?.port());
        let live = report_conns.then(|| Arc::new(AtomicUsize::new(0)));
        if let Some(live) = live.clone() {
            spawn_conns_report(live);
        }
        serve(listener, live).await
    })
}

/// A task of the tokio peers printing `conns N` (the value of `live`)
/// every 50 ms.
fn spawn_conns_report(live: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            println!("conns {}", live.load(Ordering::Relaxed));
        }
    });
}

/// The tokio peers' accept loop: hands every accepted connection, with
/// TCP_NODELAY set, to `serve`; a failed accept (out of fds, say) is told
/// once, by `who`, and retried after 10 ms. Runs until the child is killed.
pub async fn accept_each(
    listener: TcpListener,
    who: &str,
    mut serve: impl FnMut(TcpStream),
) -> Result<()> {
    let mut warned = false;
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    eprintln!("{who}: accept failed: {e}; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        serve(sock);
    }
}

/// The echo a tokio user writes: take each decoded message and send it
/// back, feeding every message that is already readable and flushing once
/// the stream has nothing more ready (what `StreamExt::forward` does), so a
/// batch of pipelined requests is answered with one write, as lubdub does.
/// Over TCP, or TLS (`peers/tls.rs`).
///
/// The tungstenite peer has its own copy of this loop
/// (`peers/ws.rs`, `echo_tungstenite`): one generic over `Stream + Sink`
/// with a filter made every connection's task of the text peer 32 to 200
/// bytes larger, which its idle-memory row measures.
pub async fn echo_framed<T, C, Out>(framed: &mut Framed<T, C>, reply: impl Fn(C::Item) -> Out)
where
    T: AsyncRead + AsyncWrite + Unpin,
    C: Decoder + Encoder<Out>,
{
    while let Some(Ok(msg)) = framed.next().await {
        if framed.feed(reply(msg)).await.is_err() {
            return;
        }
        loop {
            match framed.next().now_or_never() {
                Some(Some(Ok(msg))) => {
                    if framed.feed(reply(msg)).await.is_err() {
                        return;
                    }
                }
                Some(_) => {
                    let _ = framed.flush().await;
                    return;
                }
                None => break,
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
    }
}
