"""Request dependencies: the running services and the authenticated member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import Engine

from sandbox import audit
from sandbox.access import Member, authenticate
from sandbox.api.guard import enter_tenant
from sandbox.config import Settings
from sandbox.executor import Executor
from sandbox.queries import QueryService
from sandbox.vault import Vault
from sandbox.verification import VerificationService


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    executor: Executor
    vault: Vault
    queries: QueryService
    verification: VerificationService


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def member(
    request: Request,
    # documented as the OpenAPI bearer scheme (sandbox/api/openapi.py), not as a parameter
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Member:
    found = authenticate(services(request).engine, authorization)
    audit.identify(  # who, and on which route, for the audit log
        found.id,
        found.tenant_id,
        found.role.value,
        found.key_id,
        route=request.scope.get("route"),
        params=request.path_params,
    )
    enter_tenant(request, found.tenant_id)  # the tenant's in-flight limit (sandbox/api/guard.py)
    return found


ServicesDep = Annotated[Services, Depends(services)]
MemberDep = Annotated[Member, Depends(member)]
