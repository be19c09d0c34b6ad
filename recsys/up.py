"""`recsys up`: the whole system locally, on embedded defaults, stopped cleanly with Ctrl-C.

Starts (or reuses) the local Kafka and Redis, publishes a model if none is active yet (or when
asked to retrain), then runs a stream worker, the archiver, the API and optionally the
retraining loop as child processes. On Ctrl-C (or
SIGTERM) it stops its children and the services it started itself, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from core.clients import redis_client
from core.model_version import active_version
from core.settings import Settings
from infra.local.process import free_port, port_is_open
from infra.local.services import LocalServices
from recsys.processes import ChildProcess
from recsys.progress import stage_bars, train_stage_labels

console = Console()


class Child(ChildProcess):
    """One of the processes `recsys up` runs, named in its messages."""

    def __init__(self, name: str, argv: list[str], log_file: Path) -> None:
        super().__init__(argv, log_file)
        self.name = name


@dataclass
class UpOptions:
    dataset: str = "synthetic"
    model: str = "als"
    retrain: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    worker_web_port: int = 6066
    simulate_rate: float | None = None
    archiver_metrics_port: int = 6070
    retrain_every: str | None = None  # e.g. "1h": also run the retraining loop
    retrainer_metrics_port: int = 6071
    extra_env: dict[str, str] = field(default_factory=dict)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _has_active_model(settings: Settings) -> bool:
    async def check() -> bool:
        redis = redis_client(settings)
        try:
            return await active_version(redis) is not None
        finally:
            await redis.aclose()

    return asyncio.run(check())


def _port_or_free(port: int) -> int:
    """`port`, or a free one when it is taken (another archiver's /metrics, say)."""
    return free_port() if port_is_open(port, "127.0.0.1") else port


def _wait_http(url: str, child: Child, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.alive:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def _print_tuning(tuning: dict[str, Any] | None) -> None:
    if tuning is None:
        return
    verdict = "above" if tuning["beats_most_popular"] else "[yellow]not above[/yellow]"
    console.print(
        f"chose {tuning['params']} on the data's {tuning['protocol']}: NDCG@10 "
        f"{tuning['validation_ndcg_at_10']:.4f}, {verdict} most-popular's "
        f"{tuning['most_popular_validation_ndcg_at_10']:.4f}",
        soft_wrap=True,  # one line in a log too, whatever the width
    )


def run_up(settings: Settings, options: UpOptions) -> int:
    """Run until interrupted; returns the process exit code."""
    from batch.tracking import local_store
    from batch.train import TrainError, train_and_publish
    from infra.local.process import ServiceError

    # Training runs are recorded in MLflow: the configured store, or one under the state dir.
    if settings.mlflow_tracking_uri is None:
        settings = settings.model_copy(update={"mlflow_tracking_uri": local_store(settings)})

    # Ctrl-C and `kill` both stop it cleanly. SIGINT is set explicitly: a process started in the
    # background by a shell inherits SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if port_is_open(options.port, options.host):
        console.print(f"[red]error:[/red] port {options.port} is taken; choose another with --port")
        return 1
    services = LocalServices.from_settings(settings)
    children: list[Child] = []
    started: dict[str, bool] = {}
    logs = settings.state_dir / "logs"
    try:
        with console.status("Starting Redis and Kafka (the first run downloads Kafka's jars)…"):
            started = services.up()
        env = {**os.environ, **services.exports(), **options.extra_env}
        env.setdefault("RECSYS_MLFLOW_TRACKING_URI", str(settings.mlflow_tracking_uri))
        if options.retrain or not _has_active_model(settings):
            labels = train_stage_labels(options.dataset, options.model)
            with stage_bars(console, labels) as report:
                summary = train_and_publish(
                    settings, options.dataset, options.model, progress=report, tuned=True
                )
            _print_tuning(summary["tuning"])
        python = [sys.executable, "-m", "recsys"]
        children.append(
            Child(
                "worker",
                [*python, "worker", "--web-port", str(options.worker_web_port)],
                logs / "worker.log",
            )
        )
        children.append(
            Child(
                "api",
                [*python, "serve", "--host", options.host, "--port", str(options.port)],
                logs / "api.log",
            )
        )
        # The archiver always runs (it is cheap): the retraining loop reads what it writes.
        archiver_port = _port_or_free(options.archiver_metrics_port)
        archive = [*python, "archive", "run", "--metrics-port", str(archiver_port)]
        children.append(Child("archiver", archive, logs / "archiver.log"))
        retrainer_port = _port_or_free(options.retrainer_metrics_port)
        if options.retrain_every:
            retrain = [*python, "retrain", "--every", options.retrain_every,
                       "--metrics-port", str(retrainer_port)]  # fmt: skip
            children.append(Child("retrainer", retrain, logs / "retrainer.log"))
        if options.simulate_rate:
            # Bounded like every load loop: a day of events at most, stopped with the rest.
            simulate = [*python, "simulate", "--rate", str(options.simulate_rate),
                        "--duration", "86400"]  # fmt: skip
            children.append(Child("simulator", simulate, logs / "simulator.log"))
        for child in children:
            child.env = env
            child.start()
        base = f"http://{options.host}:{options.port}"
        with console.status("Waiting for the API…"):
            ready = _wait_http(f"{base}/health/ready", children[1], timeout_s=90)
        if not ready:
            console.print(f"[red]error:[/red] the API did not come up; see {logs / 'api.log'}")
            return 1
        # Up means an event posted now is applied: the worker has joined its consumer group.
        worker_ready = f"http://127.0.0.1:{options.worker_web_port}/ready"
        with console.status("Waiting for the worker to join its consumer group…"):
            ready = _wait_http(worker_ready, children[0], timeout_s=90)
        if not ready:
            console.print(
                f"[red]error:[/red] the worker did not start consuming; see {logs / 'worker.log'}"
            )
            return 1
        console.print(f"[green]recsys is up.[/green] Logs in {logs}")
        console.print(f"  API docs:  {base}/docs")
        worker_metrics = f"http://127.0.0.1:{options.worker_web_port}/metrics"
        console.print(f"  metrics:   {base}/metrics and {worker_metrics}")
        console.print(f"  archiver:  http://127.0.0.1:{archiver_port}/metrics")
        if options.retrain_every:
            console.print(
                f"  retrainer: every {options.retrain_every}, "
                f"http://127.0.0.1:{retrainer_port}/metrics "
                "(decisions: `recsys models decisions`)"
            )
        console.print(f"  try:       curl '{base}/recommend/u1?k=5&explain=true'")
        console.print("Press Ctrl-C to stop.")
        while all(child.alive for child in children):
            time.sleep(0.5)
        dead = [c.name for c in children if not c.alive]
        console.print(f"[red]{', '.join(dead)} stopped unexpectedly; see {logs}[/red]")
        return 1
    except KeyboardInterrupt:
        return 0
    except (ServiceError, TrainError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with console.status("Stopping…"):
            for child in reversed(children):
                child.stop()
            if started.get("kafka"):
                services.kafka.stop()
            if started.get("redis"):
                services.redis.stop()
        console.print("Stopped.")
