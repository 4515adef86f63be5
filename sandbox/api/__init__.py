"""HTTP routers. Handlers are thin: they authenticate, call a service and shape the response."""

from fastapi import APIRouter

from sandbox.api import (
    audit,
    authority,
    datasets,
    health,
    ledger,
    metrics,
    onboarding,
    queries,
    tenants,
    uploads,
    verification,
)

# Included one by one into the app, not through one parent router: FastAPI matches a nested
# router's routes through an extra layer on every request. The busiest routes come first (a
# request is matched against the routes in order); no two routers share a path.
routers: tuple[APIRouter, ...] = (
    verification.router,
    queries.router,
    health.router,
    datasets.router,
    tenants.router,
    ledger.router,
    onboarding.router,
    uploads.router,
    audit.router,
    metrics.router,
    authority.router,
)

__all__ = ["routers"]
