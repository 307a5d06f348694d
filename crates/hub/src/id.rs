//! Cluster-wide connection ids.

use std::fmt;
use std::str::FromStr;

/// A connection anywhere in the cluster: the node that holds it and its id
/// there. Written `node:id` (`eu-1:42`).
///
/// ```
/// use lubdub_hub::GlobalConnId;
///
/// let id: GlobalConnId = "eu-1:42".parse().unwrap();
/// assert_eq!((id.node(), id.conn()), ("eu-1", 42));
/// assert_eq!(id.to_string(), "eu-1:42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GlobalConnId {
    node: String,
    conn: u64,
}

impl GlobalConnId {
    /// The connection `conn` of node `node`.
    pub fn new(node: &str, conn: u64) -> Self {
        GlobalConnId {
            node: node.to_owned(),
            conn,
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The connection's id on its node (`Connection::id`).
    pub fn conn(&self) -> u64 {
        self.conn
    }
}

impl fmt::Display for GlobalConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.conn)
    }
}

/// Why a string is not a [`GlobalConnId`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseGlobalConnIdError;

impl fmt::Display for ParseGlobalConnIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a `node:connection id`")
    }
}

impl std::error::Error for ParseGlobalConnIdError {}

impl FromStr for GlobalConnId {
    type Err = ParseGlobalConnIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (node, conn) = s.rsplit_once(':').ok_or(ParseGlobalConnIdError)?;
        if node.is_empty() {
            return Err(ParseGlobalConnIdError);
        }
        let conn = conn.parse().map_err(|_| ParseGlobalConnIdError)?;
        Ok(GlobalConnId::new(node, conn))
    }
}
