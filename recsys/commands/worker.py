"""`recsys worker`: run one stream worker process (run several to share the partitions)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from rich.console import Console

from core.clients import REDIS_ERRORS, ensure_topics
from core.settings import Settings
from core.tracing import setup_tracing
from schemas.topics import EVENT_TOPICS

console = Console(stderr=True)  # errors
output = Console()  # progress and results


def worker_command(
    web_port: Annotated[
        int, typer.Option(help="Port of the worker's HTTP server (/metrics); one per worker.")
    ] = 6066,
    web_host: Annotated[
        str,
        typer.Option(
            help="Address of that server; 0.0.0.0 in a container so Prometheus can scrape."
        ),
    ] = "127.0.0.1",
    group_id: Annotated[
        str | None,
        typer.Option(
            help="Kafka consumer group: workers with the same id share partitions "
            "(default: RECSYS_STREAM_GROUP_ID)."
        ),
    ] = None,
    session_timeout: Annotated[
        float, typer.Option(help="Kafka session timeout (s): how fast a dead worker is noticed.")
    ] = 10.0,
) -> None:
    """Consume events.view/click/purchase and keep every user's state current in Redis:
    the worker consumes with Faust and hands batches to a child process that applies them
    (each gets a core). Invalid messages go to events.dlq with the reason; offsets are
    committed only after an event's effect is in Redis, and redelivered or duplicate events
    are skipped. Metrics at http://127.0.0.1:WEB_PORT/metrics. User-vector updates follow
    RECSYS_STREAM_USER_UPDATE (ema or fold-in)."""
    # Imported here so that `recsys --help` and the other commands start fast.
    from streams.app import WorkerOptions, create_app, run_worker

    settings = Settings()
    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError) as exc:
        console.print(
            f"[red]error:[/red] Kafka at {settings.kafka_bootstrap_servers} is not reachable "
            f"({exc!r}). Start it with `recsys services up` or set RECSYS_KAFKA_BOOTSTRAP_SERVERS."
        )
        raise typer.Exit(1) from None
    if created:
        console.print(f"created topics: {', '.join(created)}")
    setup_tracing(settings, "recsys-worker")
    options = WorkerOptions(
        group_id=group_id or settings.stream_group_id,
        web_port=web_port,
        web_host=web_host,
        session_timeout_s=session_timeout,
    )
    app = create_app(settings, options)

    run_worker(app, loglevel=settings.log_level.lower())


def forget_offsets_command(
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", help=f"Only this topic (repeatable): one of {', '.join(EVENT_TOPICS)}."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before deleting.")] = False,
) -> None:
    """Forget the offsets the stream workers have applied (recorded in every user's state and
    every item shard) after the event topics were deleted and created again: a recreated topic
    starts its offsets at 0, and the workers would skip every event at an offset they have already
    passed, taking it for a redelivery. Stop the workers, run this, start them again. It is
    not a way to replay old events into existing state: duplicates are recognised by event id
    only among each user's recent events, so older ones would be counted again (replay into
    an empty Redis instead)."""
    from core.clients import redis_client_for
    from streams.applied_offsets import applied_offsets, forget_applied_offsets

    unknown = sorted(set(topics or ()) - set(EVENT_TOPICS))
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)} is not an event topic; choose from {', '.join(EVENT_TOPICS)}",
            param_hint="--topic",
        )
    chosen = list(topics or EVENT_TOPICS)
    settings = Settings()

    async def forget(confirmed: bool) -> dict[str, int]:
        redis = redis_client_for(settings)
        shards = settings.redis_item_shards
        try:
            if confirmed:
                return await forget_applied_offsets(redis, chosen, shards)
            recorded = await applied_offsets(redis, shards)
            return {s: o for s, o in recorded.items() if s.rsplit(":", 1)[0] in chosen}
        finally:
            await redis.aclose()

    try:
        recorded = asyncio.run(forget(confirmed=False))
        if not recorded:
            output.print(f"no applied offsets recorded for {', '.join(chosen)}")
            return
        for slot, offset in sorted(recorded.items()):
            output.print(f"{slot}  applied up to offset {offset:,}")
        if not yes and not typer.confirm(f"Forget these {len(recorded)} records?"):
            raise typer.Exit(1)
        forgotten = asyncio.run(forget(confirmed=True))
    except REDIS_ERRORS as exc:
        console.print(
            f"[red]error:[/red] Redis at {settings.redis_url} is not reachable ({exc}). "
            "Start it with `recsys services up` or set RECSYS_REDIS_URL."
        )
        raise typer.Exit(1) from None
    output.print(f"forgot {len(forgotten)} applied-offset records")


def simulate_command(
    rate: Annotated[float, typer.Option(min=0.1, help="Events per second to publish.")] = 100.0,
    duration: Annotated[float, typer.Option(min=0.1, help="Stop after this many seconds.")] = 60.0,
    users: Annotated[
        int, typer.Option(min=1, help="Synthetic users with their own tastes.")
    ] = 1000,
    max_events: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many events (default: rate x duration)."),
    ] = None,
    replay: Annotated[
        str | None,
        typer.Option(help="Replay a dataset's rows in time order instead (e.g. ml-100k)."),
    ] = None,
    speed: Annotated[
        float, typer.Option(min=0.001, help="With --replay: how many times faster than real time.")
    ] = 100_000.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="With --replay: dataset directory (default: RECSYS_DATA_DIR)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same simulated users and events.")] = 0,
    respond: Annotated[
        bool,
        typer.Option(
            "--respond",
            help="Users who request recommendations through the API and click or buy from "
            "what they are shown (see docs/simulator.md); --rate is then requests per second.",
        ),
    ] = False,
    api_url: Annotated[
        str, typer.Option(help="With --respond: the API's base URL.")
    ] = "http://127.0.0.1:8000",
    requests: Annotated[
        int | None,
        typer.Option(
            min=1, help="With --respond: stop after this many requests (default: rate x duration)."
        ),
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="With --respond: items per request.")] = 10,
    shift_at: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --respond: replace every user's preferred genres at this fraction of the "
            "run (e.g. 0.5), for drift checks.",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, help="With --respond: requests in flight at most.")
    ] = 32,
) -> None:
    """Publish realistic events to Kafka (keyed by user): synthetic users whose views, clicks and
    purchases follow their favourite genres of the published catalog, or a dataset replayed in
    time order. Bounded by --duration and --max-events; prints the rate achieved and any errors.

    With --respond, simulated users instead ask the API (--api-url) for --k recommendations,
    click and buy from what they are shown according to hidden, drifting genre tastes and a
    position bias, and browse on their own; every event goes through POST /events (with
    RECSYS_API_KEY as X-API-Key when set). Bounded by --requests and --duration; prints what
    each experiment arm served and how often it was clicked. Exits 1 when no request was
    answered or the API refused the simulator's calls (4xx).
    """
    if respond and replay:
        raise typer.BadParameter(
            "--respond simulates users; it cannot replay", param_hint="--replay"
        )
    if respond:
        _simulate_respond(rate, duration, users, seed, api_url, requests, k, shift_at, concurrency)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from core.clients import kafka_producer, redis_client
    from recsys.simulator import (
        SimulationError,
        TasteModel,
        at_rate,
        load_catalog,
        publish_scheduled,
        replay_schedule,
    )

    settings = Settings()
    limit = max_events or max(1, int(rate * duration))

    async def run() -> Any:
        if replay:
            from batch.datasets import load_dataset

            dataset = load_dataset(replay, data_dir or settings.data_dir)
            schedule = replay_schedule(dataset.interactions, speed)
            total = min(limit, dataset.n_interactions)
        else:
            redis = redis_client(settings)
            try:
                catalog = await load_catalog(redis)
            finally:
                await redis.aclose()
            schedule = at_rate(TasteModel(catalog, users, seed).events(), rate)
            total = limit
        producer = kafka_producer(settings, linger_ms=20)
        await producer.start()
        try:
            with Progress(
                TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[errors]} errors"), console=output,
            ) as bars:  # fmt: skip
                task = bars.add_task("events", total=total, errors=0)
                return await publish_scheduled(
                    producer, schedule, total, duration,
                    on_progress=lambda s: bars.update(task, completed=s.sent, errors=s.errors),
                )  # fmt: skip
        finally:
            await producer.stop()

    try:
        stats = asyncio.run(run())
    except (SimulationError, KafkaError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    output.print(
        f"sent {stats.sent:,} events in {stats.seconds:.1f} s ({stats.rate:,.0f} events/s), "
        f"{stats.errors:,} errors" + (f"; first: {stats.first_error}" if stats.first_error else "")
    )
    if stats.errors:
        raise typer.Exit(1)


def _simulate_respond(
    rate: float,
    duration: float,
    users: int,
    seed: int,
    api_url: str,
    requests: int | None,
    k: int,
    shift_at: float | None,
    concurrency: int,
) -> None:
    """`recsys simulate --respond`: the run is `recsys.respond.run_respond`."""
    from rich.progress import TextColumn
    from rich.table import Table

    from core.clients import redis_client
    from recsys.progress import progress_bars
    from recsys.respond import (
        BehaviourConfig,
        BehaviourModel,
        RespondResult,
        RunOptions,
        api_client,
        run_respond,
    )
    from recsys.simulator import SimulationError, load_catalog

    settings = Settings()
    options = RunOptions(
        max_requests=requests or max(1, int(rate * duration)),
        max_seconds=duration,
        rate=rate,
        k=k,
        concurrency=concurrency,
    )
    api_key = settings.api_key.get_secret_value() if settings.api_key else None

    async def run() -> RespondResult:
        redis = redis_client(settings)
        try:
            catalog = await load_catalog(redis)
        finally:
            await redis.aclose()
        model = BehaviourModel(catalog, BehaviourConfig(users=users, seed=seed, shift_at=shift_at))
        with progress_bars(output, TextColumn("{task.fields[errors]} errors")) as bars:
            task = bars.add_task("requests", total=options.max_requests, errors=0)

            def report(result: RespondResult) -> None:
                bars.update(task, completed=result.finished, errors=sum(result.errors.values()))

            async with api_client(api_url, api_key, options.timeout_s) as client:
                return await run_respond(client, model, options, on_progress=report)

    failures: tuple[type[BaseException], ...] = (SimulationError, *REDIS_ERRORS)
    try:
        result = asyncio.run(run())
    except failures as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"responses to {api_url} ({result.seconds:.1f} s)")
    for column in ("variant", "answers", "items shown", "clicks", "CTR", "clicked answers",
                   "purchases", "sources"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("variant", "sources") else "right")
    for variant, tally in sorted(result.tallies.items(), key=lambda kv: str(kv[0])):
        table.add_row(
            variant or "(no experiment)", f"{tally.requests:,}", f"{tally.impressions:,}",
            f"{tally.clicks:,}", f"{tally.ctr:.2%}", f"{tally.clicked_requests:,}",
            f"{tally.purchases:,}", ", ".join(f"{s} {n}" for s, n in tally.sources.most_common()),
        )  # fmt: skip
    output.print(table)
    errors = sum(result.errors.values())
    output.print(
        f"{result.answered:,} of {result.requests:,} requests answered (stopped by "
        f"{result.stopped_by}); {result.events_sent:,} events sent "
        f"({result.browse_events:,} browsing), {result.events_failed:,} failed; {errors:,} errors"
        + (f"; first: {result.first_error}" if result.first_error else "")
    )
    if result.errors:
        output.print(", ".join(f"{what}: {n}" for what, n in result.errors.most_common()))
    if result.answered == 0 or result.rejected:
        raise typer.Exit(1)
