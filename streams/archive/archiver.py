"""The archiver: consumes the event topics and appends every valid event to the archive's Delta
table once (`core.archive` says how the table proves it).

A batch is written when it holds `RECSYS_ARCHIVE_BATCH_EVENTS` events or its oldest waited
`RECSYS_ARCHIVE_BATCH_SECONDS`, in one commit that records the offsets it covers; Kafka's
committed offsets follow, for lag and restarts, but are not what exactly-once rests on. Skipped,
and counted: invalid messages (the worker dead-letters them), redeliveries (at or below the
offset the table records), and duplicate publishes of an event id archived within
`RECSYS_ARCHIVE_DEDUP_WINDOW_S` (seeded at start from the table's newest files).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord
from aiokafka import TopicPartition as KafkaPartition
from aiokafka.errors import CommitFailedError, KafkaError

from core.clients import kafka_common
from core.settings import Settings
from schemas.topics import EVENT_TOPICS, IMPRESSION_TOPIC
from streams.archive import metrics
from streams.archive.recent_ids import RecentIds
from streams.archive.rows import Rows, decoded
from streams.archive.table import ArchiveTable, TopicPartition

log = logging.getLogger(__name__)

# Ids kept for duplicate detection, at most: 16 bytes an id once frozen (`RecentIds`), about
# 16 MB at the limit, measured with tracemalloc (a set of id strings took about 190 MB, which
# the one-hour soak saw filling for 17 minutes at 1,000 events/s).
DEDUP_LIMIT = 1_000_000
RETRY_S = (0.5, 1, 2, 5, 10)


@dataclass
class BatchOutcome:
    rows: int = 0
    invalid: int = 0
    duplicates: int = 0
    redelivered: int = 0
    offsets: dict[TopicPartition, int] = field(default_factory=dict)


class Archiver:
    def __init__(self, settings: Settings, table: ArchiveTable) -> None:
        self.settings = settings
        self.table = table
        self.recent = RecentIds(settings.archive_dedup_window_s, DEDUP_LIMIT)
        self.committed: dict[TopicPartition, int] = {}
        self._pending: list[ConsumerRecord[bytes, bytes]] = []
        self._pending_since: float | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def run(self, stop: asyncio.Event, on_ready: Callable[[], None] = lambda: None) -> None:
        """Archive until `stop` is set; what was read by then is written before returning."""
        settings = self.settings
        window_ms = settings.archive_dedup_window_s * 1000
        since_ms = int(time.time() * 1000) - window_ms
        seed = await asyncio.to_thread(self.table.event_ids_since, since_ms)
        self.recent.add(seed, time.monotonic())
        consumer = AIOKafkaConsumer(
            group_id=settings.archive_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.archive_batch_events,
            **kafka_common(settings),
        )
        consumer.subscribe([*EVENT_TOPICS, IMPRESSION_TOPIC], listener=_Rebalance(self))
        self._consumer = consumer
        await consumer.start()
        on_ready()
        try:
            while not stop.is_set():
                fetched = await consumer.getmany(timeout_ms=100)
                for records in fetched.values():
                    self._take(records)
                if self._due():
                    await self.flush()
            await self.flush()
        finally:
            self._consumer = None
            await consumer.stop()

    def _take(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        if records and self._pending_since is None:
            self._pending_since = time.monotonic()
        self._pending += records

    def _due(self) -> bool:
        if not self._pending or self._pending_since is None:
            return False
        waited = time.monotonic() - self._pending_since
        return (
            len(self._pending) >= self.settings.archive_batch_events
            or waited >= self.settings.archive_batch_seconds
        )

    async def flush(self) -> BatchOutcome:
        """Write what is pending, retrying until the table has it; then commit to Kafka."""
        records, self._pending, self._pending_since = self._pending, [], None
        outcome = BatchOutcome()
        for attempt in itertools.count():
            outcome = self._plan(records)
            rows, ids = self._rows(records, outcome)
            if not outcome.offsets:
                break
            started = time.perf_counter()
            try:
                # Even without rows (all duplicates, say): the commit records the offsets.
                await asyncio.to_thread(self.table.append, rows.table(), outcome.offsets)
            except Exception as exc:
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                metrics.write_failed(records)
                log.warning("archive write failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                # Another archiver may have taken these partitions over and written them.
                self.committed.update(
                    await asyncio.to_thread(self.table.committed, list(outcome.offsets))
                )
                continue
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            self.committed.update(outcome.offsets)
            self.recent.add(ids, time.monotonic())
            metrics.record(outcome, records)
            await self._commit_to_kafka(outcome.offsets)
            await self._compact_if_due()
            break
        return outcome

    async def _compact_if_due(self) -> None:
        """Keep the table's small files, and so this process's memory, bounded
        (`streams.archive.table.COMPACT_EVERY_COMMITS` says why)."""
        try:
            done = await asyncio.to_thread(self.table.compact_if_due)
        except Exception as exc:
            # The batch is written; the next try comes after as many commits again.
            log.warning("archive compaction failed (%s); the next commits will retry it", exc)
            return
        if done:
            log.info(
                "archive compacted: %d files rewritten into %d",
                done["files_removed"],
                done["files_added"],
            )

    def _plan(self, records: list[ConsumerRecord[bytes, bytes]]) -> BatchOutcome:
        """The offsets a batch covers beyond what the table already records."""
        outcome = BatchOutcome()
        for record in records:
            tp = (record.topic, record.partition)
            if record.offset > self.committed.get(tp, -1):
                outcome.offsets[tp] = max(outcome.offsets.get(tp, -1), record.offset)
        return outcome

    def _rows(
        self, records: list[ConsumerRecord[bytes, bytes]], outcome: BatchOutcome
    ) -> tuple[Rows, set[str]]:
        rows = Rows()
        ids: set[str] = set()
        readable = []
        for record in records:
            if record.offset <= self.committed.get((record.topic, record.partition), -1):
                outcome.redelivered += 1
                continue
            event = decoded(record.topic, record.value)
            if event is None:
                outcome.invalid += 1
                continue
            readable.append((record, event, str(event.event_id)))
        archived = self.recent.known([event_id for _, _, event_id in readable])  # one search
        for record, event, event_id in readable:
            if event_id in archived or event_id in ids:
                outcome.duplicates += 1
                continue
            ids.add(event_id)
            rows.add(event, record.topic, record.partition, record.offset, record.timestamp)
        outcome.rows = len(rows)
        return rows, ids

    async def _commit_to_kafka(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        wanted = {
            KafkaPartition(topic, partition): offset + 1
            for (topic, partition), offset in offsets.items()
            if KafkaPartition(topic, partition) in assigned
        }
        if not wanted:
            return
        try:
            await consumer.commit(wanted)
        except (CommitFailedError, KafkaError) as exc:
            # The table already holds the batch; a restart resumes from the table's offsets.
            log.info("offset commit to Kafka skipped (%s); the archive records them", exc)

    async def partitions_assigned(self, assigned: set[KafkaPartition]) -> None:
        """Resume each partition after the last offset the table records for it."""
        consumer = self._consumer
        wanted = [(tp.topic, tp.partition) for tp in assigned]
        recorded = await asyncio.to_thread(self.table.committed, wanted)
        self.committed.update(recorded)
        if consumer is not None:
            for (topic, partition), offset in recorded.items():
                consumer.seek(KafkaPartition(topic, partition), offset + 1)

    async def partitions_revoked(self, revoked: set[KafkaPartition]) -> None:
        """Write what was read from the partitions before another archiver takes them."""
        if self._pending:
            await self.flush()
        for tp in revoked:
            self.committed.pop((tp.topic, tp.partition), None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: set[KafkaPartition]) -> None:
        await self.archiver.partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[KafkaPartition]) -> None:
        await self.archiver.partitions_assigned(assigned)
