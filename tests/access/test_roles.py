"""The role matrix: every route of the app × every role (and no key), allowed or refused as written.

``ROUTES`` below IS the documentation: for each route, which roles may call it and the status of
a success (a route with ``{tenant}`` in its path acts on that tenant's objects). Everything else
is refused (deny by default):

- no key, or an unknown key → 401 on every route except the public ones (``/healthz``, and for
  offline receipt checks ``/v1/keys`` and ``/v1/receipts/{id}/status``);
- a role not allowed on the route → 403 (``forbidden``);
- another tenant's objects → 404 (``not_found``), not 403, for every role that is not zone-wide.
  The zone-wide roles (admin, auditor) see every tenant; then only their role decides.

Every role of ``MemberRole`` is a caller (a role added later is denied everything it is not
listed for). Verification routes are checked at the role gate only (``gate_only``): their
outcomes are tested in ``tests/verification``.

A route that is not in ``ROUTES`` fails ``test_every_route_is_in_the_table``: a new endpoint must
say who may call it before it ships.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from policies.accounting import Accounting
from sandbox.access import keys, members, tenants
from sandbox.access.model import Actor, MemberRole
from sandbox.config import Settings
from tests.support.app import auth, build_app, engine_of, running_app
from tests.support.ledger import local_ledger
from tests.support.store import LOCAL, local_audit

ROLES = tuple(role.value for role in MemberRole)
ANY = frozenset(ROLES)
ADMIN = frozenset({"admin"})
ZONE_WIDE = frozenset({"admin", "auditor"})
CALLERS = (*ROLES, "no key", "unknown key")

# The documentation: the OpenAPI document, the docs pages and their assets; they carry no data.
DOC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/docs/assets"}


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[str]  # roles that succeed; everyone else is refused
    ok: int = 200
    public: bool = False  # no key needed
    body: dict[str, Any] | None = None
    fresh_world: bool = False  # a success can only happen once per tenant
    # Only the role gate is checked here: allowed roles must get past it (not 401/403, no 5xx);
    # what they then get (e.g. 404 for the made-up ids below) is the business of another suite.
    gate_only: bool = False
    undo: str | None = None  # after a success, POST this path as the authority (restore)


QUERY = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}
SUBJECT = frozenset({"subject"})
VERIFIER = frozenset({"verifier"})
STAFF = frozenset({"admin", "operator"})  # zone staff of onboarding
AUTHORITY = frozenset({"authority"})  # the authorising body
SUBJECT_ID = "91110108MA01ABCD2X"
CONSENT = {
    "tenant": "ten_0000000000000000",
    "template": "no-such-template",
    "purpose": "credit_underwriting",
    "expires_at": "2030-01-01T00:00:00+00:00",
}
VERIFICATION = {
    "template": "no-such-template",
    "subject": SUBJECT_ID,
    "consent": "cns_0000000000000000",
    "purpose": "credit_underwriting",
}

ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/healthz"): Rule(ANY, public=True),
    # the catalogue: any member
    ("GET", "/v1/zones"): Rule(ANY),
    ("GET", "/v1/datasets"): Rule(ANY),
    ("GET", "/v1/zones/{zone}/datasets"): Rule(ANY),
    ("GET", "/v1/datasets/{dataset}"): Rule(ANY),
    # DP queries: analysts only; budgets: any member (their own tenant's)
    ("POST", "/v1/queries"): Rule(frozenset({"analyst"}), body=QUERY),
    ("POST", "/v1/queries/preview"): Rule(frozenset({"analyst"}), body=QUERY),
    ("GET", "/v1/budgets"): Rule(ANY),
    # tenants: anyone lists and reads what they may see; only admins write
    ("POST", "/v1/tenants"): Rule(
        ADMIN, 201, body={"name": "New Bank", "kind": "bank", "purpose_class": "commercial"}
    ),
    ("GET", "/v1/tenants"): Rule(ANY),
    ("GET", "/v1/tenants/{tenant}"): Rule(ANY),
    # members and keys: admins only, reads included
    ("POST", "/v1/tenants/{tenant}/members"): Rule(
        ADMIN, 201, body={"name": "new member", "role": "verifier"}
    ),
    ("GET", "/v1/tenants/{tenant}/members"): Rule(ADMIN),
    ("GET", "/v1/tenants/{tenant}/members/{member_id}/keys"): Rule(ADMIN),
    ("POST", "/v1/tenants/{tenant}/members/{member_id}/keys"): Rule(ADMIN, 201),
    ("DELETE", "/v1/tenants/{tenant}/members/{member_id}/keys/{key_id}"): Rule(ADMIN, 204),
    # grants: admins write; members of the tenant (and zone-wide roles) read
    ("POST", "/v1/tenants/{tenant}/grants"): Rule(
        ADMIN,
        201,
        body={"dataset": "cps1988", "epsilon": 1.0, "per_query_cap": 0.5},
        fresh_world=True,
    ),
    ("GET", "/v1/tenants/{tenant}/grants"): Rule(ANY),
    ("PUT", "/v1/tenants/{tenant}/grants/{grant_id}/members/{member_id}"): Rule(
        ADMIN, body={"budget": 0.5}
    ),
    # the ledger: auditors and admins
    ("GET", "/v1/ledger"): Rule(frozenset({"auditor", "admin"})),
    # verification (tests/verification has the outcomes; here only who gets past the gate).
    # Public by design: the receipt signing keys and a receipt's status, for offline checks.
    ("GET", "/v1/keys"): Rule(ANY, public=True),
    ("GET", "/v1/receipts/{receipt_id}/status"): Rule(ANY, public=True, gate_only=True),
    ("GET", "/v1/templates"): Rule(ANY),
    ("GET", "/v1/templates/{template_id}"): Rule(ANY, gate_only=True),
    ("POST", "/v1/consents"): Rule(SUBJECT, 201, body=CONSENT, gate_only=True),
    ("GET", "/v1/consents"): Rule(SUBJECT | VERIFIER | ZONE_WIDE),
    ("DELETE", "/v1/consents/{consent_id}"): Rule(SUBJECT, 204, gate_only=True),
    ("POST", "/v1/verifications"): Rule(VERIFIER, body=VERIFICATION, gate_only=True),
    ("POST", "/v1/verifications/batch"): Rule(VERIFIER, body={"requests": []}, gate_only=True),
    ("GET", "/v1/receipts"): Rule(SUBJECT | VERIFIER | ZONE_WIDE),
    ("GET", "/v1/receipts/{receipt_id}"): Rule(SUBJECT | VERIFIER | ZONE_WIDE, gate_only=True),
    ("POST", "/v1/receipts/{receipt_id}/revoke"): Rule(
        frozenset({"admin", "operator"}), body={"reason": "data_correction"}, gate_only=True
    ),
    ("PUT", "/v1/tenants/{tenant}/verification-quotas/{template_id}"): Rule(
        ADMIN, body={"quota": 10}, gate_only=True
    ),
    # onboarding (tests/onboarding/test_onboarding.py has the outcomes): admins create zones and
    # providers; operators and admins (and the dataset's provider, from its uploads) load, list
    # versions and roll back; quality reports for them; issues from anyone with a stake,
    # answered by staff.
    ("POST", "/v1/zones"): Rule(
        ADMIN,
        201,
        body={"id": "matrix-zone", "kind": "regional", "operator": "o", "title": "Matrix"},
    ),
    ("GET", "/v1/providers"): Rule(ANY),
    ("POST", "/v1/providers"): Rule(
        ADMIN, 201, body={"id": "matrix-provider", "name": "M", "zone": "beijing-finance"}
    ),
    ("POST", "/v1/providers/{provider}/members"): Rule(
        ADMIN, 201, body={"member": "mem_0000000000000000"}, gate_only=True
    ),
    ("POST", "/v1/zones/{zone}/datasets/{dataset}/versions"): Rule(
        STAFF, 202, body={"policy": "not toml", "source": "x.csv"}, gate_only=True
    ),
    ("GET", "/v1/zones/{zone}/datasets/{dataset}/versions"): Rule(STAFF),
    ("GET", "/v1/zones/{zone}/datasets/{dataset}/versions/{version}"): Rule(STAFF),
    ("POST", "/v1/zones/{zone}/datasets/{dataset}/versions/{version}/activate"): Rule(STAFF),
    # uploads: staff, and members of the provider that owns the dataset (the matrix's provider
    # member speaks for none: refused); tests/onboarding/test_uploads.py has the outcomes. An
    # empty POST is a whole (empty) file.
    ("POST", "/v1/zones/{zone}/datasets/{dataset}/uploads"): Rule(STAFF, 201),
    ("GET", "/v1/zones/{zone}/datasets/{dataset}/uploads"): Rule(STAFF),
    ("GET", "/v1/zones/{zone}/datasets/{dataset}/uploads/{upload}"): Rule(STAFF, gate_only=True),
    ("PATCH", "/v1/zones/{zone}/datasets/{dataset}/uploads/{upload}"): Rule(STAFF, gate_only=True),
    ("DELETE", "/v1/zones/{zone}/datasets/{dataset}/uploads/{upload}"): Rule(
        STAFF, 204, gate_only=True
    ),
    # the demo's versions were registered without a load: staff get 404 for any load id
    ("GET", "/v1/zones/{zone}/datasets/{dataset}/loads/{load}"): Rule(STAFF, gate_only=True),
    ("GET", "/v1/datasets/{dataset}/quality"): Rule(STAFF, gate_only=True),  # demo: no report
    ("POST", "/v1/datasets/{dataset}/issues"): Rule(ANY, 201, body={"title": "matrix issue"}),
    ("GET", "/v1/datasets/{dataset}/issues"): Rule(ANY),
    ("GET", "/v1/datasets/{dataset}/issues/{number}"): Rule(ANY, gate_only=True),
    ("POST", "/v1/datasets/{dataset}/issues/{number}/answer"): Rule(
        STAFF, body={"answer": "looking"}, gate_only=True
    ),
    ("POST", "/v1/datasets/{dataset}/issues/{number}/resolve"): Rule(
        STAFF, body={"kind": "no_change"}, gate_only=True
    ),
    # the audit log (tests/audit/test_audit_api.py has the outcomes): auditors and admins
    # read and verify it; only auditors may ask for sealed members (decrypt=true).
    ("GET", "/v1/audit"): Rule(ZONE_WIDE),
    ("GET", "/v1/audit/entries/{seq}"): Rule(ZONE_WIDE),
    # a proof answers 409 (audit_not_checkpointed) until a checkpoint covers the entry
    ("GET", "/v1/audit/entries/{seq}/proof"): Rule(ZONE_WIDE, gate_only=True),
    ("GET", "/v1/audit/checkpoints"): Rule(ZONE_WIDE),
    ("GET", "/v1/audit/consistency"): Rule(ZONE_WIDE),
    ("GET", "/v1/audit/keys"): Rule(ZONE_WIDE),
    ("GET", "/v1/audit/verify"): Rule(ZONE_WIDE),
    # Prometheus metrics (tests/api/test_metrics.py): zone staff who run the service
    ("GET", "/metrics"): Rule(STAFF),
    # the operator's authorisation (tests/onboarding/test_authority.py has the outcomes): only
    # the authority changes it; the authority, zone staff and auditors read it. A suspension
    # is undone at once; exit is refused here for its confirmation (it cannot be undone).
    ("GET", "/v1/zones/{zone}/authorisation"): Rule(
        frozenset({"authority", "admin", "operator", "auditor"})
    ),
    ("PUT", "/v1/zones/{zone}/authorisation"): Rule(
        AUTHORITY, body={"term_start": "2020-01-01T00:00:00Z"}
    ),
    ("POST", "/v1/zones/{zone}/authorisation/suspend"): Rule(
        AUTHORITY, undo="/v1/zones/beijing-finance/authorisation/resume"
    ),
    ("POST", "/v1/zones/{zone}/authorisation/resume"): Rule(AUTHORITY, gate_only=True),
    ("POST", "/v1/zones/{zone}/authorisation/exit"): Rule(
        AUTHORITY, body={"confirm": "not-this-zone"}, gate_only=True
    ),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, documentation pages excluded."""
    from fastapi.routing import iter_route_contexts

    found = set()
    for route in iter_route_contexts(app.routes):
        path = route.path
        assert path is not None, f"a route without a path: {route!r}"
        if path in DOC_PATHS:
            continue
        methods = set(route.methods or {"*"})
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette's implicit HEAD for GET
        found |= {(method, path) for method in methods}
    return found


def test_every_route_is_in_the_table(tmp_path: Path) -> None:
    served = app_routes(build_app(Settings(data_dir=tmp_path)))
    missing = served - set(ROUTES)
    assert not missing, f"routes without a role rule in ROUTES: {sorted(missing)}"
    assert set(ROUTES) - served == set(), "ROUTES names routes the app does not serve"


# -- the world the matrix runs in ---------------------------------------------------------------


@dataclass
class TenantObjects:
    id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> API key
    target_member: str = ""  # a spare member the member/key routes act on
    grant: str = ""


@dataclass
class World:
    home: TenantObjects  # the callers' tenant: one member per role
    other: TenantObjects  # someone else's tenant


def _tenant(engine: Engine, name: str, roles: tuple[str, ...]) -> TenantObjects:
    tenant = TenantObjects(
        tenants.create_tenant(
            engine, local_audit(engine), LOCAL, name, "research", "public_welfare"
        )
    )
    for role in roles:
        subject = SUBJECT_ID if role == "subject" else None
        _, tenant.keys[role] = members.create_member(
            engine,
            local_audit(engine),
            LOCAL,
            tenant.id,
            role,
            MemberRole(role),
            subject_id=subject,
        )
    tenant.target_member, _ = members.create_member(
        engine, local_audit(engine), LOCAL, tenant.id, "spare", MemberRole.ANALYST
    )
    tenant.grant = local_ledger(engine).grants.create_grant(
        LOCAL,
        tenant.id,
        "enterprise",
        Accounting.PURE,
        budget_micro=5_000_000,
        delta_pico=0,
        per_query_cap_micro=1_000_000,
    )
    return tenant


def make_world(engine: Engine) -> World:
    return World(_tenant(engine, "Home", ROLES), _tenant(engine, "Elsewhere", ("analyst",)))


@pytest.fixture(scope="module")
def client(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("roles") / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def world(client: TestClient) -> World:
    return make_world(engine_of(client))


def _path(template: str, target: TenantObjects, engine: Engine, mismatch: TenantObjects) -> str:
    """Fill a route's path for ``target``; sub-objects come from ``mismatch`` (usually target)."""
    values = {
        "zone": "beijing-finance",
        "dataset": "enterprise",
        "tenant": target.id,
        "member_id": mismatch.target_member,
        "grant_id": mismatch.grant,
        "template_id": "no-such-template",
        "consent_id": "cns_0000000000000000",
        "receipt_id": "rcp_0000000000000000",
        "provider": "no-such-provider",
        "version": "1",
        "load": "load_0000000000000000",
        "upload": "upl_0000000000000000",
        "number": "1",
        "seq": "1",
    }
    if "{key_id}" in template:  # a fresh key each call: a DELETE can succeed only once
        values["key_id"], _ = keys.issue_key(
            engine, local_audit(engine), LOCAL, mismatch.target_member
        )
    return template.format(**values)


def _expected(rule: Rule, caller: str, scope: str) -> int:
    """The documented outcome of ``caller`` on a route, for the ``scope`` of its objects."""
    if rule.public:
        return rule.ok
    if caller in ("no key", "unknown key"):
        return 401
    if scope == "other" and caller not in ZONE_WIDE:
        return 404  # another tenant's objects do not exist for you
    if caller not in rule.allowed:
        return 403
    if scope == "mismatch":
        return 404  # your tenant in the path, another tenant's member/grant/key inside it
    return rule.ok


def _cases() -> Iterator[Any]:
    for method, path in ROUTES:
        scopes = ["own"]
        if "{tenant}" in path:
            scopes.append("other")
            if any(p in path for p in ("{member_id}", "{grant_id}")):
                scopes.append("mismatch")
        for caller in CALLERS:
            for scope in scopes:
                yield pytest.param(
                    method, path, caller, scope, id=f"{method} {path} {caller} {scope}"
                )


@pytest.mark.parametrize(("method", "path", "caller", "scope"), list(_cases()))
def test_role_matrix(
    client: TestClient, world: World, method: str, path: str, caller: str, scope: str
) -> None:
    rule = ROUTES[(method, path)]
    engine = engine_of(client)
    if rule.fresh_world:
        world = make_world(engine)
    target = world.other if scope == "other" else world.home
    inner = world.other if scope == "mismatch" else target
    url = _path(path, target, engine, inner)
    headers = {}
    if caller == "unknown key":
        headers = auth("veil_" + "x" * 43)
    elif caller != "no key":
        headers = auth(world.home.keys[caller])
    response = client.request(method, url, json=rule.body, headers=headers)
    if rule.undo is not None and response.status_code == rule.ok:
        undone = client.post(rule.undo, headers=auth(world.home.keys["authority"]))
        assert undone.status_code == 200, undone.text
    expected = _expected(rule, caller, scope)
    if rule.gate_only and expected == rule.ok:
        assert response.status_code not in (401, 403), (url, response.text)
        assert response.status_code < 500, (url, response.text)
        return
    assert response.status_code == expected, (url, response.text)
    if expected >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        code = {401: "unauthorized", 403: "forbidden", 404: "not_found"}[expected]
        assert response.json()["code"] == code


def test_tenant_listing_shows_only_your_own_unless_zone_wide(
    client: TestClient, world: World
) -> None:
    everyone = {
        t.id
        for t in tenants.list_tenants(
            engine_of(client),
            Actor.of(keys.authenticate(engine_of(client), "Bearer " + world.home.keys["admin"])),
        )
    }
    assert {world.home.id, world.other.id} <= everyone
    for role in ROLES:
        listed = client.get("/v1/tenants", headers=auth(world.home.keys[role])).json()["tenants"]
        ids = {t["id"] for t in listed}
        if role in ZONE_WIDE:
            assert ids == everyone, role
        else:
            assert ids == {world.home.id}, role


def test_another_tenants_object_looks_exactly_like_a_missing_one(
    client: TestClient, world: World
) -> None:
    """The 404 for someone else's tenant is the 404 for a tenant that does not exist."""
    key = auth(world.home.keys["analyst"])
    theirs = client.get(f"/v1/tenants/{world.other.id}/grants", headers=key)
    nobody = client.get("/v1/tenants/ten_0000000000000000/grants", headers=key)
    assert theirs.status_code == nobody.status_code == 404

    def shape(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in ("detail", "instance")}

    assert shape(theirs.json()) == shape(nobody.json())


def test_a_revoked_key_is_refused_everywhere_like_an_unknown_one(
    client: TestClient, world: World
) -> None:
    engine = engine_of(client)
    member, key = members.create_member(
        engine, local_audit(engine), LOCAL, world.home.id, "leaver", MemberRole.ANALYST
    )
    assert client.get("/v1/budgets", headers=auth(key)).status_code == 200
    (key_id,) = [k.id for k in keys.list_keys(engine, member)]
    keys.revoke_key(engine, local_audit(engine), LOCAL, member, key_id)
    revoked = client.get("/v1/budgets", headers=auth(key))
    unknown = client.get("/v1/budgets", headers=auth("veil_" + "y" * 43))
    assert revoked.status_code == unknown.status_code == 401
    assert revoked.json() == unknown.json()
