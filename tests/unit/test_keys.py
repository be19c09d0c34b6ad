"""The user keys' layout: tags spread users over a fixed number of slots, and keys read back."""

from __future__ import annotations

import fnmatch
import zlib
from collections import Counter

import pytest
from redis.crc import key_slot

from core import keys

pytestmark = pytest.mark.unit

ODD_IDS = ["42", "user:with:colons", "brace}user{", "ünïcode", "x" * 200]


@pytest.mark.parametrize("user", ODD_IDS)
def test_a_state_key_names_its_user_and_matches_the_scan_pattern(user: str) -> None:
    key = keys.user_state(user)
    assert keys.user_of_state_key(key) == user
    assert fnmatch.fnmatchcase(key, keys.user_state_pattern())
    assert fnmatch.fnmatchcase(key, keys.user_state_pattern(user[:2] + "*"))
    # The hash tag is the first {...}: the tag alone decides the slot, whatever the id holds.
    assert key[key.index("{") + 1 : key.index("}")] == keys.user_tag(user)


def test_users_spread_evenly_over_a_fixed_number_of_tags() -> None:
    counts = Counter(keys.user_tag(f"user-{n}") for n in range(32_000))
    assert set(counts) == set(keys.USER_TAGS)
    assert len(keys.USER_TAGS) == 32
    assert min(counts.values()) > 850  # 1,000 each, give or take 15%
    assert max(counts.values()) < 1150
    # Stable across processes and releases: the layout depends on it.
    assert keys.user_tag("42") == keys.USER_TAGS[zlib.crc32(b"42") % 32]


@pytest.mark.parametrize("masters", [1, 2, 3, 4, 8, 32])
def test_masters_with_equal_slot_ranges_get_equal_shares_of_the_tags(masters: int) -> None:
    # How redis-cli --cluster create splits the slots: equal consecutive ranges.
    width = keys.SLOTS / masters
    owners = Counter(int(redis_slot(tag) // width) for tag in keys.USER_TAGS)
    assert len(owners) == masters
    assert max(owners.values()) - min(owners.values()) <= 1


def redis_slot(tag: str) -> int:
    """The slot Redis gives a key with this hash tag (redis-py's own computation)."""
    return key_slot(f"recsys:{{{tag}}}:someone:state".encode())


@pytest.mark.parametrize("user", ODD_IDS)
def test_what_a_request_reads_of_a_user_shares_the_user_s_slot(user: str) -> None:
    """The API reads the active version's copy, the state and the batch vector in one round
    trip to the user's node: all three must hash to one slot."""
    slots = {
        key_slot(keys.user_state(user).encode()),
        key_slot(keys.active_model_near(user).encode()),
        key_slot(keys.user_vectors("20261203T000000-als-ab12", user).encode()),
    }
    assert slots == {redis_slot(keys.user_tag(user))}
