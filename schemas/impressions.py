"""Impressions: what a `GET /recommend` answer showed to whom, recorded by the API on its own
topic (`IMPRESSION_TOPIC`, keyed by user id like the events) off the request path.

One impression per answer: its `recommendation_id` (also in the response, and on the clicks
and purchases that came from it), the items with their positions and sources, the model
version and the request's parameters. The stream worker counts impressions per user and item
for feedback fatigue; the archiver keeps them (one row per shown item) for training.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from schemas.codec import EventDecodeError, FieldError, field_errors
from schemas.events import MAX_ID_LENGTH, parse_timestamp

IMPRESSION_SCHEMA_VERSION = 1
# A /recommend answer has at most 100 items (its `k`).
MAX_IMPRESSED_ITEMS = 100
MAX_IMPRESSION_BYTES = 64 * 1024


class ImpressedItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: StrictStr = Field(min_length=1, max_length=MAX_ID_LENGTH)
    position: int = Field(ge=0, description="0 for the first item of the answer.")
    source: StrictStr = Field(description="personalized, trending or popular.")
    score: float


class ImpressionRequest(BaseModel):
    """The parameters of the request that was answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(ge=1)
    diversity: float
    genres: list[StrictStr] = Field(default_factory=list)
    exclude_genres: list[StrictStr] = Field(default_factory=list)
    excluded_ids: int = Field(0, ge=0, description="How many ids the request excluded.")
    explain: bool = False


class ImpressionEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: Literal["impression"] = "impression"
    schema_version: int = Field(IMPRESSION_SCHEMA_VERSION, ge=1, le=IMPRESSION_SCHEMA_VERSION)
    recommendation_id: uuid.UUID = Field(description="As in the answer; the idempotency key.")
    user_id: StrictStr = Field(min_length=1, max_length=MAX_ID_LENGTH)
    ts: datetime = Field(description="When the answer was given.")
    model_version: StrictStr | None = None
    source: StrictStr = Field(description="The answer's source (the first of the chain used).")
    reason: StrictStr | None = None
    items: list[ImpressedItem] = Field(max_length=MAX_IMPRESSED_ITEMS)
    request: ImpressionRequest
    experiment: StrictStr | None = Field(None, description="The running experiment, if any.")
    variant: StrictStr | None = Field(None, description="Its arm that served the answer.")

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: object) -> datetime:
        return parse_timestamp(value)

    @property
    def event_id(self) -> uuid.UUID:
        """Impressions are de-duplicated on their recommendation id."""
        return self.recommendation_id

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


def encode_impression(impression: ImpressionEvent) -> bytes:
    data: bytes = impression.model_dump_json(exclude_none=True).encode()
    return data


def decode_impression(data: bytes) -> ImpressionEvent:
    """Parse and validate an impression; raise `EventDecodeError` naming the field at fault."""
    if len(data) > MAX_IMPRESSION_BYTES:
        raise EventDecodeError(
            [
                FieldError(
                    "body", f"impression is {len(data)} bytes; the limit is {MAX_IMPRESSION_BYTES}"
                )
            ]
        )
    try:
        return ImpressionEvent.model_validate_json(data)
    except ValidationError as exc:
        raise EventDecodeError(field_errors(exc)) from None
