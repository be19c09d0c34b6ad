"""`recsys bench ...`: benchmarks that print their figures and save JSON + Markdown."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from core.settings import Settings

app = typer.Typer(
    help="Benchmarks. Each prints its figures and saves them as JSON and a Markdown report.",
    no_args_is_help=True,
)
console = Console()
JsonPath = Annotated[Path, typer.Option("--json", help="Where to save the figures.")]
ReportPath = Annotated[Path, typer.Option(help="Where to save the Markdown report.")]
RedisClusterOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Run on a throwaway Redis Cluster of this many masters instead of one Redis "
        "(1 and 2 masters are formed by hand, for per-shard figures).",
    ),
]


@app.command("stream")
def stream(
    json_path: JsonPath = Path("reports/bench-stream.json"),
    report: ReportPath = Path("reports/bench-stream.md"),
    events: Annotated[
        int, typer.Option(min=1000, help="Backlog for the throughput run.")
    ] = 200_000,
    users: Annotated[int, typer.Option(min=10, help="Distinct users in the backlog.")] = 20_000,
    rate: Annotated[int, typer.Option(min=1, help="Offered rate of the freshness run.")] = 1_000,
    seconds: Annotated[float, typer.Option(min=1, help="Length of the freshness run.")] = 30.0,
    transitions: Annotated[
        int,
        typer.Option(
            min=0,
            help="The worker's item-to-item transition table: next items kept (0: off; the "
            "default is the product's, RECSYS_STREAM_TRANSITIONS_TOP_N's).",
        ),
    ] = Settings.model_fields["stream_transitions_top_n"].default,
    use_running: Annotated[
        bool, typer.Option(help="Use the configured Kafka and Redis instead of throwaway ones.")
    ] = False,
    redis_cluster: RedisClusterOption = None,
) -> None:
    """Throughput, freshness and Redis memory per user of one stream worker process."""
    from recsys.bench.common import save_with_plot
    from recsys.bench.stream import StreamBenchConfig, run_with_local_services
    from recsys.bench.stream_report import markdown, plot

    config = StreamBenchConfig(
        events=events,
        users=users,
        freshness_rate=rate,
        freshness_seconds=seconds,
        transitions_top_n=transitions,
    )
    with console.status("Running the stream benchmark (services, backlog, drain, freshness)…"):
        result = run_with_local_services(config, use_running, redis_cluster)
    samples = result["freshness"].pop("samples")
    plot_path = save_with_plot(
        result, partial(plot, result, samples), partial(markdown, result), json_path, report
    )
    summary = {
        "events_per_s": round(result["throughput"]["events_per_s"]),
        "freshness_ms": {k: round(v * 1000, 1) for k, v in result["freshness"]["seconds"].items()},
        "bytes_per_user": round(result["memory"]["bytes_per_user"]["total_mean"]),
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("archive")
def archive(
    json_path: JsonPath = Path("reports/bench-archive.json"),
    report: ReportPath = Path("reports/bench-archive.md"),
    events: Annotated[
        int, typer.Option(min=1000, help="Backlog for the throughput run.")
    ] = 200_000,
    rate: Annotated[int, typer.Option(min=1, help="Offered rate of the latency run.")] = 1_000,
    seconds: Annotated[float, typer.Option(min=1, help="Length of the latency run.")] = 30.0,
    use_running: Annotated[
        bool, typer.Option(help="Use the configured Kafka instead of a throwaway one.")
    ] = False,
) -> None:
    """Events/s from Kafka into the archive's Delta table, publish -> visible latency, and
    bytes per event on disk, with one `recsys archive run` process."""
    from recsys.bench.archive import ArchiveBenchConfig, run_with_local_services
    from recsys.bench.archive_report import markdown, plot
    from recsys.bench.common import save_with_plot

    config = ArchiveBenchConfig(events=events, latency_rate=rate, latency_seconds=seconds)
    with console.status("Running the archive benchmark (Kafka, backlog, drain, latency)…"):
        result = run_with_local_services(config, use_running)
    samples = result["latency"].pop("samples")
    plot_path = save_with_plot(
        result, partial(plot, result, samples), partial(markdown, result), json_path, report
    )
    summary = {
        "events_per_s": round(result["throughput"]["events_per_s"]),
        "latency_s": {k: round(v, 2) for k, v in result["latency"]["latency_s"].items()},
        "bytes_per_event": round(result["disk"]["bytes_per_event"], 1),
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("loop")
def loop(
    json_path: JsonPath = Path("reports/bench-loop.json"),
    report: ReportPath = Path("reports/bench-loop.md"),
    dataset: Annotated[
        str, typer.Option(help="A MovieLens dataset: ml-100k, ml-latest-small, ml-1m.")
    ] = "ml-100k",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the dataset is read from (default: RECSYS_DATA_DIR)."),
    ] = None,
) -> None:
    """The closed loop end to end: the dataset replayed through Kafka, archived by `recsys
    archive run`, read back (the same rows?), the served ALS scored under P1 on the archive and
    on the file (the same NDCG@10?), and `recsys retrain` once on the archive."""
    from core.settings import Settings
    from recsys.bench.common import save_with_plot
    from recsys.bench.loop import LoopBenchConfig, run_with_local_services
    from recsys.bench.loop_report import markdown, plot

    config = LoopBenchConfig(dataset=dataset)
    with console.status("Running the loop benchmark (replay, archive, P1 twice, retrain)…"):
        result = run_with_local_services(config, data_dir or Settings().data_dir)
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    summary = {
        "rows": result["rows"],
        "ndcg@10": {name: round(f["ndcg@10"], 4) for name, f in result["p1"].items()},
        "retrain": result["retrain"]["decision"],
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("api")
def api(
    json_path: JsonPath = Path("reports/bench-api.json"),
    report: ReportPath = Path("reports/bench-api.md"),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where ml-100k is read from (default: RECSYS_DATA_DIR)."),
    ] = None,
    rate: Annotated[int, typer.Option(min=1, help="Requests/s of the fixed-rate runs.")] = 200,
    seconds: Annotated[float, typer.Option(min=1, help="Length of each fixed-rate run.")] = 30.0,
    saturation_seconds: Annotated[
        float, typer.Option(min=1, help="Length of each wrk saturation run.")
    ] = 30.0,
    connections: Annotated[
        int, typer.Option(min=1, help="wrk connections (keep-alive, closed loop).")
    ] = 8,
    wrk_threads: Annotated[int, typer.Option(min=1, help="wrk threads.")] = 1,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 2,
    impression_rounds: Annotated[
        int,
        typer.Option(
            min=0,
            help="Alternating fixed-rate rounds with impressions recorded and with none, on two "
            "servers (0: skip the comparison).",
        ),
    ] = 6,
    impression_seconds: Annotated[
        float, typer.Option(min=1, help="Length of each impressions round.")
    ] = 15.0,
    ranker: Annotated[
        bool,
        typer.Option(
            "--ranker",
            help="Publish the model with its learned ranker (as `recsys train --ranker`), then "
            "run the /recommend measurements again on a server with RECSYS_API_RANKER=off, side "
            "by side; skips the impressions comparison.",
        ),
    ] = False,
    use_running: Annotated[
        bool,
        typer.Option(
            help="Use the configured Redis and Kafka instead of throwaway ones (a new ml-100k "
            "model version is published and made active there)."
        ),
    ] = False,
    redis_cluster: RedisClusterOption = None,
) -> None:
    """Latency of GET /recommend at a fixed rate (open loop) and requests/s at saturation (wrk),
    with GET /health/live as the floor; needs `wrk` on PATH. With --ranker, the two-stage path
    (candidates scored by the learned ranker) against the same path with the ranker off."""
    from recsys.bench.api import ApiBenchConfig, BenchError, require_wrk, run_with_local_services
    from recsys.bench.api_report import markdown, plot
    from recsys.bench.common import save_with_plot

    try:
        require_wrk()
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    config = ApiBenchConfig(
        rate=rate,
        seconds=seconds,
        saturation_seconds=saturation_seconds,
        connections=connections,
        wrk_threads=wrk_threads,
        workers=workers,
        impression_rounds=impression_rounds,
        impression_seconds=impression_seconds,
        ranker=ranker,
    )
    # No spinner: training prints its own progress and rich allows one live display at a time.
    console.print("Running the API benchmark (services, ml-100k model, fixed rate, wrk)…")
    try:
        result = run_with_local_services(config, data_dir, use_running, redis_cluster)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    samples: dict[str, list[float]] = {
        name: result[name]["fixed_rate"].pop("samples_ms")
        for name in ("recommend", "live", "ranker_off")
        if name in result
    }
    plot_path = save_with_plot(
        result, partial(plot, result, samples), partial(markdown, result), json_path, report
    )
    rec = result["recommend"]
    summary = {
        "recommend_ms_at_rate": {
            k: round(v, 2) for k, v in rec["fixed_rate"]["latency_ms"].items()
        },
        "recommend_rps_saturation": round(rec["saturation"]["requests_per_s"]),
        "live_rps_saturation": round(result["live"]["saturation"]["requests_per_s"]),
        "sources": rec["fixed_rate"]["sources"],
    }
    if off := result.get("ranker_off"):
        summary["ranker_off"] = {
            "recommend_ms_at_rate": {
                k: round(v, 2) for k, v in off["fixed_rate"]["latency_ms"].items()
            },
            "recommend_rps_saturation": round(off["saturation"]["requests_per_s"]),
            "sources": off["fixed_rate"]["sources"],
        }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("cluster")
def cluster(
    json_path: JsonPath = Path("reports/bench-cluster.json"),
    report: ReportPath = Path("reports/bench-cluster.md"),
    shards: Annotated[
        list[int] | None,
        typer.Option(
            "--shards",
            min=1,
            help="Masters of each cluster to run on, one run each (repeat the option; "
            "default 1, 2 and 3).",
        ),
    ] = None,
    events: Annotated[
        int, typer.Option(min=1000, help="Backlog each stream run drains.")
    ] = 200_000,
    users: Annotated[int, typer.Option(min=1, help="Users of the stream runs' events.")] = 20_000,
    api: Annotated[
        bool, typer.Option(help="Also run the API benchmark on one Redis and the largest cluster.")
    ] = True,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where ml-100k is read from, for the API runs (default: RECSYS_DATA_DIR)."
        ),
    ] = None,
) -> None:
    """The stream benchmark (and the API's) on one Redis and on throwaway Redis Clusters of 1, 2
    and 3 masters, one after another, side by side: throughput, Redis CPU per event on each
    shard, freshness, memory, latency. Needs `wrk` for the API runs."""
    from dataclasses import replace

    from recsys.bench.api import BenchError, require_wrk
    from recsys.bench.cluster import ClusterBenchConfig, run
    from recsys.bench.cluster_report import markdown, plot
    from recsys.bench.common import save_with_plot

    config = ClusterBenchConfig(shards=tuple(sorted(set(shards or (1, 2, 3)))))
    config = replace(config, stream=replace(config.stream, events=events, users=users))
    if not api:
        config = replace(config, api=None)
    else:
        try:
            require_wrk()
        except BenchError as exc:
            console.print(f"[red]{exc}[/red] (or run with --no-api)")
            raise typer.Exit(1) from None
    runs = len(config.shards) + 1 + (2 if api else 0)
    done = 0

    def progress(what: str) -> None:
        nonlocal done
        done += 1
        console.print(f"[{done}/{runs}] {what}…")

    try:
        result = run(config, data_dir, progress)
    except BenchError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    summary = {
        run["topology"]: {
            "events_per_s": round(run["events_per_s"]),
            "redis_cpu_us_per_event": round(run["cpu_us_per_event"]["redis"], 1),
        }
        for run in result["stream"]
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("freshness")
def freshness(
    json_path: JsonPath = Path("reports/bench-freshness.json"),
    report: ReportPath = Path("reports/bench-freshness.md"),
    rate: Annotated[
        int, typer.Option(min=1, help="Background load: `recsys simulate --rate`.")
    ] = 1_000,
    probes: Annotated[int, typer.Option(min=1, help="New users probed, 0.1 s apart.")] = 300,
) -> None:
    """Publish -> change visible through GET /recommend, while `recsys simulate` loads the
    stack (throwaway Kafka and Redis; worker, API and simulator as separate processes)."""
    from recsys.bench.common import save_with_plot
    from recsys.bench.freshness import FreshnessBenchConfig, markdown, plot, run

    console.print("Running the freshness benchmark (services, model, worker, API, simulator)…")
    result = run(FreshnessBenchConfig(rate=rate, probes=probes))

    def draw(path: Path) -> None:
        plot(result, path)
        result.pop("samples")  # plotted, too many to keep in the JSON

    plot_path = save_with_plot(result, draw, partial(markdown, result), json_path, report)
    ms = {k: round(v * 1000, 1) for k, v in result["seconds"].items()}
    console.print_json(json.dumps({"freshness_ms": ms, "observed": result["observed"]}))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("experiment")
def experiment(
    json_path: JsonPath = Path("reports/bench-experiment.json"),
    report: ReportPath = Path("reports/bench-experiment.md"),
    requests: Annotated[
        int, typer.Option(min=100, help="Answers the simulated users request, at most.")
    ] = 6000,
    rate: Annotated[float, typer.Option(min=1, help="Requests per second of the run.")] = 40.0,
    max_seconds: Annotated[
        float, typer.Option(min=10, help="Stop the simulated run after this many seconds.")
    ] = 600.0,
    users: Annotated[int, typer.Option(min=10, help="Simulated users.")] = 1500,
    latency_rounds: Annotated[
        int, typer.Option(min=1, help="Rounds with and without an experiment for the p50.")
    ] = 10,
    use_running: Annotated[
        bool, typer.Option(help="Use the configured Kafka and Redis instead of throwaway ones.")
    ] = False,
) -> None:
    """A bounded simulated A/B run through Kafka, the worker, Redis and the API: three arms
    (the model, the model with more diversity, random items) served to simulated users who click
    by a hidden taste; per-arm CTR with intervals, p-values against the control, the impressions
    it took to separate them; and the /recommend p50 an experiment adds."""
    from recsys.bench.common import save_with_plot
    from recsys.bench.experiment import ExperimentBenchConfig, run_with_local_services
    from recsys.bench.experiment_report import markdown, plot

    config = ExperimentBenchConfig(
        requests=requests, rate=rate, max_seconds=max_seconds, users=users,
        latency_rounds=latency_rounds,
    )  # fmt: skip
    with console.status("Running the experiment benchmark (train, simulate, report, latency)…"):
        result = run_with_local_services(config, use_running)
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    summary = {
        arm["name"]: {
            "impressions": arm["counts"]["impressions"],
            "ctr": arm["rates"]["ctr"]["value"],
            "p_value": (arm["rates"]["ctr"]["vs_control"] or {}).get("p_value"),
        }
        for arm in result["report"]["arms"]
    } | {"p50_added_ms": result["latency"]["p50_added_ms"]}
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("drift")
def drift(
    json_path: JsonPath = Path("reports/bench-drift.json"),
    report: ReportPath = Path("reports/bench-drift.md"),
    seconds: Annotated[float, typer.Option(min=30, help="Length of the simulated run.")] = 420.0,
    shift_at: Annotated[
        float, typer.Option(min=0.05, max=0.95, help="When the tastes shift, as a share of it.")
    ] = 0.6,
    window: Annotated[
        float,
        typer.Option(min=10, help="The live drift window in seconds (RECSYS_DRIFT_WINDOW_S)."),
    ] = 60.0,
    settle: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds before the score distributions' live reference window starts "
            "(RECSYS_DRIFT_SETTLE_S); keep settle + window before the shift.",
        ),
    ] = 60.0,
    use_running: Annotated[
        bool, typer.Option(help="Use the configured Kafka and Redis instead of throwaway ones.")
    ] = False,
) -> None:
    """The time drift monitoring takes to see a change: simulated users whose tastes all shift
    partway through a bounded run, GET /monitoring/drift sampled throughout; the PSI of each
    distribution over time (plot), its level before the shift and the time to the threshold."""
    from recsys.bench.common import save_with_plot
    from recsys.bench.drift import DriftBenchConfig, run_with_local_services
    from recsys.bench.drift_report import markdown, plot

    if settle + window >= seconds * shift_at:
        raise typer.BadParameter(
            f"the reference window ends at {settle + window:.0f} s, after the shift at "
            f"{seconds * shift_at:.0f} s: lengthen --seconds or shorten --settle/--window"
        )
    config = DriftBenchConfig(seconds=seconds, shift_at=shift_at, window_s=window, settle_s=settle)
    with console.status("Running the drift benchmark (train, simulate with a shift, sample)…"):
        result = run_with_local_services(config, use_running)
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    console.print_json(json.dumps(result["detection"]))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("all")
def all_benchmarks(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where ml-100k is read from (default: RECSYS_DATA_DIR)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where every JSON, report and plot goes.")] = Path(
        "docs/benchmarks"
    ),
    benchmarks_md: Annotated[
        Path, typer.Option(help="The Markdown file whose generated sections are rewritten.")
    ] = Path("BENCHMARKS.md"),
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run (or render) only these sections (repeat): evaluate, evaluate-synthetic, "
            "train, stream, freshness, api, cluster, replay, archive, loop."
        ),
    ] = None,
    render_only: Annotated[
        bool, typer.Option(help="Re-render BENCHMARKS.md from the saved JSON; run nothing.")
    ] = False,
) -> None:
    """Run the batch, stream, freshness, API and replay benchmarks one after the other (about
    25 minutes on 2 cores; each starts throwaway services of its own), then rewrite the
    generated sections of BENCHMARKS.md: the exact commands, the machine, tables and plots."""
    from core.settings import Settings
    from recsys.bench.run_all import SECTIONS, BenchAllError, plan, render, run_step

    sections = list(only or SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise typer.BadParameter(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    steps = plan(data_dir or Settings().data_dir, out)
    try:
        if not render_only:
            for step in (s for s in steps if s.section in sections):
                run_step(step, console.print)
        render(benchmarks_md, steps, out, sections)
    except BenchAllError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"rewrote {', '.join(sections)} in {benchmarks_md}")


@app.command("soak")
def soak(
    json_path: JsonPath = Path("reports/bench-soak.json"),
    report: ReportPath = Path("reports/bench-soak.md"),
    minutes: Annotated[float, typer.Option(min=1, help="Length of the load.")] = 60.0,
    warmup: Annotated[
        float,
        typer.Option(
            min=0,
            help="Minutes left out of the growth and trend criteria (at most a quarter of the "
            "run).",
        ),
    ] = 10.0,
    request_rate: Annotated[
        int, typer.Option(min=1, help="GET /recommend per second (fixed-rate open loop).")
    ] = 300,
    event_rate: Annotated[
        int, typer.Option(min=1, help="Events per second from `recsys simulate`.")
    ] = 1_000,
    interval: Annotated[float, typer.Option(min=1, help="Seconds between samples.")] = 5.0,
    faults: Annotated[
        bool,
        typer.Option(
            "--faults",
            help="Inject faults during the load, evenly over the measured period: kill -9 of "
            "an API worker; kill -9 of the stream worker and a new one; the Kafka broker "
            "stopped for 10 s; Redis (append-only file on) restarted; the archive's directory "
            "read-only for 30 s (needs root, to mount). Each is a row of the report's fault "
            "section; the archive is then also checked for every event exactly once.",
        ),
    ] = False,
) -> None:
    """The whole local stack (Kafka, Redis, worker, API, archiver, simulator) under steady mixed
    load for a bounded time: RSS and open files of every process, Redis memory, consumer lag,
    p50/p99 latency and freshness sampled over time; pass criteria: memory growth < 5 %/h, no
    5xx, every event applied exactly once, p99 latency and freshness not trending up."""
    from recsys.bench.common import save_with_plot
    from recsys.bench.soak import SoakConfig, run_with_local_services
    from recsys.bench.soak_report import markdown, plot
    from recsys.progress import progress_bars

    config = SoakConfig(
        minutes=minutes, warmup_minutes=warmup, request_rate=request_rate,
        event_rate=event_rate, interval_s=interval, faults=faults,
    )  # fmt: skip
    console.print(
        f"Soak: {minutes:g} min of load after the set-up (services, model, processes), then the "
        "drain and the exactly-once check…"
    )
    with progress_bars(console) as bars:
        task = bars.add_task("load (seconds)", total=round(config.seconds))
        result = run_with_local_services(
            config, lambda t: bars.update(task, completed=min(round(t), round(config.seconds)))
        )
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    verdict = result["verdict"]
    summary = {
        "passed": verdict["passed"],
        "criteria": {row["criterion"][:40]: row["passed"] for row in verdict["criteria"]},
        "requests_per_s": round(result["rates"]["requests_per_s"]),
        "events_per_s": round(result["rates"]["events_per_s"]),
        "exactly_once": {k: verdict["exactly_once"][k] for k in ("published", "lost", "doubled")},
        "faults": [
            {"fault": f["fault"], "recovery_s": f.get("recovery_s"), "requests": f.get("requests")}
            for f in result["faults"]
            if f.get("run")
        ],
    }
    console.print_json(json.dumps(summary))
    console.print(f"saved {json_path}, {report} and {plot_path}")


@app.command("fuzz")
def fuzz(
    json_path: JsonPath = Path("reports/bench-fuzz.json"),
    report: ReportPath = Path("reports/bench-fuzz.md"),
    max_examples: Annotated[
        int,
        typer.Option(
            min=1, help="schemathesis's examples per operation and phase (CI's test runs 20)."
        ),
    ] = 200,
    seed: Annotated[int, typer.Option(help="schemathesis's seed, for a run that repeats.")] = 0,
    timeout: Annotated[
        float, typer.Option(min=60, help="Seconds schemathesis may run before it is stopped.")
    ] = 3600.0,
) -> None:
    """The OpenAPI contract with a larger budget than CI's: schemathesis (every check; the
    examples, coverage, fuzzing and stateful phases) against `recsys serve` over throwaway Kafka
    and Redis with a published model; every request it sent counted per operation and status.
    Fails (exit 1) on any schemathesis failure, any 5xx or any request left without an answer.
    Needs the development extras (`pip install -e '.[dev]'`)."""
    from rich.text import Text

    from recsys.bench.api import BenchError
    from recsys.bench.common import save_with_plot
    from recsys.bench.fuzz import FuzzConfig, run_with_local_services
    from recsys.bench.fuzz_report import markdown, plot, verdict

    config = FuzzConfig(max_examples=max_examples, seed=seed, timeout_s=timeout)
    with console.status("Running schemathesis against the served API…") as status:
        try:
            # Text: schemathesis's output is not rich markup.
            result = run_with_local_services(
                config, lambda line: status.update(Text(f"schemathesis: {line[:100]}"))
            )
        except BenchError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    plot_path = save_with_plot(
        result, partial(plot, result), partial(markdown, result), json_path, report
    )
    found = verdict(result)
    console.print_json(json.dumps(found))
    console.print(f"saved {json_path}, {report} and {plot_path}")
    if not found["passed"]:
        raise typer.Exit(1)
