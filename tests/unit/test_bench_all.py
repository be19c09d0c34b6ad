"""`recsys bench all` rewrites only the generated blocks of BENCHMARKS.md, from saved JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.bench.run_all import BenchAllError, plan, render, rewrite

pytestmark = pytest.mark.unit

TRAIN_RESULT = {
    "dataset": "ml-100k",
    "interactions": 100_000,
    "users": 943,
    "items": 1682,
    "fit_seconds": 0.6,
    "publish_seconds": 0.4,
    "train_and_publish_seconds": 1.0,
    "peak_rss_mib": 260.0,
}


def test_only_the_marked_block_changes() -> None:
    text = "intro\n<!-- generated:api -->\nold table\n<!-- /generated:api -->\nanalysis\n"
    rewritten = rewrite(text, "api", "new table\n")
    assert (
        rewritten == "intro\n<!-- generated:api -->\nnew table\n<!-- /generated:api -->\nanalysis\n"
    )


def test_a_missing_block_is_a_clear_error() -> None:
    with pytest.raises(BenchAllError, match="generated:replay"):
        rewrite("no markers here\n", "replay", "x")


def test_render_fills_a_section_from_its_json_with_command_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "benchmarks"
    out.mkdir(parents=True)
    for name in ("train-ml-100k", "train-synthetic-10m"):
        (out / f"{name}.json").write_text(json.dumps(TRAIN_RESULT))
    (out / "train-ml-100k.png").write_bytes(b"png")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# B\n<!-- generated:train -->\n<!-- /generated:train -->\nkept prose\n")
    render(md, plan(Path("/data"), out), out, ["train"])
    text = md.read_text()
    assert "recsys train --dataset ml-100k --data-dir /data --json" in text
    assert "| ml-100k | 100,000 | 943 x 1,682 | 0.6 s | 0.4 s | **1.0 s** | 260.0 MiB |" in text
    assert "![train-ml-100k](docs/benchmarks/train-ml-100k.png)" in text
    assert text.endswith("<!-- /generated:train -->\nkept prose\n")


def test_a_section_whose_benchmark_never_ran_says_so(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("<!-- generated:replay -->\n<!-- /generated:replay -->\n")
    with pytest.raises(BenchAllError, match="missing: run its benchmark first"):
        render(md, plan(Path("/data"), tmp_path), tmp_path, ["replay"])


def test_a_plot_goes_to_the_step_whose_name_it_carries_not_to_a_shorter_prefix(
    tmp_path: Path,
) -> None:
    from recsys.bench.run_all import Step, _plot_owner

    stream = Step("stream", ("bench", "stream"), tmp_path / "bench-stream.json")
    cluster = Step("cluster", ("bench", "cluster"), tmp_path / "bench-stream-cluster.json")
    steps = [stream, cluster]
    assert _plot_owner(tmp_path / "bench-stream.png", steps) is stream
    assert _plot_owner(tmp_path / "bench-stream-cluster.png", steps) is cluster
    assert _plot_owner(tmp_path / "bench-stream-sweep.png", steps) is stream
