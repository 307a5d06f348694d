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

/// Publishes a message of a channel with history, in one round trip: the
/// next offset of the channel, the message into its stream, the TTLs, and
/// the message (its position written in) to the channel's subscribers.
///
/// KEYS: the stream `ns:hist:<kind>:<name>`, the channel's meta hash
/// `ns:histmeta:<kind>:<name>` (`e`: epoch, `o`: last offset).
/// ARGV: the pub/sub channel, the wire head (version 2, origin, target),
/// the wire exceptions, the message, an epoch (16 hex digits, random) to
/// start with if the channel has no history (none yet, or lost), the
/// stream's MAXLEN, the TTL in ms.
///
/// The stream's entry ids are `0-OFFSET`; each holds `d` (the message)
/// and `t` (Redis's time in ms). Returns `{epoch, offset}`.
pub(crate) const PUBLISH_HISTORY: &str = r"
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  e = ARGV[5]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', e, 'o', 0)
end
local o = redis.call('HINCRBY', KEYS[2], 'o', 1)
local t = redis.call('TIME')
local ms = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local id = string.format('0-%d', o)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], id, 'd', ARGV[4], 't', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
local pos = e .. ':' .. string.format('%d', o)
redis.call('PUBLISH', ARGV[1], ARGV[2] .. string.char(#pos) .. pos .. ARGV[3] .. ARGV[4])
return {e, o}
";

/// Reads a channel's history after an offset. KEYS: the stream, the meta
/// hash. ARGV: the offset (exclusive), the most entries, the most age in
/// ms. Returns `{epoch or '', last offset, now in ms, {{offset, message,
/// ms}...}}`; entries older than the age are left out (the caller sees a
/// hole).
pub(crate) const READ_HISTORY: &str = r"
local e = redis.call('HGET', KEYS[2], 'e')
local o = redis.call('HGET', KEYS[2], 'o')
if not e then return {'', 0, 0, {}} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = string.format('0-%d', tonumber(ARGV[1]) + 1)
local out = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[2])) do
  local seq = string.match(entry[1], '^0%-(%d+)$')
  local f = entry[2]
  local d, ms = nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'd' then d = f[i + 1] elseif f[i] == 't' then ms = tonumber(f[i + 1]) end
  end
  if seq and d and ms and now - ms < tonumber(ARGV[3]) then
    table.insert(out, {tonumber(seq), d, ms})
  end
end
return {e, tonumber(o), now, out}
";
