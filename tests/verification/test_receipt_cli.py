"""``veil receipt verify`` (offline, and against a running server) and ``veil keys rotate``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from sandbox.cli.main import app
from sandbox.config import Settings
from sandbox.keys.signing import public_keys_from_document
from sandbox.verification.receipts import commit, new_salt, verify
from tests.support.app import auth, running_app

PURPOSE = "credit_underwriting"


def in_a_month() -> str:
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


def answer(client: TestClient, keys: dict[str, str], claim: int = 4_000_000) -> dict[str, Any]:
    salt = new_salt()
    consent = client.post(
        "/v1/consents",
        json={
            "tenant": keys["verifier_tenant"],
            "template": "REV_TOLERANCE",
            "claim_commitment": commit(claim, salt),
            "purpose": PURPOSE,
            "expires_at": in_a_month(),
        },
        headers=auth(keys["subject"]),
    )
    assert consent.status_code == 201, consent.text
    response = client.post(
        "/v1/verifications",
        json={
            "template": "REV_TOLERANCE",
            "subject": keys["subject_id"],
            "claim": claim,
            "salt": salt.hex(),
            "consent": consent.json()["id"],
            "purpose": PURPOSE,
        },
        headers=auth(keys["verifier"]),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_receipt_verify_offline_with_the_key_document(
    client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    body = answer(client, keys)
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(body["receipt"]))
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(client.get("/v1/keys").text)
    runner = CliRunner()

    ok = runner.invoke(app, ["receipt", "verify", str(receipt_file), "--keys", str(keys_file)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"valid: {body['receipt']['receipt_id']} REV_TOLERANCE v1")

    whole = tmp_path / "response.json"  # the whole verification response works too
    whole.write_text(json.dumps(body))
    assert (
        runner.invoke(app, ["receipt", "verify", str(whole), "--keys", str(keys_file)]).exit_code
        == 0
    )

    flipped = "match" if body["outcome"] != "match" else "no_match"
    receipt_file.write_text(json.dumps({**body["receipt"], "outcome": flipped}))
    bad = runner.invoke(app, ["receipt", "verify", str(receipt_file), "--keys", str(keys_file)])
    assert bad.exit_code == 1
    assert "receipt_bad_signature" in bad.output

    receipt_file.write_text("{not json")
    broken = runner.invoke(app, ["receipt", "verify", str(receipt_file), "--keys", str(keys_file)])
    assert broken.exit_code == 1 and "receipt_malformed" in broken.output

    neither = runner.invoke(app, ["receipt", "verify", str(receipt_file)])
    assert neither.exit_code != 0


def test_keys_rotate_keeps_old_receipts_verifiable(
    data_dir: Path, keys: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(data_dir=data_dir, workers=1, worker_threads=1)
    with running_app(settings) as client:
        old = answer(client, keys)["receipt"]
        (before,) = client.get("/v1/keys").json()["keys"]

    rotated = CliRunner().invoke(app, ["keys", "rotate", "--data-dir", str(data_dir)])
    assert rotated.exit_code == 0, rotated.output

    with running_app(settings) as client:
        document = client.get("/v1/keys").json()
        by_status = {k["status"]: k for k in document["keys"]}
        assert by_status["retired"]["key_id"] == before["key_id"] == old["key_id"]
        assert by_status["current"]["key_id"] != before["key_id"]
        public = public_keys_from_document(document)
        assert verify(old, public)  # signed before the rotation, still verifies
        new = answer(client, keys, claim=4_000_000)["receipt"]  # a sticky repeat: the old one
        assert new == old
    shown = CliRunner().invoke(app, ["keys", "show", "--data-dir", str(data_dir)])
    assert shown.exit_code == 0
    assert {k["key_id"] for k in json.loads(shown.output)["keys"]} == set(public)


def test_receipt_verify_against_a_server_with_status(
    live: str, keys: dict[str, str], tmp_path: Path
) -> None:
    import httpx

    salt = new_salt()
    claim = 3_000_000
    with httpx.Client(base_url=live, timeout=60) as http:
        consent = http.post(
            "/v1/consents",
            json={
                "tenant": keys["verifier_tenant"],
                "template": "REV_TOLERANCE",
                "claim_commitment": commit(claim, salt),
                "purpose": PURPOSE,
                "expires_at": in_a_month(),
            },
            headers=auth(keys["subject"]),
        ).json()["id"]
        body = http.post(
            "/v1/verifications",
            json={
                "template": "REV_TOLERANCE",
                "subject": keys["subject_id"],
                "claim": claim,
                "salt": salt.hex(),
                "consent": consent,
                "purpose": PURPOSE,
            },
            headers=auth(keys["verifier"]),
        ).json()
        receipt_file = tmp_path / "receipt.json"
        receipt_file.write_text(json.dumps(body["receipt"]))
        runner = CliRunner()
        ok = runner.invoke(app, ["receipt", "verify", str(receipt_file), "--url", live, "--status"])
        assert ok.exit_code == 0, ok.output
        assert "status: valid" in ok.output
        http.post(
            f"/v1/receipts/{body['receipt']['receipt_id']}/revoke",
            json={"reason": "data_correction"},
            headers=auth(keys["admin"]),
        )
        revoked = runner.invoke(
            app, ["receipt", "verify", str(receipt_file), "--url", live, "--status"]
        )
        assert revoked.exit_code == 2
        assert "status: revoked (data_correction)" in revoked.output
