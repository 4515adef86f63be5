"""The audit log's costs on the embedded SQLite store (WAL, ``synchronous=FULL``).

1. What an entry adds to a ledger charge: charges per second (``Charges.reserve`` then
   ``Charges.settle``, one thread) with an audit log that writes nothing, and with the real one.
   With it, every charge writes two entries (``query.charge`` with the sealed SQL,
   ``query.settle``) inside the same two transactions, so the number of commits does not change.
2. Appends alone: entries per second, one sealed entry per transaction; and the CPU time of an
   append without its commit (many in one transaction).
3. Verification: entries per second over a log of ``--entries`` entries (hashes, links, MACs,
   columns, checkpoints).
4. Checkpoints: the first one in a process (reads every hash) and an incremental one after 100
   new entries; an inclusion proof at that size.

Results go to ``bench/results/audit.json`` with the machine's load average, since the machine
may be shared while it runs.

    .venv/bin/python bench/audit.py [--charges 1000] [--entries 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from policies.accounting import Accounting
from sandbox.access import members, tenants
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.checkpoint import Checkpointer, inclusion
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.audit.request import RequestRecord
from sandbox.audit.verify import verify
from sandbox.clock import now
from sandbox.keys import directory as keystore
from sandbox.ledger.charges import ChargeState
from sandbox.ledger.grants import Grant, Grants
from sandbox.ledger.service import Ledger
from sandbox.store import db
from sandbox.store.schema import datasets, zones

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "audit.json"
SQL = "SELECT industry, COUNT(*) AS n FROM registry GROUP BY industry"


def _engine(directory: Path) -> Engine:
    directory.mkdir(parents=True, exist_ok=True)
    return db.connect(f"sqlite:///{(directory / 'state.db').resolve()}")


def _grant(engine: Engine) -> tuple[Grant, Member]:
    with engine.begin() as con:
        con.execute(
            zones.insert().values(
                id="z", kind="domain", title="z", operator="o", description="", created_at=now()
            )
        )
        con.execute(datasets.insert().values(id="ds", zone_id="z", title="d", created_at=now()))
    setup = AuditLog.open(engine, Path(str(engine.url.database)).parent / "keys")
    local = Actor.local()
    tenant = tenants.create_tenant(engine, setup, local, "Bench", "research", "public_welfare")
    member, _ = members.create_member(engine, setup, local, tenant, "analyst", MemberRole.ANALYST)
    grants = Grants(engine, setup)
    grant_id = grants.create_grant(
        local,
        tenant,
        "ds",
        Accounting.PURE,
        budget_micro=10**15,
        delta_pico=0,
        per_query_cap_micro=10**6,
    )
    analyst = Member(member, tenant, "analyst", MemberRole.ANALYST)
    return grants.grant_by_id(local, grant_id), analyst


class _Unrecorded(AuditLog):
    """The baseline: a log that writes nothing (the ledger refuses to run without one)."""

    def append(self, con: Connection, entry: Event, actor: Actor) -> int:
        return 0


def charges_per_second(directory: Path, count: int, *, audited: bool) -> dict[str, Any]:
    engine = _engine(directory)
    keys = keystore.audit_keys(directory / "keys", master_key=None, hmac_key=None)
    log = AuditLog(engine, keys) if audited else _Unrecorded(engine, keys)
    log.prepare()
    grant, member = _grant(engine)
    ledger = Ledger(engine, log)
    record = RequestRecord("POST", "/v1/queries", "127.0.0.1", None)
    record.sealed["sql"] = SQL
    actor = Actor.of(member, record)  # the analyst of a query request, with its SQL (sealed)
    latencies: list[float] = []
    try:
        started = time.perf_counter()
        for _ in range(count):
            t0 = time.perf_counter()
            reservation = ledger.charges.reserve(actor, grant, "qh", 1, 1000, 0)
            ledger.charges.settle(actor, reservation.charge_id, ChargeState.RELEASED, '{"n": 1}')
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    latencies.sort()
    return {
        "audited": audited,
        "charges": count,
        "charges_per_s": round(count / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


def log_costs(directory: Path, entries: int) -> dict[str, Any]:
    engine = _engine(directory)
    keys = keystore.audit_keys(directory / "keys", master_key=None, hmac_key=None)
    log = AuditLog(engine, keys)
    log.prepare()
    system = Actor.system()
    event = Event("admin", "bench.append", refs={"n": 1}, sealed={"sql": SQL})
    timed = min(2000, entries)
    started = time.perf_counter()
    for _ in range(timed):  # one entry per transaction: what a request pays
        with engine.begin() as con:
            log.append(con, event, system)
    append_s = time.perf_counter() - started
    rest = entries - timed
    cpu = time.process_time()
    with engine.begin() as con:  # the rest in one transaction: an append's own CPU cost
        for _ in range(rest):
            log.append(con, event, system)
    append_cpu_s = time.process_time() - cpu
    writer = Checkpointer(engine, keys.signing, 60)
    t0 = time.perf_counter()
    writer.write(force=True)
    first_checkpoint_s = time.perf_counter() - t0
    with engine.begin() as con:
        for _ in range(100):
            log.append(con, event, system)
    t0 = time.perf_counter()
    writer.write(force=True)
    incremental_checkpoint_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inclusion(engine, 1)
    proof_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = verify(engine, keys)
    verify_s = time.perf_counter() - t0
    assert report.ok, report.problems
    size = sum(p.stat().st_size for p in directory.glob("state.db*"))
    engine.dispose()
    return {
        "entries": report.entries,
        "appends_per_s": round(timed / append_s, 1),
        "append_ms": round(1000 * append_s / timed, 3),
        "append_cpu_us_without_commit": round(1e6 * append_cpu_s / max(rest, 1), 1),
        "verify_entries_per_s": round(report.entries / verify_s, 1),
        "verify_s": round(verify_s, 3),
        "first_checkpoint_ms": round(1000 * first_checkpoint_s, 2),
        "incremental_checkpoint_ms": round(1000 * incremental_checkpoint_s, 2),
        "inclusion_proof_ms": round(1000 * proof_s, 2),
        "store_bytes_per_entry": round(size / report.entries),
    }


def _summary(found: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "median_charges_per_s": statistics.median(r["charges_per_s"] for r in found),
        "median_p50_ms": statistics.median(r["p50_ms"] for r in found),
        "median_p99_ms": statistics.median(r["p99_ms"] for r in found),
        "runs": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--charges", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="Alternating runs of each.")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"without_audit": [], "with_audit": []}
    with tempfile.TemporaryDirectory(prefix="veil-audit-bench-") as tmp:
        base = Path(tmp)
        load_before = os.getloadavg()
        for n in range(args.rounds):  # alternating, so that load changes hit both alike
            for name, audited in (("without_audit", False), ("with_audit", True)):
                runs[name].append(
                    charges_per_second(base / f"{name}-{n}", args.charges, audited=audited)
                )
        costs = log_costs(base / "log", args.entries)
        load_after = os.getloadavg()
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "store": "sqlite (WAL, synchronous=FULL)",
        "charges": {name: _summary(found) for name, found in runs.items()},
        "log": costs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
