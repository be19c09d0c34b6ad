"""The OpenAPI document, with the event schemas POST /events reads by hand.

The route validates its body itself (with the shared `schemas` codec, so every 422 names the
event's own field), so FastAPI cannot derive the body schema; it is added here from the same
pydantic models.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from api.routes.events import EVENTS_BODY_SCHEMA, MAX_BATCH_EVENTS
from schemas.events import Event

_REF_TEMPLATE = "#/components/schemas/{model}"


def event_schemas() -> dict[str, Any]:
    """Component schemas: each event model, `Event` (their union) and `EventsBody`."""
    event = TypeAdapter(Event).json_schema(ref_template=_REF_TEMPLATE)
    components: dict[str, Any] = event.pop("$defs", {})
    components["Event"] = event
    ref = {"$ref": _REF_TEMPLATE.format(model="Event")}
    components[EVENTS_BODY_SCHEMA] = {
        "title": "One event or a batch",
        "oneOf": [ref, {"type": "array", "items": ref, "minItems": 1,
                        "maxItems": MAX_BATCH_EVENTS}],
    }  # fmt: skip
    return components


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            document.setdefault("components", {}).setdefault("schemas", {}).update(event_schemas())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
