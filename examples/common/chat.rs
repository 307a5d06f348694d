//! What the chat examples (ws_chat, cluster_chat) need to be safe to
//! deploy, each in one place: the rules for names and rooms, the escaping
//! that keeps user text from forging lines, the per-connection rate limit
//! (a token bucket over an injected clock), the 64 KiB message limit, and
//! HS256 token verification with the `jsonwebtoken` crate.
#![allow(dead_code)] // the other examples share `common` without these

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::Instant;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The largest message a chat example accepts: 64 KiB (a text line, its
/// line end included; a WebSocket message after reassembly).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The longest name or room, in bytes.
pub const MAX_NAME: usize = 32;

/// Checks a name or a room (`what` says which, for the reply): 1 to 32
/// ASCII letters, digits, `_`, `-` or `.`. So a name holds no space, no
/// `*` (a notice starts with `* `), no `:` (a message reads `NAME: text`),
/// no control character and no look-alike letter from another script. The
/// answer does not repeat what was refused.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if s.is_empty() || s.len() > MAX_NAME || !s.chars().all(allowed) {
        return Err(format!(
            "{what} is 1 to {MAX_NAME} ASCII letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// Characters that could forge or reorder what a reader sees: control
/// characters (C0 with `\n`, `\r` and ESC, DEL, C1), the Unicode line and
/// paragraph separators, and the bidirectional overrides and marks.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Writes through to `0`, with [`needs_escape`] characters written as
/// `\n`, `\r`, `\t` or `\u{1b}`.
struct EscapeWriter<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for EscapeWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(needs_escape) {
            self.0.write_str(&rest[..i])?;
            let Some(c) = rest[i..].chars().next() else {
                break;
            };
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// Displays `T` with every character that could forge a line escaped
/// (`\n`, `\r`, `\u{1b}`...). The examples' log format wraps every record
/// in it (see `init_logging`), so no peer can start a log line of its own.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapeWriter(f), "{}", self.0)
    }
}

/// `s` as other users get it: [`Escaped`], without a copy when there is
/// nothing to escape.
pub fn clean(s: &str) -> Cow<'_, str> {
    if s.contains(needs_escape) {
        Cow::Owned(Escaped(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// One token, in the bucket's units (a token is split so that refills are
/// exact integers: `elapsed nanoseconds × rate`).
const TOKEN: u128 = 1_000_000_000;

/// A token bucket over an injected clock: `burst` tokens at most, refilled
/// at `rate` a second, one taken per message. Every call is given `now`,
/// so tests run it in virtual time.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u128,
    capacity: u128,
    level: u128,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket (`rate` and `burst` of at least 1).
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let capacity = u128::from(burst.max(1)) * TOKEN;
        TokenBucket {
            rate: u128::from(rate.max(1)),
            capacity,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        // A clock that went back adds nothing.
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.level >= TOKEN {
            self.level -= TOKEN;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has filled up again.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level == self.capacity
    }
}

/// What to do with a connection's message, by its [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Pass,
    /// The first message refused in this episode: refuse it and tell the
    /// sender, once.
    Notify,
    /// Refused again in the same episode: drop it silently.
    Refuse,
    /// Refused `close_after` times in one episode: close the connection.
    Close,
}

/// A connection's message rate limit: a [`TokenBucket`], and episodes of
/// refusals. An episode starts with the first refused message and ends
/// when the bucket has filled up again (the sender kept under the rate
/// long enough to earn its whole burst back); a message that passes in
/// between does not end it. One notice per episode; a connection refused
/// `close_after` times in one episode keeps flooding and is closed.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    refused: u32,
    close_after: u32,
}

impl RateLimiter {
    /// `rate` messages a second on average, `burst` at once, closing after
    /// `close_after` (at least 1) refusals in one episode.
    pub fn new(rate: u32, burst: u32, close_after: u32, now: Instant) -> Self {
        RateLimiter {
            bucket: TokenBucket::new(rate, burst, now),
            refused: 0,
            close_after: close_after.max(1),
        }
    }

    /// The verdict on a message that arrived at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.refused > 0 && self.bucket.is_full(now) {
            self.refused = 0;
        }
        if self.bucket.take(now) {
            return Verdict::Pass;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused >= self.close_after {
            Verdict::Close
        } else if self.refused == 1 {
            Verdict::Notify
        } else {
            Verdict::Refuse
        }
    }
}

/// The chat examples' flags for the rate limit and identities.
#[derive(clap::Args, Clone)]
pub struct ChatArgs {
    /// Messages a second each connection may send on average (a token
    /// bucket); over it, messages are refused with one notice per episode
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// Messages a connection may send at once before --rate applies
    #[arg(long, value_name = "N", default_value_t = 40,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Refused messages in one episode after which a connection that keeps
    /// flooding is closed
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub flood_close: u32,
    /// Take identities from HS256 tokens signed with this secret (at least
    /// 32 bytes) instead of what clients say; the name is the token's
    /// `sub`, and `exp` is required. Prefer the environment variable: a
    /// command line is visible to other users of the machine
    #[arg(
        long,
        value_name = "SECRET",
        env = "CHAT_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
}

impl ChatArgs {
    /// A rate limiter for a new connection, as the flags say.
    pub fn limiter(&self, now: Instant) -> RateLimiter {
        RateLimiter::new(self.rate, self.burst, self.flood_close, now)
    }

    /// The notice a sender gets once per episode.
    pub fn notice(&self) -> String {
        format!(
            "too many messages: at most {} a second (bursts of {}); messages are refused until \
             you slow down",
            self.rate, self.burst
        )
    }

    /// The token verifier, with `--jwt-secret`.
    pub fn verifier(&self) -> Result<Option<JwtVerifier>, String> {
        self.jwt_secret.as_deref().map(JwtVerifier::new).transpose()
    }
}

/// The claims the chat reads; `exp` is checked by `jsonwebtoken`.
#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

/// Verifies HS256 tokens: signature, algorithm (HS256 only: `none` and
/// the others are refused), `exp` (required; a minute of leeway for clock
/// skew, `jsonwebtoken`'s default), `nbf` when present, and a `sub` that
/// is a valid name ([`check_name`]), which becomes the identity. It has no
/// `Debug`, so the secret cannot end up in a log.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for tokens signed with `secret` (at least 32 bytes, the
    /// size of the HS256 hash).
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("the JWT secret must be at least 32 bytes long".to_owned());
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        let key = DecodingKey::from_secret(secret.as_bytes())
            .map_err(|e| format!("the JWT secret cannot be used: {e}"))?;
        Ok(JwtVerifier { key, validation })
    }

    /// The identity (`sub`) of a valid token, or why the token is refused
    /// (never the token itself).
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not valid yet",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "not signed with HS256"
                    }
                    ErrorKind::MissingRequiredClaim(_) => {
                        "a claim is missing (exp and sub are required)"
                    }
                    _ => "malformed",
                }
                .to_owned()
            })?;
        let sub = data.claims.sub;
        check_name("the token's subject", &sub)?;
        Ok(sub)
    }
}
