"""`recsys bench freshness`: how long after an event is published GET /recommend reflects it,
while `recsys simulate` loads the stack.

The whole stack runs as separate processes on throwaway Kafka and Redis: a synthetic model is
trained and published, one worker and the API start, and `recsys simulate --rate R` publishes
background load. Meanwhile a probe, every `probe_interval_s`, publishes one purchase for a
brand-new user and polls GET /recommend for that user until the answer is personalized (a new
user is answered from the fallbacks until the worker has given them a vector). Freshness is the
time from just before the send to the first personalized answer, so it includes Kafka, the
worker's batching, the Redis write, and the API reading it; polling adds up to one poll period.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import matplotlib

from core.settings import Settings

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DATASET = "synthetic:users=5000,items=2000,events=200000,seed=0"
POLL_S = 0.002


@dataclass(frozen=True)
class FreshnessBenchConfig:
    rate: int = 1_000  # background events/s from `recsys simulate`
    probes: int = 300
    probe_interval_s: float = 0.1
    probe_timeout_s: float = 5.0
    warmup_s: float = 5.0  # background load before the first probe


def _simulator(settings: Settings, config: FreshnessBenchConfig, work_dir: Path) -> Any:
    from recsys.bench.common import service_env

    # Long enough to cover every probe (each needs at most probe_timeout_s); it then ends by
    # itself and prints the rate it achieved.
    duration = config.warmup_s + config.probes * config.probe_interval_s + config.probe_timeout_s
    log = (work_dir / "simulate.log").open("wb")
    argv = [sys.executable, "-m", "recsys", "simulate", "--rate", str(config.rate),
            "--duration", f"{duration:.0f}", "--users", "5000"]  # fmt: skip
    # A wide console: the summary line must not wrap, it is parsed.
    env = service_env(settings, COLUMNS="200")
    return subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


async def _probe(
    client: httpx.AsyncClient, producer: Any, item_ids: list[str], n: int, timeout_s: float
) -> float | None:
    from schemas import encode_event, event_key, new_event, topic_for

    user = f"probe-{uuid.uuid4().hex[:10]}"
    event = new_event("purchase", user, item_ids[n % len(item_ids)])
    started = time.perf_counter()
    await producer.send(topic_for(event.event_type), encode_event(event), key=event_key(event))
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        response = await client.get(f"/recommend/{user}", params={"k": 10})
        if response.status_code == 200 and response.json()["source"] == "personalized":
            return time.perf_counter() - started
        await asyncio.sleep(POLL_S)
    return None


async def _probes(
    settings: Settings, api_url: str, config: FreshnessBenchConfig
) -> list[float | None]:
    from core.clients import kafka_producer, redis_client
    from recsys.simulator import load_catalog

    redis = redis_client(settings)
    try:
        item_ids = list((await load_catalog(redis)).item_ids[:200])
    finally:
        await redis.aclose()
    producer = kafka_producer(settings, linger_ms=0)
    await producer.start()
    results: list[float | None] = []
    try:
        async with httpx.AsyncClient(base_url=api_url, timeout=5) as client:
            await asyncio.sleep(config.warmup_s)
            started = time.perf_counter()
            for n in range(config.probes):
                delay = started + n * config.probe_interval_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                results.append(await _probe(client, producer, item_ids, n, config.probe_timeout_s))
    finally:
        await producer.stop()
    return results


def run(config: FreshnessBenchConfig) -> dict[str, Any]:
    from batch.train import train_and_publish
    from recsys.bench.api import serving
    from recsys.bench.common import bench_services, percentiles, service_env
    from recsys.processes import WorkerProcess

    with bench_services(False, "recsys-bench-freshness-") as (settings, work_dir):
        model = train_and_publish(settings, DATASET, data_dir=work_dir / "data")
        worker = WorkerProcess(settings, work_dir, f"fresh-{uuid.uuid4().hex[:6]}").start()
        simulator = None
        try:
            with serving(service_env(settings), 1, work_dir) as server:
                simulator = _simulator(settings, config, work_dir)
                samples = asyncio.run(_probes(settings, server.base_url, config))
        finally:
            if simulator is not None:
                try:
                    simulator.wait(timeout=config.probe_timeout_s + 30)
                except subprocess.TimeoutExpired:
                    simulator.kill()
                    simulator.wait(timeout=10)
            worker.stop()
        simulate_log = (work_dir / "simulate.log").read_text(errors="replace")
    observed = [s for s in samples if s is not None]
    return {
        "benchmark": "freshness",
        "config": asdict(config),
        "dataset": DATASET,
        "model_version": model["version"],
        "probes": len(samples),
        "observed": len(observed),
        "seconds": percentiles(observed),
        "samples": observed,
        "simulator": _simulator_summary(simulate_log),
    }


def _simulator_summary(log: str) -> str:
    """The simulator's closing line ("sent N events in S s (R events/s), E errors")."""
    lines = [line for line in log.splitlines() if line.startswith("sent ")]
    return lines[-1] if lines else "no summary (see simulate.log): " + log[-300:]


def plot(result: dict[str, Any], path: Path) -> None:
    fig, axis = plt.subplots(figsize=(7, 4))
    axis.hist([s * 1000 for s in result["samples"]], bins=40)
    p99 = result["seconds"].get("p99", float("nan")) * 1000
    axis.axvline(p99, color="red", linestyle="--", label=f"p99 {p99:.0f} ms")
    axis.set_title(
        f"Publish -> personalized GET /recommend, {result['config']['rate']:,} events/s load"
    )
    axis.set_xlabel("ms")
    axis.set_ylabel("probes")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figures_table(result: dict[str, Any]) -> str:
    """The headline table (also used by BENCHMARKS.md)."""
    ms = {k: v * 1000 for k, v in result["seconds"].items()}
    config = result["config"]
    met = "met" if ms.get("p99", float("inf")) < 250 else "**not met**"
    return "\n".join([
        "| figure | measured | target |",
        "|---|---|---|",
        f"| publish -> personalized GET /recommend, p50 / p95 / **p99** / max, under "
        f"`recsys simulate --rate {config['rate']}` | {ms['p50']:.1f} / {ms['p95']:.1f} / "
        f"**{ms['p99']:.1f}** / {ms['max']:.1f} ms | p99 < 250 ms: {met} |",
        f"| probes answered personalized within {config['probe_timeout_s']:g} s | "
        f"{result['observed']} of {result['probes']} | all |",
        f"| background load achieved | {result['simulator']} | {config['rate']:,} events/s |",
    ])  # fmt: skip


def markdown(result: dict[str, Any], plot_name: str) -> str:
    config = result["config"]
    return "\n".join([
        "# Freshness through the API under load",
        "",
        "{header}",
        f"`recsys simulate --rate {config['rate']}` loads Kafka, one worker, Redis and the API "
        f"(separate processes, throwaway services, model trained on `{result['dataset']}`). "
        f"Every {config['probe_interval_s']} s a probe publishes one purchase for a new user and "
        f"polls GET /recommend every {POLL_S * 1000:.0f} ms until the answer is personalized.",
        "",
        figures_table(result),
        "",
        f"![freshness histogram]({plot_name})",
        "",
    ])  # fmt: skip
