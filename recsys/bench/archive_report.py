"""Markdown and plots for `recsys bench archive`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The figures issue 17 asks for.
TARGET_EVENTS_PER_S = 10_000
TARGET_P99_S = 5.0


def _rate(events_per_s: float | None) -> str:
    # None: the whole backlog went in one commit, so there is no rate after the first one.
    return "one commit" if events_per_s is None else f"{events_per_s:,.0f} events/s"


def plot(result: dict[str, Any], samples: list[float], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series = result["throughput"]["series"]
    left.plot([t for t, _ in series], [n for _, n in series])
    left.set_title(f"Backlog archived: {_rate(result['throughput']['events_per_s'])}")
    left.set_xlabel("seconds since the archiver started")
    left.set_ylabel("events in the table")
    right.hist(samples, bins=60)
    p99 = result["latency"]["latency_s"].get("p99", float("nan"))
    right.axvline(p99, color="red", linestyle="--", label=f"p99 {p99:.2f} s")
    right.set_title(f"Publish -> visible in the table, {result['latency']['offered_rate']:,}/s")
    right.set_xlabel("seconds")
    right.set_ylabel("events")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_table(result: dict[str, Any]) -> str:
    """The headline table (also used by BENCHMARKS.md)."""
    throughput, latency, disk = result["throughput"], result["latency"], result["disk"]
    config = result["config"]
    s = latency["latency_s"]
    rows = [
        (
            f"sustained events/s into the table (backlog of {config['events']:,}, after the "
            "first commit)",
            f"**{_rate(throughput['events_per_s'])}**",
            f">= {TARGET_EVENTS_PER_S:,}",
        ),
        (
            "the same with the archiver's start-up",
            f"{throughput['events_per_s_with_startup']:,.0f} events/s "
            f"({throughput['seconds_with_startup']:.1f} s)",
            "",
        ),
        (
            "archiver CPU per event (one process)",
            f"{throughput['archiver_cpu_us_per_event']:,.1f} µs",
            "",
        ),
        (
            f"publish -> visible to a reader, p50 / p95 / p99 / max at "
            f"{latency['offered_rate']:,} events/s ({config['batch_seconds']:g} s batches)",
            f"{s['p50']:.2f} / {s['p95']:.2f} / **{s['p99']:.2f}** / {s['max']:.2f} s",
            f"p99 < {TARGET_P99_S:g} s",
        ),
        (
            "events of the latency run found in the table",
            f"{latency['visible']:,} of {latency['events']:,}",
            "all",
        ),
        (
            "archiver CPU at that rate",
            f"{latency['archiver_cpu_share'] * 100:.0f}% of a core",
            "",
        ),
        (
            f"bytes per event on disk, as written ({disk['files']:,} files)",
            f"**{disk['bytes_per_event']:.1f} bytes**",
            "",
        ),
        (
            f"after `recsys archive compact` ({disk['files_after_compact']:,} files)",
            f"{disk['bytes_per_event_after_compact']:.1f} bytes",
            "",
        ),
    ]
    lines = ["| figure | measured | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def markdown(result: dict[str, Any], plot_name: str) -> str:
    return (
        "# Event archive benchmark\n\n{header}"
        + figures_table(result)
        + f"\n\n![archive]({plot_name})\n"
    )
