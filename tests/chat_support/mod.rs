//! Tokens for the chat examples' `--jwt-secret` tests, made here with the
//! `jsonwebtoken` crate: valid, expired, signed with another secret, with
//! another algorithm, and unsigned (`alg: none`).
#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The secret the tests give the examples (`--jwt-secret`).
pub const SECRET: &str = "the chat tests' secret, 32 bytes or more";

/// `{"alg":"none","typ":"JWT"}`, base64url without padding.
const NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

/// `claims` signed with `alg` (an HMAC one) and `secret`.
pub fn signed(secret: &str, alg: Algorithm, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("a token")
}

/// A valid token for `sub`: HS256 with [`SECRET`], expiring in an hour.
pub fn token(sub: &str) -> String {
    signed(
        SECRET,
        Algorithm::HS256,
        &json!({"sub": sub, "exp": now() + 3600}),
    )
}

/// A token for `sub` that expired an hour ago.
pub fn expired(sub: &str) -> String {
    signed(
        SECRET,
        Algorithm::HS256,
        &json!({"sub": sub, "exp": now() - 3600}),
    )
}

/// A token for `sub` signed with another secret.
pub fn wrong_signature(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": now() + 3600});
    signed(
        "another secret, as long as the right one",
        Algorithm::HS256,
        &claims,
    )
}

/// A token for `sub` with the right secret and the wrong algorithm (HS512).
pub fn wrong_algorithm(sub: &str) -> String {
    signed(
        SECRET,
        Algorithm::HS512,
        &json!({"sub": sub, "exp": now() + 3600}),
    )
}

/// An unsigned token for `sub`: header `alg: none`, claims that would be
/// valid, an empty signature.
pub fn unsigned(sub: &str) -> String {
    let valid = token(sub);
    let claims = valid.split('.').nth(1).expect("a JWT's claims");
    format!("{NONE_HEADER}.{claims}.")
}

/// A valid token without `exp`.
pub fn without_exp(sub: &str) -> String {
    signed(SECRET, Algorithm::HS256, &json!({"sub": sub}))
}
