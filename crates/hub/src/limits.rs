//! [`HubLimits`]: what one connection may hold in the hub, and the size of
//! what crosses nodes; built in code or loaded with serde.

use serde::Deserialize;

/// Longest node name, in bytes (checked when a backplane is configured,
/// and on every message from other nodes).
pub const MAX_NODE_NAME_LEN: usize = 64;

/// The hub's limits, on by default, in one value.
///
/// Build it from the defaults and change what you need, or load it with
/// serde (every field is optional and defaults as documented; unknown
/// fields are refused). Every node of a cluster should use the same
/// limits: a node refuses messages from other nodes that break its own.
///
/// ```
/// use lubdub_hub::HubLimits;
///
/// let limits = HubLimits::default().max_groups_per_conn(32);
/// assert_eq!(limits.max_uids_per_conn, 16); // a default
///
/// let loaded: HubLimits = serde_json::from_str(r#"{ "max_groups_per_conn": 32 }"#).unwrap();
/// assert_eq!(loaded, limits);
/// ```
///
/// docs/limits.md ("Hub") says what happens at each limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HubLimits {
    /// Groups one connection may be in at once. Default 128.
    pub max_groups_per_conn: usize,
    /// Uids one connection may be bound to at once. Default 16.
    pub max_uids_per_conn: usize,
    /// Longest uid or group name, in bytes. Default 256.
    pub max_name_len: usize,
    /// Largest encoded message sent to other nodes, in bytes: a bigger one
    /// is delivered on this node only and counted as dropped for the
    /// others. Default 1 MiB.
    pub max_message_size: usize,
    /// Most exceptions (`except`) a group send carries to other nodes: a
    /// send with more is delivered on this node only and counted as
    /// dropped for the others. Default 1,024.
    pub max_except: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            max_groups_per_conn: 128,
            max_uids_per_conn: 16,
            max_name_len: 256,
            max_message_size: 1024 * 1024,
            max_except: 1024,
        }
    }
}

impl HubLimits {
    /// Sets [`max_groups_per_conn`](Self::max_groups_per_conn).
    pub fn max_groups_per_conn(mut self, n: usize) -> Self {
        self.max_groups_per_conn = n;
        self
    }

    /// Sets [`max_uids_per_conn`](Self::max_uids_per_conn).
    pub fn max_uids_per_conn(mut self, n: usize) -> Self {
        self.max_uids_per_conn = n;
        self
    }

    /// Sets [`max_name_len`](Self::max_name_len) (at least 1, at most
    /// 65,535: names cross nodes with a 16-bit length).
    pub fn max_name_len(mut self, bytes: usize) -> Self {
        self.max_name_len = bytes.clamp(1, u16::MAX as usize);
        self
    }

    /// Sets [`max_message_size`](Self::max_message_size) (at least 1).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes.max(1);
        self
    }

    /// Sets [`max_except`](Self::max_except) (at most 65,535).
    pub fn max_except(mut self, n: usize) -> Self {
        self.max_except = n.min(u16::MAX as usize);
        self
    }

    /// The same limits with loaded values brought into their ranges.
    pub(crate) fn clamped(&self) -> Self {
        self.clone()
            .max_name_len(self.max_name_len)
            .max_message_size(self.max_message_size)
            .max_except(self.max_except)
    }

    /// The largest pub/sub frame a node of these limits publishes, framing
    /// included: what a subscriber connection accepts.
    pub(crate) fn max_frame(&self, namespace_len: usize) -> usize {
        // RESP framing and the wire header: origin, target, exceptions.
        let header = 128 + 3 * MAX_NODE_NAME_LEN + self.max_except * (MAX_NODE_NAME_LEN + 10);
        let channel = namespace_len + self.max_name_len + MAX_NODE_NAME_LEN + 16;
        self.max_message_size
            .saturating_add(header + channel + self.max_name_len)
    }
}
