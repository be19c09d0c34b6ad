"""Training data from the event archive: a Delta table written as the archivers write it
(`core.archive` schema and partitions) gives the same `Dataset` as a file of the same rows,
windows and event types are pruned to their partitions, and a missing archive is a clear error.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from typer.testing import CliRunner

from batch.data import DatasetError
from batch.datasets.archive import ArchiveWindow, load_archive
from batch.datasets.importer import import_interactions
from batch.train import train
from core.archive import ARCHIVE_SCHEMA, PARTITION_COLUMNS, TRAINING_EVENT_TYPES, ArchiveLocation
from core.archive import event_date as day_of
from recsys.cli import app

pytestmark = pytest.mark.integration

DAY0 = datetime(2024, 5, 1, tzinfo=UTC)
# Archived, never trained on: negative feedback and impressions.
OTHER_TYPES = ("dislike", "hide", "impression")


def archive_rows(n: int = 600, days: int = 5, seed: int = 0) -> pd.DataFrame:
    """Rows in ARCHIVE_SCHEMA's columns, in no particular order, with equal timestamps across
    topics and partitions (ties the Kafka position must order) and some non-training types."""
    rng = np.random.default_rng(seed)
    types = rng.choice(
        [*TRAINING_EVENT_TYPES, *OTHER_TYPES], size=n, p=[0.5, 0.2, 0.1] + [0.2 / 3] * 3
    )
    # Whole seconds, a few microseconds off, and many exact ties.
    seconds = rng.integers(0, days * 86_400, size=n) // 7 * 7
    micros = rng.choice([0, 0, 0, 250_000, 999_999], size=n)
    ts = [
        DAY0 + timedelta(seconds=int(s), microseconds=int(u))
        for s, u in zip(seconds, micros, strict=True)
    ]
    partitions = rng.integers(0, 3, size=n)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = pd.DataFrame(
        {
            "event_id": [str(uuid.uuid4()) for _ in range(n)],
            "event_type": types,
            "event_date": [day_of(t) for t in ts],
            "user_id": [f"u{k}" for k in rng.integers(0, 40, size=n)],
            "item_id": [f"i{k}" for k in rng.integers(0, 60, size=n)],
            "ts": ts,
            "session_id": None,
            "context": None,
            "dwell_ms": None,
            "quantity": None,
            "price": None,
            "topic": [f"events.{t}" for t in types],
            "partition": partitions.astype(np.int32),
            "offset": np.arange(n, dtype=np.int64)[::-1],
            "published_at": now,
            "archived_at": now,
        }
    )
    return rows


def write_archive(rows: pd.DataFrame, uri: Path, commits: int = 3) -> None:
    """Append in several commits, as the archivers do (columns the rows lack are null)."""
    rows = rows.assign(**{name: None for name in ARCHIVE_SCHEMA.names if name not in rows})
    for part in np.array_split(np.arange(len(rows)), commits):
        table = pa.Table.from_pandas(rows.iloc[part], schema=ARCHIVE_SCHEMA, preserve_index=False)
        write_deltalake(str(uri), table, partition_by=list(PARTITION_COLUMNS), mode="append")


def expected_from_file(rows: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """The training rows in the archive's order, through the CSV importer."""
    kept = rows[rows["event_type"].isin(TRAINING_EVENT_TYPES)]
    kept = kept.sort_values(["ts", "topic", "partition", "offset"], kind="stable")
    log = pd.DataFrame(
        {
            "user_id": kept["user_id"],
            "item_id": kept["item_id"],
            "ts": [int(t.timestamp() // 1) for t in kept["ts"]],
            "event_type": kept["event_type"],
        }
    )
    path = tmp_path / f"log-{uuid.uuid4().hex[:6]}.csv"
    log.to_csv(path, index=False)
    return import_interactions(path).interactions


def test_the_archive_gives_the_dataset_a_file_of_the_same_rows_gives(tmp_path: Path) -> None:
    rows = archive_rows()
    shown = rows["event_type"] == "impression"
    rows["position"] = pd.array([n % 4 if s else None for n, s in enumerate(shown)], "Int32")
    write_archive(rows.sample(frac=1, random_state=3), tmp_path / "events")
    location = ArchiveLocation(str(tmp_path / "events"), {})

    dataset = load_archive(location)
    expected = expected_from_file(rows, tmp_path)
    pd.testing.assert_frame_equal(dataset.interactions, expected)
    assert set(dataset.interactions["event_type"]) <= set(TRAINING_EVENT_TYPES)
    assert dataset.interactions["weight"].tolist() == [
        {"view": 1.0, "click": 2.0, "purchase": 4.0}[t] for t in dataset.interactions["event_type"]
    ]
    assert dataset.name == "archive"
    # Impressions come along, one row per item shown, for the ranker's training groups.
    assert dataset.impressions is not None
    impressions = rows[shown]
    assert sorted(
        dataset.impressions[["recommendation_id", "item_id", "position", "ts"]].itertuples(
            index=False, name=None
        )
    ) == sorted(
        zip(
            impressions["event_id"],
            impressions["item_id"],
            impressions["position"],
            (int(t.timestamp() // 1) for t in impressions["ts"]),
            strict=True,
        )
    )
    # Items without metadata get the file loaders' bare rows.
    assert set(dataset.items["item_id"]) == set(dataset.interactions["item_id"])

    # So the models trained on either are the same.
    params = {"factors": 4, "iterations": 3, "random_state": 0}
    from_archive = train(dataset, "als", params).model
    from_file = train(import_interactions(_csv_of(expected, tmp_path)), "als", params).model
    np.testing.assert_allclose(from_archive.item_vectors(), from_file.item_vectors(), atol=1e-5)


def _csv_of(interactions: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "same.csv"
    interactions[["user_id", "item_id", "ts", "event_type"]].to_csv(path, index=False)
    return path


def test_a_window_reads_only_its_days_and_the_training_types(tmp_path: Path) -> None:
    rows = archive_rows()
    uri = tmp_path / "events"
    write_archive(rows, uri)
    since, until = DAY0 + timedelta(days=1, hours=6), DAY0 + timedelta(days=3)
    # Pruning means the files of other days and of other types are never opened: remove them
    # (impressions are read too, for the ranker's training groups).
    table = DeltaTable(str(uri))
    removed = 0
    read = (*TRAINING_EVENT_TYPES, "impression")
    for path in table.file_uris():
        day, kind = (part.split("=", 1)[1] for part in Path(path).parts[-3:-1])
        if kind not in read or not day_of(since) <= day < day_of(until):
            Path(path.removeprefix("file://")).unlink()
            removed += 1
    assert removed > len(table.file_uris()) / 2

    dataset = load_archive(ArchiveLocation(str(uri), {}), ArchiveWindow(since, until))
    in_window = rows[(rows["ts"] >= since) & (rows["ts"] < until)]
    pd.testing.assert_frame_equal(dataset.interactions, expected_from_file(in_window, tmp_path))
    assert dataset.interactions["ts"].min() >= since.timestamp()
    assert dataset.interactions["ts"].max() < until.timestamp()
    assert dataset.name == "archive[2024-05-02T06:00:00Z..2024-05-04T00:00:00Z]"
    assert dataset.impressions is not None
    assert len(dataset.impressions) == int((in_window["event_type"] == "impression").sum())


def test_windows_parse_durations_and_iso_times() -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=UTC)
    window = ArchiveWindow.parse("30d", "2024-05-31", now)
    assert window.since == now - timedelta(days=30)
    assert window.until == datetime(2024, 5, 31, tzinfo=UTC)
    with pytest.raises(ValueError, match="before"):
        ArchiveWindow.parse("2024-06-01", "2024-05-01", now)
    with pytest.raises(ValueError, match="neither"):
        ArchiveWindow.parse("last tuesday", None, now)


def test_a_missing_or_empty_archive_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatasetError, match="recsys archive run"):
        load_archive(ArchiveLocation(str(tmp_path / "nothing"), {}))
    rows = archive_rows(n=50)
    write_archive(rows[~rows["event_type"].isin(TRAINING_EVENT_TYPES)], tmp_path / "others", 1)
    with pytest.raises(DatasetError, match="no view/click/purchase events"):
        load_archive(ArchiveLocation(str(tmp_path / "others"), {}))

    monkeypatch.setenv("RECSYS_ARCHIVE_URI", str(tmp_path / "nothing"))
    monkeypatch.setenv("RECSYS_STATE_DIR", str(tmp_path / "state"))
    for command in (["train"], ["evaluate", "--models", "most-popular"]):
        outcome = CliRunner().invoke(app, [*command, "--source", "archive", "--since", "30d"])
        assert outcome.exit_code == 1, outcome.output
        assert "recsys archive run" in outcome.output
        assert "Traceback" not in outcome.output
