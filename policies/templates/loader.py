"""Loading templates: TOML files validated strictly into :class:`Template` versions, and the set
of all published versions the runtime answers from.

Errors are :class:`~policies.errors.PolicyError` naming the file, dotted key and rule, as for
policies. A template's kind fixes which parameters, claim type and outcome kind it may declare
(:data:`~policies.templates.kinds.KINDS`); the reader holds the file to that.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any, Final

from policies.errors import NotFound, PolicyError
from policies.templates.kinds import KINDS, KindRule
from policies.templates.model import (
    CANNOT_VERIFY,
    MATCH,
    MAX_CLAIM,
    MILLIBITS_PER_BIT,
    NO,
    NO_MATCH,
    YES,
    Band,
    ClaimSpec,
    ClaimType,
    Kind,
    OutcomeKind,
    Template,
    default_bits,
)
from policies.toml import TomlReader, read_toml

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


class _Reader(TomlReader):
    """The template document's checks, on top of the ones every TOML file shares."""

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
        """A string; a required one must not be blank, and it must match ``pattern`` if given."""
        value = super().string(node, key, prefix, required=required)
        if key in node:
            where = self.where(prefix, key)
            if required and not value.strip():
                raise self.fail(where, "required", "must not be empty")
            if pattern is not None and not pattern.match(value):
                raise self.fail(where, rule, f"must match {pattern.pattern}")
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
        rule = KINDS[kind]

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

    def claim(self, node: Mapping[str, Any], rule: KindRule, months: int | None) -> ClaimSpec:
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
