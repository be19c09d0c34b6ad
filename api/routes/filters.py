"""Query and path parameters shared by the routes that list items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator

from schemas.events import ID_RULE, MAX_ID_LENGTH, check_id

MAX_GENRES = 100
# Enough for a client to leave out everything a heavy user has seen (the P3 replay does).
MAX_EXCLUDED_IDS = 1000

# The ids events carry, under the same rule (the OpenAPI document shares one `Id` schema).
IdPath = Annotated[
    str,
    Path(min_length=1, max_length=MAX_ID_LENGTH, description=ID_RULE),
    AfterValidator(check_id),
]


def _at_most(limit: int, what: str) -> AfterValidator:
    """Counts the parameter's values as sent and after splitting at commas: a limit on the
    former alone would let one comma-separated value carry any number of them."""

    def check(values: list[str] | None) -> list[str] | None:
        if values is not None and max(len(values), len(split_values(values))) > limit:
            raise ValueError(f"at most {limit} {what}")
        return values

    return AfterValidator(check)


def _list_query(description: str, limit: int) -> Any:
    return Query(
        description=f"{description} Repeat the parameter (at most {limit} times), or separate "
        f"values with commas (at most {limit} distinct values in all).",
        json_schema_extra={"maxItems": limit},
    )


ExcludedIds = Annotated[
    list[str] | None,
    _list_query("Item ids to leave out.", MAX_EXCLUDED_IDS),
    _at_most(MAX_EXCLUDED_IDS, "item ids"),
]


def Genres(description: str) -> Any:  # noqa: N802 - reads like the Query(...) it returns
    return _list_query(description, MAX_GENRES)


_GENRES_LIMIT = _at_most(MAX_GENRES, "genres")
OnlyGenres = Annotated[
    list[str] | None, Genres("Only items of any of these genres."), _GENRES_LIMIT
]
ExcludedGenres = Annotated[list[str] | None, Genres("No items of these genres."), _GENRES_LIMIT]


def split_values(values: Iterable[str] | None) -> tuple[str, ...]:
    """`?genres=Comedy,Drama&genres=War` -> ("Comedy", "Drama", "War"), without repeats."""
    parts = (part.strip() for value in values or () for part in value.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))
