"""Request dependencies: the running services and the authenticated member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import Engine

from sandbox.access import Member, authenticate
from sandbox.config import Settings
from sandbox.executor import Executor
from sandbox.queries import QueryService
from sandbox.verification import VerificationService


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    executor: Executor
    queries: QueryService
    verification: VerificationService


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def member(request: Request, authorization: Annotated[str | None, Header()] = None) -> Member:
    return authenticate(services(request).engine, authorization)


ServicesDep = Annotated[Services, Depends(services)]
MemberDep = Annotated[Member, Depends(member)]
