"""`recsys train --ranker`: the learned ranking stage, trained time-safely and published with the
model version.

1. Inner cut: the last `label_fraction` of the fit rows (by time) are replayed, the rest fit an
   inner model (ALS vectors, item-item neighbours, popularity) exactly as the served one is fit.
2. The replay runs the stream and the API's candidate stage in process (`batch.ranking.mirror`):
   before each event, the user's candidates and their features as of that moment (nothing read
   after it); the event's item is the one positive of that group. Then the event is applied.
   Impressions (from the event archive) that their user acted on are groups too: the items
   shown, with their features as of the impression, labelled by what was clicked or bought
   (`batch.ranking.impressions`).
3. LightGBM LambdaRank learns from those groups (`RANKER_PARAMS`).
4. The served model is fit on every fit row; its version carries the ranker (LightGBM's own
   model text), the feature list's version and the item-item neighbours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from batch.data import Dataset
from batch.drift_baseline import with_ranker_features
from batch.evaluation.online_updates import OnlineUpdateParams
from batch.evaluation.prequential import PrequentialSplit, ReplayRun, replay_events
from batch.models.base import TrainData
from batch.models.itemknn import item_similarity
from batch.publish import ModelArtifacts
from batch.ranking.impressions import ImpressionGroup
from batch.ranking.mirror import MirrorConfig, StreamMirror
from core.ranking import FEATURE_VERSION, FEATURES
from core.ranking_store import Neighbours, RankingParts
from core.settings import Settings
from schemas.events import EventType

# Chosen on a hold-out of the inner cut's events (ml-100k and ml-latest-small, P3's report run):
# LambdaRank with 31 leaves learnt the groups by heart (in-sample HR@10 0.32, held out below the
# ANN order alone); small trees, many rows per leaf, L2 and a fifth of the negatives generalise.
RANKER_PARAMS: dict[str, Any] = {
    "label_fraction": 0.2,
    "neighbours": 50,
    "shrinkage": 10.0,
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 500,
    "lambda_l2": 10.0,
    "negative_rate": 0.2,
    "seed": 0,
}

Progress = Callable[[int, int], None]  # (events replayed, of)


def default_ema(settings: Settings) -> OnlineUpdateParams:
    weights: dict[EventType, float] = {
        "view": settings.stream_ema_view,
        "click": settings.stream_ema_click,
        "purchase": settings.stream_ema_purchase,
    }
    return OnlineUpdateParams("ema", weights)


def item_neighbours(data: TrainData, n: int, shrinkage: float) -> Neighbours:
    """Each item's `n` nearest items by shrunk cosine over the training rows (`ItemKNN`'s)."""
    similarity = item_similarity(data.matrix.astype(np.float32), n, shrinkage).tocsc()
    ids = [str(i) for i in data.items.ids]
    found: Neighbours = {}
    for column, item in enumerate(ids):
        start, stop = similarity.indptr[column], similarity.indptr[column + 1]
        rows, values = similarity.indices[start:stop], similarity.data[start:stop]
        keep = values > 0
        pairs = sorted(
            zip((ids[r] for r in rows[keep]), values[keep].tolist(), strict=True),
            key=lambda pair: (pair[1], pair[0]),
            reverse=True,
        )
        if pairs:
            found[item] = ([p[0] for p in pairs], [round(p[1], 6) for p in pairs])
    return found


def first_seen(rows: pd.DataFrame) -> dict[str, float]:
    """Each item's first interaction in `rows` (epoch seconds): what its age is counted from.
    Only the rows a model is fit on, so the inner model knows no item's future."""
    found = rows.groupby(rows["item_id"].astype(str))["ts"].min()
    return {str(item): float(ts) for item, ts in found.items()}


@dataclass(frozen=True)
class TrainingRows:
    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray  # rows per group (a replayed event, or an impression), in order
    events: int  # scored events replayed
    with_positive: int  # of which the target was a candidate
    impressions: int = 0  # impressions that became groups (some items acted on, some not)


def training_rows(
    split: PrequentialSplit,
    inner: ModelArtifacts,
    config: MirrorConfig,
    progress: Progress | None = None,
    warm: bool = True,
    shown: Sequence[ImpressionGroup] = (),
) -> TrainingRows:
    """Every scored event of `split.replay` as one group: its candidates' features as of just
    before the event, labelled 1 for the event's item. And each impression of `shown` (in time
    order, within the replayed period) as one group of its items, with their features as of
    just before the first event after it and their labels."""
    mirror = StreamMirror(inner, config)
    if warm:
        mirror.warm_up(split.fit.interactions)
    features, labels, groups = [], [], []
    seen_at_start = split.seen_at_start()
    seen_now: dict[str, set[str]] = {}
    pending = deque(shown)
    events = impressions = 0

    def add_impressions(until_ts: float) -> None:
        nonlocal impressions
        while pending and pending[0].ts <= until_ts:
            group = pending.popleft()
            seen = seen_now.get(group.user_id) or seen_at_start.get(group.user_id, set())
            found = mirror.candidates(group.user_id, seen, group.item_ids)
            row_of = {item: n for n, item in enumerate(found.pool.item_ids)}
            kept = [(row_of[i], y) for i, y in zip(group.item_ids, group.labels, strict=True)
                    if i in row_of]  # fmt: skip
            if any(y for _, y in kept) and not all(y for _, y in kept):
                features.append(found.features[[row for row, _ in kept]])
                labels.append(np.array([y for _, y in kept], dtype=np.int32))
                groups.append(len(kept))
                impressions += 1

    total = len(split.replay)
    for event in replay_events(split):
        add_impressions(event.ts)
        seen_now[event.user_id] = event.seen
        if event.scored:
            events += 1
            found = mirror.candidates(event.user_id, event.seen)
            label = np.fromiter(
                (item == event.item_id for item in found.pool.item_ids), dtype=np.int32
            )
            if label.any():
                features.append(found.features)
                labels.append(label)
                groups.append(len(label))
        mirror.apply(event)
        if progress is not None and (event.position + 1) % 1000 == 0:
            progress(event.position + 1, total)
    add_impressions(float("inf"))
    if not groups:
        raise ValueError(
            "no replayed event of the inner cut had its item among the candidates: too little "
            "data to learn a ranker from"
        )
    return TrainingRows(
        np.concatenate(features),
        np.concatenate(labels),
        np.asarray(groups),
        events,
        len(groups) - impressions,
        impressions,
    )


def fit_ranker(rows: TrainingRows, params: dict[str, Any]) -> str:
    """LambdaRank over the groups, every positive and a `negative_rate` share of the negatives
    kept (drawn with `seed`); LightGBM's model text."""
    import lightgbm

    rng = np.random.default_rng(params["seed"])
    keep = (rows.labels > 0) | (rng.random(len(rows.labels)) < params["negative_rate"])
    starts = np.r_[0, np.cumsum(rows.groups)[:-1]]
    groups = np.add.reduceat(keep.astype(np.int64), starts)
    dataset = lightgbm.Dataset(
        rows.features[keep], label=rows.labels[keep], group=groups, feature_name=list(FEATURES)
    )
    booster = lightgbm.train(
        {
            "objective": "lambdarank",
            "learning_rate": params["learning_rate"],
            "num_leaves": params["num_leaves"],
            "min_data_in_leaf": params["min_data_in_leaf"],
            "lambda_l2": params["lambda_l2"],
            "lambdarank_truncation_level": 20,
            "seed": params["seed"],
            "num_threads": 1,
            "deterministic": True,
            "verbose": -1,
        },
        dataset,
        num_boost_round=params["n_estimators"],
    )
    text: str = booster.model_to_string()
    return text


ArtifactsOf = Callable[[pd.DataFrame], tuple[ModelArtifacts, TrainData]]


def with_ranker(
    dataset: Dataset,
    fit_rows: pd.DataFrame,
    artifacts_of: ArtifactsOf,
    settings: Settings,
    ema: OnlineUpdateParams,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    shown: Sequence[ImpressionGroup] = (),
) -> tuple[ModelArtifacts, dict[str, Any]]:
    """The served artifacts of `fit_rows` with their ranking parts, and a summary of the
    ranker's training. `artifacts_of(rows)` fits the served model on some rows; `shown` are the
    impressions acted on (`batch.ranking.impressions`), of which those after the inner cut
    join the training groups."""
    chosen = RANKER_PARAMS | (params or {})
    rows = fit_rows.sort_values("ts", kind="stable").reset_index(drop=True)
    cut = int(len(rows) * (1.0 - chosen["label_fraction"]))
    if cut <= 0 or cut >= len(rows):
        raise ValueError("too few rows to cut for the ranker's labels")
    inner_split = PrequentialSplit(
        run=ReplayRun.REPORT,
        fit=replace(dataset, interactions=rows.iloc[:cut].reset_index(drop=True)),
        replay=rows.iloc[cut:].reset_index(drop=True),
    )
    inner, inner_data = artifacts_of(inner_split.fit.interactions)
    inner.ranking = RankingParts(
        None,
        FEATURE_VERSION,
        item_neighbours(inner_data, chosen["neighbours"], chosen["shrinkage"]),
        first_seen=first_seen(inner_split.fit.interactions),
    )
    config = MirrorConfig.from_settings(settings, ema)
    cut_ts = float(inner_split.replay["ts"].iloc[0])
    after_cut = [group for group in shown if group.ts >= cut_ts]
    learned = training_rows(inner_split, inner, config, progress, shown=after_cut)
    ranker_text = fit_ranker(learned, chosen)
    served, served_data = artifacts_of(rows)
    served.ranking = RankingParts(
        ranker_text,
        FEATURE_VERSION,
        item_neighbours(served_data, chosen["neighbours"], chosen["shrinkage"]),
        params=chosen,
        first_seen=first_seen(rows),
    )
    if served.drift_baseline is not None:  # the ranker's features join the version's baseline
        served.drift_baseline = with_ranker_features(served.drift_baseline, learned.features)
    summary = {
        "params": chosen,
        "inner_fit_rows": cut,
        "label_events": learned.events,
        "groups_with_target": learned.with_positive,
        "impression_groups": learned.impressions,
        "candidate_rows": len(learned.labels),
    }
    return served, summary
