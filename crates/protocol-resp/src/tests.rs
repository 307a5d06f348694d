//! Decoding, encoding and session setup without a socket.

use super::*;
use lubdub_protocol::Session;
use proptest::prelude::*;

type Step = Result<Decoded<Value, Vec<Value>>, ProtocolError>;

/// A session of `p`, as one connection has.
fn session(p: Resp) -> Session<Resp> {
    Session::new(p)
}

/// Decodes `src`, which must write nothing on the wire nor ask to close.
fn decode(s: &mut Session<Resp>, src: &[u8]) -> Step {
    let result = s.decode(src);
    assert!(s.wire.out.is_empty(), "wrote {:?} on the wire", s.wire.out);
    assert!(s.wire.close.is_none(), "asked to close");
    result
}

/// The one reply that is all of `src`.
fn one(s: &mut Session<Resp>, src: &[u8]) -> Value {
    match decode(s, src) {
        Ok(Decoded::Message { msg, consumed }) => {
            assert_eq!(consumed, src.len(), "{:?}", src.escape_ascii().to_string());
            msg
        }
        other => panic!("{:?}: {other:?}", src.escape_ascii().to_string()),
    }
}

fn resp2(src: &[u8]) -> Value {
    one(&mut session(Resp::new()), src)
}

fn resp3(src: &[u8]) -> Value {
    one(&mut session(Resp::resp3()), src)
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

/// Decodes `stream` fed in the given chunks, as a connection does: the
/// replies, and whether it ended in a protocol error.
fn decode_chunks(p: Resp, chunks: &[&[u8]]) -> (Vec<Value>, bool) {
    let mut s = session(p);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match s.decode(&buf) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Message { msg, consumed }) => {
                    assert!(consumed > 0 && consumed <= buf.len());
                    out.push(msg);
                    buf.drain(..consumed);
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

// Vectors from the RESP specification (redis.io/docs/reference/protocol-spec).

#[test]
fn resp2_spec_vectors() {
    assert_eq!(resp2(b"+OK\r\n"), Value::Simple("OK".into()));
    assert_eq!(
        resp2(b"-ERR unknown command 'asdf'\r\n"),
        Value::Error("ERR unknown command 'asdf'".into())
    );
    assert_eq!(
        resp2(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
            .error_message(),
        Some("WRONGTYPE Operation against a key holding the wrong kind of value")
    );
    assert_eq!(resp2(b":1000\r\n"), Value::Integer(1000));
    assert_eq!(resp2(b":-42\r\n").as_int(), Some(-42));
    assert_eq!(resp2(b"$5\r\nhello\r\n"), bulk("hello"));
    assert_eq!(resp2(b"$0\r\n\r\n"), bulk(""));
    assert_eq!(resp2(b"$-1\r\n"), Value::Nil);
    assert_eq!(resp2(b"*0\r\n"), Value::Array(vec![]));
    assert_eq!(
        resp2(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n"),
        Value::Array(vec![bulk("hello"), bulk("world")])
    );
    assert_eq!(
        resp2(b"*3\r\n:1\r\n:2\r\n:3\r\n"),
        Value::Array((1..=3).map(Value::Integer).collect())
    );
    assert_eq!(resp2(b"*-1\r\n"), Value::Nil);
    assert_eq!(
        resp2(b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n"),
        Value::Array(vec![
            Value::Array((1..=3).map(Value::Integer).collect()),
            Value::Array(vec![
                Value::Simple("Hello".into()),
                Value::Error("World".into())
            ]),
        ])
    );
    assert_eq!(
        resp2(b"*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n"),
        Value::Array(vec![bulk("hello"), Value::Nil, bulk("world")])
    );
    // binary-safe bulk strings
    assert_eq!(
        resp2(b"$4\r\n\r\n\x00\xff\r\n"),
        Value::Bulk(b"\r\n\x00\xff".to_vec())
    );
}

#[test]
fn resp3_spec_vectors() {
    assert_eq!(resp3(b"_\r\n"), Value::Nil);
    assert_eq!(resp3(b",1.23\r\n"), Value::Double(1.23));
    assert_eq!(resp3(b",inf\r\n"), Value::Double(f64::INFINITY));
    assert_eq!(resp3(b",-inf\r\n"), Value::Double(f64::NEG_INFINITY));
    assert_eq!(resp3(b"#t\r\n"), Value::Boolean(true));
    assert_eq!(resp3(b"#f\r\n"), Value::Boolean(false));
    assert_eq!(
        resp3(b"!21\r\nSYNTAX invalid syntax\r\n"),
        Value::Error("SYNTAX invalid syntax".into())
    );
    assert_eq!(
        resp3(b"=15\r\ntxt:Some string\r\n"),
        Value::Verbatim {
            format: VerbatimFormat::Text,
            text: b"Some string".to_vec()
        }
    );
    assert_eq!(
        resp3(b"(3492890328409238509324850943850943825024385\r\n"),
        Value::BigNumber("3492890328409238509324850943850943825024385".into())
    );
    assert_eq!(
        resp3(b"~5\r\n+orange\r\n+apple\r\n#t\r\n:100\r\n:999\r\n"),
        Value::Set(vec![
            Value::Simple("orange".into()),
            Value::Simple("apple".into()),
            Value::Boolean(true),
            Value::Integer(100),
            Value::Integer(999),
        ])
    );
    assert_eq!(
        resp3(b">4\r\n+pubsub\r\n+message\r\n+somechannel\r\n+this is the message\r\n").as_pubsub(),
        Some(PubSub::Message {
            channel: b"somechannel",
            payload: b"this is the message",
            sharded: false
        })
    );
    // attributes are dropped, the annotated value stays
    assert_eq!(
        resp3(
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*2\r\n:2039123\r\n:9543892\r\n"
        ),
        Value::Array(vec![Value::Integer(2039123), Value::Integer(9543892)])
    );
    // RESP2 types are RESP3 types too
    assert_eq!(resp3(b"$5\r\nhello\r\n"), bulk("hello"));
    assert_eq!(
        resp3(b"*1\r\n:1\r\n"),
        Value::Array(vec![Value::Integer(1)])
    );
}

#[test]
fn resp3_maps_keep_wire_order() {
    let map = resp3(b"%3\r\n+first\r\n:1\r\n+second\r\n:2\r\n$5\r\nthird\r\n_\r\n");
    assert_eq!(
        map,
        Value::Map(vec![
            (Value::Simple("first".into()), Value::Integer(1)),
            (Value::Simple("second".into()), Value::Integer(2)),
            (bulk("third"), Value::Nil),
        ])
    );
    assert_eq!(resp3(b"%0\r\n"), Value::Map(vec![]));
}

#[test]
fn pubsub_pushes_are_recognised() {
    let v = resp2(b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
    let m = v.as_pubsub().unwrap();
    assert_eq!(
        m,
        PubSub::Message {
            channel: b"news",
            payload: b"hello",
            sharded: false
        }
    );
    assert_eq!(
        (m.channel(), m.payload()),
        (Some(&b"news"[..]), Some(&b"hello"[..]))
    );
    let v = resp2(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
    assert_eq!(
        v.as_pubsub(),
        Some(PubSub::PatternMessage {
            pattern: b"n*",
            channel: b"news",
            payload: b"hi"
        })
    );
    let v = resp2(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    let s = v.as_pubsub().unwrap();
    assert_eq!(
        s,
        PubSub::Subscription {
            kind: SubscriptionKind::Subscribe,
            channel: Some(b"news"),
            count: 1
        }
    );
    assert_eq!(s.payload(), None);
    let v = resp2(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
    assert_eq!(
        v.as_pubsub(),
        Some(PubSub::Subscription {
            kind: SubscriptionKind::Unsubscribe,
            channel: None,
            count: 0
        })
    );
    let v = resp3(b">3\r\n$8\r\nsmessage\r\n$1\r\nc\r\n$1\r\np\r\n");
    assert!(matches!(
        v.as_pubsub(),
        Some(PubSub::Message { sharded: true, .. })
    ));
    let v = resp3(b">3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:2\r\n");
    assert!(matches!(
        v.as_pubsub(),
        Some(PubSub::Subscription {
            kind: SubscriptionKind::PSubscribe,
            count: 2,
            ..
        })
    ));
    // not pub/sub: other replies, wrong shapes
    for src in [
        &b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"[..],
        b"*2\r\n$7\r\nmessage\r\n$4\r\nnews\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n$1\r\n1\r\n",
        b"*4\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
        b"$7\r\nmessage\r\n",
    ] {
        assert_eq!(resp2(src).as_pubsub(), None, "{}", src.escape_ascii());
    }
}

#[test]
fn value_helpers() {
    assert_eq!(bulk("5").as_str(), Some("5"));
    assert_eq!(bulk("5").as_int(), None);
    assert_eq!(Value::Simple("OK".into()).as_bytes(), Some(&b"OK"[..]));
    assert_eq!(Value::Bulk(vec![0xff]).as_str(), None);
    assert!(Value::Error("ERR".into()).is_error());
    assert!(!bulk("ERR").is_error());
    assert!(Value::Nil.is_nil());
    let arr = Value::Array(vec![Value::Integer(1)]);
    assert_eq!(arr.as_array(), Some(&[Value::Integer(1)][..]));
    assert_eq!(arr.clone().into_array(), Some(vec![Value::Integer(1)]));
    assert_eq!(bulk("x").into_bytes(), Some(b"x".to_vec()));
    assert_eq!(Value::Integer(1).into_bytes(), None);
    assert!(Value::Push(vec![]).is_push());
    assert_eq!(
        Value::Array(vec![bulk("a\n"), Value::Nil, Value::Integer(3)]).to_string(),
        r#"["a\n", (nil), (integer) 3]"#
    );
}

#[test]
fn errors_and_invalid_utf8() {
    // an error reply is a value, the next reply still decodes
    let (replies, failed) = decode_chunks(Resp::new(), &[b"-ERR no\r\n+OK\r\n"]);
    assert!(!failed);
    assert_eq!(
        replies,
        [Value::Error("ERR no".into()), Value::Simple("OK".into())]
    );
    // simple strings and errors are text
    let mut p = session(Resp::new());
    assert!(matches!(
        decode(&mut p, b"+ok\xff\r\n"),
        Err(ProtocolError::InvalidData {
            expected: "UTF-8",
            offset: 3
        })
    ));
    assert!(decode(&mut session(Resp::new()), b"-\xff\r\n").is_err());
    assert!(decode(&mut session(Resp::resp3()), b"!1\r\n\xff\r\n").is_err());
}

#[test]
fn garbage_is_a_protocol_error() {
    for src in [
        &b"HTTP/1.1 400 Bad Request\r\n"[..],
        b"hello\r\n",
        b"\x00\x01\x02",
        b":12a\r\n",
        b":99999999999999999999\r\n",
        b"$3\r\nabcde\r\n",
        b"$-5\r\n",
        b"*x\r\n",
        b"+a\nb\r\n",
        b"_\r\n",
        b"%1\r\n+a\r\n:1\r\n",
    ] {
        assert!(
            decode(&mut session(Resp::new()), src).is_err(),
            "{}",
            src.escape_ascii()
        );
    }
    for src in [
        &b"#x\r\n"[..],
        b",abc\r\n",
        b"=3\r\nabc\r\n",
        b"=7\r\nxyz:abc\r\n",
        b"%1\r\n*1\r\n:1\r\n:2\r\n",
        b"$-1\r\n",
        b"$?\r\n;4\r\nHell\r\n;0\r\n",
        b"HELLO 3\r\n",
    ] {
        assert!(
            decode(&mut session(Resp::resp3()), src).is_err(),
            "{}",
            src.escape_ascii()
        );
    }
}

#[test]
fn every_split_point_yields_the_same_replies() {
    let stream: &[u8] = b"+OK\r\n:7\r\n$5\r\nhel\r\n\r\n$-1\r\n*2\r\n*1\r\n$0\r\n\r\n-E\r\n\
        *3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n";
    let (whole, failed) = decode_chunks(Resp::new(), &[stream]);
    assert!(!failed);
    assert_eq!(whole.len(), 6);
    assert_eq!(whole[2], bulk("hel\r\n"));
    for cut in 0..=stream.len() {
        let split = decode_chunks(Resp::new(), &[&stream[..cut], &stream[cut..]]);
        assert_eq!(split, (whole.clone(), false), "cut at {cut}");
    }
    // and byte by byte
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(decode_chunks(Resp::new(), &bytes), (whole, false));
}

#[test]
fn a_huge_announced_bulk_waits_or_is_refused_without_allocating_it() {
    // Within the limit: nothing but the header is read, the decoder waits.
    let mut p = session(Resp::new().with_config(RespConfig {
        max_reply_len: usize::MAX,
        ..RespConfig::default()
    }));
    assert_eq!(
        decode(&mut p, b"$1000000000000\r\nabc").unwrap(),
        Decoded::Incomplete
    );
    // Over it: refused from the header alone.
    let mut p = session(Resp::new());
    match decode(&mut p, b"$536870912\r\n") {
        Err(ProtocolError::TooLarge { len, max }) => {
            assert_eq!(max, DEFAULT_MAX_REPLY_LEN as u64);
            assert_eq!(len, 536870912 + 12 + 2);
        }
        other => panic!("{other:?}"),
    }
    // An element count over the limit is refused from its header as well.
    let err = decode(&mut session(Resp::new()), b"*4194305\r\n").unwrap_err();
    assert!(err.to_string().contains("elements"), "{err}");
    assert!(decode(&mut session(Resp::new()), b"*4194304\r\n").unwrap() == Decoded::Incomplete);
}

#[test]
fn a_long_line_is_refused_at_the_limit() {
    let short = Resp::new().with_config(RespConfig {
        max_reply_len: 16,
        ..RespConfig::default()
    });
    let mut p = session(short.clone());
    assert_eq!(
        decode(&mut p, b"+0123456789abcd").unwrap(),
        Decoded::Incomplete
    );
    assert!(matches!(
        decode(&mut p, b"+0123456789abcde"),
        Err(ProtocolError::TooLarge { len: 16, max: 16 })
    ));
    let mut p = session(short);
    assert_eq!(
        one(&mut p, b"+0123456789abc\r\n"),
        Value::Simple("0123456789abc".into())
    );
}

#[test]
fn deep_nesting_is_refused_and_never_overflows_the_stack() {
    // 100,000 levels: redis-protocol alone would recurse that deep.
    let mut deep = b"*1\r\n".repeat(100_000);
    deep.extend_from_slice(b":1\r\n");
    let err = decode(&mut session(Resp::new()), &deep).unwrap_err();
    assert!(err.to_string().contains("nesting"), "{err}");
    let mut deep = b">1\r\n".repeat(100_000);
    deep.extend_from_slice(b"_\r\n");
    let err = decode(&mut session(Resp::resp3()), &deep).unwrap_err();
    assert!(err.to_string().contains("nesting"), "{err}");
    // The deepest reply allowed decodes on a thread with a small stack
    // (unoptimised, as tests run).
    let mut max = b"*1\r\n".repeat(DEFAULT_MAX_DEPTH);
    max.extend_from_slice(b":1\r\n");
    let t = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut v = one(&mut session(Resp::new()), &max);
            let mut depth = 0;
            while let Value::Array(mut items) = v {
                v = items.pop().unwrap();
                depth += 1;
            }
            (depth, v)
        })
        .unwrap();
    assert_eq!(t.join().unwrap(), (DEFAULT_MAX_DEPTH, Value::Integer(1)));
    let mut over = b"*1\r\n".repeat(DEFAULT_MAX_DEPTH + 1);
    over.extend_from_slice(b":1\r\n");
    assert!(decode(&mut session(Resp::new()), &over).is_err());
}

#[test]
fn commands_encode_as_redis_protocol_does() {
    use redis_protocol::resp2::{encode::encode_borrowed, types::BorrowedFrame};
    let args: [&[u8]; 4] = [b"PUBLISH", b"news", b"", b"\r\n\x00"];
    let cmd = Cmd::new("PUBLISH").args(&args[1..]);
    let frames: Vec<BorrowedFrame> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let mut want = vec![0; frame.encode_len(false)];
    encode_borrowed(&mut want, &frame, false).unwrap();
    let mut got = b"queued".to_vec();
    session(Resp::new()).encode_into(&cmd, &mut got).unwrap();
    assert_eq!(&got[6..], want);
}

#[test]
fn setup_commands_start_each_session_and_form_the_handshake() {
    let p = Resp::resp3()
        .auth("app", "s3cret")
        .database(2)
        .setup(Cmd::new("CLIENT").arg("SETNAME").arg("lubdub"));
    let debug = format!("{p:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let mut session = session(p.clone());
    assert_eq!(session.start(), Start::Handshake);
    let mut want = Cmd::new("HELLO")
        .args(["3", "AUTH", "app", "s3cret"])
        .to_bytes();
    want.extend(Cmd::new("SELECT").arg("2").to_bytes());
    want.extend(Cmd::new("CLIENT").args(["SETNAME", "lubdub"]).to_bytes());
    assert_eq!(session.wire.take(), want);

    let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n";
    assert_eq!(
        decode(&mut session, hello).unwrap(),
        Decoded::Consumed(hello.len())
    );
    // a push in between is not a setup reply
    let push = b">2\r\n$10\r\ninvalidate\r\n_\r\n";
    assert_eq!(
        decode(&mut session, push).unwrap(),
        Decoded::Consumed(push.len())
    );
    assert_eq!(
        decode(&mut session, b"+OK\r\n").unwrap(),
        Decoded::Consumed(5)
    );
    match decode(&mut session, b"+OK\r\n:1\r\n").unwrap() {
        Decoded::Handshake { data, consumed: 5 } => {
            assert_eq!(data.len(), 3);
            assert_eq!(
                data[0],
                Value::Map(vec![
                    (bulk("server"), bulk("redis")),
                    (bulk("proto"), Value::Integer(3)),
                ])
            );
        }
        other => panic!("{other:?}"),
    }
    // then replies are messages
    assert_eq!(
        decode(&mut session, b":1\r\n").unwrap(),
        Decoded::Message {
            msg: Value::Integer(1),
            consumed: 4
        }
    );
}

#[test]
fn a_setup_error_fails_the_session() {
    let mut session = session(Resp::new().password("wrong").database(1));
    assert_eq!(session.start(), Start::Handshake);
    assert_eq!(
        session.wire.take(),
        [
            Cmd::new("AUTH").arg("wrong").to_bytes(),
            Cmd::new("SELECT").arg(1).to_bytes()
        ]
        .concat()
    );
    let err = decode(
        &mut session,
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    )
    .unwrap_err();
    match err {
        ProtocolError::Other(e) => {
            let e = e.downcast::<RespError>().unwrap();
            assert_eq!(
                *e,
                RespError::SetupFailed {
                    command: "AUTH".into(),
                    message: "WRONGPASS invalid username-password pair or user is disabled.".into()
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_setup_the_session_is_established_at_once() {
    let mut p = session(Resp::new());
    assert_eq!(p.start(), Start::Established);
    assert!(p.wire.out.is_empty());
    let mut p = session(Resp::new().password("pw"));
    p.start();
    assert_eq!(p.wire.take(), Cmd::new("AUTH").arg("pw").to_bytes());
    let mut p = session(Resp::resp3().password("pw"));
    p.start();
    assert_eq!(
        p.wire.take(),
        Cmd::new("HELLO")
            .args(["3", "AUTH", "default", "pw"])
            .to_bytes()
    );
}

#[test]
fn each_session_of_one_resp_keeps_its_own_decoding_state() {
    // Half a reply scanned in one session leaves another's scan alone.
    let p = Resp::new();
    let (mut a, mut b) = (session(p.clone()), session(p));
    let reply = b"*2\r\n:1\r\n:2\r\n";
    assert_eq!(decode(&mut a, &reply[..8]).unwrap(), Decoded::Incomplete);
    assert_eq!(one(&mut b, b":7\r\n"), Value::Integer(7));
    assert_eq!(
        one(&mut a, reply),
        Value::Array(vec![Value::Integer(1), Value::Integer(2)])
    );
    // A finished setup in one session: the next session sets up again.
    let p = Resp::new().password("pw");
    let mut a = session(p.clone());
    assert_eq!(a.start(), Start::Handshake);
    a.wire.take();
    assert!(matches!(
        decode(&mut a, b"+OK\r\n").unwrap(),
        Decoded::Handshake { .. }
    ));
    let mut b = session(p);
    assert_eq!(b.start(), Start::Handshake);
    assert_eq!(b.wire.take(), Cmd::new("AUTH").arg("pw").to_bytes());
    assert_eq!(
        decode(&mut b, b"+OK\r\n").unwrap(),
        Decoded::Handshake {
            data: vec![Value::Simple("OK".into())],
            consumed: 5
        }
    );
}

#[test]
fn an_address_path_selects_the_database() {
    let p = Resp::new();
    let mut c = session(p.for_client("127.0.0.1:6379", "/").unwrap());
    assert_eq!(c.start(), Start::Established);
    assert!(c.wire.out.is_empty());
    let mut c = session(p.for_client("127.0.0.1:6379", "/3").unwrap());
    assert_eq!(c.start(), Start::Handshake);
    assert_eq!(c.wire.take(), Cmd::new("SELECT").arg(3).to_bytes());
    assert!(p.for_client("h:1", "/x").is_err());
    assert!(p.for_client("h:1", "/1?a=b").is_err());
}

// Property tests.

/// Bytes that look like RESP: type bytes, digits, CRLFs, words.
fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<&'static [u8]> = vec![
        b"*", b"$", b":", b"+", b"-", b"%", b"~", b">", b"_", b",", b"#", b"|", b"=", b"!", b"(",
        b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"3", b"-1", b"?", b"t", b"f", b"txt:", b"a",
        b"inf", b"1.5", b"message", b"\xff",
    ];
    prop::collection::vec(prop::sample::select(tokens), 0..64).prop_map(|t| t.concat())
}

/// A RESP2 frame as redis-protocol models it, to encode with its encoder.
fn resp2_frame() -> impl Strategy<Value = redis_protocol::resp2::types::OwnedFrame> {
    use redis_protocol::resp2::types::OwnedFrame as F;
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| F::SimpleString(s.into_bytes())),
        "[a-zA-Z0-9 ]{0,12}".prop_map(F::Error),
        any::<i64>().prop_map(F::Integer),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(F::BulkString),
        Just(F::Null),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(F::Array)
    })
}

fn value_of(frame: &redis_protocol::resp2::types::OwnedFrame) -> Value {
    use redis_protocol::resp2::types::OwnedFrame as F;
    match frame {
        F::SimpleString(s) => Value::Simple(String::from_utf8(s.clone()).unwrap()),
        F::Error(e) => Value::Error(e.clone()),
        F::Integer(n) => Value::Integer(*n),
        F::BulkString(b) => Value::Bulk(b.clone()),
        F::Array(a) => Value::Array(a.iter().map(value_of).collect()),
        F::Null => Value::Nil,
    }
}

fn wire_of(frame: &redis_protocol::resp2::types::OwnedFrame) -> Vec<u8> {
    use redis_protocol::resp2::types::Resp2Frame;
    let mut buf = vec![0; frame.encode_len(false)];
    redis_protocol::resp2::encode::encode(&mut buf, frame, false).unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_and_consumes_within_bounds(
        soup in resp_soup(),
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        resp3 in any::<bool>(),
    ) {
        for input in [&soup, &bytes] {
            let p = if resp3 { Resp::resp3() } else { Resp::new() };
            // decode_chunks checks every consumed count
            let _ = decode_chunks(p, &[input]);
        }
    }

    #[test]
    fn small_limits_never_panic_and_split_decoding_agrees(
        soup in prop_oneof![
            resp_soup(),
            prop::collection::vec(resp2_frame(), 1..3)
                .prop_map(|frames| frames.iter().flat_map(wire_of).collect()),
        ],
        cut in any::<prop::sample::Index>(),
        resp3 in any::<bool>(),
        max_reply_len in 0usize..48,
        max_depth in 0usize..4,
        max_elements in 0usize..8,
    ) {
        let config = RespConfig { max_reply_len, max_depth, max_elements };
        let mk = || if resp3 { Resp::resp3() } else { Resp::new() }.with_config(config);
        let cut = cut.index(soup.len() + 1);
        let whole = decode_chunks(mk(), &[&soup]);
        let split = decode_chunks(mk(), &[&soup[..cut], &soup[cut..]]);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn split_decoding_agrees_with_whole(soup in resp_soup(), cut in any::<prop::sample::Index>(), resp3 in any::<bool>()) {
        let mk = || if resp3 { Resp::resp3() } else { Resp::new() };
        let cut = cut.index(soup.len() + 1);
        let whole = decode_chunks(mk(), &[&soup]);
        let split = decode_chunks(mk(), &[&soup[..cut], &soup[cut..]]);
        prop_assert_eq!(whole, split);
    }

    /// What redis-protocol's encoder writes, this crate decodes to the same
    /// value, whole and split at every byte.
    #[test]
    fn decodes_what_redis_protocol_encodes(frames in prop::collection::vec(resp2_frame(), 1..4)) {
        let stream: Vec<u8> = frames.iter().flat_map(wire_of).collect();
        let want: Vec<Value> = frames.iter().map(value_of).collect();
        prop_assert_eq!(decode_chunks(Resp::new(), &[&stream]), (want.clone(), false));
        for cut in 0..=stream.len() {
            let split = decode_chunks(Resp::new(), &[&stream[..cut], &stream[cut..]]);
            prop_assert_eq!(&split, &(want.clone(), false));
        }
    }

    /// On any input, a reply this crate decodes is the reply redis-protocol
    /// decodes alone (RESP2), and it never waits where redis-protocol has
    /// a whole reply.
    #[test]
    fn agrees_with_redis_protocol_alone(soup in resp_soup()) {
        let theirs = redis_protocol::resp2::decode::decode(&soup);
        match decode(&mut session(Resp::new()), &soup) {
            Ok(Decoded::Message { msg, consumed }) => {
                let (frame, used) = theirs.unwrap().unwrap();
                prop_assert_eq!(consumed, used);
                prop_assert_eq!(msg, value_of(&frame));
            }
            Ok(Decoded::Incomplete) => prop_assert!(!matches!(theirs, Ok(Some(_)))),
            Ok(other) => prop_assert!(false, "unexpected {:?}", other),
            // stricter than redis-protocol: CRLF after bulk data, bare LFs
            Err(_) => {}
        }
    }

    /// Commands round-trip through redis-protocol's decoder.
    #[test]
    fn commands_decode_with_redis_protocol(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8)) {
        use redis_protocol::resp2::types::OwnedFrame as F;
        let cmd = Cmd::new(&args[0][..]).args(&args[1..]);
        let bytes = cmd.to_bytes();
        prop_assert_eq!(bytes.len(), cmd.encoded_len());
        let (frame, used) = redis_protocol::resp2::decode::decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(frame, F::Array(args.iter().cloned().map(F::BulkString).collect()));
        for (i, a) in args.iter().enumerate() {
            prop_assert_eq!(cmd.arg_at(i), Some(&a[..]));
        }
    }
}
