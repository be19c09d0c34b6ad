"""Item vector index: one small interface, two Qdrant backends (embedded engine and server)."""

from core.vectors.base import (
    ItemFilter,
    ItemPoint,
    PointScores,
    SearchHit,
    VectorIndex,
    point_id,
)
from core.vectors.factory import open_vector_index

__all__ = [
    "ItemFilter",
    "ItemPoint",
    "PointScores",
    "SearchHit",
    "VectorIndex",
    "open_vector_index",
    "point_id",
]
