"""One retraining run and the loop that repeats it.

A run:
1. reads the archive window (the last RECSYS_RETRAIN_WINDOW_DAYS up to now; training event
   types only) with the active version's item metadata;
2. cuts it: the newest RECSYS_RETRAIN_HOLDOUT_FRACTION of the events are held out, and the cut
   is moved later if needed so that every held-out event is newer than the active version's
   training cut-off (`trained_until`): the active version never saw what it is scored on;
3. fits the candidate on the events before the cut (the served configuration unless told);
4. scores candidate, active version (from its published vectors, `batch.retrain.scoring`) and
   popularity on the held-out events under P1's rules (NDCG@10, HR@10);
5. decides: with no active version the candidate is published (anything beats no model; the
   popularity figures are recorded beside it); otherwise it is published and activated only if
   its NDCG@10 >= the active's - RECSYS_RETRAIN_GATE_MARGIN, else the active version stays.
   What is published is the candidate as scored (trained before the cut); the held-out events
   reach the next candidate, whose cut lies after this one's training cut-off.
6. records the decision with its figures in Redis and in the metrics.

Skipped (recorded, nothing trained or published): fewer than RECSYS_RETRAIN_MIN_INTERACTIONS
training events, no event newer than the active version's cut-off, no evaluated user, or the
active version changed while the run trained (a rollback meanwhile wins).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from batch.data import Dataset, DatasetError
from batch.datasets.archive import ArchiveWindow, load_archive_configured
from batch.evaluation.protocols import EvaluationSplit, cut_split
from batch.publish import new_version_id
from batch.retrain import metrics
from batch.retrain.scoring import Embeddings, Scores, active_vectors, popularity, score
from batch.train import DEFAULT_PARAMS, TrainError, publish_artifacts, to_artifacts, train_on
from core.clients import REDIS_ERRORS, RedisClient, redis_client_for
from core.model_version import (
    ModelMeta,
    active_version,
    batch_user_vectors,
    load_item_payloads,
    load_version_items,
    model_meta,
    record_decision,
    set_mlflow_run,
)
from core.settings import Settings, mask_url_password

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetrainError(RuntimeError):
    """The run could not be made (no archive, Redis down, bad parameters); the message says what
    to do. Nothing was published."""


@dataclass(frozen=True)
class RetrainOptions:
    window_days: float = 30.0
    holdout_fraction: float = 0.1
    margin: float = 0.005
    min_interactions: int = 1000
    model: str = "als"
    params: dict[str, Any] = field(default_factory=dict)
    keep_versions: int = 3

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RetrainOptions:
        values: dict[str, Any] = {
            "window_days": settings.retrain_window_days,
            "holdout_fraction": settings.retrain_holdout_fraction,
            "margin": settings.retrain_gate_margin,
            "min_interactions": settings.retrain_min_interactions,
        }
        return cls(**(values | overrides))


@dataclass(frozen=True)
class _Active:
    meta: ModelMeta
    embeddings: Embeddings


def _redis(settings: Settings, work: Callable[[RedisClient], Awaitable[T]]) -> T:
    async def run() -> T:
        redis = redis_client_for(settings)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except REDIS_ERRORS as exc:
        raise RetrainError(
            f"Redis at {mask_url_password(settings.redis_url)} failed ({exc}). Start the local "
            "services with `recsys services up`, or set RECSYS_REDIS_URL."
        ) from exc


def retrain_once(
    settings: Settings, options: RetrainOptions, now: datetime | None = None
) -> dict[str, Any]:
    """One run (see the module's docstring); returns the recorded decision. Raises
    `RetrainError` when it cannot be made."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    window = ArchiveWindow(now - timedelta(days=options.window_days), now)
    try:
        dataset = load_archive_configured(settings, window)
    except DatasetError as exc:
        raise RetrainError(str(exc)) from exc
    active_id = _redis(settings, active_version)
    meta = _redis(settings, lambda r: model_meta(r, active_id)) if active_id else None
    decision: dict[str, Any] = {
        "time": now.isoformat(timespec="seconds"),
        "candidate": None,
        "active": active_id,
        "model": options.model,
        "margin": options.margin,
        "window": {"since": window.since.isoformat() if window.since else None,
                   "until": window.until.isoformat() if window.until else None},
    }  # fmt: skip
    outcome = _decide(settings, options, dataset, meta, decision)
    decision |= outcome
    decision["seconds"] = round(time.perf_counter() - started, 2)
    decision["mlflow_run_id"] = run_id = _track(settings, decision)
    if run_id is not None and decision["decision"] == "published":
        _redis(settings, lambda r: set_mlflow_run(r, decision["candidate"], run_id))
    _redis(settings, lambda r: record_decision(r, decision))
    metrics.record(decision["decision"], decision["seconds"], decision)
    log.info("retrain: %s (%s)", decision["decision"], decision["reason"])
    return decision


def _track(settings: Settings, decision: dict[str, Any]) -> str | None:
    """Log the decision to MLflow when RECSYS_MLFLOW_TRACKING_URI is set: the scores as metrics,
    the verdict as a tag, the whole decision as an artifact."""
    import json
    import tempfile
    from pathlib import Path

    from batch.tracking import log_run

    if not settings.mlflow_tracking_uri:
        return None
    metrics = {
        name: value
        for name, value in decision.items()
        if name.endswith(("_ndcg", "_hr")) or name == "seconds"
    }
    params = {name: decision.get(name) for name in ("model", "margin", "active", "window")}
    params |= {f"param.{k}": v for k, v in (decision.get("params") or {}).items()}
    tags = {"decision": str(decision.get("decision"))}
    if decision.get("candidate"):
        tags["model_version"] = str(decision["candidate"])
    with tempfile.TemporaryDirectory() as scratch:
        written = Path(scratch) / "retrain-decision.json"
        written.write_text(json.dumps(decision, indent=2, default=str))
        return log_run(
            settings, "retrain", f"{decision.get('decision')} {decision['time']}", params,
            metrics, [written], tags,
        )  # fmt: skip


def _cut(rows_ts: np.ndarray, options: RetrainOptions, meta: ModelMeta | None) -> int:
    n = len(rows_ts)
    cut = n - max(1, math.ceil(n * options.holdout_fraction))
    if meta is not None:
        # Held-out events must be newer than what the active version was trained on.
        cut = max(cut, int(np.searchsorted(rows_ts, meta.trained_until, side="right")))
    return cut


def _decide(
    settings: Settings,
    options: RetrainOptions,
    dataset: Dataset,
    meta: ModelMeta | None,
    decision: dict[str, Any],
) -> dict[str, Any]:
    rows = dataset.chronological()
    cut = _cut(rows["ts"].to_numpy(), options, meta)
    n = len(rows)
    decision["rows"] = {"window": n, "train": cut, "held_out": n - cut}
    if cut >= n:
        return _skipped(
            "no event in the window is newer than the active version's training cut-off "
            f"({_when(meta.trained_until if meta else 0)}): nothing to score it on"
        )
    decision["cut"] = _when(int(rows["ts"].iloc[cut]))
    if cut < options.min_interactions:
        return _skipped(
            f"{cut:,} training events before the cut, fewer than "
            f"RECSYS_RETRAIN_MIN_INTERACTIONS={options.min_interactions:,}"
        )
    split = cut_split(dataset, cut)
    decision["evaluated_users"] = len(split.evaluated_users)
    if not len(split.evaluated_users):
        return _skipped("no held-out user has a new item and an event before the cut")
    params = DEFAULT_PARAMS.get(options.model, {}) | options.params
    try:
        trained = train_on(dataset, split.fit_rows, options.model, params)
    except (ValueError, TypeError) as exc:
        raise RetrainError(f"the candidate cannot be trained: {exc}") from exc
    decision["params"] = trained.model.params()
    candidate = score(
        split,
        Embeddings(
            np.asarray(trained.data.users.ids, dtype=object),
            trained.model.user_vectors(),
            np.asarray(trained.data.items.ids, dtype=object),
            trained.model.item_vectors(),
        ),
    )
    baseline = score(split, popularity(split))
    active = _load_active(settings, split, meta) if meta is not None else None
    active_scores = score(split, active.embeddings) if active is not None else None
    figures = _figures("candidate", candidate) | _figures("popularity", baseline)
    figures |= _figures("active", active_scores)
    version = new_version_id(options.model)
    figures["candidate"] = version
    if meta is None:
        verdict, reason = "published", "no active version: the first candidate is published"
    elif active_scores is None:
        verdict = "published"
        reason = f"the active version {meta.version} has no item vectors left to score it by"
    elif candidate.ndcg >= active_scores.ndcg - options.margin:
        verdict = "published"
        reason = (
            f"candidate NDCG@10 {candidate.ndcg:.4f} >= active {active_scores.ndcg:.4f} - "
            f"margin {options.margin}"
        )
    else:
        verdict = "refused"
        reason = (
            f"candidate NDCG@10 {candidate.ndcg:.4f} < active {active_scores.ndcg:.4f} - "
            f"margin {options.margin}: the active version stays"
        )
    if verdict == "published":
        if _redis(settings, active_version) != decision["active"]:
            return figures | _skipped("the active version changed while the candidate trained")
        artifacts = to_artifacts(trained, dataset.name, options.model)
        try:
            publish_artifacts(settings, artifacts, options.keep_versions, version=version)
        except TrainError as exc:
            raise RetrainError(str(exc)) from exc
    return figures | {"decision": verdict, "reason": reason}


def _load_active(settings: Settings, split: EvaluationSplit, meta: ModelMeta) -> _Active | None:
    users = [str(u) for u in split.evaluated_users]

    async def load(redis: RedisClient) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
        items = await load_version_items(redis, meta.version)
        payloads = await load_item_payloads(redis, meta.version)
        return items, payloads, await batch_user_vectors(redis, meta.version, users)

    items, payloads, vectors = _redis(settings, load)
    if items is None:
        return None
    popular = {item: float(p.get("popularity", 0) or 0) for item, p in payloads.items()}
    embeddings = active_vectors(
        split, items.item_ids, items.vectors, popular, vectors, meta.params,
        settings.stream_fold_in_history,
    )  # fmt: skip
    return _Active(meta, embeddings)


def _figures(name: str, scores: Scores | None) -> dict[str, Any]:
    return {
        f"{name}_ndcg": round(scores.ndcg, 6) if scores else None,
        f"{name}_hr": round(scores.hr, 6) if scores else None,
    }


def _skipped(reason: str) -> dict[str, Any]:
    return {"decision": "skipped", "reason": reason}


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def run_every(
    settings: Settings,
    options: RetrainOptions,
    every: timedelta,
    stop: threading.Event,
    on_decision: Callable[[dict[str, Any]], None] = lambda decision: None,
) -> None:
    """Run now, then every `every`, until `stop` is set (a run under way is finished first).
    A run that fails is logged and counted (`recsys_retrain_runs_total{decision="failed"}`);
    the loop goes on."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            on_decision(retrain_once(settings, options))
        except RetrainError as exc:
            metrics.record("failed", time.perf_counter() - started)
            log.error("retrain failed: %s", exc)
        stop.wait(every.total_seconds())
