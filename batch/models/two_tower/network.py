"""The two towers as torch modules.

Both towers end in an L2 normalisation, so a score is a cosine similarity in [-1, 1]:
popularity cannot leak in through vector norms (logQ correction removes it from training on
purpose), a content-only vector of a cold item is on the same scale as a warm item's, and the
vectors suit a cosine/dot-product ANN index unchanged. Training divides scores by a temperature
to sharpen the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from batch.models.two_tower.features import PAD


class ItemTower(nn.Module):
    """id embedding + genres + year bucket + hashed title tokens -> MLP -> unit vector.

    Row `unknown_id` of the id table is shared by every item whose id the model has not
    learnt (catalog items without interactions, brand-new items); id-dropout trains it.
    """

    def __init__(
        self, n_ids: int, n_genres: int, n_years: int, n_title_buckets: int, dim: int
    ) -> None:
        super().__init__()
        self.unknown_id = n_ids
        self.ids = nn.Embedding(n_ids + 1, dim)
        self.genres = nn.EmbeddingBag(n_genres, dim, mode="mean", padding_idx=PAD)
        self.year = nn.Embedding(n_years, dim, padding_idx=PAD)
        self.title = nn.EmbeddingBag(n_title_buckets, dim, mode="mean", padding_idx=PAD)
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        for table in (self.ids, self.genres, self.year, self.title):
            nn.init.normal_(table.weight, std=0.1)

    def forward(
        self, ids: torch.Tensor, genres: torch.Tensor, year: torch.Tensor, title: torch.Tensor
    ) -> torch.Tensor:
        parts = [self.ids(ids), self.genres(genres), self.year(year), self.title(title)]
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class UserTower(nn.Module):
    """Weighted mean of the history's item vectors + user feature embeddings -> unit vector.

    The history is pooled from item-tower outputs, so an online user vector can be built from
    any items the item tower can embed, brand-new ones included. The MLP is residual: a user
    starts out as the mean of their items and learns corrections from the features.
    """

    def __init__(self, feature_sizes: list[int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.features = nn.ModuleList(
            nn.Embedding(size, dim, padding_idx=PAD) for size in feature_sizes
        )
        self.mlp = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(
        self, pooling: torch.Tensor, item_vectors: torch.Tensor, user_codes: torch.Tensor
    ) -> torch.Tensor:
        """pooling: sparse (B, n) history weights over the rows of item_vectors (n, dim)
        (see `pooling_matrix`); user_codes (B, n_features)."""
        # A sparse product instead of gathering (B, L, dim) histories: far less memory
        # traffic forwards and backwards.
        pooled = torch.sparse.mm(pooling, item_vectors)
        profile = torch.zeros_like(pooled)
        for j, table in enumerate(self.features):
            profile = profile + table(user_codes[:, j])
        return F.normalize(pooled + self.mlp(torch.cat([pooled, profile], dim=1)), dim=1)


def pooling_matrix(rows: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """Sparse (B, n) matrix whose row b averages item rows `rows[b]` with `weights[b]`.

    rows, weights: (B, L); weight 0 marks padding. Rows of users without history are empty,
    so their pooled history is the zero vector.
    """
    total = weights.sum(dim=1, keepdim=True).clamp_min(1e-8)
    normalised = (weights / total).flatten()
    batch = torch.arange(rows.shape[0]).repeat_interleave(rows.shape[1])
    keep = normalised > 0
    indices = torch.stack([batch[keep], rows.flatten()[keep]])
    matrix = torch.sparse_coo_tensor(
        indices, normalised[keep], (rows.shape[0], n), check_invariants=True
    )
    return matrix.coalesce()
