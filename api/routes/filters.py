"""Query and path parameters shared by the routes that list items."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Path, Query

from schemas.events import MAX_ID_LENGTH

MAX_FILTER_VALUES = 100

IdPath = Path(min_length=1, max_length=MAX_ID_LENGTH)
ItemIds = Query(
    max_length=MAX_FILTER_VALUES,
    description="Item ids to leave out (repeat the parameter, or separate with commas).",
)


def Genres(description: str) -> Any:  # noqa: N802 - reads like the Query(...) it returns
    return Query(
        max_length=MAX_FILTER_VALUES,
        description=f"{description} Repeat the parameter, or separate with commas.",
    )


def split_values(values: Iterable[str] | None) -> tuple[str, ...]:
    """`?genres=Comedy,Drama&genres=War` -> ("Comedy", "Drama", "War"), without repeats."""
    parts = (part.strip() for value in values or () for part in value.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))
