"""The Lua scripts that read and write a batch: users' states, and item shards' counts.

Cluster-safe: each call declares the keys it touches (KEYS). On a Redis Cluster a batch makes one
call per hash slot (a user's `{u<t>}` keys; an item shard's `{i:<s>}` keys), grouped by node
and sent concurrently; one Redis has no slots, and there a batch's users go in one call each way,
as the client spends far more time encoding commands and parsing replies than Redis spends
running them (`core.scripts.ScriptSet.slot_groups`).

Atomicity without WATCH: each call first checks what the batch's plan was computed from (a
user's change counter `c`, a shard's applied offsets); if any changed (another worker during a
rebalance, say), it writes nothing and returns 0, and that user or shard is recomputed from
fresh reads. Scripts run atomically, so check and write cannot interleave with anyone else's.
"""

from __future__ import annotations

from typing import Any

import msgpack

# KEYS: users' state keys. ARGV: format 1's hash fields (`core.user_state.LEGACY_FIELDS`).
# Returns, in KEYS order, each user's packed state (format 2), or the values of those fields
# where the key is still a format-1 hash (nil where absent), or nil for a new user.
READ_USERS = """
local out = {}
for i = 1, #KEYS do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) == 'table' and value.err then
    value = redis.call('HMGET', KEYS[i], unpack(ARGV))
  end
  out[i] = value
end
return out
"""

# KEYS: users' state keys. ARGV[1]: TTL in seconds; ARGV[2]: msgpack, one entry per key:
# [its change token as read ("" = absent), its packed state]. The token is the packed state's
# first 4 bytes (the change counter), or a format-1 hash's `c` field. Returns one status per
# key: 1 written, 0 its counter had moved (that user is not written).
WRITE_USERS = """
local ttl = tonumber(ARGV[1])
local plan = cmsgpack.unpack(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local current = redis.pcall('GETRANGE', KEYS[i], 0, 3)
  if type(current) == 'table' and current.err then
    current = redis.call('HGET', KEYS[i], 'c')
    if current == false then current = '' end
  end
  if current == plan[i][1] then
    redis.call('SET', KEYS[i], plan[i][2], 'EX', ttl)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""

# KEYS[1]: the shard's applied-offsets hash; KEYS[2..]: the shard's window hashes and trending
# sets. ARGV[1]: msgpack [checks, writes, offsets].
#   checks: [field of KEYS[1], expected value ("" = absent)]; any mismatch -> return 0, no write.
#   writes: [op, index into KEYS, ttl seconds (0 = keep), flat pairs, keep]; op is
#     "hincrby" (field, increment ...), "zincrby" (member, increment ...), or "ztop": zincrby,
#     then, once the set holds more than 2 x keep members, only its `keep` highest are kept
#     (trimmed in bulk, not at every write).
#   offsets: flat [field, offset ...] written to KEYS[1] last.
WRITE_SHARD = """
local plan = cmsgpack.unpack(ARGV[1])
for _, check in ipairs(plan[1]) do
  local current = redis.call('HGET', KEYS[1], check[1])
  if current == false then current = '' end
  if current ~= check[2] then return 0 end
end
for _, w in ipairs(plan[2]) do
  local op, key, ttl, pairs = w[1], KEYS[w[2]], w[3], w[4]
  if op == 'hincrby' then
    for j = 1, #pairs, 2 do redis.call('HINCRBY', key, pairs[j], pairs[j + 1]) end
  elseif op == 'zincrby' or op == 'ztop' then
    for j = 1, #pairs, 2 do redis.call('ZINCRBY', key, pairs[j + 1], pairs[j]) end
    if op == 'ztop' and redis.call('ZCARD', key) > 2 * w[5] then
      redis.call('ZREMRANGEBYRANK', key, 0, -(w[5] + 1))
    end
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
if #plan[3] > 0 then redis.call('HSET', KEYS[1], unpack(plan[3])) end
return 1
"""


def pack(value: Any) -> bytes:
    # Lua strings are binary-safe; Redis's cmsgpack predates the msgpack bin type.
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


class ShardPlan:
    """The checks and writes of one item shard for one batch, as WRITE_SHARD's keys and
    argument."""

    def __init__(self, applied_key: str) -> None:
        self.keys: list[str] = [applied_key]
        self.checks: list[tuple[str, bytes]] = []
        self.writes: list[tuple[str, int, int, list[Any], int]] = []
        self.offsets: list[Any] = []

    def expect(self, slot: str, value: bytes | None) -> None:
        """Write only if the shard's applied offset of `slot` is still `value` (None: absent)."""
        self.checks.append((slot, value or b""))

    def add(
        self, op: str, key: str, ttl_s: int, pairs: list[tuple[Any, Any]], keep: int = 0
    ) -> None:
        if pairs:
            self.keys.append(key)
            flat = [x for pair in pairs for x in pair]
            self.writes.append((op, len(self.keys), ttl_s, flat, keep))

    def record(self, slot: str, offset: int) -> None:
        self.offsets += [slot, offset]

    def blob(self) -> bytes:
        return pack([self.checks, self.writes, self.offsets])
