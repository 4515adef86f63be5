"""API hardening: rate limits, tenant concurrency, body size, SQL size and nesting, unknown
fields, object-level authorisation, and answers that never show the server's filesystem.

Real app, real state store, real executor; three apps with different limits (module-scoped:
starting one spawns an executor worker). Pure parts of ``sandbox/api/limits.py`` are tested with a
fake clock.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy import Engine

from policies.accounting import Accounting
from policies.gate.limits import SqlLimits, bracket_depth, check_size
from sandbox.access import members, tenants
from sandbox.access.keys import issue_key
from sandbox.access.model import MemberRole
from sandbox.api.guard import Guard, GuardMiddleware
from sandbox.api.limits import InFlight, TokenBuckets, retry_after
from sandbox.api.responses import verification as responses
from sandbox.config import Settings
from sandbox.errors import SqlTooDeep, SqlTooLong
from sandbox.ledger import entries
from sandbox.ledger.service import Ledger
from sandbox.verification.receipts import RECEIPT_FIELDS
from tests.support.app import auth, engine_of, running_app
from tests.support.data import data_text
from tests.support.store import LOCAL, local_audit

DOC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PROBLEM = "application/problem+json"
MISSING = {
    "tenant": "ten_0000000000000000",
    "member_id": "mem_0000000000000000",
    "key_id": "key_0000000000000000",
    "grant_id": "grt_0000000000000000",
    "consent_id": "cns_0000000000000000",
    "receipt_id": "rcpt_00000000000000000000000000000000",
    "number": "99999",
}


# -- apps ---------------------------------------------------------------------------------------


def _client(demo_dir: Path, root: Path, **limits: Any) -> Iterator[TestClient]:
    data_dir = root / "data"
    shutil.copytree(demo_dir, data_dir)
    settings = Settings(
        data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20, **limits
    )
    with running_app(settings) as client:
        yield client


@pytest.fixture(scope="module")
def plain(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The default limits."""
    yield from _client(demo_dir, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def limited(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """5 requests per key at once, one token per 20 s; one request in flight per tenant; every
    single verification padded to 1.5 s (a request that stays in flight)."""
    yield from _client(
        demo_dir,
        tmp_path_factory.mktemp("limited"),
        rate_limit_per_s=0.05,
        rate_limit_burst=5,
        tenant_concurrency=1,
        verification_envelope_ms=1500,
    )


@pytest.fixture(scope="module")
def small(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """Small bodies (4 KiB) and short, shallow SQL."""
    yield from _client(
        demo_dir,
        tmp_path_factory.mktemp("small"),
        max_body_bytes=4096,
        max_sql_chars=300,
        max_sql_depth=6,
    )


def demo_keys(client: TestClient) -> dict[str, str]:
    data_dir: Path = client.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    keys: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return keys


def guard_of(client: TestClient) -> Guard:
    for middleware in client.app.user_middleware:  # type: ignore[attr-defined]
        if middleware.cls is GuardMiddleware:
            guard: Guard = middleware.kwargs["guard"]
            return guard
    raise AssertionError("no GuardMiddleware")


def new_key(client: TestClient, role: MemberRole = MemberRole.ANALYST, tenant: str = "") -> str:
    engine = engine_of(client)
    tenant = tenant or tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Hardening", "research", "public_welfare"
    )
    _, key = members.create_member(engine, local_audit(engine), LOCAL, tenant, role.value, role)
    return key


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status, body
    assert body["type"].endswith("/" + code) and body["instance"]
    return body


@dataclass(frozen=True)
class Route:
    path: str
    methods: frozenset[str]
    takes_json: bool  # a pydantic body model

    def matches(self, method: str, url: str) -> bool:
        pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(self.path))
        return method in self.methods and re.fullmatch(pattern, url.split("?")[0]) is not None


def served_routes(client: TestClient) -> list[Route]:
    found = []
    for context in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if isinstance(route, APIRoute) and context.path not in DOC_PATHS:
            methods = frozenset(context.methods or ())
            found.append(Route(str(context.path), methods, route.body_field is not None))
    return found


# -- the pure parts -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token every 0.5 s
    assert buckets.take("b") == 0.0  # another caller has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 100
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # never above the burst
    assert buckets.take("a") > 0


def test_token_bucket_peek_charge_and_the_cap_on_callers() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 2, max_callers=2, clock=clock)
    assert buckets.wait("unknown") == 0.0
    buckets.charge("a")
    buckets.charge("a")
    buckets.charge("a")  # never below zero
    assert buckets.wait("a") == pytest.approx(1.0)
    clock.now += 1
    assert buckets.wait("a") == 0.0
    buckets.take("b")
    buckets.take("c")  # a third caller: the least recently used bucket is dropped
    assert len(buckets._buckets) == 2
    with pytest.raises(ValueError):
        TokenBuckets(0, 1)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2, 19.99)] == [1, 1, 1, 2, 20]


def test_in_flight_counts_per_tenant() -> None:
    slots = InFlight(2)
    assert slots.enter("t") and slots.enter("t") and not slots.enter("t")
    assert slots.enter("u")
    slots.leave("t")
    assert slots.count("t") == 1 and slots.enter("t")
    for _ in range(5):
        slots.leave("u")  # never negative
    assert slots.count("u") == 0


def test_bracket_depth_counts_every_bracket_kind_and_never_goes_negative() -> None:
    assert bracket_depth("SELECT 1") == 0
    assert bracket_depth("SELECT COUNT(*) FROM t WHERE (a IN (1, 2))") == 2
    assert bracket_depth("SELECT [1, [2, {'a': (3)}]]") == 4
    assert bracket_depth(")))(((") == 3
    assert bracket_depth("SELECT '((((('") == 5  # literals count too: over, never under


def test_check_size_names_the_rule_and_the_field() -> None:
    check_size("SELECT (1)", SqlLimits(max_chars=10, max_depth=1))
    with pytest.raises(SqlTooLong) as long_:
        check_size("SELECT 12345", SqlLimits(max_chars=10, max_depth=5))
    assert long_.value.extra["field"] == "sql" and long_.value.extra["limit"] == 10
    with pytest.raises(SqlTooDeep) as deep:
        check_size("((1))", SqlLimits(max_chars=10, max_depth=1))
    assert deep.value.error_code == "sql_too_deep" and deep.value.status == 400


# -- rate limits ----------------------------------------------------------------------------------


def test_a_key_is_limited_after_its_burst_and_another_key_is_not(limited: TestClient) -> None:
    first, second = new_key(limited), new_key(limited)
    for _ in range(5):
        assert limited.get("/v1/budgets", headers=auth(first)).status_code == 200
    refused = limited.get("/v1/budgets", headers=auth(first))
    body = assert_problem(refused, 429, "rate_limited")
    assert re.fullmatch(r"[1-9][0-9]*", refused.headers["retry-after"])
    assert 15 <= int(refused.headers["retry-after"]) <= 20  # one token per 20 s
    assert body["retry_after"] == int(refused.headers["retry-after"])
    assert limited.get("/v1/budgets", headers=auth(second)).status_code == 200


def test_requests_without_a_key_are_limited_per_client_address(limited: TestClient) -> None:
    app = limited.app
    here = TestClient(app, client=("192.0.2.10", 4000))
    there = TestClient(app, client=("192.0.2.11", 4000))
    for _ in range(5):
        assert here.get("/v1/keys").status_code == 200
    assert_problem(here.get("/v1/keys"), 429, "rate_limited")
    assert there.get("/v1/keys").status_code == 200


def test_guessing_keys_is_limited_per_address_whatever_key_is_sent(limited: TestClient) -> None:
    valid = new_key(limited)
    guesser = TestClient(limited.app, client=("192.0.2.20", 4000))
    elsewhere = TestClient(limited.app, client=("192.0.2.21", 4000))
    for i in range(5):
        guess = guesser.get("/v1/budgets", headers=auth(f"veil_guess{i:040d}"))
        assert_problem(guess, 401, "unauthorized")
    assert_problem(
        guesser.get("/v1/budgets", headers=auth("veil_" + "z" * 43)), 429, "rate_limited"
    )
    assert_problem(guesser.get("/v1/budgets", headers=auth(valid)), 429, "rate_limited")
    assert elsewhere.get("/v1/budgets", headers=auth(valid)).status_code == 200


# -- tenant concurrency ---------------------------------------------------------------------------


def test_a_tenant_over_its_in_flight_limit_gets_429_and_others_do_not(limited: TestClient) -> None:
    engine = engine_of(limited)
    busy = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Busy Bank", "bank", "commercial"
    )
    verifier = new_key(limited, MemberRole.VERIFIER, busy)
    colleague = new_key(limited, MemberRole.ANALYST, busy)
    stranger = new_key(limited)
    slots = guard_of(limited).in_flight
    assert slots is not None
    held: list[Response] = []

    def slow_refusal() -> None:  # a consent refusal padded to the 1.5 s envelope
        body = {
            "template": "ENT_STATUS",
            "subject": "91110108MA01ABCD2X",
            "consent": "cns_0000000000000000",
            "purpose": "credit_underwriting",
        }
        held.append(limited.post("/v1/verifications", json=body, headers=auth(verifier)))

    thread = threading.Thread(target=slow_refusal)
    thread.start()
    deadline = time.monotonic() + 30
    while slots.count(busy) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slots.count(busy) == 1, "the slow request never got in flight"
    refused = limited.get("/v1/budgets", headers=auth(colleague))
    body = assert_problem(refused, 429, "too_many_concurrent")
    assert refused.headers["retry-after"] == "1" and body["retry_after"] == 1
    assert limited.get("/v1/budgets", headers=auth(stranger)).status_code == 200
    thread.join(timeout=60)
    assert_problem(held[0], 403, "consent_refused")
    assert slots.count(busy) == 0  # freed when the response was complete
    assert limited.get("/v1/budgets", headers=auth(colleague)).status_code == 200


# -- body size -------------------------------------------------------------------------------------


def tenant_count(client: TestClient) -> int:
    return len(tenants.list_tenants(engine_of(client), LOCAL))


def test_an_oversized_body_with_a_content_length_is_refused_unread(small: TestClient) -> None:
    admin = demo_keys(small)["admin"]
    before = tenant_count(small)
    body = json.dumps({"name": "x" * 5000, "kind": "bank", "purpose_class": "commercial"})
    refused = small.post(
        "/v1/tenants",
        content=body,
        headers={**auth(admin), "content-type": "application/json"},
    )
    assert assert_problem(refused, 413, "payload_too_large")["limit"] == 4096
    # a route that reads no body at all refuses it just the same
    assert_problem(
        small.request("GET", "/v1/zones", content=b"x" * 5000, headers=auth(admin)),
        413,
        "payload_too_large",
    )
    assert tenant_count(small) == before
    fine = {"name": "Small Bank", "kind": "bank", "purpose_class": "commercial"}
    assert small.post("/v1/tenants", json=fine, headers=auth(admin)).status_code == 201


def test_an_oversized_chunked_body_is_counted_and_refused(small: TestClient) -> None:
    keys = demo_keys(small)
    before = tenant_count(small)

    def chunks(total: int, first: bytes = b"") -> Iterator[bytes]:
        yield first
        for _ in range(total // 1000):
            yield b" " * 1000

    chunked = {"content-type": "application/json", **auth(keys["admin"])}
    opening = b'{"name": "Chunked Bank", "kind": "bank", "purpose_class": "commercial"}'
    refused = small.post("/v1/tenants", content=chunks(6000, opening), headers=chunked)
    assert "content-length" not in refused.request.headers
    assert_problem(refused, 413, "payload_too_large")
    assert tenant_count(small) == before
    csv_batch = {"content-type": "text/csv", **auth(keys["verifier"])}
    header = b"template,subject,consent,purpose\n"
    refused = small.post("/v1/verifications/batch", content=chunks(6000, header), headers=csv_batch)
    assert_problem(refused, 413, "payload_too_large")


# -- SQL length and nesting ------------------------------------------------------------------------


def charges_of(client: TestClient) -> int:
    return sum(1 for e in entries.entries(engine_of(client)) if e.entry == "charge")


def test_sql_over_the_length_limit_is_refused_before_the_gate(small: TestClient) -> None:
    analyst = demo_keys(small)["analyst"]
    before = charges_of(small)
    sql = "SELECT COUNT(*) AS n FROM registry WHERE industry <> '" + "x" * 300 + "'"
    for path in ("/v1/queries", "/v1/queries/preview"):
        query = {"dataset": "enterprise", "sql": sql, "epsilon": 0.1}
        body = assert_problem(
            small.post(path, json=query, headers=auth(analyst)), 400, "sql_too_long"
        )
        assert body["field"] == "sql" and body["limit"] == 300
    assert charges_of(small) == before


def test_sql_nested_too_deep_is_refused_and_just_deep_enough_passes(small: TestClient) -> None:
    analyst = demo_keys(small)["analyst"]
    before = charges_of(small)

    def nested(depth: int) -> str:
        inner = "(" * depth + "founded >= '2001-01-01'" + ")" * depth
        return f"SELECT COUNT(*) AS n FROM registry WHERE {inner}"

    too_deep = {"dataset": "enterprise", "sql": nested(7), "epsilon": 0.1}
    body = assert_problem(
        small.post("/v1/queries", json=too_deep, headers=auth(analyst)), 400, "sql_too_deep"
    )
    assert body["field"] == "sql" and body["limit"] == 6
    assert charges_of(small) == before
    deep_enough = {"dataset": "enterprise", "sql": nested(6), "epsilon": 0.1}
    answered = small.post("/v1/queries/preview", json=deep_enough, headers=auth(analyst))
    assert answered.status_code == 200, answered.text


# -- unknown input fields --------------------------------------------------------------------------


def _fill(path: str, values: dict[str, str] | None = None) -> str:
    values = values or {}
    return re.sub(r"\{([a-z_]+)\}", lambda m: values.get(m.group(1), "1"), path)


def test_every_body_rejects_an_unknown_field_by_name(plain: TestClient) -> None:
    admin = demo_keys(plain)["admin"]
    checked = []
    for route in served_routes(plain):
        if not route.takes_json:
            continue
        for method in route.methods:
            response = plain.request(
                method, _fill(route.path), json={"unexpected_member": 1}, headers=auth(admin)
            )
            body = assert_problem(response, 422, "invalid_request")
            rules = {(e["field"], e["rule"]) for e in body["errors"]}
            assert ("unexpected_member", "extra_forbidden") in rules, (route.path, body)
            checked.append((method, route.path))
    assert len(checked) >= 15, checked  # every mutating route with a JSON body


def test_integers_beyond_the_state_stores_range_are_refused_not_crashed_on(
    plain: TestClient,
) -> None:
    """Every id and integer parameter, at 2⁶³ (one past SQLite's and PostgreSQL's bigint)."""
    admin = demo_keys(plain)["admin"]
    big = str(2**63)
    query = "&".join(
        f"{name}={big}" for name in ("version", "after", "limit", "tree_size", "first", "second")
    )
    for route in served_routes(plain):
        for method in route.methods:
            url = _fill(route.path, dict.fromkeys(re.findall(r"\{([a-z_]+)\}", route.path), big))
            response = plain.request(method, f"{url}?{query}", headers=auth(admin))
            assert response.status_code < 500, (method, url, response.text)


def test_a_verification_batch_rejects_unknown_members_too(plain: TestClient) -> None:
    verifier = demo_keys(plain)["verifier"]
    batch = plain.post(
        "/v1/verifications/batch",
        json={"requests": [], "unexpected_member": 1},
        headers=auth(verifier),
    )
    assert assert_problem(batch, 400, "invalid_request")["field"] == "requests"
    line = {"template": "ENT_STATUS", "subject": "s", "consent": "c", "purpose": "p", "nope": 1}
    answered = plain.post(
        "/v1/verifications/batch", json={"requests": [line]}, headers=auth(verifier)
    )
    assert answered.status_code == 200
    (result,) = answered.json()["results"]
    assert result["error"]["code"] == "invalid_request" and "nope" in result["error"]["detail"]


# -- object-level authorisation --------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One tenant and the objects it owns."""

    tenant: str
    keys: dict[str, str]  # role -> key
    member: str
    key_id: str
    grant: str


@dataclass(frozen=True)
class Objects:
    mine: Side  # the callers' tenant
    theirs: Side  # someone else's
    consent: str  # theirs, granted by the demo subject
    receipt: str  # theirs
    issue: int  # raised by theirs on enterprise


def _side(engine: Engine, name: str, subject: str) -> Side:
    tenant = tenants.create_tenant(engine, local_audit(engine), LOCAL, name, "bank", "commercial")
    keys = {}
    for role in (MemberRole.ANALYST, MemberRole.VERIFIER, MemberRole.SUBJECT):
        _, keys[role.value] = members.create_member(
            engine,
            local_audit(engine),
            LOCAL,
            tenant,
            role.value,
            role,
            subject_id=subject if role == MemberRole.SUBJECT else None,
        )
    member, _ = members.create_member(
        engine, local_audit(engine), LOCAL, tenant, "spare", MemberRole.ANALYST
    )
    key_id, _ = issue_key(engine, local_audit(engine), LOCAL, member)
    grant = Ledger(engine, local_audit(engine)).grants.create_grant(
        LOCAL,
        tenant,
        "enterprise",
        Accounting.PURE,
        budget_micro=1_000_000,
        delta_pico=0,
        per_query_cap_micro=500_000,
    )
    return Side(tenant, keys, member, key_id, grant)


@pytest.fixture(scope="module")
def objects(plain: TestClient) -> Objects:
    engine = engine_of(plain)
    demo = demo_keys(plain)
    mine = _side(engine, "Mine", "91110108MA0000MINE")
    theirs = _side(engine, "Theirs", "91110108MA000THEIR")
    consent = plain.post(
        "/v1/consents",
        json={
            "tenant": theirs.tenant,
            "template": "ENT_STATUS",
            "purpose": "credit_underwriting",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "max_uses": 2,
        },
        headers=auth(demo["subject"]),
    )
    assert consent.status_code == 201, consent.text
    consent_id = consent.json()["id"]
    verified = plain.post(
        "/v1/verifications",
        json={
            "template": "ENT_STATUS",
            "subject": demo["subject_id"],
            "consent": consent_id,
            "purpose": "credit_underwriting",
        },
        headers=auth(theirs.keys["verifier"]),
    )
    assert verified.status_code == 200, verified.text
    issue = plain.post(
        "/v1/datasets/enterprise/issues",
        json={"title": "their issue"},
        headers=auth(theirs.keys["analyst"]),
    )
    assert issue.status_code == 201, issue.text
    return Objects(
        mine, theirs, consent_id, verified.json()["receipt"]["receipt_id"], issue.json()["number"]
    )


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    caller: str  # role in "mine" (never zone-wide: admins and auditors see every tenant)
    body: dict[str, Any] | None = None


# Every route that takes the id of an object some tenant owns: another tenant's object must
# answer exactly like a missing one.
TENANT_OWNED = [
    Case("GET", "/v1/tenants/{tenant}", "analyst"),
    Case("GET", "/v1/tenants/{tenant}/members", "analyst"),
    Case("POST", "/v1/tenants/{tenant}/members", "analyst", {"name": "x", "role": "analyst"}),
    Case("GET", "/v1/tenants/{tenant}/members/{member_id}/keys", "analyst"),
    Case("POST", "/v1/tenants/{tenant}/members/{member_id}/keys", "analyst"),
    Case("DELETE", "/v1/tenants/{tenant}/members/{member_id}/keys/{key_id}", "analyst"),
    Case(
        "POST",
        "/v1/tenants/{tenant}/grants",
        "analyst",
        {"dataset": "enterprise", "epsilon": 1.0, "per_query_cap": 0.5},
    ),
    Case("GET", "/v1/tenants/{tenant}/grants", "analyst"),
    Case(
        "PUT",
        "/v1/tenants/{tenant}/grants/{grant_id}/members/{member_id}",
        "analyst",
        {"budget": 0.1},
    ),
    Case(
        "PUT",
        "/v1/tenants/{tenant}/verification-quotas/{template_id}",
        "verifier",
        {"quota": 5},
    ),
    Case("DELETE", "/v1/consents/{consent_id}", "subject"),
    Case("GET", "/v1/receipts/{receipt_id}", "verifier"),
    Case("GET", "/v1/receipts/{receipt_id}", "subject"),
    Case("GET", "/v1/datasets/{dataset}/issues/{number}", "analyst"),
]
# Routes with an id that names no tenant's object, and why.
NOT_TENANT_OWNED = {
    "/v1/zones/{zone}/datasets": "the catalogue: zones and datasets are shared",
    "/v1/datasets/{dataset}": "the catalogue",
    "/v1/templates/{template_id}": "the catalogue of verification templates",
    "/v1/receipts/{receipt_id}/status": "public by design: valid or revoked, for offline checks",
    "/v1/receipts/{receipt_id}/revoke": "zone staff (admins, operators) only",
    "/v1/providers/{provider}/members": "admins only",
    "/v1/zones/{zone}/datasets/{dataset}/versions": "zone staff and the dataset's provider",
    "/v1/zones/{zone}/datasets/{dataset}/versions/{version}": "zone staff and the provider",
    "/v1/zones/{zone}/datasets/{dataset}/versions/{version}/activate": "zone staff and the "
    "dataset's provider",
    "/v1/zones/{zone}/datasets/{dataset}/loads/{load}": "zone staff only",
    "/v1/zones/{zone}/datasets/{dataset}/uploads": "zone staff and the dataset's provider only",
    "/v1/zones/{zone}/datasets/{dataset}/uploads/{upload}": "zone staff and the dataset's "
    "provider only (a provider sees its own uploads; tests/onboarding/test_uploads.py)",
    "/v1/datasets/{dataset}/quality": "zone staff and the dataset's provider only",
    "/v1/datasets/{dataset}/issues": "issues are raised on the catalogue; the list is filtered",
    "/v1/datasets/{dataset}/issues/{number}/answer": "zone staff and the provider only",
    "/v1/datasets/{dataset}/issues/{number}/resolve": "zone staff and the provider only",
    "/v1/zones/{zone}/authorisation": "the zone's, not a tenant's: the authority, zone staff "
    "and auditors read it; only the authority changes it",
    "/v1/zones/{zone}/authorisation/suspend": "the authority only",
    "/v1/zones/{zone}/authorisation/resume": "the authority only",
    "/v1/zones/{zone}/authorisation/exit": "the authority only",
}
ZONE_WIDE_PREFIXES = ("/v1/audit",)  # auditors and admins only: they see every tenant


def test_every_route_with_an_id_is_classified(plain: TestClient) -> None:
    owned = {(c.method, c.path) for c in TENANT_OWNED}
    for route in served_routes(plain):
        if "{" not in route.path or route.path.startswith(ZONE_WIDE_PREFIXES):
            continue
        for method in route.methods:
            assert (method, route.path) in owned or route.path in NOT_TENANT_OWNED, (
                f"{method} {route.path}: add it to TENANT_OWNED (with a test) or say why not"
            )


def _values(objects: Objects, side: Side) -> dict[str, str]:
    return {
        "tenant": side.tenant,
        "member_id": side.member,
        "key_id": side.key_id,
        "grant_id": side.grant,
        "consent_id": objects.consent,
        "receipt_id": objects.receipt,
        "number": str(objects.issue),
        "dataset": "enterprise",
        "template_id": "ENT_STATUS",
    }


def _shape(response: Response, ids: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    detail = body.get("detail", "")
    for value in ids:
        detail = detail.replace(value, "<id>")
    return {**body, "detail": detail, "instance": "-", "status_code": response.status_code}


@pytest.mark.parametrize("case", TENANT_OWNED, ids=lambda c: f"{c.method} {c.path} {c.caller}")
def test_another_tenants_object_answers_like_a_missing_one(
    plain: TestClient, objects: Objects, case: Case
) -> None:
    key = auth(objects.mine.keys[case.caller])
    theirs = _values(objects, objects.theirs)
    missing = {**theirs, **MISSING}
    found = plain.request(case.method, _fill(case.path, theirs), json=case.body, headers=key)
    absent = plain.request(case.method, _fill(case.path, missing), json=case.body, headers=key)
    assert_problem(found, 404, "not_found")
    assert_problem(absent, 404, "not_found")
    assert _shape(found, list(theirs.values())) == _shape(absent, list(missing.values()))


def test_a_tenants_own_ids_under_its_own_path_must_be_its_own(
    plain: TestClient, objects: Objects
) -> None:
    """Zone-wide admins too: another tenant's member, key or grant under a tenant's path is not
    found."""
    admin = auth(demo_keys(plain)["admin"])
    mine, theirs = objects.mine, objects.theirs
    for method, path, body in [
        ("GET", f"/v1/tenants/{mine.tenant}/members/{theirs.member}/keys", None),
        ("POST", f"/v1/tenants/{mine.tenant}/members/{theirs.member}/keys", None),
        ("DELETE", f"/v1/tenants/{mine.tenant}/members/{mine.member}/keys/{theirs.key_id}", None),
        (
            "PUT",
            f"/v1/tenants/{mine.tenant}/grants/{theirs.grant}/members/{mine.member}",
            {"budget": 0.1},
        ),
        (
            "PUT",
            f"/v1/tenants/{mine.tenant}/grants/{mine.grant}/members/{theirs.member}",
            {"budget": 0.1},
        ),
    ]:
        assert_problem(plain.request(method, path, json=body, headers=admin), 404, "not_found")


def test_listings_show_only_your_tenants_objects(plain: TestClient, objects: Objects) -> None:
    mine = objects.mine.keys
    receipts = plain.get("/v1/receipts", headers=auth(mine["verifier"])).json()["receipts"]
    assert objects.receipt not in {r["receipt_id"] for r in receipts}
    consents = plain.get("/v1/consents", headers=auth(mine["verifier"])).json()["consents"]
    assert objects.consent not in {c["id"] for c in consents}
    issues = plain.get("/v1/datasets/enterprise/issues", headers=auth(mine["analyst"])).json()
    assert objects.issue not in {i["number"] for i in issues["issues"]}
    budgets = plain.get("/v1/budgets", headers=auth(mine["analyst"])).json()["budgets"]
    assert {b["grant"] for b in budgets} == {objects.mine.grant}


# -- no filesystem paths, key hashes or engine words in any answer ---------------------------------

POLICY = data_text("firms_minimal.toml")


def _wait(client: TestClient, url: str, key: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.get(url, headers=key).json()["state"] != "loading":
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} still loading")


def test_no_answer_of_a_full_tour_shows_a_path_a_key_hash_or_an_engine_word(
    plain: TestClient, objects: Objects
) -> None:
    settings: Settings = plain.app.state.services.settings  # type: ignore[attr-defined]
    data_dir = settings.data_dir
    demo = demo_keys(plain)
    admin, analyst = auth(demo["admin"]), auth(demo["analyst"])
    sources = data_dir / "sources"
    sources.mkdir(exist_ok=True)
    (sources / "firms.csv").write_text("credit_code,district,revenue\nA1,east,10\nA2,west,20\n")
    seen: list[tuple[str, str, Response]] = []

    def call(method: str, url: str, key: dict[str, str], body: Any = None) -> Response:
        response = plain.request(method, url, json=body, headers=key)
        seen.append((method, url, response))
        return response

    # a load that works, one that fails on a missing file, and their reports
    call(
        "POST",
        "/v1/zones",
        admin,
        {"id": "tour", "kind": "regional", "operator": "o", "title": "T"},
    )
    loaded = call(
        "POST",
        "/v1/zones/tour/datasets/firms/versions",
        admin,
        {"policy": POLICY, "source": "firms.csv"},
    )
    assert loaded.status_code == 202, loaded.text
    _wait(plain, loaded.json()["url"], admin)
    failed = call(
        "POST",
        "/v1/zones/tour/datasets/firms/versions",
        admin,
        {"policy": POLICY, "source": "nope.csv"},
    )
    _wait(plain, failed.json()["url"], admin)
    assert call("GET", failed.json()["url"], admin).json()["error"]["code"] == "source_not_found"
    outside = call(
        "POST",
        "/v1/zones/tour/datasets/firms/versions",
        admin,
        {"policy": POLICY, "source": "/etc/passwd"},
    )
    assert outside.status_code >= 400
    for url in (
        "/v1/zones/tour/datasets/firms/versions",
        "/v1/datasets/firms/quality",
        "/v1/datasets/firms/quality?format=html",
        "/v1/ledger?format=csv",
    ):
        assert call("GET", url, admin).status_code == 200, url
    query = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}
    call("POST", "/v1/queries", analyst, query)
    call("POST", "/v1/queries", analyst, {**query, "sql": "SELECT nope FROM registry"})
    # every route of the app at least once, as the admin and as a role that may call it
    values = {
        **_values(objects, objects.theirs),
        "zone": "tour",
        "dataset": "firms",
        "version": "1",
    }
    for route in served_routes(plain):
        for method in route.methods:
            for role in ("admin", "analyst", "verifier", "subject"):
                call(method, _fill(route.path, values), auth(demo[role]), None)
    for route in served_routes(plain):
        for method in route.methods:
            assert any(route.matches(m, u) for m, u, _ in seen), (method, route.path)
    forbidden = {str(data_dir), str(data_dir.resolve()), "key_hash", "Traceback", "Error:"}
    for method, url, response in seen:
        assert response.status_code < 500, (method, url, response.text)
        text = response.text + json.dumps(dict(response.headers))
        for word in forbidden:
            assert word not in text, (method, url, word, text[:500])


# -- response models ----------------------------------------------------------------------------


def test_every_route_declares_what_it_returns(plain: TestClient) -> None:
    """A response model (or, for the routes that answer CSV, HTML or a prebuilt batch body, a
    documented 200 model); only a 204 has no body."""
    undeclared = []
    for context in iter_route_contexts(plain.app.routes):  # type: ignore[attr-defined]
        route = context.original_route
        if not isinstance(route, APIRoute) or context.path in DOC_PATHS:
            continue
        if context.path == "/metrics":  # Prometheus's text format, declared as its only content
            assert CONTENT_TYPE_LATEST in route.responses[200]["content"]
            continue
        model = route.response_model or route.responses.get(200, {}).get("model")
        explicit = isinstance(model, type) and issubclass(model, BaseModel)  # not dict[str, Any]
        if not explicit and route.status_code != 204:
            undeclared.append(f"{sorted(route.methods)} {context.path}")
    assert not undeclared, undeclared


def test_the_receipt_model_carries_every_signed_member() -> None:
    """Dropping a member of a signed receipt would break its signature."""
    assert set(responses.Receipt.model_fields) == {*RECEIPT_FIELDS, "signature"}
