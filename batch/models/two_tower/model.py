"""`TwoTowerRecommender`: the batch-side two-tower model behind the Recommender interface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from batch.models.base import EmbeddingRecommender, FitProgress, TrainData
from batch.models.two_tower.features import ItemFeatureEncoder, ItemInputs, UserFeatureEncoder
from batch.models.two_tower.network import ItemTower, UserTower, pooling_matrix
from batch.models.two_tower.training import (
    CatalogInputs,
    Sequences,
    TwoTowerConfig,
    recency_weights,
    train,
)

FORMAT_VERSION = 1


class TwoTowerRecommender(EmbeddingRecommender):
    """Two-tower retrieval model: a content-aware item tower and a history-based user tower.

    Parameters
    ----------
    dim : int
        Size of the item and user vectors (both L2-normalised, so scores are cosines).
    epochs, batch_size, lr, weight_decay : training schedule of Adam.
    temperature : float
        Softmax temperature applied to the cosine scores during training.
    logq_correction : float
        Weight of the logQ popularity correction (1 = full correction, 0 = none).
    id_dropout : float
        Probability that an item's id embedding is replaced by the shared unknown-id
        embedding during training, so that content alone learns to place an item.
    history_len : int
        How many of a user's most recent items the user tower pools.
    recency_decay : float
        Weight of an item in the pool is ``recency_decay ** age`` (1 = plain mean).
    hash_buckets : int
        Hash buckets for title tokens (crc32, stable across processes).
    seed : int
        Seeds initialisation, shuffling and id-dropout; a fit is deterministic given it.
    """

    name = "two-tower"

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 10,
        batch_size: int = 1024,
        lr: float = 5e-3,
        weight_decay: float = 1e-6,
        temperature: float = 0.1,
        logq_correction: float = 1.0,
        id_dropout: float = 0.2,
        history_len: int = 50,
        recency_decay: float = 0.8,
        hash_buckets: int = 2048,
        seed: int = 0,
    ) -> None:
        self.config = TwoTowerConfig(
            dim=dim,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            temperature=temperature,
            logq_correction=logq_correction,
            id_dropout=id_dropout,
            history_len=history_len,
            recency_decay=recency_decay,
            hash_buckets=hash_buckets,
            seed=seed,
        )
        self.losses: list[float] = []
        self._fitted = False

    def params(self) -> dict[str, Any]:
        """Hyperparameters, for reports."""
        return asdict(self.config)

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, data: TrainData, progress: FitProgress | None = None) -> Self:
        """Train both towers on `data` and compute the served user and item vectors.

        Parameters
        ----------
        data : TrainData
            Fit data; `interactions` must be chronological (as `build_train_data` makes it).

        Returns
        -------
        TwoTowerRecommender
            self, fitted.
        """
        config = self.config
        interactions = data.interactions
        sequences = Sequences.from_interactions(
            interactions["user_idx"].to_numpy(), interactions["item_idx"].to_numpy(), data.n_users
        )
        self._items = ItemFeatureEncoder.fit(data.item_features, config.hash_buckets)
        self._users = UserFeatureEncoder.fit(data.user_features)
        self.item_ids = np.asarray(data.items.ids, dtype=str)
        self.user_ids = np.asarray(data.users.ids, dtype=str)
        # Only items seen in training own a learnt id row; the rest use the unknown row.
        seen = np.bincount(sequences.items, minlength=data.n_items) > 0
        with _seeded_and_deterministic(config.seed):
            self._build(data.n_items, self._users.sizes)
            id_rows = np.where(seen, np.arange(data.n_items), self._item_tower.unknown_id)
            self._catalog = _catalog_inputs(id_rows, self._items.encode(data.item_features))
            user_codes = torch.as_tensor(self._users.encode(data.user_features, data.n_users))
            self.losses = train(
                self._item_tower,
                self._user_tower,
                self._catalog,
                sequences,
                user_codes,
                config,
                progress,
            )
        self._fitted = True
        self._item_vectors = self._embed_catalog()
        history, valid = sequences.windows(
            sequences.ends, np.arange(data.n_users), config.history_len
        )
        self._user_vectors = self._embed_users(history, valid, user_codes)
        return self

    def _build(self, n_items: int, user_feature_sizes: list[int]) -> None:
        dim = self.config.dim
        self._item_tower = ItemTower(
            n_items,
            self._items.n_genres,
            self._items.n_years,
            self._items.hash_buckets + 1,
            dim,
        )
        self._user_tower = UserTower(user_feature_sizes, dim)
        self._item_tower.eval()
        self._user_tower.eval()

    # -- vectors -----------------------------------------------------------------------------

    def user_vectors(self) -> np.ndarray:
        """User vectors (n_users x dim, float32): the user tower on each user's fit history."""
        self._check_fitted()
        return self._user_vectors

    def item_vectors(self) -> np.ndarray:
        """Item vectors (n_items x dim, float32) for every catalog item.

        Items without interactions in the fit data get their content-only vector.
        """
        self._check_fitted()
        return self._item_vectors

    def embed_items(self, item_features: pd.DataFrame) -> np.ndarray:
        """Vectors of items described by metadata, e.g. items added after the fit.

        Parameters
        ----------
        item_features : pd.DataFrame
            Columns item_id, title, genres, year (as `batch.data.ITEM_COLUMNS`). An id the
            model learnt uses its embedding; any other id takes the content-only path.

        Returns
        -------
        np.ndarray
            (len(item_features) x dim) float32.
        """
        self._check_fitted()
        known = {item_id: row for row, item_id in enumerate(self.item_ids)}
        catalog_ids = self._catalog.ids.numpy()
        ids = np.array(
            [
                catalog_ids[known[str(i)]] if str(i) in known else self._item_tower.unknown_id
                for i in item_features["item_id"]
            ],
            dtype=np.int64,
        )
        inputs = self._items.encode(item_features.reset_index(drop=True))
        frame_catalog = _catalog_inputs(ids, inputs)
        with torch.no_grad():
            vectors = frame_catalog.embed(self._item_tower, torch.arange(len(ids)))
        return vectors.numpy().astype(np.float32)

    def embed_history(
        self, item_idx: np.ndarray, user_features: dict[str, Any] | None = None
    ) -> np.ndarray:
        """An online user vector from a list of catalog item indices.

        Parameters
        ----------
        item_idx : np.ndarray
            Item indices in chronological order (oldest first); only the last `history_len`
            count. Negative indices (items unknown to the model) are ignored.
        user_features : dict, optional
            User feature values by column name (e.g. age, gender, occupation).

        Returns
        -------
        np.ndarray
            (dim,) float32, the same as `user_vectors()` for a fit user with this history.
        """
        self._check_fitted()
        items = np.asarray(item_idx, dtype=np.int64)
        items = items[items >= 0][-self.config.history_len :]
        length = self.config.history_len
        history = np.zeros((1, length), dtype=np.int64)
        valid = np.zeros((1, length), dtype=bool)
        if len(items):
            history[0, -len(items) :] = items
            valid[0, -len(items) :] = True
        codes = torch.as_tensor(self._users.encode_one(user_features))[None, :]
        vector: np.ndarray = self._embed_users(history, valid, codes)[0]
        return vector

    def _embed_catalog(self) -> np.ndarray:
        with torch.no_grad():
            vectors = self._catalog.embed(self._item_tower, torch.arange(len(self._catalog.ids)))
        return vectors.numpy().astype(np.float32)

    def _embed_users(
        self, history: np.ndarray, valid: np.ndarray, user_codes: torch.Tensor
    ) -> np.ndarray:
        # Served user vectors pool the same item vectors that are served (eval mode, no
        # id-dropout), so the online path and `user_vectors()` agree exactly.
        item_vectors = torch.as_tensor(self._item_vectors)
        weights = torch.as_tensor(recency_weights(valid, self.config.recency_decay))
        pooling = pooling_matrix(torch.as_tensor(history), weights, len(item_vectors))
        with torch.no_grad():
            vectors: torch.Tensor = self._user_tower(pooling, item_vectors, user_codes)
        return vectors.numpy().astype(np.float32)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("TwoTowerRecommender is not fitted: call fit() or load() first")

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the model to `path` as .npz of plain arrays (no pickle).

        Parameters
        ----------
        path : Path
            Target file; written as given (no suffix is added).
        """
        self._check_fitted()
        meta = {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "item_features": self._items.to_json(),
            "user_features": self._users.to_json(),
        }
        state = {f"item_tower.{k}": v.numpy() for k, v in self._item_tower.state_dict().items()} | {
            f"user_tower.{k}": v.numpy() for k, v in self._user_tower.state_dict().items()
        }
        with Path(path).open("wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                item_ids=self.item_ids,
                user_ids=self.user_ids,
                catalog_ids=self._catalog.ids.numpy(),
                catalog_genres=self._catalog.genres.numpy(),
                catalog_year=self._catalog.year.numpy(),
                catalog_title=self._catalog.title.numpy(),
                user_vectors=self._user_vectors,
                item_vectors=self._item_vectors,
                **state,
            )

    @classmethod
    def load(cls, path: Path) -> TwoTowerRecommender:
        """Read a model written by `save`.

        Parameters
        ----------
        path : Path
            The .npz file.

        Returns
        -------
        TwoTowerRecommender
            A fitted model whose vectors equal the saved model's.
        """
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays["meta"]))
        if meta["format_version"] != FORMAT_VERSION:
            raise ValueError(f"unsupported two-tower file version {meta['format_version']}")
        model = cls(**meta["config"])
        model._items = ItemFeatureEncoder.from_json(meta["item_features"])
        model._users = UserFeatureEncoder.from_json(meta["user_features"])
        model.item_ids = arrays["item_ids"]
        model.user_ids = arrays["user_ids"]
        model._build(len(model.item_ids), model._users.sizes)
        for prefix, tower in (
            ("item_tower.", model._item_tower),
            ("user_tower.", model._user_tower),
        ):
            tower.load_state_dict(
                {
                    k[len(prefix) :]: torch.as_tensor(v)
                    for k, v in arrays.items()
                    if k.startswith(prefix)
                }
            )
        inputs = ItemInputs(
            arrays["catalog_genres"], arrays["catalog_year"], arrays["catalog_title"]
        )
        model._catalog = _catalog_inputs(arrays["catalog_ids"], inputs)
        model._item_vectors = arrays["item_vectors"]
        model._user_vectors = arrays["user_vectors"]
        model._fitted = True
        return model


@contextmanager
def _seeded_and_deterministic(seed: int) -> Iterator[None]:
    """Seed torch and force deterministic kernels, restoring the caller's state after.

    Multi-threaded CPU backward passes of indexing ops accumulate in a varying order
    otherwise, so two fits with the same seed would differ in the last bits.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


def _catalog_inputs(id_rows: np.ndarray, inputs: ItemInputs) -> CatalogInputs:
    # torch.tensor copies: the arrays may be read-only views (pandas, np.load).
    return CatalogInputs(
        ids=torch.tensor(np.asarray(id_rows, dtype=np.int64)),
        genres=torch.tensor(inputs.genres),
        year=torch.tensor(inputs.year),
        title=torch.tensor(inputs.title),
    )
