"""POST /events: validate every event with the shared schemas, then publish them all."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, status

from api.deps import ApiKeyDep, PublisherDep
from api.models import EventsAccepted, FieldProblem, error_responses
from api.publisher import KafkaUnavailableError
from schemas import AnyEvent, EventDecodeError
from schemas.codec import MAX_EVENT_BYTES, encode_event, validate_event

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
            event = validate_event(candidate)
        except EventDecodeError as exc:
            problems.extend(
                FieldProblem(field=e.field, reason=e.reason, index=position).model_dump()
                for e in exc.errors
            )
            continue
        # The stream worker refuses a message over this size: accepting it here would lose it.
        size = len(encode_event(event))
        if size > MAX_EVENT_BYTES:
            reason = f"the event is {size} bytes encoded; the limit is {MAX_EVENT_BYTES}"
            problems.append(FieldProblem(field="body", reason=reason, index=position).model_dump())
            continue
        events.append(event)
    if problems:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems)
    return events


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(
        401,
        413,
        422,
        503,
        e422="Invalid events: nothing was published. `detail` lists each field at fault, with "
        "the event's `index` in a batch.",
        e503="Kafka unreachable or did not acknowledge: retry with the same event ids (the "
        "stream side de-duplicates them).",
    ),
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
    """One event, or a batch of up to 1,000 (a JSON array), in a body of at most
    RECSYS_API_MAX_BODY_BYTES (1 MiB by default). All are validated first: if any is invalid,
    none is published. Events go to their type's topic, keyed by user id. 202 means the broker
    acknowledged every event (acks=all, idempotent producer): it is stored on all in-sync
    replicas and will be applied."""
    events = validate_body(await request.body())
    try:
        await publisher.publish(events)
    except KafkaUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return EventsAccepted(accepted=len(events))
