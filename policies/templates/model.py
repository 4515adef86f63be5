"""The template model: what one published template version is, and the outcome words it answers.

A template answers one question about one subject (an enterprise, keyed by the dataset's privacy
unit) with an outcome from a fixed set — ``match``/``no_match``/``cannot_verify``,
``yes``/``no``/``cannot_verify`` or one of a fixed list of band ids — and never with a value.
Everything that could be turned into an oracle is fixed in the template file: tolerances, bands,
look-back windows, and the set a requester may pick ``N`` from. Requesters never choose a
threshold. Leakage limits are part of the template, in integer millibits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

MILLIBITS_PER_BIT: Final = 1000
"""Leakage is accounted in integer millibits (rounded up), never in float sums."""

MAX_CLAIM: Final = 2**53 - 1
"""Largest numeric claim: claims go into canonical JSON (RFC 8785), whose numbers are doubles."""

MATCH: Final = "match"
NO_MATCH: Final = "no_match"
YES: Final = "yes"
NO: Final = "no"
CANNOT_VERIFY: Final = "cannot_verify"

Outcome = str
"""An outcome: ``match``, ``no_match``, ``yes``, ``no``, ``cannot_verify`` or a band id."""


class Kind(StrEnum):
    """The fixed set of predicates the runtime implements in SQL."""

    STATUS = "status"
    AGE = "age"
    REVENUE_TOLERANCE = "revenue_tolerance"
    REVENUE_BAND = "revenue_band"
    TAX_CONTINUITY = "tax_continuity"
    SI_CONTINUITY = "si_continuity"
    UTILITY_ACTIVITY = "utility_activity"


class ClaimType(StrEnum):
    NONE = "none"  # the template asks about the record alone (status, band)
    NUMBER = "number"  # a declared integer amount within [minimum, maximum]
    CHOICE = "choice"  # an integer picked from a fixed set (e.g. N years)


class OutcomeKind(StrEnum):
    MATCH = "match"  # match / no_match / cannot_verify
    YES_NO = "yes_no"  # yes / no / cannot_verify
    BAND = "band"  # one band id / cannot_verify


@dataclass(frozen=True)
class Band:
    """A half-open band ``[lower, upper)``; ``upper`` is ``None`` for the open top band."""

    id: str
    lower: int
    upper: int | None

    def contains(self, value: Decimal) -> bool:
        return value >= self.lower and (self.upper is None or value < self.upper)


@dataclass(frozen=True)
class ClaimSpec:
    type: ClaimType
    choices: tuple[int, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""

    def public(self) -> dict[str, object]:
        doc: dict[str, object] = {"type": self.type.value}
        if self.type == ClaimType.CHOICE:
            doc["choices"] = list(self.choices)
        if self.type == ClaimType.NUMBER:
            doc["minimum"] = self.minimum
            doc["maximum"] = self.maximum
        if self.unit:
            doc["unit"] = self.unit
        return doc


@dataclass(frozen=True)
class Template:
    """One version of a verification template. ``(id, version)`` is immutable once published."""

    id: str
    version: int
    title: str
    dataset: str
    subject: str  # the dataset's privacy unit column
    kind: Kind
    attribute: str  # the hidden value it narrows; templates on one attribute share the cap
    claim: ClaimSpec
    outcome: OutcomeKind
    bits: int  # millibits charged per answer, whatever the outcome
    max_bits: int  # millibits per subject, per attribute, per window, across all tenants
    max_claims: int  # distinct claims per subject and attribute per window
    quota: int  # answers per tenant, per template (all versions), per window
    window: timedelta
    bands: tuple[Band, ...] = ()
    tolerance: Decimal | None = None  # revenue_tolerance: relative, e.g. Decimal("0.10")
    months: int | None = None  # look-back in months ending at the last data month
    statuses: tuple[str, ...] = ()  # status: registry statuses that answer "yes"
    description: str = ""
    source: str = ""  # the file it was loaded from, for error messages

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.version)

    @property
    def outcomes(self) -> tuple[Outcome, ...]:
        """Every outcome this template can return, ``cannot_verify`` last."""
        if self.outcome == OutcomeKind.MATCH:
            return (MATCH, NO_MATCH, CANNOT_VERIFY)
        if self.outcome == OutcomeKind.YES_NO:
            return (YES, NO, CANNOT_VERIFY)
        return (*(band.id for band in self.bands), CANNOT_VERIFY)

    def public(self) -> dict[str, object]:
        """The JSON-ready description for ``GET /v1/templates`` (everything here is public)."""
        parameters: dict[str, object] = {}
        if self.tolerance is not None:
            parameters["tolerance"] = str(self.tolerance)
        if self.months is not None:
            parameters["months"] = self.months
        if self.statuses:
            parameters["statuses"] = list(self.statuses)
        doc: dict[str, object] = {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "dataset": self.dataset,
            "subject": self.subject,
            "kind": self.kind.value,
            "attribute": self.attribute,
            "parameters": parameters,
            "claim": self.claim.public(),
            "outcome": self.outcome.value,
            "outcomes": list(self.outcomes),
            "limits": {
                "bits": _bits_text(self.bits),
                "max_bits": _bits_text(self.max_bits),
                "max_claims": self.max_claims,
                "quota": self.quota,
                "window_days": self.window.days,
            },
        }
        if self.bands:
            doc["bands"] = [{"id": b.id, "lower": b.lower, "upper": b.upper} for b in self.bands]
        return doc


def _bits_text(millibits: int) -> str:
    return str(Decimal(millibits) / MILLIBITS_PER_BIT)


def default_bits(outcome: OutcomeKind, bands: int = 0) -> int:
    """Default leakage per answer in millibits: 1 bit for a binary question, log2(#bands) for a
    band answer (rounded up). ``cannot_verify`` depends only on how complete the subject's
    records are, which does not change between claims, so it is not charged separately."""
    if outcome == OutcomeKind.BAND:
        return max(MILLIBITS_PER_BIT, math.ceil(math.log2(bands) * MILLIBITS_PER_BIT - 1e-9))
    return MILLIBITS_PER_BIT
