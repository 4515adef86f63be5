"""Verification templates (核验模板): versioned, fixed predicates over one subject's records.

A template answers one question about one subject (an enterprise, keyed by the dataset's privacy
unit) with an outcome from a fixed set — ``match``/``no_match``/``cannot_verify``,
``yes``/``no``/``cannot_verify`` or one of a fixed list of band ids — and never with a value.
Everything that could be turned into an oracle is fixed in the template file: tolerances, bands,
look-back windows, and the set a requester may pick ``N`` from. Requesters never choose a
threshold.

Templates are TOML files validated strictly (:func:`parse_template`); errors are
:class:`~policies.errors.PolicyError` naming the file, dotted key and rule, as for policies.

The predicate is not free SQL: each template names a :class:`Kind` from a fixed set, and
:func:`template_sql` generates a parameterised DuckDB query for it over the dataset's tables. The
query reads only rows of one subject and returns exactly one row of *facts* (counts, one sum);
:func:`decide` maps facts and claim to the outcome. The facts never leave the runtime.

This module is pure: no I/O beyond reading template files, no DuckDB.
"""

from __future__ import annotations

import calendar
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum, StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from policies.errors import InvalidClaim, InvalidRequest, NotFound, PolicyError
from policies.loader import read_toml
from policies.model import ColumnType, Policy

__all__ = [
    "CANNOT_VERIFY",
    "MATCH",
    "MAX_CLAIM",
    "MILLIBITS_PER_BIT",
    "NO",
    "NO_MATCH",
    "YES",
    "Band",
    "Claim",
    "ClaimSpec",
    "ClaimType",
    "Kind",
    "Outcome",
    "OutcomeKind",
    "Slot",
    "Template",
    "TemplateSet",
    "bind",
    "bind_batch",
    "check_claim",
    "check_template",
    "decide",
    "default_bits",
    "fact_columns",
    "load_template",
    "load_templates",
    "parse_template",
    "subjects_sql",
    "template_batch_query",
    "template_batch_sql",
    "template_query",
    "template_sql",
]

# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

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

Claim = int | None
"""A requester's claim: an integer (a declared amount, or ``N`` picked from a fixed set) or
``None`` for templates without a claim."""


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


# ---------------------------------------------------------------------------------------------
# What each kind needs
# ---------------------------------------------------------------------------------------------

_NUMERIC = (ColumnType.INTEGER, ColumnType.FLOAT)


@dataclass(frozen=True)
class _KindRule:
    claim: ClaimType
    outcome: OutcomeKind
    parameters: frozenset[str]  # required [parameters] keys (no others allowed)
    columns: Mapping[str, Mapping[str, tuple[ColumnType, ...]]]  # table -> column -> types
    facts: tuple[str, ...]
    max_choice: int | None = None  # upper bound of N for choice claims (None: months)


_MONTHLY_TAX = {"month": (ColumnType.DATE,), "revenue": _NUMERIC}
_REGISTRY_ONLY: Mapping[str, tuple[ColumnType, ...]] = {}

_KINDS: Final[Mapping[Kind, _KindRule]] = {
    Kind.STATUS: _KindRule(
        ClaimType.NONE,
        OutcomeKind.YES_NO,
        frozenset({"statuses"}),
        {"registry": {"status": (ColumnType.STRING,)}},
        ("n_records", "n_accepted"),
    ),
    Kind.AGE: _KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {"registry": {"founded": (ColumnType.DATE,)}},
        ("n_records", "n_old_enough"),
        max_choice=200,
    ),
    Kind.REVENUE_TOLERANCE: _KindRule(
        ClaimType.NUMBER,
        OutcomeKind.MATCH,
        frozenset({"tolerance", "months"}),
        {"tax": _MONTHLY_TAX},
        ("n_months", "revenue_sum"),
    ),
    Kind.REVENUE_BAND: _KindRule(
        ClaimType.NONE,
        OutcomeKind.BAND,
        frozenset({"months"}),
        {"tax": _MONTHLY_TAX},
        ("n_months", "revenue_sum"),
    ),
    Kind.TAX_CONTINUITY: _KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {
            "registry": _REGISTRY_ONLY,
            "tax": {"month": (ColumnType.DATE,), "arrears": (ColumnType.BOOLEAN,)},
        },
        ("n_records", "n_months"),
        max_choice=240,
    ),
    Kind.SI_CONTINUITY: _KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset(),
        {
            "registry": _REGISTRY_ONLY,
            "social_insurance": {"month": (ColumnType.DATE,), "arrears": (ColumnType.BOOLEAN,)},
        },
        ("n_records", "n_months"),
        max_choice=240,
    ),
    Kind.UTILITY_ACTIVITY: _KindRule(
        ClaimType.CHOICE,
        OutcomeKind.YES_NO,
        frozenset({"months"}),
        {
            "registry": _REGISTRY_ONLY,
            "utilities": {
                "month": (ColumnType.DATE,),
                "electricity_kwh": _NUMERIC,
                "water_m3": _NUMERIC,
            },
        },
        ("n_records", "n_active"),
    ),
}

_CONTINUITY_TABLE: Final = {Kind.TAX_CONTINUITY: "tax", Kind.SI_CONTINUITY: "social_insurance"}


def fact_columns(template: Template) -> tuple[str, ...]:
    """Names of the facts :func:`template_sql` returns, in column order."""
    return _KINDS[template.kind].facts


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

TEMPLATE_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DATASET_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
BAND_ID = re.compile(r"^[a-z0-9][a-z0-9_]{0,31}$")
MAX_VERSION: Final = 1_000_000
MAX_WINDOW_DAYS: Final = 366
MAX_BANDS: Final = 64
MAX_CHOICES: Final = 32
MAX_MONTHS: Final = 120

_TOP_KEYS = {
    "id",
    "version",
    "title",
    "description",
    "dataset",
    "subject",
    "kind",
    "attribute",
    "parameters",
    "claim",
    "outcome",
    "limits",
}
_CLAIM_KEYS = {"type", "choices", "minimum", "maximum", "unit"}
_OUTCOME_KEYS = {"kind", "bands"}
_BAND_KEYS = {"id", "lower", "upper"}
_LIMIT_KEYS = {"bits", "max_bits", "max_claims", "quota", "window_days"}
_PARAMETER_KEYS = {"tolerance", "months", "statuses"}
_OUTCOME_WORDS = {MATCH, NO_MATCH, YES, NO, CANNOT_VERIFY}


def load_template(path: Path) -> Template:
    """Read and validate one template file."""
    return parse_template(path.read_text(encoding="utf-8"), source=str(path))


def parse_template(text: str, source: str = "<template>") -> Template:
    """Validate template TOML text; ``source`` names the file in errors."""
    return _Reader(source).template(read_toml(text, source))


def load_templates(directory: Path) -> TemplateSet:
    """Load every ``*.toml`` under ``directory`` (sorted by name) into a checked set."""
    if not directory.is_dir():
        raise PolicyError(str(directory), "(directory)", "not_found", "no such directory")
    return TemplateSet.of(load_template(p) for p in sorted(directory.glob("*.toml")))


@dataclass(frozen=True)
class TemplateSet:
    """All published template versions. Templates sharing an attribute must agree on the
    per-attribute cap, the number of distinct claims and the window, since they share one
    per-subject leakage ledger."""

    templates: Mapping[tuple[str, int], Template]

    @staticmethod
    def of(templates: Iterable[Template]) -> TemplateSet:
        found: dict[tuple[str, int], Template] = {}
        by_attribute: dict[tuple[str, str], Template] = {}
        for t in templates:
            if t.key in found:
                raise PolicyError(
                    t.source,
                    "version",
                    "duplicate_version",
                    f"{t.id} version {t.version} is also defined in {found[t.key].source}",
                )
            found[t.key] = t
            first = by_attribute.setdefault((t.dataset, t.attribute), t)
            for name in ("subject", "max_bits", "max_claims", "window"):
                if getattr(first, name) != getattr(t, name):
                    raise PolicyError(
                        t.source,
                        "attribute",
                        "attribute_conflict",
                        f"templates on attribute '{t.attribute}' must agree on '{name}' "
                        f"(see {first.source})",
                    )
        return TemplateSet(dict(sorted(found.items())))

    def get(self, template_id: str, version: int | None = None) -> Template:
        """One version, or the latest version when ``version`` is ``None``."""
        if version is not None:
            found = self.templates.get((template_id, version))
            if found is None:
                raise NotFound("no such template version", template=template_id[:64])
            return found
        latest = self.latest.get(template_id)
        if latest is None:
            raise NotFound("no such template", template=template_id[:64])
        return latest

    @cached_property
    def latest(self) -> Mapping[str, Template]:
        """Each template's latest version, by id (asked for on every request line)."""
        found: dict[str, Template] = {}
        for (template_id, version), template in self.templates.items():
            if template_id not in found or found[template_id].version < version:
                found[template_id] = template
        return found

    def __iter__(self) -> Iterator[Template]:
        return iter(self.templates.values())

    def __len__(self) -> int:
        return len(self.templates)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, rule: str, message: str) -> PolicyError:
        return PolicyError(self.source, key, rule, message)

    @staticmethod
    def where(prefix: str, key: str) -> str:
        return f"{prefix}.{key}" if prefix else key

    def no_unknown(self, node: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        for key in node:
            if key not in allowed:
                raise self.fail(
                    self.where(prefix, key),
                    "unknown_key",
                    f"allowed keys: {', '.join(sorted(allowed))}",
                )

    def section(self, node: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = node.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "type", "must be a table")
        return value

    def string(
        self,
        node: Mapping[str, Any],
        key: str,
        prefix: str,
        *,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
        rule: str = "identifier",
    ) -> str:
        where = self.where(prefix, key)
        if key not in node:
            if required:
                raise self.fail(where, "required", "this key is required")
            return ""
        value = node[key]
        if not isinstance(value, str):
            raise self.fail(where, "type", "must be a string")
        if required and not value.strip():
            raise self.fail(where, "required", "must not be empty")
        if pattern is not None and not pattern.match(value):
            raise self.fail(where, rule, f"must match {pattern.pattern}")
        return value

    def integer(
        self,
        node: Mapping[str, Any],
        key: str,
        prefix: str,
        *,
        minimum: int,
        maximum: int,
        default: int | None = None,
    ) -> int:
        where = self.where(prefix, key)
        if key not in node:
            if default is None:
                raise self.fail(where, "required", "this key is required")
            return default
        value = node[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, "type", "must be an integer")
        if not minimum <= value <= maximum:
            raise self.fail(where, "range", f"must be between {minimum} and {maximum}")
        return value

    def decimal(self, node: Mapping[str, Any], key: str, prefix: str) -> Decimal:
        """A number given as a TOML integer, float or decimal string, kept exact."""
        where = self.where(prefix, key)
        if key not in node:
            raise self.fail(where, "required", "this key is required")
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(where, "type", "must be a number or a decimal string")
        try:
            # repr() of a float is its shortest round-trip form: 0.1 -> "0.1", exactly.
            result = Decimal(repr(value) if isinstance(value, float) else value)
        except InvalidOperation:
            raise self.fail(where, "type", "not a decimal number") from None
        if not result.is_finite():
            raise self.fail(where, "type", "must be finite")
        return result

    # -- the document -------------------------------------------------------------------------

    def template(self, doc: Mapping[str, Any]) -> Template:
        self.no_unknown(doc, _TOP_KEYS, "")
        template_id = self.string(doc, "id", "", pattern=TEMPLATE_ID)
        version = self.integer(doc, "version", "", minimum=1, maximum=MAX_VERSION)
        kind_text = self.string(doc, "kind", "", pattern=None)
        try:
            kind = Kind(kind_text)
        except ValueError:
            allowed = ", ".join(k.value for k in Kind)
            raise self.fail("kind", "enum", f"one of: {allowed}") from None
        rule = _KINDS[kind]

        parameters = self.section(doc, "parameters")
        self.no_unknown(parameters, _PARAMETER_KEYS, "parameters")
        missing = sorted(rule.parameters - parameters.keys())
        if missing:
            raise self.fail(f"parameters.{missing[0]}", "required", f"kind '{kind}' needs it")
        extra = sorted(parameters.keys() - rule.parameters)
        if extra:
            raise self.fail(f"parameters.{extra[0]}", "parameter_kind", f"kind '{kind}' has none")
        tolerance = self.tolerance(parameters) if "tolerance" in parameters else None
        months = (
            self.integer(parameters, "months", "parameters", minimum=1, maximum=MAX_MONTHS)
            if "months" in parameters
            else None
        )
        statuses = self.statuses(parameters) if "statuses" in parameters else ()

        claim = self.claim(self.section(doc, "claim"), rule, months)
        outcome_node = self.section(doc, "outcome")
        self.no_unknown(outcome_node, _OUTCOME_KEYS, "outcome")
        outcome_text = self.string(outcome_node, "kind", "outcome", pattern=None)
        try:
            outcome = OutcomeKind(outcome_text)
        except ValueError:
            allowed = ", ".join(o.value for o in OutcomeKind)
            raise self.fail("outcome.kind", "enum", f"one of: {allowed}") from None
        if outcome != rule.outcome:
            raise self.fail(
                "outcome.kind", "outcome_kind", f"kind '{kind}' answers '{rule.outcome}'"
            )
        bands = self.bands(outcome_node) if outcome == OutcomeKind.BAND else ()
        if outcome != OutcomeKind.BAND and "bands" in outcome_node:
            raise self.fail("outcome.bands", "bands_kind", "only band outcomes have bands")

        limits = self.section(doc, "limits")
        self.no_unknown(limits, _LIMIT_KEYS, "limits")
        bits = self.bits(limits, "bits") if "bits" in limits else default_bits(outcome, len(bands))
        max_bits = self.bits(limits, "max_bits")
        if bits > max_bits:
            raise self.fail(
                "limits.max_bits", "limits", "must allow at least one answer ('bits' or more)"
            )
        max_claims = self.integer(
            limits, "max_claims", "limits", minimum=1, maximum=1000, default=1
        )
        quota = self.integer(limits, "quota", "limits", minimum=1, maximum=10**9)
        window_days = self.integer(
            limits, "window_days", "limits", minimum=1, maximum=MAX_WINDOW_DAYS
        )
        return Template(
            id=template_id,
            version=version,
            title=self.string(doc, "title", "", pattern=None),
            description=self.string(doc, "description", "", required=False),
            dataset=self.string(doc, "dataset", "", pattern=DATASET_ID),
            subject=self.string(doc, "subject", "", pattern=IDENTIFIER),
            kind=kind,
            attribute=self.string(doc, "attribute", "", pattern=IDENTIFIER),
            claim=claim,
            outcome=outcome,
            bands=bands,
            tolerance=tolerance,
            months=months,
            statuses=statuses,
            bits=bits,
            max_bits=max_bits,
            max_claims=max_claims,
            quota=quota,
            window=timedelta(days=window_days),
            source=self.source,
        )

    def tolerance(self, parameters: Mapping[str, Any]) -> Decimal:
        value = self.decimal(parameters, "tolerance", "parameters")
        if not Decimal(0) < value < Decimal(1):
            raise self.fail("parameters.tolerance", "range", "a fraction between 0 and 1")
        return value

    def statuses(self, parameters: Mapping[str, Any]) -> tuple[str, ...]:
        raw = parameters["statuses"]
        where = "parameters.statuses"
        if not isinstance(raw, list) or not raw or len(raw) > MAX_CHOICES:
            raise self.fail(where, "type", f"a list of 1 to {MAX_CHOICES} strings")
        if not all(isinstance(v, str) and IDENTIFIER.match(v) for v in raw):
            raise self.fail(where, "identifier", "every status is a lowercase identifier")
        if len(set(raw)) != len(raw):
            raise self.fail(where, "duplicate", "statuses must be distinct")
        return tuple(raw)

    def bits(self, limits: Mapping[str, Any], key: str) -> int:
        value = self.decimal(limits, key, "limits")
        if not Decimal(0) < value <= Decimal(64):
            raise self.fail(f"limits.{key}", "range", "must be more than 0 and at most 64 bits")
        return math.ceil(value * MILLIBITS_PER_BIT)

    def claim(self, node: Mapping[str, Any], rule: _KindRule, months: int | None) -> ClaimSpec:
        self.no_unknown(node, _CLAIM_KEYS, "claim")
        type_text = self.string(node, "type", "claim", pattern=None)
        try:
            ctype = ClaimType(type_text)
        except ValueError:
            allowed = ", ".join(c.value for c in ClaimType)
            raise self.fail("claim.type", "enum", f"one of: {allowed}") from None
        if ctype != rule.claim:
            raise self.fail("claim.type", "claim_kind", f"this kind takes a '{rule.claim}' claim")
        unit = self.string(node, "unit", "claim", required=False)
        if ctype == ClaimType.NONE:
            extra = sorted(set(node) - {"type", "unit"})
            if extra:
                raise self.fail(f"claim.{extra[0]}", "claim_kind", "a 'none' claim has no values")
            return ClaimSpec(ctype, unit=unit)
        if ctype == ClaimType.NUMBER:
            if "choices" in node:
                raise self.fail("claim.choices", "claim_kind", "only choice claims have choices")
            minimum = self.integer(
                node, "minimum", "claim", minimum=0, maximum=MAX_CLAIM, default=0
            )
            maximum = self.integer(node, "maximum", "claim", minimum=0, maximum=MAX_CLAIM)
            if maximum < minimum:
                raise self.fail("claim.maximum", "range", "must not be below 'minimum'")
            return ClaimSpec(ctype, minimum=minimum, maximum=maximum, unit=unit)
        for key in ("minimum", "maximum"):
            if key in node:
                raise self.fail(f"claim.{key}", "claim_kind", "choice claims have 'choices'")
        raw = node.get("choices")
        where = "claim.choices"
        if raw is None:
            raise self.fail(where, "required", "choice claims list their choices")
        if not isinstance(raw, list) or not raw or len(raw) > MAX_CHOICES:
            raise self.fail(where, "type", f"a list of 1 to {MAX_CHOICES} integers")
        top = months if rule.max_choice is None else rule.max_choice
        assert top is not None
        for value in raw:
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.fail(where, "type", "every choice is an integer")
            if not 1 <= value <= top:
                raise self.fail(where, "range", f"every choice is between 1 and {top}")
        if any(b <= a for a, b in itertools.pairwise(raw)):
            raise self.fail(where, "sorted", "choices must be strictly increasing")
        return ClaimSpec(ctype, choices=tuple(raw), unit=unit)

    def bands(self, node: Mapping[str, Any]) -> tuple[Band, ...]:
        raw = node.get("bands")
        where = "outcome.bands"
        if not isinstance(raw, list) or len(raw) < 2 or len(raw) > MAX_BANDS:
            raise self.fail(where, "required", f"a band outcome has 2 to {MAX_BANDS} bands")
        bands: list[Band] = []
        for i, spec in enumerate(raw):
            prefix = f"{where}[{i}]"
            if not isinstance(spec, dict):
                raise self.fail(prefix, "type", "each band is a table")
            self.no_unknown(spec, _BAND_KEYS, prefix)
            band_id = self.string(spec, "id", prefix, pattern=BAND_ID)
            if band_id in _OUTCOME_WORDS:
                raise self.fail(f"{prefix}.id", "reserved", f"'{band_id}' is an outcome word")
            lower = self.integer(spec, "lower", prefix, minimum=0, maximum=MAX_CLAIM)
            upper: int | None = None
            if "upper" in spec:
                upper = self.integer(spec, "upper", prefix, minimum=0, maximum=MAX_CLAIM)
                if upper <= lower:
                    raise self.fail(f"{prefix}.upper", "range", "must exceed 'lower'")
            elif i != len(raw) - 1:
                raise self.fail(f"{prefix}.upper", "required", "only the last band is open")
            if bands:
                previous = bands[-1]
                if band_id in {b.id for b in bands}:
                    raise self.fail(f"{prefix}.id", "duplicate", "band ids must be distinct")
                if lower != previous.upper:
                    raise self.fail(
                        f"{prefix}.lower", "contiguous", "each band starts where the last ended"
                    )
            bands.append(Band(band_id, lower, upper))
        return tuple(bands)


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def check_claim(template: Template, claim: object) -> Claim:
    """Validate a requester's claim against the template; returns it as a :data:`Claim`."""
    spec = template.claim
    if spec.type == ClaimType.NONE:
        if claim is not None:
            raise InvalidClaim(f"{template.id} takes no claim", rule="claim_none")
        return None
    if not isinstance(claim, int) or isinstance(claim, bool):
        raise InvalidClaim(f"{template.id} takes an integer claim", rule="claim_type")
    if spec.type == ClaimType.CHOICE:
        if claim not in spec.choices:
            raise InvalidClaim(
                f"{template.id} takes one of {list(spec.choices)}", rule="claim_choice"
            )
        return claim
    assert spec.minimum is not None and spec.maximum is not None
    if not spec.minimum <= claim <= spec.maximum:
        raise InvalidClaim(
            f"{template.id} takes a claim between {spec.minimum} and {spec.maximum}",
            rule="claim_range",
        )
    return claim


# ---------------------------------------------------------------------------------------------
# Binding a template to a dataset, and its SQL
# ---------------------------------------------------------------------------------------------


class Slot(Enum):
    """Placeholders in the parameter list of :func:`template_sql` (filled by :func:`bind`) and
    of :func:`template_batch_sql` (filled by :func:`bind_batch`)."""

    SUBJECT = "subject"
    CLAIM = "claim"
    LINES = "lines"  # batch: the request line numbers 0..n-1
    SUBJECTS = "subjects"  # batch: one subject id per line
    CLAIMS = "claims"  # batch: one claim per line (only kinds whose SQL reads the claim)


def check_template(template: Template, policy: Policy) -> None:
    """Check that ``template`` fits ``policy``: same dataset, subject = privacy unit, and every
    table and column its kind reads exists with a usable type."""
    fail = _failer(template)
    if template.dataset != policy.dataset:
        raise fail("dataset", "template_dataset", f"the policy is for '{policy.dataset}'")
    if template.subject != policy.privacy_unit:
        raise fail("subject", "privacy_unit", f"must be the privacy unit '{policy.privacy_unit}'")
    tables = {t.name: t for t in policy.tables}
    for table_name, columns in _KINDS[template.kind].columns.items():
        table = tables.get(table_name)
        if table is None:
            raise fail("kind", "template_table", f"kind '{template.kind}' reads '{table_name}'")
        for column_name, types in columns.items():
            column = table.column(column_name)
            if column is None or column.type not in types:
                wanted = " or ".join(t.value for t in types)
                raise fail(
                    "kind",
                    "template_column",
                    f"kind '{template.kind}' reads {table_name}.{column_name} ({wanted})",
                )
    if template.claim.type == ClaimType.CHOICE and template.kind != Kind.AGE:
        table_name = next(t for t in _KINDS[template.kind].columns if t != "registry")
        first, last = _month_range(policy, table_name, template)
        span = _months_between(first, last) + 1
        if max(template.claim.choices) > span:
            raise fail("claim.choices", "range", f"the data cover only {span} months")


def template_sql(
    template: Template, policy: Policy, *, as_of: date | None = None
) -> tuple[str, list[object]]:
    """The parameterised DuckDB query of ``template`` over ``policy``'s dataset.

    Returns ``(sql, params)``: ``params`` holds the fixed values (dates, statuses) and the
    :class:`Slot` placeholders for the subject id and the claim; fill them with :func:`bind`.
    The query filters every table on ``subject = ?``, so it reads one subject's rows only, and
    returns exactly one row whose columns are :func:`fact_columns`.

    The windows end at the last data month: the ``month`` column's declared ``public_range``
    upper bound, or the month of ``as_of`` when the runtime passes the dataset version's
    reference date. Age is measured at the last day of that month (or at ``as_of``).
    """
    check_template(template, policy)
    unit = policy.privacy_unit
    kind = template.kind
    if kind == Kind.STATUS:
        marks = ", ".join("?" for _ in template.statuses)
        sql = (
            f"SELECT count(*) AS n_records, "
            f"count(*) FILTER (WHERE status IN ({marks})) AS n_accepted "
            f"FROM registry WHERE {unit} = ?"
        )
        return sql, [*template.statuses, Slot.SUBJECT]
    if kind == Kind.AGE:
        reference = as_of if as_of is not None else _month_end(_last_data_month(policy, template))
        sql = (
            "SELECT count(*) AS n_records, "
            "count(*) FILTER (WHERE founded <= CAST(CAST(? AS DATE) "
            "- to_years(CAST(? AS INTEGER)) AS DATE)) AS n_old_enough "
            f"FROM registry WHERE {unit} = ?"
        )
        return sql, [reference, Slot.CLAIM, Slot.SUBJECT]
    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        last = _last_month(policy, "tax", template, as_of)
        first = _add_months(last, 1 - template.months)
        sql = (
            "SELECT count(DISTINCT month) AS n_months, "
            "coalesce(sum(CAST(revenue AS DECIMAL(18, 2))), 0) AS revenue_sum "
            f"FROM tax WHERE {unit} = ? AND month BETWEEN ? AND ?"
        )
        return sql, [Slot.SUBJECT, first, last]
    if kind in _CONTINUITY_TABLE:
        table = _CONTINUITY_TABLE[kind]
        last = _last_month(policy, table, template, as_of)
        sql = (
            f"SELECT (SELECT count(*) FROM registry WHERE {unit} = ?) AS n_records, "
            f"(SELECT count(DISTINCT month) FROM {table} WHERE {unit} = ? AND NOT arrears "
            "AND month > CAST(? AS DATE) - to_months(CAST(? AS INTEGER)) "
            "AND month <= CAST(? AS DATE)) AS n_months"
        )
        return sql, [Slot.SUBJECT, Slot.SUBJECT, last, Slot.CLAIM, last]
    assert kind == Kind.UTILITY_ACTIVITY and template.months is not None
    last = _last_month(policy, "utilities", template, as_of)
    first = _add_months(last, 1 - template.months)
    sql = (
        f"SELECT (SELECT count(*) FROM registry WHERE {unit} = ?) AS n_records, "
        f"(SELECT count(DISTINCT month) FROM utilities WHERE {unit} = ? "
        "AND month BETWEEN ? AND ? AND (electricity_kwh > 0 OR water_m3 > 0)) AS n_active"
    )
    return sql, [Slot.SUBJECT, Slot.SUBJECT, first, last]


def bind(params: Sequence[object], subject: str, claim: Claim) -> list[object]:
    """Fill the :class:`Slot` placeholders of ``params`` with the subject id and the claim."""
    if not isinstance(subject, str) or not subject:
        raise InvalidRequest("the subject id must be a non-empty string")
    bound: list[object] = []
    for p in params:
        if p is Slot.SUBJECT:
            bound.append(subject)
        elif p is Slot.CLAIM:
            if claim is None:
                raise InvalidRequest("this template query needs a claim")
            bound.append(claim)
        else:
            bound.append(p)
    return bound


def template_query(
    template: Template,
    policy: Policy,
    subject: str,
    claim: Claim,
    *,
    as_of: date | None = None,
) -> tuple[str, list[object]]:
    """:func:`template_sql` with the claim checked and the placeholders bound."""
    sql, params = template_sql(template, policy, as_of=as_of)
    return sql, bind(params, subject, check_claim(template, claim))


# ---------------------------------------------------------------------------------------------
# Many subjects at once
# ---------------------------------------------------------------------------------------------

_BATCH_LINES = "SELECT unnest(CAST(? AS BIGINT[])) AS line, unnest(CAST(? AS VARCHAR[])) AS subject"


def template_batch_sql(
    template: Template, policy: Policy, *, as_of: date | None = None
) -> tuple[str, list[object]]:
    """The query of ``template`` for many request lines at once: the same facts as
    :func:`template_sql`, one row per line, ``(line, *facts)``, ordered by line.

    The lines are passed as lists (``Slot.LINES``, ``Slot.SUBJECTS`` and, for the kinds whose
    SQL reads the claim, ``Slot.CLAIMS``; fill them with :func:`bind_batch`). Every table is read
    only for the subjects listed (a semi-join on the privacy unit) and grouped by line, so a line
    sees its own subject's rows only, exactly like the single query. Lines may repeat a subject.
    """
    check_template(template, policy)
    unit = policy.privacy_unit
    kind = template.kind
    lines = [Slot.LINES, Slot.SUBJECTS]
    wanted = f"{unit} IN (SELECT subject FROM req)"
    if kind == Kind.STATUS:
        marks = ", ".join("?" for _ in template.statuses)
        sql = (
            f"WITH req AS ({_BATCH_LINES}), "
            f"f AS (SELECT {unit} AS subject, count(*) AS n_records, "
            f"count(*) FILTER (WHERE status IN ({marks})) AS n_accepted "
            f"FROM registry WHERE {wanted} GROUP BY {unit}) "
            "SELECT req.line, coalesce(f.n_records, 0) AS n_records, "
            "coalesce(f.n_accepted, 0) AS n_accepted "
            "FROM req LEFT JOIN f ON f.subject = req.subject ORDER BY req.line"
        )
        return sql, [*lines, *template.statuses]
    if kind == Kind.AGE:
        reference = as_of if as_of is not None else _month_end(_last_data_month(policy, template))
        sql = (
            f"WITH req AS ({_BATCH_LINES}, unnest(CAST(? AS BIGINT[])) AS claim) "
            "SELECT req.line, count(r.subject) AS n_records, "
            "count(*) FILTER (WHERE r.founded <= CAST(CAST(? AS DATE) "
            "- to_years(CAST(req.claim AS INTEGER)) AS DATE)) AS n_old_enough "
            f"FROM req LEFT JOIN (SELECT {unit} AS subject, founded FROM registry "
            f"WHERE {wanted}) r ON r.subject = req.subject "
            "GROUP BY req.line ORDER BY req.line"
        )
        return sql, [*lines, Slot.CLAIMS, reference]
    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        last = _last_month(policy, "tax", template, as_of)
        first = _add_months(last, 1 - template.months)
        sql = (
            f"WITH req AS ({_BATCH_LINES}), "
            f"f AS (SELECT {unit} AS subject, count(DISTINCT month) AS n_months, "
            "sum(CAST(revenue AS DECIMAL(18, 2))) AS revenue_sum "
            f"FROM tax WHERE {wanted} AND month BETWEEN ? AND ? GROUP BY {unit}) "
            "SELECT req.line, coalesce(f.n_months, 0) AS n_months, "
            "coalesce(f.revenue_sum, 0) AS revenue_sum "
            "FROM req LEFT JOIN f ON f.subject = req.subject ORDER BY req.line"
        )
        return sql, [*lines, first, last]
    registry = (
        f"reg AS (SELECT {unit} AS subject, count(*) AS n_records FROM registry "
        f"WHERE {wanted} GROUP BY {unit})"
    )
    if kind in _CONTINUITY_TABLE:
        table = _CONTINUITY_TABLE[kind]
        last = _last_month(policy, table, template, as_of)
        sql = (
            f"WITH req AS ({_BATCH_LINES}, unnest(CAST(? AS BIGINT[])) AS claim), {registry}, "
            f"m AS (SELECT DISTINCT {unit} AS subject, month FROM {table} "
            f"WHERE {wanted} AND NOT arrears AND month <= CAST(? AS DATE)) "
            "SELECT req.line, coalesce(any_value(reg.n_records), 0) AS n_records, "
            "count(DISTINCT m.month) FILTER (WHERE m.month > CAST(? AS DATE) "
            "- to_months(CAST(req.claim AS INTEGER))) AS n_months "
            "FROM req LEFT JOIN reg ON reg.subject = req.subject "
            "LEFT JOIN m ON m.subject = req.subject "
            "GROUP BY req.line ORDER BY req.line"
        )
        return sql, [*lines, Slot.CLAIMS, last, last]
    assert kind == Kind.UTILITY_ACTIVITY and template.months is not None
    last = _last_month(policy, "utilities", template, as_of)
    first = _add_months(last, 1 - template.months)
    sql = (
        f"WITH req AS ({_BATCH_LINES}), {registry}, "
        f"u AS (SELECT {unit} AS subject, count(DISTINCT month) AS n_active FROM utilities "
        f"WHERE {wanted} AND month BETWEEN ? AND ? AND (electricity_kwh > 0 OR water_m3 > 0) "
        f"GROUP BY {unit}) "
        "SELECT req.line, coalesce(reg.n_records, 0) AS n_records, "
        "coalesce(u.n_active, 0) AS n_active "
        "FROM req LEFT JOIN reg ON reg.subject = req.subject "
        "LEFT JOIN u ON u.subject = req.subject ORDER BY req.line"
    )
    return sql, [*lines, first, last]


def bind_batch(
    params: Sequence[object], subjects: Sequence[str], claims: Sequence[Claim]
) -> list[object]:
    """Fill the batch placeholders of ``params``: line ``i`` asks about ``subjects[i]`` with
    ``claims[i]`` (claims already checked with :func:`check_claim`)."""
    if len(subjects) != len(claims) or not subjects:
        raise InvalidRequest("a batch needs one claim per subject, and at least one line")
    if not all(isinstance(s, str) and s for s in subjects):
        raise InvalidRequest("the subject id must be a non-empty string")
    bound: list[object] = []
    for p in params:
        if p is Slot.LINES:
            bound.append(list(range(len(subjects))))
        elif p is Slot.SUBJECTS:
            bound.append(list(subjects))
        elif p is Slot.CLAIMS:
            if any(c is None for c in claims):
                raise InvalidRequest("this template query needs a claim")
            bound.append(list(claims))
        elif isinstance(p, Slot):
            raise ValueError(f"{p} is not a batch placeholder")
        else:
            bound.append(p)
    return bound


def subjects_sql(policy: Policy) -> str:
    """One page of the subjects that have a record in any table of ``policy``'s dataset, in
    order: parameters ``(after, limit)``, the subjects greater than ``after``. Every other
    subject's facts, on any template, are those of a subject with no record at all."""
    unit = policy.privacy_unit
    tables = [t.name for t in policy.tables if t.column(unit) is not None]
    if not tables:
        raise ValueError(f"no table of {policy.dataset} has the privacy unit column")
    union = " UNION ".join(f"SELECT {unit} AS subject FROM {table}" for table in tables)
    return (
        f"SELECT DISTINCT subject FROM ({union}) WHERE subject IS NOT NULL AND subject > ? "
        "ORDER BY subject LIMIT ?"
    )


def template_batch_query(
    template: Template,
    policy: Policy,
    subjects: Sequence[str],
    claims: Sequence[Claim],
    *,
    as_of: date | None = None,
) -> tuple[str, list[object]]:
    """:func:`template_batch_sql` with every claim checked and the placeholders bound."""
    sql, params = template_batch_sql(template, policy, as_of=as_of)
    checked = [check_claim(template, c) for c in claims]
    return sql, bind_batch(params, subjects, checked)


# ---------------------------------------------------------------------------------------------
# Facts -> outcome
# ---------------------------------------------------------------------------------------------


def decide(
    template: Template, facts: Sequence[object] | Mapping[str, object], claim: Claim
) -> Outcome:
    """Map the facts row of :func:`template_sql` (a tuple or a mapping) and the claim to the
    outcome. Pure and exact (decimal arithmetic). Missing records fold into ``cannot_verify``."""
    names = fact_columns(template)
    if isinstance(facts, Mapping):
        values = {name: facts[name] for name in names}
    else:
        if len(facts) != len(names):
            raise ValueError(f"expected {len(names)} facts, got {len(facts)}")
        values = dict(zip(names, facts, strict=True))
    claim = check_claim(template, claim)
    kind = template.kind

    if kind in (Kind.REVENUE_TOLERANCE, Kind.REVENUE_BAND):
        assert template.months is not None
        if _count(values["n_months"]) < template.months:
            return CANNOT_VERIFY
        revenue = _decimal(values["revenue_sum"])
        if kind == Kind.REVENUE_BAND:
            for band in template.bands:
                if band.contains(revenue):
                    return band.id
            return CANNOT_VERIFY
        assert template.tolerance is not None and claim is not None
        within = abs(Decimal(claim) - revenue) <= template.tolerance * revenue
        return MATCH if within else NO_MATCH

    n_records = _count(values["n_records"])
    if n_records == 0:
        return CANNOT_VERIFY
    if kind == Kind.STATUS:
        return YES if _count(values["n_accepted"]) == n_records else NO
    if kind == Kind.AGE:
        return YES if _count(values["n_old_enough"]) == n_records else NO
    assert claim is not None
    if kind in _CONTINUITY_TABLE:
        return YES if _count(values["n_months"]) >= claim else NO
    assert kind == Kind.UTILITY_ACTIVITY
    return YES if _count(values["n_active"]) >= claim else NO


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("a count fact must be a non-negative integer")
    return value


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(value))
    raise ValueError("a sum fact must be a finite number")


# ---------------------------------------------------------------------------------------------
# Months
# ---------------------------------------------------------------------------------------------


def _failer(template: Template) -> Callable[[str, str, str], PolicyError]:
    def fail(key: str, rule: str, message: str) -> PolicyError:
        return PolicyError(template.source or template.id, key, rule, message)

    return fail


def _month_range(policy: Policy, table_name: str, template: Template) -> tuple[date, date]:
    table = next(t for t in policy.tables if t.name == table_name)
    column = table.column("month")
    if column is None or column.public_range is None:
        raise PolicyError(
            template.source or template.id,
            "kind",
            "reference_month",
            f"{table_name}.month needs a public_range to place the window",
        )
    first, last = column.public_range
    return first.replace(day=1), last.replace(day=1)


def _last_month(policy: Policy, table: str, template: Template, as_of: date | None) -> date:
    if as_of is not None:
        return as_of.replace(day=1)
    return _month_range(policy, table, template)[1]


def _last_data_month(policy: Policy, template: Template) -> date:
    """The latest month any ``month`` column of the dataset declares."""
    lasts = [
        col.public_range[1].replace(day=1)
        for table in policy.tables
        if (col := table.column("month")) is not None and col.public_range is not None
    ]
    if not lasts:
        raise PolicyError(
            template.source or template.id,
            "kind",
            "reference_month",
            "no month column declares a public_range; pass as_of",
        )
    return max(lasts)


def _add_months(month: date, delta: int) -> date:
    index = month.year * 12 + month.month - 1 + delta
    return date(index // 12, index % 12 + 1, 1)


def _months_between(first: date, last: date) -> int:
    return (last.year - first.year) * 12 + last.month - first.month


def _month_end(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])
