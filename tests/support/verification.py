"""Verification through a running demo app: the demo subject consents (``grant``), a verifier
asks (``ask``), and what the tests read back of the app's verification services."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from sandbox.access.keys import authenticate
from sandbox.access.model import Actor
from sandbox.store.schema import verification_events
from sandbox.verification.consents import ConsentService
from sandbox.verification.receipts import commit, new_salt
from sandbox.verification.service import VerificationService
from tests.support.app import auth, engine_of

PURPOSE = "credit_underwriting"
REVENUE = 5_000_000


def service(client: TestClient) -> VerificationService:
    found: VerificationService = client.app.state.services.verification  # type: ignore[attr-defined]
    return found


def consent_service(client: TestClient) -> ConsentService:
    found: ConsentService = client.app.state.services.consents  # type: ignore[attr-defined]
    return found


def member(client: TestClient, key: str) -> Actor:
    """The member holding ``key``, as the actor of a service call."""
    return Actor.of(authenticate(engine_of(client), f"Bearer {key}"))


def expires(days: float = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def grant(
    client: TestClient,
    keys: dict[str, str],
    template: str,
    claim: int | None = None,
    *,
    tenant: str | None = None,
    salt: bytes | None = None,
    max_uses: int = 3,
    purpose: str = PURPOSE,
    subject_key: str | None = None,
) -> tuple[str, bytes]:
    """The demo subject consents; returns (consent id, salt)."""
    salt = salt or new_salt()
    body: dict[str, Any] = {
        "tenant": tenant or keys["verifier_tenant"],
        "template": template,
        "purpose": purpose,
        "expires_at": expires(),
        "max_uses": max_uses,
    }
    if claim is not None:
        body["claim_commitment"] = commit(claim, salt)
    response = client.post("/v1/consents", json=body, headers=auth(subject_key or keys["subject"]))
    assert response.status_code == 201, response.text
    return response.json()["id"], salt


def ask(
    client: TestClient,
    key: str,
    template: str,
    consent: str,
    subject: str,
    claim: int | None = None,
    salt: bytes | None = None,
    **extra: Any,
):
    body: dict[str, Any] = {
        "template": template,
        "subject": subject,
        "consent": consent,
        "purpose": PURPOSE,
        **extra,
    }
    if claim is not None:
        body["claim"] = claim
    if salt is not None:
        body["salt"] = salt.hex()
    return client.post("/v1/verifications", json=body, headers=auth(key))


def events(client: TestClient) -> list[Any]:
    with engine_of(client).connect() as con:
        return list(con.execute(select(verification_events)))
