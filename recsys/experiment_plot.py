"""The plot of an experiment's report: each arm's click-through rate over time, cumulative from
the start, with its 95% interval (`recsys experiments report`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from core.experiments import Rate


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Cumulative CTR per arm over the report's time buckets, with Wilson 95% bands."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    draw_ctr(axis, report)
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def draw_ctr(axis: Any, report: dict[str, Any]) -> None:
    """The cumulative CTR of each arm, with its 95% band, on `axis`."""
    buckets = report["buckets"]
    times = np.array([datetime.fromtimestamp(b["start_s"], UTC) for b in buckets])
    for arm in report["arms"]:
        name = arm["name"]
        clicked = impressions = 0
        values, lows, highs = [], [], []
        for bucket in buckets:
            counts = bucket["arms"].get(name, {})
            clicked += counts.get("clicked_impressions", 0)
            impressions += counts.get("impressions", 0)
            rate = Rate(clicked, impressions)
            low, high = rate.interval()
            values.append(rate.value)
            lows.append(low)
            highs.append(high)
        (line,) = axis.plot(times, values, marker="o", markersize=3, label=name)
        axis.fill_between(times, lows, highs, color=line.get_color(), alpha=0.2)
    axis.set_title(f"Experiment {report['id']}: click-through rate, cumulative (95% interval)")
    axis.set_xlabel("time bucket (UTC)")
    axis.set_ylabel("clicked impressions / impressions")
    axis.grid(alpha=0.3)
    axis.legend()
