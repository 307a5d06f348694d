//! [`HubError`]: what the hub refuses, and why.

use std::fmt;
use std::time::Duration;

/// A hub call that was refused: a join or bind past a limit, or a Redis
/// backplane that cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The connection is in `limit` groups already
    /// ([`HubLimits::max_groups_per_conn`](crate::HubLimits::max_groups_per_conn)).
    TooManyGroups {
        /// The limit.
        limit: usize,
    },
    /// The connection is bound to `limit` uids already
    /// ([`HubLimits::max_uids_per_conn`](crate::HubLimits::max_uids_per_conn)).
    TooManyUids {
        /// The limit.
        limit: usize,
    },
    /// A uid or group name is empty or longer than
    /// [`HubLimits::max_name_len`](crate::HubLimits::max_name_len).
    BadName {
        /// The name's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection closed: it can join nothing any more.
    Closed,
    /// A running node holds this node name in Redis: two nodes under one
    /// name would take each other's messages.
    NodeNameTaken {
        /// The name.
        node: String,
        /// When the other node's claim expires unless it renews it.
        expires_in: Option<Duration>,
    },
    /// The configuration cannot work (a bad URL, a node name, TLS
    /// settings for a `redis://` URL...). Never contains a password.
    Config(String),
    /// Redis refused this node at start (a wrong password, a missing ACL
    /// permission). Never contains a password.
    Redis(String),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::TooManyGroups { limit } => {
                write!(
                    f,
                    "this connection is in {limit} groups already (the limit)"
                )
            }
            HubError::TooManyUids { limit } => {
                write!(f, "this connection has {limit} uids already (the limit)")
            }
            HubError::BadName { len, limit } => write!(
                f,
                "a uid or group name of {len} bytes (from 1 to {limit} bytes are allowed)"
            ),
            HubError::Closed => f.write_str("the connection is closed"),
            HubError::NodeNameTaken { node, expires_in } => {
                write!(
                    f,
                    "the node name `{node}` is held by another running node; \
                     give this one another name"
                )?;
                if let Some(t) = expires_in {
                    write!(
                        f,
                        " (or start it again once the other's claim expires, in {t:.1?})"
                    )?;
                }
                Ok(())
            }
            HubError::Config(e) => write!(f, "hub configuration: {e}"),
            HubError::Redis(e) => write!(f, "redis refused this node: {e}"),
        }
    }
}

impl std::error::Error for HubError {}
