"""An experiment's report: per-arm counts, rates with 95% intervals, each arm against the
control, and the sample-ratio-mismatch check. Pure: built from the counters
(`core.experiment_store.read_counts`) and the definition; the API serves it
(`GET /experiments/{id}`) and the CLI prints and plots it (`recsys experiments report`).

The control is the first arm of the definition. Rates are per impression (an answer shown):
click-through is the share of impressions with at least one credited click, conversion the share
with at least one credited purchase. The SRM check compares the users counted per arm with the
configured shares; below `SRM_ALERT_P` the split is broken (assignment, logging or a bot) and
the comparison cannot be trusted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.attribution import OUTCOMES
from core.experiment_store import Counts, Registered
from core.experiments import Rate, compare, sample_ratio_mismatch

SRM_ALERT_P = 0.001
# The rates a report gives: name -> (numerator, denominator) outcomes.
RATES = {
    "ctr": ("clicked_impressions", "impressions"),
    "conversion": ("converted_impressions", "impressions"),
}


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined figure (no trials yet) is null."""
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ArmReport:
    name: str
    share: float
    params: dict[str, Any]
    counts: dict[str, int]

    def rate(self, name: str) -> Rate:
        successes, trials = RATES[name]
        return Rate(self.counts[successes], self.counts[trials])


def arm_totals(registered: Registered, counts: Counts) -> list[ArmReport]:
    """Each arm's counts summed over the buckets (zeros for an arm that saw nothing yet)."""
    reports = []
    for arm in registered.experiment.arms:
        totals: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for bucket in counts.values():
            for outcome in OUTCOMES:
                totals[outcome] += bucket.get((arm.name, outcome), 0)
        reports.append(ArmReport(arm.name, arm.share, dict(arm.params), totals))
    return reports


def build_report(registered: Registered, counts: Counts) -> dict[str, Any]:
    """The report as JSON-ready data (the shape `api.models.ExperimentReport` declares)."""
    arms = arm_totals(registered, counts)
    control = arms[0]
    srm = sample_ratio_mismatch([a.counts["users"] for a in arms], [a.share for a in arms])
    arm_reports = []
    for arm in arms:
        rates = {}
        for name in RATES:
            rate = arm.rate(name)
            low, high = rate.interval()
            versus = None
            if arm is not control:
                found = compare(rate, control.rate(name))
                versus = {
                    "difference": _finite(found.difference),
                    "low": _finite(found.interval[0]),
                    "high": _finite(found.interval[1]),
                    "p_value": _finite(found.p_value),
                }
            rates[name] = {
                "value": _finite(rate.value),
                "low": _finite(low),
                "high": _finite(high),
                "vs_control": versus,
            }
        arm_reports.append(
            {
                "name": arm.name,
                "share": arm.share,
                "params": arm.params,
                "counts": arm.counts,
                "rates": rates,
            }
        )
    return {
        "id": registered.experiment.id,
        "running": registered.running,
        "created_s": registered.created_s,
        "stopped_s": registered.stopped_s,
        "control": control.name,
        "arms": arm_reports,
        "srm_p_value": _finite(srm),
        "sample_ratio_mismatch": not math.isnan(srm) and srm < SRM_ALERT_P,
        "buckets": [
            {
                "start_s": start,
                "arms": {
                    arm.name: {o: bucket.get((arm.name, o), 0) for o in OUTCOMES}
                    for arm in registered.experiment.arms
                },
            }
            for start, bucket in sorted(counts.items())
        ],
    }
