"""A zone's operator authorisation over HTTP: read it, set its scope and term, suspend,
resume, exit (docs/administration.md#operator-authorisation). The logic is
:mod:`sandbox.onboarding.authority`; only the ``authority`` role changes it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from sandbox.api.deps import ActorDep, ServicesDep
from sandbox.api.responses import authority as views
from sandbox.api.responses.base import ViewRoute

router = APIRouter(prefix="/v1", tags=["onboarding"], route_class=ViewRoute)


class AuthorisationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    term_start: AwareDatetime = Field(description="When the term starts (RFC 3339, with offset).")
    term_end: AwareDatetime | None = Field(None, description="When it ends; absent: open-ended.")
    datasets: list[str] | None = Field(
        None, max_length=10_000, description="The datasets in scope; absent: every one."
    )
    products: list[str] | None = Field(
        None, max_length=3, description="query, verification, load; absent: every one."
    )


class ExitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: str = Field(
        min_length=1, max_length=63, description="The zone's id again: exit cannot be undone."
    )


@router.get("/zones/{zone}/authorisation", response_model=views.Authorisation)
def get_authorisation(zone: str, actor: ActorDep, services: ServicesDep) -> views.Authorisation:
    return views.Authorisation.of(services.onboarding.authority.get(actor, zone))


@router.put("/zones/{zone}/authorisation", response_model=views.Authorisation)
def put_authorisation(
    zone: str, body: AuthorisationBody, actor: ActorDep, services: ServicesDep
) -> views.Authorisation:
    found = services.onboarding.authority.authorise(
        actor,
        zone,
        term_start=body.term_start,
        term_end=body.term_end,
        datasets=body.datasets,
        products=body.products,
    )
    return views.Authorisation.of(found)


@router.post("/zones/{zone}/authorisation/suspend", response_model=views.Authorisation)
def suspend(zone: str, actor: ActorDep, services: ServicesDep) -> views.Authorisation:
    return views.Authorisation.of(services.onboarding.authority.suspend(actor, zone))


@router.post("/zones/{zone}/authorisation/resume", response_model=views.Authorisation)
def resume(zone: str, actor: ActorDep, services: ServicesDep) -> views.Authorisation:
    return views.Authorisation.of(services.onboarding.authority.resume(actor, zone))


@router.post("/zones/{zone}/authorisation/exit", response_model=views.ExitCertificate)
def exit_zone(
    zone: str, body: ExitBody, actor: ActorDep, services: ServicesDep
) -> views.ExitCertificate:
    found = services.onboarding.authority.exit(actor, zone, confirm=body.confirm)
    return views.ExitCertificate.of(found)
