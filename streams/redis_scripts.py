"""Lua scripts that read and write a whole batch in one Redis command each.

A batch touches about a thousand users and as many items. Sent as one command per key, the
client spends far more time encoding arguments and parsing replies than Redis spends running
them; so each direction is one script call whose argument is a single MessagePack blob
(Redis's Lua has cmsgpack built in).

Atomicity without WATCH: every user hash carries a change counter `c`. The write script first
checks that each user's counter, and each partition's applied offset, still has the value the
read returned; if any changed (another worker during a rebalance, say), it writes nothing and
returns 0, and the batch is recomputed from fresh reads. Scripts run atomically, so check and
write cannot interleave with anyone else's.

Keys are named inside the blob rather than declared, so these scripts need a standalone Redis
(or one shard): a batch spans many hash slots anyway.
"""

from __future__ import annotations

from typing import Any

import msgpack

# ARGV[1]: msgpack [state keys, batch-vector hash key, user ids, applied-offsets key,
#                   state fields].
# Returns {applied offsets (flat field/value array), state_1 .. state_n (the state fields' values,
# nil where absent), batch vectors (one per user, nil where absent)}.
READ_BATCH = """
local req = cmsgpack.unpack(ARGV[1])
local state_keys, vectors_key, users, fields = req[1], req[2], req[3], req[5]
local out = {redis.call('HGETALL', req[4])}
for i = 1, #state_keys do
  out[i + 1] = redis.call('HMGET', state_keys[i], unpack(fields))
end
local vectors = {}
for start = 1, #users, 500 do
  local stop = math.min(start + 499, #users)
  local part = redis.call('HMGET', vectors_key, unpack(users, start, stop))
  for _, v in ipairs(part) do vectors[#vectors + 1] = v end
end
out[#state_keys + 2] = vectors
return out
"""

# ARGV[1]: msgpack [checks, writes].
#   checks: [key, field, expected value ("" = absent)]; any mismatch -> return 0, no write.
#   writes: [op, key, ttl seconds (0 = keep), flat pairs]; op is
#     "hset" (field, value ...), "hincrby" (field, increment ...), "zincrby" (member, incr ...).
WRITE_BATCH = """
local plan = cmsgpack.unpack(ARGV[1])
for _, check in ipairs(plan[1]) do
  local current = redis.call('HGET', check[1], check[2])
  if current == false then current = '' end
  if current ~= check[3] then return 0 end
end
for _, w in ipairs(plan[2]) do
  local op, key, ttl, pairs = w[1], w[2], w[3], w[4]
  if op == 'hset' then
    for start = 1, #pairs, 1000 do
      redis.call('HSET', key, unpack(pairs, start, math.min(start + 999, #pairs)))
    end
  elseif op == 'hincrby' then
    for j = 1, #pairs, 2 do redis.call('HINCRBY', key, pairs[j], pairs[j + 1]) end
  elseif op == 'zincrby' then
    for j = 1, #pairs, 2 do redis.call('ZINCRBY', key, pairs[j + 1], pairs[j]) end
  end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return 1
"""


def pack(value: Any) -> bytes:
    # Lua strings are binary-safe; Redis's cmsgpack predates the msgpack bin type.
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


class WritePlan:
    """The checks and writes of one batch, as WRITE_BATCH's argument."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, str, bytes]] = []
        self.writes: list[tuple[str, str, int, list[Any]]] = []

    def expect(self, key: str, field: str, value: bytes | None) -> None:
        """Write only if `key`'s `field` still holds `value` (None: absent)."""
        self.checks.append((key, field, value or b""))

    def add(self, op: str, key: str, ttl_s: int, pairs: list[tuple[Any, Any]]) -> None:
        if pairs:
            self.writes.append((op, key, ttl_s, [x for pair in pairs for x in pair]))

    def blob(self) -> bytes:
        return pack([self.checks, self.writes])
