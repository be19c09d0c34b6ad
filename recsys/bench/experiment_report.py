"""The Markdown report and the plot of `recsys bench experiment`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from recsys.bench.experiment import SEPARATED_P
from recsys.experiment_plot import draw_ctr

P50_TARGET_MS = 0.1


def plot(result: dict[str, Any], path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    draw_ctr(left, result["report"])
    left.set_title("CTR by arm, cumulative (95% interval)")
    names = [arm["name"] for arm in result["report"]["arms"]]
    for arm, found in result["separation"].items():
        curve = found["curve"]
        right.plot(
            [p["impressions"] for p in curve],
            [max(p["p_value"], 1e-300) if p["p_value"] is not None else 1.0 for p in curve],
            marker="o", markersize=2, label=f"{arm} vs {result['report']['control']}",
            color=f"C{names.index(arm)}",  # as on the left
        )  # fmt: skip
    right.axhline(SEPARATED_P, color="grey", linestyle="--", label=f"p = {SEPARATED_P}")
    right.set_yscale("log")
    right.set_xlabel("impressions of both arms so far")
    right.set_ylabel("two-proportion p-value (CTR)")
    right.set_title("How soon the arms separate")
    right.grid(alpha=0.3)
    right.legend()
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _rate(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return "-"
    return f"{rate['value']:.4f} [{rate['low']:.4f}, {rate['high']:.4f}]"


def markdown(result: dict[str, Any], plot_name: str) -> str:
    return "\n".join(
        [
            "# Experiment benchmark",
            "",
            "{header}",
            figures_table(result),
            f"![CTR by arm and p-value against impressions]({plot_name})",
            "",
        ]
    )


def figures_table(result: dict[str, Any]) -> str:
    """The run, the arms' figures and the latency, as Markdown (also BENCHMARKS.md's)."""
    report, simulated, latency = result["report"], result["simulated"], result["latency"]
    config = result["config"]
    lines = [
        f"A simulated A/B run through Kafka, the stream worker, Redis and the API "
        f"({config['workers']} API workers): {simulated['answered']:,} answers to "
        f"{config['users']:,} simulated users in {simulated['seconds']:.0f} s "
        f"(stopped by {simulated['stopped_by']}), {config['k']} items each; arms "
        f"model (the control), diverse (MMR lambda {config['diverse_lambda']}) and random. "
        "Counts are what the stream worker credited (last touch); see docs/simulator.md for "
        "the behaviour model and what it does not prove.",
        "",
        "| arm | users | impressions | clicks | purchases | CTR [95%] | vs control [95%] | p | "
        "impressions to separate (p < 0.01) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in report["arms"]:
        counts, ctr = arm["counts"], arm["rates"]["ctr"]
        versus = ctr["vs_control"]
        separated = result["separation"].get(arm["name"], {}).get("separated_at_impressions")
        lines.append(
            f"| {arm['name']} | {counts['users']:,} | {counts['impressions']:,} | "
            f"{counts['clicks']:,} | {counts['purchases']:,} | {_rate(ctr)} | "
            + ("control |  | " if versus is None else
               f"{versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}] | "
               f"{versus['p_value']:.3g} | ")
            + ("" if versus is None else
               (f"{separated:,}" if separated is not None else "not separated"))
            + " |"
        )  # fmt: skip
    srm = report["srm_p_value"]
    added = latency["p50_added_ms"]
    verdict = "met" if added <= P50_TARGET_MS else "not met"
    lines += [
        "",
        f"Sample ratio: p = {srm:.3g} "
        f"({'mismatch' if report['sample_ratio_mismatch'] else 'no mismatch'}).",
        "",
        f"/recommend with an experiment running: {config['latency_rounds']} alternating rounds "
        f"of {config['latency_seconds']:.0f} s at {config['latency_rate']} requests/s, without "
        "an experiment and with one of two arms that serve the same answers (medians of the "
        "rounds):",
        "",
        "| | p50 ms | p50 of the rounds, lowest to highest | p99 ms |",
        "|---|---|---|---|",
        *(
            f"| {label} | {latency[which]['p50_ms']:.2f} | "
            + (
                "-"
                if "p50_range_ms" not in latency[which]
                else "{:.2f} to {:.2f}".format(*latency[which]["p50_range_ms"])
            )
            + f" | {latency[which]['p99_ms']:.2f} |"
            for which, label in (("none", "no experiment"), ("experiment", "experiment"))
        ),
        "",
        f"p50 added: **{added:+.3f} ms** (target: at most {P50_TARGET_MS} ms: {verdict}). "
        f"The work an experiment adds to a request, timed in process (assignment and the "
        f"query's copy with the arm's parameters, 100,000 users): "
        f"**{latency['assignment_us']:.1f} µs**.",
        "",
    ]
    return "\n".join(lines)
