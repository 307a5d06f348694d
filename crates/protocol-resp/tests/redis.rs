//! `Client<Resp>` against a real `redis-server` over loopback: commands, a
//! pipelined burst, pub/sub in RESP2 and RESP3, authentication and database
//! selection, and a server that answers garbage.
//!
//! Each test starts its own `redis-server` on a free port and kills it when
//! done. Without `redis-server` on the PATH the tests fail, saying so
//! (Debian: `apt-get install -y redis-server`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use lubdub_resp::{Cmd, PubSub, RedisUrl, Resp, RespError, SubscriptionKind, Value};
use lubdub_worker::{
    Backoff, Client, CloseReason, ConnError, Connection, EventLoop, LoopHandle, ProtocolError,
};

/// Generous bound for any event a test awaits (loaded 2-core CI machine).
const WAIT: Duration = Duration::from_secs(20);

fn recv<T>(rx: &Receiver<T>) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("event not seen within {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("event channel closed"),
    }
}

/// A `redis-server` of this test's own, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(extra_args: &[&str]) -> Self {
        // The port is free when probed; another process may take it before
        // redis binds it, so a bind failure tries another.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("probe a free port")
                .port();
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let mut server = match spawned {
                Ok(child) => RedisServer { child, port },
                Err(e) => panic!(
                    "cannot run redis-server ({e}): these tests need a real Redis on the PATH \
                     (Debian: apt-get install -y redis-server)"
                ),
            };
            // Wait for redis to say it is ready (its log goes to stdout);
            // keep draining the log afterwards so redis never blocks on it.
            // A panic meanwhile drops `server`, which kills redis.
            let stdout = server.child.stdout.take().expect("piped stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut log = String::new();
                let mut ready = false;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if !ready {
                        log.push_str(&line);
                        log.push('\n');
                        if line.contains("Ready to accept connections") {
                            ready = true;
                            let _ = tx.send(Ok(()));
                        }
                    }
                }
                if !ready {
                    let _ = tx.send(Err(log));
                }
            });
            match recv(&rx) {
                Ok(()) => return server,
                Err(log) => {
                    drop(server);
                    if !log.contains("Address already in use") {
                        panic!("redis-server did not start:\n{log}");
                    }
                    last_log = log;
                }
            }
        }
        panic!("redis-server found no free port:\n{last_log}");
    }

    fn url(&self, path: &str) -> String {
        format!("redis://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a standalone event loop on a thread; `setup` runs on it.
fn spawn_loop(
    setup: impl FnOnce(&LoopHandle) + Send + 'static,
) -> (LoopHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        EventLoop::run(move |h| {
            setup(h);
            tx.send(h.clone()).unwrap();
        })
    });
    (recv(&rx), t)
}

/// A client connection to `url` whose replies arrive on the returned channel.
fn connect(
    url: String,
    protocol: Resp,
) -> (
    Connection<Resp>,
    Receiver<Value>,
    LoopHandle,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let (conn_tx, conn_rx) = mpsc::channel();
    let (lp, t) = spawn_loop(move |_| {
        let mut client = Client::with_protocol(url.as_str(), protocol).unwrap();
        client.on_message(move |_, v| {
            let _ = tx.send(v);
        });
        conn_tx.send(client.connect().unwrap()).unwrap();
    });
    (recv(&conn_rx), rx, lp, t)
}

fn simple(s: &str) -> Value {
    Value::Simple(s.into())
}

fn bulk(s: &str) -> Value {
    Value::Bulk(s.as_bytes().to_vec())
}

#[test]
fn commands_and_a_pipelined_burst_of_10000() {
    let server = RedisServer::start(&[]);
    let (conn, replies, lp, t) = connect(server.url(""), Resp::new());
    let send = |cmd: Cmd| assert!(conn.send(&cmd).is_queued());

    send(Cmd::new("SET").arg("greeting").arg("hello"));
    assert_eq!(recv(&replies), simple("OK"));
    send(Cmd::new("GET").arg("greeting"));
    assert_eq!(recv(&replies), bulk("hello"));
    send(Cmd::new("GET").arg("missing"));
    assert_eq!(recv(&replies), Value::Nil);
    send(Cmd::new("INCR").arg("counter"));
    send(Cmd::new("INCRBY").arg("counter").arg(41));
    assert_eq!(recv(&replies), Value::Integer(1));
    assert_eq!(recv(&replies), Value::Integer(42));
    // an error reply answers one command; the connection goes on
    send(Cmd::new("INCR").arg("greeting"));
    let err = recv(&replies);
    assert!(
        err.error_message()
            .unwrap()
            .starts_with("ERR value is not an integer"),
        "{err}"
    );
    send(
        Cmd::new("RPUSH")
            .arg("list")
            .args(["a", "b"])
            .arg(&b"\r\n\x00"[..]),
    );
    assert_eq!(recv(&replies), Value::Integer(3));
    send(Cmd::new("LRANGE").arg("list").arg(0).arg(-1));
    assert_eq!(
        recv(&replies),
        Value::Array(vec![
            bulk("a"),
            bulk("b"),
            Value::Bulk(b"\r\n\x00".to_vec())
        ])
    );

    // 10,000 commands queued at once (coalesced into few writes); Redis
    // answers in order.
    let started = Instant::now();
    for _ in 0..10_000 {
        send(Cmd::new("INCR").arg("burst"));
    }
    for n in 1..=10_000 {
        assert_eq!(recv(&replies), Value::Integer(n));
    }
    eprintln!("10,000 pipelined INCRs answered in {:?}", started.elapsed());
    lp.stop();
    t.join().unwrap();
}

#[test]
fn pubsub_between_two_clients_in_resp2_and_resp3() {
    let server = RedisServer::start(&[]);
    let (sub, sub_rx, lp1, t1) = connect(server.url(""), Resp::new());
    let (publisher, pub_rx, lp2, t2) = connect(server.url(""), Resp::new());

    sub.send(&Cmd::new("SUBSCRIBE").arg("news"));
    let confirm = recv(&sub_rx);
    assert_eq!(
        confirm.as_pubsub(),
        Some(PubSub::Subscription {
            kind: SubscriptionKind::Subscribe,
            channel: Some(b"news"),
            count: 1
        })
    );
    publisher.send(&Cmd::new("PUBLISH").arg("news").arg("hello"));
    assert_eq!(
        recv(&pub_rx),
        Value::Integer(1),
        "one subscriber received it"
    );
    let msg = recv(&sub_rx);
    assert_eq!(
        msg.as_pubsub(),
        Some(PubSub::Message {
            channel: b"news",
            payload: b"hello",
            sharded: false
        })
    );

    sub.send(&Cmd::new("PSUBSCRIBE").arg("n*"));
    assert!(matches!(
        recv(&sub_rx).as_pubsub(),
        Some(PubSub::Subscription {
            kind: SubscriptionKind::PSubscribe,
            count: 2,
            ..
        })
    ));
    publisher.send(&Cmd::new("PUBLISH").arg("news").arg(&b"\x00binary"[..]));
    assert!(recv(&pub_rx).as_int().is_some());
    let (a, b) = (recv(&sub_rx), recv(&sub_rx));
    let kinds = [a.as_pubsub().unwrap(), b.as_pubsub().unwrap()];
    assert!(kinds.contains(&PubSub::Message {
        channel: b"news",
        payload: b"\x00binary",
        sharded: false
    }));
    assert!(kinds.contains(&PubSub::PatternMessage {
        pattern: b"n*",
        channel: b"news",
        payload: b"\x00binary"
    }));

    // RESP3: the HELLO reply is the handshake, pushes and replies share
    // the connection.
    let (hello_tx, hello_rx) = mpsc::channel();
    let (tx3, rx3) = mpsc::channel();
    let url = server.url("");
    let (lp3, t3) = spawn_loop(move |_| {
        let mut client = Client::with_protocol(url.as_str(), Resp::resp3()).unwrap();
        let on_connect_tx = hello_tx.clone();
        client.on_handshake(move |_, replies: &Vec<Value>| {
            let _ = hello_tx.send(format!("handshake {}", replies[0]));
            Ok(())
        });
        client.on_connect(move |c| {
            let _ = on_connect_tx.send("connected".to_string());
            c.send(&Cmd::new("SUBSCRIBE").arg("news"));
        });
        client.on_message(move |_, v| {
            let _ = tx3.send(v);
        });
        client.connect().unwrap();
    });
    let hello = recv(&hello_rx);
    assert!(hello.contains("\"proto\": (integer) 3"), "{hello}");
    assert_eq!(
        recv(&hello_rx),
        "connected",
        "on_connect after the handshake"
    );
    let confirm = recv(&rx3);
    assert!(confirm.is_push(), "{confirm}");
    assert!(matches!(
        confirm.as_pubsub(),
        Some(PubSub::Subscription {
            kind: SubscriptionKind::Subscribe,
            count: 1,
            ..
        })
    ));
    publisher.send(&Cmd::new("PUBLISH").arg("news").arg("to both"));
    assert_eq!(
        recv(&pub_rx),
        Value::Integer(3),
        "RESP2 channel + pattern, RESP3 channel"
    );
    let push = recv(&rx3);
    assert!(push.is_push());
    assert_eq!(
        push.as_pubsub().and_then(|m| m.payload()),
        Some(&b"to both"[..])
    );
    for _ in 0..2 {
        assert!(recv(&sub_rx).as_pubsub().is_some());
    }

    for (lp, t) in [(lp1, t1), (lp2, t2), (lp3, t3)] {
        lp.stop();
        t.join().unwrap();
    }
}

#[test]
fn authentication_and_database_selection() {
    let server = RedisServer::start(&["--requirepass", "s3cret"]);

    // RESP3 with a password; the address's path selects database 3.
    let (events_tx, events) = mpsc::channel();
    let (conn_tx, conn_rx) = mpsc::channel();
    let (tx, replies) = mpsc::channel();
    let url = server.url("/3");
    let (lp, t) = spawn_loop(move |_| {
        let mut client =
            Client::with_protocol(url.as_str(), Resp::resp3().password("s3cret")).unwrap();
        client.on_handshake(move |_, replies: &Vec<Value>| {
            let _ = events_tx.send(replies.clone());
            Ok(())
        });
        client.on_message(move |_, v| {
            let _ = tx.send(v);
        });
        conn_tx.send(client.connect().unwrap()).unwrap();
    });
    let conn = recv(&conn_rx);
    let setup = recv(&events);
    assert_eq!(setup.len(), 2, "HELLO then SELECT: {setup:?}");
    assert!(matches!(&setup[0], Value::Map(_)), "{}", setup[0]);
    assert_eq!(setup[1], simple("OK"));
    conn.send(&Cmd::new("SET").arg("where").arg("db3"));
    assert_eq!(recv(&replies), simple("OK"));
    lp.stop();
    t.join().unwrap();

    // RESP2, the same database by `database`; database 0 does not have it.
    for (db, want) in [(3, bulk("db3")), (0, Value::Nil)] {
        let (conn, replies, lp, t) =
            connect(server.url(""), Resp::new().password("s3cret").database(db));
        conn.send(&Cmd::new("GET").arg("where"));
        assert_eq!(recv(&replies), want, "database {db}");
        lp.stop();
        t.join().unwrap();
    }

    // Without the password: commands get error replies, nothing breaks.
    let (conn, replies, lp, t) = connect(server.url(""), Resp::new());
    conn.send(&Cmd::new("GET").arg("where"));
    let reply = recv(&replies);
    assert!(
        reply.error_message().unwrap().starts_with("NOAUTH"),
        "{reply}"
    );
    lp.stop();
    t.join().unwrap();

    // A wrong password fails the session before on_connect.
    let (err_tx, errors) = mpsc::channel();
    let (connect_tx, connects) = mpsc::channel::<()>();
    let url = server.url("");
    let (lp, t) = spawn_loop(move |_| {
        let mut client =
            Client::with_protocol(url.as_str(), Resp::new().password("wrong")).unwrap();
        client.on_connect(move |_| {
            let _ = connect_tx.send(());
        });
        client.on_error(move |_, e| {
            let setup = match e {
                ConnError::Protocol(ProtocolError::Other(inner)) => {
                    inner.downcast_ref::<RespError>().cloned()
                }
                _ => None,
            };
            let _ = err_tx.send((setup, e.to_string()));
        });
        client.connect().unwrap();
    });
    match recv(&errors) {
        (Some(RespError::SetupFailed { command, message }), _) => {
            assert_eq!(command, "AUTH");
            assert!(message.starts_with("WRONGPASS"), "{message}");
        }
        (_, other) => panic!("expected a setup failure, got {other}"),
    }
    lp.stop();
    t.join().unwrap();
    assert!(connects.try_recv().is_err(), "on_connect ran");
}

#[test]
fn urls_with_credentials_for_requirepass_and_for_an_acl_user() {
    let server = RedisServer::start(&[
        "--requirepass",
        "pw-default",
        "--user",
        "app",
        "on",
        ">pw-app",
        "~*",
        "&*",
        "+@all",
    ]);
    let port = server.port;
    for (url, whoami) in [
        (format!("redis://:pw-default@127.0.0.1:{port}/1"), "default"),
        (format!("redis://app:pw-app@127.0.0.1:{port}"), "app"),
        // A %-encoded password.
        (format!("redis://app:pw%2Dapp@127.0.0.1:{port}/2"), "app"),
    ] {
        let parsed = RedisUrl::parse(&url).unwrap();
        assert!(!parsed.to_string().contains("pw"), "{parsed}");
        let (conn, replies, lp, t) = connect(parsed.address(), parsed.apply(Resp::new()));
        conn.send(&Cmd::new("ACL").arg("WHOAMI"));
        assert_eq!(recv(&replies), bulk(whoami), "{parsed}");
        lp.stop();
        t.join().unwrap();
    }
    // A wrong password: the session fails; nothing shows the password.
    let parsed = RedisUrl::parse(&format!("redis://app:not-it@127.0.0.1:{port}")).unwrap();
    let (err_tx, errors) = mpsc::channel();
    let (lp, t) = spawn_loop(move |_| {
        let mut client =
            Client::with_protocol(parsed.address().as_str(), parsed.apply(Resp::new())).unwrap();
        client.on_error(move |_, e| {
            let _ = err_tx.send(e.to_string());
        });
        client.connect().unwrap();
    });
    let e = recv(&errors);
    assert!(e.contains("WRONGPASS") && !e.contains("not-it"), "{e}");
    lp.stop();
    t.join().unwrap();
}

#[test]
fn a_server_answering_garbage_is_a_protocol_error_then_a_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, accepted) = mpsc::channel();
    let server = std::thread::spawn(move || {
        for (i, stream) in listener.incoming().take(2).enumerate() {
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            accepted_tx.send(i).unwrap();
            // Until the client gives up on this connection.
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });

    let (err_tx, errors) = mpsc::channel();
    let (close_tx, closes) = mpsc::channel();
    let (msg_tx, messages) = mpsc::channel();
    let (lp, t) = spawn_loop(move |_| {
        let mut client =
            Client::with_protocol(format!("redis://{addr}").as_str(), Resp::new()).unwrap();
        client.auto_reconnect(Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            seed: Some(7),
            ..Backoff::default()
        });
        client.on_error(move |_, e| {
            let protocol = matches!(e, ConnError::Protocol(ProtocolError::Malformed(_)));
            let _ = err_tx.send((protocol, e.to_string()));
        });
        client.on_close(move |_, reason| {
            let _ = close_tx.send(reason.clone());
        });
        client.on_message(move |_, v| {
            let _ = msg_tx.send(v);
        });
        let conn = client.connect().unwrap();
        conn.send(&Cmd::new("PING"));
    });
    for session in 0..2 {
        assert_eq!(recv(&accepted), session);
        let (protocol, text) = recv(&errors);
        assert!(protocol, "session {session}: {text}");
        assert!(text.contains("not a RESP type byte"), "{text}");
        assert_eq!(recv(&closes), CloseReason::Protocol);
    }
    lp.stop();
    t.join().unwrap();
    server.join().unwrap();
    assert!(messages.try_recv().is_err(), "garbage delivered as a reply");
}
