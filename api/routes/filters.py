"""Query and path parameters shared by the routes that list items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator

from schemas.events import MAX_ID_LENGTH

MAX_GENRES = 100
# Enough for a client to leave out everything a heavy user has seen (the P3 replay does).
MAX_EXCLUDED_IDS = 1000

IdPath = Path(min_length=1, max_length=MAX_ID_LENGTH)


def _at_most(limit: int, what: str) -> AfterValidator:
    """Counts the values after splitting at commas: a list-length limit on the parameter
    alone would let one comma-separated value carry any number of them."""

    def check(values: list[str] | None) -> list[str] | None:
        if values is not None and len(split_values(values)) > limit:
            raise ValueError(f"at most {limit} {what}")
        return values

    return AfterValidator(check)


ExcludedIds = Annotated[
    list[str] | None,
    Query(
        description=f"Item ids to leave out (repeat the parameter, or separate with commas; "
        f"at most {MAX_EXCLUDED_IDS}).",
    ),
    _at_most(MAX_EXCLUDED_IDS, "item ids"),
]


def Genres(description: str) -> Any:  # noqa: N802 - reads like the Query(...) it returns
    return Query(
        description=f"{description} Repeat the parameter, or separate with commas "
        f"(at most {MAX_GENRES}).",
    )


_GENRES_LIMIT = _at_most(MAX_GENRES, "genres")
OnlyGenres = Annotated[
    list[str] | None, Genres("Only items of any of these genres."), _GENRES_LIMIT
]
ExcludedGenres = Annotated[list[str] | None, Genres("No items of these genres."), _GENRES_LIMIT]


def split_values(values: Iterable[str] | None) -> tuple[str, ...]:
    """`?genres=Comedy,Drama&genres=War` -> ("Comedy", "Drama", "War"), without repeats."""
    parts = (part.strip() for value in values or () for part in value.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))
