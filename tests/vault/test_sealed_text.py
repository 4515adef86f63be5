"""Sealed text in the state store (docs/security.md#what-a-stolen-data-directory-holds): what
callers write into an issue, and the answers kept for ``Idempotency-Key`` retries, are never in
the clear in the state store file, while the API shows them as before.

Real demo zone, real app, real requests; the state store file is read directly, as a thief would.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from tests.support.app import auth

ISSUES = "/v1/datasets/enterprise/issues"
TITLE = "TITLEMARK revenue of 91110108 looks wrong"
DESCRIPTION = "DESCMARK filed 3,141,592 in March, the table shows 2,718,281 (申报收入不符)"
ANSWER = "ANSWERMARK the provider re-checks the March returns"
NOTE = "NOTEMARK as filed, no change"
NEEDLES = [TITLE, DESCRIPTION, ANSWER, NOTE, "TITLEMARK", "DESCMARK", "ANSWERMARK", "NOTEMARK"]


def state_store(data_dir: Path) -> list[Path]:
    """The SQLite state store's files (the database and its write-ahead log)."""
    return [p for p in (data_dir / "state.db", data_dir / "state.db-wal") if p.is_file()]


def raw_leaks(data_dir: Path) -> list[str]:
    """The needles found anywhere in the state store's bytes (UTF-8, as SQLite stores text)."""
    blobs = [p.read_bytes() for p in state_store(data_dir)]
    return [n for n in NEEDLES if any(n.encode() in blob for blob in blobs)]


def test_issue_texts_and_replayed_answers_are_sealed_in_the_state_store(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    keyed = {**admin, "Idempotency-Key": "issue-sealed-1"}
    body = {"title": TITLE, "description": DESCRIPTION}
    raised = client.post(ISSUES, json=body, headers=keyed)
    assert raised.status_code == 201, raised.text
    number = raised.json()["number"]
    replayed = client.post(ISSUES, json=body, headers=keyed)
    assert replayed.status_code == 201
    assert replayed.content == raised.content  # byte for byte
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.headers["content-type"] == raised.headers["content-type"]
    answered = client.post(f"{ISSUES}/{number}/answer", json={"answer": ANSWER}, headers=admin)
    assert answered.status_code == 200, answered.text
    resolution = {"kind": "no_change", "note": NOTE}
    resolved = client.post(f"{ISSUES}/{number}/resolve", json=resolution, headers=admin)
    assert resolved.status_code == 200, resolved.text

    # The API shows every text as it was written.
    listed = client.get(ISSUES, headers=admin).json()["issues"]
    shown = next(i for i in listed if i["number"] == number)
    assert (shown["title"], shown["description"]) == (TITLE, DESCRIPTION)
    assert shown["answer"]["text"] == ANSWER
    assert shown["resolution"]["note"] == NOTE
    one = client.get(f"{ISSUES}/{number}", headers=admin).json()
    assert (one["title"], one["description"]) == (TITLE, DESCRIPTION)
    again = client.post(ISSUES, json=body, headers=keyed)  # still replayed once resolved
    assert again.content == raised.content and again.headers["idempotent-replayed"] == "true"

    # The state store file, opened directly: none of it is readable.
    with sqlite3.connect(data_dir / "state.db") as con:
        issue = con.execute(
            "SELECT title, description, answer, resolution_note FROM dataset_issues "
            "WHERE dataset_id = 'enterprise' AND number = ?",
            (number,),
        ).fetchone()
        (response,) = con.execute(
            "SELECT response FROM idempotent_requests WHERE key = 'issue-sealed-1'"
        ).fetchone()
    for stored in (*issue, response):
        assert stored.startswith("sealed:"), stored[:40]
        assert not any(n in stored for n in NEEDLES)
    assert raw_leaks(data_dir) == []


def test_a_sealed_value_opens_only_in_its_own_row(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    """The associated data binds a value to its table, column and row: copied to another
    issue, another column or another member's key, it does not open (a 500 naming the column,
    never the text), and the rows it came from still open."""
    admin = auth(keys["admin"])
    first = client.post(
        ISSUES, json={"title": TITLE, "description": DESCRIPTION},
        headers={**admin, "Idempotency-Key": "bound-1"},
    ).json()  # fmt: skip
    second = client.post(ISSUES, json={"title": "two", "description": "other"}, headers=admin)
    assert second.status_code == 201
    tenant = client.post(
        "/v1/tenants",
        json={"name": "Bound", "kind": "research", "purpose_class": "public_welfare"},
        headers={**admin, "Idempotency-Key": "bound-2"},
    )
    assert tenant.status_code == 201
    with sqlite3.connect(data_dir / "state.db", timeout=30) as con:
        (description,) = con.execute(
            "SELECT description FROM dataset_issues WHERE id = ?", (first["id"],)
        ).fetchone()
        con.execute(
            "UPDATE dataset_issues SET description = ? WHERE id = ?",
            (description, second.json()["id"]),
        )
        (response,) = con.execute(
            "SELECT response FROM idempotent_requests WHERE key = 'bound-1'"
        ).fetchone()
        con.execute(
            "UPDATE idempotent_requests SET response = ? WHERE key = 'bound-2'", (response,)
        )
    moved = client.get(f"{ISSUES}/{second.json()['number']}", headers=admin)
    assert (moved.status_code, moved.json()["code"]) == (500, "master_key_error")
    assert "dataset_issues.description" in moved.json()["detail"]
    assert "DESCMARK" not in moved.text
    replay = client.post(
        "/v1/tenants",
        json={"name": "Bound", "kind": "research", "purpose_class": "public_welfare"},
        headers={**admin, "Idempotency-Key": "bound-2"},
    )
    assert (replay.status_code, replay.json()["code"]) == (500, "master_key_error")
    assert "DESCMARK" not in replay.text
    kept = client.get(f"{ISSUES}/{first['number']}", headers=admin).json()
    assert kept["description"] == DESCRIPTION
    with sqlite3.connect(data_dir / "state.db", timeout=30) as con:
        con.execute(
            "UPDATE dataset_issues SET title = description WHERE id = ?", (first["id"],)
        )  # another column of the same row
    swapped = client.get(f"{ISSUES}/{first['number']}", headers=admin)
    assert (swapped.status_code, swapped.json()["code"]) == (500, "master_key_error")


def test_a_new_api_key_kept_for_retries_is_not_in_the_state_store(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    """Only API key hashes are stored; the answer that shows a new key once, kept for retries
    of its Idempotency-Key, is sealed, so the key is nowhere in the store's bytes."""
    admin = auth(keys["admin"])
    tenant = client.post(
        "/v1/tenants",
        json={"name": "Keyed", "kind": "research", "purpose_class": "public_welfare"},
        headers=admin,
    ).json()["id"]
    made = client.post(
        f"/v1/tenants/{tenant}/members", json={"name": "k", "role": "analyst"}, headers=admin
    ).json()
    url = f"/v1/tenants/{tenant}/members/{made['id']}/keys"
    keyed = {**admin, "Idempotency-Key": "new-key-1"}
    issued = client.post(url, headers=keyed)
    assert issued.status_code == 201, issued.text
    again = client.post(url, headers=keyed)
    assert again.content == issued.content and again.headers["idempotent-replayed"] == "true"
    secret = issued.json()["api_key"].encode()
    assert client.get("/v1/ledger", headers=auth(issued.json()["api_key"])).status_code != 401
    blobs = [p.read_bytes() for p in state_store(data_dir)]
    assert not any(secret in blob for blob in blobs)
