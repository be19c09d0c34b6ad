"""POST /events: validate every event with the shared schemas, then publish them all."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, status

from api.deps import ApiKeyDep, PublisherDep
from api.models import ErrorBody, EventsAccepted, FieldProblem
from api.publisher import KafkaUnavailableError
from schemas import AnyEvent, EventDecodeError
from schemas.codec import validate_event

router = APIRouter(tags=["events"])

MAX_BATCH_EVENTS = 1000
EVENTS_BODY_SCHEMA = "EventsBody"  # registered in the OpenAPI document by `api.openapi`


def _problem(field: str, reason: str, index: int | None = None) -> HTTPException:
    detail = [FieldProblem(field=field, reason=reason, index=index).model_dump()]
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def validate_body(raw: bytes) -> list[AnyEvent]:
    """All events, or a 422 listing every field at fault (with the event's index in a batch)."""
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _problem("body", "not valid JSON") from None
    is_batch = isinstance(body, list)
    candidates: list[Any] = body if is_batch else [body]
    if not candidates:
        raise _problem("body", "the batch is empty")
    if len(candidates) > MAX_BATCH_EVENTS:
        raise _problem("body", f"at most {MAX_BATCH_EVENTS} events per request")
    events: list[AnyEvent] = []
    problems: list[dict[str, Any]] = []
    for index, candidate in enumerate(candidates):
        position = index if is_batch else None
        if not isinstance(candidate, dict):
            problems.append(FieldProblem(field="body", reason="expected an event object",
                                         index=position).model_dump())  # fmt: skip
            continue
        try:
            events.append(validate_event(candidate))
        except EventDecodeError as exc:
            problems.extend(
                FieldProblem(field=e.field, reason=e.reason, index=position).model_dump()
                for e in exc.errors
            )
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    return events


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        401: {"model": ErrorBody, "description": "Missing or wrong X-API-Key."},
        413: {"model": ErrorBody, "description": "Body over the size limit."},
        422: {"model": ErrorBody, "description": "Invalid events: nothing was published."},
        503: {"model": ErrorBody, "description": "Kafka unreachable: retry with the same ids."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{EVENTS_BODY_SCHEMA}"}
                }
            },
        }
    },
)
async def post_events(
    request: Request, publisher: PublisherDep, _authorized: ApiKeyDep
) -> EventsAccepted:
    """One event, or a batch of up to 1,000 (a JSON array). All are validated first: if any is
    invalid, none is published. Events go to their type's topic, keyed by user id."""
    events = validate_body(await request.body())
    try:
        await publisher.publish(events)
    except KafkaUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return EventsAccepted(accepted=len(events))
