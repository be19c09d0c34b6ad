"""Turn item and user metadata into the integer inputs of the towers.

Every vocabulary is learnt once at fit time and saved with the model as plain JSON, so that an
item or user described later (a brand-new item, an online user) is encoded exactly as the
catalog was. Unknown values map to a reserved index (0) rather than failing.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# Index 0 of every table is padding / unknown, so an all-zero row means "no information".
PAD = 0
MAX_GENRES = 8
MAX_TITLE_TOKENS = 12
YEAR_BUCKET_WIDTH = 5
# Common words carry no taste signal but would land in many hash buckets.
_STOPWORDS = frozenset({"the", "a", "an", "of", "and", "in", "on", "to", "for", "la", "le", "les"})
_TRAILING_YEAR = re.compile(r"\(\d{4}\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")
# A user value seen fewer times than this gets no embedding of its own (e.g. zip codes).
MIN_USER_VALUE_COUNT = 5
NUMERIC_USER_BUCKETS = 6


def title_tokens(title: object) -> list[str]:
    """Lower-cased word tokens of a title, without the "(1995)" suffix and stopwords."""
    if not isinstance(title, str):
        return []
    text = _TRAILING_YEAR.sub("", title).lower()
    return [t for t in _TOKEN.findall(text) if t not in _STOPWORDS]


def stable_bucket(token: str, buckets: int) -> int:
    """A hash bucket in 1..buckets that is the same in every process (crc32, not hash())."""
    return 1 + zlib.crc32(token.encode("utf-8")) % buckets


@dataclass
class ItemInputs:
    """Tower inputs of a set of items, one row each; 0 is padding / unknown throughout."""

    genres: np.ndarray  # (n, MAX_GENRES) int64 genre vocab indices
    year: np.ndarray  # (n,) int64 year bucket
    title: np.ndarray  # (n, MAX_TITLE_TOKENS) int64 hash buckets


@dataclass
class ItemFeatureEncoder:
    """Vocabulary of genres, year buckets and title hash buckets, learnt from the catalog."""

    genres: list[str]
    year_min: int
    n_year_buckets: int
    hash_buckets: int

    @classmethod
    def fit(cls, items: pd.DataFrame, hash_buckets: int) -> ItemFeatureEncoder:
        genres = sorted({g for gs in items["genres"] for g in _genre_tuple(gs)})
        years = pd.to_numeric(items["year"], errors="coerce").dropna()
        year_min = int(years.min()) if len(years) else 0
        year_max = int(years.max()) if len(years) else 0
        n_buckets = (year_max - year_min) // YEAR_BUCKET_WIDTH + 1
        return cls(genres, year_min, n_buckets, hash_buckets)

    @property
    def n_genres(self) -> int:
        return len(self.genres) + 1

    @property
    def n_years(self) -> int:
        # + unknown (0); years outside the fitted range clip to the edge buckets.
        return self.n_year_buckets + 1

    def encode(self, items: pd.DataFrame) -> ItemInputs:
        """Encode `items` (columns title, genres, year; missing columns count as unknown)."""
        n = len(items)
        lookup = {g: i + 1 for i, g in enumerate(self.genres)}
        genres = np.zeros((n, MAX_GENRES), dtype=np.int64)
        title = np.zeros((n, MAX_TITLE_TOKENS), dtype=np.int64)
        genre_col = items["genres"] if "genres" in items else pd.Series([()] * n)
        title_col = items["title"] if "title" in items else pd.Series([None] * n)
        for row, value in enumerate(genre_col):
            known = [lookup[g] for g in _genre_tuple(value) if g in lookup][:MAX_GENRES]
            genres[row, : len(known)] = known
        for row, value in enumerate(title_col):
            buckets = [stable_bucket(t, self.hash_buckets) for t in title_tokens(value)]
            title[row, : min(len(buckets), MAX_TITLE_TOKENS)] = buckets[:MAX_TITLE_TOKENS]
        year_col = items["year"] if "year" in items else pd.Series([None] * n)
        years = pd.to_numeric(pd.Series(np.asarray(year_col, dtype=object)), errors="coerce")
        bucket = ((years - self.year_min) // YEAR_BUCKET_WIDTH).clip(0, self.n_year_buckets - 1)
        year = (bucket + 1).fillna(PAD).to_numpy(dtype=np.int64)
        return ItemInputs(genres=genres, year=year, title=title)

    def to_json(self) -> dict[str, Any]:
        return {
            "genres": self.genres,
            "year_min": self.year_min,
            "n_year_buckets": self.n_year_buckets,
            "hash_buckets": self.hash_buckets,
        }

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> ItemFeatureEncoder:
        return cls(
            list(spec["genres"]),
            int(spec["year_min"]),
            int(spec["n_year_buckets"]),
            int(spec["hash_buckets"]),
        )


def _genre_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list | np.ndarray):
        return tuple(str(g) for g in value)
    return ()


@dataclass
class UserColumn:
    """One user feature: categorical values, or numeric values cut into quantile buckets."""

    name: str
    values: list[str]  # categorical vocabulary (empty for numeric columns)
    edges: list[float]  # numeric bucket edges (empty for categorical columns)

    @property
    def size(self) -> int:
        return (len(self.edges) + 1 if self.edges else len(self.values)) + 1

    def encode(self, raw: pd.Series) -> np.ndarray:
        if self.edges:
            numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            codes = np.searchsorted(np.asarray(self.edges), numbers, side="right") + 1
            return np.where(np.isnan(numbers), PAD, codes).astype(np.int64)
        lookup = {v: i + 1 for i, v in enumerate(self.values)}
        return np.array(
            [lookup.get(str(v), PAD) if not _missing(v) else PAD for v in raw], dtype=np.int64
        )


@dataclass
class UserFeatureEncoder:
    """Every usable column of `TrainData.user_features`; empty when there are none."""

    columns: list[UserColumn]

    @classmethod
    def fit(cls, users: pd.DataFrame | None) -> UserFeatureEncoder:
        if users is None:
            return cls([])
        columns = []
        for name in users.columns:
            if name in ("user_id", "user_idx"):
                continue
            raw = users[name]
            if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
                numbers = pd.to_numeric(raw, errors="coerce").dropna()
                if numbers.nunique() < 2:
                    continue
                quantiles = np.linspace(0, 1, NUMERIC_USER_BUCKETS + 1)[1:-1]
                edges = sorted(set(np.quantile(numbers, quantiles).tolist()))
                columns.append(UserColumn(str(name), [], edges))
            else:
                counts = raw.dropna().astype(str).value_counts()
                kept = sorted(counts[counts >= MIN_USER_VALUE_COUNT].index.tolist())
                if kept:
                    columns.append(UserColumn(str(name), kept, []))
        return cls(columns)

    @property
    def sizes(self) -> list[int]:
        return [c.size for c in self.columns]

    def encode(self, users: pd.DataFrame | None, n: int) -> np.ndarray:
        """(n x n_columns) codes; absent frames or columns encode as unknown."""
        codes = np.zeros((n, len(self.columns)), dtype=np.int64)
        if users is None:
            return codes
        for j, column in enumerate(self.columns):
            if column.name in users:
                codes[:, j] = column.encode(users[column.name].reset_index(drop=True))
        return codes

    def encode_one(self, features: dict[str, Any] | None) -> np.ndarray:
        frame = None if features is None else pd.DataFrame([features])
        codes: np.ndarray = self.encode(frame, 1)[0]
        return codes

    def to_json(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "values": c.values, "edges": c.edges} for c in self.columns]

    @classmethod
    def from_json(cls, spec: list[dict[str, Any]]) -> UserFeatureEncoder:
        return cls([UserColumn(c["name"], list(c["values"]), list(c["edges"])) for c in spec])


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
