"""Markdown and plot of `recsys bench cluster`: each topology next to one Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The figures: one worker on a 3-master cluster within 10% of one Redis, and Redis CPU
# per event summed over the shards no higher than one Redis's.
THROUGHPUT_SHARE = 0.9


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def stream_table(result: dict[str, Any]) -> str:
    runs = result["stream"]
    base = runs[0]
    lines = [
        "| Redis | events/s (vs one Redis) | CPU per event: worker / apply / Redis, µs | "
        "Redis per node, µs | freshness p50 / p99 | bytes per user |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        cpu = run["cpu_us_per_event"]
        share = run["events_per_s"] / base["events_per_s"]
        nodes = run["redis_cpu_us_per_event_by_node"]
        fresh = run["freshness_ms"]
        lines.append(
            f"| {run['topology']} | {run['events_per_s']:,.0f} ({share:.0%}) | "
            f"{cpu['worker']:.0f} / {cpu['apply process']:.0f} / {cpu['redis']:.1f} | "
            f"{' + '.join(f'{us:.1f}' for us in nodes)} | "
            f"{fresh['p50']:.1f} / {fresh['p99']:.1f} ms | {run['bytes_per_user']:,.0f} |"
        )
    return "\n".join(lines)


def api_table(result: dict[str, Any]) -> str:
    lines = [
        "| Redis | GET /recommend p50 / p99 at the fixed rate | saturation | "
        "CPU per request at saturation: server / Redis | errors: fixed rate / saturation |",
        "|---|---|---|---|---|",
    ]
    for run in result["api"]:
        lat = run["latency_ms"]
        lines.append(
            f"| {run['topology']} | {lat['p50']:.2f} / {lat['p99']:.2f} ms at "
            f"{run['rate']} requests/s | {run['saturation_requests_per_s']:,.0f} requests/s | "
            f"{run['server_cpu_us_per_request']:,.0f} / {run['redis_cpu_us_per_request']:,.0f} µs "
            f"| {_errors(run['errors'])} / {_errors(run['saturation_errors'])} |"
        )
    return "\n".join(lines)


def _errors(errors: dict[str, int] | None) -> str:
    """wrk's and the fixed-rate client's error counts by kind, or "none"."""
    found = {kind: n for kind, n in (errors or {}).items() if n}
    return ", ".join(f"{kind} {n:,}" for kind, n in found.items()) or "none"


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, measured, verdict) against the targets, for the largest cluster."""
    base, largest = result["stream"][0], result["stream"][-1]
    share = largest["events_per_s"] / base["events_per_s"]
    redis_base, redis_cluster = (
        base["cpu_us_per_event"]["redis"],
        largest["cpu_us_per_event"]["redis"],
    )
    return [
        (
            f"one worker's drain on the {largest['topology']} against one Redis",
            f"{largest['events_per_s']:,.0f} against {base['events_per_s']:,.0f} events/s "
            f"({share:.0%})",
            f">= {THROUGHPUT_SHARE:.0%}: {_met(share >= THROUGHPUT_SHARE)}",
        ),
        (
            "Redis CPU per event, summed over the shards, against one Redis",
            f"{redis_cluster:.1f} against {redis_base:.1f} µs",
            f"no higher: {_met(redis_cluster <= redis_base)}",
        ),
    ]


def figures_table(result: dict[str, Any]) -> str:
    """Targets, then the stream and API comparisons (also used by BENCHMARKS.md)."""
    rows = ["| figure | measured | target |", "|---|---|---|"]
    rows += [f"| {a} | {b} | {c} |" for a, b, c in verdicts(result)]
    parts = [
        "\n".join(rows),
        "",
        "**Stream worker** (one worker process):",
        "",
        stream_table(result),
    ]
    if result["api"]:
        parts += ["", "**API** (`recsys serve --workers 2`):", "", api_table(result)]
    return "\n".join(parts)


def plot(result: dict[str, Any], path: Path) -> None:
    runs = result["stream"]
    names = [run["topology"] for run in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(names, [run["events_per_s"] for run in runs], color="tab:blue")
    left.axhline(
        runs[0]["events_per_s"] * THROUGHPUT_SHARE, color="red", linestyle="--",
        label=f"{THROUGHPUT_SHARE:.0%} of one Redis",
    )  # fmt: skip
    left.set_ylabel("events/s drained by one worker")
    left.set_title("Throughput")
    left.legend()
    # Redis CPU per event, each shard's share stacked: the sum is what the cluster spends.
    for index, run in enumerate(runs):
        bottom = 0.0
        for node, us in enumerate(run["redis_cpu_us_per_event_by_node"]):
            right.bar(index, us, bottom=bottom, color=plt.cm.tab10(node), edgecolor="white")
            bottom += us
    right.set_xticks(range(len(runs)), names)
    right.axhline(
        runs[0]["cpu_us_per_event"]["redis"], color="red", linestyle="--", label="one Redis"
    )
    right.set_ylabel("µs of Redis CPU per event (stacked by shard)")
    right.set_title("Redis CPU per applied event")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], plot_name: str) -> str:
    config = result["config"]["stream"]
    return f"""# Redis Cluster benchmark

{{header}}The stream benchmark (one worker; {config["events"]:,} events from {config["users"]:,}
users drained, then {config["freshness_rate"]:,} events/s for {config["freshness_seconds"]:.0f} s)
and the API benchmark, each on its own throwaway Kafka with one Redis server, then with Redis
Clusters of {", ".join(map(str, result["config"]["shards"]))} masters; all on the same machine,
one topology after another. Redis CPU is read from every node (INFO cpu).

{figures_table(result)}

![one Redis against clusters]({plot_name})
"""
