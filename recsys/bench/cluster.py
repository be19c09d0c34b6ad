"""`recsys bench cluster`: the stream and API benchmarks on one Redis and on Redis Clusters, in
one run, side by side.

Each topology gets its own throwaway Kafka and Redis (or cluster), started and stopped around
its run, so no run inherits another's data. The stream benchmark runs on one Redis and on
clusters of each number of masters asked for (1, 2 and 3 by default: how the cost per shard
changes as shards are added), without the offered-rate sweep and Faust's no-op ceiling, which
no Redis figure depends on; the API benchmark runs on one Redis and on the largest cluster.
The summaries keep what the comparison needs: throughput, CPU per event (Redis's per node),
freshness, bytes per user, latency and CPU per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recsys.bench import api as api_bench
from recsys.bench import stream as stream_bench


@dataclass(frozen=True)
class ClusterBenchConfig:
    shards: tuple[int, ...] = (1, 2, 3)
    stream: stream_bench.StreamBenchConfig = field(
        default_factory=lambda: stream_bench.StreamBenchConfig(sweep_rates=(), faust_ceiling=False)
    )
    # None: the stream benchmark alone.
    api: api_bench.ApiBenchConfig | None = field(default_factory=api_bench.ApiBenchConfig)


def topology_name(shards: int | None) -> str:
    if shards is None:
        return "one Redis"
    return f"cluster, {shards} master{'s' if shards > 1 else ''}"


def stream_summary(result: dict[str, Any], shards: int | None) -> dict[str, Any]:
    """What the comparison keeps of one `recsys bench stream` run."""
    cpu = result["throughput"]["cpu_us_per_event"]
    per_node = sorted(us for name, us in cpu.items() if name.startswith("redis@"))
    return {
        "topology": topology_name(shards),
        "shards": shards,
        "events_per_s": result["throughput"]["events_per_s"],
        "cpu_us_per_event": {k: v for k, v in cpu.items() if "@" not in k},
        "redis_cpu_us_per_event_by_node": per_node or [cpu["redis"]],
        "freshness_ms": {k: v * 1000 for k, v in result["freshness"]["seconds"].items()},
        "freshness_observed": result["freshness"]["observed"],
        "freshness_events": result["freshness"]["events"],
        "bytes_per_user": result["memory"]["bytes_per_user"]["total_mean"],
        "bytes_per_item": result["bytes_per_item"],
    }


def api_summary(result: dict[str, Any], shards: int | None) -> dict[str, Any]:
    """What the comparison keeps of one `recsys bench api` run."""
    fixed, saturated = result["recommend"]["fixed_rate"], result["recommend"]["saturation"]

    def per_request(run: dict[str, Any], what: str) -> float:
        return float(run["resources"][what] / run["requests"] * 1e6)

    return {
        "topology": topology_name(shards),
        "shards": shards,
        "rate": result["config"]["rate"],
        "latency_ms": fixed["latency_ms"],
        "errors": fixed["errors"],
        "sources": fixed["sources"],
        "saturation_requests_per_s": saturated["requests_per_s"],
        "saturation_latency_ms": saturated["latency_ms"],
        "saturation_errors": saturated["errors"],
        "server_cpu_us_per_request": per_request(saturated, "server_cpu_s"),
        "redis_cpu_us_per_request": per_request(saturated, "redis_cpu_s"),
        "idle_wake_cost": result["idle_wake_cost"],
    }


def run(
    config: ClusterBenchConfig,
    data_dir: Path | None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    topologies: list[int | None] = [None, *config.shards]
    stream_runs = []
    for shards in topologies:
        progress(f"stream benchmark on {topology_name(shards)}")
        result = stream_bench.run_with_local_services(config.stream, False, shards)
        stream_runs.append(stream_summary(result, shards))
    api_runs = []
    if config.api is not None:
        for shards in (None, max(config.shards)):
            progress(f"API benchmark on {topology_name(shards)}")
            result = api_bench.run_with_local_services(config.api, data_dir, False, shards)
            api_runs.append(api_summary(result, shards))
    return {
        "benchmark": "cluster",
        "config": {
            "shards": list(config.shards),
            "stream": asdict(config.stream),
            "api": asdict(config.api) if config.api else None,
        },
        "stream": stream_runs,
        "api": api_runs,
    }
