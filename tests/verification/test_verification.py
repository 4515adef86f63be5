"""Verification end to end through the real app on the demo zone: consents, the refusals that
must look alike, the leakage ledger across tenants, quotas, sticky answers, claim changes,
receipts (offline, status, revocation), batches, and who may call what."""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from policies.templates.model import ClaimType
from sandbox import catalog
from sandbox.config import Settings
from sandbox.errors import BadSignature, MalformedReceipt, UnknownKey
from sandbox.keys.signing import public_keys_from_document
from sandbox.store.schema import alerts, consents, verification_events
from sandbox.verification.quota import QuotaService
from sandbox.verification.receipts import commit, new_salt, signing_input, verify
from sandbox.verification.requests import ConsentRequest
from tests.support.app import auth, engine_of, running_app
from tests.support.demo import DEMO_TEMPLATES
from tests.support.store import LOCAL
from tests.support.verification import (
    PURPOSE,
    REVENUE,
    ask,
    consent_service,
    events,
    expires,
    grant,
    service,
)

# -- helpers -------------------------------------------------------------------------------------


def quota_service(client: TestClient) -> QuotaService:
    found: QuotaService = client.app.state.services.verification_quotas  # type: ignore[attr-defined]
    return found


def claim_for(template_id: str, client: TestClient) -> int | None:
    template = service(client).templates.get(template_id)
    if template.claim.type == ClaimType.CHOICE:
        return template.claim.choices[0]
    if template.claim.type == ClaimType.NUMBER:
        return REVENUE
    return None


def new_bank(client: TestClient, admin: str, name: str = "Second Bank") -> tuple[str, str]:
    """A bank tenant with a verifier: (tenant id, verifier key)."""
    tenant = client.post(
        "/v1/tenants",
        json={"name": name, "kind": "bank", "purpose_class": "commercial"},
        headers=auth(admin),
    ).json()["id"]
    member = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"name": "verifier", "role": "verifier"},
        headers=auth(admin),
    )
    assert member.status_code == 201, member.text
    return tenant, member.json()["api_key"]


@functools.cache
def _demo_register() -> list[str]:
    """The demo register's credit codes, generated again (same size and seed as the demo zone:
    the data directory keeps no plain copy of its sources)."""
    import tempfile

    import pyarrow.parquet as pq

    from sandbox.demo import synthetic
    from tests.support.demo import DEMO_TEST_ROWS

    with tempfile.TemporaryDirectory() as tmp:
        paths = synthetic.write_parquet(Path(tmp), DEMO_TEST_ROWS)
        codes: list[str] = pq.read_table(paths["registry"]).column("credit_code").to_pylist()
    return codes


def codes(client: TestClient, n: int) -> list[str]:
    """``n`` credit codes from the demo register, the demo subject's excluded."""
    data_dir: Path = client.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    demo_subject = json.loads((data_dir / "demo-keys.json").read_text())["subject_id"]
    found = [c for c in _demo_register() if c != demo_subject]
    return found[:n]


def problem_shape(response: Any) -> dict[str, Any]:
    body = response.json()
    return {
        "status": response.status_code,
        "content_type": response.headers["content-type"],
        "keys": sorted(body),
        **{k: v for k, v in body.items() if k != "instance"},
    }


# -- templates, keys, members --------------------------------------------------------------------


def test_templates_are_listed_with_their_fixed_limits(client, keys):
    listed = client.get("/v1/templates", headers=auth(keys["verifier"]))
    assert listed.status_code == 200
    ids = {t["id"] for t in listed.json()["templates"]}
    assert ids == {
        "ENT_STATUS",
        "ENT_AGE",
        "REV_TOLERANCE",
        "REV_BAND",
        "TAX_CONTINUITY",
        "SI_CONTINUITY",
        "UTILITY_ACTIVITY",
    }
    one = client.get("/v1/templates/REV_TOLERANCE", headers=auth(keys["analyst"])).json()
    assert one["version"] == 1 and one["versions"] == [1]
    assert one["parameters"]["tolerance"] == "0.10"
    assert one["limits"]["max_claims"] == 1
    assert client.get("/v1/templates/NOPE", headers=auth(keys["verifier"])).status_code == 404
    assert client.get("/v1/templates").status_code == 401


def test_keys_are_public_and_created_once_with_private_modes(client, settings):
    document = client.get("/v1/keys")
    assert document.status_code == 200
    (entry,) = document.json()["keys"]
    assert entry["status"] == "current" and entry["algorithm"] == "Ed25519"
    key_dir = settings.keys_path
    for name in ("receipt-signing.pem", "zone-secret"):
        assert (key_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert len((key_dir / "zone-secret").read_bytes()) == 32


def test_admin_creates_a_subject_member_bound_to_a_credit_code(client, keys):
    tenant = keys["verifier_tenant"]
    made = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"name": "rep", "role": "subject", "subject": "91110108MA00000001"},
        headers=auth(keys["admin"]),
    )
    assert made.status_code == 201, made.text
    assert made.json()["subject"] == "91110108MA00000001"
    missing = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"name": "rep", "role": "subject"},
        headers=auth(keys["admin"]),
    )
    assert missing.status_code == 400 and missing.json()["field"] == "subject"
    extra = client.post(
        f"/v1/tenants/{tenant}/members",
        json={"name": "v", "role": "verifier", "subject": "91110108MA00000001"},
        headers=auth(keys["admin"]),
    )
    assert extra.status_code == 400


# -- the answer and its receipt ------------------------------------------------------------------


def test_every_demo_template_answers_with_a_receipt_that_verifies_offline(client, keys):
    public = public_keys_from_document(client.get("/v1/keys").json())
    for template in service(client).templates:
        claim = claim_for(template.id, client)
        consent, salt = grant(client, keys, template.id, claim)
        response = ask(
            client,
            keys["verifier"],
            template.id,
            consent,
            keys["subject_id"],
            claim,
            salt if claim is not None else None,
        )
        assert response.status_code == 200, (template.id, response.text)
        body = response.json()
        assert set(body) == {"outcome", "receipt"}
        receipt = body["receipt"]
        assert body["outcome"] in template.outcomes
        # the demo subject is in business with a full year of filings: a definite answer
        assert body["outcome"] != "cannot_verify", template.id
        assert receipt["outcome"] == body["outcome"]
        assert verify(receipt, public)
        assert receipt["template_id"] == template.id and receipt["consent_id"] == consent
        assert receipt["tenant_id"] == keys["verifier_tenant"] and receipt["purpose"] == PURPOSE
        assert receipt["subject_ref"] == service(client).subject_ref(keys["subject_id"])
        expected = commit(claim, salt) if claim is not None else None
        assert receipt["claim_commitment"] == expected
        # the fast signing input is exactly the RFC 8785 one
        unsigned = {k: v for k, v in receipt.items() if k != "signature"}
        assert signing_input(receipt) == json.dumps(
            unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        # never the claimed value or a fact
        text = json.dumps(body)
        assert str(REVENUE) not in text


def test_a_tampered_receipt_fails_offline(client, keys):
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    receipt = ask(
        client, keys["verifier"], "REV_TOLERANCE", consent, keys["subject_id"], REVENUE, salt
    ).json()["receipt"]
    public = public_keys_from_document(client.get("/v1/keys").json())
    other = "match" if receipt["outcome"] != "match" else "no_match"
    with pytest.raises(BadSignature):
        verify({**receipt, "outcome": other}, public)
    with pytest.raises(BadSignature):
        verify({**receipt, "tenant_id": "ten_someone_else"}, public)
    with pytest.raises(MalformedReceipt):
        verify({**receipt, "extra": 1}, public)
    with pytest.raises(UnknownKey):
        verify({**receipt, "key_id": "0" * 16}, public)


def test_receipt_status_revocation_and_who_sees_receipts(client, keys):
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    receipt = ask(
        client, keys["verifier"], "REV_TOLERANCE", consent, keys["subject_id"], REVENUE, salt
    ).json()["receipt"]
    rid = receipt["receipt_id"]
    status = client.get(f"/v1/receipts/{rid}/status")  # public: no key
    assert status.status_code == 200
    assert status.json() == {"receipt_id": rid, "status": "valid"}
    assert client.get("/v1/receipts/rcpt_nope/status").status_code == 404

    # the verifier's tenant and the subject see it; an analyst may not list; another bank: 404
    mine = client.get("/v1/receipts", headers=auth(keys["verifier"])).json()["receipts"]
    assert [r["receipt_id"] for r in mine] == [rid]
    about_me = client.get("/v1/receipts", headers=auth(keys["subject"])).json()["receipts"]
    assert [r["receipt"] for r in about_me] == [receipt]
    assert client.get("/v1/receipts", headers=auth(keys["analyst"])).status_code == 403
    _, other_bank = new_bank(client, keys["admin"])
    assert client.get(f"/v1/receipts/{rid}", headers=auth(other_bank)).status_code == 404
    assert client.get("/v1/receipts", headers=auth(other_bank)).json()["receipts"] == []
    got = client.get(f"/v1/receipts/{rid}", headers=auth(keys["verifier"])).json()
    assert got == {"receipt_id": rid, "status": "valid", "receipt": receipt}

    # revocation after a data correction: operators and admins only
    body = {"reason": "data_correction"}
    refused = client.post(f"/v1/receipts/{rid}/revoke", json=body, headers=auth(keys["verifier"]))
    assert refused.status_code == 403
    revoked = client.post(f"/v1/receipts/{rid}/revoke", json=body, headers=auth(keys["admin"]))
    assert revoked.status_code == 200, revoked.text
    status = client.get(f"/v1/receipts/{rid}/status").json()
    assert status["status"] == "revoked" and status["reason"] == "data_correction"
    assert status["revoked_at"].endswith("Z")
    bad = client.post(
        f"/v1/receipts/{rid}/revoke", json={"reason": "because"}, headers=auth(keys["admin"])
    )
    assert bad.status_code == 422


# -- consents and the refusals that look alike ---------------------------------------------------


def test_every_consent_failure_is_the_same_refusal(client, keys):
    """No consent, expired, revoked, used up, another tenant's, another template's, another
    subject's, another purpose, a claim (or salt) that does not match the commitment, an
    unknown subject: one status, one code, one body — and nothing charged."""
    subject = keys["subject_id"]
    verifier = keys["verifier"]
    engine = engine_of(client)
    refusals: dict[str, Any] = {}

    refusals["no consent"] = ask(client, verifier, "ENT_STATUS", "cns_0000000000000000", subject)
    refusals["unknown subject"] = ask(
        client, verifier, "ENT_STATUS", "cns_0000000000000000", "91110000ZZZZZZZZZZ"
    )
    consent, _ = grant(client, keys, "ENT_STATUS")
    refusals["unknown subject, real consent"] = ask(
        client, verifier, "ENT_STATUS", consent, "91110000ZZZZZZZZZZ"
    )
    refusals["other template"] = ask(client, verifier, "ENT_AGE", consent, subject, 1, new_salt())
    refusals["other purpose"] = ask(
        client, verifier, "ENT_STATUS", consent, subject, purpose="marketing"
    )

    other_tenant, other_key = new_bank(client, keys["admin"])
    theirs, _ = grant(client, keys, "ENT_STATUS", tenant=other_tenant)
    refusals["other tenant"] = ask(client, verifier, "ENT_STATUS", theirs, subject)

    rev, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    refusals["claim mismatch"] = ask(
        client, verifier, "REV_TOLERANCE", rev, subject, REVENUE + 1, salt
    )
    refusals["salt mismatch"] = ask(
        client, verifier, "REV_TOLERANCE", rev, subject, REVENUE, new_salt()
    )

    expired, expired_salt = grant(client, keys, "TAX_CONTINUITY", 6)
    with engine.begin() as con:
        con.execute(
            update(consents)
            .where(consents.c.id == expired)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    refusals["expired"] = ask(client, verifier, "TAX_CONTINUITY", expired, subject, 6, expired_salt)

    revoked, revoked_salt = grant(client, keys, "SI_CONTINUITY", 6)
    gone = client.delete(f"/v1/consents/{revoked}", headers=auth(keys["subject"]))
    assert gone.status_code == 204
    refusals["revoked"] = ask(client, verifier, "SI_CONTINUITY", revoked, subject, 6, revoked_salt)

    before = events(client)
    shapes = {name: problem_shape(r) for name, r in refusals.items()}
    first = next(iter(shapes.values()))
    assert first["status"] == 403 and first["code"] == "consent_refused"
    assert first["content_type"] == "application/problem+json"
    for name, shape in shapes.items():
        assert shape == first, name
    assert events(client) == before == []  # nothing charged, nothing recorded

    # used up: one use answers; the same question again is a free sticky repeat; a new
    # question under the used-up consent (the data changed) is the same refusal
    once, _ = grant(client, keys, "ENT_STATUS", max_uses=1)
    assert ask(client, verifier, "ENT_STATUS", once, subject).status_code == 200
    assert ask(client, verifier, "ENT_STATUS", once, subject).status_code == 200
    _new_dataset_version(client)
    used_up = ask(client, verifier, "ENT_STATUS", once, subject)
    assert problem_shape(used_up) == first
    twice, _ = grant(client, keys, "ENT_STATUS", max_uses=2)
    assert ask(client, verifier, "ENT_STATUS", twice, subject).status_code == 200
    assert other_key  # (the other bank exists; its consent was refused to us above)


def _new_dataset_version(client: TestClient) -> int:
    """Register the current workspace again as the next version of ``enterprise``."""
    engine = engine_of(client)
    current = catalog.current(engine, "enterprise")
    with engine.connect() as con:
        from sandbox.store.schema import versions

        text = con.execute(
            select(versions.c.policy).where(
                versions.c.dataset_id == "enterprise", versions.c.version == current.version
            )
        ).scalar_one()
    services = client.app.state.services  # type: ignore[attr-defined]
    following = current.version + 1
    copy = services.settings.workspace_dir / "enterprise" / f"v{following}.sealed"
    with services.vault.lease(current) as plain:  # sealed again, for the new version number
        services.vault.seal(plain, copy, "enterprise", following)
    return catalog.add_version(
        engine,
        services.audit,
        LOCAL,
        current.zone,
        text,
        copy,
        current.row_counts,
        expect_version=following,
    )


def test_refusals_and_answers_share_one_latency_envelope(data_dir: Path, keys):
    """With an envelope, a missing consent, an unknown subject, a claim mismatch and an answer
    all take at least the envelope (the refusal path also runs a decoy query)."""
    settings = Settings(
        data_dir=data_dir, workers=1, worker_threads=1, verification_envelope_ms=120
    )
    with running_app(settings) as client:
        consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
        subject, verifier = keys["subject_id"], keys["verifier"]
        calls = {
            "missing consent": lambda: ask(
                client, verifier, "REV_TOLERANCE", "cns_00000000000000aa", subject, REVENUE, salt
            ),
            "unknown subject": lambda: ask(
                client, verifier, "REV_TOLERANCE", consent, "91110000ZZZZZZZZZZ", REVENUE, salt
            ),
            "claim mismatch": lambda: ask(
                client, verifier, "REV_TOLERANCE", consent, subject, REVENUE * 2, salt
            ),
            "answer": lambda: ask(
                client, verifier, "REV_TOLERANCE", consent, subject, REVENUE, salt
            ),
        }
        for name, call in calls.items():
            start = time.perf_counter()
            response = call()
            elapsed = time.perf_counter() - start
            assert elapsed >= 0.120, (name, elapsed)
            assert response.status_code == (200 if name == "answer" else 403), name


def test_consents_are_the_subjects_to_list_and_revoke(client, keys):
    consent, _ = grant(client, keys, "ENT_STATUS")
    mine = client.get("/v1/consents", headers=auth(keys["subject"])).json()["consents"]
    assert [c["id"] for c in mine] == [consent]
    assert mine[0]["state"] == "active" and mine[0]["uses"] == 0
    assert "subject" not in mine[0]  # a reference only, never the credit code
    bank_view = client.get("/v1/consents", headers=auth(keys["verifier"])).json()["consents"]
    assert [c["id"] for c in bank_view] == [consent]
    assert client.get("/v1/consents", headers=auth(keys["analyst"])).status_code == 403

    # another subject (another enterprise) neither sees nor revokes it
    other = client.post(
        f"/v1/tenants/{keys['verifier_tenant']}/members",
        json={"name": "rep", "role": "subject", "subject": codes(client, 1)[0]},
        headers=auth(keys["admin"]),
    ).json()["api_key"]
    assert client.get("/v1/consents", headers=auth(other)).json()["consents"] == []
    assert client.delete(f"/v1/consents/{consent}", headers=auth(other)).status_code == 404
    assert client.delete(f"/v1/consents/{consent}", headers=auth(keys["verifier"])).status_code == (
        403
    )
    # verifiers and analysts cannot grant consents
    body = {
        "tenant": keys["verifier_tenant"],
        "template": "ENT_STATUS",
        "purpose": PURPOSE,
        "expires_at": expires(),
    }
    assert client.post("/v1/consents", json=body, headers=auth(keys["verifier"])).status_code == 403
    # bad consents: a claim template without a commitment, a past or far expiry, no tenant
    bad = [
        {**body, "template": "REV_TOLERANCE"},
        {**body, "claim_commitment": "0" * 64},
        {**body, "expires_at": expires(-1)},
        {**body, "expires_at": expires(400)},
        {**body, "expires_at": "2030-01-01T00:00:00"},
    ]
    for doc in bad:
        response = client.post("/v1/consents", json=doc, headers=auth(keys["subject"]))
        assert response.status_code == 400, (doc, response.text)
    unknown = client.post(
        "/v1/consents", json={**body, "tenant": "ten_nope"}, headers=auth(keys["subject"])
    )
    assert unknown.status_code == 404

    assert client.delete(f"/v1/consents/{consent}", headers=auth(keys["subject"])).status_code == (
        204
    )
    (after,) = client.get("/v1/consents", headers=auth(keys["subject"])).json()["consents"]
    assert after["state"] == "revoked" and after["revoked_at"] is not None


# -- the leakage ledger --------------------------------------------------------------------------


@pytest.fixture()
def tight_client(data_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    """The demo templates with ENT_AGE capped at 2 bits per enterprise per window."""
    templates = tmp_path / "templates"
    shutil.copytree(DEMO_TEMPLATES, templates)
    age = templates / "ENT_AGE.toml"
    text = age.read_text(encoding="utf-8")
    assert "max_bits = 4" in text
    age.write_text(text.replace("max_bits = 4", "max_bits = 2"), encoding="utf-8")
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1, templates_dir=templates)
    with running_app(settings) as test_client:
        yield test_client


def test_the_per_subject_cap_holds_across_tenants(tight_client, keys):
    client = tight_client
    subject = keys["subject_id"]
    tenant_b, bank_b = new_bank(client, keys["admin"])
    a1, _ = grant(client, keys, "ENT_AGE", 1, salt=bytes(16))
    b2, _ = grant(client, keys, "ENT_AGE", 2, tenant=tenant_b, salt=bytes(16))
    b3, _ = grant(client, keys, "ENT_AGE", 3, tenant=tenant_b, salt=bytes(16))
    a3, _ = grant(client, keys, "ENT_AGE", 3, salt=bytes(16))
    salt = bytes(16)
    assert ask(client, keys["verifier"], "ENT_AGE", a1, subject, 1, salt).status_code == 200
    assert ask(client, bank_b, "ENT_AGE", b2, subject, 2, salt).status_code == 200
    # 2 bits spent on this enterprise's founding date, by two banks: the cap is reached for all
    for key, consent in ((bank_b, b3), (keys["verifier"], a3)):
        refused = ask(client, key, "ENT_AGE", consent, subject, 3, salt)
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "leakage_cap"
    recorded = events(client)
    assert sum(e.bits_charged for e in recorded) == 2000  # millibits
    assert {e.tenant_id for e in recorded} == {keys["verifier_tenant"], tenant_b}
    # the refusals used no consent
    with engine_of(client).connect() as con:
        uses = dict(con.execute(select(consents.c.id, consents.c.uses)).all())
    assert uses[b3] == uses[a3] == 0 and uses[a1] == uses[b2] == 1


def test_the_tenant_quota_caps_answers_per_template(client, keys):
    svc = service(client)
    bank = keys["verifier_tenant"]
    quota = client.put(
        f"/v1/tenants/{bank}/verification-quotas/ENT_STATUS",
        json={"quota": 2},
        headers=auth(keys["admin"]),
    )
    assert quota.status_code == 200, quota.text
    assert quota.json()["quota"] == 2
    assert (
        client.put(
            f"/v1/tenants/{bank}/verification-quotas/ENT_STATUS",
            json={"quota": 2},
            headers=auth(keys["verifier"]),
        ).status_code
        == 403
    )
    subjects = codes(client, 3)
    made = consent_service(client).grant_consents(
        LOCAL,
        [
            (
                svc.subject_ref(code),
                ConsentRequest(bank, "ENT_STATUS", PURPOSE, datetime.now(UTC) + timedelta(days=1)),
            )
            for code in subjects
        ],
    )
    results = [
        ask(client, keys["verifier"], "ENT_STATUS", c.id, code)
        for c, code in zip(made, subjects, strict=True)
    ]
    assert [r.status_code for r in results] == [200, 200, 429]
    assert results[2].json()["code"] == "tenant_quota"
    # another bank has its own quota
    tenant_b, bank_b = new_bank(client, keys["admin"])
    (theirs,) = consent_service(client).grant_consents(
        LOCAL,
        [
            (
                svc.subject_ref(subjects[2]),
                ConsentRequest(
                    tenant_b, "ENT_STATUS", PURPOSE, datetime.now(UTC) + timedelta(days=1)
                ),
            )
        ],
    )
    assert ask(client, bank_b, "ENT_STATUS", theirs.id, subjects[2]).status_code == 200


def test_sticky_answers_cost_nothing_new(client, keys):
    subject = keys["subject_id"]
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE, max_uses=1)
    first = ask(client, keys["verifier"], "REV_TOLERANCE", consent, subject, REVENUE, salt)
    again = ask(client, keys["verifier"], "REV_TOLERANCE", consent, subject, REVENUE, salt)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()  # same outcome, same receipt (id and signature)
    (event,) = events(client)
    assert event.bits_charged == 1000 and event.quota_units == 1
    with engine_of(client).connect() as con:
        assert con.execute(select(consents.c.uses).where(consents.c.id == consent)).scalar() == 1

    # another bank asking the very same question: same outcome, its own receipt, 0 bits
    tenant_b, bank_b = new_bank(client, keys["admin"])
    theirs, salt_b = grant(client, keys, "REV_TOLERANCE", REVENUE, tenant=tenant_b)
    other = ask(client, bank_b, "REV_TOLERANCE", theirs, subject, REVENUE, salt_b)
    assert other.status_code == 200
    assert other.json()["outcome"] == first.json()["outcome"]
    assert other.json()["receipt"]["receipt_id"] != first.json()["receipt"]["receipt_id"]
    recorded = events(client)
    assert sum(e.bits_charged for e in recorded) == 1000
    assert sorted((e.tenant_id == tenant_b, e.sticky, e.quota_units) for e in recorded) == [
        (False, False, 1),
        (True, True, 1),
    ]


def test_a_claim_change_is_refused_and_raises_an_alert(client, keys, caplog):
    """Even with the subject's consent for every claim, a bank binary-searching the revenue
    gets one answer per window: the first claim. Every later claim is refused and alerted."""
    subject = keys["subject_id"]
    tenant_b, bank_b = new_bank(client, keys["admin"])
    first, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    assert (
        ask(client, keys["verifier"], "REV_TOLERANCE", first, subject, REVENUE, salt).status_code
        == 200
    )
    probes = [REVENUE // 2, REVENUE * 3 // 4, REVENUE * 5 // 8]
    with caplog.at_level("WARNING", logger="veil.verification"):
        for i, claim in enumerate(probes):
            tenant, key = (None, keys["verifier"]) if i % 2 == 0 else (tenant_b, bank_b)
            consent, salt = grant(client, keys, "REV_TOLERANCE", claim, tenant=tenant)
            refused = ask(client, key, "REV_TOLERANCE", consent, subject, claim, salt)
            assert refused.status_code == 409, refused.text
            assert refused.json()["code"] == "claim_change"
            assert str(claim) not in refused.text
    with engine_of(client).connect() as con:
        raised = list(con.execute(select(alerts)))
    assert len(raised) == len(probes)
    assert {a.kind for a in raised} == {"claim_change"}
    assert {a.tenant_id for a in raised} == {keys["verifier_tenant"], tenant_b}
    assert all(a.subject_ref == service(client).subject_ref(subject) for a in raised)
    logged = [r.getMessage() for r in caplog.records if "claim_change" in r.getMessage()]
    assert len(logged) == len(probes)
    assert not any(str(c) in m or subject in m for c in probes for m in logged)
    # one answer, one bit, across both banks
    assert sum(e.bits_charged for e in events(client)) == 1000


# -- roles ---------------------------------------------------------------------------------------


def test_analysts_cannot_verify_and_verifiers_cannot_query(client, keys):
    consent, _ = grant(client, keys, "ENT_STATUS")
    for role in ("analyst", "subject", "admin"):
        response = ask(client, keys[role], "ENT_STATUS", consent, keys["subject_id"])
        assert response.status_code == 403, role
        assert response.json()["code"] == "forbidden"
        batch = client.post(
            "/v1/verifications/batch", json={"requests": []}, headers=auth(keys[role])
        )
        assert batch.status_code == 403, role
    query = {"dataset": "enterprise", "sql": "SELECT COUNT(*) AS n FROM registry", "epsilon": 0.1}
    for path in ("/v1/queries", "/v1/queries/preview"):
        response = client.post(path, json=query, headers=auth(keys["verifier"]))
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    assert events(client) == []


def test_bad_requests_name_the_rule_and_charge_nothing(client, keys):
    consent, salt = grant(client, keys, "REV_TOLERANCE", REVENUE)
    subject = keys["subject_id"]
    verifier = keys["verifier"]
    cases = [
        (
            ask(client, verifier, "REV_TOLERANCE", consent, subject, None, salt),
            400,
            "invalid_claim",
        ),
        (ask(client, verifier, "REV_TOLERANCE", consent, subject, -5, salt), 400, "invalid_claim"),
        (ask(client, verifier, "ENT_AGE", consent, subject, 4, salt), 400, "invalid_claim"),
        (ask(client, verifier, "REV_TOLERANCE", consent, subject, REVENUE), 400, "invalid_request"),
        (
            ask(client, verifier, "REV_TOLERANCE", consent, subject, REVENUE, b"short"),
            400,
            "invalid_request",
        ),
        (ask(client, verifier, "NOPE", consent, subject), 404, "not_found"),
        (
            ask(client, verifier, "REV_TOLERANCE", consent, subject, REVENUE, salt, version=9),
            404,
            "not_found",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert str(REVENUE) not in response.text
    assert events(client) == []


# -- batches -------------------------------------------------------------------------------------


def _seed(client: TestClient, keys: dict[str, str], n: int) -> list[dict[str, Any]]:
    """``n`` distinct questions (template × enterprise, unknown enterprises too), each with a
    consent; the bank's quotas lifted. Returns the request lines."""
    svc = service(client)
    bank = keys["verifier_tenant"]
    templates = sorted(svc.templates, key=lambda t: t.id)
    for t in templates:
        quota_service(client).set_quota(LOCAL, bank, t.id, 10**6)
    known = codes(client, 2000)
    subjects = known + [f"9111ZZZZ{i:010d}" for i in range(n // len(templates) + 1)]
    salt = bytes(range(16))
    until = datetime.now(UTC) + timedelta(days=1)
    pairs = [(templates[i % len(templates)], subjects[i // len(templates)]) for i in range(n)]
    grants = []
    claims = []
    for i, (template, code) in enumerate(pairs):
        claim: int | None = None
        if template.claim.type == ClaimType.CHOICE:
            claim = template.claim.choices[i % len(template.claim.choices)]
        elif template.claim.type == ClaimType.NUMBER:
            claim = 100_000 * (1 + i % 50)
        claims.append(claim)
        grants.append(
            (
                svc.subject_ref(code),
                ConsentRequest(
                    bank,
                    template.id,
                    PURPOSE,
                    until,
                    claim_commitment=None if claim is None else commit(claim, salt),
                ),
            )
        )
    made = consent_service(client).grant_consents(LOCAL, grants)
    lines = []
    for (template, code), claim, consent in zip(pairs, claims, made, strict=True):
        line: dict[str, Any] = {
            "template": template.id,
            "subject": code,
            "consent": consent.id,
            "purpose": PURPOSE,
        }
        if claim is not None:
            line.update({"claim": claim, "salt": salt.hex()})
        lines.append(line)
    return lines


def test_a_10000_line_batch_answers_every_line_in_order(client, keys):
    lines = _seed(client, keys, 10_000)
    lines[17] = {**lines[17], "consent": "cns_00000000000000ff"}  # no such consent
    lines[4242] = {**lines[4242], "template": "NOPE"}
    lines[9999] = {"template": "ENT_STATUS"}  # malformed
    response = client.post(
        "/v1/verifications/batch", json={"requests": lines}, headers=auth(keys["verifier"])
    )
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    results = body["results"]
    assert len(results) == 10_000
    assert [r["index"] for r in results] == list(range(10_000))
    assert body["summary"] == {"lines": 10_000, "answered": 9_997, "refused": 3}
    assert results[17]["error"]["code"] == "consent_refused"
    assert results[4242]["error"]["code"] == "not_found"
    assert results[9999]["error"]["code"] == "invalid_request"
    public = public_keys_from_document(client.get("/v1/keys").json())
    outcomes = set()
    for i, result in enumerate(results):
        if "error" in result:
            continue
        receipt = result["receipt"]
        assert receipt["outcome"] == result["outcome"]
        assert receipt["template_id"] == lines[i]["template"]
        assert receipt["consent_id"] == lines[i]["consent"]
        outcomes.add(result["outcome"])
        if i % 97 == 0:
            assert verify(receipt, public)
    assert {"cannot_verify", "yes", "no", "no_match"} <= outcomes
    # the ledger has one event per answer, the store one receipt per answer
    with engine_of(client).connect() as con:
        assert con.execute(select(func.count()).select_from(verification_events)).scalar() == 9_997
    stored = client.get(
        f"/v1/receipts/{results[0]['receipt']['receipt_id']}", headers=auth(keys["verifier"])
    )
    assert stored.json()["receipt"] == results[0]["receipt"]


def test_a_csv_batch_and_lines_that_see_each_other(client, keys):
    subject = keys["subject_id"]
    first, _ = grant(client, keys, "REV_TOLERANCE", REVENUE, salt=bytes(16))
    second, _ = grant(client, keys, "REV_TOLERANCE", REVENUE * 2, salt=bytes(16))
    status, _ = grant(client, keys, "ENT_STATUS")
    hexsalt = bytes(16).hex()
    csv_text = (
        "template,subject,claim,salt,consent,purpose\n"
        f"REV_TOLERANCE,{subject},{REVENUE},{hexsalt},{first},{PURPOSE}\n"
        f"REV_TOLERANCE,{subject},{REVENUE * 2},{hexsalt},{second},{PURPOSE}\n"
        f"ENT_STATUS,{subject},,,{status},{PURPOSE}\n"
        f"REV_TOLERANCE,{subject},{REVENUE},{hexsalt},{first},{PURPOSE}\n"
        f"ENT_STATUS,{subject},lots,,{status},{PURPOSE}\n"
        f"ENT_STATUS,{subject}\n"
    )
    response = client.post(
        "/v1/verifications/batch",
        content=csv_text,
        headers={**auth(keys["verifier"]), "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert "outcome" in results[0]
    assert results[1]["error"]["code"] == "claim_change"  # the line before it counts
    assert "outcome" in results[2]
    assert results[3]["receipt"] == results[0]["receipt"]  # sticky within the batch
    assert results[4]["error"]["code"] == "invalid_request"
    assert results[5]["error"]["code"] == "invalid_request"
    # an answered line has no error member, a refused one neither outcome nor receipt
    assert [sorted(r) for r in results[:2]] == [["index", "outcome", "receipt"], ["error", "index"]]
    assert sum(e.bits_charged for e in events(client)) == 2000
    bad_header = client.post(
        "/v1/verifications/batch",
        content="template,subject,colour\n",
        headers={**auth(keys["verifier"]), "content-type": "text/csv"},
    )
    assert bad_header.status_code == 400
    not_json = client.post(
        "/v1/verifications/batch",
        content="{",
        headers={**auth(keys["verifier"]), "content-type": "application/json"},
    )
    assert not_json.status_code == 400
    empty = client.post(
        "/v1/verifications/batch", json={"requests": []}, headers=auth(keys["verifier"])
    )
    assert empty.json() == {"results": [], "summary": {"lines": 0, "answered": 0, "refused": 0}}


def test_concurrent_requests_on_one_subject_cannot_pass_the_ledger(client, keys):
    """Eight threads, eight banks' worth of different claims on one enterprise at once: the
    decisions are serialised per subject, so exactly one claim is answered."""
    from concurrent.futures import ThreadPoolExecutor

    subject = keys["subject_id"]
    salt = bytes(16)
    claims = [REVENUE + 1000 * i for i in range(8)]
    consents_ = [grant(client, keys, "REV_TOLERANCE", c, salt=salt)[0] for c in claims]

    def one(i: int) -> int:
        response = ask(
            client, keys["verifier"], "REV_TOLERANCE", consents_[i], subject, claims[i], salt
        )
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(one, range(8)))
    assert statuses == [200] + [409] * 7
    assert sum(e.bits_charged for e in events(client)) == 1000
