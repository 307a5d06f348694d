//! Hostile WebSocket peers against the `ws_echo` worker in process, over
//! real loopback sockets, with the raw client of `tests/ws_raw`. Each case
//! checks the exact answer (an HTTP status before the upgrade, a close
//! code after it) and that the server closes the connection, while a
//! healthy client on the same worker keeps round-tripping.

mod common;
mod ws_raw;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{recv, WAIT};
use lubdub::ws::{DeflateConfig, Message, WsConfig};
use lubdub::{ConnError, Limits, ProtocolError};
use ws_raw::deflate::bomb;
use ws_raw::*;

const PROTOCOL_ERROR: &[Option<u16>] = &[Some(1002)];
const TOO_BIG: &[Option<u16>] = &[Some(1009)];

/// Sends `request` on a new connection and returns the HTTP response the
/// server gave before closing (and the response head parsed).
fn http_exchange(addr: std::net::SocketAddr, request: &[u8]) -> (Response, String) {
    let mut s = tcp(addr);
    // The server may answer and stop reading before a long request ends.
    let _ = s.write_all(request);
    let raw = read_to_eof(&mut s);
    let text = String::from_utf8(raw).expect("an ASCII response");
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    (parse_response(head), text)
}

/// The upgrade request's lines without the final blank line, for tests
/// that change or add lines.
fn request_lines(addr: std::net::SocketAddr) -> String {
    let r = String::from_utf8(upgrade_request(addr, &[])).unwrap();
    r.trim_end_matches("\r\n").to_owned() + "\r\n"
}

#[test]
fn bad_upgrade_requests_get_their_http_status_and_a_close() {
    let connects = Arc::new(AtomicUsize::new(0));
    let mut w = echo_worker(WsConfig::default());
    {
        let connects = connects.clone();
        w.on_connect(move |_| {
            connects.fetch_add(1, Ordering::SeqCst);
        });
    }
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let lines = request_lines(addr);
    let no_key: String = lines
        .lines()
        .filter(|l| !l.starts_with("Sec-WebSocket-Key"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let short_key = lines.replace(KEY, "c2hvcnQ=");
    let version_8 = lines.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let post = lines.replacen("GET ", "POST ", 1);
    let http_10 = lines.replacen("HTTP/1.1", "HTTP/1.0", 1);
    let no_host: String = lines
        .lines()
        .filter(|l| !l.starts_with("Host:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let no_connection_upgrade = lines.replace("Connection: Upgrade", "Connection: keep-alive");
    let plain_get = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    // 100 KiB of headers: 100 lines of 1 KiB, and one line of 100 KiB.
    let filler = "a".repeat(1000);
    let many_lines: String = (0..100)
        .map(|i| format!("X-Filler-{i:03}: {filler}\r\n"))
        .collect();
    let one_line = format!("X-Filler: {}\r\n", "b".repeat(100 * 1024));
    // Too many header lines, each short: 200 lines, about 3 KiB.
    let too_many: String = (0..200).map(|i| format!("X-{i}: 1\r\n")).collect();
    let twice = |line: &str| format!("{lines}{line}\r\n");
    let cases: Vec<(&str, String, u16)> = vec![
        ("a second Host", twice("Host: example.com"), 400),
        ("a second Upgrade", twice("Upgrade: websocket"), 400),
        (
            "a second key",
            twice(&format!("Sec-WebSocket-Key: {KEY}")),
            400,
        ),
        ("a second version", twice("Sec-WebSocket-Version: 13"), 400),
        (
            "two Origins",
            twice(&format!("Origin: http://{addr}\r\nOrigin: http://{addr}")),
            400,
        ),
        // Cross-site WebSocket hijacking: a page of another origin.
        (
            "a foreign Origin",
            twice("Origin: http://evil.example"),
            403,
        ),
        ("Origin: null", twice("Origin: null"), 403),
        ("no Sec-WebSocket-Key", no_key, 400),
        ("a key that is not 16 bytes", short_key, 400),
        ("Sec-WebSocket-Version: 8", version_8, 426),
        ("a POST", post, 400),
        ("HTTP/1.0", http_10, 400),
        ("no Host", no_host, 400),
        ("Connection without upgrade", no_connection_upgrade, 400),
        ("a plain GET, no upgrade", plain_get, 426),
        ("100 lines of 1 KiB", format!("{lines}{many_lines}"), 431),
        ("one header of 100 KiB", format!("{lines}{one_line}"), 431),
        ("200 header lines", format!("{lines}{too_many}"), 431),
        ("not HTTP", "\x16\x03\x01\x02\x00 hello\r\n".into(), 400),
    ];
    for (i, (what, head, status)) in cases.into_iter().enumerate() {
        let request = format!("{head}\r\n");
        let (res, text) = http_exchange(addr, request.as_bytes());
        assert_eq!(res.status, status, "{what}: {text}");
        assert_eq!(res.header("Connection"), Some("close"), "{what}");
        if status == 426 {
            assert_eq!(res.header("Sec-WebSocket-Version"), Some("13"), "{what}");
        }
        if what.starts_with("a plain GET") {
            assert_eq!(res.header("Upgrade"), Some("websocket"), "{what}");
        }
        healthy.roundtrip(&format!("still here {i}"));
    }
    // A page of the server's own origin upgrades.
    let origin = format!("http://{addr}");
    let mut same = RawClient::connect_with(addr, &[("Origin", origin.as_str())]);
    same.roundtrip("same origin");
    same.close(1000, &[Some(1000)]);
    // None of the others reached on_connect; the two clients did.
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    healthy.close(1000, &[Some(1000)]);
    h.stop_and_wait();
}

#[test]
fn an_upgrade_trickled_one_byte_at_a_time_completes() {
    let h = echo_server(WsConfig::default());
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let mut s = tcp(addr);
    let request = upgrade_request(addr, &[]);
    for (i, b) in request.iter().enumerate() {
        s.write_all(std::slice::from_ref(b)).unwrap();
        if i % 32 == 0 {
            healthy.roundtrip("meanwhile");
        }
    }
    // The 101, then a frame trickled the same way is echoed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut one = [0u8; 1];
        std::io::Read::read_exact(&mut s, &mut one).expect("the 101 response");
        head.push(one[0]);
    }
    let res = parse_response(std::str::from_utf8(&head).unwrap());
    assert_eq!(res.status, 101);
    assert_eq!(res.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    let frame = cframe(true, 0, OP_TEXT, "slowly, slowly".as_bytes());
    for b in &frame {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut echo = [0u8; 16];
    std::io::Read::read_exact(&mut s, &mut echo).unwrap();
    assert_eq!(&echo[..2], &[0x81, 14]);
    assert_eq!(&echo[2..], b"slowly, slowly");
    healthy.roundtrip("after");
    h.stop_and_wait();
}

#[test]
fn frames_right_behind_the_upgrade_request_are_decoded_after_it() {
    let h = echo_server(WsConfig::default());
    let addr = h.local_addr();
    let mut s = tcp(addr);
    let mut bytes = upgrade_request(addr, &[]);
    bytes.extend_from_slice(&cframe(true, 0, OP_TEXT, b"first"));
    bytes.extend_from_slice(&cframe(true, 0, OP_PING, b"second"));
    bytes.extend_from_slice(&cframe(true, 0, OP_CLOSE, &close_payload(1000, b"")));
    s.write_all(&bytes).unwrap();
    let got = read_to_eof(&mut s);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let res = parse_response(std::str::from_utf8(&got[..head_end]).unwrap());
    assert_eq!(res.status, 101);
    // The echo and the pong (the protocol's own bytes may overtake queued
    // messages: RFC 6455 allows control frames anywhere), then the close
    // echo last, then EOF.
    let echo = encode(true, 0, OP_TEXT, None, b"first");
    let pong = encode(true, 0, OP_PONG, None, b"second");
    let close = encode(true, 0, OP_CLOSE, None, &close_payload(1000, b""));
    let frames = &got[head_end..];
    assert!(
        frames == [&echo[..], &pong, &close].concat()
            || frames == [&pong[..], &echo, &close].concat(),
        "{frames:02x?}"
    );
    h.stop_and_wait();
}

#[test]
fn a_stalled_upgrade_is_closed_by_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut w = echo_worker(WsConfig::default());
    w.limits(Limits::default().handshake_timeout(TIMEOUT));
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let lines = request_lines(addr);
    // Half a head, and nothing at all.
    for partial in [&lines[..lines.len() / 2], ""] {
        let started = Instant::now();
        let mut s = tcp(addr);
        s.write_all(partial.as_bytes()).unwrap();
        let got = read_to_eof(&mut s);
        let took = started.elapsed();
        assert!(
            got.is_empty(),
            "answered {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(took >= TIMEOUT, "closed after {took:?}, before the timeout");
        assert!(took < WAIT);
        healthy.roundtrip("still here");
    }
    // The healthy client, established long before, is not timed out.
    assert!(h.connections().len() == 1);
    healthy.roundtrip("still here");
    h.stop_and_wait();
}

#[test]
fn absurd_frame_lengths_are_refused_with_1009_from_the_header() {
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker(WsConfig::default());
    w.on_error(move |_, e| {
        let _ = tx.send(e.to_string());
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let limit = WsConfig::default().max_frame_size as u64;
    for (i, len) in [1u64 << 63, u64::MAX, (1 << 63) - 1, 1 << 40, limit + 1]
        .into_iter()
        .enumerate()
    {
        let mut c = RawClient::connect(addr);
        // The header alone: no payload follows, the answer cannot wait for it.
        let key = c.key();
        let mut head = vec![0x82, 0xFF];
        head.extend_from_slice(&len.to_be_bytes());
        head.extend_from_slice(&key);
        c.send(&head);
        c.expect_close(TOO_BIG);
        let err = recv(&rx);
        assert!(err.contains("exceeds the maximum"), "{len}: {err}");
        healthy.roundtrip(&format!("still here {i}"));
    }
    h.stop_and_wait();
}

/// Sends a message as fragments of `frag` bytes until the server answers
/// (or `cap` bytes went out); returns the bytes sent.
fn send_fragments_until_answered(c: &mut RawClient, opcode: u8, frag: usize, cap: usize) -> usize {
    let piece = vec![b'*'; frag];
    let mut sent = 0;
    let mut first = true;
    while sent < cap {
        let op = if first { opcode } else { OP_CONT };
        first = false;
        let f = c.frame(false, 0, op, &piece);
        if c.stream.write_all(&f).is_err() {
            break; // the server is gone; its close frame is in our buffer
        }
        sent += frag;
        if !c.nothing_received() {
            break;
        }
    }
    sent
}

#[test]
fn endless_fragments_end_with_1009_at_max_message_size() {
    const MAX: usize = 1 << 20;
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker(WsConfig::default().max_message_size(MAX));
    w.on_error(move |_, e| {
        if let ConnError::Protocol(ProtocolError::TooLarge { len, max }) = e {
            let _ = tx.send((*len, *max));
        }
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    for (opcode, frag) in [
        (OP_TEXT, 16 * 1024),
        (OP_BINARY, 64 * 1024),
        (OP_TEXT, 1000),
    ] {
        let mut c = RawClient::connect(addr);
        let sent = send_fragments_until_answered(&mut c, opcode, frag, 64 * MAX);
        c.expect_close(TOO_BIG);
        let (len, max) = recv(&rx);
        assert_eq!(max, MAX as u64);
        // Refused by the fragment that crosses the maximum, not later.
        assert!(len > MAX as u64 && len <= (MAX + frag) as u64, "{len}");
        assert!(sent > MAX);
        healthy.roundtrip("still here");
    }
    h.stop_and_wait();
}

/// The WebSocket limit is exact: a message of exactly `max_message_size`
/// arrives in fragments, plain and compressed, and comes back whole; one
/// byte more is 1009. The worker's limit sits 64 KiB above it, as
/// docs/limits.md advises: it counts what the session holds (a zlib
/// stream too) and the frame headers still buffered.
#[test]
fn a_message_of_exactly_the_limit_in_fragments_is_echoed() {
    const MAX: usize = 1 << 20;
    for deflate in [false, true] {
        let mut cfg = WsConfig::default()
            .max_message_size(MAX)
            .max_frame_size(MAX);
        if deflate {
            cfg = cfg.deflate(DeflateConfig::default());
        }
        let mut w = echo_worker(cfg);
        w.limits(
            Limits::default()
                .backpressure(lubdub::Backpressure::PauseRecv)
                .max_package_size(MAX + 64 * 1024),
        );
        let h = w.start().unwrap();
        let offer = [("Sec-WebSocket-Extensions", "permessage-deflate")];
        let extra: &[(&str, &str)] = if deflate { &offer } else { &[] };
        for frag in [64 * 1024, 1000] {
            let msg = repeat_to(b"lub dub ", MAX);
            let mut c = RawClient::connect_with(h.local_addr(), extra);
            send_in_fragments(&mut c, &msg, frag, deflate);
            let got = c.next_event();
            assert!(
                got == Ev::Binary(msg.clone()),
                "deflate {deflate}, fragments of {frag}: {got:?}"
            );
            let mut over = msg.clone();
            over.push(b'!');
            send_in_fragments(&mut c, &over, frag, deflate);
            c.expect_close(TOO_BIG);
        }
        h.stop_and_wait();
    }
}

/// Sends `msg` as a binary message in fragments of `frag` bytes,
/// compressed if `deflate`; stops quietly if the server closed first.
fn send_in_fragments(c: &mut RawClient, msg: &[u8], frag: usize, deflate: bool) {
    if deflate {
        c.send_compressed(OP_BINARY, msg, frag);
        return;
    }
    let pieces: Vec<&[u8]> = msg.chunks(frag).collect();
    let last = pieces.len() - 1;
    for (i, p) in pieces.into_iter().enumerate() {
        let op = if i == 0 { OP_BINARY } else { OP_CONT };
        let f = c.frame(i == last, 0, op, p);
        if c.stream.write_all(&f).is_err() {
            break;
        }
    }
}

#[test]
fn unmasked_client_frames_are_1002() {
    let messages = Arc::new(AtomicUsize::new(0));
    let mut w = echo_worker(WsConfig::default());
    {
        let messages = messages.clone();
        w.on_message(move |c, m| {
            messages.fetch_add(1, Ordering::SeqCst);
            let _ = c.send(&m);
        });
    }
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let frames = [
        encode(true, 0, OP_TEXT, None, b"unmasked"),
        encode(true, 0, OP_BINARY, None, b"unmasked"),
        encode(false, 0, OP_TEXT, None, b"first of two"),
        encode(true, 0, OP_PING, None, b"unmasked ping"),
        encode(true, 0, OP_CLOSE, None, &close_payload(1000, b"")),
    ];
    for (i, f) in frames.iter().enumerate() {
        let mut c = RawClient::connect(addr);
        c.send(f);
        c.expect_close(PROTOCOL_ERROR);
        healthy.roundtrip(&format!("still here {i}"));
    }
    // A masked fragment, then an unmasked continuation: 1002 too.
    let mut c = RawClient::connect(addr);
    c.send_frame(false, 0, OP_TEXT, b"masked ");
    c.send(&encode(true, 0, OP_CONT, None, b"unmasked"));
    c.expect_close(PROTOCOL_ERROR);
    healthy.roundtrip("still here");
    // Only the healthy client's messages were delivered.
    assert_eq!(messages.load(Ordering::SeqCst), frames.len() + 1);
    h.stop_and_wait();

    // The same frame is echoed by a server told to accept unmasked frames
    // (so the 1002 above is for the missing mask and nothing else).
    let h = echo_server(WsConfig::default().accept_unmasked_frames(true));
    let mut c = RawClient::connect(h.local_addr());
    c.send(&frames[0]);
    c.expect(&Ev::text("unmasked"));
    c.close(1000, &[Some(1000)]);
    h.stop_and_wait();
}

/// `VmRSS` and `VmHWM` (peak) of this process, in KiB.
fn memory_kib() -> (usize, usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn a_deflate_bomb_is_1009_and_never_inflated() {
    const MAX: usize = 1 << 20;
    const INFLATED: usize = 256 << 20;
    const MARGIN_KIB: usize = 64 << 10;
    let (tx, rx) = mpsc::channel();
    let mut w = echo_worker(
        WsConfig::default()
            .max_message_size(MAX)
            .deflate(DeflateConfig::default()),
    );
    w.on_error(move |_, e| {
        if let ConnError::Protocol(ProtocolError::TooLarge { len, max }) = e {
            let _ = tx.send((*len, *max));
        }
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let payload = bomb(INFLATED);
    assert!(payload.len() < 2 << 20, "{} bytes", payload.len());
    let offer = [(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    )];
    // One frame, fragments of 4 KiB, and a text message.
    for (opcode, frag) in [(OP_BINARY, 0), (OP_BINARY, 4096), (OP_TEXT, 0)] {
        let mut c = RawClient::connect_with(addr, &offer);
        assert!(c.agreed.is_some(), "deflate was negotiated");
        // Reset the peak to now (Linux >= 4.0), so the peak measures this case.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let (rss_before, hwm_before) = memory_kib();
        let pieces: Vec<&[u8]> = if frag == 0 {
            vec![&payload]
        } else {
            payload.chunks(frag).collect()
        };
        let last = pieces.len() - 1;
        let mut wire = Vec::new();
        for (i, p) in pieces.into_iter().enumerate() {
            let (rsv, op) = if i == 0 { (4, opcode) } else { (0, OP_CONT) };
            wire.extend_from_slice(&c.frame(i == last, rsv, op, p));
        }
        // The server may stop reading at the limit: write what it takes.
        let _ = c.stream.write_all(&wire);
        c.expect_close(TOO_BIG);
        let (len, max) = recv(&rx);
        assert_eq!(max, MAX as u64);
        assert!(len > MAX as u64 && len <= 2 * MAX as u64, "{len}");
        let (rss_after, hwm_after) = memory_kib();
        eprintln!(
            "bomb of {} MiB (opcode {opcode}, fragments {frag}): RSS {rss_before} -> \
             {rss_after} KiB, peak {hwm_before} -> {hwm_after} KiB",
            INFLATED >> 20
        );
        assert!(
            hwm_after.saturating_sub(hwm_before) < MARGIN_KIB
                && rss_after.saturating_sub(rss_before) < MARGIN_KIB,
            "a bomb of {} MiB grew RSS from {rss_before} to {rss_after} KiB \
             (peak {hwm_before} to {hwm_after} KiB)",
            INFLATED >> 20
        );
        healthy.roundtrip("still here");
    }
    h.stop_and_wait();
}

#[test]
fn a_ping_flood_from_a_peer_that_never_reads_is_held_back() {
    // At most this much is written; a server that answered every ping
    // without holding back would read it all and buffer the pongs.
    const CAP: usize = 256 << 20;
    const MARGIN_KIB: usize = 64 << 10;
    let h = echo_server(WsConfig::default());
    let addr = h.local_addr();
    let mut healthy = RawClient::connect(addr);
    let mut flood = RawClient::connect(addr);
    let ping = flood.frame(true, 0, OP_PING, &[b'p'; 125]);
    let burst = ping.repeat(8192); // about 1 MiB of pings
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (rss_before, hwm_before) = memory_kib();
    flood.stream.set_nonblocking(true).unwrap();
    let (mut written, mut at) = (0, 0);
    let mut stalled: Option<Instant> = None;
    // Write until the socket stays full for a second (the server stopped
    // reading), or the cap.
    while written < CAP {
        match flood.stream.write(&burst[at..]) {
            Ok(n) => {
                written += n;
                at = (at + n) % burst.len();
                stalled = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stalled.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("flood write failed after {written} bytes: {e}"),
        }
    }
    let (rss_after, hwm_after) = memory_kib();
    eprintln!(
        "ping flood: {} KiB written, server buffers {} KiB, RSS {rss_before} -> {rss_after} KiB, \
         peak {hwm_before} -> {hwm_after} KiB",
        written >> 10,
        h.buffered_bytes() >> 10
    );
    assert!(
        written < CAP,
        "the server read {CAP} bytes of pings while no pong was read"
    );
    assert!(
        h.buffered_bytes() <= 4 << 20,
        "{} bytes buffered",
        h.buffered_bytes()
    );
    assert!(hwm_after.saturating_sub(hwm_before) < MARGIN_KIB);
    // Others are served meanwhile.
    healthy.roundtrip("still here");
    // The flooder goes away; its connection and buffers go with it.
    drop(flood);
    common::wait_until("the flooder's connection is gone", || {
        h.connections().len() == 1 && h.buffered_bytes() == 0
    });
    healthy.roundtrip("still here");
    h.stop_and_wait();
}

/// A stopping worker closes every connection of its loops at once, whatever
/// its phase: one still handshaking (out of the connections map), one open
/// (in the map), and one lingering after its close (out of the map again).
/// With every timeout at 60 s, a connection the stop missed would hold
/// `stop_and_wait` for a minute.
#[test]
fn a_stopping_worker_closes_handshaking_open_and_lingering_connections_at_once() {
    const LONG: Duration = Duration::from_secs(60);
    let (closes_tx, closes) = mpsc::channel();
    let mut w = echo_worker(WsConfig::default());
    w.limits(
        Limits::default()
            .stop_timeout(LONG)
            .close_timeout(LONG)
            .handshake_timeout(LONG),
    );
    w.on_message(|c, m| {
        if m == Message::Text("bye".into()) {
            c.close();
        } else {
            let _ = c.send(&m);
        }
    });
    w.on_close(move |_, reason| {
        let _ = closes_tx.send(reason.clone());
    });
    let h = w.start().unwrap();
    let addr = h.local_addr();

    // Handshaking: half an upgrade request.
    let mut handshaking = tcp(addr);
    let request = upgrade_request(addr, &[]);
    handshaking
        .write_all(&request[..request.len() / 2])
        .unwrap();
    // Lingering: the server closes, the client never answers its close
    // frame nor sends a FIN, so the server waits for it.
    let mut lingering = RawClient::connect(addr);
    lingering.send_frame(true, 0, 0x1, b"bye");
    assert!(matches!(lingering.next_event(), Ev::Close(Some(1000), _)));
    assert_eq!(recv(&closes), lubdub::CloseReason::Local);
    // Open: upgraded and idle.
    let mut open = RawClient::connect(addr);
    open.roundtrip("here");

    let started = Instant::now();
    h.stop_and_wait();
    let took = started.elapsed();
    assert!(took < LONG / 3, "stop_and_wait took {took:?}");
    assert_eq!(recv(&closes), lubdub::CloseReason::WorkerStopped);
    assert!(matches!(open.next_event(), Ev::Close(Some(1001), _)));
    assert!(matches!(lingering.next_event(), Ev::Eof | Ev::Reset));
    read_to_eof(&mut handshaking);
}
