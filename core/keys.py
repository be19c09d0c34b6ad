"""The Redis key layout, in one place. Every key starts with `recsys:`.

Model versions (written by `recsys train`, read by the worker and the API):
  recsys:model:active                      string  the active version id (the one switch)
  recsys:model:versions                    zset    version id -> publish time (epoch s)
  recsys:model:{v}:meta                    hash    model, dim, dataset, trained_until, ...
  recsys:model:{v}:item_vectors            hash    item_id -> float32 bytes (dim values)
  recsys:model:{v}:items                   hash    item_id -> JSON {title, genres, year, popularity}
  recsys:model:{v}:popular                 zset    item_id -> interaction count
  recsys:model:{v}:popular:genre:{genre}   zset    item_id -> interaction count, per genre
  recsys:model:{v}:gram                    string  float32 bytes of Y^T Y (dim x dim), ALS fold-in
  recsys:model:{v}:ranker                  hash    model (LightGBM text), feature_version, params
  recsys:model:{v}:neighbours              hash    item_id -> JSON [[item ids], [scores]]
  recsys:model:{v}:drift                   string  JSON drift baseline (`core.drift.Baseline`)
  recsys:model:{v}:drift:reference         string  JSON live reference of the score distributions
                                                   (`core.drift.Reference`), set once by the API
  recsys:drift:live                        hash    process -> JSON of its live drift window
                                                   (`core.drift.LiveEntry`), written every few
                                                   seconds by each worker and API process
  recsys:{experiments}:registry            hash    experiment id -> JSON of its definition, when
                                                   it was created and stopped
  recsys:{experiments}:running             string  the id of the experiment answers run (one at a
                                                   time; both keys in one slot, so that starting
                                                   one is a single script)
  recsys:retrain:decisions                 list    JSON of each `recsys retrain` gate decision,
                                                   newest first, capped (`RETRAIN_DECISIONS_KEPT`)
In each users' hash tag (below), so that the API reads a user from that user's node alone:
  recsys:{u<t>}:model:active               string  a copy of the active version id (`activate`)
  recsys:{u<t>}:model:{v}:user_vectors     hash    user_id -> float32 bytes (batch vectors of the
                                                   tag's users: 32 keys, not one of every user)

Cluster-safe: every script touches keys of one hash slot only and declares them (KEYS); a
user's keys share one of 32 hash tags `{u<t>}` (`user_tag`: picked by the CRC-32 of the user id),
and an item shard's keys the tag `{i:<shard>}`. So the same layout runs on one
Redis and on a Redis Cluster, and no slot takes a write from every event. Model-version keys are
written once per version and read by every process.

Why users share tags instead of one each: on a cluster a batch costs one script call per slot it
touches, and the calls' cost (mostly the client's, in redis-py) was what made a cluster slower
than one Redis: with a tag per user, a batch part of ~125 events (the worker's batches average
~250 under load, split over two lanes) made ~250 calls, and one worker drained 68% of what it
did on one Redis (`recsys bench cluster`). With 32 tags the same part makes ~30 calls a way;
users can still be spread over up to 32 masters (about 800 GB of user state at 25 GB a master).
The tags are part of the layout: changing them moves every user's key.

Per-user state (written by the stream worker; expires after RECSYS_STREAM_USER_TTL_DAYS idle),
all in one value so that a batch costs one read and one write per user:
  recsys:{u<t>}:<id>:state                 string  packed (`core.user_state`, format 2): change
                                                   counter, model version, events applied, last
                                                   event and write times, genre affinity, window
                                                   counts, applied offsets per topic partition
                                                   (redeliveries), the vector (float16), recent
                                                   event ids (dedup) and recent history; a hash
                                                   of fields where format 1 is not yet rewritten

Items, spread over RECSYS_REDIS_ITEM_SHARDS shards by a hash of the item id (stream worker):
  recsys:{i:<s>}:win:{window}:{start}      hash    "{type}:{item_id}" -> count; TTL two windows
  recsys:{i:<s>}:trending:{epoch}          zset    item_id -> decayed weighted count (see
                                                   core.rules.trending_increment)
  recsys:{i:<s>}:applied                   hash    "<topic code>:<partition>" -> the last offset
                                                   counted in this shard (redeliveries)
  recsys:{i:<s>}:exp:{experiment}:{start} hash    "{variant}:{outcome}" -> count of the arm's
                                                   credited outcomes in the time bucket from
                                                   start (`core.attribution`; TTL the
                                                   experiments' retention)
  recsys:{i:<s>}:next:{epoch}:{item_id}    zset    next item_id -> decayed weighted count of
                                                   users' steps from item_id to it (shard of
                                                   item_id; the top RECSYS_STREAM_TRANSITIONS_TOP_N
                                                   kept, up to twice that between trims)
"""

from __future__ import annotations

import binascii
import zlib

from schemas.topics import TOPIC_BY_EVENT_TYPE

PREFIX = "recsys"
ACTIVE_MODEL = f"{PREFIX}:model:active"
MODEL_VERSIONS = f"{PREFIX}:model:versions"
RETRAIN_DECISIONS = f"{PREFIX}:retrain:decisions"
RETRAIN_DECISIONS_KEPT = 500


def model_key(version: str, part: str) -> str:
    return f"{PREFIX}:model:{version}:{part}"


def model_meta(version: str) -> str:
    return model_key(version, "meta")


def item_vectors(version: str) -> str:
    return model_key(version, "item_vectors")


def user_vectors(version: str, user_id: str) -> str:
    """The hash of `version`'s batch vectors that holds `user_id`'s (in the user's hash tag)."""
    return user_vectors_of_tag(version, user_tag(user_id))


def user_vectors_of_tag(version: str, tag: str) -> str:
    return f"{PREFIX}:{{{tag}}}:model:{version}:user_vectors"


def active_model_near(user_id: str) -> str:
    """The copy of the active version id in `user_id`'s hash tag."""
    return active_model_of_tag(user_tag(user_id))


def active_model_of_tag(tag: str) -> str:
    return f"{PREFIX}:{{{tag}}}:model:active"


def item_payloads(version: str) -> str:
    return model_key(version, "items")


def popular(version: str) -> str:
    return model_key(version, "popular")


def popular_by_genre(version: str, genre: str) -> str:
    return model_key(version, f"popular:genre:{genre}")


def gram_matrix(version: str) -> str:
    return model_key(version, "gram")


def ranker(version: str) -> str:
    """The version's learned ranker (`core.ranking_store`): model text and feature version."""
    return model_key(version, "ranker")


def item_neighbours(version: str) -> str:
    """The version's item-item neighbours: item id -> its nearest items and their scores."""
    return model_key(version, "neighbours")


def model_pattern(version: str) -> str:
    """Glob over every key of one version but its batch user vectors (for clean-up with SCAN;
    those are `user_vectors_of_tag` for each of `USER_TAGS`)."""
    return f"{PREFIX}:model:{version}:*"


SLOTS = 16384  # a Redis Cluster's hash slots


def _spread_tags(count: int) -> tuple[str, ...]:
    """`count` hash tags whose slots fall one into each of `count` equal ranges of the slots: a
    cluster whose masters serve equal ranges (as `redis-cli --cluster create` makes them) then
    holds equal shares of the users, where tags picked blindly would leave some masters with
    a third more than others. The slot is Redis's CRC16 (binascii's CRC-CCITT/XMODEM)."""
    width = SLOTS // count
    tags = []
    for bucket in range(count):
        attempt = 0
        while binascii.crc_hqx(f"u{bucket}.{attempt}".encode(), 0) % SLOTS // width != bucket:
            attempt += 1
        tags.append(f"u{bucket}.{attempt}")
    return tuple(tags)


# The hash tags users are spread over (see the module's docstring); at most this many masters
# share the users' keys.
USER_TAGS = _spread_tags(32)


def user_tag(user_id: str) -> str:
    """The hash tag of `user_id`'s keys: stable across processes and restarts (CRC-32)."""
    return USER_TAGS[zlib.crc32(user_id.encode()) % len(USER_TAGS)]


def user_state(user_id: str) -> str:
    return f"{PREFIX}:{{{user_tag(user_id)}}}:{user_id}:state"


def user_state_pattern(user_glob: str = "*") -> str:
    """Glob over the state keys of the users whose ids match `user_glob` (SCAN, notifications)."""
    return f"{PREFIX}:{{u*}}:{user_glob}:state"


def user_of_state_key(key: str) -> str:
    """The user id in a state key (`user_state` reversed)."""
    return key.split("}:", 1)[1].removesuffix(":state")


def item_shard(item_id: str, shards: int) -> int:
    """The shard that counts `item_id`: stable across processes and restarts (CRC-32)."""
    return zlib.crc32(item_id.encode()) % shards


def item_window(shard: int, window: str, start: int) -> str:
    return f"{PREFIX}:{{i:{shard}}}:win:{window}:{start}"


def trending(shard: int, epoch: int) -> str:
    return f"{PREFIX}:{{i:{shard}}}:trending:{epoch}"


def item_transitions(shard: int, epoch: int, item_id: str) -> str:
    """The items users went on to from `item_id` (in `item_id`'s shard, `item_shard`)."""
    return f"{PREFIX}:{{i:{shard}}}:next:{epoch}:{item_id}"


def experiment_counts(shard: int, experiment: str, bucket_start: int) -> str:
    """An experiment's credited outcomes counted in one item shard in one time bucket."""
    return f"{PREFIX}:{{i:{shard}}}:exp:{experiment}:{bucket_start}"


def experiment_counts_pattern(experiment: str) -> str:
    """Glob over every shard's and bucket's counters of `experiment` (ids are [A-Za-z0-9_.-],
    which globs read literally)."""
    return f"{PREFIX}:{{i:*}}:exp:{experiment}:*"


EXPERIMENT_REGISTRY = f"{PREFIX}:{{experiments}}:registry"
RUNNING_EXPERIMENT = f"{PREFIX}:{{experiments}}:running"


def shard_applied(shard: int) -> str:
    return f"{PREFIX}:{{i:{shard}}}:applied"


# The event topics' codes in offset records ("v:3": events.view, partition 3, from the event
# type's initial); any other topic is recorded by its name.
TOPIC_CODES = {topic: event_type[0] for event_type, topic in TOPIC_BY_EVENT_TYPE.items()}
TOPIC_NAMES = {code: topic for topic, code in TOPIC_CODES.items()}


def offset_slot(topic: str, partition: int) -> str:
    """How an offset record names a topic's partition."""
    return f"{TOPIC_CODES.get(topic, topic)}:{partition}"


def slot_topic(slot: str) -> str:
    """The topic of an offset record's name (`offset_slot` reversed)."""
    code = slot.rsplit(":", 1)[0]
    return TOPIC_NAMES.get(code, code)


def drift_baseline(version: str) -> str:
    """The version's drift baseline (`core.drift.Baseline`), written with it by `batch.publish`;
    absent for a version published before drift monitoring."""
    return model_key(version, "drift")


def drift_reference(version: str) -> str:
    """The live reference of the version's score distributions (`core.drift.Reference`): set
    once (SET NX), by the first API process to see a full window after the settling time."""
    return model_key(version, "drift:reference")


# The live drift windows (`core.drift.LiveEntry`): one field per worker or API process, written
# every RECSYS_DRIFT_PUBLISH_INTERVAL_S; one key (one slot of a cluster), read with one HGETALL.
DRIFT_LIVE = f"{PREFIX}:drift:live"
