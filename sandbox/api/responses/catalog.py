"""Zones and datasets: the catalogue any member may read (schema and public policy, no rows)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from policies import model
from sandbox import catalog
from sandbox.api.responses.base import View

KeyValue = str | int | float | bool


class Zone(View):
    mirrors = catalog.Zone

    id: str
    kind: str
    title: str
    operator: str
    description: str


class ZoneList(View):
    zones: list[Zone]


class PublicColumn(View):
    mirrors = model.PublicColumn
    omit_none = frozenset({"description", "lower", "upper", "keys", "public_range"})

    name: str
    type: str
    role: str
    description: str | None = None
    lower: float | None = None
    upper: float | None = None
    keys: list[KeyValue] | None = None
    public_range: list[str] | None = None


class PublicTable(View):
    mirrors = model.PublicTable

    name: str
    description: str
    max_rows_per_unit: int
    columns: list[PublicColumn]


class PublicPolicy(View):
    mirrors = model.PublicPolicy

    privacy_unit: str
    max_groups_per_unit: int
    min_group_size: int
    tables: list[PublicTable]


class DatasetSummary(View):
    mirrors: ClassVar[type | None] = catalog.DatasetSummary

    id: str
    zone: str
    title: str
    version: int
    description: str
    provider: str
    tables: list[str]


class Dataset(DatasetSummary):
    mirrors = catalog.DatasetDetail

    policy: PublicPolicy


class DatasetList(View):
    datasets: list[DatasetSummary]


class Health(View):
    status: str
    facts_index: Literal["off", "building", "ready"] = Field(
        description="The verification facts index (docs/verification.md, 'How a template is "
        "answered'): `building` while answers may still run their template queries, `ready`, "
        "or `off`."
    )
