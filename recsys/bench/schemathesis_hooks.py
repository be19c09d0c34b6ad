"""Schemathesis hooks of the contract runs (the CI test and `recsys bench fuzz`), loaded through
SCHEMATHESIS_HOOKS by the schemathesis CLI they run (`recsys.bench.fuzz.hooks_env`).

The one rule of the API that OpenAPI cannot state as a schema, only in words: an event's `ts`
lies between 1970-01-01T00:00:00Z and an hour after the server's clock. Generated timestamps
are RFC 3339 values of any year from 0001 to 9999, so most fall outside that window; this hook
moves a well-formed one that does to now, before the request is sent, so that a valid event
stays valid. Malformed timestamps (the ones a negative case is built from) are left alone.

And one for speed: the `Id` schema's pattern is a class of about 700 ranges (`check_id`'s
printable rule, exactly), which Hypothesis's `from_regex` expands code point by code point,
about 0.25 s each time it is asked for it; schemathesis asks hundreds of times. The strategy
depends only on the pattern, the flags and the alphabet, so it is built once per combination.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from hypothesis.strategies._internal import regex as hypothesis_regex

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SKEW = timedelta(minutes=50)  # the API allows 60: leave room for a slow request


def _in_window(moment: datetime) -> bool:
    return _EPOCH <= moment <= datetime.now(UTC) + _MAX_SKEW


def _within_window(ts: Any) -> Any:
    if isinstance(ts, str) and _RFC3339.fullmatch(ts):
        try:
            if _in_window(datetime.fromisoformat(ts)):
                return ts
        except (ValueError, OverflowError):
            pass  # a date RFC 3339 allows and Python cannot hold, e.g. 9999-12-31T23:59Z-01:00
        return datetime.now(UTC).isoformat()
    if isinstance(ts, int | float) and not isinstance(ts, bool) and ts >= 0:
        try:
            if _in_window(datetime.fromtimestamp(ts / 1000, tz=UTC)):
                return ts
        except (ValueError, OverflowError, OSError):
            pass
        return int(datetime.now(UTC).timestamp() * 1000)
    return ts


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    events = case.body if isinstance(case.body, list) else [case.body]
    for event in events:
        if isinstance(event, dict) and "ts" in event:
            event["ts"] = _within_window(event["ts"])


def _memoized(build: Callable[..., Any]) -> Callable[..., Any]:
    built: dict[Any, Any] = {}

    @functools.wraps(build)
    def cached(regex: Any, fullmatch: bool, *, alphabet: Any, **options: Any) -> Any:
        compiled = regex if isinstance(regex, re.Pattern) else None
        key = (
            compiled.pattern if compiled else regex,
            compiled.flags if compiled else None,
            fullmatch,
            getattr(alphabet, "intervals", alphabet),
            tuple(sorted(options.items())),
        )
        try:
            return built[key]
        except TypeError:  # an alphabet that cannot be a key: build every time
            return build(regex, fullmatch, alphabet=alphabet, **options)
        except KeyError:
            strategy = built[key] = build(regex, fullmatch, alphabet=alphabet, **options)
            return strategy

    return cached


# `hypothesis.strategies.from_regex` imports `regex_strategy` from this module on each call.
hypothesis_regex.regex_strategy = _memoized(hypothesis_regex.regex_strategy)
