//! The cluster_chat example is safe to deploy: nodes as child processes
//! (the compiled example; a plain `cargo test` builds it) over a real
//! `redis-server` of the test's own, driven by line clients over loopback,
//! with the chat's default limits unless a test says otherwise. Names and
//! rooms are checked, a name is bound once per connection and is unique
//! across nodes (and in a room), text reaches others escaped, a flooding
//! connection gets one notice and is closed, lines over 64 KiB close the
//! connection, and with `--jwt-secret` the identity comes from a verified
//! token on the first line (tokens made here).

mod chat_support;
mod hub_redis_support;

use std::time::{Duration, Instant};

use chat_support::SECRET;
use hub_redis_support::{check_deadline, Barrier, LineClient, Node, Redis, WAIT};

/// A "must not happen" window.
const QUIET: Duration = Duration::from_millis(300);

const NAME_RULE: &str = "is 1 to 32 ASCII letters, digits, '_', '-' or '.'";

/// Asks `line` until the answer is `want`, ten times a second at most (well
/// within the chat's default rate), within `WAIT`.
fn ask_until(c: &mut LineClient, line: &str, want: &str) {
    let start = Instant::now();
    loop {
        let got = c.ask(line);
        if got == want {
            return;
        }
        check_deadline(
            start,
            WAIT,
            &format!("{line:?} to be answered {want:?} (got {got:?})"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Redis and two nodes, n1 and n2, started with `flags`.
fn two_nodes(flags: &[&str]) -> (Redis, Node, Node) {
    let redis = Redis::start();
    let n1 = Node::start_with("n1", &redis.url(), flags);
    let n2 = Node::start_with("n2", &redis.url(), flags);
    (redis, n1, n2)
}

#[test]
fn names_are_checked_bound_once_and_unique_across_nodes() {
    let (_redis, n1, n2) = two_nodes(&[]);
    let mut barrier = Barrier::new(&[n1.addr, n2.addr]);
    let mut ann = n1.client();
    let long = format!("name {}", "n".repeat(33));
    for bad in [
        "name",
        "name * ann",
        "name *ann",
        "name ann bob",
        "name a\rb",
        "name a\u{1b}[2J",
        "name ~guest1@n1",
        "name bob:",
        "name \u{430}nn", // a Cyrillic а
        &long,
    ] {
        assert_eq!(
            ann.ask(bad),
            format!("error: a name {NAME_RULE}"),
            "{bad:?}"
        );
    }
    ann.cmd("name ann");
    n1.log.wait_for("ann is n1:", 1, WAIT);
    // Once per connection: no collecting other users' names, and so their
    // direct messages.
    assert_eq!(
        ann.ask("name bob"),
        "error: this connection is already named ann"
    );
    // Unique across the nodes, and on the node itself.
    barrier.sync();
    let mut bob = n2.client();
    assert_eq!(bob.ask("name ann"), "error: ann is taken");
    let mut amy = n1.client();
    assert_eq!(amy.ask("name ann"), "error: ann is taken");
    bob.cmd("name bob");
    barrier.sync();
    assert_eq!(ann.ask("dm bob hi"), "ok");
    bob.expect(&["dm ann: hi"]);
    ann.expect_silence(QUIET);
    // A name comes before join.
    let mut guest = n1.client();
    guest.cmd("join room");
    assert_eq!(guest.ask("name carl"), "error: name comes before join");
    // ann goes: her name is free again.
    drop(ann);
    ask_until(&mut amy, "name ann", "ok");
}

#[test]
fn rooms_are_checked_and_text_reaches_others_escaped() {
    let (_redis, n1, n2) = two_nodes(&[]);
    let mut barrier = Barrier::new(&[n1.addr, n2.addr]);
    let mut ann = n1.client();
    let mut bob = n2.client();
    let mut guest = n1.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    for c in [&mut ann, &mut bob, &mut guest] {
        c.cmd("join room");
    }
    barrier.sync();
    for bad in [
        "join",
        "join * x",
        "join a\rb",
        "join x:y",
        "leave a b",
        "who \u{1b}[2J",
        "say r\rx hi",
    ] {
        assert_eq!(
            ann.ask(bad),
            format!("error: a room {NAME_RULE}"),
            "{bad:?}"
        );
    }
    assert_eq!(ann.ask("dm a\rb hi"), format!("error: a name {NAME_RULE}"));
    assert!(ann.ask("frobnicate").starts_with("error: unknown command"));

    ann.send("say room hi\r* forged\u{1b}[2J");
    let want = "room ann: hi\\r* forged\\u{1b}[2J";
    for c in [&mut ann, &mut bob, &mut guest] {
        c.expect(&[want]);
    }
    // A guest speaks under a name no one can take.
    guest.send("say room from a guest");
    let heard = bob.line();
    assert!(
        heard.starts_with("room ~guest") && heard.ends_with("@n1: from a guest"),
        "{heard}"
    );
    ann.expect(&[&heard]);
    guest.expect(&[&heard]);
    assert_eq!(bob.ask("dm ann x\u{1b}y"), "ok");
    ann.expect(&["dm bob: x\\u{1b}y"]);
    bob.send("all a\u{7f}b\u{2028}c");
    for c in [&mut ann, &mut bob, &mut guest] {
        c.expect(&["all bob: a\\u{7f}b\\u{2028}c"]);
    }
    for c in [&mut ann, &mut bob, &mut guest] {
        c.expect_silence(QUIET);
    }
}

#[test]
fn a_flooding_connection_gets_one_notice_then_is_closed() {
    let redis = Redis::start();
    let flags = ["--rate", "1", "--burst", "5", "--flood-close", "20"];
    let n1 = Node::start_with("n1", &redis.url(), &flags);
    let mut bob = n1.client();
    bob.cmd("name bob");
    bob.cmd("join room");
    // 40 lines in one write: 5 pass (the burst), the 6th is refused with
    // the notice, the next 18 silently, the 20th refusal closes.
    let mut flooder = n1.client();
    let lines: Vec<String> = (0..40).map(|i| format!("say room m{i}")).collect();
    flooder.send_lines(&lines);
    flooder.expect(&[
        "error: too many messages: at most 1 a second (bursts of 5); messages are refused \
         until you slow down",
        "error: too many messages: closing",
    ]);
    flooder.expect_closed();
    for i in 0..5 {
        let l = bob.line();
        assert!(
            l.starts_with("room ~guest") && l.ends_with(&format!(": m{i}")),
            "{l}"
        );
    }
    bob.expect_silence(QUIET);
    n1.log.wait_for("kept flooding: closed", 1, WAIT);
    // bob, within the rate, is untouched.
    assert_eq!(bob.ask("who room"), "room 1");
}

#[test]
fn a_line_over_64_kib_closes_the_connection() {
    let redis = Redis::start();
    let n1 = Node::start_with("n1", &redis.url(), &[]);
    let mut ann = n1.client();
    let mut bob = n1.client();
    for (c, name) in [(&mut ann, "ann"), (&mut bob, "bob")] {
        c.cmd(&format!("name {name}"));
        c.cmd("join room");
    }
    // 64 KiB with its line end: delivered.
    let prefix = "say room ";
    let text = "x".repeat(64 * 1024 - prefix.len() - 1);
    ann.send(&format!("{prefix}{text}"));
    let want = format!("room ann: {text}");
    for c in [&mut ann, &mut bob] {
        let got = c.line();
        assert!(got == want, "got {} bytes", got.len());
    }
    // One byte more: the connection is closed, nothing is delivered.
    ann.send(&format!("{prefix}{text}x"));
    ann.expect_closed();
    bob.expect_silence(QUIET);
    ask_until(&mut bob, "who room", "room 1");
}

#[test]
fn with_a_jwt_secret_the_first_line_is_a_verified_token() {
    let (_redis, n1, n2) = two_nodes(&["--jwt-secret", SECRET]);

    // Anything but a valid token first: an error line, then the close.
    let first = "send `token JWT` first";
    let refused = [
        ("name ann".to_owned(), first),
        ("say room hi".to_owned(), first),
        (format!("token {}", chat_support::expired("ann")), "expired"),
        (
            format!("token {}", chat_support::wrong_signature("ann")),
            "bad signature",
        ),
        (
            format!("token {}", chat_support::wrong_algorithm("ann")),
            "not signed with HS256",
        ),
        (
            format!("token {}", chat_support::unsigned("ann")),
            "malformed",
        ),
        (
            format!("token {}", chat_support::without_exp("ann")),
            "a claim is missing",
        ),
        (
            format!("token {}", chat_support::token("* ann")),
            "the token's subject",
        ),
        ("token abc\r[WARN] forged\u{1b}[2J".to_owned(), "malformed"),
    ];
    for (line, why) in &refused {
        let mut c = n1.client();
        c.send(line);
        let answer = c.line();
        assert!(
            answer.starts_with("error: a valid token is required: ") && answer.contains(why),
            "{line:?}: {answer}"
        );
        c.expect_closed();
    }

    // The name is the token's subject; one user may use several devices.
    let token = |sub: &str| format!("token {}", chat_support::token(sub));
    let mut barrier = Barrier::with_hello(&[n1.addr, n2.addr], |k| token(&format!("probe{k}")));
    let mut ann = n1.client();
    let mut ann2 = n2.client();
    let mut bob = n2.client();
    ann.cmd(&token("ann"));
    ann2.cmd(&token("ann"));
    bob.cmd(&token("bob"));
    assert_eq!(
        ann.ask("name mallory"),
        "error: your name comes from your token"
    );
    ann.cmd("join room");
    barrier.sync();
    // A name is in a room once, from one of its devices.
    assert_eq!(ann2.ask("join room"), "error: ann is already in room");
    bob.cmd("join room");
    assert_eq!(bob.ask("dm ann hi"), "ok");
    ann.expect(&["dm bob: hi"]);
    ann2.expect(&["dm bob: hi"]);
    bob.send("say room hello");
    bob.expect(&["room bob: hello"]);
    ann.expect(&["room bob: hello"]);
    ann2.expect_silence(QUIET);

    // Refusals are logged, tokens and raw control characters never.
    n1.log.wait_for("refused", refused.len(), WAIT);
    for n in [&n1, &n2] {
        let log = n.log.text();
        for (line, _) in &refused {
            let Some(token) = line.strip_prefix("token ") else {
                continue;
            };
            let signature = token.rsplit('.').next().unwrap_or_default();
            assert!(
                !log.contains(token) && (signature.len() < 8 || !log.contains(signature)),
                "a token in the log of {}:\n{log}",
                n.name
            );
        }
        assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
    }
}
