"""A user's online state: one Redis hash per user (`recsys:{u<t>}:<id>:state`, `core.keys`).

Everything the worker reads and writes for a user lives in that one hash (vector, counters,
windows, genre affinity, recent history and recent event ids), so a batch costs one read and
one write per user, and one key's overhead in memory.

Who writes: the stream worker alone (`streams.applier`, in the Lua scripts of
`streams.redis_scripts`), one batch at a time, exactly once per event. Who reads: the worker
(before each write) and the API (`api.catalog.user_context`, one round trip per request), which
never writes it. The format is shared here so that both sides decode the same fields the same way;
a change to a field's encoding changes both at once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from core.model_version import as_bytes, vector_from_bytes, vector_to_bytes
from core.rules import WindowCounts

EVENT_CODES = {"view": "v", "click": "c", "purchase": "p"}
EVENT_NAMES = {code: name for name, code in EVENT_CODES.items()}
# Dedup records: the first 8 bytes of the event id (random bits of a UUID4: among the few
# hundred ids kept per user a collision has odds around 1e-13) and the event time in seconds.
ID_PREFIX_BYTES = 8
ID_RECORD_BYTES = ID_PREFIX_BYTES + 4
MAX_GENRES = 8
_RECORD = struct.Struct(f">{ID_PREFIX_BYTES}sI")
_RECORD_TIME = struct.Struct(f">{ID_PREFIX_BYTES}xI")  # the time alone
# The fields of a state hash, in the order `UserState.from_fields` takes them: change counter,
# metadata (JSON), history, recent event ids, vector, applied offsets (JSON).
STATE_FIELDS = (b"c", b"s", b"h", b"e", b"v", b"o")


@dataclass(frozen=True)
class RecentIds:
    """Ids of a user's recently applied events, newest first, for duplicate detection.

    Kept as the stored bytes (`ID_RECORD_BYTES` per record): a batch reads and rewrites
    about a thousand users' records, and tuples per record cost more than the rest of the
    user's update."""

    raw: bytes = b""

    @staticmethod
    def prefix(event_id: bytes) -> bytes:
        return event_id[:ID_PREFIX_BYTES]

    def prefixes(self) -> set[bytes]:
        raw = self.raw
        return {raw[i : i + ID_PREFIX_BYTES] for i in range(0, len(raw), ID_RECORD_BYTES)}

    def records(self) -> list[tuple[bytes, int]]:
        """(id prefix, ts seconds) pairs, newest first."""
        return list(_RECORD.iter_unpack(self.raw))

    def push(self, fresh: list[tuple[bytes, int]], window_s: int, limit: int) -> RecentIds:
        """Add (event id, ts seconds) pairs, newest first; keep those within `window_s` of the
        newest event, at most `limit`."""
        # Event times are validated to be after 1970; clamping keeps a bad one from crashing.
        raw = b"".join(_RECORD.pack(self.prefix(i), max(0, ts)) for i, ts in fresh) + self.raw
        times = [ts for (ts,) in _RECORD_TIME.iter_unpack(raw)]
        oldest_kept = max(times) - window_s
        if len(times) <= limit and min(times) >= oldest_kept:
            return RecentIds(raw)  # the usual case: nothing to drop
        kept = [n * ID_RECORD_BYTES for n, ts in enumerate(times) if ts >= oldest_kept][:limit]
        return RecentIds(b"".join(raw[start : start + ID_RECORD_BYTES] for start in kept))


@dataclass(frozen=True)
class HistoryEntry:
    ts_ms: int
    event_type: str
    item_id: str

    def encode(self) -> str:
        # The item id goes last: ids may contain "|", and maxsplit keeps them whole. Ids are
        # printable, so they never contain the newline that separates entries.
        return f"{self.ts_ms}|{EVENT_CODES[self.event_type]}|{self.item_id}"

    @classmethod
    def decode(cls, raw: str) -> HistoryEntry:
        ts_ms, code, item_id = raw.split("|", 2)
        return cls(int(ts_ms), EVENT_NAMES[code], item_id)


def decode_history(raw: bytes | None) -> list[HistoryEntry]:
    return [HistoryEntry.decode(line) for line in raw.decode().split("\n")] if raw else []


def push_history(raw: bytes, entries: list[HistoryEntry], keep: int) -> bytes:
    """Prepend `entries` (newest first) and keep the newest `keep`, without decoding the rest:
    most batches never look at a user's older history."""
    lines = [e.encode().encode() for e in entries]
    if raw:
        lines += raw.split(b"\n", keep)[:keep]
    return b"\n".join(lines[:keep])


def events_applied(meta: bytes | None) -> int:
    """The event count in a state hash's `s` field (a cheap HGET instead of a whole read)."""
    return int(orjson.loads(meta).get("n", 0)) if meta else 0


@dataclass
class UserState:
    vector: np.ndarray | None = None
    model_version: str | None = None
    events: int = 0
    last_event_ms: int = 0
    updated_ms: int = 0
    windows: dict[str, WindowCounts | None] = field(default_factory=dict)
    genres: dict[str, float] = field(default_factory=dict)
    history_raw: bytes = b""  # newest first; see `history` and `push_history`
    recent_ids: RecentIds = field(default_factory=RecentIds)
    # The last offset applied to this user per topic partition (`core.keys.offset_slot`): an
    # event at or below it is a redelivery. Per user, so that exactly-once needs no key that
    # every batch writes, and a user whose events arrive on several partitions stays correct.
    offsets: dict[str, int] = field(default_factory=dict)
    change: bytes | None = None  # the hash's change counter as read (None: new user)

    @property
    def history(self) -> list[HistoryEntry]:
        """Recent events, newest first."""
        return decode_history(self.history_raw)

    @property
    def history_item_ids(self) -> set[str]:
        """The items of the recent events (what a request excludes as seen), without building
        an entry per event: the item id is each line's last field (see `HistoryEntry.encode`)."""
        raw = self.history_raw
        return {line.split("|", 2)[2] for line in raw.decode().split("\n")} if raw else set()

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> UserState:
        """From a whole hash, as HGETALL returns it."""
        fields = {as_bytes(k): as_bytes(v) for k, v in raw.items()}
        return cls.from_fields([fields.get(name) for name in STATE_FIELDS])

    @classmethod
    def from_fields(cls, values: Sequence[bytes | None]) -> UserState:
        """From the values of `STATE_FIELDS`, in that order (HMGET: None where absent)."""
        change, meta, history, recent, vector, offsets = values
        state = cls(change=change, history_raw=history or b"", recent_ids=RecentIds(recent or b""))
        if offsets:
            state.offsets = orjson.loads(offsets)
        if vector:
            state.vector = vector_from_bytes(vector).copy()
        if meta:
            info = orjson.loads(meta)
            state.model_version = info.get("mv")
            state.events = info.get("n", 0)
            state.last_event_ms = info.get("ts", 0)
            state.updated_ms = info.get("upd", 0)
            state.genres = info.get("g", {})
            state.windows = {
                slot: WindowCounts(*window) if window else None
                for slot, window in info.get("w", {}).items()
            }
        return state

    def to_hash(self, updated_ms: int) -> dict[bytes, bytes]:
        # Four fields, not one per attribute: a batch writes ~1000 users, and every extra
        # field is two more arguments to encode on the client for each of them.
        # The strongest genres are what profiles and explanations show; a long tail of faint
        # ones only costs memory in every user's hash.
        strongest: Iterable[tuple[str, float]] = self.genres.items()
        if len(self.genres) > MAX_GENRES:
            strongest = sorted(strongest, key=lambda pair: -pair[1])[:MAX_GENRES]
        meta = {
            "mv": self.model_version,
            "n": self.events,
            "ts": self.last_event_ms,
            "upd": updated_ms,
            "g": {genre: round(score, 2) for genre, score in strongest},
            "w": {slot: [w.start, w.counts] for slot, w in self.windows.items() if w},
        }
        out = {
            b"c": str(int(self.change or 0) + 1).encode(),
            b"s": orjson.dumps(meta),
            b"h": self.history_raw,
            b"e": self.recent_ids.raw,
            b"o": orjson.dumps(self.offsets),
        }
        if self.vector is not None:
            out[b"v"] = vector_to_bytes(self.vector)
        return out
