"""`recsys train` up to publishing: dataset errors, skipped rows, progress and the JSON summary.

Publishing itself (Qdrant + Redis) is tested on real services in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import batch.publish
from recsys.cli import app
from tests.unit.test_evaluate_cli import tiny_dataset

pytestmark = pytest.mark.unit


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    csv = tmp_path / "events.csv"
    tiny_dataset().interactions.to_csv(csv, index=False)
    with csv.open("a") as rows:
        rows.write("u1,i1,not-a-time,rating,1\n")
    return csv


def test_train_stops_at_a_malformed_row_before_publishing(events_csv: Path) -> None:
    outcome = CliRunner().invoke(app, ["train", "--dataset", str(events_csv)])
    assert outcome.exit_code == 1
    assert "events.csv:" in outcome.output
    assert "not-a-time" in outcome.output


def test_train_skips_malformed_rows_when_told(
    events_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[Any] = []

    async def publish(artifacts: Any, settings: Any, **options: Any) -> str:
        published.append(artifacts)
        return "v-test"

    monkeypatch.setattr(batch.publish, "publish_configured", publish)
    summary_path = tmp_path / "train.json"
    outcome = CliRunner().invoke(
        app,
        ["train", "--dataset", str(events_csv), "--skip-malformed", "--json", str(summary_path)],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(summary_path.read_text())
    assert summary["skipped_rows"] == 1
    assert summary["interactions"] == len(tiny_dataset().interactions)
    assert summary["version"] == "v-test"
    assert len(published) == 1
    assert len(published[0].user_ids) == 40
