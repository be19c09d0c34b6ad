"""`evaluate` end to end on a tiny generated dataset: JSON keys, report and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import batch.datasets
from batch.data import Dataset
from batch.evaluation.names import Protocol
from batch.evaluation.report import write_json, write_report
from batch.evaluation.runner import evaluate_models
from batch.models import registry
from recsys.commands.evaluate import app, parse_models

pytestmark = pytest.mark.unit

GENRES = ("Action", "Comedy", "Drama", "Horror")
REQUIRED_KEYS = {
    "ndcg@10",
    "recall@10",
    "hr@10",
    "mrr",
    "coverage@10",
    "fit_seconds",
    "ndcg@10_ci95",
    "precision@10",
    "diversity@10",
    "novelty@10",
    "params",
    "protocol",
    "dataset",
    "n_evaluated_users",
}
FAST_MODELS = ["most-popular", "recent-popular", "itemknn", "ease", "als", "bpr"]


def tiny_dataset() -> Dataset:
    """40 users, 30 items, two taste groups, one row per hour."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(40):
        pool = np.arange(0, 15) if user % 2 else np.arange(15, 30)
        for item in rng.choice(pool, size=8, replace=False):
            rows.append((f"u{user}", f"i{item}"))
    rng.shuffle(rows)
    interactions = pd.DataFrame(
        {
            "user_id": [u for u, _ in rows],
            "item_id": [i for _, i in rows],
            "ts": 1_000_000 + 3600 * np.arange(len(rows), dtype=np.int64),
            "event_type": "rating",
            "weight": np.ones(len(rows), dtype=np.float32),
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(30)],
            "title": [f"Movie {i}" for i in range(30)],
            "genres": [(GENRES[i % 4], GENRES[(i // 4) % 4]) for i in range(30)],
            "year": pd.array([2000] * 30, dtype="Int64"),
        }
    )
    return Dataset(name="tiny", interactions=interactions, items=items)


@pytest.mark.parametrize("protocol", list(Protocol))
def test_runner_writes_json_report_and_plots(tmp_path: Path, protocol: Protocol) -> None:
    result = evaluate_models(tiny_dataset(), protocol, FAST_MODELS, seed=3)
    write_json(result, tmp_path / "eval.json")
    plots = write_report(result, tmp_path / "eval.md")

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["protocol"] == str(protocol)
    assert set(saved["models"]) == set(FAST_MODELS)
    for figures in saved["models"].values():
        assert set(figures) >= REQUIRED_KEYS
        low, high = figures["ndcg@10_ci95"]
        assert low <= figures["ndcg@10"] <= high
        assert len(figures["curves"]["ndcg"]) == 30  # K = 1..min(50, catalog)
    if protocol is Protocol.LEAVE_LAST_OUT:
        assert saved["n_evaluated_users"] == 40
    # Where and how it was measured travels with the figures (BENCHMARKS.md shows it).
    assert saved["command"].startswith("recsys")
    assert saved["machine"]["cores"] >= 1
    report = (tmp_path / "eval.md").read_text()
    assert all(name in report for name in FAST_MODELS)
    assert [plot.name for plot in plots] == [
        "eval-ndcg-recall-at-k.png",
        "eval-ndcg-vs-coverage.png",
    ]
    assert all(plot.stat().st_size > 0 for plot in plots)


def test_unimportable_model_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._LAZY, "two-tower", ("batch.models.no_such_module", "Missing"))
    result = evaluate_models(tiny_dataset(), Protocol.TEMPORAL, ["most-popular", "two-tower"])
    assert [model.name for model in result.models] == ["most-popular"]
    assert "two-tower" in result.skipped


def test_models_option_accepts_commas_and_repeats() -> None:
    assert parse_models(["als,ease", "bpr", "als"]) == ["als", "ease", "bpr"]
    assert parse_models(None) == registry.model_names()


def test_cli_evaluate_writes_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[str, Path]] = []

    def load_dataset(name: str, data_dir: Path, *, skip_malformed: bool) -> Dataset:
        loaded.append((name, data_dir))
        return tiny_dataset()

    monkeypatch.setattr(batch.datasets, "load_dataset", load_dataset)
    args = [
        "--dataset",
        "tiny",
        "--protocol",
        "leave-last-out",
        "--models",
        "most-popular,ease",
        "--data-dir",
        str(tmp_path / "data"),
        "--json",
        str(tmp_path / "out.json"),
        "--report",
        str(tmp_path / "out.md"),
    ]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code == 0, outcome.output
    assert loaded == [("tiny", tmp_path / "data")]
    saved = json.loads((tmp_path / "out.json").read_text())
    assert set(saved["models"]) == {"most-popular", "ease"}
    assert (tmp_path / "out-ndcg-vs-coverage.png").exists()


def test_cli_rejects_unknown_models(tmp_path: Path) -> None:
    args = ["--dataset", "tiny", "--models", "nope", "--json", str(tmp_path / "x")]
    outcome = CliRunner().invoke(app, args)
    assert outcome.exit_code != 0
    assert "unknown model" in outcome.output


def test_cli_stops_at_a_malformed_row_unless_told_to_skip(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    tiny_dataset().interactions.to_csv(csv, index=False)
    with csv.open("a") as rows:
        rows.write("u1,i1,not-a-time,rating,1\n")
    bad_line = len(csv.read_text().splitlines())
    args = ["--dataset", str(csv), "--models", "most-popular", "--json", str(tmp_path / "o.json")]

    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 1
    assert f"events.csv:{bad_line}: ts 'not-a-time'" in stopped.output
    assert not (tmp_path / "o.json").exists()

    skipped = CliRunner().invoke(app, [*args, "--skip-malformed"])
    assert skipped.exit_code == 0, skipped.output
    assert "1 malformed rows skipped" in skipped.output
    assert json.loads((tmp_path / "o.json").read_text())["models"]["most-popular"]["hr@10"] >= 0


def test_als_served_is_evaluated_with_exactly_the_served_configuration() -> None:
    from batch.evaluation.tuning import param_grid
    from batch.train import DEFAULT_PARAMS

    assert param_grid("als-served", seed=5) == [DEFAULT_PARAMS["als"] | {"random_state": 5}]
    assert len(param_grid("als", seed=5)) > 1  # `als` itself is tuned
