"""DP queries: run (charged) and preview (free, touches no data), and the caller's budgets."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from policies.model import MAX_QUANTILE_RESOLUTION
from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.responses import queries as views
from sandbox.api.responses.base import ViewRoute
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

    quantile_resolution: int | None = Field(
        None,
        strict=True,
        ge=2,
        le=MAX_QUANTILE_RESOLUTION,
        description="Quantiles also choose from this many evenly spaced points between the "
        "measure's bounds (2 to 1,000; docs/queries.md#quantiles).",
    )

    def request(self) -> QueryRequest:
        return QueryRequest(
            self.dataset,
            self.sql,
            self.epsilon,
            self.rho,
            self.delta,
            self.quantile_resolution,
        )


@router.post("/queries", response_model=views.Answer)
def run_query(body: QueryBody, actor: ActorDep, services: ServicesDep) -> views.Answer:
    """Run a DP query: noisy aggregates with 95% intervals, the cost charged, the budget left."""
    return views.Answer.of(services.queries.run(actor, body.request()))


@router.post("/queries/preview", response_model=views.Preview)
def preview_query(body: QueryBody, actor: ActorDep, services: ServicesDep) -> views.Preview:
    """The cost and expected interval widths of a query. Charges nothing, touches no data."""
    return views.Preview.of(services.queries.preview(actor, body.request()))


@router.get("/budgets", response_model=views.BudgetList)
def list_budgets(actor: ActorDep, services: ServicesDep) -> views.BudgetList:
    """The caller's tenant's grants: total, spent, left, and how many more queries that buys."""
    found = services.queries.budgets(actor)
    return views.BudgetList(budgets=[views.Budget.of(b) for b in found])
