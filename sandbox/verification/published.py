"""The published templates: every template version as the API shows it to anyone asking.

The template model, its loader and its SQL are :mod:`policies.templates`; this module only
answers ``GET /v1/templates`` and ``GET /v1/templates/{id}`` from the set loaded at startup, so
that what can be asked is public and the same for every caller. Each version is a
:class:`PublishedTemplate` (with its versions, a :class:`TemplateDetail`), built from the
template's public description (:meth:`policies.templates.model.Template.public`); members a
template does not have are ``None`` (its claim's choices, bounds and unit, its parameters, its
bands).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.templates.loader import TemplateSet
from policies.templates.model import Template

__all__ = [
    "PublishedBand",
    "PublishedClaim",
    "PublishedLimits",
    "PublishedParameters",
    "PublishedTemplate",
    "TemplateCatalog",
    "TemplateDetail",
]


@dataclass(frozen=True)
class PublishedClaim:
    """What a requester may claim: ``none``, a ``choice`` of ``choices``, or a ``number``
    between ``minimum`` and ``maximum`` (in ``unit``, if the template names one)."""

    type: str
    choices: tuple[int, ...] | None
    minimum: int | None
    maximum: int | None
    unit: str | None


@dataclass(frozen=True)
class PublishedParameters:
    """The kind's fixed parameters: a tolerance (exact decimal text), a look-back in months,
    the registry statuses that answer yes."""

    tolerance: str | None
    months: int | None
    statuses: tuple[str, ...] | None


@dataclass(frozen=True)
class PublishedLimits:
    """Leakage and quota limits; bits as exact decimal text."""

    bits: str
    max_bits: str
    max_claims: int
    quota: int
    window_days: int


@dataclass(frozen=True)
class PublishedBand:
    id: str
    lower: int | None
    upper: int | None  # None: the open top band


@dataclass(frozen=True)
class PublishedTemplate:
    """One template version, everything about it public."""

    id: str
    version: int
    title: str
    description: str
    dataset: str
    subject: str
    kind: str
    attribute: str
    parameters: PublishedParameters
    claim: PublishedClaim
    outcome: str
    outcomes: tuple[str, ...]
    limits: PublishedLimits
    bands: tuple[PublishedBand, ...] | None

    @classmethod
    def of(cls, template: Template) -> PublishedTemplate:
        return cls(**_fields(template.public()))


@dataclass(frozen=True)
class TemplateDetail(PublishedTemplate):
    """One template version and every version of its id."""

    versions: tuple[int, ...]


def _fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    claim, parameters, limits = doc["claim"], doc["parameters"], doc["limits"]
    bands = doc.get("bands")
    return {
        **doc,
        "parameters": PublishedParameters(
            tolerance=parameters.get("tolerance"),
            months=parameters.get("months"),
            statuses=_tuple(parameters.get("statuses")),
        ),
        "claim": PublishedClaim(
            type=claim["type"],
            choices=_tuple(claim.get("choices")),
            minimum=claim.get("minimum"),
            maximum=claim.get("maximum"),
            unit=claim.get("unit"),
        ),
        "outcomes": tuple(doc["outcomes"]),
        "limits": PublishedLimits(**limits),
        "bands": None if bands is None else tuple(PublishedBand(**b) for b in bands),
    }


def _tuple(items: list[Any] | None) -> tuple[Any, ...] | None:
    return None if items is None else tuple(items)


class TemplateCatalog:
    """The template versions loaded at startup, as public results."""

    def __init__(self, templates: TemplateSet) -> None:
        self.templates = templates

    def list_templates(self) -> list[PublishedTemplate]:
        return [PublishedTemplate.of(t) for t in self.templates]

    def template(self, template_id: str, version: int | None = None) -> TemplateDetail:
        """One template version (default the latest), with the list of its versions."""
        found = self.templates.get(template_id, version)
        versions = sorted(v for (tid, v) in self.templates.templates if tid == found.id)
        return TemplateDetail(**_fields(found.public()), versions=tuple(versions))
