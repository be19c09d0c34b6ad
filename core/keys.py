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

Per-user state (written by the stream worker; expires after RECSYS_STREAM_USER_TTL_DAYS idle),
all in one hash so that a batch costs one read and one write per user:
  recsys:user:{u}:state                    hash    v: the user vector (float32 bytes);
                                                   s: JSON {mv: its model version, n: events
                                                   applied, ts: last event (epoch ms), upd: last
                                                   write (epoch ms), g: genre affinity, w: window
                                                   counts {"5m": [start, {type: n}], "5m_prev",
                                                   "1h", "1h_prev"}};
                                                   h: recent history, newest first, lines
                                                   "ts_ms|v/c/p|item_id";
                                                   e: recent event ids for dedup, 12 bytes each
                                                   (8-byte id prefix, 4-byte ts seconds)

Items (stream worker):
  recsys:items:{window}:{start}            hash    "{type}:{item_id}" -> count; TTL two windows
  recsys:trending:{epoch}                  zset    item_id -> decayed weighted count (see
                                                   core.rules.trending_increment)
  recsys:stream:applied                    hash    "{topic}:{partition}" -> last applied offset
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


def user_state(user_id: str) -> str:
    return f"{PREFIX}:user:{user_id}:state"


def item_window(window: str, start: int) -> str:
    return f"{PREFIX}:items:{window}:{start}"


def trending(epoch: int) -> str:
    return f"{PREFIX}:trending:{epoch}"


STREAM_APPLIED = f"{PREFIX}:stream:applied"
