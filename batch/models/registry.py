"""Model names used on the command line, mapped to their classes.

The two-tower model lives in its own package with heavier dependencies (torch); it is looked up
lazily so that the other models work wherever it cannot be imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from batch.models.als import ALSRecommender
from batch.models.base import Recommender
from batch.models.bpr import BPRRecommender
from batch.models.ease import EASE
from batch.models.itemknn import ItemKNN
from batch.models.popular import MostPopular, RecentPopular

ModelFactory = Callable[..., Recommender]

# The ALS configuration `recsys train` serves: the winner on the validation split of P1, the
# time-safe protocol that matches serving (train on the past, serve the future). Evaluations
# score it as `als-served` next to `als` tuned on their own validation split; see BENCHMARKS.md.
SERVED_ALS_PARAMS: dict[str, Any] = {
    "factors": 32,
    "regularization": 5.0,
    "alpha": 2.0,
    "iterations": 15,
}

_BUILTIN: dict[str, ModelFactory] = {
    "most-popular": MostPopular,
    "recent-popular": RecentPopular,
    "itemknn": ItemKNN,
    "ease": EASE,
    "als": ALSRecommender,
    "als-served": ALSRecommender,
    "bpr": BPRRecommender,
}
# name -> (module, class) of models imported only when asked for.
_LAZY: dict[str, tuple[str, str]] = {
    "two-tower": ("batch.models.two_tower", "TwoTowerRecommender"),
    "two-stage": ("batch.models.two_stage", "TwoStageRecommender"),
}


class UnknownModelError(ValueError):
    """No model has that name."""


class ModelUnavailableError(RuntimeError):
    """The model exists but cannot be imported here; the message says why."""


def model_names() -> list[str]:
    """Every registered name, built-in first (whether or not a lazy one imports)."""
    return [*_BUILTIN, *_LAZY]


def model_factory(name: str) -> ModelFactory:
    """The class registered under `name`; its constructor takes the hyperparameters."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name not in _LAZY:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    module_name, class_name = _LAZY[name]
    try:
        factory: ModelFactory = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ModelUnavailableError(f"model {name!r} cannot be imported: {exc}") from exc
    return factory
