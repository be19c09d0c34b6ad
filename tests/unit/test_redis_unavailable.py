"""Which Redis errors the worker waits out (an outage) and which it treats as a bad command."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from core.clients import redis_unavailable

pytestmark = pytest.mark.unit


def raised_from(error: BaseException, cause: BaseException | None) -> BaseException:
    """`error` as Python leaves it after `raise error from cause`."""
    try:
        raise error from cause
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ConnectionError("refused"),
        redis_errors.TimeoutError("slow"),
        redis_errors.BusyLoadingError("loading"),
        redis_errors.ClusterDownError("CLUSTERDOWN"),
        redis_errors.TryAgainError("TRYAGAIN"),
        redis_errors.MasterDownError("MASTERDOWN"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_an_away_redis_is_waited_out(error: BaseException) -> None:
    assert redis_unavailable(error)


def test_a_cluster_that_reaches_no_node_is_waited_out() -> None:
    # What redis-py's cluster client raises while every node is down.
    error = raised_from(
        redis_errors.RedisClusterException("Redis Cluster cannot be connected."),
        redis_errors.ConnectionError("Error 111 connecting to 127.0.0.1:7000."),
    )
    assert redis_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"),
        redis_errors.NoScriptError("NOSCRIPT"),
        redis_errors.RedisClusterException("keys in request don't hash to the same slot"),
        raised_from(redis_errors.RedisClusterException("bad"), ValueError("a bug")),
        ValueError("a bug"),
    ],
)
def test_a_bad_command_or_a_bug_is_not(error: BaseException) -> None:
    assert not redis_unavailable(error)
