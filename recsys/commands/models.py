"""`recsys models`: list the published model versions and switch between them (rollback)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from core.clients import REDIS_ERRORS, redis_client_for
from core.model_version import UnknownVersionError, active_version, listed_versions, switch_to
from core.settings import Settings

app = typer.Typer(
    help="The published model versions: list them, and activate a kept one (a rollback).",
    no_args_is_help=True,
)
T = TypeVar("T")
console = Console(stderr=True)  # errors
output = Console()


@app.command("list")
def list_command() -> None:
    """The kept versions, newest first, and which one is active."""

    async def run() -> tuple[list[tuple[str, float]], str | None]:
        redis = redis_client_for(Settings())
        try:
            return await listed_versions(redis), await active_version(redis)
        finally:
            await redis.aclose()

    versions, active = _run(run())
    if not versions:
        output.print("no version is published: run `recsys train`")
        return
    table = Table("version", "published (UTC)", "active")
    for version, at in reversed(versions):
        published = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
        table.add_row(version, published, "yes" if version == active else "")
    output.print(table)


@app.command("activate")
def activate_command(
    version: Annotated[str, typer.Argument(help="A kept version id (see `recsys models list`).")],
) -> None:
    """Make a kept version the active one, for the workers and the API at once (a rollback, or
    back to the newest). Workers rebuild each user's online vector in the version's space at the
    user's next event; the API uses the version's batch vectors until then."""

    async def run() -> None:
        redis = redis_client_for(Settings())
        try:
            await switch_to(redis, version)
        finally:
            await redis.aclose()

    try:
        _run(run())
    except UnknownVersionError:
        console.print(
            f"[red]error:[/red] version {version!r} is not published or no longer kept; "
            "`recsys models list` shows the versions you can activate (a pruned one must be "
            "trained again)."
        )
        raise typer.Exit(1) from None
    output.print(f"active version: [bold]{version}[/bold]")


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except REDIS_ERRORS as exc:
        console.print(
            f"[red]error:[/red] Redis failed ({exc}). Check RECSYS_REDIS_URL and that the "
            "services run (`recsys services status`)."
        )
        raise typer.Exit(1) from None
