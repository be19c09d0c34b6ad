"""Prometheus metrics of the stream worker (namespace `recsys`, subsystem `stream`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

EVENTS = Counter(
    "recsys_stream_events_total",
    "Events seen by the worker, by event type and outcome.",
    ["event_type", "outcome"],  # outcome: applied | duplicate | redelivered | invalid
)
DLQ = Counter("recsys_stream_dlq_total", "Messages sent to the dead-letter topic.", ["field"])
DEDUP_HITS = Counter(
    "recsys_stream_dedup_hits_total", "Events skipped as already applied.", ["reason"]
)
UNKNOWN_ITEMS = Counter(
    "recsys_stream_unknown_items_total", "Applied events whose item has no vector in the model."
)
REDIS_ERRORS = Counter(
    "recsys_stream_redis_errors_total", "Failed attempts to apply a batch (retried until done)."
)
WRITE_CONFLICTS = Counter(
    "recsys_stream_write_conflicts_total", "Batches recomputed after a concurrent write."
)
BATCH_SIZE = Histogram(
    "recsys_stream_batch_size",
    "Messages per processed batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
PROCESSING_SECONDS = Histogram(
    "recsys_stream_batch_processing_seconds",
    "Time to decode, dead-letter and apply one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REDIS_SECONDS = Histogram(
    "recsys_stream_redis_apply_seconds",
    "Time of the Redis part of applying one batch (reads, compute, transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FRESHNESS_SECONDS = Histogram(
    "recsys_stream_freshness_seconds",
    "From the event's timestamp to its effect being written to Redis.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
EXPERIMENT_OUTCOMES = Counter(
    "recsys_experiment_outcomes_total",
    "Experiment arms' credited outcomes (core.attribution): users, impressions, "
    "clicked_impressions, clicks, purchases, converted_impressions.",
    ["experiment", "variant", "outcome"],
)


class PrometheusRecorder:
    """Records into this process's metrics, which the worker's /metrics page serves."""

    def batch(self, size: int, seconds: float) -> None:
        BATCH_SIZE.observe(size)
        PROCESSING_SECONDS.observe(seconds)

    def dead_letter(self, field: str, event_type: str, outcome: str) -> None:
        DLQ.labels(field=field).inc()
        EVENTS.labels(event_type=event_type, outcome=outcome).inc()

    def redis_apply(self, seconds: float) -> None:
        REDIS_SECONDS.observe(seconds)

    def redis_error(self) -> None:
        REDIS_ERRORS.inc()

    def outcome(
        self,
        applied: dict[str, int],
        duplicates: int,
        redelivered: int,
        unknown_items: int,
        conflicts: int,
        freshness_s: list[float],
    ) -> None:
        for event_type, count in applied.items():
            EVENTS.labels(event_type=event_type, outcome="applied").inc(count)
        if duplicates:
            DEDUP_HITS.labels(reason="event_id").inc(duplicates)
        if redelivered:
            DEDUP_HITS.labels(reason="offset").inc(redelivered)
        if unknown_items:
            UNKNOWN_ITEMS.inc(unknown_items)
        if conflicts:
            WRITE_CONFLICTS.inc(conflicts)
        for seconds in freshness_s:
            FRESHNESS_SECONDS.observe(seconds)

    def credited(self, counts: list[tuple[str, str, str, int]]) -> None:
        for experiment, variant, outcome, count in counts:
            EXPERIMENT_OUTCOMES.labels(experiment, variant, outcome).inc(count)


class JournalRecorder:
    """Keeps the calls instead of recording them: the apply process (`streams.apply_child`)
    sends them with each batch's report, and the worker process replays them into its own
    metrics, so that one /metrics page shows everything."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, list[Any]]] = []

    def batch(self, size: int, seconds: float) -> None:
        self.entries.append(("batch", [size, seconds]))

    def dead_letter(self, field: str, event_type: str, outcome: str) -> None:
        self.entries.append(("dead_letter", [field, event_type, outcome]))

    def redis_apply(self, seconds: float) -> None:
        self.entries.append(("redis_apply", [seconds]))

    def redis_error(self) -> None:
        self.entries.append(("redis_error", []))

    def outcome(
        self,
        applied: dict[str, int],
        duplicates: int,
        redelivered: int,
        unknown_items: int,
        conflicts: int,
        freshness_s: list[float],
    ) -> None:
        self.entries.append(
            ("outcome", [applied, duplicates, redelivered, unknown_items, conflicts, freshness_s])
        )

    def credited(self, counts: list[tuple[str, str, str, int]]) -> None:
        self.entries.append(("credited", [counts]))

    def take(self) -> list[tuple[str, list[Any]]]:
        """The calls so far, forgotten here."""
        entries, self.entries = self.entries, []
        return entries


REPLAYABLE = frozenset(
    {"batch", "dead_letter", "redis_apply", "redis_error", "outcome", "credited"}
)


def replay(entries: list[Any], recorder: PrometheusRecorder) -> None:
    """Make the calls a `JournalRecorder` kept on `recorder`."""
    for name, args in entries:
        if name not in REPLAYABLE:
            raise ValueError(f"not a recorder call: {name!r}")
        getattr(recorder, name)(*args)
