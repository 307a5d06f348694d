//! This node's memberships: which connections are bound to which user ids
//! and belong to which groups, and the transitions the backplane cares
//! about (the first or last connection of a uid or group on this node).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use dashmap::mapref::one::RefMut;
use dashmap::DashMap;
use lubdub_worker::{Connection, Protocol};

use crate::error::HubError;
use crate::limits::HubLimits;

/// The connections of one uid or one group on this node.
pub(crate) struct Set<P: Protocol> {
    inner: RwLock<SetInner<P>>,
}

struct SetInner<P: Protocol> {
    conns: HashMap<u64, Connection<P>>,
    /// Groups only: how many member connections each uid has here.
    uids: HashMap<String, usize>,
}

impl<P: Protocol> Set<P> {
    fn new() -> Self {
        Set {
            inner: RwLock::new(SetInner {
                conns: HashMap::new(),
                uids: HashMap::new(),
            }),
        }
    }

    /// Calls `f` for every connection but those in `except`, under a read
    /// lock: sends do not block each other, only joins and leaves of this
    /// one set wait for a send in progress.
    pub fn for_each(&self, except: &[u64], mut f: impl FnMut(&Connection<P>)) -> usize {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        for (id, conn) in &inner.conns {
            if !except.contains(id) {
                f(conn);
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .conns
            .len()
    }

    pub fn uids(&self) -> Vec<String> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .uids
            .keys()
            .cloned()
            .collect()
    }
}

/// What a connection is part of, for its cleanup and its limits: sets, so
/// a join or bind is O(1) whatever the limits.
#[derive(Default)]
struct Membership {
    uids: HashSet<String>,
    groups: HashSet<String>,
}

impl Membership {
    fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.groups.is_empty()
    }
}

/// Whether `name` may be a uid or group name under `limits`.
pub(crate) fn check_name(name: &str, limits: &HubLimits) -> Result<(), HubError> {
    if name.is_empty() || name.len() > limits.max_name_len {
        return Err(HubError::BadName {
            len: name.len(),
            limit: limits.max_name_len,
        });
    }
    Ok(())
}

/// A change of this node's memberships that a backplane mirrors (presence,
/// subscriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The first connection of this uid arrived on this node.
    UidOnline(String),
    /// The last connection of this uid on this node left.
    UidOffline(String),
    /// The group's member count on this node is now `count` (0: gone).
    GroupCount(String, usize),
    /// The uid's first member connection in the group arrived on this node.
    GroupUidIn(String, String),
    /// The uid's last member connection in the group on this node left.
    GroupUidOut(String, String),
}

/// This node's memberships.
pub(crate) struct Registry<P: Protocol> {
    members: DashMap<u64, Membership>,
    uids: DashMap<String, Arc<Set<P>>>,
    groups: DashMap<String, Arc<Set<P>>>,
}

impl<P: Protocol> Default for Registry<P> {
    fn default() -> Self {
        Registry {
            members: DashMap::new(),
            uids: DashMap::new(),
            groups: DashMap::new(),
        }
    }
}

fn set_of<P: Protocol>(map: &DashMap<String, Arc<Set<P>>>, key: &str) -> Arc<Set<P>> {
    if let Some(s) = map.get(key) {
        return s.clone();
    }
    map.entry(key.to_owned())
        .or_insert_with(|| Arc::new(Set::new()))
        .clone()
}

/// Removes the set under `key` if it is empty (re-checked under the map's
/// entry lock, so a concurrent join is not lost).
fn drop_if_empty<P: Protocol>(map: &DashMap<String, Arc<Set<P>>>, key: &str) {
    map.remove_if(key, |_, s| s.len() == 0);
}

impl<P: Protocol> Registry<P> {
    /// Binds `conn` to `uid` (several connections per uid: devices), up to
    /// the limits.
    pub fn bind_uid(
        &self,
        conn: &Connection<P>,
        uid: &str,
        limits: &HubLimits,
        changes: &mut Vec<Change>,
    ) -> Result<(), HubError> {
        let limit = limits.max_uids_per_conn;
        let too_many = || HubError::TooManyUids { limit };
        let Some(m) = self.admit(conn.id(), uid, limits, limit, |m| &mut m.uids, too_many)? else {
            return Ok(());
        };
        let set = set_of(&self.uids, uid);
        {
            let mut s = set.inner.write().unwrap_or_else(PoisonError::into_inner);
            s.conns.insert(conn.id(), conn.clone());
            if s.conns.len() == 1 {
                changes.push(Change::UidOnline(uid.to_owned()));
            }
        }
        for group in &m.groups {
            if let Some(g) = self.groups.get(group).map(|g| g.clone()) {
                let mut g = g.inner.write().unwrap_or_else(PoisonError::into_inner);
                let n = g.uids.entry(uid.to_owned()).or_default();
                *n += 1;
                if *n == 1 {
                    changes.push(Change::GroupUidIn(group.clone(), uid.to_owned()));
                }
            }
        }
        Ok(())
    }

    /// Adds `name` to the set of `conn`'s memberships that `set` picks,
    /// if it is a valid name and the set holds fewer than `limit`:
    /// `Ok(None)` when it was there already, `Ok(Some(entry))` when added
    /// (the entry still locked), `too_many()` when the set is full.
    fn admit(
        &self,
        conn: u64,
        name: &str,
        limits: &HubLimits,
        limit: usize,
        set: fn(&mut Membership) -> &mut HashSet<String>,
        too_many: impl FnOnce() -> HubError,
    ) -> Result<Option<RefMut<'_, u64, Membership>>, HubError> {
        check_name(name, limits)?;
        let mut m = self.members.entry(conn).or_default();
        let names = set(&mut m);
        if names.contains(name) {
            return Ok(None);
        }
        if names.len() >= limit {
            drop(m);
            self.drop_member_if_empty(conn);
            return Err(too_many());
        }
        names.insert(name.to_owned());
        Ok(Some(m))
    }

    /// Forgets a connection's membership entry if it holds nothing
    /// (re-checked under the entry's lock).
    fn drop_member_if_empty(&self, conn: u64) {
        self.members.remove_if(&conn, |_, m| m.is_empty());
    }

    /// Unbinds `conn` from `uid`.
    pub fn unbind_uid(&self, conn: &Connection<P>, uid: &str, changes: &mut Vec<Change>) {
        let Some(mut m) = self.members.get_mut(&conn.id()) else {
            return;
        };
        if !m.uids.remove(uid) {
            return;
        }
        for group in &m.groups {
            self.group_uid_out(group, uid, changes);
        }
        let empty = m.is_empty();
        drop(m);
        self.uid_out(conn.id(), uid, changes);
        if empty {
            self.drop_member_if_empty(conn.id());
        }
    }

    fn uid_out(&self, conn: u64, uid: &str, changes: &mut Vec<Change>) {
        if let Some(set) = self.uids.get(uid).map(|s| s.clone()) {
            let mut s = set.inner.write().unwrap_or_else(PoisonError::into_inner);
            if s.conns.remove(&conn).is_some() && s.conns.is_empty() {
                changes.push(Change::UidOffline(uid.to_owned()));
            }
        }
        drop_if_empty(&self.uids, uid);
    }

    fn group_uid_out(&self, group: &str, uid: &str, changes: &mut Vec<Change>) {
        if let Some(g) = self.groups.get(group).map(|g| g.clone()) {
            let mut g = g.inner.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = g.uids.get_mut(uid) {
                *n -= 1;
                if *n == 0 {
                    g.uids.remove(uid);
                    changes.push(Change::GroupUidOut(group.to_owned(), uid.to_owned()));
                }
            }
        }
    }

    /// Adds `conn` to `group`, up to the limits.
    pub fn join(
        &self,
        conn: &Connection<P>,
        group: &str,
        limits: &HubLimits,
        changes: &mut Vec<Change>,
    ) -> Result<(), HubError> {
        let limit = limits.max_groups_per_conn;
        let too_many = || HubError::TooManyGroups { limit };
        let Some(m) = self.admit(conn.id(), group, limits, limit, |m| &mut m.groups, too_many)?
        else {
            return Ok(());
        };
        let set = set_of(&self.groups, group);
        let mut s = set.inner.write().unwrap_or_else(PoisonError::into_inner);
        s.conns.insert(conn.id(), conn.clone());
        changes.push(Change::GroupCount(group.to_owned(), s.conns.len()));
        for uid in &m.uids {
            let n = s.uids.entry(uid.clone()).or_default();
            *n += 1;
            if *n == 1 {
                changes.push(Change::GroupUidIn(group.to_owned(), uid.clone()));
            }
        }
        Ok(())
    }

    /// Removes `conn` from `group`.
    pub fn leave(&self, conn: &Connection<P>, group: &str, changes: &mut Vec<Change>) {
        let Some(mut m) = self.members.get_mut(&conn.id()) else {
            return;
        };
        if !m.groups.remove(group) {
            return;
        }
        let uids = m.uids.clone();
        let empty = m.is_empty();
        drop(m);
        self.group_out(conn.id(), group, &uids, changes);
        if empty {
            self.drop_member_if_empty(conn.id());
        }
    }

    fn group_out(&self, conn: u64, group: &str, uids: &HashSet<String>, changes: &mut Vec<Change>) {
        if let Some(set) = self.groups.get(group).map(|s| s.clone()) {
            let mut s = set.inner.write().unwrap_or_else(PoisonError::into_inner);
            if s.conns.remove(&conn).is_some() {
                changes.push(Change::GroupCount(group.to_owned(), s.conns.len()));
                for uid in uids {
                    if let Some(n) = s.uids.get_mut(uid) {
                        *n -= 1;
                        if *n == 0 {
                            s.uids.remove(uid);
                            changes.push(Change::GroupUidOut(group.to_owned(), uid.clone()));
                        }
                    }
                }
            }
        }
        drop_if_empty(&self.groups, group);
    }

    /// Drops every membership of a closed connection.
    pub fn remove(&self, conn: u64, changes: &mut Vec<Change>) {
        let Some((_, m)) = self.members.remove(&conn) else {
            return;
        };
        for group in &m.groups {
            self.group_out(conn, group, &m.uids, changes);
        }
        for uid in &m.uids {
            self.uid_out(conn, uid, changes);
        }
    }

    pub fn uid(&self, uid: &str) -> Option<Arc<Set<P>>> {
        self.uids.get(uid).map(|s| s.clone())
    }

    pub fn group(&self, group: &str) -> Option<Arc<Set<P>>> {
        self.groups.get(group).map(|s| s.clone())
    }

    /// Distinct uids with a connection here.
    pub fn uid_count(&self) -> usize {
        self.uids.len()
    }

    pub fn uids(&self) -> Vec<String> {
        self.uids.iter().map(|e| e.key().clone()).collect()
    }

    /// Every group with members here, and its member count.
    pub fn group_counts(&self) -> Vec<(String, usize)> {
        self.groups
            .iter()
            .map(|e| (e.key().clone(), e.value().len()))
            .collect()
    }

    /// Connections with at least one membership.
    pub fn members(&self) -> usize {
        self.members.len()
    }
}
