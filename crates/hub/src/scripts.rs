//! The Lua scripts the Redis backplane runs (one round trip each). Keys are
//! under the namespace; a node's liveness key `ns:node:<node>` holds the id
//! of the instance that claimed the name.

/// Live nodes holding the uid (dead ones are dropped from its set).
pub(crate) const UID_ONLINE: &str = r"
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
pub(crate) const UID_COUNT: &str = r"
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
pub(crate) const GROUP_COUNT: &str = r"
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
pub(crate) const GROUP_UIDS: &str = r"
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

/// Erases what node ARGV[2] of namespace ARGV[1] had published.
macro_rules! erase_node {
    () => {
        r"
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
"
    };
}

/// Erases what a node had published (before it publishes its state anew).
/// ARGV: namespace, node.
pub(crate) const RESET_NODE: &str = concat!(erase_node!(), "return 1\n");

/// Claims or renews the node name KEYS[1] (`ns:node:<node>`) for instance
/// ARGV[1] for ARGV[2] ms: `{1, 0}` when it is this instance's (it was
/// free, had expired, or was already ours), `{0, ms left}` when another
/// instance holds it (-1: with no expiry).
pub(crate) const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
";

/// On a graceful stop: if instance ARGV[3] still holds the name of node
/// ARGV[2] (namespace ARGV[1]), erases its presence and frees the name, so
/// a restart under the same name need not wait for it to expire.
pub(crate) const RELEASE: &str = concat!(
    "if redis.call('GET', ARGV[1] .. ':node:' .. ARGV[2]) ~= ARGV[3] then return 0 end\n",
    erase_node!(),
    "redis.call('DEL', ns .. ':node:' .. node)\nreturn 1\n"
);
