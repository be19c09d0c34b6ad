"""Markdown and plot for `recsys bench loop`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TARGET_DIFFERENCE = 0.001
_SOURCES = {
    "file": "the file (ratings weigh 1)",
    "file_as_published": "the file's rows as published (purchases)",
    "archive": "the archive (read back from Delta)",
}


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(8, 4))
    names = list(_SOURCES)
    values = [result["p1"][n]["ndcg@10"] for n in names]
    low = [v - result["p1"][n]["ndcg@10_ci95"][0] for n, v in zip(names, values, strict=True)]
    high = [result["p1"][n]["ndcg@10_ci95"][1] - v for n, v in zip(names, values, strict=True)]
    axis.bar(range(len(names)), values, yerr=[low, high], capsize=6, color=["grey", "C0", "C1"])
    axis.set_xticks(range(len(names)), [_SOURCES[n] for n in names], fontsize=8)
    axis.set_ylabel("P1 NDCG@10 (bootstrap 95% interval)")
    axis.set_title(
        f"Served ALS on {result['config']['dataset']}: archive vs file, "
        f"difference {result['ndcg_difference']:.4f}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_table(result: dict[str, Any]) -> str:
    """The headline table (also used by BENCHMARKS.md)."""
    replay, archive, rows = result["replay"], result["archive"], result["rows"]
    decision = result["retrain"]
    p1 = result["p1"]
    lines = ["| figure | measured | target |", "|---|---|---|"]

    def row(name: str, value: str, target: str = "") -> None:
        lines.append(f"| {name} | {value} | {target} |")

    row(
        "events replayed through Kafka (`recsys simulate --replay`)",
        f"{replay['events']:,} in {replay['seconds']:.1f} s",
    )
    row(
        "archived by one `recsys archive run` (after its first commit)",
        f"{archive['events']:,}: {archive['events_per_s']:,.0f} events/s"
        if archive.get("events_per_s")
        else f"{archive['events']:,} in one commit",
    )
    row(
        "rows read back from the table: missing / extra / identical to those published",
        f"{rows['missing']:,} / {rows['extra']:,} / **{'yes' if rows['identical'] else 'no'}**",
        "0 / 0 / yes",
    )
    for name, label in _SOURCES.items():
        figures = p1[name]
        low, high = figures["ndcg@10_ci95"]
        row(
            f"P1 NDCG@10 of the served ALS trained on {label}",
            f"{figures['ndcg@10']:.4f} [{low:.4f}, {high:.4f}], HR@10 {figures['hr@10']:.4f}",
        )
    difference = result["ndcg_difference"]
    row(
        "NDCG@10 difference, archive vs file as published",
        f"**{difference:.4f}**",
        f"<= {TARGET_DIFFERENCE}: {'met' if difference <= TARGET_DIFFERENCE else '**not met**'}",
    )
    row(
        "`recsys retrain` once on the archive: decision (reason)",
        f"{decision['decision']} ({decision['reason']})",
        "published (no active version)",
    )
    if decision.get("candidate_ndcg") is not None:
        row(
            "its candidate / popularity on the held-out newest 10%: NDCG@10",
            f"{decision['candidate_ndcg']:.4f} / {decision['popularity_ndcg']:.4f} "
            f"({decision['seconds']} s in all)",
        )
    return "\n".join(lines)


def markdown(result: dict[str, Any], plot_name: str) -> str:
    return "# The closed loop\n\n{header}" + figures_table(result) + f"\n\n![loop]({plot_name})\n"
