"""`SlotOf` caches a key's slot by hash tag and must agree with redis-py on every key."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from core import keys
from core.scripts import SlotOf

pytestmark = pytest.mark.unit

KEYS = [
    keys.user_state("42"),
    keys.user_state("someone else"),
    keys.item_window(3, "5m", 1_700_000_000),
    keys.trending(3, 7),
    "recsys:model:active",  # no tag: the whole key is hashed
    "a{}b",  # an empty tag counts as none
    "a{b",  # an opening brace alone too
    "x{tag}y{other}",  # only the first tag counts
    "y{tag}z",
]


def test_each_key_gets_the_slot_redis_gives_it_before_and_after_caching() -> None:
    # No connection is made: a cluster client computes slots by itself.
    client = aioredis.RedisCluster(host="127.0.0.1", port=1)
    slot_of = SlotOf(client)
    for _ in range(2):
        assert [slot_of(key) for key in KEYS] == [client.keyslot(key) for key in KEYS]
    assert slot_of("x{tag}y{other}") == slot_of("y{tag}z")
