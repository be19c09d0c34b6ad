"""The shared rules: event weights, user-vector updates (EMA and the ALS fold-in), tumbling
windows, decayed trending and genre affinity. One function each.

Pure, no I/O. The stream worker (`streams.applier`) applies them to the state it reads from Redis;
batch evaluation replays them offline (`batch.evaluation.online_updates`); the API reads trending
with the same epochs and weights (`api.catalog`). Changing one changes what all of them compute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

EPS = 1e-12

# Implicit-feedback weight of one event by type: the stream's EMA and fold-in, trending and the
# training data all weigh events by this (a MovieLens rating is one positive interaction whatever
# its value, as the evaluation protocols require).
#
# Negative feedback weighs below zero: the fold-in reads a negative confidence as a disliked item
# (`fold_in`); trending and genre affinity count positive events only (`counts_as_interest`).
EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "purchase": 4.0,
    "rating": 1.0,
    "dislike": -4.0,
    "hide": -1.0,
}


def counts_as_interest(event_type: str) -> bool:
    """Whether an event of this type is interest in its item (trending, genres, training)."""
    return EVENT_WEIGHTS[event_type] > 0


# The event types `counts_as_interest` accepts.
INTEREST_TYPES = frozenset(t for t, weight in EVENT_WEIGHTS.items() if weight > 0)


# Events that end an item's feedback fatigue: the user acted on it. A view does not: it is what
# showing the item produces.
ENDS_FATIGUE = frozenset({"click", "purchase"})

# Genre affinities halve in a week without new events of that genre.
GENRE_HALF_LIFE_S = 7 * 86_400

# Trending counts are kept per epoch of this many half-lives (see `trending_epoch`).
TRENDING_EPOCH_HALF_LIVES = 16
# The previous epoch is that many half-lives older: its scores count this much when merged.
PREVIOUS_EPOCH_WEIGHT = 2.0**-TRENDING_EPOCH_HALF_LIVES


def normalize(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > EPS else vector).astype(np.float32)


def ema_update(user: np.ndarray | None, item: np.ndarray, weight: float) -> np.ndarray:
    """One exponential-moving-average step: u <- normalize((1 - a) u + a v_item).

    Parameters
    ----------
    user : ndarray or None
        The current (unit) user vector; None for a user with no vector yet, who starts from
        the item's direction.
    item : ndarray
        The item vector of the model version in force.
    weight : float
        a_t in (0, 1]: how far one event of this type pulls the user towards the item.

    Returns
    -------
    ndarray
        The new unit user vector (float32).
    """
    (vector,) = ema_steps([user], [[(item, weight)]])
    assert vector is not None  # a step always gives a vector
    return vector


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two vectors (0 where either is zero)."""
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms > EPS else 0.0


def ema_steps(
    users: list[np.ndarray | None],
    steps: list[list[tuple[np.ndarray, float]]],
    scores: list[list[float]] | None = None,
) -> list[np.ndarray | None]:
    """`ema_update` applied along each user's steps (item vector, weight), in order, for many
    users at once: one array operation per step position instead of several per event.

    A negative weight -a is a step away from the item (negative feedback):
    u <- normalize((1 - a) u - a v_item); a user without a vector has nothing to move away
    from and stays without one.

    Every row is computed on its own (a row's result does not depend on the others), so this
    gives exactly what `ema_update` gives one event at a time, as the offline replay of the
    stream updates computes it.

    `scores`, when given (one list per user), receives the cosine of each positive step's item
    with the vector the user held just before it (none while the user has no vector): how well
    the vector foresaw what the user did (drift monitoring's `event_scores`). A cosine, not the
    dot product the index ranks by, so that an item's norm (its popularity, for ALS) does not
    mask whether it fits the user's taste.
    """
    out = list(users)
    for position in range(max(map(len, steps), default=0)):
        rows = [n for n, user_steps in enumerate(steps) if len(user_steps) > position]
        items = np.stack([steps[n][position][0] for n in rows]).astype(np.float32, copy=False)
        weights = [steps[n][position][1] for n in rows]
        current = [out[n] for n in rows]
        has_vector = np.array([vector is not None for vector in current])
        previous = np.stack([items[k] if v is None else v for k, v in enumerate(current)])
        # (1 - a) in double, then float32: as the scalar expression (1.0 - a) * u computes it.
        keep = np.array([1.0 - abs(w) for w in weights], dtype=np.float32)[:, None]
        pull = np.array(weights, dtype=np.float32)[:, None]
        if scores is not None:
            foreseen = np.einsum("ij,ij->i", previous, items) / np.maximum(
                np.linalg.norm(items, axis=1), EPS
            )
            for k, n in enumerate(rows):
                if has_vector[k] and weights[k] > 0:
                    scores[n].append(float(foreseen[k]))
        mixed = np.where(has_vector[:, None], keep * previous + pull * items, items)
        norms = np.linalg.norm(mixed, axis=1, keepdims=True)
        unit = np.where(norms > EPS, mixed / np.where(norms > EPS, norms, 1), mixed)
        unit = unit.astype(np.float32, copy=False)
        for k, n in enumerate(rows):
            if has_vector[k] or weights[k] > 0:
                out[n] = unit[k]
    return out


def gram_matrix(item_vectors: np.ndarray) -> np.ndarray:
    """Y^T Y in float64: computed once per model version (published with it) and passed to every
    fold-in, as implicit caches `YtY`."""
    vectors = np.asarray(item_vectors, dtype=np.float64)
    return vectors.T @ vectors


def fold_in(
    gram: np.ndarray,
    item_vectors: np.ndarray,
    confidence: np.ndarray,
    regularization: float,
    prior: np.ndarray | None = None,
    prior_weight: float = 0.0,
) -> np.ndarray:
    """ALS fold-in of one user with the item factors fixed: the one implementation, used by the
    stream worker, batch evaluation and the tests.

    Solves (Y^T Y + sum_i (|c_i| - 1) y_i y_i^T + (lambda + mu) I) x
    = sum_{i: c_i > 0} c_i y_i + mu x_prior, which for mu = 0 is exactly implicit's
    `recalculate_user` (a negative confidence marks a disliked item: it weighs the fit by |c_i|
    with preference 0), and for mu > 0 pulls the solution towards the batch user vector.

    Parameters
    ----------
    gram : ndarray
        (d x d) Y^T Y of the model version (`gram_matrix`, published with it).
    item_vectors : ndarray
        (n x d) vectors of the user's distinct items.
    confidence : ndarray
        (n,) confidences c_i = alpha * summed event weight of each item.
    regularization : float
        The model's lambda.
    prior, prior_weight : ndarray or None, float
        Batch user vector and its pull mu (0 disables it).

    Returns
    -------
    ndarray
        (d,) float32 user vector; zero for an empty history without a prior.
    """
    dim = gram.shape[0]
    items = np.asarray(item_vectors, dtype=np.float64).reshape(-1, dim)
    conf = np.asarray(confidence, dtype=np.float64)
    lhs = np.asarray(gram, dtype=np.float64) + (regularization + prior_weight) * np.eye(dim)
    lhs += (items * (np.abs(conf) - 1.0)[:, None]).T @ items
    rhs = items.T @ np.where(conf > 0, conf, 0.0)
    if prior is not None and prior_weight > 0:
        rhs += prior_weight * np.asarray(prior, dtype=np.float64)
    return np.linalg.solve(lhs, rhs).astype(np.float32)


def fold_in_recent(
    recent: Iterable[tuple[str, str]],
    item_row: Mapping[str, int],
    item_vectors: np.ndarray,
    gram: np.ndarray,
    alpha: float,
    regularization: float,
    prior: np.ndarray | None,
    prior_weight: float,
) -> np.ndarray | None:
    """The fold-in of a user's recent (item id, event type) pairs: confidences are alpha times
    the summed event weights per item; items the model does not know are skipped. With no
    known item the prior (the batch vector, or None) stands."""
    confidence: dict[int, float] = defaultdict(float)
    for item_id, event_type in recent:
        row = item_row.get(item_id)
        if row is not None:
            confidence[row] += alpha * EVENT_WEIGHTS[event_type]
    if not confidence:
        return prior
    rows = np.fromiter(confidence, dtype=np.int64)
    return fold_in(
        gram,
        item_vectors[rows],
        np.fromiter(confidence.values(), dtype=np.float64),
        regularization,
        prior=prior,
        prior_weight=prior_weight if prior is not None else 0.0,
    )


WINDOWS: dict[str, int] = {"5m": 300, "1h": 3600}
# A user's window slots: each window's current one and the one before it.
WINDOW_SLOTS = tuple(slot for name in WINDOWS for slot in (name, f"{name}_prev"))
# Per window: (current slot, previous slot, length in seconds).
WINDOW_TRIPLES = tuple((name, f"{name}_prev", length) for name, length in WINDOWS.items())


def window_start(ts_seconds: float, length_s: int) -> int:
    """Start of the tumbling window (aligned to the epoch) that contains `ts_seconds`."""
    return int(ts_seconds) - int(ts_seconds) % length_s


@dataclass
class WindowCounts:
    """Counts per event type in one tumbling window."""

    start: int
    counts: dict[str, int]


def add_to_windows(
    current: WindowCounts | None,
    previous: WindowCounts | None,
    ts_seconds: float,
    event_type: str,
    length_s: int,
) -> tuple[WindowCounts | None, WindowCounts | None, bool]:
    """Count one event in a user's current/previous tumbling windows (event time).

    A newer window rolls the current one into `previous`; an event for the previous window
    still counts there; anything older is too late and is not counted (returns False).
    """
    start = window_start(ts_seconds, length_s)
    if current is None or start > current.start:
        previous = current if current is not None and current.start == start - length_s else None
        current = WindowCounts(start, {})
    if start == current.start:
        target = current
    elif previous is not None and start == previous.start:
        target = previous
    elif start == current.start - length_s:
        previous = target = WindowCounts(start, {})
    else:
        return current, previous, False
    target.counts[event_type] = target.counts.get(event_type, 0) + 1
    return current, previous, True


def trending_epoch(ts_seconds: float, half_life_s: float) -> int:
    """Decayed counts are kept per epoch of 16 half-lives, so scores stay below 2**16 * weight
    and no worker ever has to rescale a shared set."""
    return int(ts_seconds // (TRENDING_EPOCH_HALF_LIVES * half_life_s))


def trending_ttl_s(half_life_s: float) -> int:
    """How long an epoch's counts are kept: the current and the previous epoch are read, and a
    third covers clocks that disagree."""
    return int(3 * TRENDING_EPOCH_HALF_LIVES * half_life_s)


def trending_increment(ts_seconds: float, weight: float, half_life_s: float) -> tuple[int, float]:
    """(epoch, score increment) of one event: weight * 2**((ts - epoch start) / half-life).

    Within an epoch, comparing sums of these is comparing counts decayed to any common instant;
    the previous epoch joins with weight 2**-16 when read.
    """
    epoch = trending_epoch(ts_seconds, half_life_s)
    offset = ts_seconds - epoch * TRENDING_EPOCH_HALF_LIVES * half_life_s
    return epoch, weight * 2.0 ** (offset / half_life_s)


def decay_affinity(
    affinity: dict[str, float], elapsed_s: float, half_life_s: float
) -> dict[str, float]:
    """Decay genre affinities by the time since they were last written; drop negligible ones."""
    factor = 2.0 ** (-max(elapsed_s, 0.0) / half_life_s)
    return {g: s * factor for g, s in affinity.items() if s * factor > 1e-3}


@dataclass(frozen=True)
class Transition:
    """One step of a user from one item to the next: what the item-to-item table counts."""

    source: str
    target: str
    ts_s: float
    weight: float
    index: int  # of the event that made it, among those given to `transitions`


def transitions(previous: str | None, steps: Iterable[tuple[str, str, float]]) -> list[Transition]:
    """The transitions of a user's events (item id, event type, ts seconds), in time order,
    starting from `previous` (the user's item before them, or None): each event of interest
    (`counts_as_interest`) is a step from the last such item to its own, weighing as the event
    does; negative feedback neither makes nor breaks a step, and a repeat of the same item is no
    step."""
    found = []
    for index, (item_id, event_type, ts_s) in enumerate(steps):
        if not counts_as_interest(event_type):
            continue
        if previous is not None and previous != item_id:
            found.append(Transition(previous, item_id, ts_s, EVENT_WEIGHTS[event_type], index))
        previous = item_id
    return found
