"""Truncation, signing over a tampered log, and the filter columns (SQLite and PostgreSQL).

A database writer deletes the newest entries and checkpoints and rewinds the head; deletes every
checkpoint; deletes one from the middle; edits an entry after the last checkpoint and waits for
the next signature; edits the tenant and member columns that readers filter on. Each is done with
plain SQL on the state store, and the checkpoint chain, the witness, the checkpoint writer's own
check and ``audit_verify.verify`` must name it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update
from typer.testing import CliRunner

from sandbox import clock
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.checkpoint import Checkpointer, checkpoint_hash, sign_checkpoint
from sandbox.audit.entry import Event, canonical_body, entry_hash
from sandbox.audit.log import AuditLog
from sandbox.audit.verify import Report, verify
from sandbox.audit.witness import read_witness
from sandbox.cli.main import app as cli
from sandbox.config import Settings
from sandbox.errors import AuditChainBroken
from sandbox.keys import directory as keystore
from sandbox.keys.audit import AuditKeys
from sandbox.store import db
from sandbox.store.schema import audit_checkpoints, audit_entries, audit_head
from tests.support.app import auth, engine_of, running_app, serving

SYSTEM = Actor.system()
DIRECTORY_ONLY: dict[str, SecretStr | None] = {"master_key": None, "hmac_key": None}


@dataclass
class Env:
    key_dir: Path
    witness: Path
    engine: Engine
    keys: AuditKeys
    log: AuditLog

    def checkpointer(self, *, witness: bool = True) -> Checkpointer:
        """A checkpoint writer as a (new) server process builds it."""
        return Checkpointer(
            self.engine,
            self.keys.signing,
            60,
            hmac=self.keys.hmac,
            witness=self.witness if witness else None,
        )

    def checkpoint(self) -> dict[str, object]:
        written = self.checkpointer().write(force=True)
        assert written is not None
        return written

    def verify(self, *, witness: bool = False) -> Report:
        heads = read_witness(self.witness) if witness else None
        keys = keystore.audit_keys(self.key_dir, **DIRECTORY_ONLY, create=False)
        return verify(self.engine, keys, witness=heads)


@pytest.fixture()
def env(state_url: str, tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "data").mkdir(exist_ok=True)  # where state_url's SQLite file lives
    key_dir = tmp_path / "keys"
    engine = db.connect(state_url)
    keys = keystore.audit_keys(key_dir, **DIRECTORY_ONLY)
    yield Env(key_dir, tmp_path / "witness.jsonl", engine, keys, AuditLog(engine, keys))
    engine.dispose()


def write(env: Env, n: int, actor: Actor = SYSTEM, tenant: str | None = None) -> None:
    for i in range(n):
        with env.engine.begin() as con:
            env.log.append(con, Event("admin", "test.write", tenant=tenant, refs={"i": i}), actor)


def codes(report: Report) -> set[tuple[str, int, str]]:
    return {(p.where, p.ref, p.code) for p in report.problems}


def truncate(engine: Engine, keep: int) -> None:
    """The finding's attack on a stopped server: the checkpoints and entries after ``keep``
    deleted, and the head row rewritten to entry ``keep``."""
    with engine.begin() as con:
        con.execute(audit_checkpoints.delete().where(audit_checkpoints.c.tree_size > keep))
        con.execute(audit_entries.delete().where(audit_entries.c.seq > keep))
        last = con.execute(select(audit_entries.c.hash).where(audit_entries.c.seq == keep)).scalar()
        con.execute(update(audit_head).values(seq=keep, hash=last))


# -- 1. truncation: the checkpoint chain and the witness -------------------------------------------


def test_checkpoints_form_a_gap_free_chain(env: Env) -> None:
    write(env, 2)
    first = env.checkpoint()
    write(env, 3)
    second = env.checkpoint()
    assert (first["number"], second["number"]) == (1, 2)
    assert first["prev"] == "0" * 64
    assert second["prev"] == checkpoint_hash(first)
    report = env.verify(witness=True)
    assert report.ok, report.problems
    assert report.checkpoints == 2 and report.uncovered == 0
    assert [h["number"] for h in read_witness(env.witness)] == [1, 2]


def test_truncating_entries_and_checkpoints_is_caught_by_the_witness(env: Env) -> None:
    write(env, 4)
    env.checkpoint()
    write(env, 4)
    env.checkpoint()
    write(env, 4)
    env.checkpoint()  # 12 entries, 3 checkpoints, each also in the witness
    truncate(env.engine, 4)
    # Without a witness the shorter log is a state the log went through: nothing to see
    # (docs/audit.md, "What it does not protect against").
    assert env.verify().ok
    found = codes(env.verify(witness=True))
    assert ("witness", 2, "log_truncated") in found
    assert ("witness", 3, "log_truncated") in found


def test_deleting_every_checkpoint_is_caught_by_the_witness(env: Env) -> None:
    write(env, 5)
    env.checkpoint()
    with env.engine.begin() as con:
        con.execute(audit_checkpoints.delete())
    bare = env.verify()
    assert bare.checkpoints == 0 and bare.uncovered == 5  # said, not hidden behind "ok"
    assert ("witness", 1, "log_truncated") in codes(env.verify(witness=True))


def test_a_checkpoint_deleted_from_the_middle_of_the_chain_is_named(env: Env) -> None:
    for _ in range(3):
        write(env, 2)
        env.checkpoint()
    with env.engine.begin() as con:
        con.execute(audit_checkpoints.delete().where(audit_checkpoints.c.number == 2))
    third = con_id(env, 3)
    assert codes(env.verify()) == {
        ("checkpoint", third, "checkpoint_missing"),
        ("checkpoint", third, "checkpoint_broken_link"),
    }


def con_id(env: Env, number: int) -> int:
    with env.engine.connect() as con:
        found = con.execute(
            select(audit_checkpoints.c.id).where(audit_checkpoints.c.number == number)
        ).scalar_one()
    return int(found)


def test_a_rewritten_log_with_re_signed_checkpoints_is_caught_by_the_witness(env: Env) -> None:
    """The attacker holds the key directory: they truncate to 3 entries, write other entries,
    and sign a new chain of checkpoints that verifies on its own. The witness's heads don't."""
    write(env, 3)
    env.checkpoint()
    write(env, 3)
    env.checkpoint()
    truncate(env.engine, 3)
    with env.engine.begin() as con:
        con.execute(audit_checkpoints.delete())
    write(env, 3, tenant="ten_forged")
    forger = Checkpointer(env.engine, env.keys.signing, 60, hmac=env.keys.hmac)  # no witness
    forger.write(force=True)
    forger.write(force=True)
    assert env.verify().ok
    found = codes(env.verify(witness=True))
    assert ("witness", 1, "witness_mismatch") in found
    assert ("witness", 2, "witness_mismatch") in found


def test_a_checkpoint_signed_outside_the_chain_is_named(env: Env) -> None:
    write(env, 2)
    env.checkpoint()
    document = sign_checkpoint(env.keys.signing, 2, _root(env), clock.now())  # the old format
    with env.engine.begin() as con:
        row = con.execute(
            audit_checkpoints.insert()
            .values(
                tree_size=2,
                root=document["root"],
                at=clock.now(),
                key_id=document["key_id"],
                document=json.dumps(document),
            )
            .returning(audit_checkpoints.c.id)
        ).one()
    assert ("checkpoint", int(row.id), "checkpoint_unchained") in codes(env.verify())


def _root(env: Env) -> bytes:
    from sandbox.audit import merkle

    with env.engine.connect() as con:
        hashes = con.execute(select(audit_entries.c.hash).order_by(audit_entries.c.seq)).scalars()
        return merkle.root([merkle.leaf_hash(bytes.fromhex(h)) for h in hashes])


def test_a_witness_head_that_was_altered_is_named(env: Env) -> None:
    write(env, 2)
    env.checkpoint()
    head = json.loads(env.witness.read_text())
    head["root"] = "00" * 32
    env.witness.write_text(json.dumps(head) + "\n")
    assert ("witness", 1, "checkpoint_bad_signature") in codes(env.verify(witness=True))


def test_a_witness_directory_holds_one_file_per_head(env: Env, tmp_path: Path) -> None:
    env.witness = tmp_path / "witness.d"
    env.witness.mkdir()
    write(env, 2)
    env.checkpoint()
    env.checkpoint()
    assert sorted(p.name for p in env.witness.iterdir()) == [
        "checkpoint-000000000001.json",
        "checkpoint-000000000002.json",
    ]
    assert env.verify(witness=True).ok
    truncate(env.engine, 1)
    assert ("witness", 1, "log_truncated") in codes(env.verify(witness=True))


# -- 2. no signature over a tampered log ---------------------------------------------------------


def test_the_writer_refuses_to_sign_over_an_edited_entry(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    write(env, 3)
    env.checkpoint()
    write(env, 3)
    with env.engine.begin() as con:  # entry 5, after the last checkpoint, edited
        body = con.execute(select(audit_entries.c.body).where(audit_entries.c.seq == 5)).scalar()
        assert body is not None
        con.execute(
            update(audit_entries)
            .where(audit_entries.c.seq == 5)
            .values(body=body.replace("test.write", "test.wrote"))
        )
    with caplog.at_level(logging.ERROR, "veil.audit"), pytest.raises(AuditChainBroken) as raised:
        env.checkpointer().write(force=True)  # a restart more than one interval later
    assert "entry 5" in str(raised.value.detail)
    assert any("audit_chain_broken" in r.getMessage() for r in caplog.records)
    with env.engine.connect() as con:
        assert con.execute(select(func.count()).select_from(audit_checkpoints)).scalar() == 1
    assert len(read_witness(env.witness)) == 1


def test_the_writer_refuses_to_sign_over_a_rebuilt_chain(env: Env) -> None:
    """Entry 3 edited and its hash, the next links and the head recomputed, without the HMAC
    key: only the MAC shows it, and the writer checks MACs before it signs."""
    write(env, 2)
    env.checkpoint()
    write(env, 3)
    prev = ""
    with env.engine.begin() as con:
        for seq in (3, 4, 5):
            body = json.loads(
                con.execute(select(audit_entries.c.body).where(audit_entries.c.seq == seq)).scalar()
                or "{}"
            )
            if seq == 3:
                body["action"] = "test.innocent"
            else:
                body["prev"] = prev
            raw = canonical_body(body)
            prev = entry_hash(raw)
            con.execute(
                update(audit_entries)
                .where(audit_entries.c.seq == seq)
                .values(body=raw.decode(), hash=prev, action=body["action"])
            )
        con.execute(update(audit_head).values(hash=prev))
    with pytest.raises(AuditChainBroken, match="entry 3: entry_bad_mac"):
        env.checkpointer().write(force=True)


def test_the_writer_refuses_when_its_checkpoints_were_deleted(env: Env) -> None:
    write(env, 2)
    writer = env.checkpointer()
    writer.write(force=True)
    writer.write(force=True)
    with env.engine.begin() as con:
        con.execute(audit_checkpoints.delete().where(audit_checkpoints.c.number == 2))
    with pytest.raises(AuditChainBroken, match="checkpoint"):
        writer.write(force=True)  # the same process: it signed number 2 itself
    with pytest.raises(AuditChainBroken, match="witness"):
        env.checkpointer().write(force=True)  # a new process: the witness holds number 2


def test_a_server_refuses_to_start_over_a_tampered_log(
    settings: Settings, keys: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with running_app(settings) as client:
        client.get("/v1/budgets", headers=auth(keys["analyst"]))
    engine = db.connect(settings.state_url)
    try:
        local = AuditLog.open(engine, settings.keys_path)
        with engine.begin() as con:  # the local administrator's change, after the last checkpoint
            seq = local.append(con, Event("admin", "test.local"), Actor.local())
        with engine.begin() as con:
            con.execute(
                update(audit_entries).where(audit_entries.c.seq == seq).values(code="denied")
            )
        with engine.connect() as con:
            before = con.execute(select(func.count()).select_from(audit_checkpoints)).scalar()
        with (
            caplog.at_level(logging.ERROR, "veil.audit"),
            pytest.raises(AuditChainBroken, match=f"entry {seq}: entry_columns_mismatch"),
            running_app(settings),
        ):
            pass
        assert any("audit_chain_broken" in r.getMessage() for r in caplog.records)
        with engine.connect() as con:
            after = con.execute(select(func.count()).select_from(audit_checkpoints)).scalar()
        assert after == before  # nothing signed over it
    finally:
        engine.dispose()


def test_a_running_server_stops_signing_and_reports_a_broken_chain(
    settings: Settings, keys: dict[str, str]
) -> None:
    with running_app(settings, audit_checkpoint_s=0.2) as client:
        client.get("/v1/budgets", headers=auth(keys["analyst"]))
        engine = engine_of(client)
        with engine.begin() as con:
            last = con.execute(select(func.max(audit_entries.c.seq))).scalar_one()
            con.execute(
                update(audit_entries).where(audit_entries.c.seq == last).values(code="denied")
            )
            signed = con.execute(select(func.max(audit_checkpoints.c.tree_size))).scalar_one()
        time.sleep(1.0)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["code"] == "audit_chain_broken"
        refused = client.get("/v1/budgets", headers=auth(keys["analyst"]))  # fail closed
        assert (refused.status_code, refused.json()["code"]) == (503, "audit_chain_broken")
        report = client.get("/v1/audit/verify", headers=auth(keys["admin"]))  # still readable
        assert report.status_code == 200
        assert (last, "entry_columns_mismatch") in {
            (p["ref"], p["code"]) for p in report.json()["problems"]
        }
        with engine.connect() as con:
            now_signed = con.execute(select(func.max(audit_checkpoints.c.tree_size))).scalar_one()
        assert now_signed == signed


def test_a_clean_shutdown_writes_a_checkpoint_and_the_witness_gets_it(
    settings: Settings, keys: dict[str, str], tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    with running_app(settings, audit_witness=witness, audit_checkpoint_s=3600) as client:
        client.get("/v1/budgets", headers=auth(keys["analyst"]))
        engine = engine_of(client)
        with engine.connect() as con:
            first = con.execute(select(func.max(audit_checkpoints.c.tree_size))).scalar_one()
    engine = db.connect(settings.state_url)
    try:
        with engine.connect() as con:
            head = con.execute(select(audit_head.c.seq)).scalar_one()
            last = con.execute(select(func.max(audit_checkpoints.c.tree_size))).scalar_one()
    finally:
        engine.dispose()
    assert last == head > first  # the request's entry is signed at shutdown
    heads = read_witness(witness)
    assert [h["tree_size"] for h in heads][-1] == head
    runner = CliRunner()
    data_dir = str(settings.data_dir)
    ok = runner.invoke(cli, ["audit", "verify", "--data-dir", data_dir, "--witness", str(witness)])
    assert ok.exit_code == 0, ok.output
    assert "witness: 2 heads" in ok.output
    engine = db.connect(settings.state_url)
    try:
        truncate(engine, int(first))
    finally:
        engine.dispose()
    bare = runner.invoke(cli, ["audit", "verify", "--data-dir", data_dir])
    assert bare.exit_code == 0, bare.output  # the limit without a witness
    caught = runner.invoke(
        cli, ["audit", "verify", "--data-dir", data_dir, "--witness", str(witness)]
    )
    assert caught.exit_code == 1, caught.output
    assert "witness 2: log_truncated" in caught.output


# -- 3. the columns readers filter on ------------------------------------------------------------


def test_edited_tenant_and_member_columns_are_named(env: Env) -> None:
    analyst = Actor.of(Member("mem_a", "ten_a", "analyst", MemberRole.ANALYST))
    write(env, 3, actor=analyst)
    with env.engine.begin() as con:
        con.execute(
            update(audit_entries).where(audit_entries.c.seq == 1).values(tenant_id="ten_other")
        )
        con.execute(update(audit_entries).where(audit_entries.c.seq == 2).values(member_id=None))
        con.execute(update(audit_entries).where(audit_entries.c.seq == 3).values(tenant_id=None))
    assert codes(env.verify()) == {
        ("entry", 1, "entry_columns_mismatch"),
        ("entry", 2, "entry_columns_mismatch"),
        ("entry", 3, "entry_columns_mismatch"),
    }


def test_an_untouched_log_of_members_and_anonymous_callers_verifies(env: Env) -> None:
    write(env, 2, actor=Actor.of(Member("mem_a", "ten_a", "analyst", MemberRole.ANALYST)))
    write(env, 1, tenant="ten_b")
    write(env, 1)
    assert env.verify().ok


def test_an_auditor_checks_a_live_server_against_the_witness(
    settings: Settings, keys: dict[str, str], tmp_path: Path
) -> None:
    import httpx

    witness = tmp_path / "witness.d"
    witness.mkdir()
    with serving(settings, audit_witness=witness) as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            tenant = http.post(
                "/v1/tenants",
                json={
                    "name": "Audit Office",
                    "kind": "government",
                    "purpose_class": "public_welfare",
                },
                headers=auth(keys["admin"]),
            ).json()["id"]
            auditor = http.post(
                f"/v1/tenants/{tenant}/members",
                json={"name": "auditor", "role": "auditor"},
                headers=auth(keys["admin"]),
            ).json()["api_key"]
        runner = CliRunner()
        args = ["audit", "verify", "--url", url, "--key", auditor, "--witness", str(witness)]
        ok = runner.invoke(cli, args)
        assert ok.exit_code == 0, ok.output
        assert "witness: 1 heads checked" in ok.output
        engine = db.connect(settings.state_url)
        try:
            with engine.begin() as con:  # every checkpoint deleted behind the server's back
                con.execute(audit_checkpoints.delete())
        finally:
            engine.dispose()
        caught = runner.invoke(cli, args)
        assert caught.exit_code == 1, caught.output
        assert "witness 1: log_truncated" in caught.output


def test_a_log_with_checkpoints_from_before_the_chain_still_verifies_and_the_chain_follows(
    env: Env,
) -> None:
    write(env, 3)
    old = sign_checkpoint(env.keys.signing, 3, _root(env), clock.now())  # as written before 0012
    with env.engine.begin() as con:
        con.execute(
            audit_checkpoints.insert().values(
                tree_size=3,
                root=old["root"],
                at=clock.now(),
                key_id=old["key_id"],
                document=json.dumps(old),
            )
        )
    write(env, 2)
    first = env.checkpoint()
    assert (first["number"], first["prev"], first["tree_size"]) == (1, "0" * 64, 5)
    report = env.verify(witness=True)
    assert report.ok, report.problems
    assert report.checkpoints == 2


def test_entries_checked_by_a_writer_that_did_not_sign_are_checked_again(env: Env) -> None:
    """Two server processes: the one that finds a fresh checkpoint signs nothing, so the
    entries after it must be checked again at its next attempt, edited meanwhile or not."""
    write(env, 2)
    first, second = env.checkpointer(), env.checkpointer()
    first.write(force=True)
    write(env, 2)
    assert second.write() is None  # fresh: skipped, after checking entries 3 and 4
    with env.engine.begin() as con:
        con.execute(update(audit_entries).where(audit_entries.c.seq == 4).values(code="denied"))
    with pytest.raises(AuditChainBroken, match="entry 4: entry_columns_mismatch"):
        second.write(force=True)
