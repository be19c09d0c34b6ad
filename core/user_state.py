"""A user's online state: one Redis string per user (`recsys:{u<t>}:<id>:state`, `core.keys`).

Everything the worker reads and writes for a user lives in that one value (vector, counters,
windows, genre affinity, recent history, recent event ids and applied offsets), so a batch costs
one read and one write per user, and one key's overhead in memory.

Who writes: the stream worker alone (`streams.applier`, in the Lua scripts of
`streams.redis_scripts`), one batch at a time, exactly once per event. Who reads: the worker
(before each write) and the API (`api.catalog.user_context`, one round trip per request), which
never writes it. The format is shared here so that both sides decode it the same way.

Format 2, packed (`UserState.encode`):
  4 bytes   change counter (big-endian; the write script compares it with what was read)
  1 byte    format (2)
  msgpack   [the vector's model version (`version_tag`), events applied, last event ms,
             last write ms minus last event ms,
             {genre: affinity x 100}, [per `core.rules.WINDOW_SLOTS`: nil or
             [start, {type code: count}]],
             {"<topic code>:<partition>": last offset applied}, vector (float16 bytes or nil),
             recent event ids (`RecentIds`), history times and items (`History`),
             negative feedback (`Feedback`), impressions without a positive event (`Fatigue`),
             recent impressions of experiment answers and the arms counted (`Touches`, or nil)]
The last three were appended later: a value without them (written before) reads as empty.
Why packed instead of a hash of fields: a hash with any value over 64 bytes (the vector) is a
hashtable, which costs an allocation and an entry per field; one value with a float16 vector
(the online vector moves by EMA steps far larger than float16's 1e-3 relative error) and binary
history took a user with 10 events from 1,024 to about 500 bytes (`recsys bench stream`).

Format 1 (a hash of fields c, s, h, e, v, o: `LEGACY_FIELDS`) is still read, by the worker's
read script, the API and the admin commands, and is replaced by format 2 at the user's next
write; `recsys migrate-state` rewrites every user at once.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import orjson
from redis.exceptions import ResponseError

from core import keys
from core.attribution import Touches, item_tag
from core.clients import RedisClient
from core.model_version import as_bytes, vector_from_bytes
from core.rules import WINDOW_SLOTS, WindowCounts

FORMAT = 2
# Event types are stored as their position here: append new ones, never reorder.
EVENT_TYPES = ("view", "click", "purchase", "dislike", "hide")
EVENT_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
# Dedup records: the first 6 bytes of the event id (48 random bits of a UUID4) and the event
# time in seconds. A new event is taken for a duplicate if its prefix equals one of the user's
# recent ones: with the ~10 ids a user keeps within the hour, odds of 4e-14 an event (one event
# in 8 years at 100,000 events/s); at the 512 a burst may keep, 2e-12.
ID_PREFIX_BYTES = 6
ID_RECORD_BYTES = ID_PREFIX_BYTES + 4
MAX_GENRES = 8
_RECORD = struct.Struct(f">{ID_PREFIX_BYTES}sI")
_RECORD_TIME = struct.Struct(f">{ID_PREFIX_BYTES}xI")  # the time alone
_HEADER = struct.Struct(">IB")  # change counter, format
CHANGE_BYTES = 4
# A history record: the event time in ms (high 16 bits, low 32 bits) and the type's code.
_HISTORY_RECORD = struct.Struct(">HIB")
# Format 1's hash fields, in the order `UserState.from_legacy` takes them: change counter,
# metadata (JSON), history (text), recent event ids, vector (float32), applied offsets (JSON).
LEGACY_FIELDS = (b"c", b"s", b"h", b"e", b"v", b"o")
# What the fields appended to format 2 after its first release read as where a value lacks them.
APPENDED_DEFAULTS: tuple[Any, ...] = ([], b"", None)


def version_tag(version: str) -> int:
    """A model version id as a user's state records it (CRC-32: the few versions kept at a time
    never share one in practice; `core.model_version.listed_versions` turns it back)."""
    return zlib.crc32(version.encode())


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


@dataclass(frozen=True)
class History:
    """A user's recent events, newest first, as stored: `times` holds a `_HISTORY_RECORD` per
    event (time in ms, type code) and `items` the item ids joined by newlines (ids are printable,
    so they never contain one). Both are cut to the newest `keep` by slicing and one split, so a
    batch never decodes the older history it does not look at."""

    times: bytes = b""
    items: bytes = b""

    def __len__(self) -> int:
        return len(self.times) // _HISTORY_RECORD.size

    def entries(self) -> list[HistoryEntry]:
        if not self.times:
            return []
        return [
            HistoryEntry(high << 32 | low, EVENT_TYPES[code], item.decode())
            for (high, low, code), item in zip(
                _HISTORY_RECORD.iter_unpack(self.times), self.items.split(b"\n"), strict=True
            )
        ]

    def item_ids(self) -> set[str]:
        return set(self.items.decode().split("\n")) if self.times else set()

    def newest_of(self, event_types: Set[str]) -> str | None:
        """The item of the newest event of one of `event_types`, decoding only up to it (the
        worker asks this for every user of a batch; usually the newest event is one)."""
        for index, (_, _, code) in enumerate(_HISTORY_RECORD.iter_unpack(self.times)):
            if EVENT_TYPES[code] in event_types:
                return self.items.split(b"\n", index + 1)[index].decode()
        return None

    def push(self, entries: list[HistoryEntry], keep: int) -> History:
        """Prepend `entries` (newest first) and keep the newest `keep`."""
        if not entries:
            return self
        times = b"".join(
            _HISTORY_RECORD.pack(e.ts_ms >> 32, e.ts_ms & 0xFFFFFFFF, EVENT_CODE[e.event_type])
            for e in entries
        )
        items = [e.item_id.encode() for e in entries]
        if self.times:
            times += self.times
            items += self.items.split(b"\n", keep)[:keep]
        return History(times[: keep * _HISTORY_RECORD.size], b"\n".join(items[:keep]))

    @classmethod
    def from_legacy(cls, raw: bytes | None) -> History:
        """From the text of format 1 (lines "ts_ms|code|item_id", newest first)."""
        if not raw:
            return cls()
        legacy_names = {"v": "view", "c": "click", "p": "purchase"}
        entries = []
        for line in raw.decode().split("\n"):
            ts_ms, code, item_id = line.split("|", 2)
            entries.append(HistoryEntry(int(ts_ms), legacy_names[code], item_id))
        return cls().push(entries, len(entries))


@dataclass(frozen=True)
class FeedbackEntry:
    """One item the user gave negative feedback on, and when."""

    item_id: str
    ts_s: int
    event_type: str


@dataclass(frozen=True)
class Feedback:
    """A user's negative feedback, newest first, one entry per item: what answers leave out
    until `Settings.feedback_exclude_days` have passed since the event."""

    entries: tuple[FeedbackEntry, ...] = ()

    def push(self, fresh: Sequence[FeedbackEntry], keep_s: int, limit: int) -> Feedback:
        """Add `fresh` (newest first); keep each item's newest entry, those within `keep_s` of
        the newest one, at most `limit`."""
        if not fresh:
            return self
        merged = sorted((*fresh, *self.entries), key=lambda e: -e.ts_s)
        newest = merged[0].ts_s
        kept: dict[str, FeedbackEntry] = {}
        for entry in merged:
            if entry.item_id not in kept and entry.ts_s >= newest - keep_s:
                kept[entry.item_id] = entry
        return Feedback(tuple(kept.values())[:limit])

    def excluded(self, now_s: float, exclude_s: float) -> set[str]:
        """The items to leave out of an answer at `now_s`."""
        return {e.item_id for e in self.entries if e.ts_s > now_s - exclude_s}

    def packed(self) -> list[list[Any]]:
        return [[e.item_id, e.ts_s, EVENT_CODE[e.event_type]] for e in self.entries]

    @classmethod
    def unpacked(cls, raw: Sequence[Sequence[Any]]) -> Feedback:
        return cls(tuple(FeedbackEntry(i, ts, EVENT_TYPES[code]) for i, ts, code in raw))


# A fatigue record: the item's tag, when it was first shown in the current window (seconds), and
# how often it was shown since (capped at 255).
_FATIGUE_RECORD = struct.Struct(">IIB")
MAX_IMPRESSION_COUNT = 255


@dataclass(frozen=True)
class Fatigue:
    """Items recently shown to the user without a positive event since: per item, the start of
    its window and its impressions in it (`_FATIGUE_RECORD`, most recently shown first). The API
    demotes or leaves out items shown `Settings.fatigue_impressions` times or more."""

    raw: bytes = b""

    def counts(self) -> dict[int, tuple[int, int]]:
        """Item tag -> (window start s, impressions)."""
        return {tag: (start, n) for tag, start, n in _FATIGUE_RECORD.iter_unpack(self.raw)}

    def tired(self, now_s: float, window_s: float, threshold: int) -> set[int]:
        """Tags of the items shown `threshold` times or more within the window."""
        return {
            tag
            for tag, (start, n) in self.counts().items()
            if n >= threshold and start > now_s - window_s
        }

    def shown(self, item_ids: Sequence[str], ts_s: int, window_s: int, limit: int) -> Fatigue:
        """Count one impression of each of `item_ids` at `ts_s`; a record whose window has
        passed starts a new one; keep the `limit` most recently shown items."""
        counts = self.counts()
        fresh: dict[int, tuple[int, int]] = {}
        for item_id in item_ids:
            tag = item_tag(item_id)
            start, n = fresh.get(tag) or counts.pop(tag, (ts_s, 0))
            if start <= ts_s - window_s:
                start, n = ts_s, 0
            fresh[tag] = (start, min(n + 1, MAX_IMPRESSION_COUNT))
        records = [*fresh.items(), *counts.items()][:limit]
        return Fatigue(b"".join(_FATIGUE_RECORD.pack(t, s, n) for t, (s, n) in records))

    def engaged(self, item_ids: Iterable[str]) -> Fatigue:
        """Forget the items the user engaged with: a positive event ends their fatigue."""
        if not self.raw:
            return self
        gone = {item_tag(i) for i in item_ids}
        records = [r for r in _FATIGUE_RECORD.iter_unpack(self.raw) if r[0] not in gone]
        return Fatigue(b"".join(_FATIGUE_RECORD.pack(*r) for r in records))


def stored_vector(vector: np.ndarray) -> np.ndarray:
    """A user vector as the state keeps it (float16) and gives it back (float32): what the next
    update starts from, and what a replay of the worker's rules must start from too."""
    return vector.astype(np.float16).astype(np.float32)


def strongest_genres(genres: dict[str, float]) -> Iterable[tuple[str, float]]:
    """The genres a state's write keeps: the strongest are what profiles and explanations
    show; a long tail of faint ones only costs memory in every user's state."""
    if len(genres) > MAX_GENRES:
        return sorted(genres.items(), key=lambda pair: -pair[1])[:MAX_GENRES]
    return genres.items()


def stored_genres(genres: dict[str, float]) -> dict[str, float]:
    """Genre affinity as it reads back after a write (kept in hundredths)."""
    return {genre: round(score * 100) / 100 for genre, score in strongest_genres(genres)}


@dataclass
class UserState:
    vector: np.ndarray | None = None
    # Which model version's space the vector is in, as `version_tag` of its id (4 bytes, not
    # the ~24 of the id, in every user's state); `vector_is_of` compares.
    vector_version: int | None = None
    events: int = 0
    last_event_ms: int = 0
    updated_ms: int = 0
    windows: dict[str, WindowCounts | None] = field(default_factory=dict)
    genres: dict[str, float] = field(default_factory=dict)
    recent: History = field(default_factory=History)
    recent_ids: RecentIds = field(default_factory=RecentIds)
    # The last offset applied to this user per topic partition (`core.keys.offset_slot`): an
    # event at or below it is a redelivery. Per user, so that exactly-once needs no key that
    # every batch writes, and a user whose events arrive on several partitions stays correct.
    offsets: dict[str, int] = field(default_factory=dict)
    feedback: Feedback = field(default_factory=Feedback)
    fatigue: Fatigue = field(default_factory=Fatigue)
    touches: Touches = field(default_factory=Touches)
    # The change counter as read (None: a new user) and the token the write script compares
    # with what it finds: the counter's 4 bytes, or a format-1 hash's `c` field.
    change: int | None = None
    change_token: bytes = b""

    @property
    def history(self) -> list[HistoryEntry]:
        """Recent events, newest first."""
        return self.recent.entries()

    def vector_is_of(self, version: str | None) -> bool:
        """Whether the online vector lives in `version`'s space."""
        return (
            self.vector is not None
            and version is not None
            and self.vector_version == version_tag(version)
        )

    def set_vector(self, vector: np.ndarray | None, version: str) -> None:
        self.vector = vector
        self.vector_version = version_tag(version)

    @property
    def history_item_ids(self) -> set[str]:
        """The items of the recent events (what a request excludes as seen)."""
        return self.recent.item_ids()

    @classmethod
    def decode(cls, raw: Any) -> UserState:
        """From what a read returned: the packed value (format 2), the values of
        `LEGACY_FIELDS` (format 1, a list), or None (a new user)."""
        if raw is None:
            return cls()
        if isinstance(raw, list):
            return cls.from_legacy([as_bytes(v) if v is not None else None for v in raw])
        return cls.unpack(as_bytes(raw))

    @classmethod
    def unpack(cls, raw: bytes) -> UserState:
        change, version = _HEADER.unpack_from(raw)
        if version != FORMAT:
            raise ValueError(f"user state format {version} is unknown to this code ({FORMAT})")
        body: list[Any] = msgpack.unpackb(raw[_HEADER.size :], raw=False, strict_map_key=False)
        (tag, events, last_ms, written, genres, windows, offsets, vector, ids, times, items) = body[
            :11
        ]
        # Fields appended later, absent from values written before them.
        feedback, fatigue, touches = (*body[11:], *APPENDED_DEFAULTS[len(body) - 11 :])
        return cls(
            vector=stored_vector(np.frombuffer(vector, dtype=np.float16)) if vector else None,
            vector_version=tag,
            events=events,
            last_event_ms=last_ms,
            updated_ms=last_ms + written,
            windows={
                slot: WindowCounts(window[0], {EVENT_TYPES[c]: n for c, n in window[1].items()})
                for slot, window in zip(WINDOW_SLOTS, windows, strict=False)
                if window
            },
            genres={genre: centi / 100 for genre, centi in genres.items()},
            recent=History(times, items),
            recent_ids=RecentIds(ids),
            offsets=offsets,
            feedback=Feedback.unpacked(feedback),
            fatigue=Fatigue(fatigue),
            touches=Touches.unpacked(touches),
            change=change,
            change_token=raw[:CHANGE_BYTES],
        )

    def encode(self, updated_ms: int) -> bytes:
        """The packed value of the next write: the change counter moves on by one."""
        vector = None if self.vector is None else self.vector.astype(np.float16).tobytes()
        body = [
            self.vector_version,
            self.events,
            self.last_event_ms,
            updated_ms - self.last_event_ms,  # small: a write follows its events closely
            {genre: round(score * 100) for genre, score in strongest_genres(self.genres)},
            [
                [w.start, {EVENT_CODE[t]: n for t, n in w.counts.items()}] if w else None
                for w in map(self.windows.get, WINDOW_SLOTS)
            ],
            self.offsets,
            vector,
            self.recent_ids.raw,
            self.recent.times,
            self.recent.items,
            self.feedback.packed(),
            self.fatigue.raw,
            self.touches.packed() if self.touches else None,
        ]
        header = _HEADER.pack(((self.change or 0) + 1) & 0xFFFFFFFF, FORMAT)
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        return header + packed

    @classmethod
    def from_legacy(cls, values: Sequence[bytes | None]) -> UserState:
        """From format 1: the values of `LEGACY_FIELDS`, in that order (None where absent)."""
        change, meta, history, recent, vector, offsets = values
        state = cls(
            change=int(change) if change else None,
            change_token=change or b"",
            recent=History.from_legacy(history),
            recent_ids=RecentIds(recent or b""),
        )
        if offsets:
            state.offsets = orjson.loads(offsets)
        if vector:
            state.vector = vector_from_bytes(vector).copy()
        if meta:
            info = orjson.loads(meta)
            version = info.get("mv")
            state.vector_version = version_tag(version) if version else None
            state.events = info.get("n", 0)
            state.last_event_ms = info.get("ts", 0)
            state.updated_ms = info.get("upd", 0)
            state.genres = info.get("g", {})
            state.windows = {
                slot: WindowCounts(*window) if window else None
                for slot, window in info.get("w", {}).items()
            }
        return state

    @classmethod
    def from_legacy_hash(cls, raw: Mapping[Any, Any]) -> UserState:
        """From a whole format-1 hash, as HGETALL returns it."""
        fields = {as_bytes(k): as_bytes(v) for k, v in raw.items()}
        return cls.from_legacy([fields.get(name) for name in LEGACY_FIELDS])


async def load_states(
    redis: RedisClient, state_keys: Sequence[str | bytes]
) -> list[UserState | None]:
    """Users' states by key, in either format (None where there is no such key): for the admin
    commands, benchmarks and tests; the worker and the API read in their own round trips."""
    if not state_keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for key in state_keys:
            pipe.get(key)
        replies = list(await pipe.execute(raise_on_error=False))
    legacy = [n for n, reply in enumerate(replies) if is_wrong_type(reply)]
    if legacy:
        async with redis.pipeline(transaction=False) as pipe:
            for n in legacy:
                pipe.hmget(state_keys[n], LEGACY_FIELDS)
            for n, fields in zip(legacy, await pipe.execute(), strict=True):
                replies[n] = list(fields)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [None if reply is None else UserState.decode(reply) for reply in replies]


def is_wrong_type(reply: Any) -> bool:
    """Whether a GET of a state key met a format-1 hash (WRONGTYPE)."""
    return isinstance(reply, ResponseError) and str(reply).startswith("WRONGTYPE")


async def load_state(redis: RedisClient, user_id: str) -> UserState:
    """One user's state in either format (a new user's empty state where there is none)."""
    (state,) = await load_states(redis, [keys.user_state(user_id)])
    return state or UserState()
