"""The served two-stage model, scored offline (`recsys evaluate --model two-stage`).

It is what `recsys train --ranker` publishes and the API serves (`api.pipeline`): the ALS model,
the item-item neighbours and the learned ranker (`batch.ranking.train`, trained time-safely at an
inner cut of the fit rows), over the candidate sources and features of `core.ranking`. For
scoring, the stream runs over the fit rows as the worker would have (`StreamMirror.warm_up`:
users' histories, trending, the transition table), then each user's candidates are ranked by the
ranker as of the newest fit row; items that are no candidate of the user rank after every
candidate, in ALS order.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from batch.data import Dataset
from batch.models.base import Recommender, TrainData
from batch.ranking.mirror import MirrorConfig, StreamMirror
from batch.ranking.train import RANKER_PARAMS, default_ema, with_ranker
from core.ranking import Ranker
from core.settings import Settings

# A candidate's score in `score` lies above this; every other item's below it.
_CANDIDATE_FLOOR = 1e4
_ROW_COLUMNS = ["user_id", "item_id", "ts", "event_type", "weight"]


class TwoStageRecommender(Recommender):
    """ALS candidates and more, ranked by the served LambdaRank ranker.

    Parameters: those of `batch.ranking.train.RANKER_PARAMS` (label_fraction, neighbours,
    shrinkage, n_estimators, learning_rate, num_leaves, min_data_in_leaf, lambda_l2,
    negative_rate, seed); the stream and the sources follow the default `Settings`.
    """

    name = "two-stage"

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(RANKER_PARAMS)
        if unknown:
            raise ValueError(f"unknown two-stage parameters {sorted(unknown)}")
        self._params = RANKER_PARAMS | params

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def fit(self, data: TrainData) -> Self:
        from batch.train import fitted_artifacts

        rows = data.interactions[_ROW_COLUMNS].reset_index(drop=True)
        dataset = Dataset(
            name="evaluation", interactions=rows, items=data.item_features.drop(columns="item_idx")
        )
        settings = Settings()
        served, _ = with_ranker(
            dataset,
            rows,
            lambda fit_rows: fitted_artifacts(dataset, fit_rows, "als"),
            settings,
            default_ema(settings),
            self._params,
        )
        ranking = served.ranking
        if ranking is None or ranking.ranker_text is None:  # with_ranker always attaches one
            raise RuntimeError("the two-stage model was fit without a ranker")
        self._ranker = Ranker(ranking.ranker_text, ranking.feature_version)
        self._mirror = StreamMirror(
            served, MirrorConfig.from_settings(settings, default_ema(settings))
        )
        self._mirror.warm_up(rows)
        # The served model's item order need not be `data`'s: scores are mapped by id.
        served_ids = [str(i) for i in served.item_ids]
        self._column = np.array([data.items.index(i) for i in served_ids], dtype=np.int64)
        self._user_ids = list(data.users.ids)
        self._seen = _seen_by_user(data)
        self._users = {str(u): n for n, u in enumerate(served.user_ids)}
        self._als = (served.user_vectors, served.item_vectors)
        self._n_items = data.n_items
        return self

    def score(self, user_idx: np.ndarray) -> np.ndarray:
        user_vectors, item_vectors = self._als
        scores = np.full((len(user_idx), self._n_items), -2 * _CANDIDATE_FLOOR, dtype=np.float64)
        for row, index in enumerate(user_idx):
            user = str(self._user_ids[int(index)])
            served_row = self._users.get(user)
            if served_row is not None:
                scores[row, self._column] = (
                    item_vectors @ user_vectors[served_row] - _CANDIDATE_FLOOR
                )
            found = self._mirror.candidates(user, self._seen.get(user, set()))
            if len(found.pool):
                ranked = self._ranker.score(found.features)
                columns = [self._column[self._mirror.row_of_item[i]] for i in found.pool.item_ids]
                scores[row, columns] = _CANDIDATE_FLOOR + ranked
        return scores.astype(np.float32)


def _seen_by_user(data: TrainData) -> dict[str, set[str]]:
    rows: pd.DataFrame = data.interactions
    return {str(user): set(map(str, items)) for user, items in rows.groupby("user_id")["item_id"]}
