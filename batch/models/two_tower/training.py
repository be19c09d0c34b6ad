"""Next-item training of the two towers with in-batch negatives and logQ correction.

Every interaction is one example: target = the item, history = the user's `history_len` items
before it. The other targets of the batch are the negatives. In-batch negatives are drawn in
proportion to popularity, which would teach the model popularity instead of taste, so the
softmax subtracts log q(item) (its share of the training targets) from each logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from batch.models.base import FitProgress
from batch.models.two_tower.network import ItemTower, UserTower, pooling_matrix


@dataclass
class TwoTowerConfig:
    """Hyperparameters (see `TwoTowerRecommender` for their meaning).

    Defaults were chosen on ml-100k leave-last-one-out, fitting on train and scoring the
    validation item (P2 tuning): recency weighting of the history matters most there.
    """

    dim: int = 64
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 5e-3
    weight_decay: float = 1e-6
    temperature: float = 0.1
    logq_correction: float = 1.0
    id_dropout: float = 0.2
    history_len: int = 50
    recency_decay: float = 0.8
    hash_buckets: int = 2048
    seed: int = 0


@dataclass
class Sequences:
    """Every user's items in chronological order, concatenated user after user."""

    items: np.ndarray  # (n_rows,) item index at each position
    users: np.ndarray  # (n_rows,) user index at each position
    starts: np.ndarray  # (n_users,) first position of each user
    ends: np.ndarray  # (n_users,) one past the last position of each user

    @classmethod
    def from_interactions(
        cls, user_idx: np.ndarray, item_idx: np.ndarray, n_users: int
    ) -> Sequences:
        order = np.argsort(user_idx, kind="stable")  # keeps the chronological order per user
        users = user_idx[order].astype(np.int64)
        counts = np.bincount(users, minlength=n_users)
        ends = np.cumsum(counts)
        return cls(item_idx[order].astype(np.int64), users, ends - counts, ends)

    def windows(
        self, ends: np.ndarray, users: np.ndarray, length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `length` positions before each end (oldest first) and which of them are real."""
        positions = ends[:, None] - length + np.arange(length)[None, :]
        valid = positions >= self.starts[users][:, None]
        if not len(self.items):
            return np.zeros_like(positions), valid
        return self.items[np.where(valid, positions, 0)], valid


@dataclass
class CatalogInputs:
    """Item-tower inputs of every catalog item, as tensors, indexed by item index."""

    ids: torch.Tensor  # the id row each item uses (its own, or the unknown row)
    genres: torch.Tensor
    year: torch.Tensor
    title: torch.Tensor

    def embed(
        self, tower: ItemTower, items: torch.Tensor, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        ids = self.ids[items] if ids is None else ids
        vectors: torch.Tensor = tower(ids, self.genres[items], self.year[items], self.title[items])
        return vectors


def recency_weights(valid: np.ndarray, decay: float) -> np.ndarray:
    """decay**age for the real positions of each window (age 0 = the most recent column)."""
    length = valid.shape[1]
    ages = np.arange(length - 1, -1, -1, dtype=np.float32)
    return np.where(valid, decay**ages, 0.0).astype(np.float32)


def train(
    item_tower: ItemTower,
    user_tower: UserTower,
    catalog: CatalogInputs,
    sequences: Sequences,
    user_codes: torch.Tensor,
    config: TwoTowerConfig,
    progress: FitProgress | None = None,
) -> list[float]:
    """Fit both towers in place; returns the mean loss of each epoch (reported to `progress`
    as epochs done of `config.epochs`)."""
    generator = torch.Generator().manual_seed(config.seed)
    n_items = len(catalog.ids)
    counts = np.bincount(sequences.items, minlength=n_items).astype(np.float64)
    log_q = torch.as_tensor(
        np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)), dtype=torch.float32
    )
    parameters = [*item_tower.parameters(), *user_tower.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    item_tower.train()
    user_tower.train()
    losses: list[float] = []
    for epoch in range(config.epochs):
        order = torch.randperm(len(sequences.items), generator=generator).numpy()
        epoch_loss, steps = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            positions = order[start : start + config.batch_size]
            if len(positions) < 2:
                continue  # in-batch softmax needs at least one negative
            loss = _batch_loss(
                item_tower,
                user_tower,
                catalog,
                sequences,
                user_codes,
                log_q,
                positions,
                config,
                generator,
            )
            optimizer.zero_grad()
            torch.autograd.backward(loss)
            optimizer.step()
            epoch_loss += float(loss.detach())
            steps += 1
        losses.append(epoch_loss / max(steps, 1))
        if progress is not None:
            progress(epoch + 1, config.epochs)
    item_tower.eval()
    user_tower.eval()
    return losses


def _batch_loss(
    item_tower: ItemTower,
    user_tower: UserTower,
    catalog: CatalogInputs,
    sequences: Sequences,
    user_codes: torch.Tensor,
    log_q: torch.Tensor,
    positions: np.ndarray,
    config: TwoTowerConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    users = sequences.users[positions]
    history, valid = sequences.windows(positions, users, config.history_len)
    targets = sequences.items[positions]
    # Each distinct item goes through the item tower once per batch, history and targets alike.
    unique, inverse = np.unique(np.concatenate([targets, history.ravel()]), return_inverse=True)
    unique_t = torch.as_tensor(unique)
    ids = catalog.ids[unique_t]
    dropped = torch.rand(len(unique), generator=generator) < config.id_dropout
    ids = torch.where(dropped, torch.full_like(ids, item_tower.unknown_id), ids)
    vectors = catalog.embed(item_tower, unique_t, ids)
    target_vectors = vectors[torch.as_tensor(inverse[: len(targets)])]
    history_rows = torch.as_tensor(inverse[len(targets) :]).view(history.shape)
    weights = torch.as_tensor(recency_weights(valid, config.recency_decay))
    pooling = pooling_matrix(history_rows, weights, len(unique))
    user_vectors = user_tower(pooling, vectors, user_codes[torch.as_tensor(users)])

    targets_t = torch.as_tensor(targets)
    logits = user_vectors @ target_vectors.T / config.temperature
    logits = logits - config.logq_correction * log_q[targets_t][None, :]
    # Another row with the same target item is not a negative for this row.
    same_item = targets_t[:, None] == targets_t[None, :]
    same_item.fill_diagonal_(False)
    logits = logits.masked_fill(same_item, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(positions)))
