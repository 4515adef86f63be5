"""The Idempotency-Key store of onboarding calls (``sandbox.idempotency``) on SQLite and
PostgreSQL: one claim per (member, key) under concurrency, replay, reuse, release."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sandbox import idempotency
from sandbox.access import members, tenants
from sandbox.access.model import MemberRole
from sandbox.errors import Conflict, IdempotencyKeyReused
from sandbox.store import db
from sandbox.vault.text import SealedText
from tests.support.store import LOCAL, local_audit


def test_claim_complete_replay_reuse_release(state_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = db.connect(state_url)
    try:
        tenant = tenants.create_tenant(
            engine, local_audit(engine), LOCAL, "Dept", "government", "public_welfare"
        )
        admin, _ = members.create_member(
            engine, local_audit(engine), LOCAL, tenant, "a", MemberRole.ADMIN
        )
        other, _ = members.create_member(
            engine, local_audit(engine), LOCAL, tenant, "b", MemberRole.ADMIN
        )
        texts = SealedText(local_audit(engine))
        digest = idempotency.request_hash("POST", "/v1/zones", b'{"id": "z", "kind": "domain"}')
        same = idempotency.request_hash("post", "/v1/zones", b'{"kind":"domain","id":"z"}')
        assert same == digest  # key order, spacing and method case do not matter
        assert idempotency.request_hash("POST", "/v1/zones", b"id,kind\nz,domain\n") != digest

        def attempt(_: int) -> str:
            try:
                return (
                    "go"
                    if idempotency.claim(engine, texts, admin, "k", digest) is None
                    else "replay"
                )
            except Conflict as exc:
                return exc.error_code

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(8)))
        assert outcomes.count("go") == 1
        assert set(outcomes) <= {"go", "conflict"}

        answer = '{"id":"z","n":[1,"二"]}'
        sent = {"content-type": "application/json", "location": "/v1/zones/z"}
        idempotency.complete(engine, texts, admin, "k", 201, answer, sent)
        replay = idempotency.claim(engine, texts, admin, "k", digest)
        assert replay == idempotency.Replay(201, answer, sent)
        with pytest.raises(IdempotencyKeyReused):
            idempotency.claim(
                engine, texts, admin, "k", idempotency.request_hash("POST", "/x", b"")
            )
        assert idempotency.claim(engine, texts, other, "k", digest) is None  # another member's key

        idempotency.release(engine, other, "k")  # its call failed: the key is free again
        assert idempotency.claim(engine, texts, other, "k", "0" * 64) is None
        idempotency.release(engine, admin, "k")  # a completed key is never released
        assert idempotency.claim(engine, texts, admin, "k", digest) == replay
        idempotency.fail(engine, other, "k", 504)  # failed with an uncertain outcome: kept
        idempotency.release(engine, other, "k")  # … and never released
        with pytest.raises(Conflict) as failed:
            idempotency.claim(engine, texts, other, "k", "0" * 64)
        assert failed.value.error_code == "conflict" and failed.value.extra["state"] == "failed"
    finally:
        engine.dispose()
