"""Errors of the batch side that light modules (the CLI, downloads) raise without pulling in
pandas."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be used: empty, malformed, or missing; the message says what to do."""
