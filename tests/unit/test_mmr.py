from __future__ import annotations

import numpy as np
import pytest

from api.mmr import intra_list_similarity, mmr, unit_rows

pytestmark = pytest.mark.unit


def clustered_candidates(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight taste clusters; the most relevant items all come from the first one."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8) * 5
    vectors = np.concatenate([c + 0.1 * rng.standard_normal((20, 8)) for c in centres])
    relevance = np.concatenate(
        [np.linspace(10, 8, 20), np.linspace(7, 5, 20), np.linspace(4, 2, 20)]
    )
    return relevance, unit_rows(vectors.astype(np.float32))


def test_lambda_one_keeps_relevance_order() -> None:
    rng = np.random.default_rng(1)
    relevance = rng.standard_normal(50)
    vectors = unit_rows(rng.standard_normal((50, 8)))
    assert mmr(relevance, vectors, 10, 1.0) == list(np.argsort(-relevance)[:10])


def test_lower_lambda_lowers_intra_list_similarity() -> None:
    relevance, vectors = clustered_candidates()
    similarities = [
        intra_list_similarity(vectors[mmr(relevance, vectors, 10, lam)]) for lam in (1.0, 0.7, 0.3)
    ]
    assert similarities[0] > similarities[1] > similarities[2]


def test_lower_lambda_still_starts_with_the_most_relevant() -> None:
    relevance, vectors = clustered_candidates()
    assert mmr(relevance, vectors, 5, 0.2)[0] == int(np.argmax(relevance))


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("k", [1, 7, 60, 100])
def test_no_duplicates_and_k_respected(lam: float, k: int) -> None:
    relevance, vectors = clustered_candidates(seed=k)
    picked = mmr(relevance, vectors, k, lam)
    assert len(picked) == min(k, len(relevance))
    assert len(set(picked)) == len(picked)
    assert all(0 <= i < len(relevance) for i in picked)


def test_equal_relevance_and_zero_vectors_are_handled() -> None:
    picked = mmr(np.ones(4), np.zeros((4, 3)), 3, 0.5)
    assert len(set(picked)) == 3


def test_no_candidates_or_k_zero_gives_nothing() -> None:
    assert mmr(np.array([]), np.zeros((0, 3)), 5, 0.5) == []
    assert mmr(np.ones(3), np.eye(3), 0, 0.5) == []


def reference_mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lambda_: float) -> list[int]:
    """MMR as the textbook loop: argmax of lambda * scaled relevance - (1 - lambda) * the
    highest cosine similarity to an item already picked."""
    spread = relevance.max() - relevance.min()
    scaled = (relevance - relevance.min()) / spread if spread > 0 else np.ones(len(relevance))
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30)
    picked: list[int] = []
    while len(picked) < min(k, len(relevance)):
        best, best_gain = -1, -np.inf
        for j in range(len(relevance)):
            if j in picked:
                continue
            redundancy = max((float(unit[p] @ unit[j]) for p in picked), default=0.0)
            gain = lambda_ * scaled[j] - (1 - lambda_) * redundancy
            if gain > best_gain:
                best, best_gain = j, gain
        picked.append(best)
    return picked


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.8])
@pytest.mark.parametrize("seed", range(5))
def test_picks_what_the_textbook_loop_picks(lam: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    relevance = np.sort(rng.random(100))[::-1].astype(np.float64)
    vectors = rng.standard_normal((100, 16))
    picked = mmr(relevance, unit_rows(vectors), 10, lam)
    assert picked == reference_mmr(relevance, vectors, 10, lam)


def test_unit_rows_have_length_one_and_keep_zero_rows() -> None:
    vectors = np.array([[3.0, 4.0], [0.0, 0.0], [-2.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(unit_rows(vectors), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])
