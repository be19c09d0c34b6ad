"""The experiments' registry and counters in Redis: which experiment runs, which ran, and what
their arms achieved.

Who writes: `recsys experiments create|stop` and the API at start (`register_configured`, for
`RECSYS_EXPERIMENT`) write the registry; the stream worker writes the counters
(`streams.applier`, with `core.attribution`'s credits). Who reads: the API (the running
experiment, every `RECSYS_API_EXPERIMENT_REFRESH_S`; reports) and the CLI (reports).

One experiment runs at a time: two that shared users would each change what the other
measures. Starting one is a single script over the registry and the running id (one slot), so
two operators cannot both start one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from core import keys
from core.clients import RedisClient
from core.experiments import Experiment, ExperimentError, experiment_from_json, experiment_to_json
from core.model_version import as_bytes, listed_versions

# KEYS: registry, running id. ARGV: id, record. Refuses a known id or a running experiment.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
local running = redis.call('GET', KEYS[2])
if running then return 'running:' .. running end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 'ok'
"""
# KEYS: registry, running id. ARGV: id, the record stopped. Only the running one stops.
_STOP = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'not_running' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 'ok'
"""


class ExperimentConflictError(ExperimentError):
    """The registry refuses the change; the message says why and what to do."""


@dataclass(frozen=True)
class Registered:
    experiment: Experiment
    created_s: float
    stopped_s: float | None = None

    @property
    def running(self) -> bool:
        return self.stopped_s is None

    def record(self) -> str:
        return json.dumps(
            {
                "definition": json.loads(experiment_to_json(self.experiment)),
                "created_s": self.created_s,
                "stopped_s": self.stopped_s,
            }
        )

    @classmethod
    def from_record(cls, raw: bytes | str) -> Registered:
        found = json.loads(raw)
        return cls(
            experiment_from_json(json.dumps(found["definition"])),
            float(found["created_s"]),
            None if found.get("stopped_s") is None else float(found["stopped_s"]),
        )


async def create(redis: RedisClient, experiment: Experiment, now_s: float) -> Registered:
    """Register `experiment` and run it. An arm may only pin a version that is kept."""
    pinned = {arm.params["version"] for arm in experiment.arms if "version" in arm.params}
    if pinned:
        kept = dict(await listed_versions(redis))
        missing = sorted(pinned - kept.keys())
        if missing:
            raise ExperimentConflictError(
                f"arms pin model versions that are not kept: {missing}; kept: "
                f"{sorted(kept) or 'none'} (`recsys models list`)"
            )
    registered = Registered(experiment, now_s)
    reply = as_bytes(
        await redis.eval(
            _CREATE,
            2,
            keys.EXPERIMENT_REGISTRY,
            keys.RUNNING_EXPERIMENT,
            experiment.id,
            registered.record(),
        )
    ).decode()
    if reply == "exists":
        raise ExperimentConflictError(
            f"an experiment {experiment.id!r} exists already (ids are never reused, so that "
            "its counters stay its own): pick another id"
        )
    if reply.startswith("running:"):
        running = reply.removeprefix("running:")
        raise ExperimentConflictError(
            f"experiment {running!r} is running; one runs at a time: "
            f"`recsys experiments stop {running}` first"
        )
    return registered


async def stop(redis: RedisClient, experiment_id: str, now_s: float) -> Registered:
    """Stop the running experiment `experiment_id`; its counters stay for its report."""
    found = await registered(redis, experiment_id)
    if found is None:
        raise ExperimentConflictError(
            f"no experiment {experiment_id!r}: see `recsys experiments list`"
        )
    stopped = Registered(found.experiment, found.created_s, now_s)
    reply = as_bytes(
        await redis.eval(
            _STOP,
            2,
            keys.EXPERIMENT_REGISTRY,
            keys.RUNNING_EXPERIMENT,
            experiment_id,
            stopped.record(),
        )
    ).decode()
    if reply != "ok":
        raise ExperimentConflictError(f"experiment {experiment_id!r} is not running")
    return stopped


async def registered(redis: RedisClient, experiment_id: str) -> Registered | None:
    raw = await redis.hget(keys.EXPERIMENT_REGISTRY, experiment_id)
    return Registered.from_record(as_bytes(raw)) if raw is not None else None


async def all_registered(redis: RedisClient) -> list[Registered]:
    """Every experiment ever registered, newest first."""
    raw = await redis.hgetall(keys.EXPERIMENT_REGISTRY)
    found = [Registered.from_record(as_bytes(record)) for record in raw.values()]
    return sorted(found, key=lambda r: -r.created_s)


async def running(redis: RedisClient) -> Experiment | None:
    """The experiment answers run now, if any."""
    experiment_id = await redis.get(keys.RUNNING_EXPERIMENT)
    if experiment_id is None:
        return None
    found = await registered(redis, as_bytes(experiment_id).decode())
    return found.experiment if found is not None and found.running else None


async def register_configured(redis: RedisClient, experiment: Experiment, now_s: float) -> str:
    """Run the configured experiment (`RECSYS_EXPERIMENT`) unless it is known already (running,
    or stopped by an operator: a restart must not start it again) or another one runs. Says
    which, for the log."""
    if await registered(redis, experiment.id) is not None:
        return "known"
    try:
        await create(redis, experiment, now_s)
    except ExperimentConflictError as exc:
        return "exists" if "exists" in str(exc) else f"refused: {exc}"
    return "started"


# Counts of one experiment: time bucket start -> (variant, outcome) -> count.
Counts = dict[int, dict[tuple[str, str], int]]


async def read_counts(redis: RedisClient, experiment_id: str) -> Counts:
    """Every shard's and bucket's counters of `experiment_id`, summed per bucket (a SCAN: for
    reports, not for the request path)."""
    found: list[Any] = [
        key
        async for key in redis.scan_iter(
            match=keys.experiment_counts_pattern(experiment_id), count=1000
        )
    ]
    counts: Counts = defaultdict(lambda: defaultdict(int))
    if not found:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for key in found:
            pipe.hgetall(key)
        replies = await pipe.execute()
    for key, fields in zip(found, replies, strict=True):
        bucket = int(as_bytes(key).decode().rsplit(":", 1)[1])
        for name, value in fields.items():
            variant, outcome = as_bytes(name).decode().rsplit(":", 1)
            counts[bucket][variant, outcome] += int(value)
    return {bucket: dict(arms) for bucket, arms in sorted(counts.items())}
