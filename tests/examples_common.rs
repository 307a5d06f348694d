//! Unit tests of examples/common/chat.rs, what the chat examples share to
//! be safe to deploy: names, escaping, the rate limiter in virtual time
//! (its clock is injected: every call is given `now`), and token
//! verification with tokens made here.

#[allow(dead_code)]
#[path = "../examples/common/mod.rs"]
mod common;

mod chat_support;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use chat_support::SECRET;
use common::chat::{
    check_name, clean, Escaped, JwtVerifier, RateLimiter, TokenBucket, Verdict, MAX_NAME,
};

const MS: Duration = Duration::from_millis(1);

#[test]
fn names_and_rooms() {
    for ok in ["ann", "a", "Ann_2", "x-y.z", &"n".repeat(MAX_NAME)] {
        assert_eq!(check_name("a name", ok), Ok(()), "{ok:?}");
    }
    let long = "n".repeat(MAX_NAME + 1);
    for bad in [
        "",
        "* ann",
        "*ann",
        "ann bob",
        "bob:",
        "a\nb",
        "a\rb",
        "a\u{1b}[2J",
        "ann\0",
        "\u{430}nn", // a Cyrillic а
        "é",
        &long,
        "a/b",
        "a\u{202e}b",
    ] {
        let err = check_name("a name", bad).unwrap_err();
        assert!(err.starts_with("a name is 1 to 32"), "{bad:?}: {err}");
        assert!(
            bad.is_empty() || !err.contains(bad),
            "the reply repeats {bad:?}"
        );
    }
}

#[test]
fn escaping_leaves_no_line_break_or_control_character() {
    assert!(matches!(clean("hello, ünïcø ✓ \\n"), Cow::Borrowed(_)));
    assert_eq!(clean("a\nb"), "a\\nb");
    assert_eq!(clean("a\r\n[WARN] forged"), "a\\r\\n[WARN] forged");
    assert_eq!(clean("\u{1b}[2Jx\t"), "\\u{1b}[2Jx\\t");
    assert_eq!(
        clean("\u{85}\u{2028}\u{202e}z\u{7f}"),
        "\\u{85}\\u{2028}\\u{202e}z\\u{7f}"
    );
    // Through `Display`, as the log format uses it.
    let line = Escaped(format_args!(
        "{} left: {}",
        "ann", "bye\n[INFO] admin joined"
    ));
    assert_eq!(line.to_string(), "ann left: bye\\n[INFO] admin joined");
    // Every character up to U+3000: what comes out needs no more escaping
    // and holds no control character.
    let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
    let cleaned = clean(&all).into_owned();
    assert!(matches!(clean(&cleaned), Cow::Borrowed(_)));
    assert!(!cleaned.chars().any(char::is_control));
}

#[test]
fn bucket_refills_at_the_rate_up_to_the_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(20, 40, t0);
    assert!(b.is_full(t0));
    // The burst, at once; then nothing.
    assert!((0..40).all(|_| b.take(t0)));
    assert!(!b.take(t0));
    // One token every 50 ms, exactly.
    assert!(!b.take(t0 + 49 * MS));
    assert!(b.take(t0 + 50 * MS));
    assert!(!b.take(t0 + 50 * MS));
    // Never more than the burst, however long the wait.
    let later = t0 + Duration::from_secs(3600);
    assert!(b.is_full(later));
    assert!((0..40).all(|_| b.take(later)));
    assert!(!b.take(later));
    // A clock that goes back adds nothing and does not panic.
    assert!(!b.take(t0));
}

#[test]
fn a_sender_at_the_rate_is_never_refused() {
    let t0 = Instant::now();
    let mut r = RateLimiter::new(20, 1, 1, t0);
    for i in 0..10_000u32 {
        assert_eq!(r.check(t0 + i * 50 * MS), Verdict::Pass, "message {i}");
    }
}

#[test]
fn one_notice_per_episode_then_a_flooder_is_closed() {
    let t0 = Instant::now();
    let mut r = RateLimiter::new(20, 40, 100, t0);
    let verdicts: Vec<Verdict> = (0..140).map(|_| r.check(t0)).collect();
    assert!(verdicts[..40].iter().all(|v| *v == Verdict::Pass));
    assert_eq!(verdicts[40], Verdict::Notify);
    // Refusals 2 to 99: silent; the 100th closes.
    assert!(verdicts[41..139].iter().all(|v| *v == Verdict::Refuse));
    assert_eq!(verdicts[139], Verdict::Close);
}

#[test]
fn an_episode_ends_when_the_bucket_is_full_again() {
    let t0 = Instant::now();
    let mut r = RateLimiter::new(10, 2, 5, t0);
    assert_eq!(r.check(t0), Verdict::Pass);
    assert_eq!(r.check(t0), Verdict::Pass);
    assert_eq!(r.check(t0), Verdict::Notify);
    assert_eq!(r.check(t0), Verdict::Refuse);
    // A token came back (100 ms): it passes, but the episode goes on.
    assert_eq!(r.check(t0 + 100 * MS), Verdict::Pass);
    assert_eq!(r.check(t0 + 100 * MS), Verdict::Refuse);
    // 200 ms more: the bucket is full, the episode over; the next one
    // gets its own notice and its own count.
    let t1 = t0 + 300 * MS;
    assert_eq!(r.check(t1), Verdict::Pass);
    assert_eq!(r.check(t1), Verdict::Pass);
    assert_eq!(r.check(t1), Verdict::Notify);
    for _ in 0..3 {
        assert_eq!(r.check(t1), Verdict::Refuse);
    }
    assert_eq!(r.check(t1), Verdict::Close);
}

#[test]
fn a_sender_just_over_the_rate_is_closed_in_the_end() {
    // 25 messages a second against 20: the bucket never fills again, so
    // the refusals (1 in 5 once the burst is spent) add up in one episode.
    let t0 = Instant::now();
    let mut r = RateLimiter::new(20, 40, 100, t0);
    let mut notices = 0;
    let closed_at = (0..10_000u32).find(|i| {
        let v = r.check(t0 + i * 40 * MS);
        notices += u32::from(v == Verdict::Notify);
        v == Verdict::Close
    });
    assert_eq!(notices, 1);
    let closed_at = closed_at.expect("closed");
    // 200 messages empty the bucket; 100 refusals take 500 more.
    assert!((650..=750).contains(&closed_at), "{closed_at}");
}

#[test]
fn tokens_valid_expired_forged_unsigned() {
    let v = JwtVerifier::new(SECRET).unwrap();
    assert_eq!(v.verify(&chat_support::token("ann")), Ok("ann".to_owned()));
    let refused = |token: String| v.verify(&token).unwrap_err();
    assert_eq!(refused(chat_support::expired("ann")), "expired");
    assert_eq!(
        refused(chat_support::wrong_signature("ann")),
        "bad signature"
    );
    assert_eq!(
        refused(chat_support::wrong_algorithm("ann")),
        "not signed with HS256"
    );
    // `alg: none` is no algorithm jsonwebtoken knows: the header does not
    // parse.
    assert_eq!(refused(chat_support::unsigned("ann")), "malformed");
    assert!(refused(chat_support::without_exp("ann")).contains("exp"));
    assert_eq!(refused(String::new()), "malformed");
    assert_eq!(refused("not.a.token".to_owned()), "malformed");
    // A valid token whose subject could forge lines is refused too.
    let err = refused(chat_support::token("* ann\nx"));
    assert!(err.contains("subject"), "{err}");
    // No refusal repeats the token.
    let t = chat_support::wrong_signature("ann");
    assert!(!refused(t.clone()).contains(&t[..20]));
}

#[test]
fn a_short_secret_is_refused_at_start() {
    let err = JwtVerifier::new("short").err().expect("refused");
    assert!(err.contains("32 bytes"), "{err}");
}
