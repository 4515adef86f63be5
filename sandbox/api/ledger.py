"""The ledger for auditors: every charge and credit, filterable, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.params import DateTimeParam
from sandbox.api.responses import ledger as views
from sandbox.api.responses.base import ViewRoute

router = APIRouter(prefix="/v1", tags=["ledger"], route_class=ViewRoute)

_CSV: dict[int | str, dict[str, Any]] = {
    200: {"model": views.Ledger, "content": {"text/csv": {"schema": {"type": "string"}}}}
}


@router.get("/ledger", response_model=None, responses=_CSV)
def read_ledger(
    actor: ActorDep,
    services: ServicesDep,
    tenant: str | None = None,
    dataset: str | None = None,
    since: Annotated[
        DateTimeParam | None, Query(description="Entries at or after this RFC 3339 date-time.")
    ] = None,
    until: Annotated[
        DateTimeParam | None, Query(description="Entries before this RFC 3339 date-time.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    """Charges (reserved, released, failed, cancelled) and credits (grant, refresh), by time."""
    found = services.ledger.entries(
        actor, tenant_id=tenant, dataset_id=dataset, since=since, until=until, limit=limit
    )
    if format == "json":
        return views.ledger(found).model_dump(mode="json")
    return Response(
        views.ledger_csv(found),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="veil-ledger.csv"'},
    )
