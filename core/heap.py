"""Garbage-collector settings for the long-running processes (stream worker, API workers).

CPython's cyclic collector scans every tracked object of a generation each time it runs. The
stream worker holds a long-lived heap (Faust's app, its clients, the active model) of about
120,000 objects and allocates a few hundred short-lived ones per event. With the default
thresholds it ran about one full collection a second while draining a backlog, each scanning
that whole heap: about 4 s of CPU in a 100,000-event drain (a third of it in full
collections), measured with `gc.callbacks`. Two standard remedies, together about 0.15 s:

- a larger young-generation threshold, so that per-event objects are freed by reference
  counting before a collection ever sees them, and few are promoted to older generations;
- `gc.freeze()` once the long-lived objects exist (at start-up and after a new model version
  is loaded), which moves them out of the collector's view for good. Reference cycles among
  them are then never collected; they live as long as the process or the model version.

Freezing is off until `tune_for_long_running_process()` is called, so that library code which
calls `freeze_long_lived()` (the model caches) does not freeze a test run's heap.
"""

from __future__ import annotations

import gc

# Net allocations before a young collection; CPython's default is 700.
YOUNG_THRESHOLD = 50_000

_freezing = False


def tune_for_long_running_process(*, raise_young_threshold: bool) -> None:
    """Enable `freeze_long_lived` (and freeze now); optionally raise the young threshold."""
    global _freezing
    if raise_young_threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    _freezing = True
    freeze_long_lived()


def freeze_long_lived() -> None:
    """Collect what is garbage now, then stop scanning everything still alive."""
    if _freezing:
        gc.collect()
        gc.freeze()
