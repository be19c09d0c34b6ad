"""The cluster id the local Kafka's log dir is formatted with."""

from __future__ import annotations

import base64

import pytest

from infra.local.kafka import cluster_id

pytestmark = pytest.mark.unit


def test_cluster_ids_are_kafka_uuids_that_never_look_like_an_option() -> None:
    # One plain draw in 64 starts with "-"; 2,000 draws all pass by chance about 2e-14 times.
    ids = [cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for i in ids[:50]:
        assert len(i) == 22
        assert len(base64.urlsafe_b64decode(i + "==")) == 16
