//! The ws_chat example is safe to deploy: the compiled example (next to
//! this test binary; a plain `cargo test` builds it) on a free loopback
//! port, driven by raw WebSocket clients (tests/ws_raw) over real sockets.
//! Names are checked and unique in the room, text reaches others with its
//! control characters escaped, a flooding connection gets one notice and
//! is closed, messages over 64 KiB are refused, no peer can forge a log
//! line, and with `--jwt-secret` the identity comes from a verified token
//! (tokens made here: valid, expired, forged, unsigned).

mod chat_support;
mod common;
mod ws_raw;
mod ws_support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use chat_support::SECRET;
use ws_raw::{close_payload, Ev, RawClient, Refused, OP_CLOSE, OP_CONT, OP_TEXT};
use ws_support::ChildGuard;

/// The ws_chat example, started for one test.
struct Chat {
    child: ChildGuard,
    addr: SocketAddr,
}

impl Chat {
    fn start(flags: &[&str]) -> Self {
        Self::start_env(flags, &[])
    }

    fn start_env(flags: &[&str], env: &[(&str, &str)]) -> Self {
        let (child, port) = ws_support::start_ws_chat(flags, env, "http");
        Chat {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// A member upgraded on `target`; it hears its own join as `name`.
    #[track_caller]
    fn join_at(&self, target: &str, name: &str) -> RawClient {
        let mut c = RawClient::connect_to(self.addr, target, &[]);
        hears(&mut c, &format!("* {name} joined"));
        c
    }

    #[track_caller]
    fn join(&self, name: &str) -> RawClient {
        self.join_at(&format!("/ws?name={name}"), name)
    }

    /// ann, then bob; ann heard bob join.
    #[track_caller]
    fn ann_and_bob(&self) -> (RawClient, RawClient) {
        let mut ann = self.join("ann");
        let bob = self.join("bob");
        hears(&mut ann, "* bob joined");
        (ann, bob)
    }

    /// The refusal of an upgrade on `target`.
    #[track_caller]
    fn refused(&self, target: &str) -> Refused {
        match RawClient::try_connect(self.addr, target, &[]) {
            Ok(_) => panic!("{target} was accepted"),
            Err(r) => r,
        }
    }

    /// Waits until the example's log (stderr) holds `needle`; returns it.
    fn log_with(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            // The log is a pipe read on a thread: nothing to await.
            let log = self.child.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                start.elapsed() < common::WAIT,
                "no {needle:?} in the log within {:?}:\n{log}",
                common::WAIT
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn say(c: &mut RawClient, text: &str) {
    c.send_frame(true, 0, OP_TEXT, text.as_bytes());
}

#[track_caller]
fn hears(c: &mut RawClient, want: &str) {
    c.expect(&Ev::text(want));
}

#[test]
fn names_are_checked_and_unique_in_the_room() {
    let chat = Chat::start(&[]);
    let long = format!("/ws?name={}", "n".repeat(33));
    for target in [
        "/ws",
        "/ws?name=",
        "/ws?name=%2A%20ann", // `* ann`, as a notice starts
        "/ws?name=*ann",
        "/ws?name=ann%20bob",
        "/ws?name=a%0Ab",
        "/ws?name=a%0D%0A%5BWARN%5D",
        "/ws?name=a%1B%5B2J",
        "/ws?name=%D0%B0nn", // a Cyrillic а
        "/ws?name=bob:",
        &long,
    ] {
        let r = chat.refused(target);
        assert_eq!(r.response.status, 400, "{target}: {r:?}");
        assert!(
            r.body.contains("a name is 1 to 32 ASCII letters"),
            "{target}: {r:?}"
        );
    }
    assert_eq!(chat.refused("/chat?name=ann").response.status, 404);

    let mut ann = chat.join("ann");
    let r = chat.refused("/ws?name=ann");
    assert_eq!(r.response.status, 409, "{r:?}");
    assert_eq!(r.body, "ann is taken");
    let mut bob = chat.join("bob");
    hears(&mut ann, "* bob joined");

    // ann leaves: her name is free again once bob hears it.
    ann.close(1000, &[Some(1000)]);
    hears(&mut bob, "* ann left");
    let _ann = chat.join("ann");
    hears(&mut bob, "* ann joined");
    // Names are case-sensitive and every character counts.
    let _ann2 = chat.join("Ann");
    hears(&mut bob, "* Ann joined");
}

#[test]
fn text_reaches_others_with_control_characters_escaped() {
    let chat = Chat::start(&[]);
    let (mut ann, mut bob) = chat.ann_and_bob();
    say(&mut ann, "hi\n* admin joined\r\u{1b}[2J\u{2028}ok");
    let want = "ann: hi\\n* admin joined\\r\\u{1b}[2J\\u{2028}ok";
    hears(&mut bob, want);
    hears(&mut ann, want);
    say(&mut bob, "plain ünïcø ✓");
    hears(&mut ann, "bob: plain ünïcø ✓");
}

#[test]
fn a_flooding_connection_gets_one_notice_then_is_closed() {
    let chat = Chat::start(&["--rate", "1", "--burst", "5", "--flood-close", "20"]);
    let (mut ann, mut bob) = chat.ann_and_bob();
    // 40 messages in one write: 5 pass (the burst), the 6th is refused
    // with the notice, the next 18 silently, the 20th refusal closes.
    let mut flood = Vec::new();
    for i in 0..40 {
        flood.extend(ann.frame(true, 0, OP_TEXT, format!("m{i}").as_bytes()));
    }
    ann.send(&flood);
    for i in 0..5 {
        hears(&mut ann, &format!("ann: m{i}"));
    }
    hears(
        &mut ann,
        "* too many messages: at most 1 a second (bursts of 5); messages are refused until \
         you slow down",
    );
    let (_, reason) = ann.expect_close(&[Some(1008)]);
    assert_eq!(reason, "too many messages");
    for i in 0..5 {
        hears(&mut bob, &format!("ann: m{i}"));
    }
    hears(&mut bob, "* ann left");
    chat.log_with("ann kept flooding: closed");
    // bob, within the rate, is untouched.
    say(&mut bob, "still here");
    hears(&mut bob, "bob: still here");
}

#[test]
fn messages_over_64_kib_are_refused_with_1009() {
    let chat = Chat::start(&[]);
    let (mut ann, mut bob) = chat.ann_and_bob();
    let exact = "x".repeat(64 * 1024);
    say(&mut ann, &exact);
    hears(&mut bob, &format!("ann: {exact}"));
    hears(&mut ann, &format!("ann: {exact}"));

    say(&mut ann, &"x".repeat(64 * 1024 + 1));
    ann.expect_close(&[Some(1009)]);
    hears(&mut bob, "* ann left");

    // In fragments: the reassembled message counts.
    let mut cat = chat.join("cat");
    hears(&mut bob, "* cat joined");
    let half = vec![b'y'; 40 * 1024];
    cat.send_frame(false, 0, OP_TEXT, &half);
    cat.send_frame(true, 0, OP_CONT, &half);
    cat.expect_close(&[Some(1009)]);
    hears(&mut bob, "* cat left");
    say(&mut bob, "after");
    hears(&mut bob, "bob: after");
}

#[test]
fn a_peer_cannot_forge_a_log_line() {
    let chat = Chat::start(&[]);
    let (mut ann, mut bob) = chat.ann_and_bob();
    // A close reason is the peer's own text, and the example logs it.
    ann.send_frame(
        true,
        0,
        OP_CLOSE,
        &close_payload(1000, b"bye\n[WARN] forged line\r\x1b[2J"),
    );
    ann.expect(&Ev::Close(Some(1000), String::new()));
    hears(&mut bob, "* ann left");
    let log = chat.log_with("ann left: peer close 1000: bye\\n[WARN] forged line\\r\\u{1b}[2J");
    assert!(
        !log.lines().any(|l| l.starts_with("[WARN] forged")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
}

#[test]
fn with_a_jwt_secret_the_name_comes_from_a_verified_token() {
    let chat = Chat::start(&["--jwt-secret", SECRET]);
    // No token: 401, whatever name is asked for.
    let r = chat.refused("/ws?name=ann");
    assert_eq!(r.response.status, 401, "{r:?}");
    assert_eq!(r.response.header("WWW-Authenticate"), Some("Bearer"));
    let bad = [
        ("expired", chat_support::expired("ann")),
        ("bad signature", chat_support::wrong_signature("ann")),
        (
            "not signed with HS256",
            chat_support::wrong_algorithm("ann"),
        ),
        ("malformed", chat_support::unsigned("ann")),
        ("a claim is missing", chat_support::without_exp("ann")),
        (
            "the token's subject is 1 to 32",
            chat_support::token("* ann"),
        ),
    ];
    for (why, token) in &bad {
        let r = chat.refused(&format!("/ws?token={token}"));
        assert_eq!(r.response.status, 401, "{why}: {r:?}");
        assert!(r.body.contains(why), "{why}: {r:?}");
        assert!(
            !r.body.contains(token.as_str()),
            "the token is echoed: {r:?}"
        );
    }

    // A valid token: its subject is the name; `name` is ignored.
    let ann_token = chat_support::token("ann");
    let mut ann = chat.join_at(&format!("/ws?name=mallory&token={ann_token}"), "ann");
    let r = chat.refused(&format!("/ws?token={ann_token}"));
    assert_eq!(r.response.status, 409, "{r:?}");
    let bob_token = chat_support::token("bob");
    let mut bob = chat.join_at(&format!("/ws?token={bob_token}"), "bob");
    hears(&mut ann, "* bob joined");
    say(&mut bob, "hello ann");
    hears(&mut ann, "bob: hello ann");

    // Refusals are logged, tokens never.
    let log = chat.log_with("token the token's subject");
    for token in bad.iter().map(|(_, t)| t).chain([&ann_token, &bob_token]) {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(
            !log.contains(token.as_str()) && (signature.is_empty() || !log.contains(signature)),
            "a token in the log:\n{log}"
        );
    }
}

#[test]
fn the_secret_comes_from_the_environment_too_and_must_be_long() {
    let chat = Chat::start_env(&[], &[("CHAT_JWT_SECRET", SECRET)]);
    assert_eq!(chat.refused("/ws?name=ann").response.status, 401);
    chat.join_at(&format!("/ws?token={}", chat_support::token("ann")), "ann");

    let mut short = ChildGuard::spawn(
        "ws_chat with a short secret",
        Command::new(ws_support::example_binary("ws_chat")).args([
            "--listen",
            "ws://127.0.0.1:0",
            "--jwt-secret",
            "short",
        ]),
    );
    let status = short.wait_exit(common::WAIT);
    assert!(!status.success());
    let stderr = short.stderr();
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
}

#[test]
fn help_lists_the_chat_flags_and_hides_the_secret() {
    for example in ["ws_chat", "cluster_chat"] {
        let out = Command::new(ws_support::example_binary(example))
            .arg("--help")
            .env("CHAT_JWT_SECRET", SECRET)
            .output()
            .expect("run --help");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in [
            "--rate <N>",
            "--burst <N>",
            "--flood-close <N>",
            "--jwt-secret <SECRET>",
            "CHAT_JWT_SECRET",
            "[default: 20]",
            "[default: 40]",
            "[default: 100]",
        ] {
            assert!(
                help.contains(flag),
                "{example} --help lacks {flag}:\n{help}"
            );
        }
        assert!(!help.contains(SECRET), "{example} --help shows the secret");
    }
}
