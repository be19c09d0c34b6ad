"""The garbage-collector policy of long-running processes (`core.heap`).

Each case runs in a fresh interpreter: the policy is process-wide, and freezing the test
run's own heap is exactly what it must not do by accident.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROBE = """
import gc, json
from core import heap
default_threshold = gc.get_threshold()[0]
heap.freeze_long_lived()
frozen_before_opt_in = gc.get_freeze_count()
heap.tune_for_long_running_process(raise_young_threshold={raise_young})
frozen_at_opt_in = gc.get_freeze_count()
print(json.dumps([default_threshold, frozen_before_opt_in, frozen_at_opt_in,
                  gc.get_threshold()[0]]))
"""


def _probe(raise_young: bool) -> list[int]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(raise_young=raise_young)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: list[int] = json.loads(completed.stdout)
    return result


def test_nothing_is_frozen_until_the_process_opts_in() -> None:
    default_threshold, before, at_opt_in, threshold = _probe(raise_young=True)
    assert before == 0
    assert at_opt_in > 1000  # the interpreter's and the imported modules' objects
    assert default_threshold < threshold == 50_000


def test_young_threshold_is_left_alone_when_not_asked() -> None:
    default_threshold, _, at_opt_in, threshold = _probe(raise_young=False)
    assert at_opt_in > 1000
    assert threshold == default_threshold
