//! lubdub's TLS against real peers over loopback: OpenSSL's `s_client` and
//! `s_server`, Python's `ssl` module (client and server), Python
//! `websockets` over wss://; certificate reloads; the heartbeat's idle clock
//! over TLS. Peers are found on this machine and started by the tests (a
//! missing one fails with what to install); certificates are made per test
//! with rcgen (a CA and the leaves it signs).

mod tls_support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lubdub::heartbeat::{Heartbeat, TextHeartbeat};
use lubdub::ws::{Message, WebSocketHooks, Ws, WsConfig};
use lubdub::{Client, CloseReason, SessionClose, Worker};
use tls_support::{
    interop_script, openssl, pki, python, recv, tls_text_client, Ca, ChildGuard, Ev, LoopGuard,
    TempDir, TlsEcho, TlsLineClient,
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

#[test]
fn python_websockets_over_wss_echoes_and_closes_with_codes() {
    let py = python(&["ssl", "websockets"]);
    let (ca, leaf) = pki();
    let dir = TempDir::new("wss");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let mut w =
        Worker::with_protocol("wss://127.0.0.1:0", Ws::server(WsConfig::default())).unwrap();
    w.name("wss-echo").tls(leaf.server_config());
    w.on_websocket_connect(|conn, req| {
        conn.set_context(req.path().to_owned());
        Ok(())
    });
    w.on_message(|c, msg| match &msg {
        Message::Text(t) if t == "please close" => c.close_session(4002, "done"),
        Message::Text(_) | Message::Binary(_) => {
            let _ = c.send(&msg);
        }
        _ => {}
    });
    let (tx, closes) = mpsc::channel();
    let tx = Mutex::new(tx);
    w.on_close(move |c, r| {
        let path = c
            .context::<String>()
            .map(|p| (*p).clone())
            .unwrap_or_default();
        let _ = tx.lock().unwrap().send((path, r.clone()));
    });
    let h = w.start().unwrap();
    let port = h.local_addr().port();
    let mut c = ChildGuard::spawn(
        "python websockets client",
        Command::new(py)
            .arg(interop_script("tls_wss_client.py"))
            .arg(format!("wss://127.0.0.1:{port}"))
            .arg(&ca_file),
    );
    assert_eq!(c.json()["tls"], "TLSv1.3");
    assert_eq!(c.json()["text"], "hello over wss");
    let binary = c.json();
    assert_eq!(binary["binary_ok"], true, "{binary}");
    assert_eq!(binary["len"], 100_000);
    let server_close = c.json();
    assert_eq!(server_close["close_code"], 4002, "{server_close}");
    assert_eq!(server_close["close_reason"], "done");
    let client_close = c.json();
    assert_eq!(client_close["echo_code"], 4001, "{client_close}");
    assert_eq!(c.json()["done"], true);
    c.expect_success();
    let mut seen: Vec<(String, CloseReason)> = (0..3).map(|_| recv(&closes, "on_close")).collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    println!("wss closes: {seen:?}");
    assert_eq!(
        seen[0],
        (
            "/client-close".to_owned(),
            CloseReason::Session(SessionClose::by_peer(4001, "bye"))
        )
    );
    assert_eq!(
        seen[1],
        (
            "/echo".to_owned(),
            CloseReason::Session(SessionClose::by_peer(1000, ""))
        )
    );
    // close_session(4002, "done"): a local close of the session.
    assert_eq!(
        seen[2],
        (
            "/server-close".to_owned(),
            CloseReason::Session(SessionClose::local(4002, "done"))
        )
    );
    // lubdub's own wss client, trusting the same CA, on the same server.
    let (tx, got) = mpsc::channel();
    let client_ca = ca.client_config();
    let lp = LoopGuard::spawn(move |_| {
        let mut client = Client::<Ws>::new(format!("wss://127.0.0.1:{port}/lubdub")).unwrap();
        client.tls(client_ca);
        client.on_connect(|c| {
            let _ = c.send(&Message::Text("hello from lubdub over wss".into()));
        });
        client.on_message(move |_, m| {
            let _ = tx.send(m);
        });
        client.connect().unwrap();
    });
    assert_eq!(
        recv(&got, "the echo"),
        Message::Text("hello from lubdub over wss".into())
    );
    lp.stop();
    h.stop_and_wait();
}

/// `openssl s_server` with `args`, on a free loopback port; returns it and
/// its port.
fn s_server(args: &[&std::ffi::OsStr]) -> (ChildGuard, u16) {
    // Line-buffered stdout (s_server writes through stdio), so its trace
    // can be followed as it happens.
    let mut cmd = Command::new("stdbuf");
    cmd.arg("-oL")
        .arg(openssl())
        .args(["s_server", "-accept", "127.0.0.1:0"])
        .args(args);
    let mut server = ChildGuard::spawn("openssl s_server", &mut cmd);
    let line = server.line_where("ACCEPT", |l| l.starts_with("ACCEPT "));
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in `{line}`"));
    (server, port)
}

#[test]
fn lubdub_client_against_openssl_s_server_sends_sni_and_checks_the_certificate() {
    let default_ca = Ca::new("default CA");
    let default_leaf = default_ca.leaf(&["default.test", "127.0.0.1"]);
    let sni_ca = Ca::new("SNI CA");
    let sni_leaf = sni_ca.leaf(&["sni.test"]);
    let dir = TempDir::new("s-server");
    let files = [
        dir.write("default.pem", &default_leaf.chain_pem),
        dir.write("default.key", &default_leaf.key_pem),
        dir.write("sni.pem", &sni_leaf.chain_pem),
        dir.write("sni.key", &sni_leaf.key_pem),
    ];
    // The second certificate for the SNI name `sni.test`; another name is
    // refused with a fatal alert. `-rev` echoes every line reversed; one
    // connection per server (`-naccept 1`); `-trace` prints the handshake, with the
    // name received and whether the second certificate was switched to.
    let sni_server = || {
        s_server(&[
            "-cert".as_ref(),
            files[0].as_os_str(),
            "-key".as_ref(),
            files[1].as_os_str(),
            "-cert2".as_ref(),
            files[2].as_os_str(),
            "-key2".as_ref(),
            files[3].as_os_str(),
            "-servername".as_ref(),
            "sni.test".as_ref(),
            "-servername_fatal".as_ref(),
            "-rev".as_ref(),
            "-naccept".as_ref(),
            "1".as_ref(),
            "-trace".as_ref(),
        ])
    };

    // 1. SNI `sni.test`, trusting only the CA of the second certificate.
    let (mut server, port) = sni_server();
    let (client, events) =
        tls_text_client(port, sni_ca.client_config().server_name("sni.test"), |_| {});
    server.line_where("the name received", |l| {
        l == "Hostname in TLS extension: \"sni.test\""
    });
    server.line_where("the second certificate", |l| {
        l == "Switching server context."
    });
    let Ev::Connect(id) = recv(&events, "on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(
        recv(&events, "the reversed line"),
        Ev::Message(id, "1 olleh".into())
    );
    client.stop();

    // 2. Another SNI name: the server refuses it.
    let (mut server, port) = sni_server();
    let (client, events) = tls_text_client(
        port,
        sni_ca.client_config().server_name("other.test"),
        |_| {},
    );
    server.line_where("the name received", |l| {
        l == "Hostname in TLS extension: \"other.test\""
    });
    match recv(&events, "the refusal") {
        Ev::Error(_, text, Some(std::io::ErrorKind::InvalidData)) => {
            assert!(text.contains("UnrecognisedName"), "{text}")
        }
        ev => panic!("{ev:?}"),
    }
    client.stop();
    drop(server);

    // 3. An IP address: no SNI (RFC 6066 allows none), the default
    // certificate, checked against the IP.
    let (mut server, port) = sni_server();
    let (client, events) = tls_text_client(port, default_ca.client_config(), |_| {});
    let Ev::Connect(id) = recv(&events, "on_connect") else {
        panic!("on_connect first")
    };
    assert_eq!(
        recv(&events, "the reversed line"),
        Ev::Message(id, "1 olleh".into())
    );
    // Our close ends s_server (one connection with -rev): all its output.
    client.stop();
    let trace = server.rest_of_stdout();
    assert!(
        trace.iter().any(|l| l.contains("ClientHello")),
        "the trace shows the handshake: {trace:?}"
    );
    assert!(
        !trace
            .iter()
            .any(|l| l.contains("server_name") || l.starts_with("Hostname in TLS extension")),
        "no SNI for an IP address: {trace:?}"
    );

    // 4. SNI `sni.test` but trusting only the default CA: the certificate
    // the server picks for that name is refused by the client.
    let (_server, port) = sni_server();
    let (client, events) = tls_text_client(
        port,
        default_ca.client_config().server_name("sni.test"),
        |_| {},
    );
    match recv(&events, "the refusal") {
        Ev::Error(_, text, Some(std::io::ErrorKind::InvalidData)) => {
            assert!(text.contains("UnknownIssuer"), "{text}")
        }
        ev => panic!("{ev:?}"),
    }
    client.stop();
}

/// The SHA-256 fingerprint of the certificate `openssl s_client` is
/// served at `addr` (verified against `ca_file`), as `openssl x509
/// -fingerprint` computes it.
fn served_fingerprint(addr: std::net::SocketAddr, ca_file: &std::path::Path) -> String {
    let mut c = s_client(addr, ca_file, &[]);
    c.line_where("the server certificate", |l| {
        l == "-----BEGIN CERTIFICATE-----"
    });
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    loop {
        let line = c.line();
        pem.push_str(&line);
        pem.push('\n');
        if line == "-----END CERTIFICATE-----" {
            break;
        }
    }
    c.line_where("a verified chain", |l| {
        l.trim() == "Verify return code: 0 (ok)"
    });
    c.close_stdin();
    c.expect_success();
    let mut x509 = Command::new(openssl())
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl x509 failed");
    // `sha256 Fingerprint=AB:CD:...`
    let out = String::from_utf8(out.stdout).unwrap();
    out.trim()
        .split_once('=')
        .map(|(_, f)| f.to_owned())
        .unwrap_or_else(|| panic!("no fingerprint in `{out}`"))
}

#[test]
fn reload_tls_gives_new_handshakes_the_new_certificate_and_keeps_open_connections() {
    let old_ca = Ca::new("old CA");
    let old_leaf = old_ca.leaf(&["localhost", "127.0.0.1"]);
    let new_ca = Ca::new("new CA");
    let new_leaf = new_ca.leaf(&["localhost", "127.0.0.1"]);
    assert_ne!(old_leaf.fingerprint(), new_leaf.fingerprint());
    let dir = TempDir::new("reload");
    let old_ca_file = dir.write("old-ca.pem", &old_ca.cert_pem);
    let new_ca_file = dir.write("new-ca.pem", &new_ca.cert_pem);
    let server = TlsEcho::start(old_leaf.server_config(), |_| {});
    let addr = server.addr();

    let mut before = TlsLineClient::connect(addr, &old_ca.rustls_config(), "localhost").unwrap();
    assert_eq!(before.roundtrip("before the reload"), "before the reload");
    assert_eq!(
        served_fingerprint(addr, &old_ca_file),
        old_leaf.fingerprint()
    );

    server.handle.reload_tls(new_leaf.server_config()).unwrap();

    // New handshakes: the new certificate. A client trusting only the new
    // CA gets in; one trusting only the old CA does not.
    let mut after = TlsLineClient::connect(addr, &new_ca.rustls_config(), "localhost").unwrap();
    assert_eq!(after.roundtrip("after the reload"), "after the reload");
    let refused = TlsLineClient::connect(addr, &old_ca.rustls_config(), "localhost")
        .err()
        .expect("a client trusting only the old CA is refused");
    assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
    assert_eq!(
        served_fingerprint(addr, &new_ca_file),
        new_leaf.fingerprint()
    );
    // The connection opened before the reload keeps its session.
    for i in 0..3 {
        let line = format!("still here {i}");
        assert_eq!(before.roundtrip(&line), line);
    }
    assert_eq!(after.roundtrip("both"), "both");

    // A worker without TLS has nothing to reload.
    let plain = Worker::<lubdub::Text>::new("text://127.0.0.1:0")
        .unwrap()
        .start()
        .unwrap();
    assert!(matches!(
        plain.reload_tls(new_leaf.server_config()),
        Err(lubdub::Misuse::InvalidState(_))
    ));
    plain.stop_and_wait();
}

// ---------------------------------------------------------------------------
// The heartbeat over TLS.
// ---------------------------------------------------------------------------

/// The longest stall of one thread the test must survive (see
/// tests/heartbeat.rs for the reasoning).
const STALL: Duration = Duration::from_secs(1);
/// Timeout where a live peer must not be closed: twice [`STALL`].
const LIVE_TIMEOUT: Duration = Duration::from_secs(2 * STALL.as_secs());
/// Slack on "closed within" bounds: one [`STALL`] plus 1 s of noise.
const SLACK: Duration = Duration::from_secs(STALL.as_secs() + 1);

#[test]
fn the_heartbeat_counts_decrypted_traffic_a_talking_tls_peer_stays_a_silent_one_goes() {
    let check = Duration::from_millis(100);
    let (ca, leaf) = pki();
    let server = TlsEcho::start(leaf.server_config(), |w| {
        w.plugin(
            Heartbeat::server(TextHeartbeat::new())
                .check_interval(check)
                .timeout(LIVE_TIMEOUT),
        );
    });
    let config = ca.rustls_config();
    // The talker pings every 50 ms over TLS and reads the pongs.
    let mut talker = TlsLineClient::connect(server.addr(), &config, "localhost").unwrap();
    let Ev::Connect(talker_id) = server.next("the talker's on_connect") else {
        panic!("on_connect first")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let talking = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut pongs = 0;
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(talker.roundtrip("ping"), "pong");
                pongs += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (pongs, talker)
        }
    });
    // The silent peer completes its handshake and says nothing.
    // Taken before the connect: a stall cannot break the lower bound.
    let t0 = Instant::now();
    let mut silent = TlsLineClient::connect(server.addr(), &config, "localhost").unwrap();
    let Ev::Connect(silent_id) = server.next("the silent peer's on_connect") else {
        panic!("on_connect")
    };
    // The next event is the silent peer's close: the talker's pings are
    // the heartbeat's, not on_message's.
    let reason = match server.next("the silent peer's close") {
        Ev::Close(id, reason) if id == silent_id => reason,
        ev => panic!("{ev:?}"),
    };
    let took = t0.elapsed();
    assert_eq!(reason, CloseReason::HeartbeatTimeout);
    assert!(took >= LIVE_TIMEOUT, "closed after {took:?}");
    assert!(
        took <= LIVE_TIMEOUT + check + SLACK,
        "closed after {took:?}, beyond timeout + check interval + slack"
    );
    // Closed with a close_notify: a clean end.
    assert_eq!(silent.line().unwrap(), None);
    // The talker, connected first, stays for another half timeout.
    match server.events.recv_timeout(LIVE_TIMEOUT / 2) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("nothing happens to the talker: {other:?}"),
    }
    stop.store(true, Ordering::SeqCst);
    let (pongs, talker) = talking.join().unwrap();
    assert!(pongs >= 10, "{pongs} pongs");
    assert!(server.handle.connections().contains_key(&talker_id));
    drop(talker);
}

#[test]
fn openssl_s_client_resumes_a_session_with_the_server() {
    let (ca, leaf) = pki();
    let dir = TempDir::new("s-client-resume");
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let session = dir.path().join("session.pem");
    let server = TlsEcho::start(leaf.server_config(), |_| {});
    for (version, flag) in [("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")] {
        let _ = std::fs::remove_file(&session);
        // First: a full handshake; the session (a TLS 1.3 ticket, read
        // after the echo) is saved.
        let mut c = s_client(
            server.addr(),
            &ca_file,
            &[flag, "-sess_out", session.to_str().unwrap()],
        );
        let summary = c.line_where("the handshake summary", |l| l.starts_with("New, "));
        assert!(summary.starts_with(&format!("New, {version}")), "{summary}");
        c.send(b"first\n");
        c.line_where("the echo", |l| l == "first");
        c.close_stdin();
        c.expect_success();
        assert!(session.exists(), "{version}: no session saved");
        // Second: offered back, and resumed.
        let mut c = s_client(
            server.addr(),
            &ca_file,
            &[flag, "-sess_in", session.to_str().unwrap()],
        );
        let summary = c.line_where("the handshake summary", |l| {
            l.starts_with("New, ") || l.starts_with("Reused, ")
        });
        assert!(
            summary.starts_with(&format!("Reused, {version}")),
            "{version}: the session was not resumed: {summary}"
        );
        c.send(b"second\n");
        c.line_where("the echo", |l| l == "second");
        c.close_stdin();
        c.expect_success();
    }
    let events = server.drain();
    let connects = events
        .iter()
        .filter(|e| matches!(e, Ev::Connect(_)))
        .count();
    assert_eq!(connects, 4, "{events:?}");
}
