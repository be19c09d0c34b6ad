"""Lua scripts called by digest, many calls at a time, on one Redis or a Redis Cluster.

A batch's keys are grouped by hash slot (`ScriptSet.slot_groups`), one call per group, and the
calls are sent in one pipeline: redis-py groups a cluster pipeline's commands by node and sends
them concurrently. Redis forgets scripts when it restarts or is flushed; a call answered NOSCRIPT is
loaded again (on every primary of a cluster) and sent once more, alone.

On a cluster each call is sent with the node that serves its slot, looked up here once per call:
left to itself, redis-py works a pipelined EVALSHA's slot out from every key, twice. A call that
reaches a node which no longer serves the slot (a resharding) is answered MOVED, and redis-py
sends it again the usual way, to the right node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from core.clients import RedisClient

# One call: its KEYS and its ARGV.
ScriptCall = tuple[Sequence[str], Sequence[Any]]


class SlotOf:
    """The hash slot of a key, computed once per hash tag: the keys of a batch share a few
    hundred tags at most (`core.keys`), and redis-py's `keyslot` costs microseconds a key."""

    def __init__(self, redis: aioredis.RedisCluster) -> None:
        self.redis = redis
        self._by_tag: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        start = key.find("{")
        end = key.find("}", start + 1) if start >= 0 else -1
        if end <= start + 1:  # no tag, or "{}": the whole key is hashed
            return self.redis.keyslot(key)
        tag = key[start + 1 : end]
        slot = self._by_tag.get(tag)
        if slot is None:
            slot = self._by_tag[tag] = self.redis.keyslot(key)
        return slot


class ScriptSet:
    """Named scripts of one client, called in pipelines by their SHA-1 digest."""

    def __init__(self, redis: RedisClient, scripts: Mapping[str, str]) -> None:
        self.redis = redis
        self.sources = dict(scripts)
        self.digests = {
            name: hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
            for name, body in scripts.items()
        }
        self._loaded = False
        self._slot_of = SlotOf(redis) if isinstance(redis, aioredis.RedisCluster) else None

    def slot_groups(self, keys: Sequence[str]) -> list[list[int]]:
        """Positions of `keys` grouped so that one script call may take each group: by hash
        slot on a Redis Cluster (a call may not span slots there); all together on one Redis,
        which has no slots, so that a batch is one call instead of one per slot (the client's
        cost is per call)."""
        if self._slot_of is None:
            return [list(range(len(keys)))] if keys else []
        groups: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            groups.setdefault(self._slot_of(key), []).append(position)
        return list(groups.values())

    async def load(self) -> None:
        """Load every script (on every primary of a cluster) before the first call, so that a
        batch's calls are not answered NOSCRIPT while Redis keeps them: after that, a call fails
        only through its own node."""
        for source in self.sources.values():
            await self.redis.script_load(source)
        self._loaded = True

    def _target(self, call_keys: Sequence[str]) -> dict[str, Any]:
        """On a cluster, the node of the call's slot (redis-py's `target_nodes`)."""
        if self._slot_of is None or not call_keys:
            return {}
        slot = self._slot_of(call_keys[0])
        assert isinstance(self.redis, aioredis.RedisCluster)
        return {"target_nodes": self.redis.nodes_manager.get_node_from_slot(slot)}

    async def run(self, name: str, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, in order. Errors other than NOSCRIPT propagate."""
        replies, _ = await self.run_with(name, calls, ())
        return replies

    async def run_with(
        self, name: str, calls: Sequence[ScriptCall], commands: Sequence[Sequence[Any]]
    ) -> tuple[list[Any], list[Any]]:
        """The calls' replies and those of plain `commands` sent in the same pipeline (one round
        trip for both). Errors other than NOSCRIPT propagate."""
        if not calls and not commands:
            return [], []
        if not self._loaded:
            await self.load()
        digest = self.digests[name]
        async with self.redis.pipeline(transaction=False) as pipe:
            for call_keys, args in calls:
                pipe.execute_command(
                    "EVALSHA", digest, len(call_keys), *call_keys, *args,
                    **self._target(call_keys),
                )  # fmt: skip
            for command in commands:
                pipe.execute_command(*command)
            everything: list[Any] = await pipe.execute(raise_on_error=False)
        replies, command_replies = everything[: len(calls)], everything[len(calls) :]
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.redis.script_load(self.sources[name])
            async with self.redis.pipeline(transaction=False) as pipe:
                for n in missing:
                    call_keys, args = calls[n]
                    pipe.execute_command("EVALSHA", digest, len(call_keys), *call_keys, *args)
                for n, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                    replies[n] = reply
        for reply in everything[len(calls) :] + replies:
            if isinstance(reply, Exception):
                raise reply
        return replies, command_replies
