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
    openssl, pki, python, recv, interop_script, Ca, ChildGuard, Ev, TempDir, TlsEcho,
    TlsLineClient,
};

/// `openssl s_client` against `addr`, trusting `ca_file`, with `extra`
/// flags.
fn s_client(addr: std::net::SocketAddr, ca_file: &std::path::Path, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(openssl());
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(ca_file)
        .args(["-servername", "localhost", "-verify_return_error", "-nocommands"])
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
