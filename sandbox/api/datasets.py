"""Zones and datasets: schema and the public part of the policy. Never rows, never extremes."""

from __future__ import annotations

from fastapi import APIRouter

from sandbox import catalog
from sandbox.api.deps import MemberDep, ServicesDep
from sandbox.api.responses import catalog as views
from sandbox.api.responses.base import ViewRoute

router = APIRouter(prefix="/v1", tags=["datasets"], route_class=ViewRoute)


@router.get("/zones", response_model=views.ZoneList)
def list_zones(member: MemberDep, services: ServicesDep) -> views.ZoneList:
    zones = services.onboarding.zones.list_zones()
    return views.ZoneList(zones=[views.Zone.of(z) for z in zones])


@router.get("/datasets", response_model=views.DatasetList)
def list_datasets(member: MemberDep, services: ServicesDep) -> views.DatasetList:
    found = catalog.list_datasets(services.engine)
    return views.DatasetList(datasets=[views.DatasetSummary.of(d) for d in found])


@router.get("/zones/{zone}/datasets", response_model=views.DatasetList)
def list_zone_datasets(zone: str, member: MemberDep, services: ServicesDep) -> views.DatasetList:
    found = catalog.list_datasets(services.engine, zone)
    return views.DatasetList(datasets=[views.DatasetSummary.of(d) for d in found])


@router.get("/datasets/{dataset}", response_model=views.Dataset)
def get_dataset(dataset: str, member: MemberDep, services: ServicesDep) -> views.Dataset:
    return views.Dataset.of(catalog.get_dataset(services.engine, dataset))
