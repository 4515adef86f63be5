"""Zones, providers, loads and versions, quality reports and issues over HTTP.

The logic is :mod:`sandbox.onboarding`; see docs/onboarding.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api import redact
from sandbox.api.deps import MemberDep, Services, ServicesDep
from sandbox.api.responses import onboarding as views
from sandbox.api.responses.base import ViewRoute
from sandbox.api.responses.catalog import Zone

router = APIRouter(prefix="/v1", tags=["onboarding"], route_class=ViewRoute)
T = TypeVar("T")

MAX_POLICY_CHARS = 1_000_000
MAX_NUMBER = 2**31 - 1  # versions and issue numbers: stored as integers
Number = Annotated[int, Path(ge=1, le=MAX_NUMBER)]


def _public(services: Services, view: T) -> T:
    """``view`` with paths under the data directory made relative (sources as named)."""
    return redact.tree(view, services.settings.data_dir)


_HTML: dict[int | str, dict[str, Any]] = {
    200: {"model": views.Quality, "content": {"text/html": {"schema": {"type": "string"}}}}
}


class ZoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=63)
    kind: Literal["domain", "regional", "comprehensive"]
    operator: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=4000)


class ProviderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=200)
    zone: str = Field(min_length=1, max_length=63)
    description: str = Field("", max_length=4000)


class ProviderMemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: str = Field(min_length=1, max_length=64)


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(
        min_length=1, max_length=MAX_POLICY_CHARS, description="The policy file (TOML text)."
    )
    source: str | None = Field(
        None,
        max_length=4096,
        description="One source for every table: a path or glob under <data_dir>/sources "
        "(may contain {table}), file://, s3:// or postgresql:// URL.",
    )
    sources: dict[str, str] | None = Field(None, description="One source per table instead.")
    provider: str | None = Field(
        None, max_length=63, description="The provider (department) of the dataset."
    )
    cluster_by: str | None = Field(
        None,
        max_length=63,
        description="Store the tables sorted by this column (default: the policy's "
        "[storage] cluster_by).",
    )


class IssueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The credit code of the subject whose records are in question. Stored only "
        "as a keyed hash, never shown back.",
    )


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str = Field(min_length=1, max_length=10_000)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["no_change", "corrected"]
    version: int | None = Field(
        None, ge=1, le=MAX_NUMBER, description="The version holding the correction."
    )
    note: str = Field("", max_length=10_000)
    revoke_receipts: bool = Field(
        True, description="corrected: revoke the subject's receipts from older versions."
    )


# -- zones and providers ------------------------------------------------------------------------


@router.post("/zones", status_code=201, response_model=Zone)
def create_zone(
    body: ZoneBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.zones.create_zone(
        member, body.id, body.kind, body.operator, body.title, body.description
    )


@router.post("/providers", status_code=201, response_model=views.Provider)
def create_provider(
    body: ProviderBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.providers.create_provider(
        member, body.id, body.name, body.zone, body.description
    )


@router.get("/providers", response_model=views.ProviderList)
def list_providers(
    member: MemberDep, services: ServicesDep, zone: str | None = None
) -> dict[str, Any]:
    return {"providers": services.onboarding.providers.list_providers(zone)}


@router.post("/providers/{provider}/members", status_code=201, response_model=views.ProviderMember)
def add_provider_member(
    provider: str,
    body: ProviderMemberBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.providers.add_provider_member(member, provider, body.member)


# -- loads and versions -------------------------------------------------------------------------


@router.post(
    "/zones/{zone}/datasets/{dataset}/versions",
    status_code=202,
    response_model=views.StartedLoad,
)
def start_load(
    zone: str,
    dataset: str,
    body: LoadBody,
    member: MemberDep,
    services: ServicesDep,
    response: Response,
) -> dict[str, Any]:
    """Start a load; it runs in the background. Poll the returned ``url`` for progress; the
    version becomes current only if the load and its quality rules pass."""
    onboarding = services.onboarding
    pending = onboarding.loads.begin_load(
        member,
        zone,
        dataset,
        body.policy,
        body.source,
        body.sources,
        provider=body.provider,
        policy_name=f"policy of {dataset[:64]}",
        confine_to=services.settings.data_dir / "sources",
        cluster_by=body.cluster_by,
    )
    onboarding.loads.start_load(pending)
    url = f"/v1/zones/{zone}/datasets/{dataset}/versions/{pending.version}"
    view = onboarding.versions.get_version(member, zone, dataset, pending.version)
    response.headers["Location"] = url
    return _public(services, {**view, "url": url})


@router.get("/zones/{zone}/datasets/{dataset}/versions", response_model=views.VersionList)
def list_versions(
    zone: str, dataset: str, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    return _public(services, services.onboarding.versions.list_versions(member, zone, dataset))


@router.get("/zones/{zone}/datasets/{dataset}/versions/{version}", response_model=views.Version)
def get_version(
    zone: str, dataset: str, version: Number, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    return _public(
        services, services.onboarding.versions.get_version(member, zone, dataset, version)
    )


@router.post(
    "/zones/{zone}/datasets/{dataset}/versions/{version}/activate",
    response_model=views.Version,
)
def activate_version(
    zone: str,
    dataset: str,
    version: Number,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Make a ready version current (a rollback, or forward again)."""
    versions = services.onboarding.versions
    return _public(services, versions.activate(member, zone, dataset, version))


# -- quality ------------------------------------------------------------------------------------


@router.get("/datasets/{dataset}/quality", response_model=None, responses=_HTML)
def get_quality(
    dataset: str,
    member: MemberDep,
    services: ServicesDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_NUMBER)] = None,
    format: Literal["json", "html"] = "json",
) -> dict[str, Any] | HTMLResponse:
    """The quality report of the current version (or ``?version=N``): admins, operators and the
    dataset's provider only."""
    versions = services.onboarding.versions
    if format == "html":
        return HTMLResponse(_public(services, versions.quality_html(member, dataset, version)))
    found = _public(services, versions.quality(member, dataset, version))
    return views.Quality.model_validate(found).model_dump(mode="json", exclude_unset=True)


# -- issues -------------------------------------------------------------------------------------


@router.post("/datasets/{dataset}/issues", status_code=201, response_model=views.Issue)
def raise_issue(
    dataset: str,
    body: IssueBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.issues.raise_issue(
        member, dataset, body.title, body.description, body.subject
    )


@router.get("/datasets/{dataset}/issues", response_model=views.IssueList)
def list_issues(dataset: str, member: MemberDep, services: ServicesDep) -> dict[str, Any]:
    """Staff (admin, operator, the dataset's provider) see every issue; others their tenant's."""
    return {"issues": services.onboarding.issues.list_issues(member, dataset)}


@router.get("/datasets/{dataset}/issues/{number}", response_model=views.Issue)
def get_issue(
    dataset: str, number: Number, member: MemberDep, services: ServicesDep
) -> dict[str, Any]:
    return services.onboarding.issues.get_issue(member, dataset, number)


@router.post("/datasets/{dataset}/issues/{number}/answer", response_model=views.Issue)
def answer_issue(
    dataset: str,
    number: Number,
    body: AnswerBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.issues.answer_issue(member, dataset, number, body.answer)


@router.post("/datasets/{dataset}/issues/{number}/resolve", response_model=views.Issue)
def resolve_issue(
    dataset: str,
    number: Number,
    body: ResolveBody,
    member: MemberDep,
    services: ServicesDep,
) -> dict[str, Any]:
    return services.onboarding.issues.resolve_issue(
        member,
        dataset,
        number,
        body.kind,
        body.version,
        body.note,
        revoke_receipts=body.revoke_receipts,
    )
