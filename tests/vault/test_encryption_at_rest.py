"""Encryption at rest: a stolen data directory without the key reveals no values; with the key the
service answers as before; altered, cut or swapped files and wrong keys fail with a clear error.

Real demo zone, real app and workers, real loads over HTTP (docs/security.md).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from connectors.sink import build_workspace
from sandbox import catalog
from sandbox.audit.store import read_entries
from sandbox.cli.main import app as cli_app
from sandbox.config import Settings
from sandbox.demo import synthetic
from sandbox.errors import (
    MasterKeyError,
    ServiceUnavailable,
    WorkspaceIntegrityError,
    WorkspaceMissing,
    WorkspaceNotSealed,
)
from sandbox.keys import directory as keystore
from sandbox.keys.master import MasterKeyRing
from sandbox.store import db
from sandbox.store.schema import versions
from sandbox.vault.decrypted import Vault
from sandbox.vault.sealed import MAGIC, open_sealed, read_header, seal
from tests.support.app import auth, running_app
from tests.support.data import data_text
from tests.support.demo import DEMO_TEST_ROWS

CHUNK = 4096  # the smallest chunk size: many chunks from a small file

FIRMS_POLICY = data_text("firms_large_revenue.toml")
MARK = "VEILMARK"  # every credit code of the loaded CSV starts with it
REVENUE = 7654321.125  # exactly representable, so its 8 bytes are a fair needle


# -- helpers -------------------------------------------------------------------------------------


def stored_files(data_dir: Path) -> list[Path]:
    """Every file of the data directory except the key directory (what a thief would get when
    the keys are kept elsewhere, e.g. in ``VEIL_MASTER_KEY`` or another volume)."""
    keys = data_dir / "keys"
    return sorted(p for p in data_dir.rglob("*") if p.is_file() and keys not in p.parents)


def leaks(files: list[Path], needles: list[bytes]) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for path in files:
        blob = path.read_bytes()
        hits = [n for n in needles if n in blob]
        if hits:
            found[str(path)] = hits[:5]
    return found


def decrypted(data_dir: Path, dataset: str, version: int, target: Path) -> bytes:
    ring = keystore.master_keys(data_dir / "keys", master_key=None)
    stored = data_dir / "workspaces" / dataset / f"v{version}.sealed"
    open_sealed(stored, target, ring, dataset, version)
    return target.read_bytes()


def vault_of(client: TestClient) -> Vault:
    found: Vault = client.app.state.services.vault  # type: ignore[attr-defined]
    return found


def dp_query(client: TestClient, key: str, dataset: str, sql: str) -> Any:
    body = {"dataset": dataset, "sql": sql, "epsilon": 0.1}
    return client.post("/v1/queries", json=body, headers=auth(key))


def verify_status(client: TestClient, keys: dict[str, str]) -> Any:
    consent = client.post(
        "/v1/consents",
        json={
            "tenant": keys["verifier_tenant"],
            "template": "ENT_STATUS",
            "purpose": "credit_underwriting",
            "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "max_uses": 3,
        },
        headers=auth(keys["subject"]),
    )
    assert consent.status_code == 201, consent.text
    return client.post(
        "/v1/verifications",
        json={
            "template": "ENT_STATUS",
            "subject": keys["subject_id"],
            "consent": consent.json()["id"],
            "purpose": "credit_underwriting",
        },
        headers=auth(keys["verifier"]),
    )


def load_firms(client: TestClient, key: str, data_dir: Path) -> dict[str, Any]:
    """Load a CSV of distinctive values over HTTP and wait for the version to be ready."""
    sources = data_dir / "sources"
    sources.mkdir(exist_ok=True)
    lines = ["credit_code,district,revenue"]
    lines += [f"{MARK}{i:04d},{'north' if i % 2 else 'south'},{REVENUE + i}" for i in range(40)]
    (sources / "firms.csv").write_text("\n".join(lines) + "\n")
    started = client.post(
        "/v1/zones/beijing-finance/datasets/firms/versions",
        json={"policy": FIRMS_POLICY, "source": "firms.csv"},
        headers=auth(key),
    )
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = client.get(started.json()["url"], headers=auth(key)).json()
        if view["state"] != "loading":
            assert view["state"] == "ready", view
            return dict(view)
        time.sleep(0.05)
    raise AssertionError("the load did not finish")


def own_workspace(settings: Settings, dataset: str) -> Path:
    """Point the catalogue at this test's copy of the workspace (the copied state store still
    names the files of the shared demo directory, which no test may alter)."""
    copy = settings.workspace_dir / dataset / "v1.sealed"
    engine = db.connect(settings.state_url)
    with engine.begin() as con:
        con.execute(update(versions).where(versions.c.dataset_id == dataset).values(path=str(copy)))
    engine.dispose()
    return copy


def sealed_sample(tmp_path: Path, size: int, keys: MasterKeyRing) -> tuple[Path, Path]:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(size))
    stored = tmp_path / "v1.sealed"
    seal(plain, stored, keys, "ds", 1, chunk_size=CHUNK)
    return plain, stored


def chunk_offsets(stored: Path) -> list[int]:
    with stored.open("rb") as handle:
        header = read_header(handle, "test")
    record = header.chunk_size + 16
    size = stored.stat().st_size
    return list(range(header.size, size, record))


def ring(kid: str = "mk-test") -> MasterKeyRing:
    return MasterKeyRing(kid, {kid: MasterKeyRing.new_data_key()})


@pytest.fixture(scope="module")
def demo_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """The demo enterprise tables, generated again (same size and seed as the demo zone)."""
    out = tmp_path_factory.mktemp("demo-sources")
    return {t: pq.read_table(p) for t, p in synthetic.write_parquet(out, DEMO_TEST_ROWS).items()}


@pytest.fixture()
def quiet_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, workers=1, worker_threads=1, query_timeout_s=20)


@pytest.fixture()
def quiet_client(quiet_settings: Settings) -> Iterator[TestClient]:
    with running_app(quiet_settings) as client:
        yield client


# -- a stolen data directory ---------------------------------------------------------------------


def test_a_stolen_demo_data_directory_holds_no_value(
    data_dir: Path, keys: dict[str, str], demo_tables: dict[str, pa.Table], tmp_path: Path
) -> None:
    registry = demo_tables["registry"]
    subject = keys["subject_id"]  # a subject member's own code is stored with the member
    codes = [c for c in registry.column("credit_code").to_pylist() if c != subject]
    names = registry.column("name").to_pylist()
    needles = [c.encode() for c in codes[::5]] + [n.encode() for n in names[::10]]
    files = stored_files(data_dir)
    assert {p.name for p in files if p.suffix == ".sealed"} == {"v1.sealed"}
    assert not any(p.suffix in (".duckdb", ".parquet", ".wal") for p in files), files
    assert not list((data_dir / "workspaces" / ".build").iterdir())  # nothing left of the build
    assert leaks(files, needles) == {}

    # The same search finds the values in the decrypted workspace: the test can see a leak.
    plain = decrypted(data_dir, "enterprise", 1, tmp_path / "enterprise.duckdb")
    assert all(n in plain for n in needles)


def test_sealed_workspaces_do_not_open_as_databases(data_dir: Path) -> None:
    sealed = sorted((data_dir / "workspaces").rglob("*.sealed"))
    assert len(sealed) == 2
    for path in sealed:
        assert path.read_bytes().startswith(MAGIC)
        with pytest.raises(duckdb.Error):
            duckdb.connect(str(path), read_only=True).close()


def test_a_loaded_csv_leaves_no_value_in_the_data_directory(
    quiet_client: TestClient, keys: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    view = load_firms(quiet_client, keys["admin"], data_dir)
    assert view["version"] == 1
    (data_dir / "sources" / "firms.csv").unlink()  # the provider's input, not Veil's store
    needles = [f"{MARK}{i:04d}".encode() for i in range(40)]
    needles += [struct.pack("<d", REVENUE + i) for i in range(40)]
    files = stored_files(data_dir)
    assert data_dir / "workspaces" / "firms" / "v1.sealed" in files
    assert leaks(files, needles) == {}
    plain = decrypted(data_dir, "firms", 1, tmp_path / "firms.duckdb")
    assert all(n in plain for n in needles[:40])  # the codes are there once decrypted
    assert any(n in plain for n in needles[40:])  # and the revenues


# -- with the key: the service answers as before -------------------------------------------------


def test_with_the_key_queries_and_verifications_answer(
    quiet_settings: Settings, keys: dict[str, str], data_dir: Path
) -> None:
    with running_app(quiet_settings) as client:
        vault = vault_of(client)
        runtime = vault.runtime_dir
        if Path("/dev/shm").is_dir():
            assert runtime.parent == Path("/dev/shm")  # RAM, not the data disk
        assert runtime.stat().st_mode & 0o777 == 0o700
        grouped = dp_query(
            client,
            keys["analyst"],
            "enterprise",
            "SELECT industry, COUNT(*) AS n FROM registry GROUP BY industry",
        )
        assert grouped.status_code == 200, grouped.text
        assert grouped.json()["rows"]
        cps = dp_query(client, keys["analyst"], "cps1988", "SELECT AVG(wage) AS w FROM cps1988")
        assert cps.status_code == 200, cps.text
        answer = verify_status(client, keys)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outcome"] == "yes"
        copies = sorted(p.name for p in runtime.iterdir())
        assert len(copies) == 2 and all(n.endswith(".duckdb") for n in copies), copies
        assert not any(p.is_relative_to(runtime) for p in stored_files(data_dir))
    assert not runtime.exists()  # removed when the app stops


def test_a_new_version_replaces_the_decrypted_copy(
    quiet_client: TestClient, keys: dict[str, str], data_dir: Path
) -> None:
    admin = keys["admin"]
    load_firms(quiet_client, admin, data_dir)
    runtime = vault_of(quiet_client).runtime_dir
    grant = quiet_client.post(
        f"/v1/tenants/{keys['verifier_tenant']}/grants",
        json={"dataset": "firms", "epsilon": 5.0, "per_query_cap": 1.0},
        headers=auth(admin),
    )
    assert grant.status_code == 201, grant.text
    analyst = quiet_client.post(
        f"/v1/tenants/{keys['verifier_tenant']}/members",
        json={"name": "a", "role": "analyst"},
        headers=auth(admin),
    ).json()["api_key"]
    sql = "SELECT district, COUNT(*) AS n FROM firms GROUP BY district"
    assert dp_query(quiet_client, analyst, "firms", sql).status_code == 200
    first = {p.name for p in runtime.iterdir() if p.name.startswith("firms-")}
    assert [n.split("-")[1] for n in first] == ["v1"]
    load_firms(quiet_client, admin, data_dir)
    assert dp_query(quiet_client, analyst, "firms", sql).status_code == 200
    second = {p.name for p in runtime.iterdir() if p.name.startswith("firms-")}
    assert [n.split("-")[1] for n in second] == ["v2"]  # v1's copy is gone


# -- tampering, truncation, swaps ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 5 * CHUNK + 123])
def test_seal_and_open_round_trip(tmp_path: Path, size: int) -> None:
    keys = ring()
    plain, stored = sealed_sample(tmp_path, size, keys)
    assert open_sealed(stored, tmp_path / "out", keys, "ds", 1) == size
    assert (tmp_path / "out").read_bytes() == plain.read_bytes()
    assert stored.stat().st_mode & 0o777 == 0o600


def _fails(stored: Path, out: Path, keys: MasterKeyRing, match: str) -> None:
    with pytest.raises(WorkspaceIntegrityError, match=match) as caught:
        open_sealed(stored, out, keys, "ds", 1)
    assert caught.value.error_code == "workspace_integrity"
    assert not out.exists()  # no partial plaintext is left behind


def test_a_changed_byte_in_any_chunk_is_detected(tmp_path: Path) -> None:
    keys = ring()
    _, stored = sealed_sample(tmp_path, 5 * CHUNK + 123, keys)
    original = stored.read_bytes()
    offsets = chunk_offsets(stored)
    assert len(offsets) == 6  # five full chunks and a short last one: none goes unchecked
    for index, offset in enumerate(offsets):
        altered = bytearray(original)
        altered[offset + 100] ^= 0x01
        stored.write_bytes(bytes(altered))
        _fails(stored, tmp_path / "out", keys, f"chunk {index}")


def test_cut_extended_reordered_or_swapped_chunks_are_detected(tmp_path: Path) -> None:
    keys = ring()
    _, stored = sealed_sample(tmp_path, 4 * CHUNK, keys)
    original = stored.read_bytes()
    offsets = chunk_offsets(stored)
    assert len(offsets) == 4
    record = CHUNK + 16
    out = tmp_path / "out"

    stored.write_bytes(original[: offsets[-1]])  # the last chunk dropped, at a chunk boundary
    _fails(stored, out, keys, "chunk 2")
    stored.write_bytes(original[: offsets[2] + 700])  # cut inside a chunk
    _fails(stored, out, keys, "chunk 2")
    stored.write_bytes(original[: offsets[0]])  # only the header
    _fails(stored, out, keys, "cut short")
    stored.write_bytes(original + original[offsets[1] : offsets[1] + record])  # a chunk appended
    _fails(stored, out, keys, "chunk 3")
    one, two = original[offsets[1] : offsets[2]], original[offsets[2] : offsets[3]]
    stored.write_bytes(original[: offsets[1]] + two + one + original[offsets[3] :])  # reordered
    _fails(stored, out, keys, "chunk 1")

    # a chunk from another file sealed for the same dataset version (another data key)
    other = tmp_path / "other"
    other.mkdir()
    _, foreign = sealed_sample(other, 4 * CHUNK, keys)
    foreign_bytes = foreign.read_bytes()
    swapped = (
        original[: offsets[1]] + foreign_bytes[offsets[1] : offsets[2]] + original[offsets[2] :]
    )
    stored.write_bytes(swapped)
    _fails(stored, out, keys, "chunk 1")


def test_a_file_sealed_for_another_version_or_dataset_does_not_open(tmp_path: Path) -> None:
    keys = ring()
    _, stored = sealed_sample(tmp_path, 2 * CHUNK, keys)
    out = tmp_path / "out"
    with pytest.raises(WorkspaceIntegrityError, match="another dataset version"):
        open_sealed(stored, out, keys, "ds", 2)
    with pytest.raises(WorkspaceIntegrityError, match="another dataset version"):
        open_sealed(stored, out, keys, "other", 1)
    # a header edited to claim version 2: the key slot and every chunk are bound to version 1
    data = stored.read_bytes()
    assert data.count(b'"version":1') == 1
    stored.write_bytes(data.replace(b'"version":1', b'"version":2'))
    with pytest.raises(MasterKeyError):
        open_sealed(stored, out, keys, "ds", 2)
    assert not out.exists()


def test_not_a_sealed_file_and_a_plain_workspace_are_refused(tmp_path: Path) -> None:
    keys = ring()
    junk = tmp_path / "junk.sealed"
    junk.write_bytes(b"not a sealed workspace at all")
    with pytest.raises(WorkspaceIntegrityError, match="not a sealed file"):
        open_sealed(junk, tmp_path / "out", keys, "ds", 1)
    plain = tmp_path / "v1.duckdb"
    build_workspace(plain, {"t": pa.table({"x": [1, 2, 3]})})
    with pytest.raises(WorkspaceNotSealed, match="veil workspaces seal") as caught:
        open_sealed(plain, tmp_path / "out", keys, "ds", 1)
    assert caught.value.error_code == "workspace_not_sealed"
    with pytest.raises(WorkspaceMissing, match="is missing") as missing:
        open_sealed(tmp_path / "missing.sealed", tmp_path / "out", keys, "ds", 1)
    assert (missing.value.error_code, missing.value.status) == ("workspace_missing", 500)


def test_wrong_master_key_fails(tmp_path: Path) -> None:
    keys = ring("mk-a")
    _, stored = sealed_sample(tmp_path, CHUNK, keys)
    out = tmp_path / "out"
    with pytest.raises(MasterKeyError, match="not in the ring"):
        open_sealed(stored, out, ring("mk-b"), "ds", 1)
    with pytest.raises(MasterKeyError, match="failed to open"):
        open_sealed(stored, out, ring("mk-a"), "ds", 1)  # same id, other key bytes
    assert not out.exists()


def test_a_tampered_workspace_is_refused_over_http(
    quiet_settings: Settings, keys: dict[str, str], data_dir: Path
) -> None:
    stored = own_workspace(quiet_settings, "enterprise")
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x20
    stored.write_bytes(bytes(data))
    with running_app(quiet_settings) as client:
        refused = dp_query(client, keys["analyst"], "enterprise", "SELECT COUNT(*) FROM registry")
        assert refused.status_code == 500
        problem = refused.json()
        assert problem["code"] == "workspace_integrity"
        assert "enterprise v1" in problem["detail"]
        assert verify_status(client, keys).json()["code"] == "workspace_integrity"
        fine = dp_query(client, keys["analyst"], "cps1988", "SELECT COUNT(*) FROM cps1988")
        assert fine.status_code == 200, fine.text  # other datasets are not affected
        runtime = vault_of(client).runtime_dir
        assert [p.name.split("-")[0] for p in runtime.iterdir()] == ["cps1988"]


def test_a_wrong_master_key_is_refused_over_http(
    quiet_settings: Settings, keys: dict[str, str], data_dir: Path
) -> None:
    shutil.rmtree(data_dir / "keys" / "master")  # the server starts with a new, different key
    with running_app(quiet_settings) as client:
        refused = dp_query(client, keys["analyst"], "enterprise", "SELECT COUNT(*) FROM registry")
        assert refused.status_code == 500
        assert refused.json()["code"] == "master_key_error"
        assert "enterprise v1" in refused.json()["detail"]


# -- master key rotation -------------------------------------------------------------------------


def test_rotation_keeps_old_versions_readable_and_seals_new_ones_with_the_new_key(
    quiet_settings: Settings, keys: dict[str, str], data_dir: Path
) -> None:
    old = keystore.master_keys(data_dir / "keys", master_key=None).current_id
    new = keystore.rotate_master(data_dir / "keys").current_id
    assert new != old
    with running_app(quiet_settings) as client:
        sql = "SELECT COUNT(*) AS n FROM registry"
        answered = dp_query(client, keys["analyst"], "enterprise", sql)
        assert answered.status_code == 200, answered.text
        load_firms(client, keys["admin"], data_dir)
    kids = {}
    for dataset in ("enterprise", "firms"):
        with (data_dir / "workspaces" / dataset / "v1.sealed").open("rb") as handle:
            kids[dataset] = read_header(handle, dataset).kid
    assert kids == {"enterprise": old, "firms": new}


# -- the runtime vault ---------------------------------------------------------------------------


class _Version:
    def __init__(self, dataset: str, version: int, path: Path) -> None:
        self.dataset, self.version, self.path = dataset, version, path


def test_concurrent_requests_decrypt_a_version_once(tmp_path: Path) -> None:
    keys = ring()
    _, stored = sealed_sample(tmp_path, 40 * CHUNK, keys)
    version = _Version("ds", 1, stored)
    with Vault(keys, tmp_path / "rt") as vault:
        seen: list[Path] = []
        start = threading.Barrier(8)

        def use() -> None:
            start.wait()
            with vault.lease(version) as path:
                seen.append(path)
                assert path.stat().st_size == 40 * CHUNK

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(seen) == 8 and len(set(seen)) == 1
        assert [p.name for p in vault.runtime_dir.iterdir()] == [seen[0].name]
        runtime = vault.runtime_dir
    assert not runtime.exists()
    with pytest.raises(ServiceUnavailable):
        vault.lease(version).__enter__()


def test_an_old_version_is_dropped_once_no_request_holds_it(tmp_path: Path) -> None:
    keys = ring()
    plain = tmp_path / "plain"
    plain.write_bytes(b"x" * 10_000)
    v1, v2 = (_Version("ds", n, tmp_path / f"v{n}.sealed") for n in (1, 2))
    for v in (v1, v2):
        seal(plain, v.path, keys, "ds", v.version)
    with Vault(keys, tmp_path / "rt") as vault:
        with vault.lease(v1) as old:
            with vault.lease(v2) as current:
                assert old.exists() and current.exists()  # v1 still in use
            assert old.exists()
        assert not old.exists() and current.exists()
        with vault.lease(v2) as again:
            assert again == current


def test_runtime_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    dead = root / "veil-runtime-999999999-abc"
    alive = root / f"veil-runtime-{os.getpid()}-abc"
    foreign = root / "something-else"
    for directory in (dead, alive, foreign):
        directory.mkdir(parents=True)
        (directory / "x.duckdb").write_bytes(b"plain")
    with Vault(ring(), root) as vault:
        assert vault.runtime_dir.parent == root
        assert vault.runtime_dir.name.startswith(f"veil-runtime-{os.getpid()}-")
        assert not dead.exists() and alive.exists() and foreign.exists()


# -- data directories from before encryption at rest --------------------------------------------


def test_a_plain_workspace_is_refused_until_sealed(
    quiet_settings: Settings, keys: dict[str, str], data_dir: Path
) -> None:
    """Simulate an old data directory: the enterprise version stored as a plain DuckDB file."""
    stored = data_dir / "workspaces" / "enterprise" / "v1.sealed"
    plain = stored.with_name("v1.duckdb")
    decrypted(data_dir, "enterprise", 1, plain)
    stored.unlink()
    engine = db.connect(quiet_settings.state_url)
    with engine.begin() as con:
        con.execute(
            update(versions).where(versions.c.dataset_id == "enterprise").values(path=str(plain))
        )
    sql = "SELECT COUNT(*) AS n FROM registry"
    with running_app(quiet_settings) as client:
        refused = dp_query(client, keys["analyst"], "enterprise", sql)
        assert (refused.status_code, refused.json()["code"]) == (500, "workspace_not_sealed")
        assert "veil workspaces seal" in refused.json()["detail"]

        result = CliRunner().invoke(cli_app, ["workspaces", "seal", "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == {"sealed": [{"dataset": "enterprise", "version": 1}]}
        assert not plain.exists() and stored.exists()
        with engine.connect() as con:
            path = con.execute(
                select(versions.c.path).where(versions.c.dataset_id == "enterprise")
            ).scalar_one()
        assert path == str(stored)
        with engine.connect() as con:  # the local administrator's change, recorded
            (sealed,) = [
                r.entry for r in read_entries(con, kind="onboarding", limit=1000)
                if r.entry["action"] == "version.seal"
            ]  # fmt: skip
        assert sealed["refs"] == {"dataset": "enterprise", "version": 1}
        assert sealed["actor"]["type"] == "local"
        answered = dp_query(client, keys["analyst"], "enterprise", sql)  # the running server
        assert answered.status_code == 200, answered.text
    again = CliRunner().invoke(cli_app, ["workspaces", "seal", "--data-dir", str(data_dir)])
    assert json.loads(again.output) == {"sealed": []}
    assert catalog.current(engine, "enterprise").path == stored
    engine.dispose()
