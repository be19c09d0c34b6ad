"""Prometheus metrics of the retraining loop (namespace `recsys`, subsystem `retrain`), served
by `recsys retrain --every` on its --metrics-port."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# published | refused | skipped (the gate's decisions), failed (the run stopped with an error).
DECISIONS = ("published", "refused", "skipped", "failed")

RUNS = Counter("recsys_retrain_runs_total", "Retraining runs, by decision.", ["decision"])
LAST_RUN = Gauge("recsys_retrain_last_run_timestamp_seconds", "When the last retraining ended.")
LAST_DECISION = Gauge(
    "recsys_retrain_last_decision",
    "1 for the decision of the last retraining run, 0 for the others.",
    ["decision"],
)
CANDIDATE_NDCG = Gauge(
    "recsys_retrain_candidate_ndcg", "NDCG@10 of the last candidate on its held-out events."
)
ACTIVE_NDCG = Gauge(
    "recsys_retrain_active_ndcg",
    "NDCG@10 of the active version on the same held-out events (NaN without one).",
)
DURATION = Histogram(
    "recsys_retrain_duration_seconds",
    "Time of one retraining run: read, fit, score and publish.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)

for _name in DECISIONS:  # every series exists from the start, at 0
    RUNS.labels(_name)
    LAST_DECISION.labels(_name)


def record(decision: str, seconds: float, figures: dict[str, Any] | None = None) -> None:
    RUNS.labels(decision).inc()
    LAST_RUN.set(time.time())
    for name in DECISIONS:
        LAST_DECISION.labels(name).set(1.0 if name == decision else 0.0)
    DURATION.observe(seconds)
    figures = figures or {}
    if figures.get("candidate_ndcg") is not None:
        CANDIDATE_NDCG.set(figures["candidate_ndcg"])
    if "active_ndcg" in figures:
        active = figures["active_ndcg"]
        ACTIVE_NDCG.set(float("nan") if active is None else active)
