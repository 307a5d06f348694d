//! Per-event-loop registry of the connections a server heartbeat watches.
//!
//! Each loop owns a dense slab of its connections, so its timers walk a
//! plain vector (one pointer per connection, holes skipped) instead of the
//! worker's sharded map, whose iterator clones a shard guard per entry and
//! costs about three times as much per connection. The slab is behind a
//! mutex only the owning loop takes, except for handle queries from other
//! threads.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use lubdub_worker::{Connection, Protocol};

use crate::ping::PingState;

/// What the heartbeat keeps per connection besides the handle.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub exempt: bool,
    pub ping: Option<PingState>,
}

/// One loop's connections.
pub(crate) struct LoopPeers<P: Protocol> {
    /// Slot → connection; `None` for a free slot.
    pub conns: Vec<Option<Connection<P>>>,
    /// Slot → its state (same length as `conns`).
    pub meta: Vec<Meta>,
    free: Vec<usize>,
    index: HashMap<u64, usize>,
}

impl<P: Protocol> Default for LoopPeers<P> {
    fn default() -> Self {
        LoopPeers {
            conns: Vec::new(),
            meta: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<P: Protocol> LoopPeers<P> {
    pub fn insert(&mut self, conn: Connection<P>, meta: Meta) {
        if let Some(&slot) = self.index.get(&conn.id()) {
            self.conns[slot] = Some(conn);
            self.meta[slot] = meta;
            return;
        }
        let id = conn.id();
        let slot = match self.free.pop() {
            Some(s) => {
                self.conns[s] = Some(conn);
                self.meta[s] = meta;
                s
            }
            None => {
                self.conns.push(Some(conn));
                self.meta.push(meta);
                self.conns.len() - 1
            }
        };
        self.index.insert(id, slot);
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.index.remove(&id) else {
            return false;
        };
        self.conns[slot] = None;
        self.meta[slot] = Meta::default();
        self.free.push(slot);
        true
    }

    pub fn meta_mut(&mut self, id: u64) -> Option<&mut Meta> {
        let slot = *self.index.get(&id)?;
        self.meta.get_mut(slot)
    }

    pub fn meta(&self, id: u64) -> Option<&Meta> {
        self.meta.get(*self.index.get(&id)?)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Repacks the slab when more than half of a large slab is holes.
    pub fn compact(&mut self) {
        if self.conns.len() < 1024 || self.free.len() * 2 < self.conns.len() {
            return;
        }
        let conns = std::mem::take(&mut self.conns);
        let meta = std::mem::take(&mut self.meta);
        self.free.clear();
        self.index.clear();
        for (c, m) in conns.into_iter().zip(meta) {
            if let Some(c) = c {
                self.index.insert(c.id(), self.conns.len());
                self.conns.push(Some(c));
                self.meta.push(m);
            }
        }
        self.conns.shrink_to_fit();
        self.meta.shrink_to_fit();
    }
}

/// All loops' registries, indexed by loop index, grown on demand.
pub(crate) struct Registry<P: Protocol> {
    loops: RwLock<Vec<Mutex<LoopPeers<P>>>>,
}

impl<P: Protocol> Default for Registry<P> {
    fn default() -> Self {
        Registry {
            loops: RwLock::new(Vec::new()),
        }
    }
}

impl<P: Protocol> Registry<P> {
    /// Runs `f` on loop `idx`'s registry.
    pub fn with_loop<R>(&self, idx: usize, f: impl FnOnce(&mut LoopPeers<P>) -> R) -> R {
        {
            let loops = self.loops.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(m) = loops.get(idx) {
                return f(&mut m.lock().unwrap_or_else(PoisonError::into_inner));
            }
        }
        let mut loops = self.loops.write().unwrap_or_else(PoisonError::into_inner);
        while loops.len() <= idx {
            loops.push(Mutex::default());
        }
        let r = f(loops[idx].get_mut().unwrap_or_else(PoisonError::into_inner));
        r
    }

    /// Runs `f` on the registry holding connection `id`, if any.
    pub fn with_conn<R>(&self, id: u64, f: impl FnOnce(&mut Meta) -> R) -> Option<R> {
        let loops = self.loops.read().unwrap_or_else(PoisonError::into_inner);
        for m in loops.iter() {
            let mut lp = m.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(meta) = lp.meta_mut(id) {
                return Some(f(meta));
            }
        }
        None
    }

    /// Connections registered, all loops.
    pub fn len(&self) -> usize {
        let loops = self.loops.read().unwrap_or_else(PoisonError::into_inner);
        loops
            .iter()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Connections cannot be built outside the worker; the slab logic is
    // covered by the loopback tests. Here: the registry grows on demand.
    #[test]
    fn registry_grows_and_finds_nothing_when_empty() {
        let r: Registry<lubdub_worker::Raw> = Registry::default();
        assert_eq!(r.with_loop(3, |lp| lp.len()), 0);
        assert_eq!(r.len(), 0);
        assert!(r.with_conn(1, |_| ()).is_none());
        assert!(r.with_loop(0, |lp| lp.meta(1).is_none()));
    }
}
