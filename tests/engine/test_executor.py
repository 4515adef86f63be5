"""Workspaces and the locked-down executor, against real DuckDB and real worker processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.sink import build_workspace, table_schemas
from policies.errors import InvalidRequest
from sandbox.engine.executor import Executor, PoolState, _ReplyUnpickler
from sandbox.engine.limits import ExecutorLimits
from sandbox.engine.workspace import open_locked, verify_lockdown
from sandbox.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    LockdownError,
    ServiceUnavailable,
    WorkspaceMissing,
)

ROOT = Path(__file__).resolve().parents[2]
ROWS = 3000
SECRET = "secret-value-4711"
SLOW_JOIN = (
    "SELECT count(*) FROM range(100000) a, range(100000) b WHERE (a.range * b.range) % 7 = 3"
)

# Small but real limits: a 256 MB buffer pool under a 2 GiB address-space cap, so that
# single-allocation bombs fail at once, and a 1 s deadline (the engine interrupts at 1 s, the
# watchdog kills at 1.5 s).
LIMITS = ExecutorLimits(
    workers=2,
    threads=2,
    memory_limit="256MB",
    address_space_bytes=2 * 2**30,
    timeout_s=1.0,
    kill_grace_s=0.5,
    max_result_rows=1000,
)


def people(rows: int = ROWS) -> pa.Table:
    return pa.table(
        {
            "unit_id": pa.array(range(rows), pa.int64()),
            "region": pa.array([f"r{i % 3}" for i in range(rows)]),
            "amount": pa.array([Decimal(i % 100) / 4 for i in range(rows)], pa.decimal128(10, 2)),
            "born": pa.array([dt.date(1970, 1, 1) + dt.timedelta(days=i) for i in range(rows)]),
        }
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ws")
    pq.write_table(pa.table({"k": pa.array(range(10), pa.int32())}), root / "k.parquet")
    path = root / "v1.duckdb"
    build_workspace(path, {"people": people(), "keys": root / "k.parquet"})
    return path


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    with Executor(LIMITS, tmp_path_factory.mktemp("exec-tmp")) as ex:
        yield ex


def locked(
    path: Path | None, temp_dir: Path, max_execution_ms: int = 5000
) -> duckdb.DuckDBPyConnection:
    return open_locked(
        path,
        memory_limit="256MB",
        threads=1,
        temp_dir=temp_dir,
        max_execution_ms=max_execution_ms,
    )


# -- build_workspace / table_schemas ----------------------------------------------------------


def test_build_workspace_from_arrow_reader_and_parquet(tmp_path: Path) -> None:
    pq.write_table(people(50), tmp_path / "part-1.parquet")
    pq.write_table(people(70), tmp_path / "part-2.parquet")
    reader = pa.RecordBatchReader.from_batches(
        people(1).schema, people(40).to_batches(max_chunksize=7)
    )
    path = tmp_path / "data" / "v1.duckdb"

    counts = build_workspace(
        path,
        {"people": people(30), "streamed": reader, "parts": tmp_path / "part-*.parquet"},
    )

    assert counts == {"people": 30, "streamed": 40, "parts": 120}
    assert sorted(p.name for p in path.parent.iterdir()) == ["v1.duckdb"]  # no .tmp, no .wal
    columns = [
        ("unit_id", "BIGINT"),
        ("region", "VARCHAR"),
        ("amount", "DECIMAL(10,2)"),
        ("born", "DATE"),
    ]
    assert table_schemas(path) == {"people": columns, "streamed": columns, "parts": columns}


def test_rebuild_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "v.duckdb"
    build_workspace(path, {"t": pa.table({"x": [1, 2]})})
    assert build_workspace(path, {"u": pa.table({"y": ["a"]})}) == {"u": 1}
    assert table_schemas(path) == {"u": [("y", "VARCHAR")]}


@pytest.mark.parametrize("name", ["People", "1t", "t-x", 'x"; DROP', "", "a" * 64])
def test_bad_table_names_are_rejected_and_nothing_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidRequest):
        build_workspace(tmp_path / "v.duckdb", {name: pa.table({"x": [1]})})
    assert list(tmp_path.iterdir()) == []


def test_unreadable_source_leaves_no_file(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_text(f"not parquet {SECRET}")
    with pytest.raises(InvalidRequest) as err:
        build_workspace(tmp_path / "v.duckdb", {"t": tmp_path / "bad.parquet"})
    assert SECRET not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


# -- open_locked / verify_lockdown ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_parquet('{parquet}')",
        "SELECT * FROM '{parquet}'",
        "SELECT * FROM glob('{root}/*')",
        "COPY (SELECT 1) TO '{root}/out.csv'",
        "EXPORT DATABASE '{root}/export'",
        "ATTACH '{root}/other.duckdb' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET memory_limit = '8GB'",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "CREATE TABLE copy_of_people AS SELECT * FROM people",
        "INSERT INTO people (unit_id) VALUES (-1)",
        "SELECT * FROM sneaky_frame_variable",
    ],
)
def test_locked_connection_refuses(workspace: Path, tmp_path: Path, sql: str) -> None:
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1]}), parquet)
    sneaky_frame_variable = pa.table({"x": [1]})  # a replacement scan would expose this
    con = locked(workspace, tmp_path / "spill")
    try:
        cursor = con.cursor()
        with pytest.raises(duckdb.Error):
            cursor.execute(sql.format(parquet=parquet, root=tmp_path)).fetchall()
        assert cursor.execute("SELECT count(*) FROM people").fetchall() == [(ROWS,)]
    finally:
        con.close()
    assert not (tmp_path / "out.csv").exists()
    assert not (tmp_path / "other.duckdb").exists()
    del sneaky_frame_variable


def test_locked_cursors_inherit_the_deadline(tmp_path: Path) -> None:
    """A plain SET max_execution_time is connection-local in DuckDB 2.0: cursors must see it."""
    con = locked(None, tmp_path, max_execution_ms=200)
    try:
        with pytest.raises(duckdb.InterruptException):
            con.cursor().execute(SLOW_JOIN).fetchall()
    finally:
        con.close()


def test_verify_lockdown_refuses_an_open_connection() -> None:
    """The fail-closed self-test: a forbidden read that succeeds means "do not serve"."""
    con = duckdb.connect()
    try:
        with pytest.raises(LockdownError, match="forbidden read succeeded"):
            verify_lockdown(con)
    finally:
        con.close()


def test_verify_lockdown_refuses_an_unlocked_configuration() -> None:
    con = duckdb.connect()
    try:
        con.execute("SET enable_external_access = false")  # reads fail, but nothing is locked
        with pytest.raises(LockdownError, match="not locked"):
            verify_lockdown(con)
    finally:
        con.close()


def test_verify_lockdown_checks_expected_values(tmp_path: Path) -> None:
    con = locked(None, tmp_path)
    try:
        verify_lockdown(con, {"threads": 1, "max_execution_time": 5000})
        with pytest.raises(LockdownError, match="threads"):
            verify_lockdown(con, {"threads": 8})
        with pytest.raises(LockdownError, match="memory_limit"):
            verify_lockdown(con, {"memory_limit": 2 * 10**9})
    finally:
        con.close()


# -- Executor ---------------------------------------------------------------------------------


def test_runs_an_aggregate(executor: Executor, workspace: Path) -> None:
    rows = executor.run(
        workspace,
        "SELECT region, count(*), sum(amount), min(born), sum(unit_id)::HUGEINT "
        "FROM people WHERE unit_id >= ? GROUP BY region ORDER BY region",
        [0],
    )
    expected = people().to_pylist()
    for region, count, total, first_born, id_sum in rows:
        mine = [r for r in expected if r["region"] == region]
        assert count == len(mine)
        assert total == sum(r["amount"] for r in mine)
        assert first_born == min(r["born"] for r in mine)
        assert id_sum == sum(r["unit_id"] for r in mine) and isinstance(id_sum, int)
    assert [r[0] for r in rows] == ["r0", "r1", "r2"]
    assert executor.healthy()


def test_concurrent_runs_get_their_own_answers(executor: Executor, workspace: Path) -> None:
    def count_below(n: int) -> tuple[int, list[tuple[object, ...]]]:
        return n, executor.run(workspace, "SELECT count(*) FROM people WHERE unit_id < ?", [n])

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(count_below, range(0, 120)))
    assert all(rows == [(n,)] for n, rows in results)


def test_engine_error_never_carries_the_message(executor: Executor, workspace: Path) -> None:
    for sql in (
        f"SELECT error('{SECRET}')",
        f"SELECT CAST('{SECRET}' AS INTEGER)",
        "SELECT CAST(region || ? AS INTEGER) FROM people",
    ):
        with pytest.raises(ExecutionFailed) as err:
            executor.run(workspace, sql, [SECRET] if "?" in sql else [])
        assert err.value.detail == "the query failed in the engine"
        assert SECRET not in str(err.value) and SECRET not in repr(err.value.problem())
        assert err.value.__cause__ is None
    assert executor.run(workspace, "SELECT count(*) FROM keys") == [(10,)]


def test_engine_deadline_raises_timeout_and_keeps_the_worker(
    executor: Executor, workspace: Path
) -> None:
    pids = set(executor.worker_pids())
    with pytest.raises(ExecutionTimeout):
        executor.run(
            workspace,
            SLOW_JOIN,
        )
    assert set(executor.worker_pids()) == pids
    assert executor.run(workspace, "SELECT 1") == [(1,)]


def test_watchdog_kills_a_query_the_engine_cannot_interrupt(
    executor: Executor, workspace: Path
) -> None:
    """lpad ignores max_execution_time; only the SIGKILL watchdog stops it."""
    pids = set(executor.worker_pids())
    started = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        executor.run(workspace, "SELECT length(lpad('x', 500000000, 'y'))")
    assert time.monotonic() - started < 10
    assert set(executor.worker_pids()) != pids
    assert executor.healthy()
    assert executor.run(workspace, "SELECT count(*) FROM people") == [(ROWS,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT length(repeat('x', 3000000000))",
        "SELECT len(range(0, 300000000))",
        "SELECT sum(len(range(0, 30000000 + i))) FROM range(100) t(i)",
    ],
)
def test_memory_bombs_are_contained(executor: Executor, workspace: Path, sql: str) -> None:
    with pytest.raises((ExecutionFailed, ExecutionTimeout)):
        executor.run(workspace, sql)
    assert executor.run(workspace, "SELECT count(*) FROM people") == [(ROWS,)]
    assert executor.healthy()


def test_only_single_selects_run(executor: Executor, workspace: Path) -> None:
    for sql in (
        "CREATE TEMP TABLE t AS SELECT 42 AS x",
        "SET VARIABLE v = 42",
        "SELECT 1; SELECT 2",
        "PRAGMA database_size",
        f"COPY (SELECT 1) TO '{workspace.parent}/out.csv'",
    ):
        with pytest.raises(ExecutionFailed):
            executor.run(workspace, sql)
    assert not (workspace.parent / "out.csv").exists()


def test_a_repeated_statement_is_checked_and_bound_afresh(
    executor: Executor, workspace: Path
) -> None:
    """Workers keep the statements they parsed, per workspace: the same text again is still
    refused if it is not one SELECT, and binds its own parameters every time."""
    sql = "SELECT count(*) FROM people WHERE region = ?"
    for _ in range(3):
        with pytest.raises(ExecutionFailed):
            executor.run(workspace, "SELECT 1; SELECT 2")
        for region, expected in (("r0", ROWS // 3), ("r9", 0), ("r2", ROWS // 3)):
            assert executor.run(workspace, sql, [region]) == [(expected,)]
    assert executor.healthy()


def test_connection_state_does_not_leak_between_requests(tmp_path: Path, workspace: Path) -> None:
    """One worker, so the second request surely lands where the first ran."""
    reference = duckdb.connect()
    reference.execute("SELECT setseed(0.25)")
    seeded = reference.execute("SELECT random()").fetchall()
    reference.close()
    limits = ExecutorLimits(
        workers=1, memory_limit="256MB", address_space_bytes=2 * 2**30, timeout_s=5
    )
    with Executor(limits, tmp_path) as ex:
        assert ex.run(workspace, "SELECT setseed(0.25)") == [(None,)]
        assert ex.run(workspace, "SELECT random()") != seeded
        with pytest.raises(ExecutionFailed):
            ex.run(workspace, "CREATE TEMP TABLE leak AS SELECT 42 AS x")
        with pytest.raises(ExecutionFailed):
            ex.run(workspace, "SELECT * FROM leak")


def test_large_results_are_refused(executor: Executor, workspace: Path) -> None:
    with pytest.raises(ExecutionFailed):
        executor.run(workspace, "SELECT unit_id FROM people")
    assert len(executor.run(workspace, "SELECT unit_id FROM people LIMIT 1000")) == 1000


def test_missing_workspace(executor: Executor, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceMissing):
        executor.run(tmp_path / "nope.duckdb", "SELECT 1")


def test_a_broken_workspace_fails_the_query_not_the_pool(
    executor: Executor, tmp_path: Path, workspace: Path
) -> None:
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a database " * 1000)
    with pytest.raises(ExecutionFailed):
        executor.run(broken, "SELECT 1")
    assert executor.healthy()
    assert executor.run(workspace, "SELECT count(*) FROM keys") == [(10,)]


def test_result_values_cross_the_process_boundary(executor: Executor, workspace: Path) -> None:
    uid = "5f3c7a4e-1b2d-4c3e-9f8a-0123456789ab"
    rows = executor.run(
        workspace,
        "SELECT ?::UUID, INTERVAL 2 DAY, TIME '01:02:03', TIMESTAMP '2020-01-02 03:04:05', "
        "2.5::DECIMAL(5, 2), NULL, [1, 2], {'a': 'b'}, 'x'::BLOB, 'inf'::DOUBLE",
        [uid],
    )
    assert rows == [
        (
            UUID(uid),
            dt.timedelta(days=2),
            dt.time(1, 2, 3),
            dt.datetime(2020, 1, 2, 3, 4, 5),
            Decimal("2.50"),
            None,
            [1, 2],
            {"a": "b"},
            b"x",
            float("inf"),
        )
    ]


def test_replies_may_not_name_arbitrary_classes() -> None:
    """A subverted worker must not be able to run code in the parent through pickle."""
    for evil in (pickle.dumps(("ok", [(OrderedDict(),)])), pickle.dumps(("ok", os.getcwd))):
        with pytest.raises(pickle.UnpicklingError):
            _ReplyUnpickler(io.BytesIO(evil)).load()


def test_a_killed_worker_is_replaced(executor: Executor, workspace: Path) -> None:
    # Killed mid-query: the outcome is unknown, so the caller gets ExecutionFailed.
    before = set(executor.worker_pids())
    outcome: list[BaseException] = []

    def slow() -> None:
        try:
            executor.run(workspace, "SELECT length(lpad('x', 500000000, 'y'))")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    for pid in before:
        os.kill(pid, signal.SIGKILL)  # the busy worker and the idle one
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], ExecutionFailed)

    # Killed while idle: the request never reached it, so a replacement serves it.
    assert executor.run(workspace, "SELECT count(*) FROM keys") == [(10,)]
    assert executor.run(workspace, "SELECT 1") == [(1,)]
    assert before.isdisjoint(executor.worker_pids())
    assert executor.healthy()


def test_start_fails_closed_when_a_worker_cannot_pass_its_self_test(tmp_path: Path) -> None:
    # No worker can import the engine and prove its lockdown within a millisecond. (An earlier
    # version starved the self-test of address space with 2000 engine threads; whether that fails
    # depends on how the host accounts thread stacks, so it passed on some machines.)
    limits = ExecutorLimits(
        workers=1, memory_limit="64MB", address_space_bytes=2 * 2**30, start_timeout_s=0.001
    )
    ex = Executor(limits, tmp_path)
    with pytest.raises(LockdownError):
        ex.start()
    assert not ex.healthy()
    with pytest.raises(LockdownError):
        ex.run(Path(__file__), "SELECT 1")


def test_closed_executor_refuses(tmp_path: Path, workspace: Path) -> None:
    limits = ExecutorLimits(workers=1, memory_limit="256MB", address_space_bytes=2 * 2**30)
    ex = Executor(limits, tmp_path)
    with pytest.raises(ServiceUnavailable):
        ex.run(workspace, "SELECT 1")
    with ex:
        pids = ex.worker_pids()
        assert ex.healthy()
    assert not ex.healthy()
    with pytest.raises(ServiceUnavailable):
        ex.run(workspace, "SELECT 1")
    ex.close()  # idempotent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_exit_when_the_parent_dies(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from sandbox.engine.executor import Executor\n"
        "from sandbox.engine.limits import ExecutorLimits\n"
        "if __name__ == '__main__':\n"
        "    ex = Executor(ExecutorLimits(workers=2, memory_limit='256MB',\n"
        "                  address_space_bytes=2 * 2**30), Path(sys.argv[1]))\n"
        "    ex.start()\n"
        "    print(*ex.worker_pids(), flush=True)\n"
        "    time.sleep(60)\n"
    )
    (tmp_path / "parent.py").write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path / "t")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            if not _running(pid):
                alive.discard(pid)
        time.sleep(0.1)
    assert not alive


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (orphans are reaped by init eventually)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ExecutorLimits(memory_limit="4GB", address_space_bytes=4 * 2**30)
    with pytest.raises(ValueError):
        ExecutorLimits(workers=0)
    with pytest.raises(ValueError):
        ExecutorLimits(timeout_s=0)


def test_pool_state_counts_busy_workers_and_waiting_requests(
    executor: Executor, workspace: Path
) -> None:
    """What the metrics read (docs/operations.md): with both workers busy, a third request
    waits; all is idle again once they are done."""
    assert executor.pool() == PoolState(size=2, alive=2, busy=0, waiting=0)
    threads = [threading.Thread(target=_timed_out, args=(executor, workspace)) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    seen = executor.pool()
    while (seen.busy, seen.waiting) != (2, 1) and time.monotonic() < deadline:
        time.sleep(0.02)
        seen = executor.pool()
    assert (seen.busy, seen.waiting) == (2, 1)
    for thread in threads:
        thread.join(timeout=30)
    assert executor.pool() == PoolState(size=2, alive=2, busy=0, waiting=0)


def _timed_out(executor: Executor, workspace: Path) -> None:
    with contextlib.suppress(ExecutionTimeout):
        executor.run(workspace, SLOW_JOIN)
