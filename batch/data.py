"""The in-memory shape of a dataset, shared by loaders, protocols, models and publishing.

Ids stay the dataset's own ids as strings everywhere outside model internals; models map them
to dense indices with `IdIndex` and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from batch.errors import DatasetError as DatasetError  # re-exported: where callers look for it

if TYPE_CHECKING:  # pandas is imported where frames are made; keeps light importers fast
    import pandas as pd

# Columns of `Dataset.interactions`, in file order (the protocols rely on that order for ties).
INTERACTION_COLUMNS = ("user_id", "item_id", "ts", "event_type", "weight")
# Columns of `Dataset.impressions`: one row per item shown, ts in epoch seconds.
IMPRESSION_COLUMNS = ("recommendation_id", "user_id", "item_id", "ts", "position")
# Columns of `Dataset.items`; `genres` holds a tuple of strings, `year` may be <NA>.
ITEM_COLUMNS = ("item_id", "title", "genres", "year")


@dataclass
class Dataset:
    """Interactions plus item (and optional user) metadata.

    interactions: user_id (str), item_id (str), ts (int64 epoch seconds, UTC),
        event_type (str: view|click|purchase|rating), weight (float32). Row order is file order.
    items: item_id (str), title (str), genres (tuple[str, ...]), year (Int64, nullable).
    users: user_id (str) plus whatever features the source has (age, gender, occupation...).
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    skipped_rows: int = 0
    # What users were shown (`IMPRESSION_COLUMNS`), where the source keeps it: the event
    # archive does, the datasets on file do not (`batch.ranking.impressions`).
    impressions: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        if self.interactions.empty:
            raise DatasetError(f"dataset {self.name!r} has no interactions")
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DatasetError(f"dataset {self.name!r}: interactions lack columns {missing}")

    @property
    def n_interactions(self) -> int:
        return len(self.interactions)

    def chronological(self) -> pd.DataFrame:
        """Interactions ordered by (ts, original row order): the order every protocol uses."""
        return self.interactions.sort_values("ts", kind="stable").reset_index(drop=True)


@dataclass
class IdIndex:
    """A stable mapping between external string ids and dense 0..n-1 indices."""

    ids: np.ndarray  # object array of str, position = index
    _lookup: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._lookup = {str(v): i for i, v in enumerate(self.ids)}

    @classmethod
    def from_values(cls, values: pd.Series | np.ndarray) -> IdIndex:
        """Indices in order of first appearance (deterministic for a given input)."""
        import pandas as pd

        return cls(np.asarray(pd.unique(np.asarray(values, dtype=object)), dtype=object))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._lookup

    def index(self, key: str) -> int:
        return self._lookup[key]

    def get(self, key: str, default: int = -1) -> int:
        return self._lookup.get(key, default)

    def encode(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Map ids to indices; unknown ids become -1."""
        lookup = self._lookup
        return np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int64, count=len(values))
