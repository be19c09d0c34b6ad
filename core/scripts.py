"""Lua scripts called by digest, many calls at a time, on one Redis or a Redis Cluster.

A batch makes one call per user or item shard (each touching one hash slot, `core.keys`), sent
in one pipeline: redis-py groups a cluster pipeline's commands by node and sends them
concurrently. Redis forgets scripts when it restarts or is flushed; a call answered NOSCRIPT is
loaded again (on every primary of a cluster) and sent once more, alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from core.clients import RedisClient

# One call: its KEYS and its ARGV.
ScriptCall = tuple[Sequence[str], Sequence[Any]]


class ScriptSet:
    """Named scripts of one client, called in pipelines by their SHA-1 digest."""

    def __init__(self, redis: RedisClient, scripts: Mapping[str, str]) -> None:
        self.redis = redis
        self.sources = dict(scripts)
        self.digests = {
            name: hashlib.sha1(body.encode()).hexdigest() for name, body in scripts.items()
        }

    async def run(self, name: str, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, in order. Errors other than NOSCRIPT propagate."""
        if not calls:
            return []
        digest = self.digests[name]
        async with self.redis.pipeline(transaction=False) as pipe:
            for call_keys, args in calls:
                pipe.execute_command("EVALSHA", digest, len(call_keys), *call_keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.redis.script_load(self.sources[name])
            async with self.redis.pipeline(transaction=False) as pipe:
                for n in missing:
                    call_keys, args = calls[n]
                    pipe.execute_command("EVALSHA", digest, len(call_keys), *call_keys, *args)
                for n, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                    replies[n] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
