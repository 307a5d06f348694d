//! What the connections of one worker (or one client) share at run time:
//! the live-connections map, the count of open sockets and the memory
//! budget.

use std::net::IpAddr;
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
    /// Open sockets per source address, against
    /// `Limits::max_connections_per_ip` (a worker's, when set).
    pub per_ip: Option<PerIp>,
}

impl<P: Protocol> Endpoint<P> {
    /// An endpoint with this memory budget, counting sockets per source
    /// address up to `per_ip_limit` if given.
    pub fn new(memory_budget: usize, per_ip_limit: Option<usize>) -> Self {
        Endpoint {
            connections: DashMap::new(),
            sockets: AtomicUsize::new(0),
            memory: MemoryBudget::new(memory_budget),
            per_ip: per_ip_limit.map(PerIp::new),
        }
    }
}

/// Open sockets per source address, bounded.
pub(crate) struct PerIp {
    limit: usize,
    counts: DashMap<IpAddr, usize>,
}

impl PerIp {
    fn new(limit: usize) -> Self {
        PerIp {
            limit,
            counts: DashMap::new(),
        }
    }

    /// The limit per address.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counts one more socket from `ip`, unless it has the limit already.
    pub fn admit(&self, ip: IpAddr) -> bool {
        let mut n = self.counts.entry(ip).or_insert(0);
        if *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A socket from `ip` closed.
    pub fn release(&self, ip: IpAddr) {
        let gone = match self.counts.get_mut(&ip) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if gone {
            self.counts.remove_if(&ip, |_, n| *n == 0);
        }
    }

    /// Addresses with a socket open (for tests and status).
    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.counts.len()
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

#[cfg(test)]
mod tests {
    use super::PerIp;
    use std::net::IpAddr;

    #[test]
    fn sockets_per_address_are_bounded_and_forgotten_when_closed() {
        let per_ip = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(per_ip.admit(a) && per_ip.admit(a));
        assert!(!per_ip.admit(a), "a third from the same address");
        assert!(per_ip.admit(b), "others are not affected");
        per_ip.release(a);
        assert!(per_ip.admit(a), "room again after a close");
        for _ in 0..2 {
            per_ip.release(a);
        }
        per_ip.release(b);
        assert_eq!(per_ip.addresses(), 0, "no entry kept for idle addresses");
        per_ip.release(b);
        assert_eq!(per_ip.addresses(), 0);
    }
}
