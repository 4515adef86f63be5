"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from sandbox.api.deps import ServicesDep
from sandbox.api.responses.base import ViewRoute
from sandbox.api.responses.catalog import Health
from sandbox.errors import AuditChainBroken, ServiceUnavailable

router = APIRouter(tags=["health"], route_class=ViewRoute)


@router.get("/healthz", response_model=Health)
def healthz(services: ServicesDep) -> Health:
    """Ready when the executor's workers are up and locked down and the audit log's last
    check before a checkpoint passed (else 503 ``audit_chain_broken``)."""
    if services.checkpointer is not None and services.checkpointer.broken is not None:
        raise AuditChainBroken("the audit log failed its check before a checkpoint")
    if not services.executor.healthy():
        raise ServiceUnavailable("the executor is not ready")
    return Health(status="ok", facts_index=services.facts.state())
