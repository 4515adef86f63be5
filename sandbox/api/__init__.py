"""HTTP routers. Handlers are thin: they authenticate, call a service and shape the response."""

from fastapi import APIRouter

from sandbox.api import (
    audit,
    datasets,
    health,
    ledger,
    onboarding,
    queries,
    tenants,
    verification,
)

router = APIRouter()
router.include_router(health.router)
router.include_router(datasets.router)
router.include_router(queries.router)
router.include_router(tenants.router)
router.include_router(ledger.router)
router.include_router(verification.router)
router.include_router(onboarding.router)
router.include_router(audit.router)

__all__ = ["router"]
