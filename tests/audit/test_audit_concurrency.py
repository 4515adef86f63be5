"""Concurrent appends chain correctly: many connections appending at once (and checkpoint writers
running meanwhile), on PostgreSQL (row lock on the head) and SQLite (``BEGIN IMMEDIATE``), give
``seq`` 1..N without a gap, every ``prev`` the hash before it, and checkpoints that verify."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sqlalchemy import select

from sandbox.access.model import Actor
from sandbox.audit.checkpoint import Checkpointer
from sandbox.audit.entry import GENESIS, Event
from sandbox.audit.log import AuditLog
from sandbox.audit.verify import verify
from sandbox.keys import directory as keystore
from sandbox.store import db
from sandbox.store.schema import audit_checkpoints, audit_entries

THREADS = 8
PER_THREAD = 40


def test_concurrent_appends_chain_without_gaps(state_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = db.connect(state_url)
    keys = keystore.audit_keys(tmp_path / "keys", master_key=None, hmac_key=None)
    log = AuditLog(engine, keys)
    system = Actor.system()
    start = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def appender(n: int) -> None:
        try:
            start.wait()
            for i in range(PER_THREAD):
                with engine.begin() as con:
                    event = Event("admin", "test.concurrent", refs={"t": n, "i": i})
                    log.append(con, event, system)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def checkpointer() -> None:
        try:
            writer = Checkpointer(engine, keys.signing, 60)
            start.wait()
            for _ in range(10):
                writer.write(force=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(THREADS - 1)]
    threads.append(threading.Thread(target=checkpointer))
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join(timeout=300)
    try:
        assert not errors, errors
        total = (THREADS - 1) * PER_THREAD
        with engine.connect() as con:
            rows = con.execute(
                select(audit_entries.c.seq, audit_entries.c.body, audit_entries.c.hash).order_by(
                    audit_entries.c.seq
                )
            ).all()
            sizes = con.execute(select(audit_checkpoints.c.tree_size)).scalars().all()
        assert [r.seq for r in rows] == list(range(1, total + 1))
        prev = GENESIS
        for r in rows:
            assert json.loads(r.body)["prev"] == prev
            prev = r.hash
        per_thread: dict[int, list[int]] = {}
        for r in rows:
            refs = json.loads(r.body)["refs"]
            per_thread.setdefault(refs["t"], []).append(refs["i"])
        assert all(v == list(range(PER_THREAD)) for v in per_thread.values())
        assert len(sizes) == 10 and all(0 <= s <= total for s in sizes)
        report = verify(engine, keys)
        assert report.ok, report.problems
        assert report.checkpoints == 10
    finally:
        engine.dispose()
