"""Response bodies of the API (requests are query parameters, or events from `schemas`)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

# What led an answer: the personalized path, a fallback, or the learned ranker over the
# candidate sources (`api.pipeline`).
Source = Literal["personalized", "trending", "popular", "ranked", "random"]
# What proposed one item: the answer's sources, or a candidate source of the ranking stage.
# (`tests/unit/test_ranking.py` checks that every source of `core.ranking.SOURCES` is here.)
ItemSource = Literal[
    "personalized",
    "trending",
    "popular",
    "ann",
    "neighbours",
    "transitions",
    "genre_popular",
    "ranked",
    "random",
]


class FeatureContribution(BaseModel):
    """One feature of the ranker and how much it raised the item's score (its SHAP value)."""

    feature: str
    contribution: float


class Contribution(BaseModel):
    """One of the user's recent items and how similar it is to a recommended item."""

    item_id: str
    title: str | None = None
    similarity: float = Field(description="Cosine similarity of the two item vectors.")


class RecommendationItem(BaseModel):
    item_id: str
    score: float = Field(description="Ranking score within its source (higher is better).")
    title: str | None = None
    genres: list[str] = Field(default_factory=list)
    source: ItemSource | None = Field(
        None,
        description="Which recommender of the fallback chain chose it (in /recommend), or, in "
        "a ranked answer, the candidate source that proposed it first.",
    )
    explanation: list[Contribution] | None = Field(
        None, description="With explain=true: the user's recent items most like this one."
    )
    features: list[FeatureContribution] | None = Field(
        None,
        description="With explain=true, in a ranked answer: the features that raised the "
        "item's score most, strongest first.",
    )


class RecommendationResponse(BaseModel):
    recommendation_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="This answer's id: send it on the clicks and purchases it leads to.",
    )
    user_id: str
    items: list[RecommendationItem]
    source: Source = Field(description="The first source of the fallback chain that answered.")
    model_version: str | None = Field(None, description="Active model version, if known.")
    reason: str | None = Field(
        None, description="Why the answer is not (only) personalized, when it is not."
    )
    experiment: str | None = Field(
        None, description="The running experiment (`RECSYS_EXPERIMENT`), if one runs."
    )
    variant: str | None = Field(
        None, description="The experiment's arm that served this user (sticky per user)."
    )


class SimilarItemsResponse(BaseModel):
    item_id: str
    items: list[RecommendationItem]
    model_version: str


class HistoryItem(BaseModel):
    ts_ms: int
    event_type: str
    item_id: str


class NegativeFeedback(BaseModel):
    item_id: str
    event_type: str = Field(description="dislike or hide.")
    ts_ms: int = Field(description="When the user gave it (epoch ms).")
    excluded_until_ms: int = Field(
        description="The item is left out of the user's answers until then (epoch ms)."
    )


class WindowSummary(BaseModel):
    start: int = Field(description="Window start (epoch seconds).")
    counts: dict[str, int] = Field(description="Events in the window by event type.")


class UserProfile(BaseModel):
    user_id: str
    known: bool = Field(description="Whether the stream worker holds any state for the user.")
    events: int
    last_event_ms: int | None
    history: list[HistoryItem]
    windows: dict[str, WindowSummary]
    top_genres: dict[str, float]
    negative_feedback: list[NegativeFeedback] = Field(
        default_factory=list, description="Items the user disliked or hid, newest first."
    )
    tired_items: int = Field(
        0,
        description="Items shown to the user often enough, without a click or purchase, that "
        "answers demote or leave them out (feedback fatigue).",
    )
    has_vector: bool
    vector_source: Literal["online", "batch"] | None = Field(
        description="The vector answers use: the online one (in the active version's space), "
        "the batch one of the active version, or none (a cold user)."
    )
    vector_model_version: str | None = Field(
        description="The model version of that vector (the active one), or null without one."
    )
    vector_updated_ms: int | None = Field(
        None, description="When the online vector was last written (epoch ms)."
    )
    vector_age_s: float | None = Field(None, description="Seconds since that write.")
    model_version: str | None = Field(None, description="The active model version.")


class EventsAccepted(BaseModel):
    accepted: int


class FieldProblem(BaseModel):
    """One thing wrong with a request: which field or parameter, and why."""

    field: str = Field(
        description="The parameter (`k`, `user_id`), the event's own field (`ts`, "
        "`context.device`), or `body` for the request body as a whole."
    )
    reason: str
    index: int | None = Field(
        description="Position of the event in a batch; null for a single event or a parameter."
    )


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: a sentence, or (422) the list of fields at fault."""

    detail: str | list[FieldProblem] = Field(
        description="422: every problem found, each naming its field; otherwise one sentence."
    )


_ERRORS = {
    401: "Missing or wrong X-API-Key header.",
    404: "Not found.",
    413: "Request body over the size limit (RECSYS_API_MAX_BODY_BYTES): nothing was published.",
    422: "Invalid request: `detail` lists each field or parameter at fault.",
    503: "A backend the answer needs is unavailable: retry later.",
}


def error_responses(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each code with the one error model, and the standard
    description unless `descriptions` has `e422="..."` for it."""
    return {
        code: {"model": ErrorBody, "description": descriptions.get(f"e{code}", _ERRORS[code])}
        for code in codes
    }


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class Comparison(BaseModel):
    difference: float | None
    low: float | None = Field(description="95% interval of the difference, low end.")
    high: float | None = Field(description="95% interval of the difference, high end.")
    p_value: float | None = Field(description="Two-sided two-proportion z-test.")


class RateReport(BaseModel):
    value: float | None = Field(description="null until the arm has impressions.")
    low: float | None = Field(description="95% interval (Wilson), low end.")
    high: float | None = Field(description="95% interval (Wilson), high end.")
    vs_control: Comparison | None = Field(
        None, description="This arm's rate minus the control's; none for the control."
    )


class ArmReport(BaseModel):
    name: str
    share: float
    params: dict[str, Any]
    counts: dict[str, int] = Field(
        description="users, impressions, clicked_impressions, clicks, purchases, "
        "converted_impressions: what the stream credited to the arm (last touch)."
    )
    rates: dict[str, RateReport] = Field(
        description="ctr (clicked impressions / impressions) and conversion (converted "
        "impressions / impressions)."
    )


class BucketCounts(BaseModel):
    start_s: int = Field(description="The time bucket's start (epoch seconds).")
    arms: dict[str, dict[str, int]]


class ExperimentReport(BaseModel):
    id: str
    running: bool
    created_s: float
    stopped_s: float | None
    control: str = Field(description="The arm the others are compared with: the first one.")
    arms: list[ArmReport]
    srm_p_value: float | None = Field(
        description="Chi-square p-value of users per arm against the shares (null: no users)."
    )
    sample_ratio_mismatch: bool = Field(
        description="Whether the split is broken (p < 0.001): then the comparison is not sound."
    )
    buckets: list[BucketCounts] = Field(description="The counts per time bucket, oldest first.")


class ExperimentSummary(BaseModel):
    id: str
    running: bool
    created_s: float
    stopped_s: float | None
    arms: list[dict[str, Any]] = Field(description="Name, share and params of each arm.")
