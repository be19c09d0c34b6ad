"""P1 and P2 splits on hand-built examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from batch.data import Dataset
from batch.evaluation.names import Protocol
from batch.evaluation.protocols import (
    Stage,
    leave_last_out_split,
    split,
    temporal_split,
)

pytestmark = pytest.mark.unit


def make_dataset(rows: list[tuple[str, str, int]]) -> Dataset:
    """A dataset from (user, item, ts) rows in file order."""
    users, items, stamps = zip(*rows, strict=True)
    interactions = pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "ts": np.array(stamps, dtype=np.int64),
            "event_type": "rating",
            "weight": np.ones(len(rows), dtype=np.float32),
        }
    )
    catalog = sorted(set(items))
    metadata = pd.DataFrame(
        {"item_id": catalog, "title": catalog, "genres": [()] * len(catalog), "year": pd.NA}
    )
    return Dataset(name="hand", interactions=interactions, items=metadata)


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"], frame["item_id"], strict=True))


# File order is not chronological; rows F1 and F6 share ts 9 and straddle the 80% cut.
P1_ROWS = [
    ("u1", "a", 1),  # F0
    ("u2", "d", 9),  # F1: position 7 -> train (earlier in the file than F6)
    ("u2", "b", 2),  # F2
    ("u1", "b", 3),  # F3
    ("u3", "c", 4),  # F4
    ("u2", "a", 5),  # F5
    ("u1", "d", 9),  # F6: position 8 -> validation
    ("u1", "c", 6),  # F7
    ("u3", "a", 7),  # F8
    ("u3", "b", 10),  # F9: position 9 -> test
]


def test_p1_ties_at_the_cut_are_split_by_file_order() -> None:
    tune = temporal_split(make_dataset(P1_ROWS), Stage.TUNE)
    assert len(tune.fit_rows) == 8
    assert ("u2", "d") in pairs(tune.fit_rows)
    assert ("u1", "d") not in pairs(tune.fit_rows)
    assert list(tune.fit_rows["ts"]) == [1, 2, 3, 4, 5, 6, 7, 9]


def test_p1_tune_targets_validation_and_excludes_earlier_items() -> None:
    tune = temporal_split(make_dataset(P1_ROWS), Stage.TUNE)
    assert list(tune.evaluated_users) == ["u1"]
    assert pairs(tune.targets) == {("u1", "d")}
    assert pairs(tune.excluded) == {("u1", "a"), ("u1", "b"), ("u1", "c")}


def test_p1_report_fits_train_and_validation_and_targets_test() -> None:
    report = temporal_split(make_dataset(P1_ROWS), Stage.REPORT)
    assert len(report.fit_rows) == 9
    assert pairs(report.targets) == {("u3", "b")}
    assert pairs(report.excluded) == {("u3", "c"), ("u3", "a")}


def test_p1_catalog_is_every_item_of_the_file() -> None:
    dataset = make_dataset(P1_ROWS)
    tune = temporal_split(dataset, Stage.TUNE)
    assert list(tune.catalog) == ["a", "b", "c", "d"]
    train = tune.train_data(dataset)
    assert train.n_items == 4
    assert train.matrix.shape == (3, 4)


def test_p1_drops_new_users_and_already_seen_items() -> None:
    filler = [(u, f"{u}-{n}", n) for n, u in enumerate(["u1", "u2", "u3"] * 5 + ["u1"])]
    rows = [
        *filler,  # 16 train rows, ts 0..15
        ("u1", "u1-0", 16),  # validation: a repeat, so u1 has no target
        ("u2", "z", 17),  # validation: u2's new item
        ("u5", "a", 18),  # test: a user without earlier rows
        ("u3", "q", 19),  # test
    ]
    dataset = make_dataset(rows)
    tune = temporal_split(dataset, Stage.TUNE)
    assert pairs(tune.targets) == {("u2", "z")}
    report = temporal_split(dataset, Stage.REPORT)
    assert pairs(report.targets) == {("u3", "q")}
    assert "u5" not in set(report.excluded["user_id"])


def test_p1_encode_aligns_targets_and_exclusions_with_model_indices() -> None:
    dataset = make_dataset(P1_ROWS)
    tune = split(dataset, Protocol.TEMPORAL, Stage.TUNE)
    train = tune.train_data(dataset)
    encoded = tune.encode(train)
    assert list(encoded.user_idx) == [train.users.index("u1")]
    assert encoded.targets.toarray()[0].nonzero()[0].tolist() == [train.items.index("d")]
    excluded = {train.items.ids[i] for i in encoded.excluded.toarray()[0].nonzero()[0]}
    assert excluded == {"a", "b", "c"}


# u1: the tie at ts 3 keeps file order (c before d); u2: 2 rows; u3: 1 row; u4 repeats a.
P2_ROWS = [
    ("u1", "a", 1),
    ("u2", "a", 1),
    ("u1", "b", 2),
    ("u1", "c", 3),
    ("u1", "d", 3),
    ("u2", "b", 2),
    ("u3", "c", 5),
    ("u4", "a", 1),
    ("u4", "b", 2),
    ("u4", "a", 3),
]


def test_p2_tune_fits_train_and_targets_second_last_row() -> None:
    dataset = make_dataset(P2_ROWS)
    tune = leave_last_out_split(dataset, Stage.TUNE)
    assert pairs(tune.fit_rows) == {("u1", "a"), ("u1", "b"), ("u4", "a")}
    assert pairs(tune.targets) == {("u1", "c"), ("u2", "a"), ("u4", "b")}
    assert pairs(tune.excluded) == {("u1", "a"), ("u1", "b"), ("u4", "a")}
    # Every user is indexed, so u2 (empty fit history) is still scored.
    train = tune.train_data(dataset)
    assert set(train.users.ids) == {"u1", "u2", "u3", "u4"}
    assert train.matrix[train.users.index("u2")].nnz == 0


def test_p2_report_targets_last_row_of_every_user() -> None:
    dataset = make_dataset(P2_ROWS)
    report = leave_last_out_split(dataset, Stage.REPORT)
    assert pairs(report.targets) == {("u1", "d"), ("u2", "b"), ("u3", "c"), ("u4", "a")}
    assert pairs(report.fit_rows) == {
        ("u1", "a"),
        ("u1", "b"),
        ("u1", "c"),
        ("u2", "a"),
        ("u4", "a"),
        ("u4", "b"),
    }
    assert sorted(report.evaluated_users) == ["u1", "u2", "u3", "u4"]


def test_p2_repeat_target_stays_evaluated_but_excluded() -> None:
    dataset = make_dataset(P2_ROWS)
    report = leave_last_out_split(dataset, Stage.REPORT)
    encoded = report.encode(report.train_data(dataset))
    row = list(report.evaluated_users).index("u4")
    both = encoded.targets[row].multiply(encoded.excluded[row])
    assert both.nnz == 1
