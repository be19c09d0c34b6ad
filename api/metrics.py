"""Prometheus metrics of the API (namespace `recsys`, subsystem `api`, base units)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

# Set for `recsys serve --workers N`: each worker writes its metrics to files in this directory
# (prometheus_client reads the variable when it is imported) and /metrics sums them.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    "recsys_api_requests_total", "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
REQUEST_SECONDS = Histogram(
    "recsys_api_request_duration_seconds", "Time to answer a request, by route template.",
    ["route", "method"], buckets=_FAST_BUCKETS,
)  # fmt: skip
RECOMMENDATIONS = Counter(
    "recsys_api_recommendations_total", "Recommendation lists served, by the source that led.",
    ["source"],
)  # fmt: skip
FALLBACKS = Counter(
    "recsys_api_fallbacks_total", "Times the fallback chain moved on, by reason.", ["reason"]
)
BACKEND_SECONDS = Histogram(
    "recsys_api_backend_duration_seconds", "Time of one backend call, by backend and operation.",
    ["backend", "operation"], buckets=_FAST_BUCKETS,
)  # fmt: skip
BACKEND_FAILURES = Counter(
    "recsys_api_backend_failures_total", "Backend calls that failed, timed out or were refused.",
    ["backend", "kind"],  # kind: error | timeout | open_circuit | budget
)  # fmt: skip
MMR_SECONDS = Histogram(
    "recsys_api_mmr_duration_seconds", "Time of one MMR re-ranking.", buckets=_FAST_BUCKETS
)
STAGE_SECONDS = Histogram(
    "recsys_api_stage_duration_seconds",
    "Time of one stage of the two-stage path: candidates, filter, features, rank, mmr.",
    ["stage"], buckets=_FAST_BUCKETS,
)  # fmt: skip
EVENTS_PUBLISHED = Counter(
    "recsys_api_events_published_total", "Events published to Kafka by POST /events."
)
IMPRESSIONS_SENT = Counter(
    "recsys_api_impressions_sent_total", "Impressions of /recommend answers published to Kafka."
)
IMPRESSIONS_DROPPED = Counter(
    "recsys_api_impressions_dropped_total",
    "Impressions not recorded, by reason: queue_full (Kafka slower than the answers), "
    "kafka_unavailable, error, shutdown.",
    ["reason"],
)
EXPERIMENT_SRM_P_VALUE = Gauge(
    "recsys_experiment_srm_p_value",
    "The running experiment's sample-ratio-mismatch p-value (users per arm against the "
    "configured shares); below 0.001 the split is broken.",
    ["experiment"],
    multiprocess_mode="min",  # every worker process computes it; the lowest is the alarm
)

# The per-request series, each looked up once per label set: `labels()` takes a lock and
# builds its key on every call. Label values are route templates, methods, statuses, backends,
# operations, sources and fallback reasons: a bounded set, so the caches are too.
request_series = functools.cache(REQUESTS.labels)
request_seconds_series = functools.cache(REQUEST_SECONDS.labels)
backend_seconds_series = functools.cache(BACKEND_SECONDS.labels)
recommendation_series = functools.cache(RECOMMENDATIONS.labels)
fallback_series = functools.cache(FALLBACKS.labels)
stage_series = functools.cache(STAGE_SECONDS.labels)
