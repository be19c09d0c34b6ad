"""A typed Python client of the HTTP API, sync (`RecsysClient`) and async (`AsyncRecsysClient`).

Every route has a method that returns the API's own response model (`api.models`), so a caller
gets attributes and types instead of dictionaries, and every error answer becomes an exception
of its kind (`ApiError` and its subclasses), carrying the API's `ErrorBody`: a 422 lists each
field at fault (`RequestInvalidError.problems`).

    with RecsysClient("http://127.0.0.1:8000", api_key="...") as api:
        answer = api.recommend("u1", k=5)
        api.post_events([new_event("click", "u1", answer.items[0].item_id)])

Retries: a request that could not be sent or answered (connection refused or reset, timeout)
and a 503 (a backend briefly away) are retried up to `Retry.attempts` times with exponential
backoff; nothing else is. That includes POST /events: events carry their ids, and the stream
side applies an id once, so a retried batch is never applied twice (the API docs say so for
503). The simulator (`recsys simulate --respond`), the README's examples and the end-to-end
tests use this client, so the project's own tools call the API as users do.

The two clients share everything but the sending: each route is described once (`_Call`: the
request and how to read its answer) and each client's method is one line that sends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from api.admin_models import ItemDetail, ModelSwitch, ModelVersions, StreamStatus
from api.drift import DriftReport
from api.models import (
    ErrorBody,
    EventsAccepted,
    ExperimentReport,
    ExperimentSummary,
    FieldProblem,
    HealthStatus,
    RecommendationResponse,
    SimilarItemsResponse,
    UserProfile,
)
from schemas import AnyEvent
from schemas.codec import encode_event

T = TypeVar("T")

API_KEY_HEADER = "X-API-Key"


# --- Errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    """The API answered with an error status; `detail` is its `ErrorBody.detail`."""

    def __init__(self, status: int, method: str, path: str, body: ErrorBody | None) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.detail: str | list[FieldProblem] = body.detail if body is not None else ""
        super().__init__(f"{method} {path}: {status} {self._summary()}")

    def _summary(self) -> str:
        if isinstance(self.detail, str):
            return self.detail
        return "; ".join(f"{p.field}: {p.reason}" for p in self.detail)


class RequestInvalidError(ApiError):
    """422: the request (a parameter, an event's field) is invalid; nothing was done."""

    @property
    def problems(self) -> list[FieldProblem]:
        return self.detail if isinstance(self.detail, list) else []

    @property
    def fields(self) -> list[str]:
        return [problem.field for problem in self.problems]


class UnauthorizedError(ApiError):
    """401: a missing or wrong API key (`RecsysClient(api_key=...)`)."""


class NotFoundError(ApiError):
    """404: no such item, experiment or route."""


class PayloadTooLargeError(ApiError):
    """413: the body is over the API's limit; send fewer events per call."""


class UnavailableError(ApiError):
    """503 after the retries: a backend the answer needs is down; try again later."""


class ConflictError(ApiError):
    """409: the request cannot be carried out as things stand (no version to roll back to)."""


_ERRORS: dict[int, type[ApiError]] = {
    401: UnauthorizedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: RequestInvalidError,
    503: UnavailableError,
}


class TransportError(Exception):
    """The request could not be sent or answered after the retries (the API unreachable)."""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a failed request is sent again (see the module)."""

    attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0

    def pause(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))


NO_RETRY = Retry(attempts=1)


# --- Routes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request and how to read its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    # Statuses whose body is the answer, not an error (GET /health/ready's 503).
    answers: frozenset[int] = frozenset({200, 202})

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"content-type": "application/json"} if self.content is not None else None
        params = {name: value for name, value in self.params.items() if value is not None}
        return client.build_request(
            self.method, self.path, params=params, content=self.content, headers=headers
        )

    def outcome(self, response: httpx.Response) -> T:
        if response.status_code in self.answers:
            return self.read(response)
        raise _error(self, response)


def _error(call: _Call[Any], response: httpx.Response) -> ApiError:
    try:
        body: ErrorBody | None = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        body = ErrorBody(detail=response.text[:500]) if response.text else None
    kind = _ERRORS.get(response.status_code, ApiError)
    return kind(response.status_code, call.method, call.path, body)


def _model(model: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    return lambda response: model.model_validate_json(response.content)


def _list_of(model: type[BaseModel]) -> Callable[[httpx.Response], Any]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda response: adapter.validate_json(response.content)


def _joined(values: Iterable[str] | None) -> str | None:
    return None if values is None else ",".join(values)


def _recommend(
    user_id: str,
    k: int,
    diversity: float | None,
    genres: Iterable[str] | None,
    exclude_genres: Iterable[str] | None,
    exclude_ids: Iterable[str] | None,
    explain: bool,
    variant: str | None,
) -> _Call[RecommendationResponse]:
    params = {
        "k": k, "diversity": diversity, "genres": _joined(genres),
        "exclude_genres": _joined(exclude_genres), "exclude_ids": _joined(exclude_ids),
        "explain": explain or None, "variant": variant,
    }  # fmt: skip
    return _Call("GET", f"/recommend/{user_id}", _model(RecommendationResponse), params)


def _similar(
    item_id: str,
    k: int,
    genres: Iterable[str] | None,
    exclude_genres: Iterable[str] | None,
    exclude_ids: Iterable[str] | None,
) -> _Call[SimilarItemsResponse]:
    params = {
        "k": k, "genres": _joined(genres), "exclude_genres": _joined(exclude_genres),
        "exclude_ids": _joined(exclude_ids),
    }  # fmt: skip
    return _Call("GET", f"/items/{item_id}/similar", _model(SimilarItemsResponse), params)


def _post_events(events: Sequence[AnyEvent]) -> _Call[EventsAccepted]:
    body = b"[" + b",".join(encode_event(event) for event in events) + b"]"
    return _Call("POST", "/events", _model(EventsAccepted), content=body)


def _profile(user_id: str, history: int) -> _Call[UserProfile]:
    return _Call("GET", f"/users/{user_id}/profile", _model(UserProfile), {"history": history})


def _experiments() -> _Call[list[ExperimentSummary]]:
    return _Call("GET", "/experiments", _list_of(ExperimentSummary))


def _experiment(experiment_id: str) -> _Call[ExperimentReport]:
    return _Call("GET", f"/experiments/{experiment_id}", _model(ExperimentReport))


def _drift() -> _Call[DriftReport]:
    return _Call("GET", "/monitoring/drift", _model(DriftReport))


def _live() -> _Call[HealthStatus]:
    return _Call("GET", "/health/live", _model(HealthStatus))


def _ready() -> _Call[HealthStatus]:
    return _Call("GET", "/health/ready", _model(HealthStatus), answers=frozenset({200, 503}))


def _metrics() -> _Call[str]:
    return _Call("GET", "/metrics", lambda response: response.text)


def _models() -> _Call[ModelVersions]:
    return _Call("GET", "/admin/models", _model(ModelVersions))


def _activate(version: str) -> _Call[ModelSwitch]:
    return _Call("POST", f"/admin/models/{version}/activate", _model(ModelSwitch))


def _rollback() -> _Call[ModelSwitch]:
    return _Call("POST", "/admin/models/rollback", _model(ModelSwitch))


def _stream(dead_letters: int) -> _Call[StreamStatus]:
    return _Call("GET", "/admin/stream", _model(StreamStatus), {"dead_letters": dead_letters})


def _item(item_id: str) -> _Call[ItemDetail]:
    return _Call("GET", f"/admin/items/{item_id}", _model(ItemDetail))


# --- The clients ------------------------------------------------------------------------------


Outcome = httpx.Response | httpx.TransportError


def _pause(retry: Retry, attempt: int, outcome: Outcome) -> float | None:
    """The wait before sending again after `attempt` ended in `outcome`; None: stop here."""
    retryable = isinstance(outcome, httpx.TransportError) or outcome.status_code == 503
    return retry.pause(attempt) if retryable and attempt < retry.attempts else None


def _finish(call: _Call[T], outcome: Outcome) -> T:
    if isinstance(outcome, httpx.TransportError):
        raise TransportError(f"{call.method} {call.path}: {outcome!r}") from outcome
    return call.outcome(outcome)


def _headers(api_key: str | None) -> dict[str, str]:
    return {API_KEY_HEADER: api_key} if api_key else {}


class RecsysClient:
    """The API at `base_url`, blocking. Use as a context manager, or call `close()`. `http`:
    an httpx client of the caller's to send with instead (its base URL, headers, transport)."""

    def __init__(
        self,
        base_url: str = "",
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: Retry = Retry(),
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.retry = retry
        self.http = http or httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    def _run(self, call: _Call[T]) -> T:
        attempt = 1
        while True:
            outcome: Outcome
            try:
                outcome = self.http.send(call.request(self.http))
            except httpx.TransportError as exc:
                outcome = exc
            pause = _pause(self.retry, attempt, outcome)
            if pause is None:
                return _finish(call, outcome)
            time.sleep(pause)
            attempt += 1

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        diversity: float | None = None,
        genres: Iterable[str] | None = None,
        exclude_genres: Iterable[str] | None = None,
        exclude_ids: Iterable[str] | None = None,
        explain: bool = False,
        variant: str | None = None,
    ) -> RecommendationResponse:
        """GET /recommend/{user_id}: never an error for an unknown user (a fallback list)."""
        return self._run(
            _recommend(user_id, k, diversity, genres, exclude_genres, exclude_ids, explain, variant)
        )

    def similar(
        self,
        item_id: str,
        k: int = 10,
        *,
        genres: Iterable[str] | None = None,
        exclude_genres: Iterable[str] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> SimilarItemsResponse:
        """GET /items/{item_id}/similar (`NotFoundError` for an item the model lacks)."""
        return self._run(_similar(item_id, k, genres, exclude_genres, exclude_ids))

    def post_events(self, events: Sequence[AnyEvent]) -> EventsAccepted:
        """POST /events: all or none of `events` (at most 1,000) are published."""
        return self._run(_post_events(events))

    def profile(self, user_id: str, history: int = 20) -> UserProfile:
        """GET /users/{user_id}/profile (an empty profile for an unknown user)."""
        return self._run(_profile(user_id, history))

    def experiments(self) -> list[ExperimentSummary]:
        """GET /experiments: every registered experiment, the running one marked."""
        return self._run(_experiments())

    def experiment(self, experiment_id: str) -> ExperimentReport:
        """GET /experiments/{experiment_id}: per-arm counts, rates, intervals and p-values."""
        return self._run(_experiment(experiment_id))

    def drift(self) -> DriftReport:
        """GET /monitoring/drift."""
        return self._run(_drift())

    def live(self) -> HealthStatus:
        """GET /health/live."""
        return self._run(_live())

    def ready(self) -> HealthStatus:
        """GET /health/ready: `status` "unavailable" (not an error) names the failing checks."""
        return self._run(_ready())

    def metrics(self) -> str:
        """GET /metrics: the Prometheus exposition text."""
        return self._run(_metrics())

    def models(self) -> ModelVersions:
        """GET /admin/models: the kept versions with their training figures."""
        return self._run(_models())

    def activate(self, version: str) -> ModelSwitch:
        """POST /admin/models/{version}/activate (API key; `NotFoundError` if not kept)."""
        return self._run(_activate(version))

    def rollback(self) -> ModelSwitch:
        """POST /admin/models/rollback (API key; `ConflictError` with nothing to go back to)."""
        return self._run(_rollback())

    def stream(self, dead_letters: int = 10) -> StreamStatus:
        """GET /admin/stream: event rates, freshness, dead letters, archive lag."""
        return self._run(_stream(dead_letters))

    def item(self, item_id: str) -> ItemDetail:
        """GET /admin/items/{item_id}: payload, trending and window counts."""
        return self._run(_item(item_id))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRecsysClient:
    """The API at `base_url`, for asyncio: the methods of `RecsysClient`, awaited (`http`: an
    httpx client of the caller's, e.g. one over `httpx.ASGITransport(app)`)."""

    def __init__(
        self,
        base_url: str = "",
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: Retry = Retry(),
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.retry = retry
        self.http = http or httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout_s, transport=transport
        )

    async def _run(self, call: _Call[T]) -> T:
        attempt = 1
        while True:
            outcome: Outcome
            try:
                outcome = await self.http.send(call.request(self.http))
            except httpx.TransportError as exc:
                outcome = exc
            pause = _pause(self.retry, attempt, outcome)
            if pause is None:
                return _finish(call, outcome)
            await asyncio.sleep(pause)
            attempt += 1

    async def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        diversity: float | None = None,
        genres: Iterable[str] | None = None,
        exclude_genres: Iterable[str] | None = None,
        exclude_ids: Iterable[str] | None = None,
        explain: bool = False,
        variant: str | None = None,
    ) -> RecommendationResponse:
        return await self._run(
            _recommend(user_id, k, diversity, genres, exclude_genres, exclude_ids, explain, variant)
        )

    async def similar(
        self,
        item_id: str,
        k: int = 10,
        *,
        genres: Iterable[str] | None = None,
        exclude_genres: Iterable[str] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> SimilarItemsResponse:
        return await self._run(_similar(item_id, k, genres, exclude_genres, exclude_ids))

    async def post_events(self, events: Sequence[AnyEvent]) -> EventsAccepted:
        return await self._run(_post_events(events))

    async def profile(self, user_id: str, history: int = 20) -> UserProfile:
        return await self._run(_profile(user_id, history))

    async def experiments(self) -> list[ExperimentSummary]:
        return await self._run(_experiments())

    async def experiment(self, experiment_id: str) -> ExperimentReport:
        return await self._run(_experiment(experiment_id))

    async def drift(self) -> DriftReport:
        return await self._run(_drift())

    async def live(self) -> HealthStatus:
        return await self._run(_live())

    async def ready(self) -> HealthStatus:
        return await self._run(_ready())

    async def metrics(self) -> str:
        return await self._run(_metrics())

    async def models(self) -> ModelVersions:
        return await self._run(_models())

    async def activate(self, version: str) -> ModelSwitch:
        return await self._run(_activate(version))

    async def rollback(self) -> ModelSwitch:
        return await self._run(_rollback())

    async def stream(self, dead_letters: int = 10) -> StreamStatus:
        return await self._run(_stream(dead_letters))

    async def item(self, item_id: str) -> ItemDetail:
        return await self._run(_item(item_id))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
