//! A node's claim on its name, at start: `SET ns:node:<node> <instance id>
//! NX PX <ttl>` on a connection of its own, before the worker runs, so a
//! second node started under a running node's name fails to start.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lubdub_resp::{Cmd, RespError, Value};
use lubdub_worker::{ConnError, EventLoop, ProtocolError};

use crate::config::Resolved;
use crate::error::HubError;

/// How long the claim at start waits for Redis (connect, TLS, AUTH and the
/// claim itself) before the node starts anyway and claims its name when
/// it connects.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// A random id for this instance of a node (128 bits from the operating
/// system's cryptographic source, in hex).
pub(crate) fn instance_id() -> Result<String, HubError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| HubError::Config(format!("no random instance id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the claim at start found.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The name is this instance's for the TTL.
    Claimed,
    /// Redis could not be asked (down, not Redis, no answer in time): the
    /// node starts, and claims its name when it connects.
    Unreachable(String),
}

/// Claims `key` for `instance` for `ttl` (see the module docs). `Err` when
/// another instance holds it, or Redis refused this node for good (a wrong
/// password, a missing ACL permission, a database out of range).
pub(crate) fn claim_at_start(
    redis: Arc<Resolved>,
    node: &str,
    name: String,
    key: String,
    instance: String,
    ttl: Duration,
) -> Result<Claim, HubError> {
    let (tx, rx) = mpsc::channel::<Result<Claim, HubError>>();
    let (stop_tx, stop_rx) = mpsc::channel();
    let node = node.to_owned();
    let thread = std::thread::Builder::new()
        .name("lubdub-hub-claim".into())
        .spawn(move || {
            EventLoop::run(move |lp| {
                let _ = stop_tx.send(lp.clone());
                let done = {
                    let lp = lp.clone();
                    let tx = Mutex::new(Some(tx));
                    move |outcome: Result<Claim, HubError>| {
                        let tx = tx.lock().unwrap_or_else(PoisonError::into_inner).take();
                        if let Some(tx) = tx {
                            let _ = tx.send(outcome);
                        }
                        lp.stop();
                    }
                };
                let done = Arc::new(done);
                let mut client = match redis.client(&name) {
                    Ok(c) => c,
                    Err(e) => return done(Err(e)),
                };
                let replies = Mutex::new(Vec::new());
                let ttl_ms = ttl.as_millis().max(1) as u64;
                let k = key.clone();
                client.on_connect(move |c| {
                    let _ = c.send(
                        &Cmd::new("SET")
                            .arg(k.as_str())
                            .arg(instance.as_str())
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl_ms),
                    );
                    let _ = c.send(&Cmd::new("PTTL").arg(k.as_str()));
                });
                let d = done.clone();
                let n = node.clone();
                client.on_message(move |_, v| {
                    let mut r = replies.lock().unwrap_or_else(PoisonError::into_inner);
                    r.push(v);
                    if let [set, pttl] = r.as_slice() {
                        d(verdict(&n, set, pttl));
                    }
                });
                let d = done.clone();
                client.on_error(move |_, e| d(classify(e)));
                let d = done.clone();
                client.on_close(move |_, reason| {
                    d(Ok(Claim::Unreachable(format!("closed: {reason:?}"))))
                });
                if let Err(e) = client.connect() {
                    done(Ok(Claim::Unreachable(e.to_string())));
                }
            });
        })
        .map_err(|e| HubError::Config(format!("no thread for the name claim: {e}")))?;
    match rx.recv_timeout(CLAIM_WAIT) {
        Ok(outcome) => {
            // The loop stops by itself; it only closes a connection now.
            drop(thread);
            outcome
        }
        Err(_) => {
            if let Ok(lp) = stop_rx.try_recv() {
                lp.stop();
            }
            Ok(Claim::Unreachable(format!(
                "no answer within {CLAIM_WAIT:?}"
            )))
        }
    }
}

/// The answers to `SET .. NX PX` and `PTTL`.
fn verdict(node: &str, set: &Value, pttl: &Value) -> Result<Claim, HubError> {
    match set {
        Value::Error(e) => Err(HubError::Redis(format!("claiming the node name: {e}"))),
        v if v.is_nil() => Err(HubError::NodeNameTaken {
            node: node.to_owned(),
            expires_in: pttl
                .as_int()
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
        }),
        _ => Ok(Claim::Claimed),
    }
}

/// A connection error at start: Redis refusing this node's credentials or
/// database is final; anything else may pass (Redis down, loading).
fn classify(e: &ConnError) -> Result<Claim, HubError> {
    if let ConnError::Protocol(ProtocolError::Other(inner)) = e {
        if let Some(RespError::SetupFailed { command, message }) = inner.downcast_ref() {
            if is_final(command, message) {
                return Err(HubError::Redis(format!("{command}: {message}")));
            }
        }
    }
    Ok(Claim::Unreachable(e.to_string()))
}

/// Whether a setup command's error means this node can never get in as
/// configured: credentials, permissions, the database number.
pub(crate) fn is_final(command: &str, message: &str) -> bool {
    let transient = ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"];
    if transient.iter().any(|t| message.starts_with(t)) {
        return false;
    }
    matches!(command, "AUTH" | "HELLO" | "SELECT")
        || ["WRONGPASS", "NOAUTH", "NOPERM"]
            .iter()
            .any(|t| message.starts_with(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_random_and_128_bits() {
        let (a, b) = (instance_id().unwrap(), instance_id().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn verdicts() {
        let ok = Value::Simple("OK".into());
        assert!(matches!(
            verdict("n1", &ok, &Value::Integer(15000)),
            Ok(Claim::Claimed)
        ));
        assert_eq!(
            verdict("n1", &Value::Nil, &Value::Integer(1500)).unwrap_err(),
            HubError::NodeNameTaken {
                node: "n1".into(),
                expires_in: Some(Duration::from_millis(1500))
            }
        );
        assert!(matches!(
            verdict("n1", &Value::Error("NOPERM no".into()), &Value::Nil),
            Err(HubError::Redis(_))
        ));
        assert!(is_final("AUTH", "WRONGPASS invalid username-password pair"));
        assert!(is_final("CLIENT", "NOPERM this user has no permissions"));
        assert!(!is_final("CLIENT", "LOADING Redis is loading the dataset"));
        assert!(!is_final("CLIENT", "ERR something else"));
    }
}
