"""Zones and datasets: schema and the public part of the policy. Never rows, never extremes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from sandbox import catalog
from sandbox.api.deps import MemberDep, ServicesDep
from sandbox.api.responses.base import ViewRoute
from sandbox.api.responses.catalog import Dataset, DatasetList, Zone, ZoneList

router = APIRouter(prefix="/v1", tags=["datasets"], route_class=ViewRoute)


def _dataset(version: catalog.DatasetVersion, detail: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": version.dataset,
        "zone": version.zone,
        "title": version.title,
        "version": version.version,
        "description": version.policy.description,
        "provider": version.policy.provider,
        "tables": sorted(version.row_counts),
    }
    if detail:
        out["policy"] = version.policy.public_view()
    return out


@router.get("/zones", response_model=ZoneList)
def list_zones(member: MemberDep, services: ServicesDep) -> ZoneList:
    return ZoneList(zones=[Zone.of(z) for z in services.onboarding.zones.list_zones()])


@router.get("/datasets", response_model=DatasetList)
def list_datasets(member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    return {"datasets": [_dataset(v, False) for v in catalog.list_current(services.engine)]}


@router.get("/zones/{zone}/datasets", response_model=DatasetList)
def list_zone_datasets(zone: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    found = catalog.list_current(services.engine, zone)
    return {"datasets": [_dataset(v, False) for v in found]}


@router.get("/datasets/{dataset}", response_model=Dataset)
def get_dataset(dataset: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    return _dataset(catalog.current(services.engine, dataset), True)
