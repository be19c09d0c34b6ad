"""`recsys archive info|compact|vacuum|query` on a table written the way the archiver writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from core.archive import ArchiveLocation
from recsys.cli import app
from schemas.events import EventType, new_event
from streams.archive.rows import Rows
from streams.archive.table import ArchiveTable

pytestmark = pytest.mark.integration


def write_commits(uri: str, days_ago: list[int]) -> None:
    """One commit per entry: three events on that day (UTC), as the archiver appends them."""
    table = ArchiveTable(ArchiveLocation(uri, {}))
    now = datetime.now(UTC)
    for n, days in enumerate(days_ago):
        rows = Rows()
        kinds: tuple[EventType, ...] = ("view", "click", "purchase")
        for k, kind in enumerate(kinds):
            event = new_event(kind, f"u{k}", f"i{n}", ts=now - timedelta(days=days))
            rows.add(event, f"events.{kind}", 0, n, 0)
        table.append(rows.table(), {(f"events.{kind}", 0): n for kind in ("view", "click")})


def test_info_compact_vacuum_and_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = str(tmp_path / "events")
    write_commits(uri, [40, 0, 0, 0])
    monkeypatch.setenv("RECSYS_ARCHIVE_URI", uri)
    runner = CliRunner()

    info = runner.invoke(app, ["archive", "info"])
    assert info.exit_code == 0, info.output
    assert "12 rows" in info.output
    assert "events.view:0" in info.output

    files_before = len(DeltaTable(uri).file_uris())
    compacted = runner.invoke(app, ["archive", "compact"])
    assert compacted.exit_code == 0, compacted.output
    assert len(DeltaTable(uri).file_uris()) < files_before

    query = runner.invoke(
        app, ["archive", "query", "select event_type, count(*) as n from events group by 1"]
    )
    assert query.exit_code == 0, query.output
    assert "purchase" in query.output

    vacuumed = runner.invoke(
        app, ["archive", "vacuum", "--keep-days", "30", "--retention-hours", "0"]
    )
    assert vacuumed.exit_code == 0, vacuumed.output
    assert "3 rows deleted" in vacuumed.output
    remaining = DeltaTable(uri).to_pyarrow_table(columns=["event_date"])
    assert remaining.num_rows == 9
    oldest = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
    assert min(remaining.column("event_date").to_pylist()) >= oldest


def test_upkeep_without_an_archive_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_ARCHIVE_URI", str(tmp_path / "nothing-here"))
    result = CliRunner().invoke(app, ["archive", "info"])
    assert result.exit_code == 1
    assert "recsys archive run" in result.output
    for command in (["compact"], ["vacuum"], ["query", "select 1"]):
        result = CliRunner().invoke(app, ["archive", *command])
        assert result.exit_code == 1, command
        assert "recsys archive run" in result.output
