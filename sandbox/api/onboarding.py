"""Zones, providers, loads and versions, quality reports and issues over HTTP.

The logic is :mod:`sandbox.onboarding`; see docs/onboarding.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from sandbox.api import redact
from sandbox.api.deps import ActorDep, Services, ServicesDep
from sandbox.api.responses import onboarding as views
from sandbox.api.responses.base import View, ViewRoute
from sandbox.api.responses.catalog import Zone

router = APIRouter(prefix="/v1", tags=["onboarding"], route_class=ViewRoute)
V = TypeVar("V", bound=View)

MAX_POLICY_CHARS = 1_000_000
MAX_NUMBER = 2**31 - 1  # versions and issue numbers: stored as integers
Number = Annotated[int, Path(ge=1, le=MAX_NUMBER)]


def _public(services: Services, view: V) -> V:
    """``view`` with paths under the data directory made relative (sources as named); members
    absent from it stay absent."""
    shown = redact.tree(view.model_dump(exclude_unset=True), services.settings.data_dir)
    return type(view).model_validate(shown)


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
def create_zone(body: ZoneBody, actor: ActorDep, services: ServicesDep) -> Zone:
    zone = services.onboarding.zones.create_zone(
        actor, body.id, body.kind, body.operator, body.title, body.description
    )
    return Zone.of(zone)


@router.post("/providers", status_code=201, response_model=views.Provider)
def create_provider(body: ProviderBody, actor: ActorDep, services: ServicesDep) -> views.Provider:
    provider = services.onboarding.providers.create_provider(
        actor, body.id, body.name, body.zone, body.description
    )
    return views.Provider.of(provider)


@router.get("/providers", response_model=views.ProviderList)
def list_providers(
    actor: ActorDep, services: ServicesDep, zone: str | None = None
) -> views.ProviderList:
    found = services.onboarding.providers.list_providers(zone)
    return views.ProviderList(providers=[views.Provider.of(p) for p in found])


@router.post("/providers/{provider}/members", status_code=201, response_model=views.ProviderMember)
def add_provider_member(
    provider: str, body: ProviderMemberBody, actor: ActorDep, services: ServicesDep
) -> views.ProviderMember:
    linked = services.onboarding.providers.add_provider_member(actor, provider, body.member)
    return views.ProviderMember.of(linked)


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
    actor: ActorDep,
    services: ServicesDep,
    response: Response,
) -> views.StartedLoad:
    """Start a load; it runs in the background. Poll the returned ``url`` for progress; the
    version becomes current only if the load and its quality rules pass."""
    onboarding = services.onboarding
    pending = onboarding.loads.begin_load(
        actor,
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
    url = f"/v1/zones/{zone}/datasets/{dataset}/loads/{pending.load}"
    version = onboarding.versions.get_load(actor, zone, dataset, pending.load)
    response.headers["Location"] = url
    return _public(services, views.StartedLoad.started(version, url))


@router.get("/zones/{zone}/datasets/{dataset}/versions", response_model=views.VersionList)
def list_versions(
    zone: str, dataset: str, actor: ActorDep, services: ServicesDep
) -> views.VersionList:
    found = services.onboarding.versions.list_versions(actor, zone, dataset)
    return _public(services, views.VersionList.of(found))


@router.get("/zones/{zone}/datasets/{dataset}/versions/{version}", response_model=views.Version)
def get_version(
    zone: str, dataset: str, version: Number, actor: ActorDep, services: ServicesDep
) -> views.Version:
    found = services.onboarding.versions.get_version(actor, zone, dataset, version)
    return _public(services, views.Version.of(found))


@router.get("/zones/{zone}/datasets/{dataset}/loads/{load}", response_model=views.Version)
def get_load(
    zone: str,
    dataset: str,
    load: Annotated[str, Path(max_length=64)],
    actor: ActorDep,
    services: ServicesDep,
) -> views.Version:
    """One load by its id, whatever its outcome: loading, ready (with its version number) or
    failed (with its error; a failed load releases its number)."""
    found = services.onboarding.versions.get_load(actor, zone, dataset, load)
    return _public(services, views.Version.of(found))


@router.post(
    "/zones/{zone}/datasets/{dataset}/versions/{version}/activate",
    response_model=views.Version,
)
def activate_version(
    zone: str, dataset: str, version: Number, actor: ActorDep, services: ServicesDep
) -> views.Version:
    """Make a ready version current (a rollback, or forward again)."""
    found = services.onboarding.versions.activate(actor, zone, dataset, version)
    return _public(services, views.Version.of(found))


# -- quality ------------------------------------------------------------------------------------


@router.get("/datasets/{dataset}/quality", response_model=None, responses=_HTML)
def get_quality(
    dataset: str,
    actor: ActorDep,
    services: ServicesDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_NUMBER)] = None,
    load: Annotated[str | None, Query(max_length=64)] = None,
    format: Literal["json", "html"] = "json",
) -> dict[str, Any] | HTMLResponse:
    """The quality report of the current version (or ``?version=N``, or any load, failed ones
    included, by ``?load=ID``): admins, operators and the dataset's provider only."""
    versions = services.onboarding.versions
    if format == "html":
        page = versions.quality_html(actor, dataset, version, load)
        return HTMLResponse(redact.text(page, services.settings.data_dir))
    found = _public(services, views.Quality.of(versions.quality(actor, dataset, version, load)))
    # answered as JSON or HTML, so serialised here rather than through a response model
    return found.model_dump(mode="json", exclude_unset=True)


# -- issues -------------------------------------------------------------------------------------


@router.post("/datasets/{dataset}/issues", status_code=201, response_model=views.Issue)
def raise_issue(
    dataset: str, body: IssueBody, actor: ActorDep, services: ServicesDep
) -> views.Issue:
    issue = services.onboarding.issues.raise_issue(
        actor, dataset, body.title, body.description, body.subject
    )
    return views.Issue.of(issue)


@router.get("/datasets/{dataset}/issues", response_model=views.IssueList)
def list_issues(dataset: str, actor: ActorDep, services: ServicesDep) -> views.IssueList:
    """Staff (admin, operator, the dataset's provider) see every issue; others their tenant's."""
    found = services.onboarding.issues.list_issues(actor, dataset)
    return views.IssueList(issues=[views.Issue.of(i) for i in found])


@router.get("/datasets/{dataset}/issues/{number}", response_model=views.Issue)
def get_issue(dataset: str, number: Number, actor: ActorDep, services: ServicesDep) -> views.Issue:
    return views.Issue.of(services.onboarding.issues.get_issue(actor, dataset, number))


@router.post("/datasets/{dataset}/issues/{number}/answer", response_model=views.Issue)
def answer_issue(
    dataset: str, number: Number, body: AnswerBody, actor: ActorDep, services: ServicesDep
) -> views.Issue:
    issue = services.onboarding.issues.answer_issue(actor, dataset, number, body.answer)
    return views.Issue.of(issue)


@router.post("/datasets/{dataset}/issues/{number}/resolve", response_model=views.Issue)
def resolve_issue(
    dataset: str, number: Number, body: ResolveBody, actor: ActorDep, services: ServicesDep
) -> views.Issue:
    issue = services.onboarding.issues.resolve_issue(
        actor,
        dataset,
        number,
        body.kind,
        body.version,
        body.note,
        revoke_receipts=body.revoke_receipts,
    )
    return views.Issue.of(issue)
