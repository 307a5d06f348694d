//! The Redis backplane: cross-node delivery on Redis pub/sub, presence in
//! Redis with a node-liveness TTL, over lubdub's own `Client<Resp>` (on the
//! event loop, reconnecting with jittered backoff; no tokio, no second
//! reactor).
//!
//! Two connections per node, both on the worker's first event loop:
//!
//! * the **command** connection publishes (pipelined: the sends of one loop
//!   turn leave in one write, and no publish waits for its reply), keeps the
//!   presence keys and the node's liveness key, and runs the queries (Lua
//!   scripts, one round trip each);
//! * the **subscriber** connection listens to `all`, this node's own
//!   channel, and the channel of every uid and group with a member here,
//!   and no other (Socket.IO's sharded adapter does the same).
//!
//! Keys, under the namespace `ns`:
//!
//! | key | what |
//! |---|---|
//! | `ns:node:<node>` | this node is alive (expires after the presence TTL unless refreshed) |
//! | `ns:nodes` | every node that ever started |
//! | `ns:uidnodes:<uid>` | nodes where the uid has a connection |
//! | `ns:nodeuids:<node>` | uids with a connection on the node |
//! | `ns:groupcount:<group>` | hash: node → members there |
//! | `ns:groupuids:<group>:<node>` | uids with a member of the group on the node |
//! | `ns:nodegroups:<node>` | groups with members on the node |
//!
//! Queries count only nodes whose liveness key exists, so a node that died
//! reads as gone within the TTL. When the command connection comes back
//! after an outage the node first erases what it had published, then
//! publishes what it has now: no stale membership survives an outage.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use event_listener::Event;
use lubdub_resp::{Cmd, PubSub, Resp, Value};
use lubdub_worker::{
    Backoff, Client, ConfigError, ConnError, Connection, Error, SendStatus, Timer,
};

use crate::registry::Change;
use crate::{wire, Backplane, BoxFuture, Delivery, GlobalConnId, Query, Target};

/// How long a query waits for Redis before the hub answers from this
/// node's own knowledge.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply a query accepts (the uids of a big group).
const MAX_REPLY: usize = 64 << 20;

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://host:port` (a database path and `Resp` settings do not
    /// apply: pub/sub is global).
    pub url: String,
    /// Prefix of every key and channel. Default `lubdub`.
    pub namespace: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// How long a silent node's presence lasts. Default 15 s; refreshed
    /// every third of it.
    pub presence_ttl: Duration,
    /// Reconnect schedule (full jitter). Default: 100 ms doubling to 5 s.
    pub reconnect: Backoff,
}

impl RedisConfig {
    /// Redis at `url` for node `node`, with the defaults.
    pub fn new(url: &str, node: &str) -> Self {
        RedisConfig {
            url: url.to_owned(),
            namespace: "lubdub".into(),
            node: node.to_owned(),
            presence_ttl: Duration::from_secs(15),
            reconnect: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                ..Backoff::default()
            },
        }
    }

    /// Sets the key and channel prefix.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.to_owned();
        self
    }

    /// Sets the node-liveness TTL.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl.max(Duration::from_secs(1));
        self
    }
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

/// What each reply of the command connection is for, oldest first.
enum Waiter {
    Discard,
    Reply(Arc<Slot>),
}

struct Shared {
    cfg: RedisConfig,
    cmd: OnceLock<Connection<Resp>>,
    sub: OnceLock<Connection<Resp>>,
    waiters: Mutex<VecDeque<Waiter>>,
    /// Channels this node listens to besides `all` and its own.
    channels: Mutex<HashSet<Vec<u8>>>,
    delivery: OnceLock<Delivery>,
    /// The command connection is down; sends for other nodes are dropped.
    down: AtomicBool,
    /// Dropped in the current outage (reported once it ends).
    dropped: AtomicU64,
    /// Error replies to fire-and-forget commands (logged once per burst).
    errors: AtomicU64,
    /// A connection error was logged in this outage.
    warned: AtomicBool,
}

type OnConnect = Box<dyn Fn(&Connection<Resp>) + Send + Sync>;
type OnValue = Box<dyn Fn(Value) + Send + Sync>;
type OnClose = Box<dyn Fn() + Send + Sync>;

/// The Redis backplane (see the module docs and docs/hub.md).
pub struct RedisBackplane {
    shared: Arc<Shared>,
}

impl RedisBackplane {
    /// A backplane to Redis as configured; it connects when the hub's
    /// plugin starts on the worker.
    pub fn new(cfg: RedisConfig) -> Result<Self, Error> {
        if cfg.node.is_empty() || cfg.node.contains(':') {
            return Err(
                ConfigError::Invalid("a hub node name is non-empty and has no ':'".into()).into(),
            );
        }
        // Fail early on a bad address.
        Client::with_protocol(cfg.url.as_str(), Resp::new())?;
        Ok(RedisBackplane {
            shared: Arc::new(Shared {
                cfg,
                cmd: OnceLock::new(),
                sub: OnceLock::new(),
                waiters: Mutex::new(VecDeque::new()),
                channels: Mutex::new(HashSet::new()),
                delivery: OnceLock::new(),
                down: AtomicBool::new(true),
                dropped: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                warned: AtomicBool::new(false),
            }),
        })
    }
}

impl Shared {
    fn ns(&self) -> &str {
        &self.cfg.namespace
    }

    fn node(&self) -> &str {
        &self.cfg.node
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

    /// Sends a command whose reply is not awaited. Returns whether it was
    /// queued (the connection is up).
    fn fire(&self, cmd: &Cmd) -> bool {
        self.send(cmd, Waiter::Discard)
    }

    fn send(&self, cmd: &Cmd, waiter: Waiter) -> bool {
        let Some(conn) = self.cmd.get() else {
            return false;
        };
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
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

    /// Sends a command and waits for its reply (`None`: down, or no answer
    /// within the query timeout).
    async fn ask(&self, cmd: Cmd) -> Option<Value> {
        let slot = Arc::new(Slot {
            value: Mutex::new(None),
            event: Event::new(),
        });
        if !self.send(&cmd, Waiter::Reply(slot.clone())) {
            return None;
        }
        let s = slot.clone();
        // Off a loop there is no timer: the reply or the connection's end
        // settles it.
        let _ = Timer::once(QUERY_TIMEOUT, move || s.fill(None));
        slot.wait().await
    }

    fn subscribe(&self, channels: &[Vec<u8>], on: bool) {
        if channels.is_empty() {
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

    /// The command connection is (back) up: erase what this node had
    /// published, publish what it has now, and say it is alive.
    fn republish(&self) {
        let ns = self.ns();
        let node = self.node();
        self.fire(&Cmd::new("EVAL").arg(RESET_NODE).arg(0u64).arg(ns).arg(node));
        self.fire(&Cmd::new("SADD").arg(self.key(&["nodes"])).arg(node));
        self.refresh_liveness();
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

    fn refresh_liveness(&self) {
        let ttl = self.cfg.presence_ttl.as_secs().max(1);
        self.fire(
            &Cmd::new("SET")
                .arg(self.key(&["node", self.node()]))
                .arg("1")
                .arg("EX")
                .arg(ttl),
        );
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
            Some(Waiter::Discard) | None => {
                if let Value::Error(e) = &value {
                    if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        log::warn!("hub: redis refused a command: {e}");
                    }
                }
            }
        }
    }

    /// The command connection broke: nothing in flight will be answered.
    fn lost(&self) {
        if !self.down.swap(true, Ordering::Relaxed) {
            log::warn!(
                "hub {}: lost redis at {}; local delivery goes on, sends for other nodes are dropped until it is back",
                self.node(),
                self.cfg.url
            );
        }
        let waiters =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for w in waiters {
            if let Waiter::Reply(slot) = w {
                slot.fill(None);
            }
        }
    }

    fn connected(&self) {
        self.down.store(false, Ordering::Relaxed);
        self.errors.store(0, Ordering::Relaxed);
        self.warned.store(false, Ordering::Relaxed);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        log::info!(
            "hub {}: connected to redis at {}{}",
            self.node(),
            self.cfg.url,
            if dropped > 0 {
                format!(" ({dropped} send(s) for other nodes were dropped meanwhile)")
            } else {
                String::new()
            }
        );
        self.republish();
    }

    /// An error on a connection to Redis: a failed connect is expected
    /// while Redis is down (the outage is logged once); anything else, a
    /// reply that is not RESP, say, is logged at warn, once per outage.
    fn connection_error(&self, e: &ConnError) {
        match e {
            ConnError::ConnectFailed { .. } => log::debug!("hub {}: redis: {e}", self.node()),
            _ => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    log::warn!("hub {}: redis at {}: {e}", self.node(), self.cfg.url);
                }
            }
        }
    }

    /// A message on the subscriber connection.
    fn published(&self, value: &Value) {
        let Some(PubSub::Message { payload, .. }) = value.as_pubsub() else {
            return;
        };
        let Some(msg) = wire::decode(payload) else {
            log::debug!("hub {}: a malformed message on a hub channel", self.node());
            return;
        };
        if msg.origin == self.node() {
            // Our own publish: delivered locally when it was sent.
            return;
        }
        if let Some(d) = self.delivery.get() {
            d.deliver(&msg.target, &msg.except, msg.bytes);
        }
    }

    fn subscribe_all(&self) {
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
}

impl Backplane for RedisBackplane {
    fn start(&self, delivery: Delivery) {
        let s = &self.shared;
        let _ = s.delivery.set(delivery);
        let make = |role: &str, on_connect: OnConnect, on_message: OnValue, on_close: OnClose| {
            // The connection names itself first (`CLIENT LIST` shows
            // `ns-node-cmd` and `ns-node-sub`): `on_connect`, and so
            // "connected", come only once Redis answered, not when some
            // server took the TCP connection.
            let name = format!("{}-{}-{role}", s.ns(), s.node());
            let resp = Resp::new().setup(Cmd::new("CLIENT").arg("SETNAME").arg(name));
            let mut client: Client<Resp> = Client::with_protocol(s.cfg.url.as_str(), resp)?;
            client
                .auto_reconnect(s.cfg.reconnect.clone())
                .keep_unsent(false)
                .connect_timeout(Duration::from_secs(3));
            client.on_connect(move |c| {
                c.set_max_package_size(MAX_REPLY);
                on_connect(c)
            });
            client.on_message(move |_, v| on_message(v));
            client.on_close(move |_, _| on_close());
            let w = s.clone();
            client.on_error(move |_, e| w.connection_error(e));
            client.connect()
        };
        let (a, b, c) = (s.clone(), s.clone(), s.clone());
        let cmd = make(
            "cmd",
            Box::new(move |_| a.connected()),
            Box::new(move |v| b.reply(v)),
            Box::new(move || c.lost()),
        );
        let (a, b) = (s.clone(), s.clone());
        let sub = make(
            "sub",
            Box::new(move |_| a.subscribe_all()),
            Box::new(move |v| b.published(&v)),
            Box::new(|| {}),
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
        if let Err(e) = Timer::add(every, move || live.refresh_liveness()) {
            log::error!("hub {}: no liveness timer: {e}", s.node());
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
                "hub {}: redis is down: sends for other nodes are dropped (counted)",
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

/// Live nodes holding the uid (dead ones are dropped from its set).
const UID_ONLINE: &str = r"
local n = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 1 then
    n = n + 1
  else
    redis.call('SREM', KEYS[1], node)
  end
end
return n
";

/// Distinct uids on the live nodes.
const UID_COUNT: &str = r"
local keys = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 1 then
    table.insert(keys, ARGV[1] .. ':nodeuids:' .. node)
  end
end
if #keys == 0 then return 0 end
return #redis.call('SUNION', unpack(keys))
";

/// Members of a group on the live nodes.
const GROUP_COUNT: &str = r"
local total = 0
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. h[i]) == 1 then
    total = total + tonumber(h[i + 1])
  end
end
return total
";

/// Uids with a member of a group on the live nodes.
const GROUP_UIDS: &str = r"
local keys = {}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  if redis.call('EXISTS', ARGV[1] .. ':node:' .. h[i]) == 1 then
    table.insert(keys, ARGV[1] .. ':groupuids:' .. ARGV[2] .. ':' .. h[i])
  end
end
if #keys == 0 then return {} end
return redis.call('SUNION', unpack(keys))
";

/// Erases what a node had published (before it publishes its state anew).
const RESET_NODE: &str = r"
local ns, node = ARGV[1], ARGV[2]
for _, g in ipairs(redis.call('SMEMBERS', ns .. ':nodegroups:' .. node)) do
  redis.call('HDEL', ns .. ':groupcount:' .. g, node)
  redis.call('DEL', ns .. ':groupuids:' .. g .. ':' .. node)
end
redis.call('DEL', ns .. ':nodegroups:' .. node)
for _, u in ipairs(redis.call('SMEMBERS', ns .. ':nodeuids:' .. node)) do
  redis.call('SREM', ns .. ':uidnodes:' .. u, node)
end
redis.call('DEL', ns .. ':nodeuids:' .. node)
return 1
";
