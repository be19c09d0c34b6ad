"""Validating raw string fields and assembling them into the `Dataset` frames.

Every check works on whole columns; rows that fail go to `RowErrors`, which either raises
with the row's file and line or drops and counts them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from batch.data import ITEM_COLUMNS
from batch.datasets.rows import RawRows, RowErrors
from core.rules import EVENT_WEIGHTS

# "Toy Story (1995)", "Fawlty Towers (1975-1979)", "Babylon 5" (no year) and trailing blanks.
_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$"


def require_present(rows: RawRows, columns: Iterable[str], errors: RowErrors) -> RawRows:
    """Reject rows where any of `columns` is empty or blank."""
    for column in columns:
        values = rows.fields[column]
        empty = np.array(values.isna(), dtype=bool)
        if not pd.api.types.is_numeric_dtype(values):  # typed Parquet columns have no blanks
            empty |= np.asarray(values.str.strip() == "", dtype=bool)
        rows = errors.reject(rows, empty, f"empty {column}")
    return rows


def to_number(
    rows: RawRows,
    column: str,
    errors: RowErrors,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> RawRows:
    """Replace a text column by its numeric value; reject non-numbers and values out of range."""
    raw = rows.fields[column]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    kind = "an integer" if integer else "a number"
    bad = ~np.isfinite(values)
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    rows = errors.reject(rows, bad, f"{column} {{value}} is not {kind}", raw)
    values = values[~bad]
    if low is not None or high is not None:
        out = np.zeros(len(values), dtype=bool)
        if low is not None:
            out |= values < low
        if high is not None:
            out |= values > high
        raw = rows.fields[column]
        rows = errors.reject(rows, out, f"{column} {{value}} is outside [{low}, {high}]", raw)
        values = values[~out]
    fields = rows.fields.copy()
    fields[column] = values.astype(np.int64) if integer else values
    return RawRows(rows.path, fields, rows.lines)


def interactions_frame(
    user_id: pd.Series,
    item_id: pd.Series,
    ts: np.ndarray,
    event_type: pd.Series | str,
    weight: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Build `Dataset.interactions` in the contract's column order and dtypes.

    Without `weight`, each row weighs `EVENT_WEIGHTS[event_type]`.
    """
    n = len(user_id)
    if isinstance(event_type, str):
        events = pd.Series([event_type] * n, dtype="str") if n else pd.Series([], dtype="str")
    else:
        events = event_type.astype("str").reset_index(drop=True)
    if weight is None:
        weight = events.map(EVENT_WEIGHTS).to_numpy(dtype=np.float32)
    frame = pd.DataFrame(
        {
            "user_id": user_id.astype("str").reset_index(drop=True),
            "item_id": item_id.astype("str").reset_index(drop=True),
            "ts": np.asarray(ts, dtype=np.int64),
            "event_type": events,
            "weight": np.asarray(weight, dtype=np.float32),
        }
    )
    for name, values in (extra or {}).items():
        frame[name] = np.asarray(values) if not isinstance(values, pd.Series) else values.to_numpy()
    return frame


def split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Split "Name (1995)" into ("Name", 1995); titles without a year keep their text, year <NA>."""
    titles = titles.astype("str").str.strip()
    parts = titles.str.extract(_TITLE_YEAR)
    has_year = parts["year"].notna()
    clean = titles.where(~has_year, parts["title"]).astype("str")
    year = pd.to_numeric(parts["year"], errors="coerce").astype("Int64")
    return clean.reset_index(drop=True), year.reset_index(drop=True)


def split_genres(
    values: pd.Series, sep: str = "|", none_marker: str = "(no genres listed)"
) -> pd.Series:
    """ "A|B" -> ("A", "B"); empty text or `none_marker` -> ()."""

    def to_tuple(text: object) -> tuple[str, ...]:
        if not isinstance(text, str) or text.strip() in ("", none_marker):
            return ()
        return tuple(g.strip() for g in text.split(sep) if g.strip())

    return pd.Series([to_tuple(v) for v in values], dtype=object)


def items_frame(
    item_id: pd.Series,
    title: pd.Series,
    genres: pd.Series,
    year: pd.Series,
    extra: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Build `Dataset.items` in the contract's column order and dtypes."""
    frame = pd.DataFrame(
        {
            "item_id": item_id.astype("str").reset_index(drop=True),
            "title": title.astype("str").reset_index(drop=True),
            "genres": pd.Series(list(genres), dtype=object),
            "year": pd.Series(year, dtype="Int64").reset_index(drop=True),
        },
        columns=list(ITEM_COLUMNS),
    )
    for name, values in (extra or {}).items():
        frame[name] = np.asarray(values) if not isinstance(values, pd.Series) else values.to_numpy()
    return frame


def complete_items(items: pd.DataFrame, item_ids: pd.Series) -> pd.DataFrame:
    """Append a bare row (title = id, no genres, no year) for interaction items lacking metadata."""
    missing = pd.Index(pd.unique(item_ids)).difference(pd.Index(items["item_id"]), sort=False)
    if missing.empty:
        return items
    ids = pd.Series(missing, dtype="str")
    extra = items_frame(
        ids, ids, pd.Series([()] * len(ids), dtype=object), pd.Series([pd.NA] * len(ids))
    )
    return pd.concat([items, extra], ignore_index=True)


def first_seen_users(user_ids: pd.Series) -> pd.DataFrame:
    """A users frame without features: each user once, in order of first appearance."""
    return pd.DataFrame({"user_id": pd.Series(pd.unique(user_ids), dtype="str")})


def duplicated_ids(ids: pd.Series) -> np.ndarray:
    """Rows whose id already appeared above (the first occurrence wins)."""
    return np.asarray(ids.duplicated(keep="first"), dtype=bool)
