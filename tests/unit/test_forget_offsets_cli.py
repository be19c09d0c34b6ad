"""`recsys forget-offsets`: what it refuses before touching Redis."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys.cli import app

pytestmark = pytest.mark.unit


def test_a_topic_that_is_not_an_event_topic_is_refused_by_name() -> None:
    outcome = CliRunner().invoke(app, ["forget-offsets", "--topic", "events.dlq", "--yes"])
    assert outcome.exit_code == 2
    assert "events.dlq is not an event topic" in outcome.output
    assert "events.view" in outcome.output  # the valid choices are named
