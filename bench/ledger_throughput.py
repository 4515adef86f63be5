"""Ledger throughput: charges per second (one reserve + one settle each) on SQLite and PostgreSQL.

Each client is a process (``--mode processes``, like server workers) or a thread of one process
(``--mode threads``, like one server's request threads) with its own state-store engine and
audit log, calling ``reserve`` then ``settle(released, answer)`` in a loop for ``--seconds``, as
the analyst of the grant: each charge records its two audit entries (``query.charge``,
``query.settle``) in its two transactions, as in the server. Two scenarios:

- ``shared``: every client spends from ONE grant (a hot row: the worst case, every reservation
  serialises on it);
- ``separate``: each client has its own tenant and grant (only the store itself is shared).

After each run the bench checks the ledger: the grant's ``spent`` equals the sum of its charges
and equals what the clients counted. Results go to ``bench/results/ledger_throughput.json``.

PostgreSQL: ``--postgres-url URL`` (a server where the user may CREATE DATABASE; its settings are
recorded as they are), or, without it, a throwaway server from ``scripts/postgres.sh`` restarted
with PostgreSQL's durable defaults (fsync, synchronous commit and full-page writes on; the script
turns them off for tests) so that the comparison with SQLite (``synchronous=FULL``) is fair.

    .venv/bin/python bench/ledger_throughput.py [--seconds 5] [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, create_engine, text

from policies.accounting import Accounting
from sandbox.access import members, tenants
from sandbox.access.model import Actor, Member, MemberRole
from sandbox.audit.log import AuditLog
from sandbox.clock import now
from sandbox.ledger.charges import ChargeState, consistency
from sandbox.ledger.service import Ledger
from sandbox.store import db
from sandbox.store.schema import datasets, zones

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ledger_throughput.json"
DATASET = "bench"
COST_MICRO = 100_000  # ε = 0.1 per charge
HUGE_BUDGET = 10**15  # never exhausted during a run
# A released answer as the query flow stores it (~1 KB of JSON: values, intervals, cost, budget).
ANSWER_FIELDS: dict[str, Any] = {
    "query_id": "chg_0000000000000000",
    "dataset": DATASET,
    "version": 1,
    "columns": [{"name": "industry", "kind": "key"}, {"name": "n", "kind": "count"}],
    "rows": [
        {"industry": f"industry_{i}", "n": {"value": 1000 + i, "ci95": [950 + i, 1050 + i]}}
        for i in range(12)
    ],
    "suppressed_groups": 0,
    "cost": {"accounting": "pure", "epsilon": 0.1, "delta": 0.0, "mechanisms": []},
    "cached": False,
}
ANSWER = json.dumps(ANSWER_FIELDS)


@dataclass
class Run:
    backend: str
    mode: str
    scenario: str
    clients: int
    charges: int
    seconds: float
    charges_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    errors: int
    ledger_consistent: bool


# -- one client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spender:
    """What one client spends from: the grant, as its tenant's analyst."""

    grant: str
    tenant: str
    member: str


def _client_loop(url: str, keys: str, spender: Spender, seconds: float) -> dict[str, Any]:
    """Reserve + settle in a loop for ``seconds``; returns counts and latencies (ms)."""
    engine = db.connect(url)
    ledger = Ledger(engine, AuditLog.open(engine, Path(keys)))
    actor = Actor.of(Member(spender.member, spender.tenant, "bench", MemberRole.ANALYST))
    grant = ledger.grants.grant_by_id(actor, spender.grant)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    deadline = start + seconds
    while (t0 := time.perf_counter()) < deadline:
        try:
            reservation = ledger.charges.reserve(actor, grant, "q" * 64, 1, COST_MICRO, 0)
            ledger.charges.settle(actor, reservation.charge_id, ChargeState.RELEASED, ANSWER)
        except Exception as exc:  # counted, never hidden: a run with errors is reported as such
            errors += 1
            print(f"  client error: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return {"charges": len(latencies), "elapsed": elapsed, "latencies": latencies, "errors": errors}


def _process_client(
    url: str, keys: str, spender: Spender, seconds: float, barrier: Any, results: Any
) -> None:
    # Warm up (imports, engine, migrations check) before the start line.
    db.connect(url).dispose()
    barrier.wait()
    results.put(_client_loop(url, keys, spender, seconds))


# -- the store under test -----------------------------------------------------------------------


def _seed(engine: Engine, keys: Path, clients: int, scenario: str) -> list[Spender]:
    """What each client spends from."""
    with engine.begin() as con:
        if con.execute(sqlalchemy.select(zones.c.id).where(zones.c.id == "bench")).first() is None:
            con.execute(
                zones.insert().values(
                    id="bench", kind="domain", title="bench", operator="bench", created_at=now()
                )
            )
            con.execute(
                datasets.insert().values(
                    id=DATASET, zone_id="bench", title="bench", created_at=now()
                )
            )

    setup = AuditLog.open(engine, keys)
    local = Actor.local()
    grants = Ledger(engine, setup).grants

    def tenant_with_grant() -> tuple[str, str]:
        tenant = tenants.create_tenant(engine, setup, local, "bench", "research", "public_welfare")
        grant = grants.create_grant(
            local,
            tenant,
            DATASET,
            Accounting.PURE,
            budget_micro=HUGE_BUDGET,
            delta_pico=0,
            per_query_cap_micro=COST_MICRO,
        )
        return tenant, grant

    pairs = []
    if scenario == "shared":
        tenant, grant = tenant_with_grant()
        for _ in range(clients):
            member, _ = members.create_member(
                engine, setup, local, tenant, "bench", MemberRole.ANALYST
            )
            pairs.append(Spender(grant, tenant, member))
    else:
        for _ in range(clients):
            tenant, grant = tenant_with_grant()
            member, _ = members.create_member(
                engine, setup, local, tenant, "bench", MemberRole.ANALYST
            )
            pairs.append(Spender(grant, tenant, member))
    return pairs


def _run(url: str, backend: str, mode: str, scenario: str, clients: int, seconds: float) -> Run:
    engine = db.connect(url)
    keys = tempfile.mkdtemp(prefix="veil-bench-keys-")
    pairs = _seed(engine, Path(keys), clients, scenario)
    outcomes: list[dict[str, Any]] = []
    if mode == "processes":
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(clients)
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_process_client, args=(url, keys, p, seconds, barrier, queue))
            for p in pairs
        ]
        for proc in procs:
            proc.start()
        outcomes = [queue.get(timeout=seconds + 120) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
    else:
        lock = threading.Lock()
        start_line = threading.Barrier(clients)

        def thread_client(spender: Spender) -> None:
            start_line.wait()
            outcome = _client_loop(url, keys, spender, seconds)
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=thread_client, args=(p,)) for p in pairs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    charges = sum(o["charges"] for o in outcomes)
    elapsed = max(o["elapsed"] for o in outcomes)
    latencies = sorted(x for o in outcomes for x in o["latencies"])
    consistent = True
    granted = {p.grant for p in pairs}
    for grant in granted:
        check = consistency(engine, grant)
        consistent &= check.ok
    counted = sum(consistency(engine, g).charged_micro for g in granted)
    consistent &= counted == charges * COST_MICRO
    engine.dispose()
    return Run(
        backend=backend,
        mode=mode,
        scenario=scenario,
        clients=clients,
        charges=charges,
        seconds=round(elapsed, 3),
        charges_per_s=round(charges / elapsed, 1),
        latency_p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
        latency_p95_ms=round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else 0.0,
        latency_max_ms=round(latencies[-1], 2) if latencies else 0.0,
        errors=sum(o["errors"] for o in outcomes),
        ledger_consistent=consistent,
    )


# -- backends -----------------------------------------------------------------------------------


def _filesystem(path: Path) -> str:
    best, fs = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mount, kind = parts[1], parts[2]
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, fs = mount, kind
    return fs


@contextmanager
def sqlite_store(work_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    directory = Path(tempfile.mkdtemp(prefix="veil-bench-sqlite-", dir=work_dir))
    try:
        info = {
            "sqlite_version": sqlite3.sqlite_version,
            "settings": "WAL, synchronous=FULL, BEGIN IMMEDIATE (sandbox.store.schema)",
            "filesystem": _filesystem(directory),
        }
        yield f"sqlite:///{directory / 'state.db'}", info
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _psycopg_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise SystemExit(f"not a PostgreSQL URL: {url}")


@contextmanager
def postgres_server(url: str | None) -> Iterator[tuple[str, bool]]:
    """(server URL, started here). Without ``url``, a throwaway durable server."""
    if url:
        yield _psycopg_url(url), False
        return
    env_file = Path(tempfile.mkstemp(prefix="veil-bench-pg-")[1])
    directory = ""
    try:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "start", str(env_file)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
        directory = values["VEIL_TEST_POSTGRES_DIR"]
        server = _psycopg_url(values["VEIL_TEST_POSTGRES_URL"])
        _restart_durable(Path(directory), server)
        yield server, True
    finally:
        if directory:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", directory], check=False
            )
        env_file.unlink(missing_ok=True)


def _restart_durable(directory: Path, server: str) -> None:
    """Restart a postgres.sh server with PostgreSQL's durable defaults.

    postgres.sh passes ``fsync=off``, ``synchronous_commit=off`` and ``full_page_writes=off`` on
    the command line, which outranks ``ALTER SYSTEM``; a restart with our own options drops them.
    """
    import glob
    import re

    port = re.search(r":(\d+)/", server)
    assert port is not None
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    pg_ctl = shutil.which("pg_ctl") or (bindirs[0] if bindirs else None)
    if pg_ctl is None:
        raise SystemExit("pg_ctl not found")
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port.group(1)} "
        f"-c unix_socket_directories={directory / 'run'} -c max_connections=50"
    )
    command = [pg_ctl, "-D", str(directory / "data"), "-w", "-t", "60", "-o", options]
    command += ["-l", str(directory / "run" / "server.log"), "restart"]
    if os.geteuid() == 0:  # postgres.sh runs the server as `postgres` when we are root
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def postgres_store(server: str) -> Iterator[tuple[str, dict[str, Any]]]:
    name = f"veil_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(text(f'CREATE DATABASE "{name}"'))
        info: dict[str, Any] = {
            "server_version": con.execute(text("SHOW server_version")).scalar_one(),
            "settings": {
                s: con.execute(text(f"SHOW {s}")).scalar_one()
                for s in ("fsync", "synchronous_commit", "full_page_writes", "max_connections")
            },
            "isolation": "READ COMMITTED (default); conditional UPDATE ... RETURNING",
        }
    base = server.rpartition("/")[0]
    try:
        yield f"{base}/{name}", info
    finally:
        with admin.connect() as con:
            con.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--modes", nargs="+", default=["processes", "threads"])
    parser.add_argument("--scenarios", nargs="+", default=["shared", "separate"])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--postgres-url", default=os.environ.get("VEIL_BENCH_POSTGRES_URL"))
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    runs: list[Run] = []
    backends: dict[str, Any] = {}
    load_before = os.getloadavg()

    def run_all(backend: str, url_factory: Any) -> None:
        for mode in args.modes:
            for scenario in args.scenarios:
                for clients in args.clients:
                    with url_factory() as (url, info):
                        backends[backend] = info
                        run = _run(url, backend, mode, scenario, clients, args.seconds)
                    runs.append(run)
                    print(
                        f"{backend:10} {mode:9} {scenario:8} clients={clients:2}: "
                        f"{run.charges_per_s:8.1f} charges/s  p50 {run.latency_p50_ms:6.2f} ms  "
                        f"p95 {run.latency_p95_ms:6.2f} ms  errors {run.errors}  "
                        f"consistent {run.ledger_consistent}",
                        flush=True,
                    )

    if "sqlite" in args.backends:
        run_all("sqlite", lambda: sqlite_store(args.work_dir))
    if "postgresql" in args.backends:
        with postgres_server(args.postgres_url) as (server, started_here):
            run_all("postgresql", lambda: postgres_store(server))
            settings = backends["postgresql"]["settings"]
            if started_here and "off" in (settings["fsync"], settings["synchronous_commit"]):
                raise SystemExit(f"the PostgreSQL server was not durable: {settings}")
            backends["postgresql"]["server"] = (
                "throwaway server from scripts/postgres.sh, durable settings"
                if started_here
                else "given by --postgres-url / VEIL_BENCH_POSTGRES_URL"
            )

    report = {
        "benchmark": "ledger throughput: charges per second (reserve + settle released)",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__,
            # other work on the machine skews the figures: the 1-minute load, before and after
            "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "seconds_per_run": args.seconds,
        "cost_per_charge_micro": COST_MICRO,
        "answer_bytes": len(ANSWER),
        "backends": backends,
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if any(r.errors or not r.ledger_consistent for r in runs):
        raise SystemExit("some runs had errors or an inconsistent ledger")


if __name__ == "__main__":
    main()
