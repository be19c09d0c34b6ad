"""The ranking stage's shared rules: candidate sources merged into one pool, the features of each
(user, candidate), and the learned ranker that scores them.

One feature list, in one order, for training (`batch.ranking`) and serving (`api.pipeline`), and
versioned with the model that learned it (`FEATURE_VERSION`, stored next to the ranker). Both
sides build their pool with `gather` and their features with `feature_matrix`, so the live
answers and the in-process replay of them rank alike.

Per (user, candidate item), for each source of `SOURCES`:
  <source>_score   the item's score in that source over the source's best score (1 for its top
                   item; 0 when the source did not propose it): scale-free, so it reads the same
                   at any point of a decayed count's epoch
  <source>_rank    its 1-based rank in that source after the filters (quota + 1 when absent)
and for the pair:
  user_similarity        cosine of the user's vector and the item's (0 without a vector)
  last_item_similarity   cosine of the item's and the user's newest item of interest's vectors
  recent_mean_similarity cosine of the item's vector and the mean direction of the user's
                         `RECENT_ITEMS` newest items of interest (0 without any)
  recent_max_similarity  the largest cosine of the item's vector with any one of those
  item_popularity        log(1 + the item's interactions in the model's training data)
  user_history           the user's events in the stream's recent history (bounded)
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.rules import PREVIOUS_EPOCH_WEIGHT, counts_as_interest, normalize

if TYPE_CHECKING:
    import lightgbm

# ann: the ANN neighbours of the user's vector; neighbours: the item-item neighbours published
# with the model version, from the user's newest items; transitions: the stream's item-to-item
# table (`core.keys.item_transitions`) from the same items; trending: the stream's decayed
# counts; popular: the model's training-data counts.
SOURCES: tuple[str, ...] = ("ann", "neighbours", "transitions", "trending", "popular")
FEATURES: tuple[str, ...] = (
    *(f"{source}_{part}" for source in SOURCES for part in ("score", "rank")),
    "user_similarity",
    "last_item_similarity",
    "recent_mean_similarity",
    "recent_max_similarity",
    "item_popularity",
    "user_history",
)
FEATURE_VERSION = 3
_COLUMN = {name: column for column, name in enumerate(FEATURES)}
# The user's newest items of interest that item-to-item sources follow, and their weights.
RECENT_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 0.25)
# The user's newest items of interest the similarity features compare candidates with.
RECENT_ITEMS = 10


@dataclass(frozen=True)
class SourceList:
    """One source's proposals, best first, with its scores."""

    name: str
    item_ids: Sequence[str]
    scores: Sequence[float]

    @classmethod
    def of(cls, name: str, pairs: Sequence[tuple[str, float]]) -> SourceList:
        return cls(name, [item for item, _ in pairs], [score for _, score in pairs])


@dataclass(frozen=True)
class Pool:
    """The candidates of one request, in source order (each source's items after those of the
    sources before it in `SOURCES`, no item twice), with each source's relative score and rank.
    """

    item_ids: list[str]
    first_source: list[str]  # the source that proposed each first
    scores: np.ndarray  # (candidates x sources) float32, relative to each source's best
    ranks: np.ndarray  # (candidates x sources) float32, 1-based; quota + 1 where absent

    def __len__(self) -> int:
        return len(self.item_ids)


def gather(
    lists: Sequence[SourceList], quotas: Mapping[str, int], allowed: Container[str] | None = None
) -> Pool:
    """Merge the sources' lists: each keeps its first `quotas[name]` items that are `allowed`
    (filters are applied before ranking, so ranks count only what could be shown)."""
    by_name = {found.name: found for found in lists}
    order: dict[str, int] = {}
    first: list[str] = []
    cells: list[tuple[int, int, float, int]] = []  # (row, source column, score, rank)
    for column, name in enumerate(SOURCES):
        found = by_name.get(name)
        quota = quotas.get(name, 0)
        if found is None or quota <= 0:
            continue
        kept = 0
        best = 0.0
        for item, score in zip(found.item_ids, found.scores, strict=True):
            if kept >= quota:
                break
            if allowed is not None and item not in allowed:
                continue
            if kept == 0:
                best = abs(float(score)) or 1.0
            kept += 1
            row = order.get(item)
            if row is None:
                row = order[item] = len(first)
                first.append(name)
            cells.append((row, column, float(score) / best, kept))
    n = len(first)
    scores = np.zeros((n, len(SOURCES)), dtype=np.float32)
    ranks = np.empty((n, len(SOURCES)), dtype=np.float32)
    for column, name in enumerate(SOURCES):
        ranks[:, column] = quotas.get(name, 0) + 1
    for row, column, score, rank in cells:
        scores[row, column] = score
        ranks[row, column] = rank
    return Pool(item_ids=list(order), first_source=first, scores=scores, ranks=ranks)


# ANN scores are rounded to this many decimals before ranking: the index and numpy add the same
# float32 products in different orders, and near-ties would otherwise rank differently.
ANN_DECIMALS = 5


def ann_list(item_ids: Sequence[str], scores: Sequence[float]) -> SourceList:
    """The ANN source from an index's (or an in-process) search: scores rounded, best first."""
    pairs = [
        (item, round(float(score), ANN_DECIMALS))
        for item, score in zip(item_ids, scores, strict=True)
    ]
    return SourceList.of("ann", best_first(pairs, len(pairs)))


def best_first(pairs: Iterable[tuple[str, float]], limit: int) -> list[tuple[str, float]]:
    """The `limit` highest-scored items, ties by the higher id: Redis's ZREVRANGE order, so a
    list read from a sorted set and one counted in process agree to the last place. A heap, not
    a sort, when the limit is short of the list (ids are unique, so the order is the same)."""
    return heapq.nlargest(limit, pairs, key=lambda pair: (pair[1], pair[0]))


def merge_epochs(
    current: Iterable[tuple[str, float]], previous: Iterable[tuple[str, float]], limit: int
) -> list[tuple[str, float]]:
    """A decayed count read from its current epoch and the one before (which weighs
    `PREVIOUS_EPOCH_WEIGHT`, `core.rules.trending_epoch`): the `limit` best."""
    total: dict[str, float] = {}
    for item, score in current:
        total[item] = total.get(item, 0.0) + score
    for item, score in previous:
        total[item] = total.get(item, 0.0) + PREVIOUS_EPOCH_WEIGHT * score
    return best_first(total.items(), limit)


def follow(
    neighbour_lists: Sequence[Sequence[tuple[str, float]]], limit: int
) -> list[tuple[str, float]]:
    """Item-to-item scores from the user's newest items (newest first): each item's list of
    (next item, score) weighted by `RECENT_WEIGHTS`, summed; the `limit` best."""
    total: dict[str, float] = {}
    for weight, found in zip(RECENT_WEIGHTS, neighbour_lists, strict=False):
        for item, score in found:
            total[item] = total.get(item, 0.0) + weight * score
    return best_first(total.items(), limit)


def recent_items(history: Iterable[tuple[str, str]], limit: int = RECENT_ITEMS) -> list[str]:
    """The user's newest distinct items of interest, newest first, from their history's
    (item id, event type) pairs newest first: what item-to-item sources follow (the first
    `len(RECENT_WEIGHTS)`) and the similarity features compare with."""
    found: list[str] = []
    for item, event_type in history:
        if counts_as_interest(event_type) and item not in found:
            found.append(item)
            if len(found) == limit:
                break
    return found


@dataclass(frozen=True)
class UserSignals:
    """What the features know of the user beyond the candidates."""

    unit_vector: np.ndarray | None  # the user's vector at unit length, or None (cold)
    # Unit vectors of the user's newest items of interest the model knows (`recent_items`),
    # newest first: (r x dim), r may be 0.
    recent_units: np.ndarray
    newest_is_known: bool  # whether the first row is the newest item of interest itself
    history_length: int


def user_signals(
    vector: np.ndarray | None,
    recent: Sequence[str],
    row_of_item: Mapping[str, int],
    unit_items: np.ndarray,
    history_length: int,
) -> UserSignals:
    """The user's side of the features from their vector, newest items of interest
    (`recent_items`) and history length; `unit_items` holds the model's items at unit length."""
    rows = [row_of_item[item] for item in recent if item in row_of_item]
    return UserSignals(
        unit_vector=None if vector is None else normalize(vector),
        recent_units=unit_items[rows],
        newest_is_known=bool(recent) and recent[0] in row_of_item,
        history_length=history_length,
    )


def neighbour_pairs(listed: tuple[list[str], list[float]] | None) -> list[tuple[str, float]]:
    """One item's published neighbours (`core.ranking_store.Neighbours` value) as pairs."""
    return [] if listed is None else list(zip(*listed, strict=True))


def feature_matrix(
    pool: Pool, item_units: np.ndarray, popularity: np.ndarray, user: UserSignals
) -> np.ndarray:
    """(candidates x FEATURES) float32. `item_units` and `popularity` are the pool's items' unit
    vectors (zero rows for items the model lacks) and training-data counts, in pool order."""
    out = np.zeros((len(pool), len(FEATURES)), dtype=np.float32)
    out[:, 0 : 2 * len(SOURCES) : 2] = pool.scores
    out[:, 1 : 2 * len(SOURCES) : 2] = pool.ranks
    out[:, _COLUMN["item_popularity"]] = np.log1p(popularity)
    out[:, _COLUMN["user_history"]] = user.history_length
    if not len(pool):
        return out
    if user.unit_vector is not None:
        out[:, _COLUMN["user_similarity"]] = item_units @ user.unit_vector
    recent = user.recent_units
    if len(recent):
        similarity = item_units @ recent.T  # (candidates x recent items)
        if user.newest_is_known:
            out[:, _COLUMN["last_item_similarity"]] = similarity[:, 0]
        mean = recent.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm > 0:
            out[:, _COLUMN["recent_mean_similarity"]] = item_units @ (mean / norm)
        out[:, _COLUMN["recent_max_similarity"]] = similarity.max(axis=1)
    return out


class RankerMismatchError(ValueError):
    """A ranker learned on another feature list than this code assembles."""


class Ranker:
    """A LightGBM ranking model over `FEATURES`, from the library's own model text."""

    def __init__(self, model_text: str, feature_version: int) -> None:
        import lightgbm

        if feature_version != FEATURE_VERSION:
            raise RankerMismatchError(
                f"the ranker was trained on feature list v{feature_version}; this code builds "
                f"v{FEATURE_VERSION}: retrain it with `recsys train --ranker`"
            )
        self.booster: lightgbm.Booster = lightgbm.Booster(model_str=model_text)
        names = tuple(self.booster.feature_name())
        if names != FEATURES:
            raise RankerMismatchError(f"the ranker's features {names} are not {FEATURES}")
        self.model_text = model_text

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, num_threads=1))

    def strongest(self, features: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """Per row, the features that raised its score most (SHAP contributions, LightGBM's
        `pred_contrib`), strongest first: what an explanation names."""
        contributions = np.asarray(
            self.booster.predict(features, pred_contrib=True, num_threads=1)
        )[:, : len(FEATURES)]
        found = []
        for row in contributions:
            best = np.argsort(-row, kind="stable")[:top]
            found.append([(FEATURES[j], round(float(row[j]), 4)) for j in best if row[j] > 0])
        return found


def ranked_order(scores: np.ndarray) -> np.ndarray:
    """Candidate positions by descending score; ties keep source order."""
    order: np.ndarray = np.argsort(-scores, kind="stable")
    return order
