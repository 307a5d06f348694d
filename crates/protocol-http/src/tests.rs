//! The sans-IO protocol without sockets: requests in pieces, every refused
//! shape, responses byte for byte, and arbitrary input.

use lubdub_protocol::{Closing, Decoded, ProtocolError, Session};

use crate::{Event, Http, HttpConfig, HttpError, Reply, Request};

/// Feeds `pieces` one after the other as a connection would (unconsumed
/// bytes kept), decoding until the decoder waits: the requests, and the
/// error that stopped it, if any.
fn feed(session: &mut Session<Http>, pieces: &[&[u8]]) -> (Vec<Request>, Option<ProtocolError>) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match session.decode(&buf) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Message { msg, consumed }) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    buf.drain(..consumed);
                    out.push(msg);
                }
                Ok(Decoded::Consumed(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    buf.drain(..n);
                }
                Ok(Decoded::Handshake { .. }) => panic!("no handshake in HTTP"),
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn session() -> Session<Http> {
    Session::new(Http::default())
}

fn status_of(err: &ProtocolError) -> u16 {
    crate::encoder::refusal(err).0
}

/// The status a request is refused with (`None` if it is accepted).
fn refused(input: &[u8]) -> Option<u16> {
    feed(&mut session(), &[input]).1.as_ref().map(status_of)
}

#[test]
fn a_simple_get() {
    let (reqs, err) = feed(
        &mut session(),
        &[b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\n"],
    );
    assert!(err.is_none());
    let req = &reqs[0];
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/a");
    assert_eq!(req.uri().query(), Some("b=1"));
    assert_eq!(req.headers()["x-y"], "z");
    assert!(req.body().is_empty());
    assert!(req.exchange().keep_alive());
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let batch = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n";
    let (reqs, err) = feed(&mut session(), &[batch]);
    assert!(err.is_none());
    let paths: Vec<_> = reqs.iter().map(|r| r.uri().path().to_owned()).collect();
    assert_eq!(paths, ["/1", "/2", "/3"]);
    assert_eq!(reqs[1].body(), b"abc");
}

#[test]
fn a_request_byte_by_byte() {
    let input = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
    let pieces: Vec<&[u8]> = input.chunks(1).collect();
    let mut s = session();
    let (reqs, err) = feed(&mut s, &pieces);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].body(), b"abcde");
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn held_bytes_reports_a_body_being_assembled() {
    let mut s = session();
    let (reqs, err) = feed(
        &mut s,
        &[
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n",
            &[b'x'; 600],
        ],
    );
    assert!(reqs.is_empty() && err.is_none());
    assert!(s.held_bytes() >= 600, "{}", s.held_bytes());
    let (reqs, _) = feed(&mut s, &[&[b'x'; 400]]);
    assert_eq!(reqs[0].body().len(), 1000);
    assert_eq!(s.held_bytes(), 0);
}

#[test]
fn expect_100_continue_is_answered_when_the_body_is_missing() {
    let mut s = session();
    let head = b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let (reqs, _) = feed(&mut s, &[head]);
    assert!(reqs.is_empty());
    assert_eq!(s.wire.take(), b"HTTP/1.1 100 Continue\r\n\r\n");
    let (reqs, _) = feed(&mut s, &[b"ok"]);
    assert_eq!(reqs[0].body(), b"ok");
    // With the body right behind the head: no interim answer.
    let mut s = session();
    let whole = [&head[..], b"ok"].concat();
    assert_eq!(feed(&mut s, &[&whole]).0.len(), 1);
    assert!(s.wire.out.is_empty());
}

#[test]
fn an_expect_with_a_body_too_large_is_413_without_100() {
    let mut s = Session::new(Http::new(HttpConfig::default().max_body_size(10)));
    let (_, err) = feed(
        &mut s,
        &[b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"],
    );
    assert_eq!(status_of(&err.unwrap()), 413);
    assert!(s.wire.out.is_empty());
}

#[test]
fn smuggling_shapes_are_400() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\rX-B: 2\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    ];
    for case in cases {
        assert_eq!(
            refused(case),
            Some(400),
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn limits_answer_with_their_status() {
    // Head too large, decided after max_head_size bytes without its end.
    let mut s = session();
    let big = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'a'; 16 * 1024]].concat();
    assert_eq!(status_of(&feed(&mut s, &[&big]).1.unwrap()), 431);
    // Too many header lines.
    let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..64 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(refused(&many), Some(431));
    // A body too large, from Content-Length and from chunks adding up.
    assert_eq!(
        refused(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"),
        Some(413)
    );
    let mut s = Session::new(Http::new(HttpConfig::default().max_body_size(4)));
    let (_, err) = feed(
        &mut s,
        &[b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\n"],
    );
    assert_eq!(status_of(&err.unwrap()), 413);
    // An unknown version.
    assert_eq!(refused(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), Some(505));
}

#[test]
fn a_slow_request_times_out_with_408() {
    let mut s = Session::new(Http::new(
        HttpConfig::default().request_timeout(std::time::Duration::from_millis(20)),
    ));
    assert!(feed(&mut s, &[b"GET / HTTP/1.1\r\n"]).1.is_none());
    std::thread::sleep(std::time::Duration::from_millis(40));
    let err = feed(&mut s, &[b"Host: h\r\n"]).1.unwrap();
    assert_eq!(status_of(&err), 408);
}

#[test]
fn connection_close_and_http10_end_the_session() {
    let mut s = session();
    let (reqs, _) = feed(
        &mut s,
        &[b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"],
    );
    assert_eq!(reqs.len(), 1, "what follows a closing request is discarded");
    assert!(!reqs[0].exchange().keep_alive());
    let out = s
        .encode(&reqs[0].respond(http::Response::new(b"x".to_vec())))
        .unwrap();
    assert!(contains(&out, b"connection: close\r\n"));
    assert!(lubdub_protocol::Encoder::close_after(&s.encoder));

    let mut s = session();
    let (reqs, _) = feed(&mut s, &[b"GET / HTTP/1.0\r\n\r\n"]);
    assert!(!reqs[0].exchange().keep_alive());
    let mut s = session();
    let (reqs, _) = feed(
        &mut s,
        &[b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],
    );
    assert!(reqs[0].exchange().keep_alive());
    let out = s
        .encode(&reqs[0].respond(http::Response::new(Vec::new())))
        .unwrap();
    assert!(contains(&out, b"connection: keep-alive\r\n"));
    assert!(!lubdub_protocol::Encoder::close_after(&s.encoder));
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

fn one(input: &[u8]) -> (Session<Http>, Request) {
    let mut s = session();
    let (mut reqs, err) = feed(&mut s, &[input]);
    assert!(err.is_none(), "{err:?}");
    (s, reqs.remove(0))
}

#[test]
fn head_gets_headers_only() {
    let (mut s, req) = one(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");
    let out = s
        .encode(&req.respond(http::Response::new(b"hello".to_vec())))
        .unwrap();
    assert!(contains(&out, b"content-length: 5\r\n"));
    assert!(out.ends_with(b"\r\n\r\n"));
}

#[test]
fn a_whole_response_byte_for_byte() {
    let (mut s, req) = one(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = http::Response::builder()
        .status(404)
        .header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
        .header("content-type", "text/plain")
        .body(b"nope".to_vec())
        .unwrap();
    let out = s.encode(&req.respond(resp)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 404 Not Found\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nnope"
    );
    // A wrong Content-Length is refused, nothing written.
    let resp = http::Response::builder()
        .header("content-length", "9")
        .body(b"nope".to_vec())
        .unwrap();
    assert!(s.encode(&req.respond(resp)).is_err());
    // 204 has neither body nor length.
    let resp = http::Response::builder()
        .status(204)
        .body(Vec::new())
        .unwrap();
    let out = s.encode(&req.respond(resp)).unwrap();
    assert!(!contains(&out, b"content-length"));
}

#[test]
fn a_streamed_response_is_chunked() {
    let (mut s, req) = one(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut out = s.encode(&req.stream(http::Response::new(()))).unwrap();
    assert!(contains(&out, b"transfer-encoding: chunked\r\n"));
    // No other response while it is open.
    assert!(s
        .encode(&req.respond(http::Response::new(Vec::new())))
        .is_err());
    let head_len = out.len();
    out.extend(s.encode(&Reply::chunk("hello world, 17b")).unwrap());
    out.extend(s.encode(&Reply::chunk("")).unwrap());
    out.extend(s.encode(&Reply::End).unwrap());
    assert_eq!(&out[head_len..], b"10\r\nhello world, 17b\r\n0\r\n\r\n");
    assert!(s.encode(&Reply::End).is_err());
}

#[test]
fn an_http10_stream_ends_with_the_connection() {
    let (mut s, req) = one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let out = s.encode(&req.stream(http::Response::new(()))).unwrap();
    assert!(!contains(&out, b"transfer-encoding") && contains(&out, b"connection: close"));
    assert_eq!(s.encode(&Reply::chunk("raw")).unwrap(), b"raw");
    s.encode(&Reply::End).unwrap();
    assert!(lubdub_protocol::Encoder::close_after(&s.encoder));
}

#[test]
fn server_sent_events() {
    let (mut s, req) = one(b"GET /ev HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 41\r\n\r\n");
    assert_eq!(req.last_event_id(), Some("41"));
    // A comment before the stream writes nothing (a heartbeat's to anyone).
    assert!(s.encode(&Reply::comment("ping")).unwrap().is_empty());
    assert!(s.encode(&Reply::event("x")).is_err());
    let head = s.encode(&req.event_stream()).unwrap();
    assert!(contains(&head, b"content-type: text/event-stream\r\n"));
    assert!(contains(&head, b"cache-control: no-cache\r\n"));
    let ev = s
        .encode(&Reply::Event(Event::data("a\r\nb").id("42").event("tick")))
        .unwrap();
    let record = b"event: tick\nid: 42\ndata: a\ndata: b\n\n";
    assert_eq!(
        ev,
        [
            format!("{:x}\r\n", record.len()).as_bytes(),
            record,
            b"\r\n"
        ]
        .concat()
    );
    let c = s.encode(&Reply::comment("ping")).unwrap();
    assert_eq!(c, b"8\r\n: ping\n\n\r\n");
    // A stream the server ends on purpose ends cleanly.
    let bye = s.encode_close(&Closing::GoingAway);
    assert_eq!(bye, b"0\r\n\r\n");
}

#[test]
fn a_violation_is_answered_after_what_is_queued() {
    let mut s = session();
    let err: ProtocolError = HttpError {
        status: 431,
        reason: "request head too large",
    }
    .into();
    let out = s.encode_close(&Closing::Violation(&err));
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("connection: close\r\n"));
    assert!(text.ends_with("\r\n\r\nrequest head too large\n"));
    // Other closes write nothing when no stream is open.
    assert!(s.encode_close(&Closing::Timeout).is_empty());
}

mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        #[test]
        fn no_input_panics_or_breaks_the_contract(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cut in 0usize..600,
        ) {
            let cut = cut.min(bytes.len());
            let _ = feed(&mut session(), &[&bytes[..cut], &bytes[cut..]]);
        }

        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
        ) {
            let mut req = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
            for (at, b) in flips {
                let at = at % req.len();
                req[at] = b;
            }
            let _ = feed(&mut session(), &[&req]);
        }
    }
}
