"""The interaction log from the event archive (`recsys train|evaluate --source archive`).

Reads the Delta table the archivers write (`core.archive`) with partition pruning: only the
files of the window's days and of the training event types (`TRAINING_EVENT_TYPES`) are opened;
rows are then filtered exactly on their timestamp. Rows come out in event-time order, then by
Kafka topic, partition and offset, so that the same archive always gives the same `Dataset`.
Weights are `core.rules.EVENT_WEIGHTS[event_type]`, as the file loaders give rows without one,
so a model trained from the archive equals one trained from a file holding the same rows.

Item metadata is not archived: it comes from the active model version's item payloads when one
is published (`load_archive_configured`), else items have none (title = id, no genres).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from batch.data import IMPRESSION_COLUMNS, Dataset, DatasetError
from batch.datasets.frames import complete_items, interactions_frame, items_frame
from core.archive import ROW_ORDER, TRAINING_EVENT_TYPES, ArchiveLocation, event_date
from core.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_READ_COLUMNS = ["user_id", "item_id", "ts", "event_type", "topic", "partition", "offset"]
# What an impression adds: its recommendation id (its `event_id`) and each item's place.
_IMPRESSION_READ = ("event_id", "position")


def parse_duration(text: str) -> timedelta:
    """ "90s", "15m", "1h", "30d", "2w" as a timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 1h, 30d or 2w")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A point in time: a duration back from `now` ("30d"), an ISO date (midnight UTC) or an
    ISO date-time (UTC unless it names its offset)."""
    if _DURATION.match(text):
        return (now or datetime.now(UTC)) - parse_duration(text)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h) nor an ISO date or date-time"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True)
class ArchiveWindow:
    """Events with since <= ts < until (either end open when None)."""

    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls, since: str | None, until: str | None, now: datetime | None = None
    ) -> ArchiveWindow:
        now = now or datetime.now(UTC)
        window = cls(
            parse_time(since, now) if since else None, parse_time(until, now) if until else None
        )
        if window.since and window.until and window.since >= window.until:
            raise ValueError(f"--since ({window.since}) must be before --until ({window.until})")
        return window

    @property
    def label(self) -> str:
        """How the window names the dataset: "archive", "archive[2024-05-01T00:00:00Z..]"."""
        if self.since is None and self.until is None:
            return "archive"
        ends = [f"{t:%Y-%m-%dT%H:%M:%SZ}" if t else "" for t in (self.since, self.until)]
        return f"archive[{ends[0]}..{ends[1]}]"

    def pruning(self, event_types: tuple[str, ...]) -> list[tuple[str, str, str | list[str]]]:
        """The partition filter: the window's days and the event types."""
        found: list[tuple[str, str, str | list[str]]] = [("event_type", "in", list(event_types))]
        if self.since is not None:
            found.append(("event_date", ">=", event_date(self.since)))
        if self.until is not None:
            # `until` is exclusive: at midnight its own day holds nothing of the window.
            last = self.until - timedelta(microseconds=1)
            found.append(("event_date", "<=", event_date(last)))
        return found


def read_interactions(
    location: ArchiveLocation,
    window: ArchiveWindow = ArchiveWindow(),
    event_types: tuple[str, ...] = TRAINING_EVENT_TYPES,
    columns: Sequence[str] = (),
) -> pa.Table:
    """The window's rows of `event_types` (user_id, item_id, ts, event_type and the Kafka
    position), ordered by `core.archive.ROW_ORDER`. Raises `DatasetError` when there is no
    table at the location."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    try:
        table = DeltaTable(location.uri, storage_options=location.storage_options or None)
        dataset = table.to_pyarrow_dataset(file_pruning_predicate=window.pruning(event_types))
    except (DeltaError, OSError) as exc:
        raise DatasetError(
            f"no event archive at {location.uri} ({exc}); start one with `recsys archive run` "
            "(it archives every event published to Kafka), or point RECSYS_ARCHIVE_URI at it"
        ) from None
    condition = ds.field("event_type").isin(list(event_types))
    if window.since is not None:
        condition &= ds.field("ts") >= window.since
    if window.until is not None:
        condition &= ds.field("ts") < window.until
    rows = dataset.to_table(columns=[*_READ_COLUMNS, *columns], filter=condition)
    order = pc.sort_indices(rows, sort_keys=[(column, "ascending") for column in ROW_ORDER])
    return rows.take(order)


def load_archive(
    location: ArchiveLocation,
    window: ArchiveWindow = ArchiveWindow(),
    items: pd.DataFrame | None = None,
) -> Dataset:
    """The window's training interactions as a `Dataset` (see the module's docstring).

    items: item metadata (`batch.data.ITEM_COLUMNS`), e.g. `active_items`; items of the
        interactions without metadata get a bare row (title = id), as the file loaders do.
    """
    rows = read_interactions(location, window)
    if rows.num_rows == 0:
        raise DatasetError(
            f"the event archive at {location.uri} has no {'/'.join(TRAINING_EVENT_TYPES)} "
            f"events{_window_text(window)}; run `recsys archive run` while events flow "
            "(and widen --since if the archive is older)"
        )
    micros = rows.column("ts").cast("int64").to_numpy()
    interactions = interactions_frame(
        pd.Series(rows.column("user_id").to_numpy(zero_copy_only=False), dtype="str"),
        pd.Series(rows.column("item_id").to_numpy(zero_copy_only=False), dtype="str"),
        np.floor_divide(micros, 1_000_000),  # epoch seconds, as the file loaders keep them
        pd.Series(rows.column("event_type").to_numpy(zero_copy_only=False), dtype="str"),
    )
    known = items if items is not None else _no_items()
    return Dataset(
        window.label,
        interactions,
        complete_items(known, interactions["item_id"]),
        impressions=read_impressions(location, window),
    )


def read_impressions(location: ArchiveLocation, window: ArchiveWindow) -> pd.DataFrame:
    """The window's impressions, one row per item shown (`IMPRESSION_COLUMNS`; ts in epoch
    seconds): what the ranker learns passed-over items from (`batch.ranking.impressions`)."""
    rows = read_interactions(location, window, ("impression",), _IMPRESSION_READ)
    micros = rows.column("ts").cast("int64").to_numpy()
    return pd.DataFrame(
        {
            "recommendation_id": rows.column("event_id").to_numpy(zero_copy_only=False),
            "user_id": rows.column("user_id").to_numpy(zero_copy_only=False),
            "item_id": rows.column("item_id").to_numpy(zero_copy_only=False),
            "ts": np.floor_divide(micros, 1_000_000),
            "position": rows.column("position").fill_null(0).to_numpy(zero_copy_only=False),
        },
        columns=list(IMPRESSION_COLUMNS),
    )


def _window_text(window: ArchiveWindow) -> str:
    parts = []
    if window.since is not None:
        parts.append(f" since {window.since:%Y-%m-%d %H:%M:%S} UTC")
    if window.until is not None:
        parts.append(f" before {window.until:%Y-%m-%d %H:%M:%S} UTC")
    return "".join(parts)


def _no_items() -> pd.DataFrame:
    text = pd.Series([], dtype="str")
    return items_frame(text, text, pd.Series([], dtype=object), pd.Series([], dtype="Int64"))


def items_from_payloads(payloads: dict[str, dict[str, object]]) -> pd.DataFrame:
    """Item metadata from a published version's item payloads (`load_item_payloads`)."""
    ids = list(payloads)
    years = [payloads[i].get("year") for i in ids]
    return items_frame(
        pd.Series(ids, dtype="str"),
        pd.Series([str(payloads[i].get("title") or i) for i in ids], dtype="str"),
        pd.Series([tuple(payloads[i].get("genres") or ()) for i in ids], dtype=object),  # type: ignore[arg-type]
        pd.Series([y if isinstance(y, int) else pd.NA for y in years], dtype="Int64"),
    )


async def active_items(settings: Settings) -> pd.DataFrame | None:
    """The active version's item metadata, or None when no version is active or Redis cannot
    be reached (logged: training then goes on without metadata)."""
    from core.clients import REDIS_ERRORS, redis_client_for
    from core.model_version import active_version, load_item_payloads

    redis = redis_client_for(settings)
    try:
        version = await active_version(redis)
        payloads = await load_item_payloads(redis, version) if version else {}
    except REDIS_ERRORS as exc:
        log.warning("item metadata not read from Redis (%s): items have none", exc)
        return None
    finally:
        await redis.aclose()
    return items_from_payloads(payloads) if payloads else None


def load_archive_configured(settings: Settings, window: ArchiveWindow) -> Dataset:
    """`load_archive` at the settings' archive, with the active version's item metadata."""
    dataset = load_archive(ArchiveLocation.of(settings), window)
    items = asyncio.run(active_items(settings))
    if items is None:
        return dataset
    return Dataset(
        dataset.name,
        dataset.interactions,
        complete_items(items, dataset.interactions["item_id"]),
        impressions=dataset.impressions,
    )
