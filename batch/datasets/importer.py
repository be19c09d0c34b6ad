"""Importing any interaction log from CSV or Parquet.

Interactions need the columns user_id, item_id, ts, event_type and may carry weight; ts is
epoch seconds, epoch milliseconds or ISO 8601 text. Item metadata (item_id plus optional
title, genres, year) may come from a second file; items without metadata get a bare row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from batch.data import Dataset, DatasetError
from batch.datasets.frames import (
    complete_items,
    duplicated_ids,
    interactions_frame,
    items_frame,
    require_present,
    split_genres,
    split_title_year,
)
from batch.datasets.rows import RawRows, RowErrors, read_csv_rows
from core.rules import EVENT_WEIGHTS

INTERACTION_FIELDS = ("user_id", "item_id", "ts", "event_type")
_NUMERIC = ("ts", "weight")
# Epoch values at or above this are milliseconds: as seconds it would be the year 5138,
# as milliseconds it is March 1973.
_MILLISECONDS_FROM = 1e11


def import_interactions(
    path: Path,
    items_path: Path | None = None,
    *,
    skip_malformed: bool = False,
    name: str | None = None,
) -> Dataset:
    """Load an interaction log (CSV or Parquet) and optional item metadata as a `Dataset`.

    Parameters
    ----------
    path
        `.csv` or `.parquet` with columns user_id, item_id, ts, event_type[, weight]. A numeric
        ts column is epoch seconds, or milliseconds when its largest value is >= 1e11; text
        is ISO 8601 (naive times are UTC). Empty weights default to `EVENT_WEIGHTS`.
    items_path
        `.csv` or `.parquet` with item_id and optional title, genres ("A|B" or a list),
        year. Default: `<stem>.items.parquet` or `<stem>.items.csv` beside `path`, if any;
        `<stem>.users.*` likewise becomes `Dataset.users`.
    skip_malformed
        Skip and count malformed rows instead of raising `DatasetError` on the first one.
    name
        Dataset name; default: the file's stem.
    """
    path = Path(path).expanduser()
    errors = RowErrors(skip_malformed)
    rows = _read_table(path, errors)
    missing = [c for c in INTERACTION_FIELDS if c not in rows.fields.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing} (has {list(rows.fields.columns)})")
    rows = require_present(rows, ["user_id", "item_id", "ts", "event_type"], errors)
    rows = _parse_event_type(rows, errors)
    rows = _parse_ts(rows, errors)
    rows = _parse_weight(rows, errors)
    f = rows.fields
    interactions = interactions_frame(
        f["user_id"].str.strip(),
        f["item_id"].str.strip(),
        f["ts"].to_numpy(),
        f["event_type"].astype("str"),
        f["weight"].to_numpy(),
    )
    if interactions.empty:
        detail = f" ({errors.skipped} malformed rows skipped)" if errors.skipped else ""
        raise DatasetError(f"{path} has no interaction rows{detail}")

    items_path = items_path or _side_file(path, "items")
    if items_path is not None:
        items = _read_items(Path(items_path).expanduser(), errors)
    else:
        no_text = pd.Series([], dtype="str")
        items = items_frame(
            no_text, no_text, pd.Series([], dtype=object), pd.Series([], dtype="Int64")
        )
    items = complete_items(items, interactions["item_id"])
    users_path = _side_file(path, "users")
    users = _read_users(users_path) if users_path is not None else None
    dataset_name = name or path.name.split(".")[0]
    errors.log_summary(dataset_name)
    return Dataset(dataset_name, interactions, items, users, skipped_rows=errors.skipped)


def _read_table(path: Path, errors: RowErrors) -> RawRows:
    """All columns as text (so every check and error message works the same for both formats)."""
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_rows(path, errors=errors)
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
        # Numeric ts and weight stay numbers (parsing 10M of them back from text takes long).
        text = pd.DataFrame(
            {
                c: frame[c] if c in _NUMERIC and _is_number(frame[c]) else _as_text(frame[c])
                for c in frame.columns
            }
        )
        return RawRows(path, text, np.arange(1, len(frame) + 1, dtype=np.int64))
    raise DatasetError(f"{path}: expected a .csv or .parquet file")


def _is_number(column: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))


def _as_text(column: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        # Timestamps become epoch seconds (naive ones taken as UTC), the numeric rule's input.
        if column.dt.tz is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        seconds = column.to_numpy(dtype="datetime64[s]").astype(np.int64)
        return pd.Series(seconds, index=column.index).astype("str").where(column.notna(), "")
    if pd.api.types.is_float_dtype(column) and column.dropna().mod(1).eq(0).all():
        column = column.astype("Int64")  # 3.0 -> "3", as ids and epoch values read in CSV
    if (
        column.dtype == object
        and column.map(lambda v: isinstance(v, list | tuple | np.ndarray)).any()
    ):
        return column.map(lambda v: "|".join(map(str, v)) if v is not None else "").astype("str")
    return column.astype("str").where(column.notna(), "")


def _parse_event_type(rows: RawRows, errors: RowErrors) -> RawRows:
    """Replace event_type by its lower-cased categorical; reject unknown types.

    Working on the distinct values keeps this fast for millions of rows.
    """
    raw = rows.fields["event_type"]
    codes, uniques = pd.factorize(raw)
    names = pd.Index(uniques).astype("str").str.strip().str.lower()
    bad = ~np.asarray(names.isin(list(EVENT_WEIGHTS)))[codes]
    message = f"event_type {{value}} is not one of {sorted(EVENT_WEIGHTS)}"
    rows = errors.reject(rows, bad, message, raw)
    codes = codes[~bad]
    categories = pd.Index(pd.unique(names))
    events = pd.Categorical.from_codes(categories.get_indexer(names)[codes], categories=categories)
    fields = rows.fields.copy()
    fields["event_type"] = events
    return RawRows(rows.path, fields, rows.lines)


def _parse_ts(rows: RawRows, errors: RowErrors) -> RawRows:
    """Replace the ts text by int64 epoch seconds."""
    raw = rows.fields["ts"]
    if not _is_number(raw):
        raw = raw.str.strip()
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    is_number = np.isfinite(numbers)
    if is_number.all():
        stamps = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[s, UTC]")
    else:
        stamps = pd.to_datetime(raw.where(~is_number), format="ISO8601", utc=True, errors="coerce")
    parsed = stamps.notna().to_numpy()
    rows = errors.reject(
        rows,
        ~(is_number | parsed),
        "ts {value} is neither epoch seconds/milliseconds nor ISO 8601",
        raw,
    )
    keep = is_number | parsed
    numbers, is_number, stamps = numbers[keep], is_number[keep], stamps[keep]
    divisor = 1000.0 if is_number.any() and numbers[is_number].max() >= _MILLISECONDS_FROM else 1.0
    seconds = np.where(is_number, np.floor(np.nan_to_num(numbers) / divisor), 0).astype(np.int64)
    from_text = stamps.to_numpy(dtype="datetime64[s]", na_value=np.datetime64(0, "s")).astype(
        np.int64
    )
    return _with_column(rows, "ts", np.where(is_number, seconds, from_text))


def _parse_weight(rows: RawRows, errors: RowErrors) -> RawRows:
    """Replace (or add) the weight column as float32; an empty weight is the event type's."""
    events = rows.fields["event_type"]  # categorical: mapping touches 4 categories, not 10M
    defaults = events.map(EVENT_WEIGHTS).to_numpy(dtype=np.float64)
    if "weight" not in rows.fields.columns:
        return _with_column(rows, "weight", defaults.astype(np.float32))
    column = rows.fields["weight"]
    if _is_number(column):
        raw, given = column, column.notna()
    else:
        raw = column.fillna("").str.strip()
        given = raw != ""
    values = pd.to_numeric(raw.where(given), errors="coerce").to_numpy(dtype=np.float64)
    bad = given.to_numpy() & ~np.isfinite(values)
    rows = errors.reject(rows, bad, "weight {value} is not a number", raw)
    values, given, defaults = values[~bad], given.to_numpy()[~bad], defaults[~bad]
    return _with_column(rows, "weight", np.where(given, values, defaults).astype(np.float32))


def _with_column(rows: RawRows, name: str, values: np.ndarray) -> RawRows:
    fields = rows.fields.copy()
    fields[name] = values
    return RawRows(rows.path, fields, rows.lines)


def _read_items(path: Path, errors: RowErrors) -> pd.DataFrame:
    rows = _read_table(path, errors)
    if "item_id" not in rows.fields.columns:
        raise DatasetError(f"{path}: missing column 'item_id' (has {list(rows.fields.columns)})")
    rows = require_present(rows, ["item_id"], errors)
    ids = rows.fields["item_id"].str.strip()
    rows = errors.reject(rows, duplicated_ids(ids), "duplicate item_id {value}", ids)
    if "year" in rows.fields.columns:
        raw = rows.fields["year"].fillna("").str.strip()
        years = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        bad = (raw != "") & (years.isna() | (years % 1 != 0))
        rows = errors.reject(rows, bad.to_numpy(), "year {value} is not an integer", raw)
    f = rows.fields
    ids = f["item_id"].str.strip()
    if "title" in f.columns:
        title, year = split_title_year(f["title"].fillna(""))
    else:
        title, year = ids, pd.Series([pd.NA] * len(f), dtype="Int64")
    if "year" in f.columns:  # an explicit year wins over one parsed from the title
        raw = f["year"].fillna("").str.strip()
        explicit = pd.to_numeric(raw.where(raw != ""), errors="coerce").astype("Int64")
        year = explicit.reset_index(drop=True).fillna(year)
    if "genres" in f.columns:
        genres = split_genres(f["genres"])
    else:
        genres = pd.Series([()] * len(f), dtype=object)
    return items_frame(ids, title, genres, year)


def _read_users(path: Path) -> pd.DataFrame:
    frame = (
        pd.read_parquet(path)
        if path.suffix.lower() == ".parquet"
        else pd.read_csv(path, dtype={"user_id": "str"})
    )
    if "user_id" not in frame.columns:
        raise DatasetError(f"{path}: missing column 'user_id'")
    frame["user_id"] = frame["user_id"].astype("str")
    return frame


def _side_file(path: Path, kind: str) -> Path | None:
    stem = path.name.split(".")[0]
    for suffix in (".parquet", ".csv"):
        candidate = path.with_name(f"{stem}.{kind}{suffix}")
        if candidate.is_file() and candidate != path:
            return candidate
    return None
