//! Randomness of the client role: a masking key per frame (RFC 6455 §5.3)
//! and the `Sec-WebSocket-Key` nonce (§4.1), both from a cryptographic
//! source, as RFC 6455 §10.3 asks ("the masking key needs to be
//! unpredictable"): an intermediary must not be able to guess what a frame
//! will look like on the wire.
//!
//! The source is `rand`'s thread-local generator (ChaCha12, seeded from
//! the operating system and reseeded periodically): a key costs a few
//! nanoseconds and no system call, and no connection carries a generator.

use rand::Rng;

/// A fresh masking key.
pub(crate) fn new_key() -> [u8; 4] {
    rand::rng().random()
}

/// A fresh 16-byte nonce for `Sec-WebSocket-Key`.
pub(crate) fn new_nonce() -> [u8; 16] {
    rand::rng().random()
}
