//! The opening handshake, server and client side.

mod common;

use common::*;
use lubdub_protocol::{Decoded, Protocol, ProtocolError, Reject, Session, Start, WireBuf};
use lubdub_ws::{Handshake, Message, Ws, WsConfig};

fn text(wire: &WireBuf) -> String {
    String::from_utf8(wire.out.clone()).unwrap()
}

#[test]
fn an_upgrade_request_is_delivered_then_accepted() {
    let mut s = Session::new(Ws::default());
    assert_eq!(s.start(), Start::Handshake);
    let req = request_with(
        "Origin: http://server.example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n",
    );
    let (result, wire) = server_handshake(&mut s, &req);
    let (data, consumed) = result.unwrap();
    assert_eq!(consumed, req.len());
    assert!(
        wire.out.is_empty(),
        "nothing is written before the hook decides"
    );
    let r = data.request().unwrap();
    assert!(r.is_upgrade());
    assert_eq!(r.method(), "GET");
    assert_eq!(r.target(), "/chat?room=1");
    assert_eq!(r.path(), "/chat");
    assert_eq!(r.query(), Some("room=1"));
    assert_eq!(r.version(), 1);
    assert_eq!(r.header("origin"), Some("http://server.example.com"));
    assert_eq!(r.header("HOST"), Some("server.example.com"));
    assert_eq!(r.subprotocols(), ["chat", "superchat"]);
    assert_eq!(r.subprotocol(), None, "the server configured none");
    assert!(r.headers().any(|(n, _)| n == "Sec-WebSocket-Key"));

    s.accept(&data);
    assert_eq!(
        text(&s.wire),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    assert!(s.decoder.is_established() && s.encoder.is_established());
    assert!(s.wire.close.is_none());
}

#[test]
fn frames_pipelined_behind_the_request_are_not_lost() {
    let mut bytes = request_with("");
    let head_len = bytes.len();
    bytes.extend(masked(true, 0x1, b"early"));
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, &bytes);
    let (data, consumed) = result.unwrap();
    assert_eq!(consumed, head_len);
    s.accept(&data);
    let r = run(&mut s, &bytes[consumed..]);
    assert_eq!(r.messages, [Message::Text("early".into())]);
}

#[test]
fn a_request_trickled_one_byte_at_a_time() {
    let req = request_with("");
    let mut s = Session::new(Ws::default());
    for n in 1..req.len() {
        assert_eq!(s.decode(&req[..n]).unwrap(), Decoded::Incomplete, "at {n}");
    }
    match s.decode(&req).unwrap() {
        Decoded::Handshake { data, consumed } => {
            assert_eq!(consumed, req.len());
            assert!(data.request().unwrap().is_upgrade());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversize_headers_get_431_once_the_maximum_has_arrived() {
    // 100 KiB of headers, arriving 1 KiB at a time into a growing buffer.
    let filler = "X-Filler: ".to_string() + &"a".repeat(100) + "\r\n";
    let mut big = request_with(&filler.repeat(1000));
    big.truncate(100 * 1024);
    let mut s = Session::new(Ws::default());
    let mut failed_at = None;
    for end in (1024..=big.len()).step_by(1024) {
        match s.decode(&big[..end]) {
            Ok(Decoded::Incomplete) => {}
            Err(e) => {
                assert!(
                    matches!(e, ProtocolError::TooLarge { max: 16384, .. }),
                    "{e}"
                );
                failed_at = Some(end);
                break;
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        failed_at,
        Some(16 * 1024),
        "decided after max_header_size bytes"
    );
    assert!(text(&s.wire).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
    assert!(text(&s.wire).contains("Connection: close\r\n"));
}

#[test]
fn too_many_header_lines_get_431() {
    let mut s = Session::new(Ws::server(WsConfig::default().max_headers(8)));
    let (result, wire) = server_handshake(&mut s, &request_with(&"A: b\r\n".repeat(10)));
    assert!(result.is_err());
    assert!(text(&wire).starts_with("HTTP/1.1 431 "));
}

fn refused(request: &[u8]) -> (ProtocolError, String) {
    let mut s = Session::new(Ws::default());
    let (result, wire) = server_handshake(&mut s, request);
    let err = result.expect_err("refused");
    // Decoding stops after a refusal.
    assert_eq!(s.decode(b"more").unwrap(), Decoded::Consumed(4));
    (err, text(&wire))
}

#[test]
fn a_missing_or_bad_key_gets_400() {
    let no_key = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (err, res) = refused(no_key.as_bytes());
    assert!(matches!(err, ProtocolError::Malformed(_)));
    assert!(res.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{res}");
    assert!(res.ends_with("no Sec-WebSocket-Key\n"), "{res}");

    let short_key = no_key.replace("\r\n\r\n", "\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n");
    let (_, res) = refused(short_key.as_bytes());
    assert!(res.starts_with("HTTP/1.1 400 "), "{res}");
}

#[test]
fn a_wrong_version_gets_426_naming_13() {
    let req = String::from_utf8(request_with(""))
        .unwrap()
        .replace("Version: 13", "Version: 8");
    let (_, res) = refused(req.as_bytes());
    assert!(
        res.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{res}"
    );
    assert!(res.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{res}");
}

#[test]
fn upgrades_that_break_the_rules_get_400() {
    let base = String::from_utf8(request_with("")).unwrap();
    for (what, req) in [
        ("POST", base.replacen("GET", "POST", 1)),
        ("HTTP/1.0", base.replacen("HTTP/1.1", "HTTP/1.0", 1)),
        (
            "no upgrade token",
            base.replace("Connection: Upgrade", "Connection: keep-alive"),
        ),
        ("no Host", base.replace("Host: server.example.com\r\n", "")),
        (
            "not HTTP",
            "GET / HTTP/1.1\r\nbad header line\r\n\r\n".to_string(),
        ),
    ] {
        let (_, res) = refused(req.as_bytes());
        assert!(res.starts_with("HTTP/1.1 400 "), "{what}: {res}");
    }
}

#[test]
fn duplicate_upgrade_headers_get_400() {
    let base = String::from_utf8(request_with("")).unwrap();
    for (name, line) in [
        ("Host", "Host: other.example.com"),
        ("Upgrade", "upgrade: websocket"),
        (
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==",
        ),
        ("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13"),
        ("Origin", "Origin: http://server.example.com"),
    ] {
        let twice = format!("{line}\r\n{line}\r\n");
        let req = if name == "Origin" {
            base.replace("\r\n\r\n", &format!("\r\n{twice}\r\n"))
        } else {
            base.replace("\r\n\r\n", &format!("\r\n{line}\r\n\r\n"))
        };
        let (_, res) = refused(req.as_bytes());
        assert!(
            res.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{name}: {res}"
        );
        assert!(
            res.contains(&format!("more than one {name} header")),
            "{res}"
        );
    }
}

/// Cross-site WebSocket hijacking: a page of another site opening a
/// WebSocket to this server, with the user's cookies. The request's
/// `Origin` names that site; by default only the server's own host may
/// upgrade, a request without `Origin` (not a browser) still may.
#[test]
fn a_foreign_origin_gets_403_before_the_hook() {
    let with_origin = |origin: &str| request_with(&format!("Origin: {origin}\r\n"));
    for origin in [
        "http://evil.example",
        "null",
        "http://server.example.com:8080",
    ] {
        let (err, res) = refused(&with_origin(origin));
        assert!(matches!(
            err,
            ProtocolError::Malformed("origin not allowed")
        ));
        assert!(
            res.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{origin}: {res}"
        );
    }
    for (cfg, origin, ok) in [
        (WsConfig::default(), None, true),
        (
            WsConfig::default(),
            Some("https://SERVER.example.com"),
            true,
        ),
        (
            WsConfig::default().allowed_origins(["https://app.example.com"]),
            Some("https://app.example.com"),
            true,
        ),
        (
            WsConfig::default().allowed_origins(["https://app.example.com"]),
            Some("https://server.example.com"),
            false,
        ),
        (
            WsConfig::default().allowed_origins(["*"]),
            Some("null"),
            true,
        ),
    ] {
        let req = match origin {
            Some(o) => with_origin(o),
            None => request_with(""),
        };
        let mut s = Session::new(Ws::server(cfg));
        let (result, wire) = server_handshake(&mut s, &req);
        assert_eq!(result.is_ok(), ok, "{origin:?}: {}", text(&wire));
    }
}

#[test]
fn connection_and_upgrade_tokens_are_case_insensitive_lists() {
    let req = String::from_utf8(request_with(""))
        .unwrap()
        .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE")
        .replace("Upgrade: websocket", "upgrade: WebSocket");
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, req.as_bytes());
    assert!(result.unwrap().0.request().unwrap().is_upgrade());
}

#[test]
fn a_plain_request_goes_to_the_hook_and_reject_answers_it() {
    let req = b"GET /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut s = Session::new(Ws::default());
    let (result, wire) = server_handshake(&mut s, req);
    let (data, consumed) = result.unwrap();
    assert_eq!(consumed, req.len());
    assert!(wire.out.is_empty());
    let r = data.request().unwrap();
    assert!(!r.is_upgrade());
    assert_eq!((r.path(), r.query()), ("/index.html", Some("x=1")));

    let page = Reject::new(200)
        .header("Content-Type", "text/html")
        .body("<h1>hi</h1>");
    s.reject(&data, &page);
    assert_eq!(
        text(&s.wire),
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 11\r\nConnection: close\r\n\r\n<h1>hi</h1>"
    );
    assert_eq!(s.wire.close.as_ref().map(|c| c.code), Some(200));
}

#[test]
fn accepting_a_plain_request_answers_426() {
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (data, _) = result.unwrap();
    s.accept(&data);
    assert!(text(&s.wire).starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(s.wire.close.is_some());
    assert!(!s.encoder.is_established() && !s.decoder.is_established());
}

#[test]
fn rejecting_an_upgrade_writes_the_response_and_closes() {
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, &request_with(""));
    let (data, _) = result.unwrap();
    s.reject(
        &data,
        &Reject::new(403).header("X-Why", "banned").body("no"),
    );
    assert_eq!(
        text(&s.wire),
        "HTTP/1.1 403 Forbidden\r\nX-Why: banned\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    );
    let close = s.wire.close.take().unwrap();
    assert_eq!((close.code, close.by_peer), (403, false));
    // Nothing after a refusal is decoded.
    assert_eq!(
        s.decode(&masked(true, 1, b"x")).unwrap(),
        Decoded::Consumed(7)
    );
}

#[test]
fn a_head_request_is_answered_without_a_body() {
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (data, _) = result.unwrap();
    s.reject(&data, &Reject::new(404).body("missing"));
    assert!(text(&s.wire).ends_with("Content-Length: 7\r\nConnection: close\r\n\r\n"));
}

#[test]
fn the_server_picks_its_preferred_offered_subprotocol() {
    let cfg = WsConfig::default().subprotocols(["v3", "v2", "v1"]);
    let mut s = Session::new(Ws::server(cfg.clone()));
    let req = request_with("Sec-WebSocket-Protocol: v1\r\nSec-WebSocket-Protocol: v2, other\r\n");
    let (result, _) = server_handshake(&mut s, &req);
    let (data, _) = result.unwrap();
    assert_eq!(data.request().unwrap().subprotocol(), Some("v2"));
    s.accept(&data);
    assert!(text(&s.wire).contains("\r\nSec-WebSocket-Protocol: v2\r\n"));

    let mut s = Session::new(Ws::server(cfg));
    let (result, _) = server_handshake(&mut s, &request_with("Sec-WebSocket-Protocol: x\r\n"));
    let (data, _) = result.unwrap();
    s.accept(&data);
    assert!(!text(&s.wire).contains("Sec-WebSocket-Protocol"));
}

// ---- client role ----

/// A client session's upgrade request, taken from its wire.
fn client_request(s: &mut Session<Ws>) -> String {
    assert_eq!(s.start(), Start::Handshake);
    String::from_utf8(s.wire.take()).unwrap()
}

/// The server's 101 for a client request, computed by the server side.
fn answer(request: &str, server_cfg: WsConfig) -> String {
    let mut server = Session::new(Ws::server(server_cfg));
    let (result, _) = server_handshake(&mut server, request.as_bytes());
    let (data, _) = result.unwrap();
    server.accept(&data);
    text(&server.wire)
}

fn key_of(request: &str) -> &str {
    request
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap()
}

#[test]
fn the_client_writes_an_upgrade_request_with_a_fresh_key() {
    let cfg = WsConfig::default().subprotocols(["a", "b"]);
    let ws = Ws::client(cfg, "example.com:8080", "/chat?x=y")
        .unwrap()
        .with_header("Origin", "http://example.com")
        .unwrap();
    let req = client_request(&mut Session::new(ws.clone()));
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Request::new(&mut headers);
    assert_eq!(
        parsed.parse(req.as_bytes()).unwrap(),
        httparse::Status::Complete(req.len())
    );
    assert_eq!(parsed.method, Some("GET"));
    assert_eq!(parsed.path, Some("/chat?x=y"));
    let h = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| std::str::from_utf8(h.value).unwrap().to_string())
    };
    assert_eq!(h("Host").as_deref(), Some("example.com:8080"));
    assert_eq!(h("Upgrade").as_deref(), Some("websocket"));
    assert_eq!(h("Connection").as_deref(), Some("Upgrade"));
    assert_eq!(h("Sec-WebSocket-Version").as_deref(), Some("13"));
    assert_eq!(h("Sec-WebSocket-Protocol").as_deref(), Some("a, b"));
    assert_eq!(h("Origin").as_deref(), Some("http://example.com"));
    assert_eq!(
        h("Sec-WebSocket-Extensions"),
        None,
        "deflate is off by default"
    );
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(h("Sec-WebSocket-Key").unwrap())
        .unwrap();
    assert_eq!(key.len(), 16);
    let again = client_request(&mut Session::new(ws));
    assert_ne!(
        key_of(&again),
        key_of(&req),
        "every request gets its own key"
    );
}

#[test]
fn client_constructor_refuses_header_injection() {
    assert!(Ws::client(WsConfig::default(), "a\r\nX: y", "/").is_err());
    assert!(Ws::client(WsConfig::default(), "a", "/x y").is_err());
    assert!(Ws::client(WsConfig::default(), "a", "").is_ok());
    let ws = Ws::client(WsConfig::default(), "a", "/").unwrap();
    assert!(ws.with_header("X", "1\r\nY: 2").is_err());
    assert!(Ws::default().with_header("Origin", "x").is_err());
}

#[test]
fn the_client_accepts_a_101_and_keeps_frames_behind_it() {
    let cfg = WsConfig::default().subprotocols(["b", "a"]);
    let mut s = Session::new(Ws::client(cfg, "h", "/").unwrap());
    let req = client_request(&mut s);
    let res = answer(&req, WsConfig::default().subprotocols(["a"]));
    let mut bytes = res.clone().into_bytes();
    bytes.extend(unmasked(true, 0x1, b"welcome"));
    let Decoded::Handshake { data, consumed } = s.decode(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(consumed, res.len());
    let response = data.response().unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.subprotocol(), Some("a"));
    assert!(!response.deflate());
    s.accept(&data);
    assert!(s.wire.out.is_empty(), "a client writes nothing on accept");
    let r = run(&mut s, &bytes[consumed..]);
    assert_eq!(r.messages, [Message::Text("welcome".into())]);
}

fn client_error(response: impl Fn(&str) -> String) -> ProtocolError {
    let mut s =
        Session::new(Ws::client(WsConfig::default().subprotocols(["a"]), "h", "/").unwrap());
    let req = client_request(&mut s);
    let res = response(&req);
    let err = s.decode(res.as_bytes()).unwrap_err();
    assert!(s.wire.out.is_empty());
    err
}

#[test]
fn the_client_reports_a_refusal_with_its_status() {
    let err = client_error(|_| "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into());
    match err {
        ProtocolError::Refused { status, reason } => {
            assert_eq!((status, reason.as_str()), (403, "Forbidden"))
        }
        other => panic!("{other:?}"),
    }
}

/// Turns a client request into a (broken) server response.
type ResponseEdit = Box<dyn Fn(&str) -> String>;

#[test]
fn the_client_refuses_a_bad_101() {
    let good = |req: &str| answer(req, WsConfig::default());
    let cases: Vec<(&str, ResponseEdit)> = vec![
        (
            "wrong accept key",
            Box::new(move |req: &str| {
                good(req).replace(&lubdub_ws::handshake::accept_key(key_of(req)), "AAAA")
            }),
        ),
        (
            "no upgrade",
            Box::new(move |req: &str| good(req).replace("Upgrade: websocket\r\n", "")),
        ),
        (
            "unoffered subprotocol",
            Box::new(move |req: &str| {
                good(req).replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: zz\r\n\r\n")
            }),
        ),
        (
            "unoffered extension",
            Box::new(move |req: &str| {
                good(req).replace(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                )
            }),
        ),
    ];
    for (what, response) in cases {
        let err = client_error(response);
        assert!(
            matches!(err, ProtocolError::Malformed(_)),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn the_other_roles_handshake_is_not_accepted() {
    let mut server = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut server, &request_with(""));
    let (data, _) = result.unwrap();
    let mut client = Session::new(Ws::client(WsConfig::default(), "h", "/").unwrap());
    client.accept(&data);
    assert!(client.wire.close.is_some());
    assert!(!client.decoder.is_established() && !client.encoder.is_established());
    assert!(matches!(data, Handshake::Request(_)));
}

#[test]
fn a_reject_with_an_informational_status_becomes_500() {
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, &request_with(""));
    let (data, _) = result.unwrap();
    s.reject(&data, &Reject::new(101));
    assert!(text(&s.wire).starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
}

#[test]
fn a_client_rejecting_the_response_writes_nothing_and_closes() {
    let mut s = Session::new(Ws::client(WsConfig::default(), "h", "/").unwrap());
    let req = client_request(&mut s);
    let res = answer(&req, WsConfig::default());
    let Decoded::Handshake { data, .. } = s.decode(res.as_bytes()).unwrap() else {
        panic!()
    };
    s.reject(&data, &Reject::new(403));
    assert!(s.wire.out.is_empty());
    assert_eq!(s.wire.close.as_ref().map(|c| c.code), Some(403));
    assert!(!s.decoder.is_established());
}

#[test]
fn a_new_session_of_a_used_ws_starts_before_the_handshake() {
    let mut s = Session::new(Ws::default());
    let (result, _) = server_handshake(&mut s, &request_with(""));
    s.accept(&result.unwrap().0);
    assert!(s.decoder.is_established());
    let mut fresh = Session::new(s.protocol.clone());
    assert!(!fresh.decoder.is_established());
    let (result, _) = server_handshake(&mut fresh, &request_with(""));
    assert!(result.is_ok(), "the new session reads a handshake again");
}

#[test]
fn a_plain_request_is_answered_by_the_page_handler_or_goes_to_the_hook() {
    let ws = Ws::default().serve_http(|req| {
        (req.path() == "/").then(|| {
            Reject::new(200)
                .header("Content-Type", "text/html")
                .body("<p>hi</p>")
        })
    });
    for (method, body) in [("GET", "<p>hi</p>"), ("HEAD", "")] {
        let mut page = Session::new(ws.clone());
        page.start();
        let get = format!("{method} / HTTP/1.1\r\nHost: x\r\n\r\n");
        let got = page.decode(get.as_bytes()).unwrap();
        assert_eq!(got, Decoded::Consumed(get.len()), "answered, no hook");
        let out = text(&page.wire);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: text/html\r\n"), "{out}");
        assert!(out.contains("Content-Length: 9\r\n"), "{out}");
        assert!(out.ends_with(&format!("\r\n\r\n{body}")), "{out}");
        assert_eq!(page.wire.close.as_ref().map(|c| c.code), Some(200));
    }
    // A path the handler does not serve goes to the hook as a plain request.
    let mut other = Session::new(ws);
    other.start();
    let get = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    let Ok(Decoded::Handshake { data, .. }) = other.decode(get) else {
        panic!("not handed to the hook");
    };
    assert!(!data.request().unwrap().is_upgrade());
    assert!(other.wire.out.is_empty());
}

#[test]
fn for_client_switches_a_server_template_to_the_client_role() {
    let server = Ws::server(WsConfig::default());
    let mut client = Session::new(server.for_client("example.com:8080", "/chat?x=y").unwrap());
    assert_eq!(client.protocol.role(), lubdub_ws::Role::Client);
    client.start();
    let req = text(&client.wire);
    assert!(req.starts_with("GET /chat?x=y HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Host: example.com:8080\r\n"), "{req}");
    assert!(server.for_client("bad host", "/").is_err());
}
