"""The ledger for auditors: every charge and credit, filterable, as JSON or CSV."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from sandbox.access.model import MemberRole
from sandbox.api.deps import MemberDep, ServicesDep
from sandbox.api.responses.base import ViewRoute
from sandbox.api.responses.ledger import Ledger
from sandbox.ledger import entries

router = APIRouter(prefix="/v1", tags=["ledger"], route_class=ViewRoute)

_CSV: dict[int | str, dict[str, Any]] = {
    200: {"model": Ledger, "content": {"text/csv": {"schema": {"type": "string"}}}}
}


@router.get("/ledger", response_model=None, responses=_CSV)
def read_ledger(
    member: MemberDep,
    services: ServicesDep,
    tenant: str | None = None,
    dataset: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    """Charges (reserved, released, failed) and credits (grant, refresh), oldest first."""
    member.require(MemberRole.AUDITOR, MemberRole.ADMIN)
    records = entries.entries(
        services.engine,
        tenant_id=tenant,
        dataset_id=dataset,
        since=since,
        until=until,
        limit=limit,
    )
    if format == "json":
        return Ledger.model_validate({"entries": records}).model_dump(mode="json")
    return Response(
        entries.to_csv(records),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="veil-ledger.csv"'},
    )
