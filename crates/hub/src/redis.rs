//! The Redis backplane: cross-node delivery on Redis pub/sub, presence in
//! Redis with a node-liveness TTL, over lubdub's own `Client<Resp>` (on the
//! event loop, reconnecting with jittered backoff; no tokio, no second
//! reactor).
//!
//! Two connections per node, both on the worker's first event loop:
//!
//! * the **command** connection claims the node's name, publishes
//!   (pipelined: the sends of one loop turn leave in one write, and no
//!   publish waits for its reply), keeps the presence keys and the node's
//!   liveness key, and runs the queries (Lua scripts, one round trip each);
//! * the **subscriber** connection listens to `all`, this node's own
//!   channel, and the channel of every uid and group with a member here,
//!   and no other (Socket.IO's sharded adapter does the same).
//!
//! Keys, under the namespace `ns`:
//!
//! | key | what |
//! |---|---|
//! | `ns:node:<node>` | the node's name claim and liveness: the id of the instance holding it (expires after the presence TTL unless refreshed) |
//! | `ns:nodes` | every node that ever started |
//! | `ns:uidnodes:<uid>` | nodes where the uid has a connection |
//! | `ns:nodeuids:<node>` | uids with a connection on the node |
//! | `ns:groupcount:<group>` | hash: node → members there |
//! | `ns:groupuids:<group>:<node>` | uids with a member of the group on the node |
//! | `ns:nodegroups:<node>` | groups with members on the node |
//!
//! A node is on the cluster only while it holds its name: it claims it at
//! start ([`crate::claim`]) and on every (re)connect, and renews it every
//! third of the TTL, with [`CLAIM`]: set if free or already this
//! instance's. Until then, and whenever another instance holds it, the
//! node publishes nothing, writes no presence and listens to no channel.
//!
//! Queries count only nodes whose liveness key exists, so a node that died
//! reads as gone within the TTL. When the command connection comes back
//! after an outage the node first erases what it had published, then
//! publishes what it has now: no stale membership survives an outage.
//!
//! Every message from the subscriber connection is checked before it is
//! delivered: each field within the hub's limits, and its target the one
//! of the channel it came on (see [`Shared::published`]).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use event_listener::Event;
use lubdub_resp::{Cmd, PubSub, Resp, Value};
use lubdub_worker::{ConnError, Connection, SendStatus, Timer, TimerId};

use crate::claim::{claim_at_start, instance_id, Claim};
use crate::config::{RedisConfig, Resolved};
use crate::error::HubError;
use crate::registry::Change;
use crate::report::Episodes;
use crate::scripts::{CLAIM, GROUP_COUNT, GROUP_UIDS, RELEASE, RESET_NODE, UID_COUNT, UID_ONLINE};
use crate::wire::{self, Refused};
use crate::{Backplane, BoxFuture, Delivery, GlobalConnId, Query, Target};

/// How long a query waits for Redis before the hub answers from this
/// node's own knowledge.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply a query accepts (the uids of a big group).
const MAX_REPLY: usize = 64 << 20;

/// Where the node stands with Redis.
mod state {
    /// The command connection is down.
    pub const DOWN: u8 = 0;
    /// Connected; the name claim is on its way.
    pub const CLAIMING: u8 = 1;
    /// Connected and holding the node's name: on the cluster.
    pub const LIVE: u8 = 2;
    /// Connected, but another instance holds the name: off the cluster.
    pub const TAKEN: u8 = 3;
    /// The worker stopped: for good.
    pub const STOPPED: u8 = 4;
}

/// A reply a command waits for.
struct Slot {
    value: Mutex<Option<Option<Value>>>,
    event: Event,
}

impl Slot {
    fn fill(&self, v: Option<Value>) {
        let mut s = self.value.lock().unwrap_or_else(PoisonError::into_inner);
        if s.is_none() {
            *s = Some(v);
            drop(s);
            self.event.notify(usize::MAX);
        }
    }

    fn take(&self) -> Option<Option<Value>> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    async fn wait(&self) -> Option<Value> {
        loop {
            if let Some(v) = self.take() {
                return v;
            }
            let listener = self.event.listen();
            if let Some(v) = self.take() {
                return v;
            }
            listener.await;
        }
    }
}

/// A query's timeout timer, deleted when the query ends (its reply came,
/// or it was dropped) so no timer outlives its query. A timer belongs to
/// the loop that added it: one dropped on another thread is left to fire.
struct QueryTimeout {
    timer: Option<(TimerId, ThreadId)>,
}

impl QueryTimeout {
    fn arm(slot: &Arc<Slot>) -> Self {
        let s = slot.clone();
        // Off a loop there is no timer: the reply or the connection's end
        // settles the query.
        let timer = Timer::once(QUERY_TIMEOUT, move || s.fill(None))
            .ok()
            .map(|id| (id, std::thread::current().id()));
        QueryTimeout { timer }
    }
}

impl Drop for QueryTimeout {
    fn drop(&mut self) {
        if let Some((id, thread)) = self.timer.take() {
            if thread == std::thread::current().id() {
                Timer::del(id);
            }
        }
    }
}

/// What each reply of the command connection is for, oldest first.
enum Waiter {
    Discard,
    Reply(Arc<Slot>),
    Claim,
}

struct Shared {
    cfg: RedisConfig,
    redis: Arc<Resolved>,
    /// This instance's id: the value of its name claim.
    instance: String,
    cmd: OnceLock<Connection<Resp>>,
    sub: OnceLock<Connection<Resp>>,
    waiters: Mutex<VecDeque<Waiter>>,
    /// Channels this node listens to besides `all` and its own.
    channels: Mutex<HashSet<Vec<u8>>>,
    delivery: OnceLock<Delivery>,
    /// One of [`state`].
    state: AtomicU8,
    /// Dropped in the current outage (reported once it ends).
    dropped: AtomicU64,
    /// Error replies to fire-and-forget commands (logged once per burst).
    errors: AtomicU64,
    /// A connection error was logged in this outage.
    warned: AtomicBool,
    /// Messages from Redis refused (reported once per episode).
    refusals: Episodes,
    /// Claims refused: the name taken, or an error (once per episode).
    claim_failures: Episodes,
}

type OnConnect = Box<dyn Fn(&Connection<Resp>) + Send + Sync>;
type OnValue = Box<dyn Fn(Value) + Send + Sync>;
type OnClose = Box<dyn Fn() + Send + Sync>;

/// The Redis backplane (see the module docs and docs/hub.md).
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

impl RedisBackplane {
    /// A backplane to Redis as configured. It checks the configuration
    /// and claims the node's name in Redis (waiting up to 5 s for it): a
    /// name another running node holds is [`HubError::NodeNameTaken`], and
    /// credentials or permissions Redis refuses are [`HubError::Redis`].
    /// When Redis cannot be reached the node starts anyway and claims its
    /// name once it connects. It connects for good when the hub's plugin
    /// starts on the worker.
    pub fn new(cfg: RedisConfig) -> Result<Self, HubError> {
        let redis = Arc::new(cfg.resolve()?);
        let instance = instance_id()?;
        let shared = Arc::new(Shared {
            cfg,
            redis,
            instance,
            cmd: OnceLock::new(),
            sub: OnceLock::new(),
            waiters: Mutex::new(VecDeque::new()),
            channels: Mutex::new(HashSet::new()),
            delivery: OnceLock::new(),
            state: AtomicU8::new(state::DOWN),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            refusals: Episodes::default(),
            claim_failures: Episodes::default(),
        });
        let s = &shared;
        match claim_at_start(
            s.redis.clone(),
            s.node(),
            s.client_name("claim"),
            s.key(&["node", s.node()]),
            s.instance.clone(),
            s.cfg.presence_ttl,
        ) {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Unreachable(why)) => log::warn!(
                "hub {}: redis at {} could not be reached to claim the node name ({why}); \
                 the node starts and claims it when it connects",
                s.node(),
                s.redis.shown
            ),
            Err(e) => {
                log::error!("hub {}: {e}", s.node());
                return Err(e);
            }
        }
        Ok(RedisBackplane { shared })
    }
}

impl Shared {
    fn ns(&self) -> &str {
        &self.cfg.namespace
    }

    fn node(&self) -> &str {
        &self.cfg.node
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Moves to `new` unless stopped; returns the state it left.
    fn set_state(&self, new: u8) -> Option<u8> {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != state::STOPPED).then_some(new)
            })
            .ok()
    }

    fn client_name(&self, role: &str) -> String {
        format!("{}-{}-{role}", self.ns(), self.node())
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.ns().to_owned();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn channel(&self, target: &Target) -> Vec<u8> {
        match target {
            Target::Uid(uid) => self.key(&["ch", "u", uid]),
            Target::Group(group) => self.key(&["ch", "g", group]),
            Target::All => self.key(&["ch", "all"]),
            Target::Conn(id) => self.key(&["ch", "n", id.node()]),
        }
        .into_bytes()
    }

    /// Whether `channel` is the channel of `target` (for a connection: of
    /// one on this node), without allocating.
    fn channel_is(&self, channel: &[u8], target: &Target) -> bool {
        let Some(rest) = channel
            .strip_prefix(self.ns().as_bytes())
            .and_then(|r| r.strip_prefix(b":ch:".as_slice()))
        else {
            return false;
        };
        let is = |kind: &[u8], name: &str| rest.strip_prefix(kind) == Some(name.as_bytes());
        match target {
            Target::Uid(uid) => is(b"u:", uid),
            Target::Group(group) => is(b"g:", group),
            Target::All => rest == b"all",
            Target::Conn(id) => id.node() == self.node() && is(b"n:", id.node()),
        }
    }

    /// Sends a command whose reply is not awaited, if the node is on the
    /// cluster. Returns whether it was queued.
    fn fire(&self, cmd: &Cmd) -> bool {
        self.state() == state::LIVE && self.send(cmd, Waiter::Discard)
    }

    /// Queues a command on the command connection, whatever the state.
    fn send(&self, cmd: &Cmd, waiter: Waiter) -> bool {
        let Some(conn) = self.cmd.get() else {
            return false;
        };
        // Waiters are pushed in the order the commands are queued: both
        // happen under this lock.
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        match conn.send(cmd) {
            SendStatus::Queued => {
                waiters.push_back(waiter);
                true
            }
            _ => false,
        }
    }

    /// Sends a command and waits for its reply (`None`: off the cluster,
    /// or no answer within the query timeout).
    async fn ask(&self, cmd: Cmd) -> Option<Value> {
        if self.state() != state::LIVE {
            return None;
        }
        let slot = Arc::new(Slot {
            value: Mutex::new(None),
            event: Event::new(),
        });
        if !self.send(&cmd, Waiter::Reply(slot.clone())) {
            return None;
        }
        let _timeout = QueryTimeout::arm(&slot);
        slot.wait().await
    }

    /// Claims (or renews) the node's name; the reply decides whether the
    /// node is on the cluster ([`Self::claim_reply`]).
    fn claim(&self) {
        if !matches!(self.state(), state::CLAIMING | state::LIVE | state::TAKEN) {
            return;
        }
        let ttl_ms = self.cfg.presence_ttl.as_millis().max(1) as u64;
        self.send(
            &Cmd::new("EVAL")
                .arg(CLAIM)
                .arg(1u64)
                .arg(self.key(&["node", self.node()]))
                .arg(self.instance.as_str())
                .arg(ttl_ms),
            Waiter::Claim,
        );
    }

    /// The answer to a claim: `{1, 0}` the name is ours, `{0, ms}` another
    /// instance holds it.
    fn claim_reply(&self, value: Value) {
        let ints: Option<Vec<i64>> = value
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_int).collect());
        match ints.as_deref() {
            Some([1, _]) => {
                if self.set_state(state::LIVE) != Some(state::LIVE) {
                    self.went_live();
                }
            }
            Some([0, ms]) => {
                let was = self.set_state(state::TAKEN);
                if was == Some(state::LIVE) {
                    // Listen to nothing: this node's channel is the other's.
                    if let Some(sub) = self.sub.get() {
                        let _ = sub.send(&Cmd::new("UNSUBSCRIBE"));
                    }
                }
                if let Some(n) = self.claim_failures.hit(Instant::now()) {
                    log::error!(
                        "hub {}: another running instance holds the node name `{}` in redis at {} \
                         (for {} ms more unless it renews it){}: this node stays off the cluster \
                         (local delivery goes on) and tries again every {:?} ({n} refusal(s))",
                        self.node(),
                        self.node(),
                        self.redis.shown,
                        ms,
                        if was == Some(state::LIVE) {
                            "; this node had it and lost it"
                        } else {
                            ""
                        },
                        self.cfg.presence_ttl / 3,
                    );
                }
            }
            _ => {
                if let Some(n) = self.claim_failures.hit(Instant::now()) {
                    log::warn!(
                        "hub {}: redis did not take the node name claim ({n} time(s)): {value}",
                        self.node()
                    );
                }
            }
        }
    }

    /// The name is ours (again): erase what this node had published,
    /// publish what it has now, and listen.
    fn went_live(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        log::info!(
            "hub {}: connected to redis at {}{}",
            self.node(),
            self.redis.shown,
            if dropped > 0 {
                format!(" ({dropped} send(s) for other nodes were dropped meanwhile)")
            } else {
                String::new()
            }
        );
        self.republish();
        self.subscribe_all();
    }

    fn subscribe(&self, channels: &[Vec<u8>], on: bool) {
        if channels.is_empty() || self.state() != state::LIVE {
            return;
        }
        if let Some(sub) = self.sub.get() {
            let name = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
            // Down: the channel set is applied when it reconnects.
            let _ = sub.send(&Cmd::new(name).args(channels.iter().map(Vec::as_slice)));
        }
    }

    fn changed(&self, change: &Change) {
        let node = self.node();
        match change {
            Change::UidOnline(uid) => {
                self.fire(&Cmd::new("SADD").arg(self.key(&["uidnodes", uid])).arg(node));
                self.fire(
                    &Cmd::new("SADD")
                        .arg(self.key(&["nodeuids", node]))
                        .arg(uid.as_str()),
                );
                self.listen(Target::Uid(uid.clone()), true);
            }
            Change::UidOffline(uid) => {
                self.fire(&Cmd::new("SREM").arg(self.key(&["uidnodes", uid])).arg(node));
                self.fire(
                    &Cmd::new("SREM")
                        .arg(self.key(&["nodeuids", node]))
                        .arg(uid.as_str()),
                );
                self.listen(Target::Uid(uid.clone()), false);
            }
            Change::GroupCount(group, n) => {
                let counts = self.key(&["groupcount", group]);
                let groups = self.key(&["nodegroups", node]);
                if *n > 0 {
                    self.fire(&Cmd::new("HSET").arg(counts).arg(node).arg(*n as u64));
                    self.fire(&Cmd::new("SADD").arg(groups).arg(group.as_str()));
                } else {
                    self.fire(&Cmd::new("HDEL").arg(counts).arg(node));
                    self.fire(&Cmd::new("SREM").arg(groups).arg(group.as_str()));
                }
                self.listen(Target::Group(group.clone()), *n > 0);
            }
            Change::GroupUidIn(group, uid) => {
                let key = self.key(&["groupuids", group, node]);
                self.fire(&Cmd::new("SADD").arg(key).arg(uid.as_str()));
            }
            Change::GroupUidOut(group, uid) => {
                let key = self.key(&["groupuids", group, node]);
                self.fire(&Cmd::new("SREM").arg(key).arg(uid.as_str()));
            }
        }
    }

    /// Starts or stops listening to a uid's or group's channel.
    fn listen(&self, target: Target, on: bool) {
        let channel = self.channel(&target);
        let changed = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            if on {
                channels.insert(channel.clone())
            } else {
                channels.remove(&channel)
            }
        };
        if changed {
            self.subscribe(&[channel], on);
        }
    }

    /// Erases what this node had published, then publishes what it has
    /// now.
    fn republish(&self) {
        let ns = self.ns();
        let node = self.node();
        self.fire(&Cmd::new("EVAL").arg(RESET_NODE).arg(0u64).arg(ns).arg(node));
        self.fire(&Cmd::new("SADD").arg(self.key(&["nodes"])).arg(node));
        let Some(snapshot) = self.delivery.get().map(Delivery::snapshot) else {
            return;
        };
        for uid in &snapshot.uids {
            self.fire(&Cmd::new("SADD").arg(self.key(&["uidnodes", uid])).arg(node));
        }
        if !snapshot.uids.is_empty() {
            self.fire(
                &Cmd::new("SADD")
                    .arg(self.key(&["nodeuids", node]))
                    .args(snapshot.uids.iter().map(String::as_str)),
            );
        }
        for (group, n, uids) in &snapshot.groups {
            self.fire(
                &Cmd::new("HSET")
                    .arg(self.key(&["groupcount", group]))
                    .arg(node)
                    .arg(*n as u64),
            );
            self.fire(
                &Cmd::new("SADD")
                    .arg(self.key(&["nodegroups", node]))
                    .arg(group.as_str()),
            );
            if !uids.is_empty() {
                self.fire(
                    &Cmd::new("SADD")
                        .arg(self.key(&["groupuids", group, node]))
                        .args(uids.iter().map(String::as_str)),
                );
            }
        }
    }

    /// A reply of the command connection.
    fn reply(&self, value: Value) {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match waiter {
            Some(Waiter::Reply(slot)) => slot.fill(Some(value)),
            Some(Waiter::Claim) => self.claim_reply(value),
            Some(Waiter::Discard) | None => {
                if let Value::Error(e) = &value {
                    if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        log::warn!("hub {}: redis refused a command: {e}", self.node());
                    }
                }
            }
        }
    }

    /// The command connection broke: nothing in flight will be answered.
    fn lost(&self) {
        if let Some(was) = self.set_state(state::DOWN) {
            if was != state::DOWN {
                log::warn!(
                    "hub {}: lost redis at {}; local delivery goes on, sends for other nodes are dropped until it is back",
                    self.node(),
                    self.redis.shown
                );
            }
        }
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            if let Waiter::Reply(slot) = w {
                slot.fill(None);
            }
        }
    }

    /// The command connection is (back) up: claim the name first.
    fn connected(&self) {
        self.errors.store(0, Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
        if self.set_state(state::CLAIMING).is_some() {
            self.claim();
        }
    }

    /// An error on a connection to Redis: a failed connect is expected
    /// while Redis is down (the outage is logged once); anything else (a
    /// reply that is not RESP, a password Redis refuses) is logged at
    /// warn, once per outage.
    fn connection_error(&self, e: &ConnError) {
        match e {
            ConnError::ConnectFailed { .. } => log::debug!("hub {}: redis: {e}", self.node()),
            _ => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!("hub {}: redis at {}: {e}", self.node(), self.redis.shown);
                }
            }
        }
    }

    /// A message on the subscriber connection. Delivered only if the node
    /// is on the cluster, every field is within the hub's limits, and its
    /// target is the one of the channel it came on: a uid's channel
    /// reaches that uid only, a group's that group, `all` everyone, this
    /// node's channel one connection of this node. Anything else is
    /// refused, counted ([`HubStats::rejected`](crate::HubStats::rejected))
    /// and logged once per episode.
    fn published(&self, value: &Value) {
        let Some(ps) = value.as_pubsub() else {
            return;
        };
        let Some(d) = self.delivery.get() else {
            return;
        };
        let (channel, payload) = match ps {
            PubSub::Message {
                channel,
                payload,
                sharded: false,
            } => (channel, payload),
            PubSub::Subscription { .. } => return,
            other => {
                let channel = other.channel().unwrap_or_default();
                return self.refuse(d, channel, Refused::NotAMessage);
            }
        };
        if self.state() != state::LIVE {
            return;
        }
        let limits = d.limits();
        let msg = match wire::decode(payload, &limits) {
            Ok(msg) => msg,
            Err(why) => return self.refuse(d, channel, why),
        };
        if !self.channel_is(channel, &msg.target) {
            return self.refuse(d, channel, Refused::WrongChannel);
        }
        if msg.origin == self.node() {
            // Our own publish: delivered locally when it was sent.
            return;
        }
        d.deliver(&msg.target, &msg.except, msg.bytes);
    }

    fn refuse(&self, d: &Delivery, channel: &[u8], why: Refused) {
        d.rejected();
        if let Some(n) = self.refusals.hit(Instant::now()) {
            let shown: String = channel
                .iter()
                .take(96)
                .flat_map(|b| std::ascii::escape_default(*b))
                .map(char::from)
                .collect();
            log::warn!(
                "hub {}: refused {n} message(s) from redis, the last on channel {shown}: {why} \
                 (whoever can publish on this redis can reach this node's users: see \
                 docs/hub.md, Security)",
                self.node()
            );
        }
    }

    fn subscribe_all(&self) {
        if self.state() != state::LIVE {
            return;
        }
        let mut channels: Vec<Vec<u8>> = vec![
            self.channel(&Target::All),
            self.channel(&Target::Conn(GlobalConnId::new(self.node(), 0))),
        ];
        channels.extend(
            self.channels
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .cloned(),
        );
        for chunk in channels.chunks(1024) {
            self.subscribe(chunk, true);
        }
    }

    /// Makes one of the two connections (`cmd` or `sub`).
    fn connection(
        &self,
        role: &str,
        on_connect: OnConnect,
        on_message: OnValue,
        on_close: OnClose,
        this: &Arc<Shared>,
    ) -> Result<Connection<Resp>, HubError> {
        // The connection authenticates and names itself first (`CLIENT
        // LIST` shows `ns-node-cmd` and `ns-node-sub`): `on_connect`, and
        // so "connected", come only once Redis answered, not when some
        // server took the TCP connection.
        let mut client = self.redis.client(&self.client_name(role))?;
        client
            .auto_reconnect(self.cfg.reconnect.clone())
            .keep_unsent(false);
        client.on_connect(move |c| on_connect(c));
        client.on_message(move |_, v| on_message(v));
        client.on_close(move |_, _| on_close());
        let w = this.clone();
        client.on_error(move |_, e| w.connection_error(e));
        client
            .connect()
            .map_err(|e| HubError::Config(format!("{}: {e}", self.redis.shown)))
    }
}

impl Backplane for RedisBackplane {
    fn start(&self, delivery: Delivery) {
        let s = &self.shared;
        let _ = s.delivery.set(delivery);
        let (a, b, c) = (s.clone(), s.clone(), s.clone());
        let cmd = s.connection(
            "cmd",
            Box::new(move |conn| {
                conn.set_max_package_size(MAX_REPLY);
                a.connected()
            }),
            Box::new(move |v| b.reply(v)),
            Box::new(move || c.lost()),
            s,
        );
        let (a, b) = (s.clone(), s.clone());
        let sub = s.connection(
            "sub",
            Box::new(move |conn| {
                // What a node of the hub's limits publishes, no more.
                if let Some(d) = a.delivery.get() {
                    conn.set_max_package_size(d.limits().max_frame(a.ns().len()));
                }
                a.subscribe_all()
            }),
            Box::new(move |v| b.published(&v)),
            Box::new(|| {}),
            s,
        );
        match (cmd, sub) {
            (Ok(cmd), Ok(sub)) => {
                let _ = s.cmd.set(cmd);
                let _ = s.sub.set(sub);
            }
            (Err(e), _) | (_, Err(e)) => {
                log::error!("hub {}: cannot start the redis backplane: {e}", s.node());
                return;
            }
        }
        let every = s.cfg.presence_ttl / 3;
        let live = s.clone();
        if let Err(e) = Timer::add(every, move || live.claim()) {
            log::error!("hub {}: no liveness timer: {e}", s.node());
        }
    }

    fn stop(&self) {
        let s = &self.shared;
        let was = s.state.swap(state::STOPPED, Ordering::AcqRel);
        if matches!(was, state::CLAIMING | state::LIVE | state::TAKEN) {
            // Erase this node's presence and free its name, if it still
            // holds it: a restart under the same name need not wait.
            s.send(
                &Cmd::new("EVAL")
                    .arg(RELEASE)
                    .arg(0u64)
                    .arg(s.ns())
                    .arg(s.node())
                    .arg(s.instance.as_str()),
                Waiter::Discard,
            );
        }
    }

    fn publish(&self, target: &Target, except: &[GlobalConnId], bytes: &[u8]) -> bool {
        let s = &self.shared;
        let Some(payload) = wire::encode(s.node(), target, except, bytes) else {
            return false;
        };
        let cmd = Cmd::new("PUBLISH")
            .arg(s.channel(target))
            .arg(payload.as_slice());
        if s.fire(&cmd) {
            return true;
        }
        if s.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            log::warn!(
                "hub {}: off the cluster (redis down or the node name not held): sends for other nodes are dropped (counted)",
                s.node()
            );
        }
        false
    }

    fn changed(&self, change: &Change) {
        self.shared.changed(change);
    }

    fn query(&self, query: Query) -> BoxFuture<Option<u64>> {
        let s = self.shared.clone();
        Box::pin(async move {
            let ns = s.ns().to_owned();
            let cmd = match &query {
                Query::UidOnline(uid) => Cmd::new("EVAL")
                    .arg(UID_ONLINE)
                    .arg(1u64)
                    .arg(s.key(&["uidnodes", uid]))
                    .arg(ns),
                Query::UidCount => Cmd::new("EVAL")
                    .arg(UID_COUNT)
                    .arg(1u64)
                    .arg(s.key(&["nodes"]))
                    .arg(ns),
                Query::GroupCount(group) => Cmd::new("EVAL")
                    .arg(GROUP_COUNT)
                    .arg(1u64)
                    .arg(s.key(&["groupcount", group]))
                    .arg(ns),
            };
            match s.ask(cmd).await? {
                Value::Integer(n) => u64::try_from(n).ok(),
                other => {
                    log::debug!("hub: unexpected answer to {query:?}: {other}");
                    None
                }
            }
        })
    }

    fn group_uids(&self, group: &str) -> BoxFuture<Option<Vec<String>>> {
        let s = self.shared.clone();
        let group = group.to_owned();
        Box::pin(async move {
            let cmd = Cmd::new("EVAL")
                .arg(GROUP_UIDS)
                .arg(1u64)
                .arg(s.key(&["groupcount", &group]))
                .arg(s.ns())
                .arg(group.as_str());
            let reply = s.ask(cmd).await?;
            let items = reply.into_array()?;
            Some(
                items
                    .into_iter()
                    .filter_map(|v| v.into_bytes())
                    .filter_map(|b| String::from_utf8(b).ok())
                    .collect(),
            )
        })
    }
}
