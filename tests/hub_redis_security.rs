//! The hub against a Redis that asks who it is: `requirepass`, an ACL user
//! with only the permissions docs/hub.md lists, TLS with a private CA and a
//! client certificate (certificates made with rcgen), a password changed
//! under running nodes, and messages published on Redis by someone else.
//!
//! A logger of this test binary keeps every `log` record, so each test can
//! check that no password ever shows, in a log line or an error.
//! Each test starts its own `redis-server` (with TLS for one of them: the
//! Debian build has it); without `redis-server` on the PATH the tests fail,
//! saying so.

mod hub_redis_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hub_redis_support::pki::Pki;
use hub_redis_support::{
    resp_command, two_and_one_in_g, wait_until, Barrier, InProcessNode, LineClient, Redis, TempDir,
    CONNECTED, WAIT,
};
use lubdub::hub::{Hub, HubError, HubLimits, RedisConfig};
use lubdub::Text;

/// A "must not happen" window.
const QUIET: Duration = Duration::from_millis(300);

/// Every log record of this test binary, as `LEVEL message`.
struct Capture {
    lines: Mutex<Vec<String>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {}", record.level(), record.args());
        self.lines.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture {
            lines: Mutex::new(Vec::new()),
        }));
        log::set_logger(c).expect("the only logger");
        log::set_max_level(log::LevelFilter::Debug);
        c
    })
}

/// Lines logged so far that contain `needle`.
fn logged(needle: &str) -> Vec<String> {
    capture()
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// No log line so far shows any of `secrets`.
fn assert_never_logged(secrets: &[&str]) {
    let lines = capture().lines.lock().unwrap();
    assert!(!lines.is_empty(), "nothing was logged: is the capture on?");
    for s in secrets {
        if let Some(l) = lines.iter().find(|l| l.contains(s)) {
            panic!("a log line shows the secret {s:?}: {l}");
        }
    }
}

/// Has `hear[from]` say to `group`, and every one of `hear` get it.
fn say_reaches(hear: &mut [&mut LineClient], from: usize, group: &str, text: &str) {
    hear[from].send(&format!("say {group} {text}"));
    for c in hear.iter_mut() {
        let l = c.line();
        assert!(l.ends_with(&format!(": {text}")), "{l}");
    }
}

/// A client of each node, bound to `names` and in group `g`, the two
/// nodes settled.
fn pair_in_g(a: &InProcessNode, b: &InProcessNode, names: [&str; 2]) -> (Barrier, [LineClient; 2]) {
    let mut barrier = Barrier::new(&[a.addr(), b.addr()]);
    let mut clients = [a.addr(), b.addr()].map(LineClient::connect);
    for (c, name) in clients.iter_mut().zip(names) {
        c.cmd(&format!("name {name}"));
        c.cmd("join g");
    }
    barrier.sync();
    (barrier, clients)
}

/// The permissions docs/hub.md ("Security") gives a node's ACL user, for
/// namespace `ns`.
fn documented_acl(ns: &str, password: &str) -> Vec<String> {
    let mut rule = vec![
        "hub".to_owned(),
        "on".to_owned(),
        format!(">{password}"),
        "resetkeys".to_owned(),
        format!("~{ns}:*"),
        "resetchannels".to_owned(),
        format!("&{ns}:*"),
        "-@all".to_owned(),
    ];
    rule.extend(
        [
            "+client|setname",
            "+select",
            "+publish",
            "+subscribe",
            "+unsubscribe",
            "+eval",
            "+get",
            "+set",
            "+pttl",
            "+del",
            "+exists",
            "+sadd",
            "+srem",
            "+smembers",
            "+sunion",
            "+hset",
            "+hdel",
            "+hgetall",
        ]
        .map(str::to_owned),
    );
    rule
}

#[test]
fn requirepass_and_an_acl_user_with_the_documented_permissions() {
    capture();
    const PW: &str = "pw-4ee1-default";
    const HUB_PW: &str = "pw-9c3b-hub";
    const WRONG: &str = "pw-77aa-wrong";
    let acl = documented_acl("app", HUB_PW);
    let mut args = vec!["--requirepass", PW, "--user"];
    args.extend(acl.iter().map(String::as_str));
    args.extend(["--user", "admin", "on", ">admin-pw", "~*", "&*", "+@all"]);
    let redis = Redis::start_with(&args).authed(&["admin", "admin-pw"]);
    let port = redis.port;

    // requirepass: the password in the URL, or given apart.
    let a = InProcessNode::start_with(RedisConfig::new(
        &format!("redis://:{PW}@127.0.0.1:{port}"),
        "pw-a",
    ));
    let b = InProcessNode::start_with(
        RedisConfig::new(&format!("redis://127.0.0.1:{port}"), "pw-b").password(PW),
    );
    let (_barrier, [mut ann, mut bob]) = pair_in_g(&a, &b, ["ann", "bob"]);
    say_reaches(&mut [&mut ann, &mut bob], 0, "g", "over requirepass");
    assert_eq!(bob.ask("who g"), "g 2");

    // An ACL user with only the documented permissions, in its namespace:
    // the whole API, then a graceful stop; Redis denied nothing.
    let url = format!("redis://hub:{HUB_PW}@127.0.0.1:{port}");
    let c = InProcessNode::start_with(RedisConfig::new(&url, "acl-c").namespace("app"));
    let d = InProcessNode::start_with(RedisConfig::new(&url, "acl-d").namespace("app"));
    let (barrier, [mut cat, mut dan]) = pair_in_g(&c, &d, ["cat", "dan"]);
    say_reaches(&mut [&mut cat, &mut dan], 0, "g", "over an acl user");
    assert_eq!(dan.ask("who g"), "g 2");
    assert_eq!(dan.ask("online cat"), "yes");
    assert_eq!(dan.ask("uids"), "2");
    assert_eq!(dan.ask("members g"), "cat,dan");
    cat.send("dm dan a dm");
    assert_eq!(dan.line(), "a dm");
    let dan_id = dan.ask("id");
    cat.send(&format!("to {dan_id} to one connection"));
    assert_eq!(dan.line(), "to one connection");
    dan.send("all to all");
    for x in [&mut cat, &mut dan] {
        assert_eq!(x.line(), "to all");
    }
    drop(barrier);
    drop(d); // a graceful stop: the name and the presence go at once
    assert_eq!(redis.command(&["EXISTS", "app:node:acl-d"]), ":0");
    assert_eq!(cat.ask("who g"), "g 1");
    assert_eq!(
        redis.command(&["ACL", "LOG"]),
        "*0",
        "redis denied the hub a command"
    );
    // Nothing of cluster `app` is in the other namespace, and back.
    assert_eq!(ann.ask("who g"), "g 2");

    // A wrong password at start: a clear error, without the password.
    let e = match Hub::<Text>::with_redis(
        RedisConfig::new(&format!("redis://hub:{WRONG}@127.0.0.1:{port}"), "wrong"),
        Text::new(),
    ) {
        Ok(_) => panic!("a node with a wrong password started"),
        Err(e) => e,
    };
    assert!(matches!(e, HubError::Redis(_)), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(shown.contains("WRONGPASS"), "{shown}");
    assert!(!shown.contains(WRONG), "{shown}");
    assert!(!logged("hub wrong:").is_empty(), "the refusal is logged");
    assert_never_logged(&[PW, HUB_PW, WRONG]);
}

#[test]
fn a_password_changed_under_running_nodes_is_a_clear_error_then_a_reconnect() {
    capture();
    const PW: &str = "pw-51d0-old";
    const NEW: &str = "pw-be8e-new";
    let redis = Redis::start_with(&[
        "--requirepass",
        PW,
        "--user",
        "admin",
        "on",
        ">admin-pw",
        "~*",
        "&*",
        "+@all",
    ])
    .authed(&["admin", "admin-pw"]);
    let url = format!("redis://:{PW}@127.0.0.1:{}", redis.port);
    let a = InProcessNode::start_with(RedisConfig::new(&url, "rot-a"));
    let b = InProcessNode::start_with(RedisConfig::new(&url, "rot-b"));
    let (mut barrier, [mut ann, mut amy, mut bob]) = two_and_one_in_g(&a, &b);
    let connected = |node: &str| logged(&format!("hub {node}: {CONNECTED}")).len();
    let (ca, cb) = (connected("rot-a"), connected("rot-b"));

    // The password changes and the nodes' connections are cut.
    assert_eq!(redis.command(&["CONFIG", "SET", "requirepass", NEW]), "+OK");
    let connections = |r: &Redis| -> u64 {
        let info = r.command_text(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("total_connections_received")
    };
    for kind in ["normal", "pubsub"] {
        assert!(redis
            .command(&["CLIENT", "KILL", "TYPE", kind])
            .starts_with(':'));
    }
    for node in ["rot-a", "rot-b"] {
        let needle = format!("hub {node}: redis at redis://:***@");
        wait_until("the node to say why it cannot get in", WAIT, || {
            logged(&needle).iter().any(|l| l.contains("WRONGPASS"))
        });
    }
    // A window to watch the retries: a backoff, not a loop, and one
    // warning per node for the whole outage.
    let before = connections(&redis);
    std::thread::sleep(Duration::from_secs(3));
    let tries = connections(&redis) - before;
    assert!(tries >= 2, "{tries} connection attempts in 3 s: no retry");
    // 2 nodes x 2 connections; the schedule's ceilings (100 ms doubling
    // to 5 s) allow at most about 7 each in 3 s, plus the checks' own.
    assert!(
        tries <= 40,
        "{tries} connection attempts in 3 s: no backoff"
    );
    for node in ["rot-a", "rot-b"] {
        let warnings = logged(&format!("hub {node}: redis at"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("WARN"), "{}", warnings[0]);
    }
    // Local delivery goes on.
    say_reaches(&mut [&mut ann, &mut amy], 0, "g", "local only");
    bob.expect_silence(QUIET);

    // The password is back: the nodes get in by themselves.
    assert_eq!(redis.command(&["CONFIG", "SET", "requirepass", PW]), "+OK");
    wait_until("both nodes to reconnect", WAIT, || {
        connected("rot-a") > ca && connected("rot-b") > cb
    });
    barrier.sync();
    say_reaches(&mut [&mut ann, &mut amy, &mut bob], 2, "g", "back");
    assert_never_logged(&[PW, NEW]);
}

#[test]
fn tls_with_a_private_ca_a_client_certificate_and_a_password() {
    capture();
    const PW: &str = "pw-0d2c-tls";
    let pki = Pki::new();
    let dir = TempDir::new("hub-tls");
    // `--tls-auth-clients` is `yes` by default: a client certificate signed
    // by the CA is required.
    let redis = Redis::start_tls(&dir, &pki, &["--requirepass", PW]).authed(&[PW]);
    let url = format!("rediss://:{PW}@127.0.0.1:{}", redis.tls_port.unwrap());
    let config = |node: &str| RedisConfig::new(&url, node).tls(pki.with_client_cert());
    let a = InProcessNode::start_with(config("tls-a"));
    let b = InProcessNode::start_with(config("tls-b"));
    let (_barrier, [mut ann, mut bob]) = pair_in_g(&a, &b, ["ann", "bob"]);
    say_reaches(&mut [&mut ann, &mut bob], 1, "g", "over tls");
    assert_eq!(bob.ask("online ann"), "yes");

    // Without the client certificate, or trusting the public roots only,
    // a node never gets in; it starts, says why, and serves locally.
    let shown = format!("rediss://:***@127.0.0.1:{}", redis.tls_port.unwrap());
    for (node, tls, why) in [
        ("tls-nocert", Some(pki.trust_only()), "CertificateRequired"),
        ("tls-public", None, "UnknownIssuer"),
    ] {
        let mut c = RedisConfig::new(&url, node);
        if let Some(tls) = tls {
            c = c.tls(tls);
        }
        let n = InProcessNode::start_with(c);
        // At start, and then from the backplane's connections.
        let at_start = format!("hub {node}: redis at {shown} could not be reached");
        let running = format!("hub {node}: redis at {shown}: ");
        wait_until("the node to say why it cannot connect", WAIT, || {
            let (a, b) = (logged(&at_start), logged(&running));
            a.len() == 1 && a[0].contains(why) && b.len() == 1 && b[0].contains(why)
        });
        let mut x = LineClient::connect(n.addr());
        x.cmd("join g");
        say_reaches(&mut [&mut x], 0, "g", "alone");
        assert!(logged(&format!("hub {node}: {CONNECTED}")).is_empty());
    }
    ann.expect_silence(QUIET);
    assert_never_logged(&[PW]);
}

/// A message as a node publishes it (the layout in crates/hub/src/wire.rs):
/// version 1, origin, target, exceptions, the encoded message.
fn forged(origin: &str, target: Forged, except: &[(&str, u64)], msg: &[u8]) -> Vec<u8> {
    fn name(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = vec![1];
    name(&mut out, origin);
    match target {
        Forged::Uid(u) => {
            out.push(0);
            name(&mut out, u);
        }
        Forged::Group(g) => {
            out.push(1);
            name(&mut out, g);
        }
        Forged::All => out.push(2),
        Forged::Conn(node, id) => {
            out.push(3);
            name(&mut out, node);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out.extend_from_slice(&(except.len() as u16).to_be_bytes());
    for (node, id) in except {
        name(&mut out, node);
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(msg);
    out
}

#[derive(Clone, Copy)]
enum Forged<'a> {
    Uid(&'a str),
    Group(&'a str),
    All,
    Conn(&'a str, u64),
}

#[test]
fn messages_published_on_redis_reach_no_one_but_their_channel() {
    capture();
    let redis = Redis::start();
    let limits = HubLimits::default().max_message_size(1024);
    let hub = Hub::with_redis(RedisConfig::new(&redis.url(), "trust-a"), Text::new())
        .unwrap()
        .with_limits(limits);
    let a = InProcessNode::serve(hub);
    let (mut ann, mut bob) = (LineClient::connect(a.addr()), LineClient::connect(a.addr()));
    ann.cmd("name ann");
    ann.cmd("join g");
    bob.cmd("name bob");
    let bob_id: u64 = bob.ask("id").rsplit_once(':').unwrap().1.parse().unwrap();
    // Subscribed to ann's and bob's channels, the group's, `all` and its own.
    let publish = |channel: &str, payload: &[u8]| {
        redis.command_bytes(&[b"PUBLISH", channel.as_bytes(), payload])
    };
    let ok = forged("mallory", Forged::Uid("ann"), &[], b"on ann's channel\n");
    wait_until("the node to listen", WAIT, || {
        publish("lubdub:ch:u:ann", &ok) == ":1"
    });
    // Anyone who can publish on this Redis can reach a user on her own
    // channel: that is what the ACLs of docs/hub.md are for.
    while let Some(l) = ann.try_line(QUIET) {
        assert_eq!(l, "on ann's channel");
    }
    let rejected = a.hub.stats().rejected;
    let big = vec![b'x'; 1025];
    let long_node = "n".repeat(65);
    // (channel, target, message): each target is not its channel's.
    let (u, g, n) = ("lubdub:ch:u:ann", "lubdub:ch:g:g", "lubdub:ch:n:trust-a");
    let crossing = [
        // A uid's channel reaches that uid only...
        (u, Forged::Uid("bob"), "to bob"),
        (u, Forged::All, "to all"),
        (u, Forged::Group("g"), "to g"),
        (u, Forged::Conn("trust-a", bob_id), "to bob's connection"),
        // ...a group's that group, `all` everyone, a node's one of its
        // own connections.
        (g, Forged::Uid("bob"), "g to bob"),
        (g, Forged::All, "g to all"),
        ("lubdub:ch:all", Forged::Uid("bob"), "all to bob"),
        (n, Forged::Uid("bob"), "n to bob"),
        (n, Forged::All, "n to all"),
        (n, Forged::Conn("elsewhere", bob_id), "n to another node"),
    ];
    let mut cases: Vec<(&str, Vec<u8>)> = crossing
        .iter()
        .map(|(c, t, m)| (*c, forged("m", *t, &[], format!("{m}\n").as_bytes())))
        .collect();
    // Every field within bounds, on the right channel.
    let to_ann = Forged::Uid("ann");
    cases.extend([
        (u, forged("m", to_ann, &[], &big)),
        (u, forged(&long_node, to_ann, &[], b"x\n")),
        (u, forged("", to_ann, &[], b"x\n")),
        (u, forged("m", to_ann, &[("n", 1); 1025], b"x\n")),
        (u, b"\x01\xff\xffgarbage".to_vec()),
        (u, b"not even the version".to_vec()),
    ]);
    for (channel, payload) in &cases {
        assert_eq!(publish(channel, payload), ":1", "{channel}");
    }
    // A flood of the same, pipelined on one connection.
    const FLOOD: usize = 10_000;
    let c = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let flood = forged("m", Forged::Uid("bob"), &[], b"flood\n");
    let one = resp_command(&[b"PUBLISH", b"lubdub:ch:u:ann", &flood]);
    let mut w = std::io::BufWriter::new(c.try_clone().unwrap());
    let writer = std::thread::spawn(move || {
        for _ in 0..FLOOD {
            w.write_all(&one).unwrap();
        }
        w.flush().unwrap();
    });
    let mut r = BufReader::new(c);
    let mut line = String::new();
    for _ in 0..FLOOD {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), ":1");
    }
    writer.join().unwrap();
    let want = rejected + (cases.len() + FLOOD) as u64;
    wait_until("every forged message to be refused", WAIT, || {
        a.hub.stats().rejected >= want
    });
    assert_eq!(a.hub.stats().rejected, want);
    // Nothing reached anyone; the subscriber connection is still up.
    ann.expect_silence(QUIET);
    bob.expect_silence(Duration::from_millis(1));
    assert_eq!(
        publish(
            "lubdub:ch:u:bob",
            &forged("m", Forged::Uid("bob"), &[], b"ok\n")
        ),
        ":1"
    );
    assert_eq!(bob.line(), "ok");
    // Refusals are logged once per episode, not once each.
    let warned = logged("hub trust-a: refused");
    assert_eq!(warned.len(), 1, "{warned:?}");
    eprintln!("{warned:?}");
}

#[test]
fn a_database_number_with_namespaces_keeps_two_clusters_apart() {
    capture();
    let redis = Redis::start();
    let base = redis.url();
    // Pub/sub ignores the database: without a namespace of its own, a
    // `/db` URL is refused.
    let e = RedisConfig::new(&format!("{base}/1"), "x1");
    let e = match Hub::<Text>::with_redis(e, Text::new()) {
        Ok(_) => panic!("a /db URL without a namespace was taken"),
        Err(e) => e,
    };
    assert!(
        matches!(e, HubError::Config(_)) && e.to_string().contains("namespace"),
        "{e}"
    );
    let one = |node: &str| {
        InProcessNode::start_with(RedisConfig::new(&format!("{base}/1"), node).namespace("one"))
    };
    let x1 = one("x1");
    let x2 = one("x2");
    // The same node name in the other cluster: its own claim.
    let y1 =
        InProcessNode::start_with(RedisConfig::new(&format!("{base}/2"), "x1").namespace("two"));
    let mut barrier = Barrier::new(&[x1.addr(), x2.addr()]);
    let (mut a, mut b) = (
        LineClient::connect(x1.addr()),
        LineClient::connect(x2.addr()),
    );
    let mut c = LineClient::connect(y1.addr());
    for x in [&mut a, &mut b, &mut c] {
        x.cmd("join g");
    }
    barrier.sync();
    a.send("all everyone of cluster one");
    assert_eq!(a.line(), "everyone of cluster one");
    assert_eq!(b.line(), "everyone of cluster one");
    say_reaches(&mut [&mut a, &mut b], 1, "g", "in one");
    c.expect_silence(QUIET);
    assert_eq!(c.ask("who g"), "g 1");
    assert_eq!(a.ask("who g"), "g 2");
    // The keys are in the clusters' databases, none in database 0.
    assert_eq!(redis.dbsize(), 0);
}
