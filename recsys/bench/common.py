"""Shared plumbing of the `recsys bench` commands: the machine, the command, JSON + Markdown."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.provenance import provenance
from core.settings import Settings


def _fixed_work() -> None:
    """A few tens of microseconds of ordinary interpreter work: dicts, a sort, formatting."""
    table = {f"item-{n}": (n * 7919) % 1009 for n in range(200)}
    ranked = sorted(table.items(), key=lambda pair: pair[1])
    "".join(f"{key}:{value};" for key, value in ranked[:50])


def idle_wake_cost(
    repeats: int = 200,
    idle_s: float = 0.005,
    work: Callable[[], None] = _fixed_work,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, float]:
    """How much slower the same work runs right after the process has been idle, as a
    server's is between requests at a modest rate. On a virtual machine whose idle vCPUs halt,
    caches go cold in between; the factor varies with the host's other load, so benchmarks of
    latency at a fixed rate record it next to their figures. Medians, in microseconds."""

    def median_us(pause: bool) -> float:
        times = []
        for _ in range(repeats):
            if pause:
                sleep(idle_s)
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1e6

    back_to_back, after_idle = median_us(False), median_us(True)
    return {
        "back_to_back_us": back_to_back,
        "after_idle_us": after_idle,
        "idle_s": idle_s,
        "factor": after_idle / back_to_back if back_to_back > 0 else float("nan"),
    }


def save(result: dict[str, Any], markdown: str, json_path: Path, report_path: Path) -> None:
    """Write the figures as JSON and the report as Markdown (with the machine and command)."""
    result = {**result, **provenance()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str))
    info = result["machine"]
    header = (
        f"Measured {result['measured_at']} on {info['cores']} cores ({info['cpu']}), "
        f"{info['memory_gib']} GiB, Python {info['python']}.\n\nCommand: `{result['command']}`\n\n"
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(markdown.replace("{header}", header))


def save_with_plot(
    result: dict[str, Any],
    draw: Callable[[Path], None],
    markdown: Callable[[str], str],
    json_path: Path,
    report_path: Path,
) -> Path:
    """Draw the plot beside the report (same name, .png), then `save` the figures and the
    report, which `markdown` writes given the plot's file name. Returns the plot's path."""
    plot_path = report_path.with_suffix(".png")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    draw(plot_path)
    save(result, markdown(plot_path.name), json_path, report_path)
    return plot_path


@contextlib.contextmanager
def bench_services(
    use_running: bool,
    prefix: str,
    redis_cluster: int | None = None,
    redis_appendonly: bool = False,
) -> Iterator[tuple[Settings, Path]]:
    """Settings and a scratch directory for a benchmark: throwaway Kafka and Redis on free
    ports (with `redis_cluster`, a Redis Cluster of that many masters; with `redis_appendonly`,
    keeping an append-only file, so that a restart keeps the data), stopped afterwards
    (default), or the configured services as they are."""
    from infra.local.process import free_port, free_port_run
    from infra.local.services import LocalServices

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work_dir = Path(tmp)
        if use_running:
            yield Settings(), work_dir
            return
        redis_port = free_port_run(redis_cluster, 10_000) if redis_cluster else free_port()
        settings = Settings(
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            kafka_controller_port=free_port(),
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            redis_cluster=redis_cluster is not None,
            state_dir=work_dir,
        )
        services = LocalServices.from_settings(
            settings, redis_appendonly=redis_appendonly, redis_cluster_masters=redis_cluster
        )
        services.up()
        try:
            yield settings, work_dir
        finally:
            services.down()


def redis_cpu_seconds(redis_url: str) -> float:
    """CPU seconds the Redis server has used so far (INFO cpu: works for a remote one too)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def redis_node_urls(settings: Settings) -> list[str]:
    """The Redis servers behind `settings`: the one server, or every node of the cluster (from
    CLUSTER NODES of the seed), so that each one's CPU can be read."""
    if not settings.redis_cluster:
        return [settings.redis_url]
    import redis

    seed = redis.Redis.from_url(settings.redis_url)
    try:
        nodes = seed.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    finally:
        seed.close()
    return sorted(f"redis://{address.split('@')[0]}/0" for address in nodes)


def redis_topology(settings: Settings) -> str:
    """How the benchmark's Redis is deployed, in words for its report."""
    if not settings.redis_cluster:
        return "one Redis server"
    return f"a Redis Cluster of {len(redis_node_urls(settings))} masters"


def redis_cpu_total(urls: list[str]) -> float:
    """CPU seconds used so far by all of these Redis servers together."""
    return sum(map(redis_cpu_seconds, urls))


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `recsys serve` / `recsys worker` child that must use exactly the
    services of `settings` (the parent's own RECSYS_ variables are dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(
        RECSYS_REDIS_URL=settings.redis_url,
        RECSYS_REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        RECSYS_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        RECSYS_STATE_DIR=str(settings.state_dir),
        RECSYS_LOG_LEVEL="WARNING",
    )
    for name in ("qdrant_url", "qdrant_path", "qdrant_api_key"):
        value = getattr(settings, name)
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            env[f"RECSYS_{name.upper()}"] = str(secret() if secret else value)
    return env | extra


def percentiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50, p95, p99, p99.9, max and mean of `values` times `scale` (1000: seconds to
    milliseconds); empty for no values. The one summary every benchmark reports."""
    arr = np.asarray(values, dtype=np.float64) * scale
    if arr.size == 0:
        return {}
    p50, p95, p99, p999 = np.percentile(arr, [50, 95, 99, 99.9])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }
