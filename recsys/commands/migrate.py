"""`recsys migrate-state`: move the stream's state into the cluster-safe key layout."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from core.clients import REDIS_ERRORS
from core.settings import Settings, mask_url_password

console = Console(stderr=True)  # errors
output = Console(soft_wrap=True)  # progress and results: one line each, however narrow


def migrate_state_command(
    source_url: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The single Redis that holds the old layout, when it is not the one "
            "RECSYS_REDIS_URL names (for example when moving to a Redis Cluster).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before moving.")] = False,
) -> None:
    """Move user state, item counts and applied offsets written before Redis Cluster support
    (keys recsys:user:<id>:state, recsys:stream:applied, recsys:trending:*, recsys:items:*)
    into today's layout (recsys:{u<t>}:<id>:state and hash-tagged item shards), on the same Redis
    or from a single Redis into the cluster RECSYS_REDIS_URL names. Stop the workers first and
    start them again after: a worker of this version skips what the old ones applied. Users
    already in the new layout keep their new state; the old keys are deleted once copied.
    Users whose state is still in format 1 (a hash per user) are rewritten packed (format 2);
    the workers and the API read both, so this part may also wait for a quiet hour. Batch user
    vectors published as one hash per version are spread over the users' hash tags."""
    from core.clients import redis_client_for
    from streams.migrate_state import migrate_state

    settings = Settings()
    source_settings = (
        settings
        if source_url is None
        else settings.model_copy(update={"redis_url": source_url, "redis_cluster": False})
    )
    where = mask_url_password(source_settings.redis_url)
    if not yes and not typer.confirm(
        f"Move the old layout's keys from {where} into {mask_url_password(settings.redis_url)}"
        " (stop the workers first)?"
    ):
        raise typer.Exit(1)

    async def run() -> None:
        source = redis_client_for(source_settings)
        target = source if source_url is None else redis_client_for(settings)
        try:
            with output.status("Moving…") as status:
                summary = await migrate_state(
                    source,
                    target,
                    settings.redis_item_shards,
                    lambda stage, done: status.update(f"Moving {stage}: {done:,}"),
                )
        finally:
            await source.aclose()
            if target is not source:
                await target.aclose()
        if not summary.anything:
            output.print("nothing to move: no key of the old layout was found")
            return
        output.print(
            f"moved {summary.users:,} users ({summary.users_already_there:,} already in the new "
            f"layout, {summary.users_packed:,} rewritten packed), {summary.trending_keys:,} "
            f"trending and {summary.window_keys:,} window keys; applied offsets of "
            f"{len(summary.offsets)} partitions recorded; batch vectors of "
            f"{summary.vector_versions} model versions spread over the users' hash tags"
        )

    try:
        asyncio.run(run())
    except REDIS_ERRORS as exc:
        console.print(
            f"[red]error:[/red] Redis failed ({exc}). Check RECSYS_REDIS_URL (and --from), and "
            "that the services run (`recsys services status`)."
        )
        raise typer.Exit(1) from None
