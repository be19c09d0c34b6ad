"""The Markdown report and the plot of `recsys bench drift`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(result: dict[str, Any], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(9, 4.5))
    names = sorted({name for s in result["samples"] for name in s["psi"]})
    for name in names:
        points = [(s["t_s"], s["psi"][name]) for s in result["samples"]
                  if s["psi"].get(name) is not None]  # fmt: skip
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", markersize=2, label=name)
    axis.axvline(result["shift_s"], color="black", linestyle=":", label="tastes shift")
    axis.axhline(result["threshold"], color="grey", linestyle="--", label="alert threshold")
    axis.set_xlabel("seconds since the simulated run started")
    axis.set_ylabel("PSI, live window against its reference")
    axis.set_title(f"Drift: PSI per distribution ({result['config']['window_s']:.0f} s window)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# The usual rule of thumb's "moderate shift": reported beside the alert's threshold.
MODERATE_PSI = 0.1


def figures_table(result: dict[str, Any]) -> str:
    from recsys.bench.drift import detection

    config, found = result["config"], result["detection"]
    moderate = detection(result["samples"], result["shift_s"], MODERATE_PSI)
    simulated = result["simulated"]
    names = sorted(set(found["max_psi_before_shift"]) | set(found["seconds_to_threshold"]))
    lines = [
        f"{simulated['answered']:,} answers in {simulated['seconds']:.0f} s to "
        f"{config['users']:,} simulated users; their tastes shift at "
        f"{result['shift_s']:.0f} s. Live window {config['window_s']:.0f} s in "
        f"{config['buckets']} buckets, published every {config['publish_interval_s']:.0f} s; "
        f"`GET /monitoring/drift` sampled every {config['sample_every_s']:.0f} s; threshold "
        f"{result['threshold']}. The watched version was trained on the "
        f"{result['model']['training_events']:,} events of a {config['warmup_seconds']:.0f} s "
        "warm-up run (the system's own traffic), so that its baseline describes what it serves. "
        "The score distributions (event_scores: the cosine of each event's item with the user's "
        "vector just before it; served_scores) are compared with the version's live reference, "
        f"the window after a {config['settle_s']:.0f} s settling time (from "
        + ", ".join(
            f"{name} {t:.0f} s" for name, t in sorted(found.get("reference_from_s", {}).items())
        )
        + " into the run); the others with the training baseline.",
        "",
        "| distribution | highest PSI before the shift | highest after | seconds from the shift "
        f"to PSI above {MODERATE_PSI} | to PSI above the threshold |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        before = found["max_psi_before_shift"].get(name)
        highest = max(
            (s["psi"][name] for s in result["samples"]
             if s["t_s"] >= result["shift_s"] and s["psi"].get(name) is not None),
            default=None,
        )  # fmt: skip
        early = moderate["seconds_to_threshold"].get(name)
        after = found["seconds_to_threshold"].get(name)
        lines.append(
            f"| {name} | {'-' if before is None else f'{before:.3f}'} | "
            f"{'-' if highest is None else f'{highest:.3f}'} | "
            f"{'not above' if early is None else f'{early:.0f}'} | "
            f"{'not above' if after is None else f'{after:.0f}'} |"
        )
    first = found["first_detection_s"]
    lines += [
        "",
        "First detection: "
        + (f"**{first:.0f} s** after the shift" if first is not None else "**none**")
        + (
            "; above the threshold before the shift too (a false alarm): "
            + ", ".join(found["above_threshold_before_shift"])
            if found["above_threshold_before_shift"]
            else "; nothing above the threshold before the shift"
        )
        + ". The alert `RecsysInputDrift` waits 15 minutes more (`for: 15m`).",
        "",
    ]
    return "\n".join(lines)


def markdown(result: dict[str, Any], plot_name: str) -> str:
    return "\n".join(
        ["# Drift benchmark", "", "{header}", figures_table(result), f"![PSI]({plot_name})", ""]
    )
