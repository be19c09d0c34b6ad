"""The OpenAPI document: what the API does, exactly, so that a generated client is right.

FastAPI derives most of it; this module adds what it cannot see and corrects what it gets
wrong:

- the event schemas POST /events reads by hand (the route validates its body itself, with the
  shared `schemas` codec, so that every 422 names the event's own field);
- one `Id` schema for every id, path parameter or event field, carrying `check_id`'s rule as
  a pattern (a few kilobytes: written once);
- query parameters that are absent or present, never null (FastAPI says `anyOf [..., null]`
  for an optional one, which a URL cannot carry);
- the API key's security scheme and 401 answers only when the server sets RECSYS_API_KEY;
- the HTTP server's plain-text 400 for a request it cannot read (a URL over 64 KiB).

Every 4xx declares `ErrorBody` (`api.models.error_responses`), FastAPI's default 422 schema
included: the routes declare their 422 themselves, so FastAPI adds none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from api.routes.events import EVENTS_BODY_SCHEMA, MAX_BATCH_EVENTS
from schemas.events import ID_RULE, MAX_ID_LENGTH, Event, id_pattern

_REF_TEMPLATE = "#/components/schemas/{model}"
ID_SCHEMA = "Id"
_ID_REF = _REF_TEMPLATE.format(model=ID_SCHEMA)
_ID_FACETS = ("type", "minLength", "maxLength", "pattern")


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


def _share_id_schema(node: Any) -> None:
    """Each event field carrying the id pattern refers to the one `Id` schema instead."""
    if isinstance(node, dict):
        if node.get("pattern") == id_pattern():
            for facet in _ID_FACETS:
                node.pop(facet, None)
            node["$ref"] = _ID_REF
        for value in node.values():
            _share_id_schema(value)
    elif isinstance(node, list):
        for value in node:
            _share_id_schema(value)


# The HTTP server's own answer, before the app sees the request (uvicorn with httptools reads
# URLs of up to 64 KiB): a route with parameters can get it, e.g. for a long `exclude_ids`.
_UNPARSABLE = {
    "description": "The HTTP server could not read the request, e.g. a URL over 64 KiB "
    "(plain text, not JSON).",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def _fix_parameters(operation: dict[str, Any]) -> None:
    if operation.get("parameters"):
        operation["responses"].setdefault("400", _UNPARSABLE)
    for parameter in operation.get("parameters", ()):
        schema = parameter["schema"]
        if parameter["in"] == "path":
            # A path parameter is a user or item id (`api.routes.filters.IdPath`), or a name
            # with a pattern of its own (an experiment's id).
            if schema.get("maxLength") == MAX_ID_LENGTH:
                parameter["schema"] = {"$ref": _ID_REF}
            else:
                assert "pattern" in schema, parameter
        elif parameter["in"] == "query" and not parameter.get("required"):
            branches = schema.get("anyOf", ())
            kept = [branch for branch in branches if branch.get("type") != "null"]
            if len(kept) == 1 and len(branches) == 2:
                del schema["anyOf"]
                parameter["schema"] = {**kept[0], **schema}


def _drop_api_key(operation: dict[str, Any]) -> None:
    operation.pop("security", None)
    operation.get("responses", {}).pop("401", None)


def _declare_variants(operation: dict[str, Any], arms: list[str]) -> None:
    """`variant` takes the running experiment's arm names; without an experiment it takes none,
    and is not declared."""
    parameters = operation.get("parameters", [])
    for parameter in parameters:
        if parameter["in"] == "query" and parameter["name"] == "variant":
            if arms:
                parameter["schema"] = {"type": "string", "enum": arms}
            else:
                parameters.remove(parameter)
            return


def install_openapi(
    app: FastAPI, *, api_key_required: bool, experiment_arms: Callable[[], list[str]]
) -> None:
    """The app's document, built on first use; `experiment_arms` gives the running experiment's
    arms when it is built (the app drops the document when the experiment changes)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            arms = experiment_arms()
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(event_schemas())
            _share_id_schema(schemas)
            schemas[ID_SCHEMA] = {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "pattern": id_pattern(),
                "description": ID_RULE,
            }
            for path in document["paths"].values():
                for operation in path.values():
                    _fix_parameters(operation)
                    _declare_variants(operation, arms)
                    if not api_key_required:
                        _drop_api_key(operation)
            if not api_key_required:
                components.pop("securitySchemes", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
