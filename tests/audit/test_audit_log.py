"""The audit log against its threats, on a real state store (SQLite and PostgreSQL).

Each tampering a database writer can do — edit, delete, reorder, truncate, rebuild the chain,
forge a checkpoint — is done with plain SQL, and ``audit_verify.verify`` must name it by entry or
checkpoint. Also: an entry commits or rolls back with the change it records (a process killed
inside the charge's transaction leaves neither), sealed members never reach the database file in
clear, inclusion and consistency proofs check against signed checkpoints, and key rotations
(master, HMAC, checkpoint signing) keep every old entry readable and verifiable.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text, update

from policies.accounting import Accounting
from sandbox import clock
from sandbox.access import members, tenants
from sandbox.access.model import Actor, MemberRole
from sandbox.audit import merkle
from sandbox.audit.checkpoint import (
    Checkpointer,
    consistency,
    inclusion,
    sign_checkpoint,
    verify_inclusion_proof,
)
from sandbox.audit.entry import GENESIS, Event, canonical_body, entry_hash
from sandbox.audit.log import AuditLog
from sandbox.audit.store import read_entries
from sandbox.audit.verify import Report, verify
from sandbox.canonical import canonical_json
from sandbox.config import Settings
from sandbox.errors import AuditNotCheckpointed, KeyFileExposed, MasterKeyError, NotCanonicalizable
from sandbox.keys import directory as keystore
from sandbox.keys.audit import AuditKeys, load_hmac_ring
from sandbox.keys.signing import KeyRing, generate_key
from sandbox.ledger.service import Ledger
from sandbox.store import db
from sandbox.store.schema import audit_checkpoints, audit_data_keys, audit_entries, audit_head
from tests.support.ledger import analyst_actor
from tests.support.store import LOCAL, seed_catalog

SYSTEM = Actor.system()  # who writes the test entries (as the server's background work would)

REPO = Path(__file__).resolve().parents[2]
# The rings of the key directory, not of VEIL_MASTER_KEY / VEIL_AUDIT_HMAC_KEY.
DIRECTORY_ONLY: dict[str, SecretStr | None] = {"master_key": None, "hmac_key": None}


@dataclass
class Env:
    key_dir: Path
    engine: Engine
    keys: AuditKeys
    log: AuditLog

    def restart(self) -> None:
        """A new process's view: keys read again, a new log (and data key)."""
        self.keys = keystore.audit_keys(self.key_dir, **DIRECTORY_ONLY)
        self.log = AuditLog(self.engine, self.keys)

    def checkpoint(self) -> dict[str, object]:
        written = Checkpointer(self.engine, self.keys.signing, 60).write(force=True)
        assert written is not None
        return written

    def verify(self) -> Report:
        return verify(
            self.engine, keystore.audit_keys(self.key_dir, **DIRECTORY_ONLY, create=False)
        )


@pytest.fixture()
def env(state_url: str, tmp_path: Path) -> Iterator[Env]:
    # state_url (tests/conftest.py): each test runs on SQLite and on PostgreSQL
    (tmp_path / "data").mkdir(exist_ok=True)
    key_dir = tmp_path / "keys"
    engine = db.connect(state_url)
    keys = keystore.audit_keys(key_dir, **DIRECTORY_ONLY)
    log = AuditLog(engine, keys)
    yield Env(key_dir, engine, keys, log)
    engine.dispose()


def write(env: Env, n: int, note: str = "secret") -> None:
    for i in range(n):
        with env.engine.begin() as con:
            env.log.append(
                con,
                Event("admin", "test.write", refs={"i": i}, sealed={"note": f"{note}-{i}"}),
                SYSTEM,
            )


def codes(report: Report) -> set[tuple[str, int, str]]:
    return {(p.where, p.ref, p.code) for p in report.problems}


def body_of(engine: Engine, seq: int) -> dict[str, object]:
    with engine.connect() as con:
        raw = con.execute(select(audit_entries.c.body).where(audit_entries.c.seq == seq)).scalar()
    assert raw is not None
    loaded: dict[str, object] = json.loads(raw)
    return loaded


def set_body(engine: Engine, seq: int, body: dict[str, object], *, rehash: bool) -> str:
    raw = canonical_json(body)
    values: dict[str, str] = {"body": raw.decode()}
    if rehash:
        values["hash"] = entry_hash(raw)
    with engine.begin() as con:
        con.execute(update(audit_entries).where(audit_entries.c.seq == seq).values(**values))
    return entry_hash(raw)


# -- the chain ------------------------------------------------------------------------------------


def test_a_clean_log_verifies_and_chains_from_genesis(env: Env) -> None:
    write(env, 5)
    env.checkpoint()
    report = env.verify()
    assert report.ok, report.problems
    assert (report.entries, report.last_seq, report.checkpoints) == (5, 5, 1)
    assert report.macs_checked
    first, second = body_of(env.engine, 1), body_of(env.engine, 2)
    assert first["prev"] == GENESIS
    with env.engine.connect() as con:
        hash_1 = con.execute(select(audit_entries.c.hash).where(audit_entries.c.seq == 1)).scalar()
        head = con.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    assert second["prev"] == hash_1
    assert head.seq == 5
    assert first["mac_key"] == env.keys.hmac.current_id
    assert first["actor"] == {"type": "system"}


def test_an_edited_entry_is_named(env: Env) -> None:
    write(env, 5)
    body = body_of(env.engine, 2)
    body["action"] = "test.innocent"
    set_body(env.engine, 2, body, rehash=False)
    found = codes(env.verify())
    assert ("entry", 2, "entry_hash_mismatch") in found
    assert ("entry", 3, "entry_broken_link") in found  # its successor no longer links to it


def test_an_edited_column_is_named(env: Env) -> None:
    write(env, 3)
    with env.engine.begin() as con:
        con.execute(update(audit_entries).where(audit_entries.c.seq == 2).values(code="denied"))
    assert codes(env.verify()) == {("entry", 2, "entry_columns_mismatch")}


def test_a_deleted_entry_is_named(env: Env) -> None:
    write(env, 5)
    with env.engine.begin() as con:
        con.execute(audit_entries.delete().where(audit_entries.c.seq == 3))
    found = codes(env.verify())
    assert ("entry", 3, "entry_missing") in found
    assert ("entry", 4, "entry_broken_link") in found


def test_reordered_entries_are_named(env: Env) -> None:
    write(env, 5)
    with env.engine.begin() as con:
        for old, new in ((3, -3), (4, 3), (-3, 4)):
            con.execute(update(audit_entries).where(audit_entries.c.seq == old).values(seq=new))
    found = codes(env.verify())
    assert {("entry", 3, "entry_seq_mismatch"), ("entry", 4, "entry_seq_mismatch")} <= found
    assert ("entry", 3, "entry_broken_link") in found


def test_a_truncated_log_is_caught_by_the_head_and_by_checkpoints(env: Env) -> None:
    write(env, 6)
    env.checkpoint()  # signed over 6 entries
    with env.engine.begin() as con:
        con.execute(audit_entries.delete().where(audit_entries.c.seq > 4))
    assert ("head", 6, "log_truncated") in codes(env.verify())
    # The writer also rewinds the head row: the checkpoint still knows there were 6.
    with env.engine.begin() as con:
        last = con.execute(select(audit_entries.c.hash).where(audit_entries.c.seq == 4)).scalar()
        con.execute(update(audit_head).values(seq=4, hash=last))
    assert {(p.where, p.code) for p in env.verify().problems} == {("checkpoint", "log_truncated")}


def test_a_rebuilt_chain_is_caught_by_the_macs_and_the_checkpoint(env: Env) -> None:
    """The attacker edits entry 2 and recomputes every hash and link after it, and the head:
    the chain is consistent again, but they hold no HMAC key and no signing key."""
    write(env, 5)
    env.checkpoint()
    prev = ""
    for seq in range(2, 6):
        body = body_of(env.engine, seq)
        if seq == 2:
            body["action"] = "test.innocent"
        else:
            body["prev"] = prev
        prev = set_body(env.engine, seq, body, rehash=True)
    with env.engine.begin() as con:
        con.execute(update(audit_head).values(hash=prev))
    found = codes(env.verify())
    assert {("entry", s, "entry_bad_mac") for s in range(2, 6)} <= found
    assert not {c for c in found if c[2] in ("entry_hash_mismatch", "entry_broken_link")}
    assert any(c[0] == "checkpoint" and c[2] == "checkpoint_root_mismatch" for c in found)


# -- checkpoints ----------------------------------------------------------------------------------


def _insert_checkpoint(env: Env, document: dict[str, object]) -> int:
    with env.engine.begin() as con:
        row = con.execute(
            audit_checkpoints.insert()
            .values(
                tree_size=document["tree_size"],
                root=document["root"],
                at=clock.now(),
                key_id=document["key_id"],
                document=json.dumps(document),
            )
            .returning(audit_checkpoints.c.id)
        ).one()
    return int(row.id)


def _root(env: Env, size: int) -> bytes:
    with env.engine.connect() as con:
        hashes = con.execute(
            select(audit_entries.c.hash)
            .where(audit_entries.c.seq <= size)
            .order_by(audit_entries.c.seq)
        ).scalars()
        return merkle.root([merkle.leaf_hash(bytes.fromhex(h)) for h in hashes])


def test_forged_checkpoints_are_named(env: Env) -> None:
    write(env, 4)
    genuine = env.checkpoint()
    # (1) a genuine document with its root changed: the signature no longer matches
    altered = {**genuine, "root": "00" * 32}
    bad_signature = _insert_checkpoint(env, altered)
    # (2) signed with the real key over a root that is not the entries' tree head
    wrong_root = _insert_checkpoint(
        env, sign_checkpoint(env.keys.signing, 4, merkle.leaf_hash(b"x"), clock.now())
    )
    # (3) the right root, signed with a key that was never published
    stranger = KeyRing(generate_key())
    unknown = _insert_checkpoint(env, sign_checkpoint(stranger, 4, _root(env, 4), clock.now()))
    found = codes(env.verify())
    assert found == {
        ("checkpoint", bad_signature, "checkpoint_bad_signature"),
        ("checkpoint", bad_signature, "checkpoint_duplicate"),  # a second number 1
        ("checkpoint", wrong_root, "checkpoint_root_mismatch"),
        ("checkpoint", wrong_root, "checkpoint_unchained"),  # no number, after the chain began
        ("checkpoint", unknown, "checkpoint_unknown_key"),
        ("checkpoint", unknown, "checkpoint_unchained"),
    }


def test_checkpoints_are_written_when_nothing_happened_and_once_per_interval(env: Env) -> None:
    write(env, 2)
    a = Checkpointer(env.engine, env.keys.signing, 60)
    b = Checkpointer(env.engine, env.keys.signing, 60)  # another server process
    first = a.write()
    assert first is not None and first["tree_size"] == 2
    assert b.write() is None  # a fresh checkpoint exists: this interval is done
    with env.engine.begin() as con:  # an interval passes, with no new entry
        con.execute(update(audit_checkpoints).values(at=clock.now() - timedelta(minutes=2)))
    second = b.write()
    assert second is not None
    assert (second["tree_size"], second["root"]) == (first["tree_size"], first["root"])
    assert env.verify().ok


def test_an_empty_log_gets_checkpoints_too(env: Env) -> None:
    document = env.checkpoint()
    assert document["tree_size"] == 0
    assert document["root"] == merkle.empty_root().hex()
    assert env.verify().ok


# -- proofs ---------------------------------------------------------------------------------------


def test_inclusion_proofs_verify_and_fail_for_a_tampered_entry(env: Env) -> None:
    write(env, 7)
    env.checkpoint()
    public = env.keys.signing.public_keys()
    for seq in range(1, 8):
        proof = inclusion(env.engine, seq)
        assert proof.tree_size == 7
        assert verify_inclusion_proof(proof, public) is None
    proof = inclusion(env.engine, 3)
    proof = replace(proof, entry={**proof.entry, "action": "test.innocent"})
    assert verify_inclusion_proof(proof, public) == "proof_does_not_verify"
    # tampered in the database: the proof's entry no longer hashes to its leaf
    body = body_of(env.engine, 5)
    body["code"] = "denied"
    set_body(env.engine, 5, body, rehash=False)
    assert verify_inclusion_proof(inclusion(env.engine, 5), public) == "proof_does_not_verify"
    stranger = KeyRing(generate_key()).public_keys()
    assert verify_inclusion_proof(inclusion(env.engine, 1), stranger) == "checkpoint_unknown_key"


def test_an_entry_after_the_last_checkpoint_has_no_proof_yet(env: Env) -> None:
    write(env, 2)
    with pytest.raises(AuditNotCheckpointed):
        inclusion(env.engine, 1)  # no checkpoint at all
    env.checkpoint()
    write(env, 1)
    with pytest.raises(AuditNotCheckpointed):
        inclusion(env.engine, 3)


def test_consistency_between_two_checkpoints(env: Env) -> None:
    write(env, 3)
    old = env.checkpoint()
    write(env, 5)
    new = env.checkpoint()
    proof = consistency(env.engine, 3, 8)
    assert (proof.first_root, proof.second_root) == (old["root"], new["root"])
    path = [bytes.fromhex(p) for p in proof.path]
    assert merkle.verify_consistency(
        3, 8, bytes.fromhex(str(old["root"])), bytes.fromhex(str(new["root"])), path
    )


# -- transactions ---------------------------------------------------------------------------------


def test_an_entry_rolls_back_with_its_transaction(env: Env) -> None:
    write(env, 2)
    with pytest.raises(RuntimeError), env.engine.begin() as con:
        env.log.append(con, Event("admin", "test.doomed"), SYSTEM)
        raise RuntimeError("the change failed")
    write(env, 1)
    with env.engine.connect() as con:
        actions = (
            con.execute(select(audit_entries.c.action).order_by(audit_entries.c.seq))
            .scalars()
            .all()
        )
    assert actions == ["test.write"] * 3
    assert env.verify().ok


def analyst_grant(env: Env) -> tuple[str, str, str]:
    """A tenant, an analyst member and a grant of 1 ε on the seeded dataset ``ds``."""
    seed_catalog(env.engine)
    tenant = tenants.create_tenant(env.engine, env.log, LOCAL, "T", "research", "public_welfare")
    member, _ = members.create_member(env.engine, env.log, LOCAL, tenant, "a", MemberRole.ANALYST)
    grant_id = Ledger(env.engine, env.log).grants.create_grant(
        LOCAL,
        tenant,
        "ds",
        Accounting.PURE,
        budget_micro=1_000_000,
        delta_pico=0,
        per_query_cap_micro=500_000,
    )
    return tenant, member, grant_id


def test_a_charge_and_its_entry_commit_together(env: Env) -> None:
    tenant, member, grant_id = analyst_grant(env)
    ledger = Ledger(env.engine, env.log)
    grant = ledger.grants.grant_by_id(LOCAL, grant_id)
    reservation = ledger.charges.reserve(analyst_actor(member, tenant), grant, "qh", 1, 100_000, 0)
    with env.engine.connect() as con:
        rows = con.execute(
            select(audit_entries.c.body).where(audit_entries.c.action == "query.charge")
        ).scalars()
        (charge,) = [json.loads(r) for r in rows]
    assert charge["refs"]["charge"] == reservation.charge_id
    assert charge["cost"] == {"accounting": "pure", "micro": 100_000, "delta_pico": 0}
    assert charge["tenant"] == tenant
    assert env.verify().ok


KILLED_RESERVE = """
import os, signal, sys
from pathlib import Path
from sqlalchemy import event
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.log import AuditLog
from sandbox.ledger.service import Ledger
from sandbox.store import db

if __name__ == "__main__":
    url, key_dir, grant_id, tenant, member = sys.argv[1:6]
    engine = db.connect(url)
    ledger = Ledger(engine, AuditLog.open(engine, Path(key_dir)))
    analyst = Actor.of(Member(member, tenant, "a", MemberRole.ANALYST))
    grant = ledger.grants.grant_by_id(analyst, grant_id)

    @event.listens_for(engine, "commit")
    def die(conn):  # inside the charge's transaction, before its COMMIT reaches the database
        os.kill(os.getpid(), signal.SIGKILL)

    ledger.charges.reserve(analyst, grant, "qh", 1, 100_000, 0)
"""


def test_a_process_killed_inside_the_charge_leaves_neither_charge_nor_entry(
    env: Env, state_url: str, tmp_path: Path
) -> None:
    tenant, member, grant_id = analyst_grant(env)
    with env.engine.connect() as con:
        before = con.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    script = tmp_path / "killed_reserve.py"
    script.write_text(KILLED_RESERVE)
    done = subprocess.run(
        [sys.executable, str(script), state_url, str(env.key_dir), grant_id, tenant, member],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    with env.engine.connect() as con:
        after = con.execute(select(func.count()).select_from(audit_entries)).scalar_one()
        charged = con.execute(
            text("SELECT count(*) FROM charges WHERE grant_id = :g"), {"g": grant_id}
        ).scalar_one()
    assert (charged, after) == (0, before)
    assert Ledger(env.engine, env.log).grants.grant_by_id(LOCAL, grant_id).spent_micro == 0
    assert env.verify().ok
    write(env, 1)  # the chain goes on from where the committed entries end
    assert env.verify().ok


# -- sealing and keys ------------------------------------------------------------------------------


def test_sealed_members_are_not_in_the_database_file(env: Env, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("reads the SQLite file's bytes")
    write(env, 3, note="MARKER-Zq8VvX")
    raw_key = env.log._dk.key if env.log._dk else b""  # the data key, as held in memory
    files = [p for p in Path(env.engine.url.database or "").parent.glob("state.db*")]
    content = b"".join(p.read_bytes() for p in files)
    assert files and b"MARKER-Zq8VvX" not in content
    assert raw_key and raw_key not in content
    env.restart()  # another process, with the same keys: opens them
    with env.engine.connect() as con:
        rows = read_entries(con)
        opened = [env.log.unseal(con, r.entry["sealed"], {}) for r in rows]
    assert [o["note"] for o in opened] == [f"MARKER-Zq8VvX-{i}" for i in range(3)]


def test_master_key_rotation_keeps_old_entries_readable_and_verifiable(env: Env) -> None:
    write(env, 2, note="before")
    old_master = env.keys.master.current_id
    keystore.rotate_master(env.key_dir)
    env.restart()
    write(env, 2, note="after")
    with env.engine.connect() as con:
        wrapped_by = dict(
            con.execute(select(audit_data_keys.c.id, audit_data_keys.c.master_key_id)).all()
        )
        rows = read_entries(con)
        opened = [env.log.unseal(con, r.entry["sealed"], {})["note"] for r in rows]
    assert opened == ["before-0", "before-1", "after-0", "after-1"]
    assert set(wrapped_by.values()) == {old_master, env.keys.master.current_id}
    assert env.keys.master.current_id != old_master
    assert env.verify().ok


def test_hmac_and_signing_key_rotation_keep_old_entries_and_checkpoints_verifiable(
    env: Env,
) -> None:
    write(env, 2)
    env.checkpoint()
    old_hmac, old_signing = env.keys.hmac.current_id, env.keys.signing.current_id
    keystore.rotate_audit_hmac(env.key_dir)
    keystore.rotate_audit_signing(env.key_dir)
    env.restart()
    write(env, 2)
    env.checkpoint()
    assert env.keys.hmac.current_id != old_hmac
    assert env.keys.signing.current_id != old_signing
    assert {body_of(env.engine, s)["mac_key"] for s in (1, 4)} == {
        old_hmac,
        env.keys.hmac.current_id,
    }
    assert env.verify().ok
    # Without the retired public key, the old checkpoint cannot be checked.
    report = verify(
        env.engine,
        AuditKeys(env.keys.master, env.keys.hmac, KeyRing(env.keys.signing.current)),
    )
    assert {p.code for p in report.problems} == {"checkpoint_unknown_key"}


def test_exposed_key_files_are_refused(env: Env) -> None:
    hmac_dir = env.key_dir / "audit-hmac"
    key_file = next(hmac_dir.glob("*.key"))
    key_file.chmod(0o644)
    with pytest.raises(KeyFileExposed, match="audit-hmac"):
        keystore.audit_keys(env.key_dir, **DIRECTORY_ONLY)
    key_file.chmod(0o600)
    (env.key_dir / "audit-signing.pem").chmod(0o640)
    with pytest.raises(KeyFileExposed, match=r"audit-signing\.pem"):
        keystore.audit_keys(env.key_dir, **DIRECTORY_ONLY)


def test_verification_without_keys_refuses_to_create_them(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError):
        keystore.audit_keys(tmp_path / "nowhere", **DIRECTORY_ONLY, create=False)
    assert not (tmp_path / "nowhere" / "audit-hmac").exists()


# -- the fast canonical form ----------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(max_codepoint=127), max_size=8), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=8), _VALUES))
def test_the_fast_canonical_form_is_rfc_8785(body: dict[str, object]) -> None:
    """Entries are serialised with json.dumps after a type check: byte for byte the canonical
    JSON that verification recomputes, control characters and non-ASCII text included."""
    assert canonical_body(body) == canonical_json(body)


@pytest.mark.parametrize("bad", [0.5, 2**53, {"é": 1}, {1: 2}, b"x"])
def test_the_fast_canonical_form_refuses_what_has_none(bad: object) -> None:
    with pytest.raises(NotCanonicalizable):
        canonical_body({"refs": bad})


def test_hmac_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = os.urandom(32), os.urandom(32)
    value = f"hk-b:{base64.b64encode(second).decode()},hk-a:{base64.b64encode(first).decode()}"
    monkeypatch.setenv("VEIL_AUDIT_HMAC_KEY", value)
    ring = load_hmac_ring(tmp_path, Settings().audit_hmac_key)
    assert ring.current_id == "hk-b" and set(ring.keys) == {"hk-a", "hk-b"}
    assert not (tmp_path / "audit-hmac").exists()  # nothing written to disk
    for bad in ("no-colon", "hk-a:not base64!", f"hk-a:{base64.b64encode(b'short').decode()}"):
        with pytest.raises(MasterKeyError):
            load_hmac_ring(tmp_path, SecretStr(bad))
