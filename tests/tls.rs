//! lubdub's TLS against real peers over loopback: OpenSSL's `s_client` and
//! `s_server`, Python's `ssl` module (client and server), Python
//! `websockets` over wss://; certificate reloads; the heartbeat's idle clock
//! over TLS. Peers are found on this machine and started by the tests (a
//! missing one fails with what to install); certificates are made per test
//! with rcgen (a CA and the leaves it signs).

mod tls_support;

use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tls_support::{
    interop_script, openssl, pki, python, recv, tls_text_client, Ca, ChildGuard, Ev, TempDir,
    TlsEcho, TlsLineClient,
};

/// `openssl s_client` against `addr`, trusting `ca_file`, with `extra`
/// flags.
fn s_client(addr: std::net::SocketAddr, ca_file: &std::path::Path, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(openssl());
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca_file)
        .args([
            "-servername",
            "localhost",
            "-verify_return_error",
            "-nocommands",
        ])
        .args(extra);
    ChildGuard::spawn("openssl s_client", &mut cmd)
}

#[test]
fn openssl_s_client_echoes_over_tls13_and_tls12_and_tls11_is_refused() {
    let (ca, leaf) = pki();
    let dir = TempDir::new("s-client");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let server = TlsEcho::start(leaf.server_config(), |_| {});
    for (flags, version) in [
        (&[][..], "TLSv1.3"),
        (&["-tls1_3"][..], "TLSv1.3"),
        (&["-tls1_2"][..], "TLSv1.2"),
    ] {
        let mut c = s_client(server.addr(), &ca_file, flags);
        let summary = c.line_where("the handshake summary", |l| l.starts_with("New, "));
        assert!(
            summary.starts_with(&format!("New, {version}, Cipher is ")),
            "{flags:?}: {summary}"
        );
        c.line_where("a verified chain", |l| {
            l.trim() == "Verify return code: 0 (ok)"
        });
        let Ev::Connect(id) = server.next("on_connect") else {
            panic!("on_connect first")
        };
        for i in 0..3 {
            let line = format!("line {i} over {version}");
            c.send(format!("{line}\n").as_bytes());
            c.line_where("the echo", |l| l == line);
            assert_eq!(server.next("on_message"), Ev::Message(id, line));
        }
        // EOF on s_client's stdin: it closes the connection and exits 0.
        c.close_stdin();
        c.expect_success();
        match server.next("on_close") {
            Ev::Close(closed, _) => assert_eq!(closed, id),
            ev => panic!("{ev:?}"),
        }
    }
    // TLS 1.1: the client is allowed to offer it (security level 0), the
    // server refuses it with an alert. (RFC 8446 appendix D asks for
    // protocol_version; rustls sends handshake_failure: either is a refusal
    // by the server, unlike OpenSSL's own "no protocols available".)
    let mut c = s_client(
        server.addr(),
        &ca_file,
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    );
    c.close_stdin();
    let status = c.wait_exit();
    let stderr = c.stderr();
    assert!(!status.success(), "TLS 1.1 was accepted:\n{stderr}");
    assert!(
        stderr.contains("SSL alert number 40") || stderr.contains("SSL alert number 70"),
        "the server answers a TLS 1.1 ClientHello with a fatal alert:\n{stderr}"
    );
    // No application session ever started for it; the failed handshake
    // is reported through on_error.
    let events = server.drain();
    assert!(
        events.iter().all(|e| matches!(e, Ev::Error(..))),
        "{events:?}"
    );
    println!("TLS 1.1 attempt: {events:?}");
    tls_support::wait_until("no socket left", || server.handle.live_tasks() == 0);
}

/// `python3 tests/interop/tls_peer.py args...`
fn tls_peer(name: &str, args: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(python(&["ssl"]));
    cmd.arg(interop_script("tls_peer.py")).args(args);
    ChildGuard::spawn(name, &mut cmd)
}

#[test]
fn python_ssl_client_echoes_and_a_close_comes_with_close_notify() {
    let (ca, leaf) = pki();
    let dir = TempDir::new("py-client");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let server = TlsEcho::start(leaf.server_config(), |_| {});
    let port = server.addr().port().to_string();
    for name in ["localhost", "127.0.0.1"] {
        let mut c = tls_peer(
            "python ssl client",
            &[
                "client",
                &port,
                ca_file.to_str().unwrap(),
                name,
                "echo:hello from python",
                "echo:ünïcødé ✓",
                "close:please close",
            ],
        );
        let hello = c.json();
        assert_eq!(hello["version"], "TLSv1.3", "{hello}");
        assert_eq!(c.json()["echo"], "hello from python");
        assert_eq!(c.json()["echo"], "ünïcødé ✓");
        // The server's close() ended the stream with a close_notify:
        // Python (ragged EOFs not suppressed) reads a clean end.
        let eof = c.json();
        assert_eq!(eof["eof"], "clean", "{eof}");
        assert_eq!(c.json()["done"], true);
        c.expect_success();
        let Ev::Connect(id) = server.next("on_connect") else {
            panic!("on_connect first")
        };
        for line in ["hello from python", "ünïcødé ✓", "please close"] {
            assert_eq!(server.next("on_message"), Ev::Message(id, line.into()));
        }
        assert_eq!(
            server.next("on_close"),
            Ev::Close(id, lubdub::CloseReason::Local)
        );
    }
    tls_support::wait_until("no socket left", || server.handle.live_tasks() == 0);
    let events = server.drain();
    assert!(events.is_empty(), "nothing else was reported: {events:?}");
}

#[test]
fn close_sends_close_notify_as_openssl_s_client_sees_it() {
    let (ca, leaf) = pki();
    let dir = TempDir::new("s-client-close");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let server = TlsEcho::start(leaf.server_config(), |_| {});
    let mut c = s_client(server.addr(), &ca_file, &[]);
    c.line_where("the handshake summary", |l| l.starts_with("New, TLSv1.3"));
    c.send(b"please close\n");
    // s_client prints `closed` for SSL_ERROR_ZERO_RETURN: a close_notify.
    // A TCP end without one is an SSL error ("unexpected eof while
    // reading") and an exit status of 1.
    c.line_where("the close_notify", |l| l == "closed");
    let status = c.wait_exit();
    let stderr = c.stderr();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains("unexpected eof"), "{stderr}");
    let Ev::Connect(id) = server.next("on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(
        server.next("on_message"),
        Ev::Message(id, "please close".into())
    );
    assert_eq!(
        server.next("on_close"),
        Ev::Close(id, lubdub::CloseReason::Local)
    );
}

#[test]
fn lubdub_client_resumes_its_session_when_it_reconnects_to_a_python_server() {
    let (ca, leaf) = pki();
    let dir = TempDir::new("py-server");
    let chain = dir.write("chain.pem", &leaf.chain_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    let mut server = tls_peer(
        "python ssl server",
        &[
            "server",
            chain.to_str().unwrap(),
            key.to_str().unwrap(),
            "2",
        ],
    );
    let port = server.json()["port"].as_u64().unwrap() as u16;
    let (client, events) =
        tls_text_client(port, ca.client_config().server_name("localhost"), |c| {
            c.auto_reconnect(lubdub::Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_millis(200),
                seed: Some(7),
                ..lubdub::Backoff::default()
            });
        });
    // First session: a full handshake; the server echoes, then closes
    // with a close_notify.
    let first = server.json();
    assert_eq!(first["conn"], 0);
    assert_eq!(first["session_reused"], false, "{first}");
    assert_eq!(first["version"], "TLSv1.3");
    assert_eq!(server.json()["echo"], "hello 1");
    let Ev::Connect(id) = recv(&events, "on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(recv(&events, "the echo"), Ev::Message(id, "hello 1".into()));
    assert_eq!(
        recv(&events, "on_close"),
        Ev::Close(id, lubdub::CloseReason::PeerClosed)
    );
    // The client reconnects on its own and offers the ticket it got.
    let second = server.json();
    assert_eq!(second["conn"], 1);
    assert_eq!(
        second["session_reused"], true,
        "the reconnect resumed the session: {second}"
    );
    assert_eq!(server.json()["echo"], "hello 2");
    assert_eq!(recv(&events, "on_connect"), Ev::Connect(id));
    assert_eq!(recv(&events, "the echo"), Ev::Message(id, "hello 2".into()));
    // Stopping the loop closes the client with a close_notify; the server
    // sees the end and finishes.
    client.stop();
    assert_eq!(server.json()["done"], true);
    server.expect_success();
    let rest: Vec<Ev> = events.try_iter().collect();
    assert!(
        rest.iter().all(|e| matches!(e, Ev::Close(..))),
        "no error (no truncation either way): {rest:?}"
    );
}
