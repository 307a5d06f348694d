//! lubdub's HTTP/1.1 server (`lubdub::http`) in process on a free loopback
//! port, against clients nobody here wrote (curl, Python's `http.client`
//! and a raw Python socket for pipelining) and hostile raw sockets: every
//! limit and every request-smuggling shape gets its status and a close.
//!
//! Needs `curl` and `python3` (`.ci/run` installs curl); a missing one
//! fails the test with that message.

mod common;
mod http_support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{recv, WAIT};
use http_support::{program, read_to_eof, run, serve, serve_default};
use lubdub::http::HttpConfig;
use lubdub::Limits;

fn curl() -> Command {
    let mut cmd = Command::new(program("curl"));
    cmd.args(["--silent", "--show-error", "--max-time", "20"]);
    cmd
}

fn python(script: &str) -> Command {
    let mut cmd = Command::new(program("python3"));
    cmd.arg("-c").arg(script);
    cmd
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("lubdub-http-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A body of `n` bytes that is not all the same byte.
fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn curl_reuses_a_keep_alive_connection() {
    let s = serve_default();
    let url = s.url("/id");
    let (out, err) = run(curl().args(["-v", "-w", "|", &url, &url, &url]));
    let ids: Vec<&str> = out.split('|').filter(|x| !x.is_empty()).collect();
    assert_eq!(ids.len(), 3, "{out}");
    assert!(ids.iter().all(|id| *id == ids[0]), "one connection: {out}");
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );
    assert!(err.contains("< date: "), "a Date header: {err}");
}

#[test]
fn curl_uploads_a_chunked_body() {
    let s = serve_default();
    let data = body(300_000);
    let file = temp_file("chunked", &data);
    let (out, err) = run(curl().args([
        "-v",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &s.url("/echo"),
    ]));
    let _ = std::fs::remove_file(&file);
    assert!(err.contains("< x-chunked: true"), "{err}");
    assert_eq!(out.len(), data.len());
    assert!(out.as_bytes() == data.as_slice());
}

#[test]
fn curl_waits_for_100_continue() {
    let s = serve_default();
    let data = body(200_000);
    let file = temp_file("expect", &data);
    // curl would send the body after a second anyway: give it 30 s, so
    // only the server's 100 Continue makes it go on in time.
    let start = Instant::now();
    let (out, err) = run(curl().args([
        "-v",
        "--expect100-timeout",
        "30",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", file.display()),
        &s.url("/echo"),
    ]));
    let _ = std::fs::remove_file(&file);
    assert!(err.contains("< HTTP/1.1 100 Continue"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(out.len(), data.len());
}

#[test]
fn curl_head_http10_and_a_streamed_body() {
    let s = serve_default();
    // HEAD: headers only, with the length the body would have.
    let (out, _) = run(curl().args(["-I", &s.url("/echo")]));
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("content-length: 0\r\n") && out.contains("x-method: HEAD"),
        "{out}"
    );
    // HTTP/1.0: no keep-alive unless asked, so the server closes.
    let (out, err) = run(curl().args(["-v", "--http1.0", &s.url("/stream")]));
    assert_eq!(out, "one,two,three");
    assert!(err.contains("< connection: close"), "{err}");
    let (_, stats) = recv(&s.closed);
    assert_eq!(stats.messages_in, 1);
    // HTTP/1.1: chunked.
    let (out, err) = run(curl().args(["-v", &s.url("/stream")]));
    assert_eq!(out, "one,two,three");
    assert!(err.contains("< transfer-encoding: chunked"), "{err}");
}

#[test]
fn connection_close_closes_after_the_response() {
    let s = serve_default();
    let (out, err) = run(curl().args(["-v", "-H", "Connection: close", &s.url("/id")]));
    assert!(!out.is_empty());
    assert!(err.contains("< connection: close"), "{err}");
    let (_, stats) = recv(&s.closed);
    assert_eq!((stats.messages_in, stats.messages_out), (1, 1));
}

#[test]
fn python_http_client_keeps_one_connection() {
    let s = serve_default();
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=20)
ids = set()
for i in range(5):
    c.request("GET", "/id")
    r = c.getresponse()
    assert r.status == 200, r.status
    ids.add(r.read())
c.request("POST", "/echo", body=b"x" * 1000)
r = c.getresponse()
assert r.read() == b"x" * 1000
c.request("GET", "/nothing")
r = c.getresponse()
assert r.status == 404 and r.read() == b"not found\n"
assert len(ids) == 1, ids
print("ok")
"#,
        port = s.addr.port()
    );
    let (out, _) = run(&mut python(&script));
    assert_eq!(out.trim(), "ok");
}

/// 16 requests in one write from a raw Python socket: 16 responses in
/// order, and far fewer writes than responses.
#[test]
fn pipelined_requests_by_hand() {
    let s = serve_default();
    let script = format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}), timeout=20)
reqs = b""
for i in range(16):
    if i % 2:
        reqs += b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(str(i)), str(i).encode())
    else:
        reqs += b"GET /nothing-%d HTTP/1.1\r\nHost: x\r\n\r\n" % i
reqs += b"GET /id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
s.sendall(reqs)
f = s.makefile("rb")
out = []
while True:
    line = f.readline()
    if not line:
        break
    status = int(line.split()[1])
    length = 0
    while True:
        h = f.readline()
        if h == b"\r\n":
            break
        k, v = h.split(b":", 1)
        if k.lower() == b"content-length":
            length = int(v)
    body = f.read(length)
    out.append((status, body))
assert len(out) == 17, out
for i, (status, body) in enumerate(out[:16]):
    if i % 2:
        assert (status, body) == (200, str(i).encode()), (i, status, body)
    else:
        assert status == 404, (i, status)
print("ok")
"#,
        port = s.addr.port()
    );
    let (out, _) = run(&mut python(&script));
    assert_eq!(out.trim(), "ok");
    let (_, stats) = recv(&s.closed);
    assert_eq!((stats.messages_in, stats.messages_out), (17, 17));
    assert!(
        stats.write_calls <= 4,
        "pipelined answers are batched: {} writes for 17 responses",
        stats.write_calls
    );
}

/// Sends `request` on a fresh connection; the server's whole answer until
/// it closes.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // The server may answer and close before a long request is written.
    let _ = stream.write_all(request);
    String::from_utf8_lossy(&read_to_eof(&mut stream)).into_owned()
}

fn status_line(status: u16) -> String {
    let reason = lubdub::http::http::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    format!("HTTP/1.1 {status} {reason}\r\n")
}

/// Asserts the answer to `request` is the responses of the valid requests
/// before it (`before`), then `status` with `Connection: close`, then the
/// end of the stream.
fn assert_refused(addr: std::net::SocketAddr, what: &str, request: &[u8], status: u16) {
    let good = b"GET /id HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = exchange(addr, &[&good[..], request].concat());
    let first = answer.find(&status_line(200));
    let refusal = answer.find(&status_line(status));
    assert!(
        first == Some(0) && refusal.is_some(),
        "{what}: the valid request's answer, then {status}:\n{answer}"
    );
    let tail = &answer[refusal.unwrap()..];
    assert!(tail.contains("connection: close\r\n"), "{what}: {tail}");
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        2,
        "{what}: nothing after the refusal: {answer}"
    );
}

#[test]
fn smuggling_shapes_get_400_and_a_close() {
    let s = serve_default();
    let cases: &[(&str, &[u8])] = &[
        ("CL and TE", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE and CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ("duplicate CL", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab"),
        ("CL list", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\nab"),
        ("CL sign", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na"),
        ("TE not chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n"),
        ("TE chunked twice", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("chunk size not hex", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\ng\r\nabc\r\n0\r\n\r\n"),
        ("chunk size with space", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"),
        ("chunk size overflow", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000003\r\nabc\r\n0\r\n\r\n"),
        ("chunk longer than its size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"),
        ("obs-fold", b"GET /id HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  2\r\n\r\n"),
        ("bare CR", b"GET /id HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n"),
        ("bare LF", b"GET /id HTTP/1.1\nHost: x\n\n\r\n\r\n"),
        ("space before colon", b"GET /id HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\n"),
        ("two Hosts", b"GET /id HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ("no Host", b"GET /id HTTP/1.1\r\n\r\n"),
    ];
    for (what, request) in cases {
        assert_refused(s.addr, what, request, 400);
    }
}

#[test]
fn limits_get_their_status_and_a_close() {
    let config = HttpConfig::default().max_body_size(1000).max_headers(16);
    let s = serve(config, Limits::default());
    let mut big_head = b"GET /id HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_head.resize(17 * 1024, b'a');
    assert_refused(s.addr, "a head past 16 KiB", &big_head, 431);
    let mut many = b"GET /id HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..16 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_refused(s.addr, "17 header lines", &many, 431);
    assert_refused(
        s.addr,
        "a Content-Length past the limit",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    let mut chunks =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunks.extend_from_slice(b"190\r\n");
        chunks.extend_from_slice(&[b'z'; 400]);
        chunks.extend_from_slice(b"\r\n");
    }
    assert_refused(s.addr, "chunks adding up past the limit", &chunks, 413);
    assert_refused(
        s.addr,
        "HTTP/2 in an HTTP/1 line",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        505,
    );
}

/// A slowloris peer trickling its head gets `408` when the request
/// deadline passes, although it never stops sending for long; a peer that
/// stops halfway is closed by the worker's message timeout.
#[test]
fn slow_requests_time_out() {
    let config = HttpConfig::default().request_timeout(Duration::from_millis(300));
    let limits = Limits::default().message_timeout(Some(Duration::from_millis(400)));
    let s = serve(config, limits);
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(b"GET /id HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    // The attack itself is slow: one header byte every 50 ms.
    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        std::thread::sleep(Duration::from_millis(50));
        if stream.write_all(&[*b]).is_err() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_to_eof(&mut stream)).into_owned();
    assert!(answer.starts_with(&status_line(408)), "{answer}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Silent halfway: closed without an answer by the message timeout.
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .unwrap();
    let start = Instant::now();
    let answer = read_to_eof(&mut stream);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// A body arriving in pieces is held by the session and counted against
/// the worker's message limit (`Limits::max_package_size`) too.
#[test]
fn the_worker_message_limit_counts_a_held_body() {
    let config = HttpConfig::default().max_body_size(1 << 20);
    let s = serve(config, Limits::default().max_package_size(64 * 1024));
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    for _ in 0..20 {
        if stream.write_all(&[b'q'; 10_000]).is_err() {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_to_eof(&mut stream)).into_owned();
    assert!(answer.starts_with(&status_line(413)), "{answer}");
}
