"""Markdown and plots for `recsys replay`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DESCRIPTIONS = {
    "static": "stream updates off: batch user vectors only, fallbacks for cold users (live)",
    "ema": "EMA user vectors updated by the worker, synchronous (live)",
    "fold-in": "ALS fold-in user vectors updated by the worker, synchronous (live)",
    "ema-async": "EMA, events published at a fixed rate without waiting (live)",
    "popularity-global": "online popularity, all-time counts (in the harness)",
    "popularity-7d": "online popularity, sliding 7-day window of event time (in the harness)",
    "in-process-ema": "the worker's EMA rule replayed in process, no services",
    "in-process-fold-in": "the worker's fold-in rule replayed in process, no services",
    "ranked": "two-stage: candidate sources ranked by the version's learned ranker (live)",
    "ranker-off": "two-stage with the ranker off: the candidate sources' own order (live)",
    "in-process-ranked": "the two-stage answer replayed in process (`batch.ranking.mirror`)",
    "in-process-ranker-off": "the two-stage answer in source order, replayed in process",
}


def plot(result: dict[str, Any], path: Path) -> None:
    configurations = result["configurations"]
    freshness = {n: c["freshness"] for n, c in configurations.items() if "freshness" in c}
    fig, axes = plt.subplots(1, 2 if freshness else 1, figsize=(12 if freshness else 7, 4))
    over_time = axes[0] if freshness else axes
    for name, entry in configurations.items():
        series = entry["hr_over_time"]
        if series:
            style = "--" if name.startswith(("popularity", "in-process")) else "-"
            over_time.plot(range(1, len(series) + 1), series, style, label=name)
    over_time.set_title(f"P3 replay on {result['dataset']}: HR@10 over the replay")
    over_time.set_xlabel(f"slice of the scored events (1/{len(series)} each)")
    over_time.set_ylabel("HR@10 (diversity 1.0)")
    over_time.legend(fontsize=7)
    if freshness:
        name, fresh = next(iter(freshness.items()))
        ms = {k: v * 1000 for k, v in fresh["seconds"].items()}
        right = axes[1]
        labels = ["p50", "p95", "p99", "max"]
        right.bar(labels, [ms.get(k, 0.0) for k in labels])
        right.set_title(f"{name}: publish -> applied at {fresh['achieved_rate']:.0f} events/s")
        right.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(name: str, entry: dict[str, Any]) -> str:
    cells = [f"`{name}`"]
    for part in (entry, entry["warm"], entry["cold"]):
        cells.append(f"{part['hr@10']:.4f}" + _interval(part, "hr@10"))
    cells += [
        f"{entry['ndcg@10']:.4f}" + _interval(entry, "ndcg@10"),
        f"{entry['mrr']:.4f}",
        f"{entry['scored_events']:,}",
    ]
    return "| " + " | ".join(cells) + " |"


def _interval(part: dict[str, Any], metric: str) -> str:
    found = part.get(f"{metric}_ci95")
    return f" [{found[0]:.4f}, {found[1]:.4f}]" if found else ""


TABLE_HEAD = [
    "| configuration | HR@10 | HR@10 warm | HR@10 cold | NDCG@10 | MRR | scored events |",
    "|---|---|---|---|---|---|---|",
]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _other_diversities(configurations: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    keys = sorted({k for e in configurations.values() for k in e if k.startswith("diversity_")})
    for key in keys:
        lines += [f"The same runs at the default diversity ({key.split('_', 1)[1]}, MMR on):", ""]
        lines += TABLE_HEAD
        for name, entry in configurations.items():
            # Asynchronous runs ask one diversity only (older results hold an empty entry).
            if key in entry and entry[key]["overall"]["scored_events"]:
                summary = entry[key]
                overall = {**summary["overall"], "warm": summary["warm"], "cold": summary["cold"]}
                lines.append(_row(name, overall))
        lines.append("")
    return lines


def figures_table(result: dict[str, Any]) -> str:
    """Every configuration at diversity 1.0, the targets, then the live runs at the default
    diversity (also used by BENCHMARKS.md)."""
    configurations = result["configurations"]
    lines = [*TABLE_HEAD, *(_row(name, entry) for name, entry in configurations.items()), ""]
    if {"ema", "static", "popularity-global", "popularity-7d"} <= configurations.keys():
        ema, static = configurations["ema"]["hr@10"], configurations["static"]["hr@10"]
        best_popularity = max(
            configurations[n]["hr@10"] for n in ("popularity-global", "popularity-7d")
        )
        lines += [
            "| target (live, synchronous, diversity 1.0) | measured | verdict |",
            "|---|---|---|",
            f"| stream updates on (EMA): HR@10 >= 0.17 | {ema:.4f} | {_met(ema >= 0.17)} |",
            f"| at least 2x stream updates off ({static:.4f}) | {ema / max(static, 1e-9):.2f}x | "
            f"{_met(ema >= 2 * static)} |",
            f"| beats both online popularity baselines (best {best_popularity:.4f}) | {ema:.4f} | "
            f"{_met(ema > best_popularity)} |",
            "",
        ]
    lines += _ranked_targets(result)
    return "\n".join(lines + _other_diversities(configurations)).rstrip()


# Issue 18's targets for the ranked configuration (live, synchronous, diversity 1.0).
RANKED_TARGETS = {"ml-100k": {"hr@10": 0.23, "ndcg@10": 0.12}, "ml-latest-small": {"hr@10": 0.11}}


def _ranked_targets(result: dict[str, Any]) -> list[str]:
    configurations = result["configurations"]
    targets = RANKED_TARGETS.get(result["dataset"])
    if "ranked" not in configurations or targets is None:
        return []
    ranked = configurations["ranked"]
    lines = ["| target (two-stage, `ranked`) | measured | verdict |", "|---|---|---|"]
    for metric, floor in targets.items():
        lines.append(
            f"| {metric.upper()} >= {floor} | {ranked[metric]:.4f}"
            f"{_interval(ranked, metric)} | {_met(ranked[metric] >= floor)} |"
        )
    twin = configurations.get("in-process-ranked")
    if twin is not None:
        same = all(ranked[m] == twin[m] for m in ("hr@10", "ndcg@10", "mrr"))
        lines.append(
            f"| live equals its in-process replay | HR@10 {twin['hr@10']:.4f} in process | "
            f"{_met(same)} |"
        )
    return [*lines, ""]


def markdown(result: dict[str, Any], plot_name: str) -> str:
    configurations = result["configurations"]
    lines = [
        f"# P3 prequential replay on {result['dataset']}",
        "",
        "{header}",
        f"Fit on the first 90% of rows ({result['fit_rows']:,}), replayed the next "
        f"{result['replayed_events']:,} events in order. Each event: GET /recommend for its user "
        "(seen items excluded), scored, then published to Kafka; the live configurations run "
        "Kafka, the worker, Redis and the API as separate processes, fresh for each.",
        "",
        "## Diversity 1.0 (MMR off)",
        "",
        figures_table(result),
        "",
    ]
    lines += ["## Configurations", ""]
    lines += [f"- `{name}`: {DESCRIPTIONS.get(name, name)}" for name in configurations]
    lines += [
        "",
        "Stream-update parameters were chosen on P3's tuning run only (fit on the first 80%, "
        "replay [80%, 90%)), by replaying the worker's update rules in process:",
        "",
    ]
    for mode, tuning in result["tuning"].items():
        lines.append(f"- {mode}: chosen `{tuning['chosen']}` from {len(tuning['grid'])} candidates")
    for name, entry in configurations.items():
        if "freshness" in entry:
            fresh = entry["freshness"]
            ms = {k: v * 1000 for k, v in fresh["seconds"].items()}
            lines += [
                "",
                f"`{name}` published at {fresh['offered_rate']:g} events/s offered "
                f"({fresh['achieved_rate']:g} achieved); publish -> applied in Redis: p50 "
                f"{ms['p50']:.1f} ms, p99 {ms['p99']:.1f} ms, max {ms['max']:.1f} ms "
                f"({fresh['observed']:,} events).",
            ]
    lines += [
        "",
        "MRR counts ranks up to 100 (the API returns at most 100 items; beyond counts 0). "
        f"ALS model: `{result['model']['params']}`.",
        "",
        f"![HR@10 over the replay]({plot_name})",
        "",
    ]
    return "\n".join(lines)
