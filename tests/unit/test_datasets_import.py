"""Generic CSV/Parquet interaction import, and the synthetic Parquet round trip via the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batch.data import DatasetError
from batch.datasets import import_interactions, load_dataset
from recsys.commands.data import app

pytestmark = pytest.mark.unit

EVENTS_CSV = """user_id,item_id,ts,event_type,weight
u1,i1,1700000000,view,
u1,i1,1700000005000,click,
u2,i2,2023-11-14T22:13:30Z,purchase,7.5
u2,i1,2023-11-14T22:13:31,VIEW,
"""


def test_csv_import_parses_timestamps_weights_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(EVENTS_CSV.replace("1700000000,view", "1700000000000,view"))
    data = import_interactions(path)
    inter = data.interactions
    assert inter["user_id"].tolist() == ["u1", "u1", "u2", "u2"]
    # milliseconds (the column holds values >= 1e11) and ISO 8601, naive = UTC
    assert inter["ts"].tolist() == [1700000000, 1700000005, 1700000010, 1700000011]
    assert inter["event_type"].tolist() == ["view", "click", "purchase", "view"]
    assert inter["weight"].tolist() == [1.0, 2.0, 7.5, 1.0]  # empty weight -> EVENT_WEIGHTS
    assert inter["weight"].dtype == np.float32
    assert inter["ts"].dtype == np.int64
    # no item file: every interaction item gets a bare catalog row
    assert data.items["item_id"].tolist() == ["i1", "i2"]
    assert data.items["title"].tolist() == ["i1", "i2"]
    assert data.name == "events"


def test_numeric_seconds_stay_seconds(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,ts,event_type\na,x,1700000000,view\nb,y,99,rating\n")
    assert import_interactions(path).interactions["ts"].tolist() == [1700000000, 99]


def test_item_metadata_file_and_missing_items(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(EVENTS_CSV)
    items = tmp_path / "catalog.csv"
    items.write_text('item_id,title,genres,year\ni1,"Blue, The (2001)",A|B,\ni9,Other,,1999\n')
    data = import_interactions(events, items)
    catalog = data.items.set_index("item_id")
    assert catalog.loc["i1", "title"] == "Blue, The"
    assert catalog.loc["i1", "year"] == 2001
    assert catalog.loc["i1", "genres"] == ("A", "B")
    assert catalog.loc["i9", "year"] == 1999
    assert catalog.loc["i9", "genres"] == ()
    assert catalog.loc["i2", "title"] == "i2"
    assert pd.isna(catalog.loc["i2", "year"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("u3,i3,1700000000,like,", "events.csv:3: event_type 'like' is not one of"),
        ("u3,i3,yesterday,view,", "events.csv:3: ts 'yesterday' is neither"),
        ("u3,i3,1700000000,view,heavy", "events.csv:3: weight 'heavy' is not a number"),
        (",i3,1700000000,view,", "events.csv:3: empty user_id"),
        ("u3,i3,1700000000", "events.csv:3: expected 5 fields"),
    ],
)
def test_malformed_rows_raise_or_are_skipped(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(f"user_id,item_id,ts,event_type,weight\nu1,i1,1700000000,view,\n{row}\n")
    with pytest.raises(DatasetError, match=message):
        import_interactions(path)
    data = import_interactions(path, skip_malformed=True)
    assert data.skipped_rows == 1
    assert data.n_interactions == 1


def test_missing_columns_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user,item_id,ts,event_type\nu1,i1,1,view\n")
    with pytest.raises(DatasetError, match=r"missing columns \['user_id'\]"):
        import_interactions(path)
    path.write_text("user_id,item_id,ts,event_type\n")
    with pytest.raises(DatasetError, match="no interaction rows"):
        import_interactions(path)
    with pytest.raises(DatasetError, match="no such file"):
        import_interactions(tmp_path / "absent.parquet")


def test_parquet_import_with_datetimes_lists_and_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "item_id": ["a", "b", "a"],
            "ts": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-01T00:00:10Z", None]),
            "event_type": ["view", "click", "view"],
        }
    ).to_parquet(path)
    pd.DataFrame({"item_id": ["a"], "title": ["Alpha"], "genres": [["X", "Y"]]}).to_parquet(
        tmp_path / "log.items.parquet"
    )
    with pytest.raises(DatasetError, match=r"log\.parquet: row 3: empty ts"):
        load_dataset(path, tmp_path)
    data = load_dataset(path, tmp_path, skip_malformed=True)
    assert data.interactions["user_id"].tolist() == ["1", "2"]  # ids become strings
    assert data.interactions["ts"].tolist() == [1704067200, 1704067210]
    assert data.items.set_index("item_id").loc["a", "genres"] == ("X", "Y")  # sidecar found


def test_cli_generate_then_info_round_trips_through_parquet(tmp_path: Path) -> None:
    out = tmp_path / "synth.parquet"
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "generate",
            "--users",
            "50",
            "--items",
            "20",
            "--events",
            "400",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
    )
    assert made.exit_code == 0, made.output
    assert (tmp_path / "synth.items.parquet").is_file()
    assert (tmp_path / "synth.users.parquet").is_file()
    data = load_dataset(out, tmp_path)
    assert data.n_interactions == 400
    assert data.items["genres"].map(len).between(1, 3).all()  # list column back to tuples
    assert data.users is not None
    assert "cluster" in data.users.columns
    shown = runner.invoke(app, ["info", str(out)])
    assert shown.exit_code == 0
    assert "400" in shown.output
    wrong = runner.invoke(app, ["generate", "--out", str(tmp_path / "x.csv")])
    assert wrong.exit_code == 1
    assert wrong.output.startswith("error: --out must end in .parquet")
