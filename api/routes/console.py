"""GET /console: the operator console, plain HTML, CSS and JavaScript kept in the package
(`api/console/`), with no framework and nothing fetched from elsewhere at run time. It reads
the API's own routes; its writes (events, model switches) carry the API key the operator types.

Not in the OpenAPI document: these are pages for a browser, not operations of the API.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

from fastapi import APIRouter, Response

router = APIRouter(include_in_schema=False)

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Only this origin's scripts, styles and requests: the page can load nothing from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("api").joinpath("console", name).read_bytes()


def _serve(name: str) -> Response:
    return Response(_asset(name), media_type=_TYPES[name], headers=_HEADERS)


@router.get("/console")
async def console_page() -> Response:
    return _serve("index.html")


@router.get("/console/{name}")
async def console_asset(name: Literal["app.js", "style.css"]) -> Response:
    return _serve(name)
