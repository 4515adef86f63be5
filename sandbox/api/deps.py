"""Request dependencies: the running services, the authenticated member, and the actor routes
pass to services (the member, with the request's audit record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Header, Request
from sqlalchemy import Engine

from sandbox.access.admin import Administration
from sandbox.access.keys import KeyCache
from sandbox.access.model import Actor, Member
from sandbox.api import idempotency
from sandbox.api.guard import enter_tenant
from sandbox.audit.checkpoint import Checkpointer
from sandbox.audit.log import AuditLog
from sandbox.audit.request import RECORD, RequestRecord
from sandbox.config import Settings
from sandbox.engine.executor import Executor
from sandbox.errors import AuditChainBroken
from sandbox.ledger.service import Ledger
from sandbox.metrics.instruments import Metrics
from sandbox.onboarding.services import Onboarding
from sandbox.queries import QueryService
from sandbox.vault.decrypted import Vault
from sandbox.verification.consents import ConsentService
from sandbox.verification.facts import FactsIndex
from sandbox.verification.issued import ReceiptService
from sandbox.verification.published import TemplateCatalog
from sandbox.verification.quota import QuotaService
from sandbox.verification.service import VerificationService

AUDIT_ROUTES = "/v1/audit"  # still answered when the audit chain is broken


@dataclass(frozen=True)
class Services:
    """Every service of the app, built once in the lifespan (``server.py``)."""

    settings: Settings
    engine: Engine
    audit: AuditLog
    admin: Administration
    ledger: Ledger
    executor: Executor
    vault: Vault
    queries: QueryService
    verification: VerificationService
    consents: ConsentService
    receipts: ReceiptService
    templates: TemplateCatalog
    verification_quotas: QuotaService
    facts: FactsIndex
    key_cache: KeyCache
    onboarding: Onboarding
    checkpointer: Checkpointer | None = None  # the audit checkpoints (``broken``: /healthz)
    metrics: Metrics | None = None  # what /metrics exposes (sandbox/api/metrics.py)


async def services(request: Request) -> Services:
    """Async (it does no I/O): a sync dependency would cost a trip through the thread pool."""
    found: Services = request.app.state.services
    return found


async def member(
    request: Request,
    # documented as the OpenAPI bearer scheme (sandbox/api/openapi.py), not as a parameter
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Member:
    """The caller. A recently seen key is answered from the process's key cache without
    leaving the event loop; otherwise the state store is asked from a worker thread."""
    cache: KeyCache = request.app.state.services.key_cache
    found = cache.cached(authorization)
    if found is None:
        found = await to_thread.run_sync(cache.authenticate, authorization)
    record = request.scope.get(RECORD)
    if isinstance(record, RequestRecord):  # who, and on which route, for the audit log
        record.identify(
            found.id,
            found.tenant_id,
            found.role.value,
            found.key_id,
            route=request.scope.get("route"),
            params=request.path_params,
        )
    checkpointer = request.app.state.services.checkpointer
    if (
        checkpointer is not None
        and checkpointer.broken is not None
        and not request.url.path.startswith(AUDIT_ROUTES)  # auditors look at what failed
    ):
        raise AuditChainBroken("the audit log failed its check before a checkpoint")  # closed
    enter_tenant(request, found.tenant_id)  # the tenant's in-flight limit (sandbox/api/guard.py)
    await idempotency.claim(request, found.id)  # a mutating call's Idempotency-Key, if any
    return found


async def actor(request: Request, caller: Annotated[Member, Depends(member)]) -> Actor:
    """The caller as the actor of what the route asks services to do."""
    record = request.scope.get(RECORD)
    return Actor.of(caller, record if isinstance(record, RequestRecord) else None)


ServicesDep = Annotated[Services, Depends(services)]
MemberDep = Annotated[Member, Depends(member)]
ActorDep = Annotated[Actor, Depends(actor)]
