"""Uploads: a provider sends its own file (whole or in chunks), loads it, reads the quality report
and activates the version; no one else's provider may touch it.

Real app, real DuckDB, real state store; files under ``<data_dir>/uploads``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sandbox.access import members, tenants
from sandbox.access.model import MemberRole
from sandbox.audit.store import read_entries
from sandbox.config import Settings
from sandbox.store.schema import uploads as uploads_table
from tests.support.app import auth, engine_of, running_app
from tests.support.onboarding import HEADER, POLICY, ROWS, ZONE, load, wait, write_csv
from tests.support.store import LOCAL, local_audit

UPLOADS = f"/v1/zones/{ZONE}/datasets/firms/uploads"
CSV = ("\n".join([HEADER, *ROWS, "A5,东城,42,2012-06-30"]) + "\n").encode()


def _member(client: TestClient, role: MemberRole) -> tuple[str, str]:
    engine = engine_of(client)
    tenant = tenants.create_tenant(
        engine, local_audit(engine), LOCAL, "Dept", "government", "public_welfare"
    )
    return members.create_member(engine, local_audit(engine), LOCAL, tenant, "m", role)


@pytest.fixture()
def people(client: TestClient, keys: dict[str, str], data_dir: Path) -> dict[str, str]:
    """Two providers (bj-tax owns ``firms``, loaded once by an operator) and a member of each."""
    admin = auth(keys["admin"])
    for pid in ("bj-tax", "bj-si"):
        made = client.post(
            "/v1/providers", json={"id": pid, "name": pid, "zone": ZONE}, headers=admin
        )
        assert made.status_code == 201, made.text
    ours_id, ours = _member(client, MemberRole.PROVIDER)
    theirs_id, theirs = _member(client, MemberRole.PROVIDER)
    client.post("/v1/providers/bj-tax/members", json={"member": ours_id}, headers=admin)
    client.post("/v1/providers/bj-si/members", json={"member": theirs_id}, headers=admin)
    first = load(client, keys["admin"], write_csv(data_dir, "firms.csv", ROWS), provider="bj-tax")
    assert first["state"] == "ready"
    return {"ours": ours, "theirs": theirs, "admin": keys["admin"], "analyst": keys["analyst"]}


def _files(data_dir: Path) -> list[Path]:
    folder = data_dir / "uploads"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _upload_in_two_chunks(client: TestClient, key: str, body: bytes = CSV) -> dict:
    half = len(body) // 2
    started = client.post(
        UPLOADS,
        content=body[:half],
        headers={
            **auth(key),
            "Upload-Length": str(len(body)),
            "Upload-Name": "firms-2026.csv",
            "Upload-Sha256": hashlib.sha256(body).hexdigest(),
            "Content-Type": "application/octet-stream",
        },
    )
    assert started.status_code == 201, started.text
    first = started.json()
    assert (first["state"], first["received"], first["length"]) == ("receiving", half, len(body))
    assert started.headers["Location"] == f"{UPLOADS}/{first['id']}"
    shown = client.get(f"{UPLOADS}/{first['id']}", headers=auth(key)).json()
    assert shown["received"] == half  # where to resume
    rest = client.patch(
        f"{UPLOADS}/{first['id']}",
        content=body[half:],
        headers={**auth(key), "Upload-Offset": str(half)},
    )
    assert rest.status_code == 200, rest.text
    done = rest.json()
    assert rest.headers["Upload-Offset"] == str(len(body))
    return dict(done)


def test_before_uploads_a_provider_member_could_not_load_its_own_data(
    client: TestClient, people: dict[str, str]
) -> None:
    """The finding: a provider member got 403 ("needs the role admin, operator") on a load of
    its own dataset, and there was no upload route. Now both are open to the owning provider."""
    created = client.post(
        UPLOADS, content=CSV, headers={**auth(people["ours"]), "Upload-Name": "f.csv"}
    )
    assert created.status_code == 201, created.text
    started = client.post(
        f"/v1/zones/{ZONE}/datasets/firms/versions",
        json={"policy": POLICY, "source": created.json()["source"]},
        headers=auth(people["ours"]),
    )
    assert started.status_code == 202, started.text


def test_provider_uploads_in_two_chunks_loads_reads_the_report_and_activates(
    client: TestClient, people: dict[str, str], data_dir: Path
) -> None:
    ours = people["ours"]
    done = _upload_in_two_chunks(client, ours)
    assert done["state"] == "complete"
    assert done["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert (done["provider"], done["name"], done["received"]) == (
        "bj-tax",
        "firms-2026.csv",
        len(CSV),
    )
    assert done["source"] == f"upload:{done['id']}"
    (stored,) = _files(data_dir)
    assert stored == data_dir / "uploads" / "bj-tax" / f"{done['id']}.csv"
    assert stored.read_bytes() == CSV

    loaded = load(client, ours, done["source"])
    assert (loaded["state"], loaded["version"], loaded["current"]) == ("ready", 2, True)
    assert loaded["rows_loaded"] == 5
    assert "uploads/bj-tax" in loaded["source"] and str(data_dir) not in loaded["source"]
    report = client.get("/v1/datasets/firms/quality", headers=auth(ours))
    assert report.status_code == 200, report.text
    assert report.json()["report"]["tables"][0]["rows"] == 5

    back = client.post(f"/v1/zones/{ZONE}/datasets/firms/versions/1/activate", headers=auth(ours))
    assert (back.status_code, back.json()["current"]) == (200, True), back.text
    forward = client.post(
        f"/v1/zones/{ZONE}/datasets/firms/versions/2/activate", headers=auth(ours)
    )
    assert forward.status_code == 200

    listed = client.get(UPLOADS, headers=auth(ours)).json()["uploads"]
    assert [u["id"] for u in listed] == [done["id"]]
    assert client.delete(f"{UPLOADS}/{done['id']}", headers=auth(ours)).status_code == 204
    assert _files(data_dir) == []
    assert client.get(f"{UPLOADS}/{done['id']}", headers=auth(ours)).status_code == 404

    with engine_of(client).connect() as con:
        entries = [e.entry for e in read_entries(con, limit=100_000, kind="onboarding")]
    actions = [e["action"] for e in entries if e["action"].startswith("upload.")]
    assert actions == ["upload.create", "upload.append", "upload.complete", "upload.delete"]


def test_another_providers_member_is_refused_everywhere(
    client: TestClient, people: dict[str, str], data_dir: Path
) -> None:
    ours, theirs = auth(people["ours"]), auth(people["theirs"])
    done = _upload_in_two_chunks(client, people["ours"])
    url = f"{UPLOADS}/{done['id']}"
    versions = f"/v1/zones/{ZONE}/datasets/firms/versions"
    refused = [
        client.post(UPLOADS, content=CSV, headers=theirs),
        client.get(UPLOADS, headers=theirs),
        client.get(url, headers=theirs),
        client.patch(url, content=b"x", headers={**theirs, "Upload-Offset": "0"}),
        client.delete(url, headers=theirs),
        client.post(versions, json={"policy": POLICY, "source": done["source"]}, headers=theirs),
        client.post(f"{versions}/1/activate", headers=theirs),
        client.post(UPLOADS, content=CSV, headers=auth(people["analyst"])),
        client.post(
            versions,
            json={"policy": POLICY, "source": done["source"]},
            headers=auth(people["analyst"]),
        ),
    ]
    for response in refused:
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), response.text
    # the owning provider loads only from its uploads, and only as itself
    for body in (
        {"policy": POLICY, "source": write_csv(data_dir, "elsewhere.csv", ROWS)},
        {"policy": POLICY, "source": done["source"], "provider": "bj-si"},
        {"policy": POLICY, "source": "postgresql://db/x?table=t"},
    ):
        response = client.post(versions, json=body, headers=ours)
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), body
    # nor into a dataset its provider does not own (the demo's)
    other = client.post(f"/v1/zones/{ZONE}/datasets/enterprise/uploads", content=CSV, headers=ours)
    assert other.status_code == 403
    # staff see and may use every upload
    assert client.get(url, headers=auth(people["admin"])).status_code == 200
    assert [f.name for f in _files(data_dir)] == [f"{done['id']}.csv"]


@pytest.fixture()
def small(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with running_app(settings, upload_max_bytes=1000, upload_expiry_s=0.5) as client:
        yield client


def test_an_upload_over_the_cap_is_refused_and_nothing_is_left(
    small: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    big = b"credit_code\n" + b"A" * 2000
    whole = small.post(UPLOADS, content=big, headers={**admin, "Upload-Name": "big.csv"})
    assert (whole.status_code, whole.json()["code"]) == (413, "upload_too_large"), whole.text
    assert whole.json()["limit"] == 1000
    declared = small.post(UPLOADS, content=b"", headers={**admin, "Upload-Length": "2000"})
    assert (declared.status_code, declared.json()["code"]) == (413, "upload_too_large")
    assert _files(data_dir) == []
    assert small.get(UPLOADS, headers=admin).json()["uploads"] == []
    # a chunk past the declared length: refused whole, the upload keeps what it had
    started = small.post(UPLOADS, content=b"12345", headers={**admin, "Upload-Length": "10"})
    upload = started.json()["id"]
    past = small.patch(
        f"{UPLOADS}/{upload}", content=b"6789012", headers={**admin, "Upload-Offset": "5"}
    )
    assert (past.status_code, past.json()["code"]) == (413, "upload_too_large")
    (kept,) = _files(data_dir)
    assert kept.read_bytes() == b"12345"
    assert small.get(f"{UPLOADS}/{upload}", headers=admin).json()["received"] == 5


def test_resume_offsets_checksums_and_expiry(
    small: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    started = small.post(UPLOADS, content=b"abc", headers={**admin, "Upload-Length": "6"})
    upload = started.json()["id"]
    wrong = small.patch(
        f"{UPLOADS}/{upload}", content=b"def", headers={**admin, "Upload-Offset": "0"}
    )
    assert (wrong.status_code, wrong.json()["code"], wrong.json()["offset"]) == (
        409, "upload_offset_mismatch", 3,
    )  # fmt: skip
    missing = small.patch(f"{UPLOADS}/{upload}", content=b"def", headers=admin)
    assert (missing.status_code, missing.json()["field"]) == (400, "header.upload-offset")
    done = small.patch(
        f"{UPLOADS}/{upload}", content=b"def", headers={**admin, "Upload-Offset": "3"}
    )
    assert (done.json()["state"], done.json()["sha256"]) == (
        "complete", hashlib.sha256(b"abcdef").hexdigest(),
    )  # fmt: skip
    again = small.patch(
        f"{UPLOADS}/{upload}", content=b"g", headers={**admin, "Upload-Offset": "6"}
    )
    assert (again.status_code, again.json()["code"]) == (409, "conflict")

    bad = small.post(
        UPLOADS,
        content=b"abc",
        headers={**admin, "Upload-Sha256": hashlib.sha256(b"x").hexdigest()},
    )
    assert (bad.status_code, bad.json()["code"]) == (422, "upload_checksum_mismatch")
    assert len(_files(data_dir)) == 1  # only the complete one

    small.post(UPLOADS, content=b"ab", headers={**admin, "Upload-Length": "9"})
    assert len(_files(data_dir)) == 2
    time.sleep(0.6)
    listed = small.get(UPLOADS, headers=admin).json()["uploads"]
    assert [u["id"] for u in listed] == [upload]  # the unfinished one expired
    assert len(_files(data_dir)) == 1
    with engine_of(small).connect() as con:
        assert con.execute(select(uploads_table.c.id)).scalars().all() == [upload]


def test_a_file_name_cannot_choose_where_the_upload_goes(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = auth(keys["admin"])
    for name in (
        "../../state.db",
        "..%2F..%2Fstate.csv",
        "/etc/passwd",
        "a\\b.csv",
        "..",
        "x%00.csv",
        "%ff%fe.csv",
    ):
        refused = client.post(UPLOADS, content=b"x", headers={**admin, "Upload-Name": name})
        assert (refused.status_code, refused.json()["field"]) == (400, "header.upload-name"), name
    assert _files(data_dir) == []
    odd = client.post(UPLOADS, content=b"x", headers={**admin, "Upload-Name": "report.csv;rm -rf"})
    assert odd.status_code == 201
    (stored,) = _files(data_dir)
    assert stored.parent == data_dir / "uploads" / "_zone"  # firms has no provider yet
    assert stored.name == f"{odd.json()['id']}"  # an unknown extension is not kept
    versions = f"/v1/zones/{ZONE}/datasets/firms/versions"
    for source in (
        "upload:../../state.db",
        "upload:upl_0000000000000000",
        f"upload:{odd.json()['id']}/../x",
    ):
        response = client.post(versions, json={"policy": POLICY, "source": source}, headers=admin)
        assert response.status_code in (404, 422), (source, response.text)
    traversal = client.get(f"{UPLOADS}/..%2F..%2Fstate.db", headers=admin)
    assert traversal.status_code == 404


def test_idempotency_key_on_an_upload_answers_the_first_upload_again(
    client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    headers = {**auth(keys["admin"]), "Idempotency-Key": "up-1", "Upload-Name": "f.csv"}
    first = client.post(UPLOADS, content=CSV, headers=headers)
    again = client.post(UPLOADS, content=CSV, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_files(data_dir)) == 1
    # a staff upload, loaded by staff into a dataset that the load creates
    view = load(client, keys["admin"], first.json()["source"])
    assert view["state"] == "ready"
    assert (
        wait(client, keys["admin"], f"/v1/zones/{ZONE}/datasets/firms/versions/1")["state"]
        == "ready"
    )


def test_no_room_on_disk_is_refused_before_anything_is_written(
    client: TestClient, keys: dict[str, str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from sandbox.onboarding import receiver

    real = shutil.disk_usage

    def nearly_full(path: str | Path) -> object:
        usage = real(path)
        return type(usage)(usage.total, usage.total, 10 * 2**20)  # 10 MiB free

    monkeypatch.setattr(receiver.shutil, "disk_usage", nearly_full)
    refused = client.post(
        UPLOADS, content=CSV, headers={**auth(keys["admin"]), "Upload-Length": "100"}
    )
    assert (refused.status_code, refused.json()["code"]) == (507, "insufficient_storage")
    assert _files(data_dir) == []
