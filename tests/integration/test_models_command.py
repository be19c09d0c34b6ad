"""`recsys models list` and `recsys models activate` (rollback) against real Redis."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from api.catalog import VersionHint, user_context
from core import keys
from core.clients import RedisClient
from core.model_version import active_version
from core.settings import Settings
from tests.integration.test_stream_applier import publish_model

pytestmark = pytest.mark.integration


async def models(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "RECSYS_REDIS_URL": settings.redis_url,
        "RECSYS_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
    }
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "recsys", "models", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), timeout=60)
    assert command.returncode is not None
    return command.returncode, printed.decode()


async def test_a_kept_version_is_activated_for_workers_and_api_and_others_refused(
    any_redis: RedisClient, topology_settings: Settings, tmp_path: Path
) -> None:
    await publish_model(any_redis, tmp_path, seed=0)
    first = await active_version(any_redis)
    await publish_model(any_redis, tmp_path, seed=1)
    second = await active_version(any_redis)
    assert first is not None
    assert second not in (None, first)

    code, printed = await models(topology_settings, "activate", first)
    assert code == 0, printed
    assert await active_version(any_redis) == first  # what the workers follow
    for user in ("u1", "u2", "someone-else"):  # what the API reads, in every user's tag
        assert (await user_context(any_redis, user, VersionHint())).version == first
    code, printed = await models(topology_settings, "list")
    assert code == 0, printed
    assert first in printed
    assert second in printed

    code, printed = await models(topology_settings, "activate", "never-published")
    assert code == 1
    assert "not published or no longer kept" in printed
    assert await any_redis.get(keys.active_model_near("u1")) == first.encode()
