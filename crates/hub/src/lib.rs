//! Users, groups and broadcasts for lubdub: send to a user (all their
//! devices), a group or room, everyone, or one connection anywhere, in one
//! process or across nodes over Redis pub/sub.
//!
//! ```no_run
//! use lubdub_hub::Hub;
//! use lubdub_text::Text;
//! use lubdub_worker::Worker;
//!
//! let hub = Hub::<Text>::local();
//! let mut worker = Worker::<Text>::new("text://0.0.0.0:1234")?;
//! worker.plugin(hub.plugin()); // memberships end with their connection
//! let h = hub.clone();
//! worker.on_message(move |conn, line| {
//!     let joined = match line.split_once(' ') {
//!         Some(("name", name)) => h.bind_uid(conn, name),
//!         Some(("join", room)) => h.join(conn, room),
//!         Some(("say", text)) => {
//!             h.send_to_group("lobby", text, &[]);
//!             Ok(())
//!         }
//!         _ => Ok(()),
//!     };
//!     if let Err(e) = joined {
//!         // Past a limit (HubLimits): 128 groups, 16 uids, 256-byte names.
//!         let _ = conn.send(&format!("refused: {e}"));
//!     }
//! });
//! worker.run()?;
//! # Ok::<(), lubdub_worker::Error>(())
//! ```
//!
//! # Delivery
//!
//! * A broadcast is encoded once (with a fresh encoder state: WebSocket
//!   frames go uncompressed) and the same bytes are queued on every local
//!   member: no encode and no allocation per member. Members on other event
//!   loops are handed the bytes through their own connection's lock and
//!   wake-up, never a global lock.
//! * A slow or non-reading member never blocks a send: its send buffer
//!   limit applies to it alone (the hub counts what it refused in
//!   [`HubStats::refused`]).
//! * Memberships are dropped when the connection closes, through the
//!   plugin hooks ([`Hub::plugin`]).
//! * What one connection may hold is bounded ([`HubLimits`]): a join or
//!   bind past a limit returns a [`HubError`] the application sees.
//! * Across nodes, delivery is at most once, like Redis pub/sub itself:
//!   see docs/hub.md.

#![forbid(unsafe_code)]

mod claim;
mod config;
mod error;
mod id;
mod limits;
mod query;
mod redis;
mod registry;
mod report;
mod scripts;
mod wire;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::time::Instant;

use lubdub_worker::plugin::Plugin;
use lubdub_worker::{CloseReason, Connection, Encoder, Protocol, SendStatus, WorkerHandle};

pub use config::{RedisConfig, DEFAULT_NAMESPACE};
pub use error::HubError;
pub use id::GlobalConnId;
pub use limits::{HubLimits, MAX_NODE_NAME_LEN};
pub use query::Query;
pub use redis::RedisBackplane;
pub use registry::Change;
use registry::{check_name, Registry};
use report::Episodes;

/// Where a send goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every connection bound to this user id.
    Uid(String),
    /// Every member of this group.
    Group(String),
    /// Every connection of the cluster.
    All,
    /// One connection, on whichever node holds it.
    Conn(GlobalConnId),
}

/// What the hub counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubStats {
    /// Local deliveries queued on a connection.
    pub delivered: u64,
    /// Local deliveries a connection refused (send buffer full, closing).
    pub refused: u64,
    /// Sends handed to the backplane for the other nodes.
    pub published: u64,
    /// Sends for the other nodes dropped: the backplane was down (or the
    /// node off the cluster), or the message was over
    /// [`HubLimits::max_message_size`] or [`HubLimits::max_except`].
    pub dropped: u64,
    /// Messages received from other nodes.
    pub received: u64,
    /// Messages from the backplane refused: malformed, over the limits, or
    /// addressed to other than the channel they came on.
    pub rejected: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    refused: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
}

/// A boxed future, `Send` so a query can be awaited on any loop.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The cluster side of a hub. The Redis backplane implements it; a NATS
/// one could, behind the same API.
pub trait Backplane: Send + Sync + 'static {
    /// Starts on the worker's first event loop (connects, subscribes).
    fn start(&self, deliver: Delivery);

    /// The worker is stopping: leave the cluster (erase this node's
    /// presence, free its name). Default: nothing.
    fn stop(&self) {}

    /// Hands `bytes` (already encoded) to the other nodes for `target`,
    /// skipping the connections in `except`. Returns `false` when the
    /// backplane is down and the send is dropped (at most once).
    fn publish(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]) -> bool;

    /// Mirrors a change of this node's memberships (presence, and which
    /// channels this node listens to).
    fn changed(&self, change: &Change);

    /// Answers a cluster-wide question, or `None` when it cannot (down):
    /// the hub then answers from this node's own knowledge.
    fn query(&self, query: Query) -> BoxFuture<Option<u64>>;

    /// Cluster-wide uids of a group, or `None` when it cannot.
    fn group_uids(&self, group: &str) -> BoxFuture<Option<Vec<String>>>;
}

/// The hub as its backplane sees it (whatever the protocol).
trait Sink: Send + Sync {
    fn deliver(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]);
    fn snapshot(&self) -> Snapshot;
    fn limits(&self) -> HubLimits;
    fn rejected(&self);
}

/// What a backplane gets from its hub: a way to hand messages from other
/// nodes to this node's members, this node's memberships, and the limits
/// messages from other nodes must keep.
#[derive(Clone)]
pub struct Delivery {
    hub: Weak<dyn Sink>,
}

impl Delivery {
    /// Queues `bytes` on this node's members of `target`.
    pub fn deliver(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]) {
        if let Some(hub) = self.hub.upgrade() {
            hub.deliver(target, except, bytes);
        }
    }

    /// This node's memberships now (to republish presence).
    pub fn snapshot(&self) -> Snapshot {
        self.hub
            .upgrade()
            .map_or_else(Snapshot::default, |h| h.snapshot())
    }

    /// The hub's limits: what a message from another node may carry.
    pub fn limits(&self) -> HubLimits {
        self.hub
            .upgrade()
            .map_or_else(HubLimits::default, |h| h.limits())
    }

    /// Counts a message from the backplane that was refused
    /// ([`HubStats::rejected`]).
    pub fn rejected(&self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.rejected();
        }
    }
}

struct Inner<P: Protocol> {
    node: String,
    protocol: P,
    registry: Registry<P>,
    limits: RwLock<HubLimits>,
    counters: Counters,
    backplane: Option<Box<dyn Backplane>>,
    /// The worker, once its first loop started: `send_to_all` and
    /// `send_to_conn` reach every connection through it.
    worker: OnceLock<WorkerHandle<P>>,
    /// The backplane was told the worker stops.
    stopped: AtomicBool,
    /// Messages too large for the other nodes (reported once per episode).
    too_large: Episodes,
}

impl<P: Protocol> Inner<P> {
    fn limits(&self) -> HubLimits {
        self.limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<P: Protocol> Sink for Inner<P> {
    fn deliver(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        deliver_local(self, target, except, bytes);
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(self)
    }

    fn limits(&self) -> HubLimits {
        Inner::limits(self)
    }

    fn rejected(&self) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Users, groups and broadcasts over a worker's connections. Cheap to
/// clone; usable from any thread and callback.
pub struct Hub<P: Protocol> {
    inner: Arc<Inner<P>>,
}

impl<P: Protocol> Clone for Hub<P> {
    fn clone(&self) -> Self {
        Hub {
            inner: self.inner.clone(),
        }
    }
}

impl<P: Protocol + Default> Hub<P> {
    /// A hub for one process (node name `local`), encoding with the
    /// protocol's default settings.
    pub fn local() -> Self {
        Self::with_protocol(P::default())
    }
}

impl<P: Protocol> Hub<P> {
    /// A hub for one process, encoding with `protocol`.
    pub fn with_protocol(protocol: P) -> Self {
        Self::new("local", protocol, None)
    }

    /// A hub for a cluster over Redis (see [`RedisConfig`]): node name,
    /// pub/sub and presence from `config`. Claims the node name in Redis
    /// first (waiting up to 5 s): see [`RedisBackplane::new`] for the
    /// errors.
    pub fn with_redis(config: RedisConfig, protocol: P) -> Result<Self, HubError> {
        let node = config.node.clone();
        let backplane = RedisBackplane::new(config)?;
        Ok(Self::new(&node, protocol, Some(Box::new(backplane))))
    }

    /// A hub named `node` with a backplane to the other nodes (`None`: a
    /// single node).
    pub fn new(node: &str, protocol: P, backplane: Option<Box<dyn Backplane>>) -> Self {
        Hub {
            inner: Arc::new(Inner {
                node: node.to_owned(),
                protocol,
                registry: Registry::default(),
                limits: RwLock::new(HubLimits::default()),
                counters: Counters::default(),
                backplane,
                worker: OnceLock::new(),
                stopped: AtomicBool::new(false),
                too_large: Episodes::default(),
            }),
        }
    }

    /// The same hub with these limits (see [`HubLimits`]).
    pub fn with_limits(self, limits: HubLimits) -> Self {
        self.set_limits(limits);
        self
    }

    /// Sets the limits: later joins, binds, sends and messages from other
    /// nodes see them (the Redis subscriber's frame limit, its next
    /// session); what connections hold already stays.
    pub fn set_limits(&self, limits: HubLimits) {
        *self
            .inner
            .limits
            .write()
            .unwrap_or_else(PoisonError::into_inner) = limits.clamped();
    }

    /// The limits in force.
    pub fn limits(&self) -> HubLimits {
        self.inner.limits()
    }

    /// The plugin to install on the worker (`worker.plugin(hub.plugin())`):
    /// it learns the worker, starts the backplane, and drops a connection's
    /// memberships when it closes.
    pub fn plugin(&self) -> HubPlugin<P> {
        HubPlugin { hub: self.clone() }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The cluster-wide id of `conn` (`node:connection id`).
    pub fn global_id(&self, conn: &Connection<P>) -> GlobalConnId {
        GlobalConnId::new(&self.inner.node, conn.id())
    }

    /// What the hub counted.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        HubStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
        }
    }

    fn apply(&self, changes: Vec<Change>) {
        if let Some(bp) = &self.inner.backplane {
            for c in &changes {
                bp.changed(c);
            }
        }
    }

    /// Binds `conn` to user id `uid` (GatewayWorker's `bindUid`). A uid may
    /// have several connections (devices), a connection several uids, up
    /// to [`HubLimits::max_uids_per_conn`]. Binding again is `Ok`.
    ///
    /// Errors: [`HubError::TooManyUids`], [`HubError::BadName`] (empty or
    /// over [`HubLimits::max_name_len`]), [`HubError::Closed`].
    pub fn bind_uid(&self, conn: &Connection<P>, uid: &str) -> Result<(), HubError> {
        let limits = self.inner.limits();
        self.member_change(conn, |r, changes| r.bind_uid(conn, uid, &limits, changes))
    }

    /// Runs a join or bind, then makes sure a connection that closed
    /// meanwhile keeps nothing: its `on_close` may have run before the
    /// membership was added.
    fn member_change(
        &self,
        conn: &Connection<P>,
        change: impl FnOnce(&Registry<P>, &mut Vec<Change>) -> Result<(), HubError>,
    ) -> Result<(), HubError> {
        if conn.is_closed() {
            return Err(HubError::Closed);
        }
        let mut changes = Vec::new();
        let done = change(&self.inner.registry, &mut changes);
        self.apply(changes);
        done?;
        if conn.is_closed() {
            self.forget(conn);
            return Err(HubError::Closed);
        }
        Ok(())
    }

    /// Unbinds `conn` from `uid`.
    pub fn unbind_uid(&self, conn: &Connection<P>, uid: &str) {
        let mut changes = Vec::new();
        self.inner.registry.unbind_uid(conn, uid, &mut changes);
        self.apply(changes);
    }

    /// Adds `conn` to `group` (a room), up to
    /// [`HubLimits::max_groups_per_conn`] groups per connection. Joining
    /// again is `Ok`. O(1) whatever the limits.
    ///
    /// Errors: [`HubError::TooManyGroups`], [`HubError::BadName`] (empty or
    /// over [`HubLimits::max_name_len`]), [`HubError::Closed`].
    pub fn join(&self, conn: &Connection<P>, group: &str) -> Result<(), HubError> {
        let limits = self.inner.limits();
        self.member_change(conn, |r, changes| r.join(conn, group, &limits, changes))
    }

    /// Removes `conn` from `group`.
    pub fn leave(&self, conn: &Connection<P>, group: &str) {
        let mut changes = Vec::new();
        self.inner.registry.leave(conn, group, &mut changes);
        self.apply(changes);
    }

    /// Drops every membership of `conn` (the plugin does this on close).
    pub fn forget(&self, conn: &Connection<P>) {
        let mut changes = Vec::new();
        self.inner.registry.remove(conn.id(), &mut changes);
        self.apply(changes);
    }

    /// Sends `msg` to every connection of `uid` on every node. Returns the
    /// local connections it was queued on (a uid no connection can have,
    /// empty or too long, reaches no one).
    pub fn send_to_uid(&self, uid: &str, msg: &P::Outgoing) -> usize {
        self.send(&Target::Uid(uid.to_owned()), &[], msg)
    }

    /// Sends `msg` to every member of `group` on every node but those in
    /// `except`. Returns the local members it was queued on.
    pub fn send_to_group(&self, group: &str, msg: &P::Outgoing, except: &[GlobalConnId]) -> usize {
        self.send(&Target::Group(group.to_owned()), except, msg)
    }

    /// Sends `msg` to every connection of every node. Returns the local
    /// connections it was queued on.
    pub fn send_to_all(&self, msg: &P::Outgoing) -> usize {
        self.send(&Target::All, &[], msg)
    }

    /// Sends `msg` to one connection, on whichever node holds it. Returns
    /// whether it was queued locally or handed to the backplane.
    pub fn send_to_conn(&self, id: &GlobalConnId, msg: &P::Outgoing) -> bool {
        let target = Target::Conn(id.clone());
        if id.node() == self.inner.node {
            return self.send(&target, &[], msg) > 0;
        }
        match self.encode(msg) {
            Some(bytes) => self.publish(&target, &[], &bytes),
            None => false,
        }
    }

    fn send(&self, target: &Target, except: &[GlobalConnId], msg: &P::Outgoing) -> usize {
        if let Target::Uid(name) | Target::Group(name) = target {
            if check_name(name, &self.inner.limits()).is_err() {
                return 0;
            }
        }
        let Some(bytes) = self.encode(msg) else {
            return 0;
        };
        let local = deliver_local(&self.inner, target, except, &bytes);
        let only_here = matches!(target, Target::Conn(id) if id.node() == self.inner.node);
        if !only_here {
            self.publish(target, except, &bytes);
        }
        local
    }

    fn publish(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]) -> bool {
        let Some(bp) = &self.inner.backplane else {
            return false;
        };
        let c = &self.inner.counters;
        let limits = self.inner.limits();
        let node_too_long =
            matches!(target, Target::Conn(id) if id.node().len() > MAX_NODE_NAME_LEN);
        if bytes.len() > limits.max_message_size
            || except.len() > limits.max_except
            || node_too_long
        {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.inner.too_large.hit(Instant::now()) {
                log::warn!(
                    "hub {}: {n} message(s) delivered on this node only: over max_message_size \
                     ({} bytes) or max_except ({}), the last {} bytes with {} exception(s)",
                    self.inner.node,
                    limits.max_message_size,
                    limits.max_except,
                    bytes.len(),
                    except.len()
                );
            }
            return false;
        }
        if bp.publish(target, except, bytes) {
            c.published.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Encodes `msg` once, with a fresh encoder state.
    fn encode(&self, msg: &P::Outgoing) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut encoder = self.inner.protocol.encoder();
        match encoder.encode(&self.inner.protocol, msg, &mut bytes) {
            Ok(()) => Some(bytes),
            Err(e) => {
                log::warn!("hub: a message could not be encoded: {e}");
                None
            }
        }
    }

    /// Connections on this node bound to a uid or in a group.
    pub fn member_count_local(&self) -> usize {
        self.inner.registry.members()
    }

    /// Groups with members on this node.
    pub fn group_count_total_local(&self) -> usize {
        self.inner.registry.group_counts().len()
    }

    /// Whether `uid` has a connection on this node.
    pub fn is_uid_online_local(&self, uid: &str) -> bool {
        self.inner.registry.uid(uid).is_some_and(|s| s.len() > 0)
    }

    /// Distinct uids with a connection on this node.
    pub fn uid_count_local(&self) -> usize {
        self.inner.registry.uid_count()
    }

    /// Members of `group` on this node.
    pub fn group_count_local(&self, group: &str) -> usize {
        self.inner.registry.group(group).map_or(0, |s| s.len())
    }

    /// Uids with a member connection in `group` on this node.
    pub fn group_uids_local(&self, group: &str) -> Vec<String> {
        self.inner
            .registry
            .group(group)
            .map_or_else(Vec::new, |s| s.uids())
    }

    /// Whether `uid` has a connection on any node (GatewayWorker's
    /// `isUidOnline`). A single node, or a backplane that is down, answers
    /// from this node's knowledge.
    pub async fn is_uid_online(&self, uid: &str) -> bool {
        if self.is_uid_online_local(uid) {
            return true;
        }
        self.ask(Query::UidOnline(uid.to_owned()))
            .await
            .is_some_and(|n| n > 0)
    }

    /// Distinct uids online on all nodes.
    pub async fn uid_count(&self) -> usize {
        match self.ask(Query::UidCount).await {
            Some(n) => n as usize,
            None => self.uid_count_local(),
        }
    }

    /// Members of `group` on all nodes.
    pub async fn group_count(&self, group: &str) -> usize {
        match self.ask(Query::GroupCount(group.to_owned())).await {
            Some(n) => n as usize,
            None => self.group_count_local(group),
        }
    }

    /// Uids with a member in `group` on any node.
    pub async fn group_uids(&self, group: &str) -> Vec<String> {
        let remote = match &self.inner.backplane {
            Some(bp) => bp.group_uids(group).await,
            None => None,
        };
        match remote {
            Some(uids) => uids,
            None => self.group_uids_local(group),
        }
    }

    async fn ask(&self, query: Query) -> Option<u64> {
        match &self.inner.backplane {
            Some(bp) => bp.query(query).await,
            None => None,
        }
    }

    /// This node's memberships, for a backplane that (re)publishes its
    /// presence: (uids, (group, member count, uids)).
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.inner)
    }

    fn delivery(&self) -> Delivery {
        let inner: Arc<dyn Sink> = self.inner.clone();
        Delivery {
            hub: Arc::downgrade(&inner),
        }
    }
}

fn queue<P: Protocol>(inner: &Inner<P>, conn: &Connection<P>, bytes: &[u8]) {
    let c = &inner.counters;
    match conn.send_raw(bytes) {
        SendStatus::Queued => c.delivered.fetch_add(1, Ordering::Relaxed),
        _ => c.refused.fetch_add(1, Ordering::Relaxed),
    };
}

/// Queues `bytes` on this node's members of `target`; returns how many.
fn deliver_local<P: Protocol>(
    inner: &Inner<P>,
    target: &Target,
    except: &[GlobalConnId],
    bytes: &[u8],
) -> usize {
    let r = &inner.registry;
    let node = inner.node.as_str();
    let local_except: Vec<u64> = except
        .iter()
        .filter(|g| g.node() == node)
        .map(GlobalConnId::conn)
        .collect();
    let queue = |c: &Connection<P>| queue(inner, c, bytes);
    match target {
        Target::Uid(uid) => r.uid(uid).map_or(0, |s| s.for_each(&local_except, queue)),
        Target::Group(group) => r
            .group(group)
            .map_or(0, |s| s.for_each(&local_except, queue)),
        Target::All => {
            let Some(worker) = inner.worker.get() else {
                return 0;
            };
            let mut n = 0;
            for entry in worker.connections().iter() {
                if !local_except.contains(entry.key()) {
                    queue(entry.value());
                    n += 1;
                }
            }
            n
        }
        Target::Conn(id) if id.node() == node => {
            let conn = inner
                .worker
                .get()
                .and_then(|w| w.connections().get(&id.conn()).map(|e| e.value().clone()));
            match conn {
                Some(conn) => {
                    queue(&conn);
                    1
                }
                None => 0,
            }
        }
        Target::Conn(_) => 0,
    }
}

fn snapshot<P: Protocol>(inner: &Inner<P>) -> Snapshot {
    let r = &inner.registry;
    Snapshot {
        uids: r.uids(),
        groups: r
            .group_counts()
            .into_iter()
            .map(|(g, n)| {
                let uids = r.group(&g).map_or_else(Vec::new, |s| s.uids());
                (g, n, uids)
            })
            .collect(),
    }
}

/// This node's memberships at one moment (see [`Hub::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Uids with a connection here.
    pub uids: Vec<String>,
    /// Groups with members here: name, member count, uids of the members.
    pub groups: Vec<(String, usize, Vec<String>)>,
}

/// The hub's worker plugin (see [`Hub::plugin`]).
pub struct HubPlugin<P: Protocol> {
    hub: Hub<P>,
}

impl<P: Protocol> Plugin<P> for HubPlugin<P> {
    fn on_worker_start(&self, worker: &WorkerHandle<P>) {
        // The first loop to start runs the backplane's connections.
        if self.hub.inner.worker.set(worker.clone()).is_ok() {
            if let Some(bp) = &self.hub.inner.backplane {
                bp.start(self.hub.delivery());
            }
        }
    }

    fn on_worker_stop(&self, _worker: &WorkerHandle<P>) {
        // Every loop stops; the backplane leaves the cluster once.
        if !self.hub.inner.stopped.swap(true, Ordering::AcqRel) {
            if let Some(bp) = &self.hub.inner.backplane {
                bp.stop();
            }
        }
    }

    fn on_close(&self, conn: &Connection<P>, _reason: &CloseReason) {
        self.hub.forget(conn);
    }
}
