"""Loaders for the GroupLens MovieLens releases ml-100k, ml-1m and ml-latest-small.

Each loader reads `<data_dir>/<name>/` as unpacked from GroupLens's zip and returns a
`Dataset` whose interactions keep the file's row order; a rating is one positive interaction
(weight `EVENT_WEIGHTS["rating"]`), its value kept in the extra `rating` column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from batch.data import Dataset, DatasetError
from batch.datasets.frames import (
    duplicated_ids,
    first_seen_users,
    interactions_frame,
    items_frame,
    require_present,
    split_genres,
    split_title_year,
    to_number,
)
from batch.datasets.rows import RawRows, RowErrors, read_csv_rows, read_delimited
from core.rules import EVENT_WEIGHTS

# ml-100k's genre order when u.genre is absent (u.genre lists the same names, by flag index).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# ml-1m's users.dat stores occupations as codes; its README gives the names.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
_LOW_RATING, _HIGH_RATING = 0.5, 5.0


def dataset_dir(name: str, data_dir: Path, required: tuple[str, ...]) -> Path:
    """`<data_dir>/<name>`, or a `DatasetError` saying where it looked and how to get the data."""
    folder = Path(data_dir).expanduser() / name
    for filename in required:
        if not (folder / filename).is_file():
            raise DatasetError(
                f"{name} not found: no {folder / filename}. Download it with "
                f"`recsys data download {name}`, or set RECSYS_DATA_DIR to a directory that "
                f"holds {name}/ (looked in {Path(data_dir).expanduser()})."
            )
    return folder


def load_ml_100k(data_dir: Path, *, skip_malformed: bool = False) -> Dataset:
    """Load MovieLens 100K (u.data, u.item, u.user, u.genre) from `<data_dir>/ml-100k`.

    Parameters
    ----------
    data_dir
        Directory holding the unpacked `ml-100k/` folder.
    skip_malformed
        Skip and count malformed rows instead of raising `DatasetError` on the first one.

    Returns
    -------
    Dataset
        Ratings in file order; items with genres from the flags (the flag "unknown" means
        no genre) and the year from the title, else from the release date; users with age,
        gender, occupation and zip_code.
    """
    folder = dataset_dir("ml-100k", data_dir, ("u.data", "u.item"))
    errors = RowErrors(skip_malformed)
    ratings = read_delimited(
        folder / "u.data", sep="\t", n_fields=4, errors=errors,
        names=("user_id", "item_id", "rating", "ts"),
    )  # fmt: skip
    interactions = _ratings(ratings, errors)

    genre_names = _ml100k_genres(folder / "u.genre", errors)
    item_rows = read_delimited(
        folder / "u.item", sep="|", n_fields=5 + len(genre_names), errors=errors,
        encoding="latin-1",
        names=("item_id", "title", "release_date", "video_release_date", "url", *genre_names),
    )  # fmt: skip
    item_rows = require_present(item_rows, ["item_id"], errors)
    item_rows = errors.reject(
        item_rows,
        duplicated_ids(item_rows.fields["item_id"]),
        "duplicate item_id {value}",
        item_rows.fields["item_id"],
    )
    flags = item_rows.fields[list(genre_names)]
    not_binary = ~flags.isin(["0", "1"]).all(axis=1).to_numpy()
    item_rows = errors.reject(item_rows, not_binary, "genre flags must be 0 or 1")
    flag_matrix = item_rows.fields[list(genre_names)].to_numpy() == "1"
    genres = pd.Series(
        [
            tuple(g for g, on in zip(genre_names, row, strict=True) if on and g != "unknown")
            for row in flag_matrix
        ],
        dtype=object,
    )
    title, year = split_title_year(item_rows.fields["title"])
    # Titles without a year (e.g. "unknown") fall back to the release date "01-Jan-1995".
    released = pd.to_numeric(item_rows.fields["release_date"].str.strip().str[-4:], errors="coerce")
    year = year.fillna(pd.Series(released.to_numpy(), dtype="Int64"))
    items = items_frame(item_rows.fields["item_id"], title, genres, year)

    users = None
    if (folder / "u.user").is_file():
        user_rows = read_delimited(
            folder / "u.user", sep="|", n_fields=5, errors=errors,
            names=("user_id", "age", "gender", "occupation", "zip_code"),
        )  # fmt: skip
        user_rows = require_present(user_rows, ["user_id"], errors)
        user_rows = to_number(user_rows, "age", errors, integer=True, low=0, high=150)
        users = _users_frame(user_rows.fields)
    return _finish("ml-100k", folder / "u.data", interactions, items, users, errors)


def load_ml_1m(data_dir: Path, *, skip_malformed: bool = False) -> Dataset:
    """Load MovieLens 1M (ratings.dat, movies.dat, users.dat; "::"-separated, latin-1).

    Parameters
    ----------
    data_dir
        Directory holding the unpacked `ml-1m/` folder.
    skip_malformed
        Skip and count malformed rows instead of raising `DatasetError` on the first one.

    Returns
    -------
    Dataset
        Ratings in file order; items with "A|B" genres and the year from the title; users with
        gender, age (the lower bound of the release's age bucket), occupation (named from its
        code) and zip_code.
    """
    folder = dataset_dir("ml-1m", data_dir, ("ratings.dat", "movies.dat"))
    errors = RowErrors(skip_malformed)
    ratings = read_delimited(
        folder / "ratings.dat", sep="::", n_fields=4, errors=errors, encoding="latin-1",
        names=("user_id", "item_id", "rating", "ts"),
    )  # fmt: skip
    interactions = _ratings(ratings, errors)
    movie_rows = read_delimited(
        folder / "movies.dat", sep="::", n_fields=3, errors=errors, encoding="latin-1",
        names=("item_id", "title", "genres"),
    )  # fmt: skip
    items = _movies(movie_rows, errors)
    users = None
    if (folder / "users.dat").is_file():
        user_rows = read_delimited(
            folder / "users.dat", sep="::", n_fields=5, errors=errors, encoding="latin-1",
            names=("user_id", "gender", "age", "occupation", "zip_code"),
        )  # fmt: skip
        user_rows = require_present(user_rows, ["user_id"], errors)
        user_rows = to_number(user_rows, "age", errors, integer=True, low=0, high=150)
        user_rows = to_number(
            user_rows, "occupation", errors, integer=True, low=0, high=len(ML1M_OCCUPATIONS) - 1
        )
        fields = user_rows.fields.copy()
        fields["occupation"] = [ML1M_OCCUPATIONS[code] for code in fields["occupation"]]
        users = _users_frame(fields[["user_id", "age", "gender", "occupation", "zip_code"]])
    return _finish("ml-1m", folder / "ratings.dat", interactions, items, users, errors)


def load_ml_latest_small(data_dir: Path, *, skip_malformed: bool = False) -> Dataset:
    """Load MovieLens latest-small (ratings.csv, movies.csv; quoted CSV, UTF-8).

    Parameters
    ----------
    data_dir
        Directory holding the unpacked `ml-latest-small/` folder.
    skip_malformed
        Skip and count malformed rows instead of raising `DatasetError` on the first one.

    Returns
    -------
    Dataset
        Ratings in file order; items with "A|B" genres ("(no genres listed)" = none) and the
        year from the title; users with no features (each rating user once).
    """
    folder = dataset_dir("ml-latest-small", data_dir, ("ratings.csv", "movies.csv"))
    errors = RowErrors(skip_malformed)
    ratings = read_csv_rows(folder / "ratings.csv", errors=errors)
    _require_columns(ratings, ("userId", "movieId", "rating", "timestamp"))
    ratings.fields = ratings.fields.rename(
        columns={"userId": "user_id", "movieId": "item_id", "timestamp": "ts"}
    )
    interactions = _ratings(ratings, errors)
    movie_rows = read_csv_rows(folder / "movies.csv", errors=errors)
    _require_columns(movie_rows, ("movieId", "title", "genres"))
    movie_rows.fields = movie_rows.fields.rename(columns={"movieId": "item_id"})
    items = _movies(movie_rows, errors)
    users = first_seen_users(interactions["user_id"])
    return _finish("ml-latest-small", folder / "ratings.csv", interactions, items, users, errors)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "ml-100k": load_ml_100k,
    "ml-1m": load_ml_1m,
    "ml-latest-small": load_ml_latest_small,
}


def _ratings(rows: RawRows, errors: RowErrors) -> pd.DataFrame:
    rows = require_present(rows, ["user_id", "item_id"], errors)
    rows = to_number(rows, "rating", errors, low=_LOW_RATING, high=_HIGH_RATING)
    rows = to_number(rows, "ts", errors, integer=True, low=0)
    f = rows.fields
    return interactions_frame(
        f["user_id"].str.strip(),
        f["item_id"].str.strip(),
        f["ts"].to_numpy(),
        "rating",
        np.full(len(f), EVENT_WEIGHTS["rating"], dtype=np.float32),
        extra={"rating": f["rating"].to_numpy(dtype=np.float32)},
    )


def _movies(rows: RawRows, errors: RowErrors) -> pd.DataFrame:
    rows = require_present(rows, ["item_id"], errors)
    ids = rows.fields["item_id"].str.strip()
    rows = errors.reject(rows, duplicated_ids(ids), "duplicate item_id {value}", ids)
    title, year = split_title_year(rows.fields["title"])
    return items_frame(
        rows.fields["item_id"].str.strip(), title, split_genres(rows.fields["genres"]), year
    )


def _ml100k_genres(path: Path, errors: RowErrors) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    rows = read_delimited(
        path, sep="|", n_fields=2, errors=errors, encoding="latin-1", names=("name", "index")
    )
    rows = to_number(rows, "index", errors, integer=True, low=0)
    order = np.argsort(rows.fields["index"].to_numpy(), kind="stable")
    return tuple(rows.fields["name"].str.strip().to_numpy()[order])


def _users_frame(fields: pd.DataFrame) -> pd.DataFrame:
    users = fields.reset_index(drop=True).copy()
    users["user_id"] = users["user_id"].str.strip().astype("str")
    users["age"] = pd.Series(users["age"], dtype="Int64")
    return users


def _require_columns(rows: RawRows, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in rows.fields.columns]
    if missing:
        raise DatasetError(
            f"{rows.path}:1: header lacks columns {missing} (has {list(rows.fields.columns)})"
        )


def _finish(
    name: str,
    ratings_path: Path,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None,
    errors: RowErrors,
) -> Dataset:
    if interactions.empty:
        detail = f" ({errors.skipped} malformed rows skipped)" if errors.skipped else ""
        raise DatasetError(f"{name}: {ratings_path} has no interaction rows{detail}")
    errors.log_summary(name)
    return Dataset(name, interactions, items, users, skipped_rows=errors.skipped)
