"""Where a GET /recommend's time goes: the server's own histograms (`api.metrics`), read from
/metrics before and after a run, as the mean time per request of the whole answer, of each
stage of the two-stage path and of each backend call. Means of deltas, so a warm-up before the
run does not count; a stage that not every request passes through is averaged over all of them
too, which makes the rows add up to (at most) the request's time."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# (metric family, the labels that name a row, how the row is called)
_FAMILIES = (
    ("recsys_api_request_duration_seconds", ("route",), "request"),
    ("recsys_api_stage_duration_seconds", ("stage",), "stage"),
    ("recsys_api_backend_duration_seconds", ("backend", "operation"), "backend"),
)
RECOMMEND_ROUTE = "/recommend/{user_id}"


def histogram_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """Per row name, the (sum of seconds, count) of its histogram series, every worker's
    together (the multiprocess collector has already added them)."""
    totals: dict[str, list[float]] = {}
    wanted = {family: (labels, kind) for family, labels, kind in _FAMILIES}
    for family in text_string_to_metric_families(metrics_text):
        if family.name not in wanted:
            continue
        labels, kind = wanted[family.name]
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                slot = 0
            elif sample.name.endswith("_count"):
                slot = 1
            else:
                continue
            if kind == "request" and sample.labels.get("route") != RECOMMEND_ROUTE:
                continue
            name = f"{kind} " + " ".join(sample.labels.get(label, "") for label in labels)
            totals.setdefault(name, [0.0, 0.0])[slot] += sample.value
    return {name: (pair[0], pair[1]) for name, pair in totals.items()}


def breakdown(before: str, after: str) -> dict[str, Any]:
    """Mean milliseconds per /recommend request of every row, and how many requests."""
    start, end = histogram_totals(before), histogram_totals(after)
    request = f"request {RECOMMEND_ROUTE}"
    requests = end.get(request, (0.0, 0.0))[1] - start.get(request, (0.0, 0.0))[1]
    if requests <= 0:
        return {"requests": 0, "mean_ms": {}}
    mean_ms = {
        name: (total - start.get(name, (0.0, 0.0))[0]) / requests * 1000
        for name, (total, _count) in end.items()
    }
    return {"requests": int(requests), "mean_ms": dict(sorted(mean_ms.items()))}
