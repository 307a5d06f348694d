//! What the connections of one worker (or one client) share at run time:
//! the live-connections map, the count of open sockets and the memory
//! budget.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use dashmap::DashMap;

use crate::connection::Connection;
use crate::memory::MemoryBudget;
use crate::protocol::Protocol;

/// What connections of one worker (or one client) share at run time.
pub(crate) struct Endpoint<P: Protocol> {
    /// Established connections (servers), live connections (clients).
    pub connections: DashMap<u64, Connection<P>>,
    /// Sockets open (handshaking, established or lingering after `on_close`).
    pub sockets: AtomicUsize,
    /// What all connections buffer, against `Limits::memory_budget`.
    pub memory: MemoryBudget,
}

impl<P: Protocol> Endpoint<P> {
    pub fn new(memory_budget: usize) -> Self {
        Endpoint {
            connections: DashMap::new(),
            sockets: AtomicUsize::new(0),
            memory: MemoryBudget::new(memory_budget),
        }
    }
}

/// A connection's place in its endpoint's connections map: inserted when
/// created, removed when dropped. The only code that touches the map.
pub(crate) struct MapEntry<P: Protocol> {
    endpoint: Arc<Endpoint<P>>,
    id: u64,
}

impl<P: Protocol> MapEntry<P> {
    pub fn insert(endpoint: &Arc<Endpoint<P>>, conn: &Connection<P>) -> Self {
        endpoint.connections.insert(conn.id(), conn.clone());
        MapEntry {
            endpoint: endpoint.clone(),
            id: conn.id(),
        }
    }
}

impl<P: Protocol> Drop for MapEntry<P> {
    fn drop(&mut self) {
        self.endpoint.connections.remove(&self.id);
    }
}
