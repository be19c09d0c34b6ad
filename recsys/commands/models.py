"""`recsys models`: list and show the published model versions, switch between them (activate,
rollback), and read the retraining gate's decisions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from core.clients import REDIS_ERRORS, redis_client_for
from core.model_version import (
    NoPreviousVersionError,
    UnknownVersionError,
    active_version,
    decision_for,
    listed_versions,
    model_meta,
    recorded_decisions,
    rollback,
    switch_to,
)
from core.settings import Settings

app = typer.Typer(
    help="The published model versions: list and show them, activate a kept one, roll back to "
    "the previous one; the retraining gate's decisions.",
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

    versions, active = run_redis(run())
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
        run_redis(run())
    except UnknownVersionError:
        console.print(
            f"[red]error:[/red] version {version!r} is not published or no longer kept; "
            "`recsys models list` shows the versions you can activate (a pruned one must be "
            "trained again)."
        )
        raise typer.Exit(1) from None
    output.print(f"active version: [bold]{version}[/bold]")


@app.command("show")
def show_command(
    version: Annotated[
        str | None, typer.Argument(help="A version id (default: the active version).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A version's metadata (model, data, training cut-off, publication, sizes, parameters) and
    the retraining gate's decision about it, if it was a candidate."""

    async def run() -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
        redis = redis_client_for(Settings())
        try:
            active = await active_version(redis)
            name = version or active
            if name is None:
                return None, None, None
            meta = await model_meta(redis, name)
            kept = name in dict(await listed_versions(redis))
            shown = None if meta is None else {
                "version": name,
                "active": name == active,
                "kept": kept,
                "model": meta.model,
                "dataset": meta.dataset,
                "trained_until": _utc(meta.trained_until),
                "published_at": _utc(meta.published_at),
                "dim": meta.dim,
                "users": meta.n_users,
                "items": meta.n_items,
                "params": meta.params,
            }  # fmt: skip
            return name, shown, await decision_for(redis, name)
        finally:
            await redis.aclose()

    name, shown, decision = run_redis(run())
    if name is None:
        console.print("[red]error:[/red] no version is active: run `recsys train`")
        raise typer.Exit(1)
    if shown is None and decision is None:
        console.print(
            f"[red]error:[/red] version {name!r} is unknown (never published, or removed); "
            "`recsys models list` shows the kept versions"
        )
        raise typer.Exit(1)
    if as_json:
        output.print_json(json.dumps({"version": name, "meta": shown, "decision": decision}))
        return
    if shown is None:
        output.print(f"{name}: not published (or no longer kept)")
    else:
        for field, value in shown.items():
            output.print(f"{field}: {value}", markup=False, highlight=False)
    if decision is not None:
        output.print("gate decision:", markup=False)
        for field, value in decision.items():
            output.print(f"  {field}: {value}", markup=False, highlight=False)


@app.command("rollback")
def rollback_command() -> None:
    """Switch atomically to the kept version published just before the active one (as
    `activate` does). Stop a running `recsys retrain --every` first if its next candidate
    should not replace the version rolled back to."""

    async def run() -> tuple[str, str]:
        redis = redis_client_for(Settings())
        try:
            return await rollback(redis)
        finally:
            await redis.aclose()

    try:
        current, previous = run_redis(run())
    except (NoPreviousVersionError, UnknownVersionError):
        console.print(
            "[red]error:[/red] no kept version was published before the active one; "
            "`recsys models list` shows the kept versions (`recsys models activate VERSION`)"
        )
        raise typer.Exit(1) from None
    output.print(f"rolled back from {current} to [bold]{previous}[/bold] (active now)")


@app.command("decisions")
def decisions_command(
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The retraining gate's recorded decisions, newest first, with their figures."""

    async def run() -> list[dict[str, Any]]:
        redis = redis_client_for(Settings())
        try:
            return await recorded_decisions(redis, limit)
        finally:
            await redis.aclose()

    decisions = run_redis(run())
    if as_json:
        output.print_json(json.dumps(decisions))
        return
    if not decisions:
        output.print("no retraining decision is recorded: run `recsys retrain`")
        return
    for d in decisions:
        rows = d.get("rows") or {}
        figures = (
            f"NDCG@10 candidate {_figure(d.get('candidate_ndcg'))}, active "
            f"{_figure(d.get('active_ndcg'))}, margin {d.get('margin')}"
            if d.get("candidate_ndcg") is not None
            else ""
        )
        output.print(
            f"{d.get('time')}  {str(d.get('decision')).upper()}  candidate "
            f"{d.get('candidate') or '-'}  active {d.get('active') or '-'}"
            + (f"  {figures}" if figures else "")
            + (f"  events {rows.get('train', 0):,} train / {rows.get('held_out', 0):,} held out"
               if rows else "")
            + f"\n    {d.get('reason', '')}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )  # fmt: skip


def _figure(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def run_redis(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except REDIS_ERRORS as exc:
        console.print(
            f"[red]error:[/red] Redis failed ({exc}). Check RECSYS_REDIS_URL and that the "
            "services run (`recsys services status`)."
        )
        raise typer.Exit(1) from None
