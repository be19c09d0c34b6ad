"""Protocol names, importable without the evaluation machinery (the CLI's options use them)."""

from __future__ import annotations

from enum import StrEnum


class Protocol(StrEnum):
    TEMPORAL = "temporal"
    LEAVE_LAST_OUT = "leave-last-out"
