"""User state as format 1 wrote it (a hash of fields per user, before the packed format of
`core.user_state`), for the tests of reading and migrating old state. Frozen: it is what older
workers left behind, so it is spelled out here rather than produced by today's code."""

from __future__ import annotations

import numpy as np
import orjson
from redis.typing import EncodableT, FieldT

from core.user_state import HistoryEntry

_CODES = {"view": "v", "click": "c", "purchase": "p"}


def format1_fields(
    history: list[HistoryEntry],
    *,
    change: int = 1,
    vector: np.ndarray | None = None,
    model_version: str | None = None,
    offsets: dict[str, int] | None = None,
) -> dict[FieldT, EncodableT]:
    """A format-1 hash: `history` newest first; events = its length."""
    meta = {
        "mv": model_version,
        "n": len(history),
        "ts": max((e.ts_ms for e in history), default=0),
        "upd": 3_000,
        "g": {"Comedy": 1.5},
        "w": {"5m": [600, {"view": len(history)}]},
    }
    fields: dict[FieldT, EncodableT] = {
        b"c": str(change).encode(),
        b"s": orjson.dumps(meta),
        b"h": "\n".join(f"{e.ts_ms}|{_CODES[e.event_type]}|{e.item_id}" for e in history).encode(),
        b"e": b"",
    }
    if vector is not None:
        fields[b"v"] = np.asarray(vector, dtype=np.float32).tobytes()
    if offsets is not None:
        fields[b"o"] = orjson.dumps(offsets)
    return fields
