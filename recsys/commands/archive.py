"""`recsys archive`: the event archive (a Delta Lake table): run the archiver, inspect, compact,
apply retention."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from core.archive import ArchiveError, ArchiveLocation
from core.settings import Settings

if TYPE_CHECKING:
    from deltalake import DeltaTable

app = typer.Typer(
    help="The event archive: every valid event once, in a Delta Lake table "
    "(RECSYS_ARCHIVE_URI, default <state dir>/archive/events), for training and for queries "
    "with DuckDB, Polars or Spark.",
    no_args_is_help=True,
)
console = Console(stderr=True)  # errors
output = Console(soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _existing() -> DeltaTable:
    """The archive's table as the settings locate it, or a clear exit."""
    from deltalake.exceptions import DeltaError

    from streams.archive.maintenance import open_existing

    settings = Settings()
    try:
        return open_existing(ArchiveLocation.of(settings))
    except (DeltaError, OSError) as exc:
        raise _fail(
            f"no archive at {settings.archive_location} ({exc}); start one with "
            "`recsys archive run`, or point RECSYS_ARCHIVE_URI at it"
        ) from None


@app.command("run")
def run_command(
    metrics_port: Annotated[
        int, typer.Option(help="Port of the archiver's /metrics (Prometheus); 0: none.")
    ] = 6070,
    metrics_host: Annotated[
        str, typer.Option(help="Address of /metrics; 0.0.0.0 in a container.")
    ] = "127.0.0.1",
) -> None:
    """Consume events.view/click/purchase and append every valid event to the archive, once:
    each commit records the Kafka offsets it covers, so a crash or a redelivery adds no row
    twice and loses none. Run several to share the partitions (one consumer group)."""
    from prometheus_client import start_http_server

    from core.clients import ensure_topics
    from streams.archive.archiver import Archiver
    from streams.archive.table import ArchiveTable

    settings = Settings()
    try:
        table = ArchiveTable(ArchiveLocation.of(settings))
    except ArchiveError as exc:
        raise _fail(str(exc)) from None
    try:
        asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError) as exc:
        raise _fail(
            f"Kafka at {settings.kafka_bootstrap_servers} is not reachable ({exc!r}). Start it "
            "with `recsys services up` or set RECSYS_KAFKA_BOOTSTRAP_SERVERS."
        ) from None
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Archiver(settings, table).run(
            stop, on_ready=lambda: output.print(f"archiving into {table.location.uri}")
        )

    asyncio.run(main())


@app.command("info")
def info_command() -> None:
    """The table's size, the days it holds and the last offset archived per partition."""
    from streams.archive.maintenance import summary

    settings = Settings()
    found = summary(_existing())
    output.print(
        f"{settings.archive_location}: version {found.version}, {found.rows:,} rows in "
        f"{found.files:,} files, {found.bytes / 1e6:,.1f} MB ({found.bytes_per_row:.1f} bytes "
        f"per row), event days {found.first_day} to {found.last_day}"
    )
    table = Table("topic:partition", "last offset archived")
    for slot, offset in found.offsets.items():
        table.add_row(slot, f"{offset:,}")
    output.print(table)


@app.command("compact")
def compact_command(
    target_mb: Annotated[int, typer.Option(min=1, help="Size of the files written.")] = 128,
) -> None:
    """Rewrite the many small files of the archivers' commits into few large ones (safe while
    archivers run: compaction commits do not conflict with appends)."""
    from streams.archive.maintenance import compact

    done = compact(_existing(), target_mb)
    output.print(f"{done['files_removed']:,} files rewritten into {done['files_added']:,}")


@app.command("vacuum")
def vacuum_command(
    keep_days: Annotated[
        int | None,
        typer.Option(
            min=1, help="First delete the events older than this many days (UTC event date)."
        ),
    ] = None,
    retention_hours: Annotated[
        int,
        typer.Option(
            min=0,
            help="Remove the files that no version of the last this many hours reads (time "
            "travel and running readers keep what they need within it).",
        ),
    ] = 168,
) -> None:
    """Apply retention: delete the events older than --keep-days, if given, then remove the
    files that the table no longer reads (deleted, or rewritten by `compact`)."""
    from streams.archive.maintenance import apply_retention, vacuum

    table = _existing()
    deleted = apply_retention(table, keep_days) if keep_days is not None else 0
    removed = vacuum(table, retention_hours)
    output.print(f"{deleted:,} rows deleted; {len(removed):,} files removed")


@app.command("query")
def query_command(
    sql: Annotated[
        str,
        typer.Argument(
            help='DuckDB SQL over the table, named `events`; for example "select event_type, '
            'count(*) from events group by 1"'
        ),
    ],
    limit: Annotated[int, typer.Option(min=1, help="Rows shown at most.")] = 50,
) -> None:
    """Query the archive with DuckDB (through the table's Arrow dataset, so only the files the
    query needs are read)."""
    import duckdb

    connection = duckdb.connect()
    connection.register("events", _existing().to_pyarrow_dataset())
    try:
        result = connection.sql(sql)
        rows = result.limit(limit).fetchall() if result is not None else []
    except duckdb.Error as exc:
        raise _fail(f"the query failed: {exc}") from None
    if result is None:
        return
    shown = Table(*result.columns)
    for row in rows:
        shown.add_row(*(str(value) for value in row))
    output.print(shown)
