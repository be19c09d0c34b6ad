"""Online experiments: arms, sticky assignment, and the statistics of their comparison.

Pure, no I/O. The API assigns each request's user to an arm (`assign`); reports compare arms'
rates (`compare`) and check that traffic split as configured (`sample_ratio_mismatch`).

Assignment is sticky and independent between experiments: a user's position in [0, 1) is a
hash of the experiment's salt and the user id (BLAKE2b, not Python's `hash`, which differs
between processes), and the arms take consecutive shares of that interval. Changing an arm's
share moves only the users at the boundaries it shifts; changing the salt reshuffles everyone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Shares must sum to 1 within this (they are decimals written by people).
SHARE_TOLERANCE = 1e-6
Z_95 = 1.959963984540054


# What an arm may change in its answers: MMR's lambda; the model version it serves (a kept
# version id; its batch user vectors, since the online vectors live in the active version's
# space); the learned ranker on or off; the candidate sources' quotas (as
# `RECSYS_API_RANK_QUOTAS`); or none of the model at all: a holdout (the popular list, the
# baseline every arm is measured against) or random items of the catalog (a floor: what an arm
# that knows nothing about the user achieves).
ARM_PARAMS: dict[str, type] = {
    "diversity": float,
    "version": str,
    "ranker": bool,
    "sources": dict,
    "holdout": bool,
    "random": bool,
}
# Experiment ids and arm names: they are parts of Redis keys, metric labels and file names.
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ExperimentError(ValueError):
    """An experiment's definition is inconsistent; the message says which part."""


@dataclass(frozen=True)
class Arm:
    name: str
    share: float
    # How its answers differ (`ARM_PARAMS`); none: the control.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    id: str
    arms: tuple[Arm, ...]
    salt: str = ""

    def __post_init__(self) -> None:
        for name in (self.id, *(arm.name for arm in self.arms)):
            if not NAME.fullmatch(name):
                raise ExperimentError(
                    f"{name!r} is not a valid experiment id or arm name: 1 to 64 letters, "
                    "digits, '_', '.' or '-'"
                )
        if not self.arms:
            raise ExperimentError(f"experiment {self.id!r} has no arms")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ExperimentError(f"experiment {self.id!r}: arm names repeat: {names}")
        if any(arm.share < 0 for arm in self.arms):
            raise ExperimentError(f"experiment {self.id!r}: a share is negative")
        total = sum(arm.share for arm in self.arms)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ExperimentError(f"experiment {self.id!r}: shares sum to {total:g}, not 1")
        for arm in self.arms:
            for name, value in arm.params.items():
                kind = ARM_PARAMS.get(name)
                if kind is None:
                    raise ExperimentError(
                        f"arm {arm.name!r}: unknown parameter {name!r}; known: "
                        f"{', '.join(ARM_PARAMS)}"
                    )
                # JSON's 1 is an int: a number is a float here, but a boolean is not.
                accepted = (int, float) if kind is float else (kind,)
                if not isinstance(value, accepted) or isinstance(value, bool) is not (kind is bool):
                    raise ExperimentError(f"arm {arm.name!r}: {name} must be a {kind.__name__}")
            if arm.params.get("holdout") and arm.params.get("random"):
                raise ExperimentError(f"arm {arm.name!r}: holdout and random exclude each other")
            _check_sources(arm)
            diversity = arm.params.get("diversity", 0.0)
            if not 0.0 <= diversity <= 1.0:
                raise ExperimentError(f"arm {arm.name!r}: diversity must be within [0, 1]")

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise ExperimentError(f"experiment {self.id!r} has no arm {name!r}")


def _check_sources(arm: Arm) -> None:
    from core.ranking import SOURCES

    quotas = arm.params.get("sources")
    if quotas is None:
        return
    unknown = sorted(set(quotas) - set(SOURCES))
    if unknown:
        raise ExperimentError(f"arm {arm.name!r}: unknown sources {unknown}; known: {SOURCES}")
    if any(type(q) is not int or q < 0 for q in quotas.values()):
        raise ExperimentError(f"arm {arm.name!r}: a source's quota is a count: 0 or more")


def experiment_from_json(text: str) -> Experiment:
    """An experiment as configured (`RECSYS_EXPERIMENT`): {"id": ..., "salt": ..., "arms":
    [{"name": ..., "share": ..., "params": {"diversity": 0.5} or {"holdout": true}}, ...]}."""
    try:
        raw = json.loads(text)
        arms = tuple(
            Arm(
                name=str(arm["name"]),
                share=float(arm["share"]),
                params=dict(arm.get("params") or {}),
            )
            for arm in raw["arms"]
        )
        return Experiment(id=str(raw["id"]), arms=arms, salt=str(raw.get("salt", "")))
    except ExperimentError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExperimentError(
            'an experiment is JSON like {"id": "homepage", "arms": [{"name": "control", '
            '"share": 0.5}, {"name": "diverse", "share": 0.5, "params": {"diversity": 0.5}}]}'
            f"; this one is not ({type(exc).__name__}: {exc})"
        ) from None


def experiment_to_json(experiment: Experiment) -> str:
    """`experiment_from_json` reversed."""
    return json.dumps(
        {
            "id": experiment.id,
            "salt": experiment.salt,
            "arms": [
                {"name": arm.name, "share": arm.share, "params": arm.params}
                for arm in experiment.arms
            ],
        }
    )


def position(experiment: Experiment, user_id: str) -> float:
    """The user's place in [0, 1) for this experiment: uniform over users, fixed for each."""
    digest = hashlib.blake2b(
        f"{experiment.salt or experiment.id}\x00{user_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(experiment: Experiment, user_id: str) -> Arm:
    """The arm that serves `user_id`, the same on every request and in every process."""
    place = position(experiment, user_id)
    edge = 0.0
    for arm in experiment.arms:
        edge += arm.share
        if place < edge:
            return arm
    return experiment.arms[-1]  # shares summing to 1 - 1e-9 leave a sliver: the last arm's


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else math.nan

    def interval(self) -> tuple[float, float]:
        """Wilson's 95% interval (sound at small counts and rates near 0, unlike the normal
        approximation)."""
        if not self.trials:
            return (math.nan, math.nan)
        from scipy import stats  # imported when a report needs it, not with the settings

        found = stats.binomtest(self.successes, self.trials).proportion_ci(method="wilson")
        return (float(found.low), float(found.high))


@dataclass(frozen=True)
class Comparison:
    """An arm's rate against the control's."""

    difference: float  # arm - control
    interval: tuple[float, float]  # 95%, unpooled standard error
    p_value: float  # two-sided, pooled two-proportion z-test


def compare(arm: Rate, control: Rate) -> Comparison:
    """The two-proportion z-test of `arm` against `control`."""
    if not arm.trials or not control.trials:
        return Comparison(math.nan, (math.nan, math.nan), math.nan)
    difference = arm.value - control.value
    pooled = (arm.successes + control.successes) / (arm.trials + control.trials)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / arm.trials + 1 / control.trials))
    from scipy import stats

    z = abs(difference) / pooled_se if pooled_se > 0 else 0.0
    p_value = float(2 * stats.norm.sf(z))
    se = math.sqrt(
        arm.value * (1 - arm.value) / arm.trials
        + control.value * (1 - control.value) / control.trials
    )
    return Comparison(difference, (difference - Z_95 * se, difference + Z_95 * se), p_value)


def sample_ratio_mismatch(counts: Sequence[int], shares: Sequence[float]) -> float:
    """The p-value of the users (or requests) seen per arm under the configured shares: a
    chi-square goodness-of-fit test. A tiny p-value (below 0.001, say) means assignment or
    logging is broken, and the comparison cannot be trusted."""
    total = sum(counts)
    if total == 0:
        return math.nan
    expected = [share * total for share in shares]
    kept = [(c, e) for c, e in zip(counts, expected, strict=True) if e > 0]
    if len(kept) < 2:
        return 1.0
    observed, wanted = zip(*kept, strict=True)
    from scipy import stats

    return float(stats.chisquare(observed, wanted).pvalue)
