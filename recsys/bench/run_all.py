"""`recsys bench all`: every benchmark, then BENCHMARKS.md's generated sections rewritten.

Each benchmark runs as its own `recsys ...` command (the command BENCHMARKS.md shows is the one
that ran) and saves JSON, Markdown and PNG under the output folder. BENCHMARKS.md keeps its
hand-written analysis; only the blocks between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->` are replaced, from the saved JSON, so a section can also be rendered
again without re-running it (`--render-only`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SECTIONS = (
    "evaluate", "evaluate-synthetic", "train", "stream", "freshness", "api", "cluster", "replay",
    "archive", "loop",
)  # fmt: skip
SYNTHETIC_10M = "synthetic:users=1000000,items=50000,events=10000000,seed=7"
# Small enough for every model, two-tower and its grid included, in a few minutes per protocol.
SYNTHETIC_EVALUATION = "synthetic:users=5000,items=1000,events=100000,seed=7"


class BenchAllError(RuntimeError):
    pass


@dataclass(frozen=True)
class Step:
    section: str
    argv: tuple[str, ...]  # after `recsys`
    json_path: Path
    needs_services: bool = False  # `recsys train` publishes: give it throwaway Kafka + Redis

    @property
    def command(self) -> str:
        return shlex.join(["recsys", *self.argv])


def plan(data_dir: Path, out: Path) -> list[Step]:
    def files(stem: str) -> tuple[str, ...]:
        return ("--json", str(out / f"{stem}.json"), "--report", str(out / f"{stem}.md"))

    data = ("--data-dir", str(data_dir))
    return [
        Step("evaluate", ("evaluate", "--dataset", "ml-100k", "--protocol", "leave-last-out",
                          *data, *files("evaluate-ml-100k-p2")), out / "evaluate-ml-100k-p2.json"),
        Step("evaluate", ("evaluate", "--dataset", "ml-100k", "--protocol", "temporal", *data,
                          *files("evaluate-ml-100k-p1")), out / "evaluate-ml-100k-p1.json"),
        *(
            Step("evaluate-synthetic",
                 ("evaluate", "--dataset", SYNTHETIC_EVALUATION, "--protocol", protocol,
                  *files(f"evaluate-synthetic-{short}")),
                 out / f"evaluate-synthetic-{short}.json")
            for protocol, short in (("leave-last-out", "p2"), ("temporal", "p1"))
        ),
        Step("train", ("train", "--dataset", "ml-100k", *data, "--json",
                       str(out / "train-ml-100k.json")), out / "train-ml-100k.json", True),
        Step("train", ("train", "--dataset", SYNTHETIC_10M, "--json",
                       str(out / "train-synthetic-10m.json")), out / "train-synthetic-10m.json",
             True),
        Step("stream", ("bench", "stream", *files("bench-stream")), out / "bench-stream.json"),
        Step("freshness", ("bench", "freshness", *files("bench-freshness")),
             out / "bench-freshness.json"),
        Step("api", ("bench", "api", *data, *files("bench-api")), out / "bench-api.json"),
        Step("api", ("bench", "api", "--ranker", *data, *files("bench-api-ranker")),
             out / "bench-api-ranker.json"),
        Step("cluster", ("bench", "cluster", *data, *files("bench-cluster")),
             out / "bench-cluster.json"),
        Step("replay", ("replay", "--dataset", "ml-100k", *data, *files("replay")),
             out / "replay.json"),
        Step("replay", ("replay", "--dataset", "ml-latest-small", *data, "--live", "ema",
                        "--live", "ranked", "--live", "ranker-off",
                        *files("replay-ml-latest-small")),
             out / "replay-ml-latest-small.json"),
        Step("archive", ("bench", "archive", *files("bench-archive")), out / "bench-archive.json"),
        Step("loop", ("bench", "loop", *data, *files("bench-loop")), out / "bench-loop.json"),
        Step("experiment", ("bench", "experiment", *files("bench-experiment")),
             out / "bench-experiment.json"),
        Step("drift", ("bench", "drift", *files("bench-drift")), out / "bench-drift.json"),
    ]  # fmt: skip


@contextmanager
def _services_env(needed: bool) -> Iterator[dict[str, str]]:
    if not needed:
        yield dict(os.environ)
        return
    from recsys.bench.common import bench_services, service_env

    with bench_services(False, "recsys-bench-all-") as (settings, _):
        yield service_env(settings)


def run_step(step: Step, log: Callable[[str], None]) -> None:
    log(f"$ {step.command}")
    with _services_env(step.needs_services) as env:
        completed = subprocess.run(
            [sys.executable, "-m", "recsys", *step.argv], env=env, check=False
        )
    if completed.returncode != 0:
        raise BenchAllError(f"`{step.command}` failed with exit code {completed.returncode}")


# --- Rendering ----------------------------------------------------------------------------


def _load(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchAllError(f"{path} is missing: run its benchmark first") from None
    return loaded


def _evaluate_table(result: dict[str, Any]) -> str:
    lines = [
        f"**{result['protocol']}** ({result['n_evaluated_users']:,} evaluated users, "
        f"{result['n_items']:,} items ranked)",
        "",
        "| model | NDCG@10 [95% CI] | Recall@10 | HR@10 | MRR | Coverage@10 | fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    best = max(m["ndcg@10"] for m in result["models"].values())
    for name, m in result["models"].items():
        low, high = m["ndcg@10_ci95"]
        ndcg = f"**{m['ndcg@10']:.4f}**" if m["ndcg@10"] == best else f"{m['ndcg@10']:.4f}"
        lines.append(
            f"| {name} | {ndcg} [{low:.4f}, {high:.4f}] | {m['recall@10']:.4f} | "
            f"{m['hr@10']:.4f} | {m['mrr']:.4f} | {m['coverage@10']:.3f} | "
            f"{m['fit_seconds']:.2f} |"
        )
    return "\n".join(lines)


def _train_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | interactions | users x items | fit | publish (Qdrant + Redis) | "
        "train + publish | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['interactions']:,} | {r['users']:,} x {r['items']:,} | "
            f"{r['fit_seconds']} s | {r['publish_seconds']} s | "
            f"**{r['train_and_publish_seconds']} s** | {r['peak_rss_mib']} MiB |"
        )
    return "\n".join(lines)


def _figures(section: str, result: dict[str, Any]) -> str:
    if section == "stream":
        from recsys.bench.stream_report import figures_table
    elif section == "api":
        from recsys.bench.api_report import figures_table
    elif section == "freshness":
        from recsys.bench.freshness import figures_table
    elif section == "cluster":
        from recsys.bench.cluster_report import figures_table
    elif section == "archive":
        from recsys.bench.archive_report import figures_table
    elif section == "loop":
        from recsys.bench.loop_report import figures_table
    elif section == "experiment":
        from recsys.bench.experiment_report import figures_table
    elif section == "drift":
        from recsys.bench.drift_report import figures_table
    else:
        from recsys.replay.report import figures_table
    return figures_table(result)


def render_section(section: str, steps: list[Step], out: Path, root: Path) -> str:
    """The generated block of one section: commands, machine, tables, plots."""
    mine = [s for s in steps if s.section == section]
    results = [_load(s.json_path) for s in mine]
    # The command a benchmark recorded itself is the one that produced its figures.
    commands = "\n".join(r.get("command") or s.command for s, r in zip(mine, results, strict=True))
    parts = [f"```\n{commands}\n```", ""]
    machine = results[-1].get("machine")
    if machine:
        parts += [
            f"Measured {results[-1]['measured_at']} on {machine['cores']} cores "
            f"({machine['cpu']}), {machine['memory_gib']} GiB, Python {machine['python']}.",
            "",
        ]
    if section.startswith("evaluate"):
        parts += [_evaluate_table(r) + "\n" for r in results]
    elif section == "train":
        parts.append(_train_table(results))
    elif len(results) == 1:
        parts.append(_figures(section, results[0]))
    else:  # one section, several runs (two datasets, the ranker on and off): each with its own
        for step, result in zip(mine, results, strict=True):
            measured = f" (measured {result['measured_at']})" if "measured_at" in result else ""
            parts += [f"`{step.command}`{measured}:", "", _figures(section, result), ""]
    for step in mine:
        for png in sorted(out.glob(f"{step.json_path.stem}*.png")):
            if _plot_owner(png, steps) is step:
                parts += ["", f"![{png.stem}]({png.relative_to(root).as_posix()})"]
    return "\n".join(parts).rstrip() + "\n"


def _plot_owner(png: Path, steps: list[Step]) -> Step:
    """The step whose output stem is the longest prefix of the plot's name: bench-stream.png
    is the stream benchmark's, bench-stream-cluster.png is not."""
    return max(
        (s for s in steps if png.stem.startswith(s.json_path.stem)),
        key=lambda s: len(s.json_path.stem),
    )


def rewrite(markdown: str, section: str, block: str) -> str:
    pattern = re.compile(
        rf"(<!-- generated:{section} -->\n).*?(<!-- /generated:{section} -->)", re.S
    )
    if not pattern.search(markdown):
        raise BenchAllError(
            f"BENCHMARKS.md has no <!-- generated:{section} --> ... "
            f"<!-- /generated:{section} --> block to fill"
        )
    return pattern.sub(lambda m: m.group(1) + block + m.group(2), markdown)


def render(benchmarks_md: Path, steps: list[Step], out: Path, sections: list[str]) -> None:
    text = benchmarks_md.read_text()
    root = benchmarks_md.parent.resolve()
    for section in sections:
        text = rewrite(text, section, render_section(section, steps, out.resolve(), root))
    benchmarks_md.write_text(text)
