"""What the operator routes (`api.routes.admin`) read, from where the other processes already
write it: model versions and gate decisions (`core.model_version`), item windows, trending and
applied offsets (the stream workers' keys, `core.keys`), and Kafka's own offsets and the
dead-letter topic. Nothing here writes.

Kafka is read with a short-lived consumer and admin client per call: these are operator reads,
polled every few seconds by the console at most, and a client held for them would hold
connections (and a metadata refresh loop) for the whole life of every API process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorNotAvailableError, GroupIdNotFound

from api import catalog
from api.admin_models import (
    ArchiveLag,
    DeadLetters,
    DeadLetterSummary,
    EventRates,
    Freshness,
    ItemDetail,
    ModelVersionInfo,
    ModelVersions,
    PartitionLag,
)
from api.models import WindowSummary
from core import keys
from core.clients import RedisClient, kafka_common
from core.model_version import (
    active_version,
    as_bytes,
    listed_versions,
    model_meta,
    recorded_decisions,
)
from core.rules import (
    PREVIOUS_EPOCH_WEIGHT,
    TRENDING_EPOCH_HALF_LIVES,
    WINDOWS,
    trending_epoch,
    window_start,
)
from core.settings import Settings
from schemas import EVENT_TOPICS, EVENT_TYPES
from schemas.dead_letter import DeadLetter
from schemas.topics import DLQ_TOPIC, IMPRESSION_TOPIC

# The window the overview's event rates are measured over: the current 5-minute window and the
# one before it (both kept by the workers, `core.keys.item_window`).
RATE_WINDOW = "5m"
TRENDING_TOP = 100


def mlflow_run_url(tracking_uri: str | None, run_id: str | None) -> str | None:
    """The page of MLflow run `run_id` on a tracking server (its UI resolves the experiment)."""
    if not run_id or not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/runs/{run_id}"


async def model_versions(
    redis: RedisClient, decisions: int = 10, tracking_uri: str | None = None
) -> ModelVersions:
    """The kept versions, newest first, each with its metadata, the gate's decision about it
    and its MLflow run (linked on a tracking server at `tracking_uri`); and the gate's newest
    decisions."""
    active = await active_version(redis)
    kept = await listed_versions(redis)
    recent = await recorded_decisions(redis, max(decisions, 50))
    by_candidate: dict[str, dict[str, Any]] = {}
    for decision in recent:  # newest first: keep the first one seen per candidate
        candidate = decision.get("candidate")
        if isinstance(candidate, str):
            by_candidate.setdefault(candidate, decision)
    versions: list[ModelVersionInfo] = []
    for version, published_at in reversed(kept):
        meta = await model_meta(redis, version)
        info = ModelVersionInfo(
            version=version,
            active=version == active,
            published_at=published_at,
            decision=by_candidate.get(version),
        )
        if meta is not None:
            info = info.model_copy(
                update={
                    "model": meta.model,
                    "dataset": meta.dataset,
                    "trained_until": meta.trained_until,
                    "dim": meta.dim,
                    "users": meta.n_users,
                    "items": meta.n_items,
                    "params": meta.params,
                    "mlflow_run_id": meta.mlflow_run_id,
                    "mlflow_run_url": mlflow_run_url(tracking_uri, meta.mlflow_run_id),
                }
            )
        versions.append(info)
    return ModelVersions(active=active, versions=versions, decisions=recent[:decisions])


async def event_rates(redis: RedisClient, shards: int, now_s: float) -> EventRates:
    """Events per second by type over the current 5-minute window and the one before: every
    item shard's window counts summed (each event is counted in its item's shard)."""
    length = WINDOWS[RATE_WINDOW]
    current = window_start(now_s, length)
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            for start in (current, current - length):
                pipe.hgetall(keys.item_window(shard, RATE_WINDOW, start))
        replies = await pipe.execute()
    counts: dict[str, int] = dict.fromkeys(EVENT_TYPES, 0)
    for reply in replies:
        for field, count in reply.items():
            event_type = as_bytes(field).decode().split(":", 1)[0]
            counts[event_type] = counts.get(event_type, 0) + int(count)
    span = max(now_s - (current - length), 1.0)
    return EventRates(
        window_s=round(span, 3),
        per_s={kind: round(n / span, 4) for kind, n in counts.items()},
        counts=counts,
    )


async def applied_offsets(redis: RedisClient, shards: int) -> dict[tuple[str, int], int]:
    """{(topic, partition): the highest offset any item shard has counted} (the workers record
    it with each write, `core.keys.shard_applied`)."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in range(shards):
            pipe.hgetall(keys.shard_applied(shard))
        replies = await pipe.execute()
    highest: dict[tuple[str, int], int] = {}
    for reply in replies:
        for raw_slot, raw_offset in reply.items():
            slot = as_bytes(raw_slot).decode()
            where = (keys.slot_topic(slot), int(slot.rsplit(":", 1)[1]))
            highest[where] = max(highest.get(where, -1), int(raw_offset))
    return highest


async def item_detail(
    redis: RedisClient, item_id: str, settings: Settings, now_s: float
) -> ItemDetail:
    """The active version's payload of the item, its trending score and rank, and its window
    counts (current and previous window of each length)."""
    version = await active_version(redis)
    shard = keys.item_shard(item_id, settings.redis_item_shards)
    half_life = settings.stream_trending_half_life_s
    epoch = trending_epoch(now_s, half_life)
    slots: list[tuple[str, int]] = []
    for name, length in WINDOWS.items():
        start = window_start(now_s, length)
        slots += [(name, start), (f"{name}_prev", start - length)]
    fields = [f"{kind}:{item_id}" for kind in EVENT_TYPES]
    async with redis.pipeline(transaction=False) as pipe:
        if version is not None:
            pipe.hget(keys.item_payloads(version), item_id)
        pipe.zscore(keys.trending(shard, epoch), item_id)
        pipe.zscore(keys.trending(shard, epoch - 1), item_id)
        for slot, start in slots:
            pipe.hmget(keys.item_window(shard, slot.removesuffix("_prev"), start), fields)
        replies = list(await pipe.execute())
    payload_raw = replies.pop(0) if version is not None else None
    current, previous = replies[0], replies[1]
    # Stored scores grow with time within an epoch (`core.rules.trending_increment`): brought
    # back to now, the score is the count decayed to this instant.
    raw_score = float(current or 0) + PREVIOUS_EPOCH_WEIGHT * float(previous or 0)
    since_epoch = now_s - epoch * TRENDING_EPOCH_HALF_LIVES * half_life
    score = raw_score * 2.0 ** (-since_epoch / half_life)
    windows: dict[str, WindowSummary] = {}
    for (slot, start), values in zip(slots, replies[2:], strict=True):
        counts = {kind: int(v) for kind, v in zip(EVENT_TYPES, values, strict=True) if v}
        windows[slot] = WindowSummary(start=start, counts=counts)
    top = await catalog.trending(
        redis, half_life, TRENDING_TOP, settings.redis_item_shards, now_s=now_s
    )
    rank = next((n for n, (item, _) in enumerate(top, 1) if item == item_id), None)
    payload: dict[str, Any] = orjson.loads(payload_raw) if payload_raw else {}
    return ItemDetail(
        item_id=item_id,
        model_version=version,
        in_model=payload_raw is not None,
        payload=payload,
        trending_score=round(score, 6),
        trending_rank=rank,
        windows=windows,
    )


class KafkaReads:
    """Kafka's side of the stream status, from one consumer and one admin client."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    async def read(
        self, applied: dict[tuple[str, int], int] | None, newest: int
    ) -> tuple[Freshness | None, DeadLetters, ArchiveLag | None]:
        timeout_ms = int(self.timeout_s * 1000)
        common = kafka_common(self.settings)
        consumer = AIOKafkaConsumer(
            **common, enable_auto_commit=False, request_timeout_ms=timeout_ms
        )
        admin = AIOKafkaAdminClient(**common, request_timeout_ms=timeout_ms)
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.gather(consumer.start(), admin.start())
                return await self._read(consumer, admin, applied, newest)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()

    async def _read(
        self,
        consumer: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        applied: dict[tuple[str, int], int] | None,
        newest: int,
    ) -> tuple[Freshness | None, DeadLetters, ArchiveLag | None]:
        partitions = {
            topic["topic"]: sorted(p["partition"] for p in topic["partitions"])
            for topic in await admin.describe_topics()
            if not topic["error_code"]
        }
        event_parts = _partitions(partitions, EVENT_TOPICS)
        dlq_parts = _partitions(partitions, [DLQ_TOPIC])
        every = event_parts + dlq_parts + _partitions(partitions, [IMPRESSION_TOPIC])
        ends: dict[TopicPartition, int] = await consumer.end_offsets(every)
        begins: dict[TopicPartition, int] = await consumer.beginning_offsets(every)
        # The last `newest` dead letters of each dead-letter partition are read first: a
        # rejected message is dealt with, though no item shard records it.
        tail = {tp: max(begins[tp], ends[tp] - newest) for tp in dlq_parts if ends[tp] > begins[tp]}
        letters_read = await _read_from(consumer, tail, ends, dlq_parts)
        letters = [_letter(record.value) for records in letters_read.values() for record in records]
        progress = None
        if applied is not None:
            progress = await self._progress(admin, event_parts, begins, applied, letters)
        # Then the first event not yet dealt with in each partition that has one.
        starts = {tp: progress[tp] for tp in event_parts if progress and progress[tp] < ends[tp]}
        records = await _read_from(consumer, starts, ends, [])
        freshness = None
        if progress is not None:
            freshness = _freshness(event_parts, ends, progress, records)
        summaries = sorted(
            (_summary(letter) for letter in letters), key=lambda x: x.rejected_at, reverse=True
        )
        dead = DeadLetters(
            count=sum(ends[tp] - begins[tp] for tp in dlq_parts), newest=summaries[:newest]
        )
        return freshness, dead, await self._archive_lag(admin, ends)

    async def _progress(
        self,
        admin: AIOKafkaAdminClient,
        parts: list[TopicPartition],
        begins: dict[TopicPartition, int],
        applied: dict[tuple[str, int], int],
        letters: list[DeadLetter | None],
    ) -> dict[TopicPartition, int]:
        """The first offset of each event partition the workers have not dealt with yet: past
        the last one an item shard recorded (applied at once, in the same write as its
        effect), the last one dead-lettered among the newest dead letters, and the workers'
        group's committed offset (which covers everything, a commit interval late)."""
        committed = await _committed(admin, self.settings.stream_group_id)
        rejected: dict[tuple[str, int], int] = {}
        for letter in letters:
            if letter is not None:
                where = (letter.source_topic, letter.source_partition)
                rejected[where] = max(rejected.get(where, -1), letter.source_offset)
        return {
            tp: max(
                applied.get((tp.topic, tp.partition), -1) + 1,
                rejected.get((tp.topic, tp.partition), -1) + 1,
                committed.get(tp, 0),
                # Not before the log's start: what retention removed cannot be read.
                begins[tp],
            )
            for tp in parts
        }

    async def _archive_lag(
        self, admin: AIOKafkaAdminClient, ends: dict[TopicPartition, int]
    ) -> ArchiveLag | None:
        """The archivers' lag from their group's committed offsets; None before any commit."""
        group = self.settings.archive_group_id
        known = await _committed(admin, group)
        if not known:
            return None
        lag = sum(max(ends.get(tp, offset) - offset, 0) for tp, offset in known.items())
        return ArchiveLag(group=group, lag=lag, partitions=len(known))


async def _committed(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets; empty when it has none."""
    try:
        committed = await admin.list_consumer_group_offsets(group)
    except (CoordinatorNotAvailableError, GroupIdNotFound):
        # No group has ever committed on this cluster (no offsets topic yet), or not this one.
        return {}
    return {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}


def _partitions(partitions: dict[str, list[int]], topics: Iterable[str]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for topic in topics for p in partitions.get(topic, ())]


async def _read_from(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    read_to_end: list[TopicPartition],
) -> dict[TopicPartition, list[Any]]:
    """From each partition of `starts`, its first record, or every record up to its end for
    the partitions of `read_to_end`. The caller's timeout bounds the wait."""
    found: dict[TopicPartition, list[Any]] = {tp: [] for tp in starts}
    if not starts:
        return found
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    whole = set(read_to_end)

    def done(tp: TopicPartition) -> bool:
        records = found[tp]
        if tp not in whole:
            return bool(records)
        return bool(records) and records[-1].offset >= ends[tp] - 1

    while not all(done(tp) for tp in starts):
        batch = await consumer.getmany(timeout_ms=200, max_records=500)
        for tp, records in batch.items():
            if not done(tp):
                found[tp].extend(r for r in records if r.offset < ends[tp])
        consumer.pause(*[tp for tp in starts if done(tp)])
    return found


def _freshness(
    parts: list[TopicPartition],
    ends: dict[TopicPartition, int],
    progress: dict[TopicPartition, int],
    records: dict[TopicPartition, list[Any]],
) -> Freshness:
    by_topic: dict[str, PartitionLag] = {}
    oldest_ms: int | None = None
    for tp in parts:
        done = min(progress[tp], ends[tp])
        lag = by_topic.setdefault(
            tp.topic, PartitionLag(topic=tp.topic, published=0, applied=0, backlog=0)
        )
        lag.published += ends[tp]
        lag.applied += done
        lag.backlog += ends[tp] - done
        for record in records.get(tp, [])[:1]:
            oldest_ms = record.timestamp if oldest_ms is None else min(oldest_ms, record.timestamp)
    pending_s = 0.0 if oldest_ms is None else max(time.time() - oldest_ms / 1000, 0.0)
    topics = list(by_topic.values())
    return Freshness(
        backlog=sum(t.backlog for t in topics),
        oldest_pending_s=round(pending_s, 3),
        topics=topics,
    )


def _letter(value: bytes | None) -> DeadLetter | None:
    try:
        return DeadLetter.model_validate_json(value or b"")
    except ValueError:
        return None


def _summary(letter: DeadLetter | None) -> DeadLetterSummary:
    if letter is None:
        return DeadLetterSummary(
            error="(not a dead letter of this format)",
            field="body",
            source_topic=DLQ_TOPIC,
            source_partition=-1,
            source_offset=-1,
            rejected_at=datetime.fromtimestamp(0, tz=UTC),
        )
    return DeadLetterSummary(
        error=letter.error,
        field=letter.field,
        source_topic=letter.source_topic,
        source_partition=letter.source_partition,
        source_offset=letter.source_offset,
        rejected_at=letter.rejected_at,
    )
