"""Markdown and plots for `recsys bench stream`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot(result: dict[str, Any], samples: list[float], path: Path) -> None:
    sweep = result.get("sweep") or []
    fig, axes = plt.subplots(1, 3 if sweep else 2, figsize=(16 if sweep else 11, 4))
    left, right = axes[0], axes[1]
    series = result["throughput"]["series"]
    left.plot([t for t, _ in series], [n for _, n in series])
    left.set_title(f"Backlog drained: {result['throughput']['events_per_s']:,.0f} events/s")
    left.set_xlabel("seconds since the first applied event")
    left.set_ylabel("events applied")
    right.hist([s * 1000 for s in samples], bins=60)
    p99 = result["freshness"]["seconds"].get("p99", float("nan")) * 1000
    right.axvline(p99, color="red", linestyle="--", label=f"p99 {p99:.0f} ms")
    right.set_title(f"Freshness at {result['freshness']['offered_rate']:,} events/s")
    right.set_xlabel("publish -> state written in Redis (ms)")
    right.set_ylabel("events")
    right.legend()
    if sweep:
        offered = [run["offered_rate"] for run in sweep]
        axis = axes[2]
        axis.plot(offered, [run["applied_rate"] for run in sweep], "o-", label="applied")
        axis.plot(offered, offered, ":", color="grey", label="offered")
        axis.set_title("Throughput vs offered rate")
        axis.set_xlabel("offered events/s")
        axis.set_ylabel("applied events/s")
        p99_axis = axis.twinx()
        p99_axis.plot(
            offered,
            [run["seconds"].get("p99", 0) * 1000 for run in sweep],
            "s--",
            color="red",
            label="freshness p99",
        )
        p99_axis.set_ylabel("freshness p99 (ms)", color="red")
        axis.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_table(result: dict[str, Any]) -> str:
    """The headline table (also used by BENCHMARKS.md)."""
    throughput = result["throughput"]
    fresh = result["freshness"]
    ms = {k: v * 1000 for k, v in fresh["seconds"].items()}
    mem = result["memory"]["bytes_per_user"]
    config = result["config"]
    rows = [
        (
            f"sustained throughput (backlog of {config['events']:,} events)",
            f"**{throughput['events_per_s']:,.0f} events/s**",
            ">= 10,000",
        ),
        (
            f"freshness p50 / p95 / p99 / max, {fresh['offered_rate']:,} events/s offered "
            f"({fresh['achieved_rate']:,.0f} achieved)",
            f"{ms['p50']:.1f} / {ms['p95']:.1f} / **{ms['p99']:.1f}** / {ms['max']:.1f} ms",
            "p99 < 250 ms",
        ),
        (
            "events observed in the freshness run",
            f"{fresh['observed']:,} of {fresh['events']:,}",
            "all",
        ),
        (
            "Redis memory per active user (MEMORY USAGE of the user's one key)",
            f"**{mem['total_mean']:,.0f} bytes** mean, {mem['total_p95']:,.0f} p95",
            "< 600 bytes",
        ),
        (
            "of which the packed value / its vector / history / recent event ids"
            if "value" in mem
            else "of which payload: vector / history / recent event ids",
            (f"{mem['value']:,.0f} / " if "value" in mem else "")
            + f"{mem['vector']:,.0f} / {mem['history']:,.0f} / {mem['event_ids']:,.0f} bytes",
            "",
        ),
        ("events per sampled user", f"{result['memory']['mean_events_per_user']:.1f}", ""),
        *_fatigue_rows(result),
        *_item_rows(result),
        (
            "producer rate loading the backlog",
            f"{result['producer_events_per_s']:,.0f} events/s",
            "",
        ),
    ]
    for run in result.get("sweep") or []:
        p99 = run["seconds"].get("p99", float("nan")) * 1000
        bench_cpu = run.get("bench_process_cpu_us_per_event")  # absent from earlier runs
        rows.append(
            (
                f"offered {run['offered_rate']:,} events/s ({run['events']:,} events)",
                f"{run['applied_rate']:,.0f} applied/s, freshness p99 {p99:,.0f} ms, "
                f"{run['observed']:,} of {run['events']:,} observed"
                + (
                    f"; the benchmark's producer: {bench_cpu:,.0f} µs of CPU per event"
                    if bench_cpu is not None
                    else ""
                ),
                "",
            )
        )
    if ceiling := result.get("faust_noop_drain"):  # absent from runs before it was measured
        noop_cpu = ceiling.get("cpu_us_per_event")
        rows.insert(1, (
            "Faust's own ceiling: the same backlog drained by the worker's agent with a "
            "processor that applies nothing",
            f"{ceiling['events_per_s']:,.0f} events/s"
            + (f", {noop_cpu:,.0f} µs of CPU per event" if noop_cpu is not None else ""),
            "",
        ))  # fmt: skip
    cpu = {k: v for k, v in (throughput.get("cpu_us_per_event") or {}).items() if "@" not in k}
    by_node = {
        k.split("@", 1)[1]: v
        for k, v in (throughput.get("cpu_us_per_event") or {}).items()
        if "@" in k
    }
    if cpu:
        rows.insert(1, (
            "CPU per applied event while draining: " + " / ".join(cpu),
            " / ".join(f"{us:,.0f}" for us in cpu.values())
            + f" µs: {_cores_needed(cpu, 10_000):.2f} cores at 10,000 events/s",
            "",
        ))  # fmt: skip
    if by_node:
        rows.insert(2, (
            "Redis CPU per applied event, by cluster node",
            " / ".join(f"{node}: {us:,.1f} µs" for node, us in by_node.items()),
            "",
        ))  # fmt: skip
    lines = ["| figure | value | target |", "|---|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _item_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    per_item = result.get("bytes_per_item")  # absent from runs before it was measured
    if not per_item:
        return []
    return [(
        "bytes per item of the published version (64 dims): Redis vectors / payloads, vector "
        "index shard on disk (its fixed preallocations included)",
        f"{per_item['redis_vectors']:,.0f} / {per_item['redis_payloads']:,.0f} / "
        f"{per_item['vector_index_on_disk']:,.0f} bytes",
        "",
    )]  # fmt: skip


def _cores_needed(cpu_us_per_event: dict[str, float], events_per_s: int) -> float:
    return sum(cpu_us_per_event.values()) * events_per_s / 1e6


def markdown(result: dict[str, Any], plot_name: str) -> str:
    config = result["config"]
    redis = result.get("redis", "one Redis server")
    return f"""# Stream worker benchmark

{{header}}One worker process, real Kafka and {redis} on the same machine; a published
model with {config["items"]:,} random 64-dim item vectors; events from {config["users"]:,} users
(80% views, 15% clicks, 5% purchases; Zipf item popularity).

{figures_table(result)}

![throughput and freshness]({plot_name})
"""


def _fatigue_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    table = result["memory"].get("transitions")  # absent from runs before the table
    if table and table["source_items"]:
        rows.append(
            (
                f"item-to-item transition table: Redis memory per item left "
                f"({table['source_items']:,.0f} items, {table['next_items_mean']:.1f} next "
                "items each on average)",
                f"{table['bytes_per_item']:,.0f} bytes",
                "",
            )
        )
    fatigue = result["memory"].get("with_fatigue")  # absent from runs before impressions
    if not fatigue:
        return rows
    return [
        *rows,
        (
            f"the same users once shown answers: fatigue records full ({fatigue['items']:.0f} "
            f"items, {fatigue['fatigue_bytes']:.0f} bytes of the value)",
            f"{fatigue['total_mean']:,.0f} bytes mean",
            "",
        ),
    ]
