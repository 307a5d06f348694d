//! Cluster-wide questions a backplane answers.

/// A cluster-wide question (see [`Backplane::query`](crate::Backplane::query)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Query {
    /// How many live nodes have a connection of this uid (0: offline).
    UidOnline(String),
    /// How many distinct uids are online on the live nodes.
    UidCount,
    /// How many members the group has on the live nodes.
    GroupCount(String),
}
