"""The one place that reads the environment.

Every process (CLI, stream worker, API, batch job) builds a single frozen `Settings` at start
and passes it down; nothing else calls `os.environ`. Variables use the `RECSYS_` prefix, e.g.
`RECSYS_KAFKA_BOOTSTRAP_SERVERS`. Credentials are `SecretStr` so they never reach a log line.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.experiments import Experiment, experiment_from_json
from core.ranking import SOURCES

_XDG_STATE = Path.home() / ".local" / "state" / "recsys"
_XDG_CACHE = Path.home() / ".cache" / "recsys"


class Settings(BaseSettings):
    """Effective configuration of one recsys process."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", frozen=True, extra="ignore", env_file=None
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_username: str | None = Field(
        None, description="SASL/PLAIN user, if the cluster needs one."
    )
    kafka_password: SecretStr | None = Field(None, description="SASL/PLAIN password.")
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local broker (`recsys services`)."
    )
    kafka_partitions: int = Field(4, ge=1, description="Partitions of each event topic.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replicas of each event topic.")

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL (db number included)."
    )
    redis_password: SecretStr | None = Field(None, description="Redis password (AUTH).")
    redis_item_shards: int = Field(
        16,
        ge=1,
        le=1024,
        description=(
            "Keys the per-item counts (trending, windows) are spread over, so that no Redis "
            "slot takes a write from every event; readers merge them. Set once: changing it "
            "starts the counts afresh."
        ),
    )
    redis_cluster: bool = Field(
        False,
        description=(
            "RECSYS_REDIS_URL names one node of a Redis Cluster (or a cluster-mode service such "
            "as Valkey or ElastiCache); clients discover the other nodes from it."
        ),
    )

    # --- Qdrant ----------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        None, description="Qdrant server URL; unset means the embedded engine (qdrant-edge)."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="Qdrant server API key.")
    qdrant_path: Path | None = Field(
        None, description="Embedded Qdrant shard directory (default: <state dir>/qdrant)."
    )

    # --- Stream worker ---------------------------------------------------------------------
    stream_group_id: str = Field(
        "recsys-stream", description="Kafka consumer group of the stream workers."
    )
    stream_user_update: Literal["ema", "fold-in"] = Field(
        "ema", description="Online user-vector update: EMA, or ALS fold-in over recent history."
    )
    stream_ema_view: float = Field(0.05, gt=0, le=1, description="EMA weight of a view.")
    stream_ema_click: float = Field(0.15, gt=0, le=1, description="EMA weight of a click.")
    stream_ema_purchase: float = Field(0.35, gt=0, le=1, description="EMA weight of a purchase.")
    stream_ema_dislike: float = Field(
        0.2, gt=0, le=1, description="EMA weight of a dislike: how far the vector moves away."
    )
    stream_ema_hide: float = Field(
        0.1, gt=0, le=1, description="EMA weight of a hide: how far the vector moves away."
    )
    stream_fold_in_history: int = Field(50, ge=1, description="Recent events a fold-in solve uses.")
    stream_fold_in_prior: float = Field(
        1.0, ge=0, description="Pull of the batch user vector in a fold-in solve (0: none)."
    )
    stream_history_length: int = Field(50, ge=1, description="Recent events kept per user.")
    stream_dedup_window_s: int = Field(
        3600,
        ge=1,
        description="Duplicate event ids are caught within this much of a user's "
        "newest event (redeliveries are caught by offset at any age).",
    )
    stream_user_ttl_days: float = Field(30, gt=0, description="Idle users' state expires after.")
    stream_trending_half_life_s: float = Field(
        86_400, gt=0, description="Half-life of the decayed counts behind trending items."
    )
    stream_transitions_top_n: int = Field(
        50,
        ge=0,
        description="Next items kept per item in the item-to-item transition table, a candidate "
        "source of the ranked answers (0: no table; it costs the worker about a sixth more CPU "
        "per event).",
    )
    stream_transition_half_life_s: float = Field(
        7 * 86_400, gt=0, description="Half-life of the decayed counts of the transition table."
    )
    stream_batch_size: int = Field(1000, ge=1, description="Events applied per Redis round trip.")
    stream_batch_wait_ms: int = Field(
        20, ge=1, description="Longest wait to fill a batch (bounds the added latency)."
    )
    stream_batches_in_flight: int = Field(
        4, ge=1, description="Batches handed to the worker's apply process before one is done."
    )

    # --- Event archive ---------------------------------------------------------------------
    archive_uri: str | None = Field(
        None,
        description="Delta Lake table of every valid event (`recsys archive`): a path or an "
        "object-store URI such as s3://bucket/events (default: <state dir>/archive/events).",
    )
    archive_storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Object-store options for the archive as JSON (delta-rs keys, e.g. "
        '{"AWS_REGION": "eu-west-1"}); credentials may also come from the usual AWS_* variables.',
    )
    archive_group_id: str = Field(
        "recsys-archive", description="Kafka consumer group of the archivers."
    )
    archive_batch_events: int = Field(
        20_000, ge=1, description="Events written to the archive per commit, at most."
    )
    archive_batch_seconds: float = Field(
        1.0, gt=0, description="Longest wait to fill an archive commit (bounds its lag)."
    )
    archive_dedup_window_s: int = Field(
        3600,
        ge=0,
        description="An event id archived within this long is not archived again (producer "
        "retries publish one event twice; redeliveries are caught by offset at any age).",
    )

    # --- Retraining (`recsys retrain`) ---------------------------------------------------------
    retrain_window_days: float = Field(
        30, gt=0, description="Days of the archive a retrain reads (its training window ends now)."
    )
    retrain_holdout_fraction: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Newest share of the window's events held out to score the candidate and "
        "the active version (the cut; never before the active version's training cut-off).",
    )
    retrain_gate_margin: float = Field(
        0.005,
        ge=0,
        description="A candidate is published if its NDCG@10 on the held-out events is at "
        "least the active version's minus this margin.",
    )
    retrain_min_interactions: int = Field(
        1000,
        ge=1,
        description="Fewest training events in the window for a retrain (fewer: skipped).",
    )

    # --- Files -----------------------------------------------------------------------------
    data_dir: Path = Field(
        _XDG_CACHE / "datasets",
        description="Where datasets are read from and downloaded to (e.g. ../shared/datasets).",
    )
    state_dir: Path = Field(
        _XDG_STATE,
        description="Writable runtime state: local service data, pid files, model artifacts.",
    )
    cache_dir: Path = Field(
        _XDG_CACHE, description="Downloaded tooling such as the Kafka broker's jars."
    )

    # --- Observability & API ------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking store that `recsys train`, `recsys evaluate` and `recsys "
        "retrain` log their runs to (e.g. http://127.0.0.1:5000 or sqlite:///path/mlflow.db); "
        "unset = not logged. `recsys up` uses a SQLite store under the state directory.",
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318; unset = off."
    )
    api_key: SecretStr | None = Field(
        None, description="Key required in the X-API-Key header for writes; unset = open."
    )
    log_level: str = Field("INFO", description="Python log level.")

    # --- Feedback: negative events and impressions (the worker writes, the API reads) -------
    feedback_exclude_days: float = Field(
        30,
        ge=0,
        description="A disliked or hidden item is left out of the user's answers this long.",
    )
    feedback_max_items: int = Field(
        32, ge=0, description="Negative-feedback items kept per user (the newest)."
    )
    fatigue_action: Literal["demote", "exclude", "off"] = Field(
        "demote",
        description="What answers do with an item shown too often without a positive event: "
        "move it after the others, leave it out, or nothing.",
    )
    fatigue_impressions: int = Field(
        3, ge=1, description="Impressions within the fatigue window that make an item tiring."
    )
    fatigue_window_s: int = Field(
        86_400, ge=1, description="The window in which impressions count towards fatigue."
    )
    fatigue_max_items: int = Field(
        40, ge=0, description="Shown items whose impressions are kept per user (9 bytes each)."
    )

    # --- API serving -------------------------------------------------------------------------
    api_request_budget_ms: float = Field(
        100, gt=0, description="Time one API request may spend on backends, all calls together."
    )
    api_redis_timeout_ms: float = Field(
        25, gt=0, description="Longest single Redis call of a request (within the budget)."
    )
    api_qdrant_timeout_ms: float = Field(
        50, gt=0, description="Longest single vector-index call of a request (within the budget)."
    )
    api_kafka_timeout_ms: float = Field(
        5000, gt=0, description="Longest wait for Kafka to connect or acknowledge POST /events."
    )
    api_breaker_failures: int = Field(
        5, ge=1, description="Consecutive failures of a backend that open its circuit breaker."
    )
    api_breaker_reset_s: float = Field(
        2.0, gt=0, description="How long an open breaker rejects calls before one trial call."
    )
    api_fallback_chain: tuple[Literal["personalized", "trending", "popular"], ...] = Field(
        ("personalized", "trending", "popular"),
        min_length=1,
        description="Recommendation sources tried in order to fill k items (JSON list).",
    )
    api_mmr_candidates: int = Field(
        100, ge=1, description="ANN candidates re-ranked by MMR for one recommendation list."
    )
    api_ranker: Literal["on", "off"] = Field(
        "on",
        description="Rank the candidate sources with the active version's learned ranker, when "
        "it has one (off: the sources' own order, as with a version without a ranker).",
    )
    api_rank_quotas: dict[str, int] = Field(
        {
            "ann": 100,
            "neighbours": 50,
            "transitions": 50,
            "trending": 50,
            "genre_popular": 50,
            "popular": 50,
        },
        description="Candidates each source gives the ranker, by source (JSON object; sources: "
        "ann, neighbours, transitions, trending, genre_popular, popular; 0 or absent: the "
        "source is off).",
    )
    drift_window_s: float = Field(
        3600,
        gt=0,
        description="Sliding window of the live drift histograms (worker and API) compared with "
        "the active version's training baseline.",
    )
    drift_buckets: int = Field(
        12, ge=1, le=1440, description="Time buckets the drift window is kept in (a ring)."
    )
    drift_psi_threshold: float = Field(
        0.2,
        gt=0,
        description="Population stability index above which a distribution counts as drifted "
        "(GET /monitoring/drift; the alert rule uses the same value).",
    )
    drift_settle_s: float = Field(
        3600,
        ge=0,
        description="How long a newly active version's scores settle (online vectors moving from "
        "the batch ones) before the window that follows is taken as their live reference "
        "(event_scores and served_scores are compared with it, not with training).",
    )
    drift_min_observations: int = Field(
        500, ge=1, description="Live observations a distribution needs before its PSI is given."
    )
    drift_publish_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often each worker and API process writes its live drift window to "
        "Redis (and the API updates the recsys_drift_psi gauges).",
    )
    api_clock: Literal["wall", "events"] = Field(
        "wall",
        description="The time at which the ranker reads the stream's decayed counts: now, or "
        "the user's newest event (for replaying a dataset's old timestamps).",
    )
    api_fallback_candidates: int = Field(
        200, ge=1, description="Trending/popular items read per source before filtering."
    )
    api_popular_cache_size: int = Field(
        500, ge=1, description="Popular items kept in memory for answers while Redis is down."
    )
    api_popular_refresh_s: float = Field(
        30, gt=0, description="How often the in-memory popular list is reloaded from Redis."
    )
    api_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest accepted request body (413 above)."
    )
    api_cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed by CORS (JSON list); empty = CORS off."
    )
    experiment: str | None = Field(
        None,
        description="An A/B experiment to run, as JSON: "
        '{"id": ..., "arms": [{"name": ..., "share": ..., "params": {...}}]} '
        "(arm params: diversity, version, ranker, sources, holdout, random); the API registers "
        "it at start unless an "
        "experiment of that id exists (`recsys experiments` creates, lists and stops them). "
        "One runs at a time; unset: none.",
    )
    experiment_attribution_window_s: int = Field(
        3600,
        ge=1,
        description="A click or purchase is credited to an experiment's arm if it comes within "
        "this long after an answer of that arm showed the item (or named in its "
        "recommendation_id).",
    )
    experiment_bucket_s: int = Field(
        3600,
        ge=1,
        description="Experiments' counters are kept per time bucket of this length (reports "
        "plot rates over them).",
    )
    experiment_retention_days: float = Field(
        90, gt=0, description="How long experiments' counters are kept."
    )
    experiment_max_touches: int = Field(
        16,
        ge=1,
        le=255,
        description="Recent experiment answers a user's state keeps for attribution.",
    )
    api_experiment_refresh_s: float = Field(
        5,
        gt=0,
        description="How often the API reads which experiment runs (`recsys experiments`).",
    )
    api_impressions_sample: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of /recommend answers recorded as impressions (0 = none).",
    )
    api_impressions_queue: int = Field(
        10_000, ge=1, description="Impressions waiting for Kafka; more are dropped and counted."
    )
    api_impressions_batch: int = Field(
        500, ge=1, description="Impressions sent to Kafka at most per batch."
    )
    api_impressions_linger_ms: float = Field(
        200, ge=0, description="How long impressions gather before a batch is sent."
    )

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str | None) -> str | None:
        if value is not None:
            experiment_from_json(value)  # raises ExperimentError (a ValueError) naming the fault
        return value

    @field_validator("api_rank_quotas")
    @classmethod
    def _known_sources(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown sources {unknown}; the sources are {list(SOURCES)}")
        if any(quota < 0 for quota in value.values()):
            raise ValueError("a source's quota is a count of candidates: 0 or more")
        return value

    @property
    def running_experiment(self) -> Experiment | None:
        return experiment_from_json(self.experiment) if self.experiment else None

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @model_validator(mode="after")
    def _cluster_url(self) -> Self:
        if self.redis_cluster:
            parts = urlsplit(self.redis_url)
            if parts.scheme == "unix":
                raise ValueError("RECSYS_REDIS_CLUSTER needs a redis:// or rediss:// node URL")
            if parts.path.strip("/") not in {"", "0"}:
                raise ValueError("a Redis Cluster has only database 0: end RECSYS_REDIS_URL in /0")
        return self

    @cached_property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server: where `recsys services` runs its broker."""
        return int(self.kafka_bootstrap_servers.split(",")[0].rpartition(":")[2])

    @cached_property
    def redis_port(self) -> int:
        return urlsplit(self.redis_url).port or 6379

    @cached_property
    def qdrant_shard_dir(self) -> Path:
        return self.qdrant_path or self.state_dir / "qdrant"

    @cached_property
    def archive_location(self) -> str:
        return self.archive_uri or str(self.state_dir / "archive" / "events")

    def masked(self) -> dict[str, Any]:
        """Settings as plain values, with every secret (and any password in a URL) masked."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********"
            elif isinstance(value, str) and "://" in value:
                value = mask_url_password(value)
            elif isinstance(value, Path):
                value = str(value)
            shown[name] = value
        return shown


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":**********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def env_var(field_name: str) -> str:
    """The environment variable that sets a field, for error messages and docs."""
    return f"RECSYS_{field_name.upper()}"
