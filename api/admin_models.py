"""Response bodies of the operator routes (`api.routes.admin`), which the console reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.models import WindowSummary


class ModelVersionInfo(BaseModel):
    """One kept version: its training figures as `recsys models show` prints them."""

    version: str
    active: bool
    published_at: float = Field(description="When it was published (epoch s).")
    model: str | None = Field(None, description="The algorithm (null: its metadata is gone).")
    dataset: str | None = None
    trained_until: int | None = Field(
        None, description="Time of the last training interaction (epoch s)."
    )
    dim: int | None = None
    users: int | None = None
    items: int | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Training parameters.")
    decision: dict[str, Any] | None = Field(
        None, description="The retraining gate's decision about it, if it was a candidate."
    )
    mlflow_run_id: str | None = Field(
        None, description="The MLflow run that logged its training (tracking on)."
    )
    mlflow_run_url: str | None = Field(
        None,
        description="That run's page, when RECSYS_MLFLOW_TRACKING_URI is a tracking server "
        "(http or https); a local store has no page to link.",
    )


class ModelVersions(BaseModel):
    active: str | None = Field(description="The active version (null: none is published).")
    versions: list[ModelVersionInfo] = Field(description="The kept versions, newest first.")
    decisions: list[dict[str, Any]] = Field(
        description="The retraining gate's newest decisions, newest first (`recsys models "
        "decisions`)."
    )


class ModelSwitch(BaseModel):
    previous: str | None = Field(description="The version that was active before.")
    active: str = Field(description="The version active now.")


class PartitionLag(BaseModel):
    topic: str
    published: int = Field(description="Messages in the topic's partitions (end offsets).")
    applied: int = Field(
        description="Of those, how many the stream workers have dealt with (applied, or sent to "
        "the dead-letter topic)."
    )
    backlog: int = Field(description="Published and not yet dealt with.")


class Freshness(BaseModel):
    backlog: int = Field(description="Events published and not yet applied, all topics.")
    oldest_pending_s: float = Field(
        description="Age of the oldest event not yet applied (Kafka's timestamp); 0 when the "
        "workers have caught up."
    )
    topics: list[PartitionLag]


class DeadLetterSummary(BaseModel):
    error: str
    field: str
    source_topic: str
    source_partition: int
    source_offset: int
    rejected_at: datetime


class DeadLetters(BaseModel):
    count: int = Field(description="Messages kept on the dead-letter topic.")
    newest: list[DeadLetterSummary] = Field(description="The newest ones, newest first.")


class ArchiveLag(BaseModel):
    group: str = Field(description="The archivers' consumer group.")
    lag: int = Field(description="Messages not yet committed to the archive, all partitions.")
    partitions: int = Field(description="Partitions the group has committed offsets for.")


class EventRates(BaseModel):
    window_s: float = Field(description="The span the rates are measured over (seconds).")
    per_s: dict[str, float] = Field(description="Events per second by event type.")
    counts: dict[str, int] = Field(description="Events counted over the span, by event type.")


class StreamStatus(BaseModel):
    """What the stream side is doing, read from where the workers already write it: Redis (item
    windows, applied offsets) and Kafka (end offsets, the dead-letter topic, the archivers'
    committed offsets). A part that could not be read is null and named in `unavailable`."""

    rates: EventRates | None
    freshness: Freshness | None
    dead_letters: DeadLetters | None
    archive: ArchiveLag | None = Field(
        description="Null until an archiver has committed (or when Kafka is unreachable)."
    )
    unavailable: list[str] = Field(
        default_factory=list, description="Parts that could not be read, with the reason."
    )


class ItemDetail(BaseModel):
    item_id: str
    model_version: str | None = Field(description="The active version the payload is from.")
    in_model: bool = Field(description="Whether the active version has the item.")
    payload: dict[str, Any] = Field(description="Title, genres, year, popularity.")
    trending_score: float = Field(
        description="The item's decayed weighted count of events now (0: not trending)."
    )
    trending_rank: int | None = Field(
        description="Its place among the top 100 trending items (1 is first), if there."
    )
    windows: dict[str, WindowSummary] = Field(
        description="Events on the item by window slot (5m, 5m_prev, 1h, 1h_prev) and type."
    )
