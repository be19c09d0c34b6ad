"""The two-stage model's pure parts: candidates from each source without seen items or
repeats, features that read nothing after their cut, and candidates ranked above the rest."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from batch.datasets import load_dataset
from batch.models.base import TrainData, build_train_data
from batch.models.two_stage import FEATURES, TwoStageRecommender, rows_before
from batch.train import catalog_of

pytestmark = pytest.mark.unit

DATASET = "synthetic:users=120,items=60,events=3000,seed=3"


@pytest.fixture(scope="module")
def data() -> TrainData:
    dataset = load_dataset(DATASET, ".")
    return build_train_data(dataset.interactions, catalog_of(dataset), dataset.items)


def test_candidates_are_unseen_unique_and_bounded_per_user(data: TrainData) -> None:
    model = TwoStageRecommender(candidates=10)
    found = model.candidates_of(data)
    assert found.features.shape == (len(found.user_idx), len(FEATURES))
    seen = data.matrix.toarray() > 0
    assert not seen[found.user_idx, found.item_idx].any()
    for user in np.unique(found.user_idx):
        items = found.item_idx[found.user_idx == user]
        assert len(items) == len(set(items.tolist())) <= 3 * 10  # the union of three sources
    ann_rank = found.features[:, FEATURES.index("ann_rank")]
    assert ann_rank.min() == 1
    assert ann_rank.max() == 10 + 1  # not proposed by the ANN source: ranked past its quota


def test_no_feature_reads_a_row_after_its_cut(data: TrainData) -> None:
    rows = data.interactions
    cut = float(np.quantile(rows["ts"], 0.8))
    model = TwoStageRecommender(candidates=10)
    before = model.candidates_of(rows_before(data, cut))
    # The future rewritten: every later row moved to another item and user.
    rng = np.random.default_rng(0)
    later = rows["ts"] >= cut
    altered = rows.copy()
    altered.loc[later, "item_idx"] = rng.permutation(altered.loc[later, "item_idx"].to_numpy())
    altered.loc[later, "user_idx"] = rng.permutation(altered.loc[later, "user_idx"].to_numpy())
    changed = replace(data, interactions=altered)
    again = model.candidates_of(rows_before(changed, cut))
    np.testing.assert_array_equal(before.user_idx, again.user_idx)
    np.testing.assert_array_equal(before.item_idx, again.item_idx)
    np.testing.assert_array_equal(before.features, again.features)
    # ...while features computed on all rows do see them (the test is not vacuous).
    full = model.candidates_of(data)
    assert full.features.shape != before.features.shape or not np.array_equal(
        full.features, before.features
    )


def test_candidates_rank_above_every_other_item(data: TrainData) -> None:
    model = TwoStageRecommender(candidates=5, n_estimators=20, num_leaves=7).fit(data)
    users = np.arange(10)
    scores = model.score(users)
    assert scores.shape == (10, data.n_items)
    final_users, final_items, _ = model._final
    for row, user in enumerate(users):
        mine = final_items[final_users == user]
        if mine.size and mine.size < data.n_items:
            others = np.setdiff1d(np.arange(data.n_items), mine)
            assert scores[row, mine].min() > scores[row, others].max()
