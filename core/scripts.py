"""Lua scripts called by digest, many calls at a time, on one Redis or a Redis Cluster.

A batch's keys are grouped by hash slot (`slot_groups`), one call per group, and the calls are
sent in one pipeline: redis-py groups a cluster pipeline's commands by node and sends them
concurrently. Redis forgets scripts when it restarts or is flushed; a call answered NOSCRIPT is
loaded again (on every primary of a cluster) and sent once more, alone.
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


def slot_groups(redis: RedisClient, keys: Sequence[str]) -> list[list[int]]:
    """Positions of `keys` grouped so that one script call may take each group: by hash slot on
    a Redis Cluster (a call may not span slots there); all together on one Redis, which has no
    slots, so that a batch is one call instead of one per slot (the client's cost is per call)."""
    if not isinstance(redis, aioredis.RedisCluster):
        return [list(range(len(keys)))] if keys else []
    groups: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(redis.keyslot(key), []).append(position)
    return list(groups.values())


class ScriptSet:
    """Named scripts of one client, called in pipelines by their SHA-1 digest."""

    def __init__(self, redis: RedisClient, scripts: Mapping[str, str]) -> None:
        self.redis = redis
        self.sources = dict(scripts)
        self.digests = {
            name: hashlib.sha1(body.encode()).hexdigest() for name, body in scripts.items()
        }
        self._loaded = False

    async def load(self) -> None:
        """Load every script (on every primary of a cluster) before the first call, so that a
        batch's calls are not answered NOSCRIPT while Redis keeps them: after that, a call fails
        only through its own node."""
        for source in self.sources.values():
            await self.redis.script_load(source)
        self._loaded = True

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
                pipe.execute_command("EVALSHA", digest, len(call_keys), *call_keys, *args)
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
