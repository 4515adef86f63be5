"""DP queries: run (charged) and preview (free, touches no data), and the caller's budgets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api.deps import MemberDep, ServicesDep
from sandbox.api.responses.base import ViewRoute
from sandbox.api.responses.queries import Answer, BudgetList, Preview
from sandbox.ledger import budgets, grants
from sandbox.queries import QueryRequest

router = APIRouter(prefix="/v1", tags=["queries"], route_class=ViewRoute)


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(max_length=64, description="Dataset id.")
    sql: str = Field(
        max_length=1_000_000,  # the configured, smaller limit is the gate's (sql_too_long)
        description="One SELECT of aggregates (see docs/queries.md); at most VEIL_MAX_SQL_CHARS "
        "characters and VEIL_MAX_SQL_DEPTH nested brackets.",
    )
    epsilon: float | None = Field(None, strict=True, description="ε to spend (pure-DP grants).")
    rho: float | None = Field(None, strict=True, description="ρ to spend (zCDP grants).")
    delta: float | None = Field(
        None, strict=True, description="δ for partition selection when keys are not public."
    )

    def request(self) -> QueryRequest:
        return QueryRequest(self.dataset, self.sql, self.epsilon, self.rho, self.delta)


@router.post("/queries", response_model=Answer)
def run_query(
    body: QueryBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Run a DP query: noisy aggregates with 95% intervals, the cost charged, the budget left."""
    return services.queries.run(member, body.request())


@router.post("/queries/preview", response_model=Preview)
def preview_query(body: QueryBody, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """The cost and expected interval widths of a query. Charges nothing, touches no data."""
    return services.queries.preview(member, body.request())


@router.get("/budgets", response_model=BudgetList)
def list_budgets(member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """The caller's tenant's grants: total, spent, left, and how many more queries that buys."""
    return {
        "budgets": [
            budgets.describe(g, grants.member_budget(services.engine, g.id, member.id))
            for g in grants.grants_of(services.engine, member.tenant_id)
        ]
    }
