"""The served two-stage model scored offline: the ranker's candidates come first (in its
order), every other item after them, seen items are never candidates, and its parameters are
the ranker's."""

from __future__ import annotations

import numpy as np
import pytest

from batch.datasets import load_dataset
from batch.models.base import TrainData, build_train_data
from batch.models.two_stage import TwoStageRecommender
from batch.train import catalog_of

pytestmark = pytest.mark.unit

DATASET = "synthetic:users=120,items=60,events=3000,seed=3"


@pytest.fixture(scope="module")
def data() -> TrainData:
    dataset = load_dataset(DATASET, ".")
    return build_train_data(dataset.interactions, catalog_of(dataset), dataset.items)


def test_candidates_rank_above_every_other_item_and_seen_items_are_no_candidates(
    data: TrainData,
) -> None:
    model = TwoStageRecommender(n_estimators=20, min_data_in_leaf=20).fit(data)
    users = np.arange(12)
    scores = model.score(users)
    assert scores.shape == (12, data.n_items)
    seen = data.matrix.toarray() > 0
    for row, user in enumerate(users):
        candidates = scores[row] > 5e3  # above the candidate floor
        assert candidates.any()
        assert not (candidates & seen[user]).any()
        others = ~candidates
        if others.any():
            assert scores[row, candidates].min() > scores[row, others].max()


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown two-stage parameters"):
        TwoStageRecommender(candidates=10)
