"""Tune every model on the validation split, refit the best on train + validation, score test."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batch.data import Dataset
from batch.evaluation.metrics import (
    genre_matrix,
    metric_curves,
    per_user_metrics,
    rank_users,
    self_information,
    summarize,
)
from batch.evaluation.names import Protocol
from batch.evaluation.protocols import EncodedTargets, Stage, split
from batch.evaluation.tuning import SELECTION_K, param_grid
from batch.models.base import Recommender, TrainData
from batch.models.registry import ModelUnavailableError, model_factory

# Called with (model name, what is happening); for progress display.
StepCallback = Callable[[str, str], None]


@dataclass
class TuningTrial:
    params: dict[str, Any]
    validation_ndcg: float
    fit_seconds: float


@dataclass
class ModelResult:
    """The report-stage figures of one model and how its hyperparameters were chosen."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    curves: dict[str, list[float]]
    fit_seconds: float
    tuning: list[TuningTrial]


@dataclass
class EvaluationResult:
    dataset: str
    protocol: Protocol
    n_items: int
    n_evaluated_users: int
    n_tuning_users: int
    n_fit_rows: int
    seed: int
    models: list[ModelResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stage:
    train: TrainData
    encoded: EncodedTargets


def _prepare(dataset: Dataset, protocol: Protocol, stage: Stage) -> _Stage:
    stage_split = split(dataset, protocol, stage)
    train = stage_split.train_data(dataset)
    return _Stage(train=train, encoded=stage_split.encode(train))


def _fit(name: str, params: dict[str, Any], train: TrainData) -> tuple[Recommender, float]:
    start = time.perf_counter()
    model = model_factory(name)(**params).fit(train)
    return model, time.perf_counter() - start


def _validation_ndcg(model: Recommender, stage: _Stage) -> float:
    outcome = rank_users(model.score, stage.encoded, max_k=SELECTION_K)
    return float(per_user_metrics(outcome, SELECTION_K)["ndcg"].mean())


def evaluate_models(
    dataset: Dataset,
    protocol: Protocol,
    model_names: list[str],
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> EvaluationResult:
    """Run `protocol` on `dataset` for each named model.

    Parameters
    ----------
    dataset : Dataset
        Interactions and item metadata.
    protocol : Protocol
        P1 (temporal) or P2 (leave-last-out).
    model_names : list of str
        Registry names (`batch.models.registry.model_names`).
    seed : int
        Seed of every model's random state and of the bootstrap.
    on_step : callable, optional
        Called with (model name, step description) before each fit or scoring.

    Returns
    -------
    EvaluationResult
        Models that cannot be imported are listed in `skipped` with the reason.
    """
    tune, report = (
        _prepare(dataset, protocol, Stage.TUNE),
        _prepare(dataset, protocol, Stage.REPORT),
    )
    genres = _genres(report.train)
    self_info = self_information(report.train.matrix)
    result = EvaluationResult(
        dataset=dataset.name,
        protocol=protocol,
        n_items=report.train.n_items,
        n_evaluated_users=len(report.encoded.user_idx),
        n_tuning_users=len(tune.encoded.user_idx),
        n_fit_rows=len(report.train.interactions),
        seed=seed,
    )
    notify = on_step or (lambda _name, _step: None)
    for name in model_names:
        try:
            model_factory(name)
        except ModelUnavailableError as exc:
            result.skipped[name] = str(exc)
            continue
        best, trials = _tune(name, tune, seed, notify)
        notify(name, "refit on train + validation")
        model, fit_seconds = _fit(name, best.params, report.train)
        notify(name, "scoring test")
        outcome = rank_users(model.score, report.encoded)
        curves = metric_curves(outcome)
        result.models.append(
            ModelResult(
                name=name,
                params=model.params(),
                metrics=summarize(outcome, report.train.n_items, self_info, genres, seed=seed),
                curves={metric: values.tolist() for metric, values in curves.items()},
                fit_seconds=fit_seconds,
                tuning=trials,
            )
        )
    return result


def tune(
    dataset: Dataset,
    protocol: Protocol,
    name: str,
    seed: int = 0,
    on_step: StepCallback | None = None,
) -> tuple[TuningTrial, list[TuningTrial]]:
    """The best of `name`'s grid (`batch.evaluation.tuning`) on `protocol`'s validation split,
    by NDCG@10, and every trial: what `evaluate_models` refits and reports, and what `recsys up`
    serves (`batch.train.train_and_publish(tune=...)`)."""
    return _tune(name, _prepare(dataset, protocol, Stage.TUNE), seed, on_step)


def _tune(
    name: str, stage: _Stage, seed: int, on_step: StepCallback | None
) -> tuple[TuningTrial, list[TuningTrial]]:
    notify = on_step or (lambda _name, _step: None)
    trials = []
    grid = param_grid(name, seed)
    for number, params in enumerate(grid, start=1):
        notify(name, f"tuning {number}/{len(grid)}")
        model, seconds = _fit(name, params, stage.train)
        trials.append(TuningTrial(params, _validation_ndcg(model, stage), seconds))
    return max(trials, key=lambda trial: trial.validation_ndcg), trials


def evaluate_configuration(
    dataset: Dataset, protocol: Protocol, name: str, params: dict[str, Any], seed: int = 0
) -> ModelResult:
    """One model with fixed hyperparameters (no tuning), fitted and scored as the report stage
    of `protocol`: e.g. the served configuration, as `recsys bench loop` scores it."""
    report = _prepare(dataset, protocol, Stage.REPORT)
    model, fit_seconds = _fit(name, params, report.train)
    outcome = rank_users(model.score, report.encoded)
    metrics = summarize(
        outcome,
        report.train.n_items,
        self_information(report.train.matrix),
        _genres(report.train),
        seed=seed,
    )
    return ModelResult(name, model.params(), metrics, {}, fit_seconds, [])


def _genres(train: TrainData) -> np.ndarray | None:
    """Genre one-hot matrix in item index order, or None if no item has genres."""
    if "genres" not in train.item_features:
        return None
    genres = [
        tuple(value) if isinstance(value, (tuple, list, np.ndarray)) else ()
        for value in train.item_features["genres"]
    ]
    matrix = genre_matrix(genres)
    return matrix if matrix.any() else None
