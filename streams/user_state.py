"""A user's online state as stored in `recsys:user:{u}:state` (a Redis hash) and its history."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.model_registry import as_bytes, vector_from_bytes, vector_to_bytes
from streams.update_rules import WINDOWS, WindowCounts


@dataclass
class UserState:
    vector: np.ndarray | None = None
    model_version: str | None = None
    events: int = 0
    last_event_ms: int = 0
    windows: dict[str, WindowCounts | None] = field(default_factory=dict)
    genres: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> UserState:
        fields = {as_bytes(k).decode(): as_bytes(v) for k, v in raw.items()}
        state = cls()
        if b := fields.get("v"):
            state.vector = vector_from_bytes(b).copy()
        if mv := fields.get("mv"):
            state.model_version = mv.decode()
        state.events = int(fields.get("n", b"0"))
        state.last_event_ms = int(fields.get("ts", b"0"))
        for name in WINDOWS:
            for slot in (name, f"{name}_prev"):
                raw_window = fields.get(f"w{slot}")
                state.windows[slot] = (
                    WindowCounts.decode(raw_window.decode()) if raw_window else None
                )
        if g := fields.get("g"):
            state.genres = json.loads(g)
        return state

    def to_hash(self, updated_ms: int) -> dict[str, bytes | str | int]:
        out: dict[str, bytes | str | int] = {
            "n": self.events,
            "ts": self.last_event_ms,
            "upd": updated_ms,
            "g": json.dumps({k: round(v, 4) for k, v in self.genres.items()}),
        }
        if self.vector is not None:
            out["v"] = vector_to_bytes(self.vector)
        if self.model_version is not None:
            out["mv"] = self.model_version
        for slot, window in self.windows.items():
            if window is not None:
                out[f"w{slot}"] = window.encode()
        return out


@dataclass(frozen=True)
class HistoryEntry:
    ts_ms: int
    event_type: str
    item_id: str

    def encode(self) -> str:
        # The item id goes last: ids may contain "|", and maxsplit keeps them whole.
        return f"{self.ts_ms}|{self.event_type}|{self.item_id}"

    @classmethod
    def decode(cls, raw: bytes | str) -> HistoryEntry:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ts_ms, event_type, item_id = text.split("|", 2)
        return cls(int(ts_ms), event_type, item_id)
