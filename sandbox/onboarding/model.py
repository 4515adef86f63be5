"""The vocabulary of onboarding: zone kinds, load and issue states, resolutions, the id rule, and
:class:`PendingLoad`, the record that passes a checked load from its start to its run.

Plain values only: no state store, no I/O. Every other onboarding module speaks these words.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

from connectors.base import Connector
from connectors.quality.rules import QualityRules
from policies.model import Policy
from sandbox.errors import InvalidRequest

__all__ = [
    "OBJECT_ID",
    "IssueState",
    "LoadState",
    "PendingLoad",
    "ResolutionKind",
    "ZoneKind",
    "check_id",
    "iso",
    "utc",
]

OBJECT_ID: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ZoneKind(StrEnum):
    DOMAIN = "domain"
    REGIONAL = "regional"
    COMPREHENSIVE = "comprehensive"


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class IssueState(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    RESOLVED = "resolved"


class ResolutionKind(StrEnum):
    NO_CHANGE = "no_change"
    CORRECTED = "corrected"


@dataclass(frozen=True)
class PendingLoad:
    """A load that :meth:`sandbox.onboarding.loads.Loads.begin_load` accepted and recorded as
    ``loading``."""

    zone: str
    dataset: str
    version: int
    path: Path
    policy: Policy
    rules: QualityRules
    connectors: Mapping[str, Connector]
    previous_rows: Mapping[str, int] | None
    cluster_by: str | None = None  # the load's, else the policy's [storage] cluster_by


def check_id(value: str, what: str) -> None:
    """Refuse a zone or provider id that is not 1 to 63 of ``[a-z0-9_-]``, from a letter."""
    if not OBJECT_ID.match(value):
        raise InvalidRequest(
            f"a {what} id is 1 to 63 lower-case letters, digits, '_' or '-', from a letter",
            field="id",
        )


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (SQLite hands back naive ones)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    return utc(value).isoformat() if value is not None else None
