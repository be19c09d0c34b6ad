"""The offline protocols P1 (global temporal split) and P2 (leave-last-one-out).

Both follow ../shared/protocols.md exactly. A split is model independent: it names users and items
by their string ids; `EvaluationSplit.train_data` indexes the fit rows for a model and
`EvaluationSplit.encode` turns targets and exclusions into sparse matrices over those indices.

Rows are ordered by (timestamp, original row order) via `Dataset.chronological`, so rows with
equal timestamps at a cut are split by file order. The catalog is every distinct item of the
interaction file, whatever the split, and is indexed in the order of first appearance in that
chronological order.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import scipy.sparse as sp

from batch.data import Dataset, IdIndex
from batch.evaluation.names import Protocol
from batch.models.base import TrainData, build_train_data

# P1 cut points as fractions of the ordered rows: train < 80% <= validation < 90% <= test.
TRAIN_END = (8, 10)
VALIDATION_END = (9, 10)


class Stage(StrEnum):
    """`tune`: fit train, score validation. `report`: fit train + validation, score test."""

    TUNE = "tune"
    REPORT = "report"


@dataclass(frozen=True)
class EncodedTargets:
    """Targets and exclusions of the evaluated users over a model's dense indices.

    user_idx: (n_evaluated,) indices into `TrainData.users`.
    targets / excluded: bool csr (n_evaluated x n_items), rows aligned with `user_idx`.
    """

    user_idx: np.ndarray
    targets: sp.csr_matrix
    excluded: sp.csr_matrix


@dataclass(frozen=True)
class EvaluationSplit:
    """What a model is fitted on and what it is scored against, for one protocol stage.

    fit_rows: interaction rows the model learns from (chronological order).
    targets: one row per (user_id, item_id) target pair; its users are the evaluated users.
    excluded: one row per (user_id, item_id) pair removed from that user's ranking.
    catalog: every distinct item id of the interaction file (the items ranked).
    indexed_users: user ids the model must index (None: the users of `fit_rows`).
    """

    protocol: Protocol
    stage: Stage
    fit_rows: pd.DataFrame
    targets: pd.DataFrame
    excluded: pd.DataFrame
    catalog: np.ndarray
    indexed_users: np.ndarray | None = None

    @property
    def evaluated_users(self) -> np.ndarray:
        """Evaluated user ids, in order of their first target."""
        return np.asarray(pd.unique(self.targets["user_id"].to_numpy(dtype=object)), dtype=object)

    def train_data(self, dataset: Dataset) -> TrainData:
        """Index the fit rows over the whole catalog (`batch.models.base.build_train_data`)."""
        return build_train_data(
            self.fit_rows, self.catalog, dataset.items, dataset.users, users=self.indexed_users
        )

    def encode(self, train: TrainData) -> EncodedTargets:
        """Targets and exclusions as bool matrices over `train`'s user and item indices."""
        return self.encode_over(train.users, train.items)

    def encode_over(self, user_index: IdIndex, item_index: IdIndex) -> EncodedTargets:
        """As `encode`, over any user and item indices (a published model's, for example)."""
        users = self.evaluated_users
        user_idx = user_index.encode(users)
        if (user_idx < 0).any():
            raise ValueError("an evaluated user is not indexed by the train data")
        row_of_user = {user: row for row, user in enumerate(users)}
        shape = (len(users), len(item_index))
        return EncodedTargets(
            user_idx=user_idx,
            targets=_pairs_matrix(self.targets, row_of_user, item_index, shape),
            excluded=_pairs_matrix(self.excluded, row_of_user, item_index, shape),
        )


def split(dataset: Dataset, protocol: Protocol, stage: Stage) -> EvaluationSplit:
    """The split of `dataset` for one protocol and stage."""
    if protocol is Protocol.TEMPORAL:
        return temporal_split(dataset, stage)
    return leave_last_out_split(dataset, stage)


def temporal_split(dataset: Dataset, stage: Stage) -> EvaluationSplit:
    """P1: train = first 80% of rows, validation = next 10%, test = last 10%.

    The target period is validation (tune) or test (report); fit rows are everything before it.
    Evaluated users have at least one row in the target period and one before it; their targets
    are the target-period items they had not interacted with before, and items they interacted
    with before are excluded. A user whose target-period items were all seen before has no
    target and is therefore not evaluated (there is nothing new to predict).
    """
    rows = dataset.chronological()
    n = len(rows)
    train_end = n * TRAIN_END[0] // TRAIN_END[1]
    validation_end = n * VALIDATION_END[0] // VALIDATION_END[1]
    if stage is Stage.TUNE:
        before, period = rows.iloc[:train_end], rows.iloc[train_end:validation_end]
    else:
        before, period = rows.iloc[:validation_end], rows.iloc[validation_end:]
    return _period_split(rows, before, period, stage)


def cut_split(dataset: Dataset, cut: int) -> EvaluationSplit:
    """P1's rules at any cut: fit on the first `cut` rows (chronological order), score on the
    rest (the target period). The retraining gate's held-out slice (`batch.retrain`)."""
    rows = dataset.chronological()
    return _period_split(rows, rows.iloc[:cut], rows.iloc[cut:], Stage.REPORT)


def _period_split(
    rows: pd.DataFrame, before: pd.DataFrame, period: pd.DataFrame, stage: Stage
) -> EvaluationSplit:
    seen = _pairs(before)
    candidates = _pairs(period)
    candidates = candidates[candidates["user_id"].isin(set(seen["user_id"]))]
    targets = _anti_join(candidates, seen)
    excluded = seen[seen["user_id"].isin(set(targets["user_id"]))]
    return EvaluationSplit(
        protocol=Protocol.TEMPORAL,
        stage=stage,
        fit_rows=before.reset_index(drop=True),
        targets=targets,
        excluded=excluded.reset_index(drop=True),
        catalog=_catalog(rows),
    )


def leave_last_out_split(dataset: Dataset, stage: Stage) -> EvaluationSplit:
    """P2: per user the last row is test, the second-last validation, the rest train.

    Tune fits on train and targets the validation item; report fits on train + validation and
    targets the test item. Excluded: the user's items in the fit rows. Every user of the dataset
    is indexed, so all users are evaluated, including those with fewer than 3 rows:
    - 2 rows: tune fits nothing for them (the first row is the validation target), report fits
      their first row; with an empty history a model scores them as a cold user.
    - 1 row: the row is the test target; no validation target, so not evaluated when tuning,
      and evaluated as a cold user when reporting.
    A target the user also has in the fit rows (a repeat) stays evaluated but is excluded from
    the ranking, so it counts as a miss: the protocol's exclusion rule wins.
    """
    rows = dataset.chronological()
    position_from_end = rows.groupby("user_id", sort=False).cumcount(ascending=False)
    target_position = 1 if stage is Stage.TUNE else 0
    fit_rows = rows[position_from_end > target_position].reset_index(drop=True)
    targets = _pairs(rows[position_from_end == target_position])
    return EvaluationSplit(
        protocol=Protocol.LEAVE_LAST_OUT,
        stage=stage,
        fit_rows=fit_rows,
        targets=targets,
        excluded=_pairs(fit_rows),
        catalog=_catalog(rows),
        indexed_users=np.asarray(pd.unique(rows["user_id"].to_numpy(dtype=object))),
    )


def _catalog(rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.unique(rows["item_id"].to_numpy(dtype=object)), dtype=object)


def _pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """Distinct (user_id, item_id) pairs, in order of first appearance."""
    pairs = rows[["user_id", "item_id"]].drop_duplicates()
    return pairs.astype(object).reset_index(drop=True)


def _anti_join(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """Rows of `left` whose (user_id, item_id) pair is not in `right`."""
    merged = left.merge(right, on=["user_id", "item_id"], how="left", indicator=True)
    kept = merged[merged["_merge"] == "left_only"]
    return kept[["user_id", "item_id"]].reset_index(drop=True)


def _pairs_matrix(
    pairs: pd.DataFrame, row_of_user: dict[str, int], items: IdIndex, shape: tuple[int, int]
) -> sp.csr_matrix:
    rows = np.fromiter(
        (row_of_user.get(u, -1) for u in pairs["user_id"]), dtype=np.int64, count=len(pairs)
    )
    cols = items.encode(pairs["item_id"].to_numpy(dtype=object))
    keep = (rows >= 0) & (cols >= 0)
    data = np.ones(int(keep.sum()), dtype=bool)
    matrix = sp.csr_matrix((data, (rows[keep], cols[keep])), shape=shape, dtype=bool)
    matrix.sum_duplicates()
    return matrix
