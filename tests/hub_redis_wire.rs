//! A backend with only a Redis client publishes to lubdub's users: the PHP
//! (`phpredis`) and Python (`redis-py`) snippets of docs/hub.md
//! ("Publishing from a backend"), run as they are printed there by the real
//! `php` and `python3`, reach text clients on two nodes and a WebSocket
//! client, over a real `redis-server` started here.

mod hub_redis_support;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use hub_redis_support::process::{output_of, TempDir};
use hub_redis_support::{wait_until, InProcessNode, Redis, WAIT};
use lubdub::hub::{Hub, RedisConfig};
use lubdub::{Worker, Ws};

/// The code block that follows the `n`th "tested by" marker in docs/hub.md.
fn snippet(n: usize) -> String {
    let doc = include_str!("../docs/hub.md");
    let marker = "<!-- tested by tests/hub_redis_wire.rs -->";
    let after = doc
        .split(marker)
        .nth(n + 1)
        .expect("the marker in docs/hub.md");
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("\n```").unwrap()].to_owned()
}

/// Subscribers of `channel`, as Redis counts them.
fn subscribers(redis: &Redis, channel: &str) -> u64 {
    let out = output_of(Command::new("redis-cli").args([
        "-p",
        &redis.port.to_string(),
        "PUBSUB",
        "NUMSUB",
        channel,
    ]))
    .unwrap_or_else(|e| panic!("redis-cli (Debian: redis-tools) is needed: {e}"));
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn run(cmd: &str, script: &std::path::Path, redis: &Redis) {
    let out = output_of(
        Command::new(cmd)
            .arg(script)
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", redis.port.to_string()),
    );
    if let Err(e) = out {
        panic!(
            "{cmd} (with its Redis client: Debian php-cli and php-redis, pip redis) failed: {e}"
        );
    }
}

#[test]
fn php_and_python_backends_publish_through_redis() {
    let redis = Redis::start();
    let url = redis.url();
    let n1 = InProcessNode::start(&url, "n1");
    let n2 = InProcessNode::start(&url, "n2");
    let mut ann = hub_redis_support::LineClient::connect(n1.addr());
    let mut bob = hub_redis_support::LineClient::connect(n2.addr());
    ann.cmd("name ann");
    ann.cmd("join room");
    bob.cmd("join room");

    // A WebSocket node: its clients name themselves with their first text
    // message.
    let ws_hub = Hub::with_redis(RedisConfig::new(&url, "w1"), Ws::default()).unwrap();
    let mut w = Worker::<Ws>::new("ws://127.0.0.1:0").unwrap();
    w.plugin(ws_hub.plugin());
    let h = ws_hub.clone();
    w.on_message(move |c, m| {
        if let lubdub::protocols::ws::Message::Text(uid) = m {
            h.bind_uid(c, &uid).unwrap();
        }
    });
    let ws = w.start().unwrap();
    let mut wsc = std::net::TcpStream::connect(ws.local_addr()).unwrap();
    wsc.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(
        &mut wsc,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ws.local_addr()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        wsc.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // "wsuser", masked as a client must
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 6];
    frame.extend_from_slice(&mask);
    frame.extend(b"wsuser".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
    std::io::Write::write_all(&mut wsc, &frame).unwrap();

    wait_until("every node listens to its channels", WAIT, || {
        subscribers(&redis, "lubdub:ch:g:room") == 2
            && subscribers(&redis, "lubdub:ch:u:ann") == 1
            && subscribers(&redis, "lubdub:ch:u:wsuser") == 1
    });

    let dir = TempDir::new("wire");
    // PHP: the snippet, then a WebSocket frame of each length encoding
    let long = "x".repeat(300);
    let php = format!(
        "{}\nlubdub_publish($redis, 'lubdub', 'u', 'wsuser', lubdub_ws_text('php over ws'));\n\
         lubdub_publish($redis, 'lubdub', 'u', 'wsuser', lubdub_ws_text('{long}'));\n",
        snippet(0)
    );
    run("php", &dir.write("publish.php", &php), &redis);
    ann.expect(&["from php", "php to ann"]);
    bob.expect(&["from php"]);
    let mut got = vec![0u8; 2 + 11 + 4 + 300];
    wsc.read_exact(&mut got).unwrap();
    assert_eq!(&got[..13], b"\x81\x0bphp over ws");
    assert_eq!(&got[13..17], &[0x81, 126, 1, 44]);
    assert_eq!(&got[17..], long.as_bytes());

    // Python: the snippet, then a frame from its WebSocket helper
    let py = format!(
        "{}\nlubdub_publish(r, \"lubdub\", \"u\", \"wsuser\", lubdub_ws_text(\"py over ws\"))\n",
        snippet(1)
    );
    run("python3", &dir.write("publish.py", &py), &redis);
    ann.expect(&["from python", "python to all"]);
    bob.expect(&["from python", "python to all"]);
    // "all" reached the WebSocket client too, as the bytes were given
    // (the snippet's own publishes come first)
    let mut got = vec![0u8; 14 + 12];
    wsc.read_exact(&mut got).unwrap();
    assert_eq!(&got[..14], b"python to all\n");
    assert_eq!(&got[14..], b"\x81\x0apy over ws");

    // nothing was refused, nothing else arrived
    assert_eq!(n1.hub.stats().rejected + n2.hub.stats().rejected, 0);
    assert_eq!(ann.try_line(Duration::from_millis(200)), None);
    ws.stop_and_wait();
}

#[test]
fn the_backplane_gauge_follows_redis() {
    use lubdub::metrics::{Format, Metrics};
    assert_eq!(Hub::<lubdub::Text>::local().backplane_up(), None);
    let mut redis = Redis::start();
    let node = InProcessNode::start(&redis.url(), "n1");
    let mut metrics = Metrics::new();
    metrics.add_hub(&node.hub);
    let gauge = |m: &Metrics| {
        m.encode(Format::Prometheus)
            .lines()
            .find_map(|l| l.strip_prefix("lubdub_hub_backplane_up{node=\"n1\"} "))
            .map(str::to_owned)
    };
    wait_until("on the cluster", WAIT, || {
        node.hub.backplane_up() == Some(true)
    });
    assert_eq!(gauge(&metrics).as_deref(), Some("1.0"));
    redis.kill();
    wait_until("off the cluster", WAIT, || {
        node.hub.backplane_up() == Some(false)
    });
    assert_eq!(gauge(&metrics).as_deref(), Some("0.0"));
    redis.restart();
    wait_until("back on the cluster", WAIT, || {
        node.hub.backplane_up() == Some(true)
    });
}

#[test]
fn cluster_chat_serves_the_publish_api_for_the_whole_cluster() {
    use hub_redis_support::{free_port, Node};
    let redis = Redis::start();
    let url = redis.url();
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let key = "a-key-of-sixteen-bytes-or-more";
    let n1 = Node::start_with("n1", &url, &["--api-listen", &api, "--api-key", key]);
    let n2 = Node::start("n2", &url, None);
    let mut bob = n2.client();
    bob.cmd("name bob");
    wait_until("bob's node listens to his channel", WAIT, || {
        subscribers(&redis, "lubdub:ch:u:bob") == 1
    });
    let curl = |args: &[&str]| {
        output_of(
            Command::new("curl")
                .args(["-sS", "--max-time", "20"])
                .args(args),
        )
        .unwrap_or_else(|e| panic!("curl (Debian: curl) failed: {e}"))
    };
    let header = format!("X-API-Key: {key}");
    // bob is on the other node: the API's node publishes through Redis
    let out = curl(&[
        "-H",
        &header,
        "-d",
        r#"{"to":"uid","target":"bob","data":"from the backend"}"#,
        &format!("http://{api}/api/publish"),
    ]);
    assert_eq!(out, r#"{"ok":true,"local":0}"#);
    bob.expect(&["from the backend"]);
    wait_until("bob reads as online across the cluster", WAIT, || {
        curl(&["-H", &header, &format!("http://{api}/api/online?uid=bob")])
            == r#"{"uid":"bob","online":true}"#
    });
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{api}/api/online?uid=bob"),
    ]);
    assert_eq!(out, "401");
    drop(n1);
}
