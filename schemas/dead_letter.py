"""What lands on `events.dlq`: the original bytes, why they were rejected, and where from."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str = Field(description="Why the message was rejected, field by field.")
    field: str = Field(description="The first field at fault ('body' for the whole message).")
    source_topic: str
    source_partition: int
    source_offset: int
    original_b64: str = Field(description="The rejected message value, base64-encoded.")
    rejected_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: int = 1

    @classmethod
    def for_message(
        cls, original: bytes, error: str, field: str, topic: str, partition: int, offset: int
    ) -> DeadLetter:
        return cls(
            error=error,
            field=field,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            original_b64=base64.b64encode(original).decode(),
        )

    @property
    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
