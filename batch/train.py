"""Train a servable model on a whole dataset and turn it into publishable artifacts."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from batch.data import Dataset, DatasetError
from batch.drift_baseline import training_baseline
from batch.models.base import EmbeddingRecommender, FitProgress, TrainData, build_train_data
from batch.models.registry import SERVED_ALS_PARAMS
from batch.publish import ModelArtifacts
from core.settings import Settings, mask_url_password

if TYPE_CHECKING:
    from batch.datasets.archive import ArchiveWindow


def _als(**params: Any) -> EmbeddingRecommender:
    from batch.models.als import ALSRecommender

    return ALSRecommender(**params)


def _two_tower(**params: Any) -> EmbeddingRecommender:
    from batch.models.two_tower import TwoTowerRecommender

    return TwoTowerRecommender(**params)


# Models whose user and item vectors can be served (ANN over item vectors, online user updates).
SERVABLE_MODELS: dict[str, Callable[..., EmbeddingRecommender]] = {
    "als": _als,
    "two-tower": _two_tower,
}


# Served hyperparameters; `--params` overrides any of them.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"als": SERVED_ALS_PARAMS, "two-tower": {}}


@dataclass(frozen=True)
class TrainedModel:
    model: EmbeddingRecommender
    data: TrainData
    fit_seconds: float


def catalog_of(dataset: Dataset) -> np.ndarray:
    """Every item that can be recommended: items with metadata, then any others interacted with."""
    ids = pd.concat([dataset.items["item_id"], dataset.interactions["item_id"]], ignore_index=True)
    return np.asarray(pd.unique(ids.astype(str)), dtype=object)


def train(
    dataset: Dataset,
    model_name: str,
    params: dict[str, Any] | None = None,
    progress: FitProgress | None = None,
) -> TrainedModel:
    """Fit `model_name` on every interaction of `dataset`, reporting iterations to `progress`."""
    return train_on(dataset, dataset.interactions, model_name, params, progress)


def train_on(
    dataset: Dataset,
    rows: pd.DataFrame,
    model_name: str,
    params: dict[str, Any] | None = None,
    progress: FitProgress | None = None,
) -> TrainedModel:
    """Fit `model_name` on `rows` (some of `dataset`'s interactions) over the whole catalog of
    `dataset`; what `train` does with all of them."""
    try:
        factory = SERVABLE_MODELS[model_name]
    except KeyError:
        raise ValueError(
            f"unknown model {model_name!r}; servable models: {', '.join(SERVABLE_MODELS)}"
        ) from None
    data = build_train_data(rows, catalog_of(dataset), dataset.items, dataset.users)
    model = factory(**(DEFAULT_PARAMS[model_name] | (params or {})))
    started = time.perf_counter()
    model.fit(data, progress)
    return TrainedModel(model, data, time.perf_counter() - started)


def _payload(row: Any) -> dict[str, Any]:
    year = row.year
    return {
        "title": "" if pd.isna(row.title) else str(row.title),
        "genres": [str(g) for g in (row.genres if isinstance(row.genres, tuple | list) else ())],
        "year": None if pd.isna(year) else int(year),
    }


def to_artifacts(trained: TrainedModel, dataset_name: str, model_name: str) -> ModelArtifacts:
    data = trained.data
    popularity = np.bincount(data.interactions["item_idx"].to_numpy(), minlength=data.n_items)
    payloads = [_payload(row) for row in data.item_features.itertuples(index=False)]
    user_vectors = np.ascontiguousarray(trained.model.user_vectors(), dtype=np.float32)
    item_vectors = np.ascontiguousarray(trained.model.item_vectors(), dtype=np.float32)
    return ModelArtifacts(
        model=model_name,
        dataset=dataset_name,
        user_ids=np.asarray(data.users.ids, dtype=str),
        item_ids=np.asarray(data.items.ids, dtype=str),
        user_vectors=user_vectors,
        item_vectors=item_vectors,
        item_payloads=payloads,
        popularity=popularity.astype(np.int64),
        trained_until=data.now,
        params=trained.model.params(),
        drift_baseline=training_baseline(
            data.interactions,
            popularity,
            user_vectors,
            item_vectors,
            data.matrix,
            [p.get("genres") or () for p in payloads],
        ),
    )


def fitted_artifacts(
    dataset: Dataset, rows: pd.DataFrame, model_name: str, params: dict[str, Any] | None = None
) -> tuple[ModelArtifacts, TrainData]:
    """`model_name` fit on `rows` of `dataset`, as publishable artifacts, with its training data."""
    trained = train_on(dataset, rows, model_name, params)
    return to_artifacts(trained, dataset.name, model_name), trained.data


class TrainError(RuntimeError):
    """Training or publishing failed in a way the user can fix; the message says how."""


# Progress of `train_and_publish` by stage: "load" (0 of None), "fit" (iterations), then
# publishing's "index", "seal" and "redis" (see `batch.publish.Progress`).
StageProgress = Callable[[str, int, int | None], None]


def _no_progress(stage: str, done: int, total: int | None) -> None:
    pass


def publish_artifacts(
    settings: Settings,
    artifacts: ModelArtifacts,
    keep_versions: int = 3,
    progress: StageProgress = _no_progress,
    version: str | None = None,
) -> str:
    """Publish and activate `artifacts` where the settings say; returns the version id. Raises
    `TrainError` when Redis fails."""
    from batch.publish import publish_configured
    from core.clients import REDIS_ERRORS

    try:
        return asyncio.run(
            publish_configured(
                artifacts, settings, keep_versions=keep_versions, progress=progress, version=version
            )
        )
    except REDIS_ERRORS as exc:
        raise TrainError(
            f"Redis at {mask_url_password(settings.redis_url)} failed ({exc}). Start the local "
            "services with `recsys services up`, or set RECSYS_REDIS_URL."
        ) from exc


def train_and_publish(
    settings: Settings,
    dataset: str,
    model: str = "als",
    data_dir: Path | None = None,
    params: dict[str, Any] | None = None,
    keep_versions: int = 3,
    skip_malformed: bool = False,
    progress: StageProgress = _no_progress,
    archive: ArchiveWindow | None = None,
    ranker: bool = False,
    tuned: bool = False,
) -> dict[str, Any]:
    """Load `dataset` (or, given `archive`, that window of the event archive), fit `model` and
    publish it as the active version; prints nothing. With `ranker`, the version also carries
    the learned ranking stage (`batch.ranking.train`), trained time-safely on the same rows.
    With `tuned` (and no `params`), the hyperparameters are chosen on the data's own validation
    split (`tuned_params`) instead of the served defaults, which were tuned for ml-100k.

    Returns the summary `recsys train --json` saves: the new version, the dataset's size, timings
    and peak memory. Raises `TrainError` with what to do when the data, the parameters or Redis
    fail.
    """
    from batch.datasets import load_archive_configured, load_dataset

    started = time.perf_counter()
    try:
        progress("load", 0, None)
        if archive is not None:
            loaded = load_archive_configured(settings, archive)
        else:
            loaded = load_dataset(
                dataset, data_dir or settings.data_dir, skip_malformed=skip_malformed
            )
        load_seconds = time.perf_counter() - started
        tuning = None
        if tuned and params is None:
            tuning = tuned_params(loaded, model, lambda done, total: progress("tune", done, total))
            params = tuning["params"]
        trained = train(loaded, model, params, lambda done, total: progress("fit", done, total))
        artifacts = to_artifacts(trained, loaded.name, model)
        ranking_summary = (
            _with_ranker(settings, loaded, model, params, artifacts, progress) if ranker else None
        )
    except (DatasetError, ValueError, TypeError) as exc:
        raise TrainError(str(exc)) from exc
    publish_started = time.perf_counter()
    version = publish_artifacts(settings, artifacts, keep_versions, progress)
    publish_seconds = time.perf_counter() - publish_started
    summary = {
        "dataset": loaded.name,
        "model": model,
        "version": version,
        "interactions": loaded.n_interactions,
        "skipped_rows": loaded.skipped_rows,
        "users": len(artifacts.user_ids),
        "items": len(artifacts.item_ids),
        "load_seconds": round(load_seconds, 2),
        "fit_seconds": round(trained.fit_seconds, 2),
        "publish_seconds": round(publish_seconds, 2),
        "train_and_publish_seconds": round(trained.fit_seconds + publish_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "params": artifacts.params,
        "tuning": tuning,
        "ranker": ranking_summary,
    }
    summary["mlflow_run_id"] = _track(settings, summary)
    return summary


def _track(settings: Settings, summary: dict[str, Any]) -> str | None:
    """Log the training run to MLflow (when configured) and link the version to it."""
    import json
    import tempfile

    from batch.tracking import log_run
    from core.clients import redis_client_for
    from core.model_version import set_mlflow_run

    if not settings.mlflow_tracking_uri:
        return None
    tuning = summary["tuning"] or {}
    metrics = {
        name: summary[name]
        for name in ("interactions", "users", "items", "fit_seconds", "publish_seconds",
                     "total_seconds", "peak_rss_mib")
    } | {
        "validation_ndcg_at_10": tuning.get("validation_ndcg_at_10"),
        "most_popular_validation_ndcg_at_10": tuning.get("most_popular_validation_ndcg_at_10"),
    }  # fmt: skip
    params = {"dataset": summary["dataset"], "model": summary["model"], "tuned": bool(tuning)}
    params |= {f"param.{name}": value for name, value in summary["params"].items()}
    version = summary["version"]
    with tempfile.TemporaryDirectory() as scratch:
        written = Path(scratch) / "train-summary.json"
        written.write_text(json.dumps(summary, indent=2, default=str))
        run_id = log_run(
            settings, "train", f"{summary['model']} {version}", params, metrics,
            [written, settings.state_dir / "models" / version], {"model_version": version},
        )  # fmt: skip
    if run_id is not None:

        async def link() -> None:
            redis = redis_client_for(settings)
            try:
                await set_mlflow_run(redis, version, run_id)
            finally:
                await redis.aclose()

        asyncio.run(link())
    return run_id


def tuned_params(
    dataset: Dataset, model: str, progress: FitProgress | None = None
) -> dict[str, Any]:
    """`model`'s hyperparameters chosen by NDCG@10 on `dataset`'s temporal validation split
    (P1's: fit on the first 80% of rows in time, score the next 10%, as serving trains on the
    past and answers the future), with the most-popular baseline's NDCG@10 on the same split
    beside it. `recsys up` serves this on whatever data it trains on: the served defaults were
    tuned for ml-100k and score below popularity on the synthetic set."""
    from batch.evaluation.names import Protocol
    from batch.evaluation.runner import tune
    from batch.evaluation.tuning import param_grid

    grid_size = len(param_grid(model))
    steps = iter(range(1, grid_size + 1))

    def step(_name: str, _what: str) -> None:
        if progress is not None:
            progress(next(steps, grid_size), grid_size)

    best, trials = tune(dataset, Protocol.TEMPORAL, model, on_step=step)
    popular, _ = tune(dataset, Protocol.TEMPORAL, "most-popular")
    return {
        "protocol": "temporal validation (P1)",
        "params": best.params,
        "validation_ndcg_at_10": round(best.validation_ndcg, 4),
        "most_popular_validation_ndcg_at_10": round(popular.validation_ndcg, 4),
        "beats_most_popular": best.validation_ndcg > popular.validation_ndcg,
        "trials": len(trials),
    }


def _with_ranker(
    settings: Settings,
    loaded: Dataset,
    model: str,
    params: dict[str, Any] | None,
    artifacts: ModelArtifacts,
    progress: StageProgress,
) -> dict[str, Any]:
    """Train the ranking stage on `loaded`'s rows and attach it to `artifacts` (whose model it
    fits again at the ranker's inner cut, and takes as the served one otherwise)."""
    from batch.ranking.impressions import impression_groups
    from batch.ranking.train import default_ema, with_ranker

    def artifacts_of(rows: pd.DataFrame) -> tuple[ModelArtifacts, TrainData]:
        if len(rows) == len(loaded.interactions):
            return artifacts, build_train_data(rows, catalog_of(loaded), loaded.items, loaded.users)
        return fitted_artifacts(loaded, rows, model, params)

    shown = (
        impression_groups(
            loaded.impressions, loaded.interactions, settings.experiment_attribution_window_s
        )
        if loaded.impressions is not None
        else []
    )
    served, summary = with_ranker(
        loaded,
        loaded.interactions,
        artifacts_of,
        settings,
        default_ema(settings),
        progress=lambda done, total: progress("ranker", done, total),
        shown=shown,
    )
    artifacts.ranking = served.ranking
    return summary
