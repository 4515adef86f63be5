"""The vocabulary of onboarding: zone kinds, load and issue states, resolutions, the id rule, a
problem document, and :class:`PendingLoad`, the record that passes a checked load from its start
to its run.

Plain values only: no state store, no I/O. Every other onboarding module speaks these words.
Times come from :mod:`sandbox.clock`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from connectors.base import Connector
from connectors.quality.rules import QualityRules
from policies.model import Policy
from sandbox.access.model import Actor
from sandbox.errors import InvalidRequest

__all__ = [
    "OBJECT_ID",
    "IssueState",
    "LoadState",
    "PendingLoad",
    "Problem",
    "ResolutionKind",
    "UploadState",
    "ZoneKind",
    "check_id",
]

OBJECT_ID: Final = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

# An RFC 9457 problem document, as :meth:`sandbox.errors.VeilError.problem` makes it (without
# ``type``): why a load failed, kept as such on its version.
Problem = Mapping[str, Any]


class ZoneKind(StrEnum):
    DOMAIN = "domain"
    REGIONAL = "regional"
    COMPREHENSIVE = "comprehensive"


class LoadState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class UploadState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


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
    ``loading``, and who started it: its run records its outcome as theirs."""

    actor: Actor
    zone: str
    dataset: str
    load: str  # the load's own id: it names the load whatever its outcome
    version: int  # the number it holds while it runs; released if it fails
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
