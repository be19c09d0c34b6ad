"""`recsys replay` refuses a bad option before any training or service start."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recsys.cli import app

pytestmark = pytest.mark.unit


def test_an_unknown_live_configuration_is_refused_up_front() -> None:
    result = CliRunner().invoke(app, ["replay", "--live", "ema", "--live", "bogus"])
    assert result.exit_code == 2
    assert "unknown configurations ['bogus']" in result.output
    assert "static, ema, fold-in, ema-async, ranked, ranker-off" in result.output
