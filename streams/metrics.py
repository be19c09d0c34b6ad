"""Prometheus metrics of the stream worker (namespace `recsys`, subsystem `stream`)."""

from __future__ import annotations

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
