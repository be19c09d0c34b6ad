"""The Redis key layout, in one place. Every key starts with `recsys:`.

Model versions (written by `recsys train`, read by the worker and the API):
  recsys:model:active                      string  the active version id (the one switch)
  recsys:model:versions                    zset    version id -> publish time (epoch s)
  recsys:model:{v}:meta                    hash    model, dim, dataset, trained_until, ...
  recsys:model:{v}:item_vectors            hash    item_id -> float32 bytes (dim values)
  recsys:model:{v}:user_vectors            hash    user_id -> float32 bytes (batch vectors)
  recsys:model:{v}:items                   hash    item_id -> JSON {title, genres, year, popularity}
  recsys:model:{v}:popular                 zset    item_id -> interaction count
  recsys:model:{v}:popular:genre:{genre}   zset    item_id -> interaction count, per genre
  recsys:model:{v}:gram                    string  float32 bytes of Y^T Y (dim x dim), ALS fold-in

Per-user state (written by the stream worker; TTLs documented there) uses `recsys:user:{id}:*`;
item trending state uses `recsys:trending:*`.
"""

from __future__ import annotations

PREFIX = "recsys"
ACTIVE_MODEL = f"{PREFIX}:model:active"
MODEL_VERSIONS = f"{PREFIX}:model:versions"


def model_key(version: str, part: str) -> str:
    return f"{PREFIX}:model:{version}:{part}"


def model_meta(version: str) -> str:
    return model_key(version, "meta")


def item_vectors(version: str) -> str:
    return model_key(version, "item_vectors")


def user_vectors(version: str) -> str:
    return model_key(version, "user_vectors")


def item_payloads(version: str) -> str:
    return model_key(version, "items")


def popular(version: str) -> str:
    return model_key(version, "popular")


def popular_by_genre(version: str, genre: str) -> str:
    return model_key(version, f"popular:genre:{genre}")


def gram_matrix(version: str) -> str:
    return model_key(version, "gram")


def model_pattern(version: str) -> str:
    """Glob over every key of one version (for clean-up with SCAN)."""
    return f"{PREFIX}:model:{version}:*"
