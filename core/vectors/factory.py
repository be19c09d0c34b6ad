"""Choose the vector index backend from settings: a server URL, or the embedded engine."""

from __future__ import annotations

from core.settings import Settings
from core.vectors.base import VectorIndex


def open_vector_index(settings: Settings) -> VectorIndex:
    if settings.qdrant_url:
        from qdrant_client import AsyncQdrantClient

        from core.vectors.server import ServerVectorIndex

        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerVectorIndex(AsyncQdrantClient(url=settings.qdrant_url, api_key=api_key))
    from core.vectors.edge import EdgeVectorIndex

    return EdgeVectorIndex(settings.qdrant_shard_dir)
