"""The second line: what the locked-down engine does if the gate ever let a hostile query through.

The service never sends analyst text to the engine, so here the gate is bypassed on purpose: raw
hostile SQL goes (1) straight to a cursor of a workspace opened with ``open_locked`` and (2)
through ``Executor.run``, the way generated SQL goes. Each case also checks that the gate
refuses the same text, so every lockdown refusal below is a second line, not the only one.

``LOCKDOWN_BLOCKS``: the engine itself refuses (permission, locked configuration, read-only
database, unknown catalog entry, its own deadline). Through the executor the caller gets only a
coded error (``execution_failed`` / ``query_timeout``) with no engine text, path or value in it,
and the pool keeps serving.

``GATE_ONLY``: what the lockdown does **not** stop (see the lockdown note): the temp directory is
writable and readable, the workspace's own file is readable, metadata functions answer with
server paths and extremes, ``SUMMARIZE``/``DESCRIBE``/``SHOW`` parse as SELECT, dynamic SQL reads
the workspace, and an error under a secret condition is still an error. For these the test shows
the engine would run them, and which of them the executor's one-SELECT rule still refuses; the
rest depend on the gate alone, and the gate refuses every one of them.

``BOMBS``: resource bombs end in the address-space cap, the engine's deadline or the watchdog's
SIGKILL; the worker is replaced when it had to die, and the next query works.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from policies.errors import QueryRejected
from policies.gate import check, parse, plan
from policies.loader import load_policy
from sandbox.engine.executor import Executor
from sandbox.engine.limits import ExecutorLimits
from sandbox.engine.workspace import open_locked, workspace_temp_dir
from sandbox.errors import ExecutionFailed, ExecutionTimeout, VeilError
from tests.support.hostile import HOSTILE_ENGINE_WORDS, HostileTruth, HostileWorkspaces

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy(ROOT / "sandbox" / "demo" / "data" / "enterprise.toml")

# A 256 MB buffer pool under a 2 GiB address-space cap: single-allocation bombs fail at once. The
# engine interrupts at 1 s, the watchdog kills at 1.5 s.
LIMITS = ExecutorLimits(
    workers=2,
    threads=1,
    memory_limit="256MB",
    address_space_bytes=2 * 2**30,
    timeout_s=1.0,
    kill_grace_s=0.5,
    max_result_rows=1000,
)

PERMISSION = "PermissionException"  # "file system operations are disabled by configuration"
LOCKED = "InvalidInputException"  # "the configuration has been locked" / "read-only mode"
CATALOG = "CatalogException"
DEADLINE = "InterruptException"


def blocked(name: str, sql: str, *errors: str) -> Any:
    return pytest.param(sql, frozenset(errors), id=name)


LOCKDOWN_BLOCKS = [
    # files and URLs: every reader, replacement scans on paths, writers
    blocked("read_csv", "SELECT * FROM read_csv('/etc/passwd')", PERMISSION),
    blocked("read_csv_auto", "SELECT * FROM read_csv_auto('/etc/passwd')", PERMISSION),
    blocked("read_text", "SELECT * FROM read_text('/etc/passwd')", PERMISSION),
    blocked("read_blob", "SELECT * FROM read_blob('/etc/passwd')", PERMISSION),
    blocked("read_json", "SELECT * FROM read_json('/etc/passwd')", PERMISSION),
    blocked("read_json_auto", "SELECT * FROM read_json_auto('/etc/passwd')", PERMISSION),
    blocked("read_ndjson", "SELECT * FROM read_ndjson('/etc/passwd')", PERMISSION),
    blocked("read_parquet_other", "SELECT * FROM read_parquet('{other}')", PERMISSION),
    blocked("parquet_metadata_other", "SELECT * FROM parquet_metadata('{other}')", PERMISSION),
    blocked("sniff_csv", "SELECT * FROM sniff_csv('/etc/passwd')", PERMISSION),
    blocked("glob_root", "SELECT * FROM glob('/*')", PERMISSION),
    blocked("glob_workspaces", "SELECT * FROM glob('{root}/*')", PERMISSION),
    blocked("replacement_scan_csv", "SELECT * FROM '/etc/hosts.csv'", PERMISSION),
    blocked("replacement_scan_other", "SELECT * FROM '{other}'", PERMISSION),
    blocked("path_as_table", "SELECT * FROM '/etc/passwd'", CATALOG),
    blocked("url_https", "SELECT * FROM read_csv('https://example.com/x.csv')", PERMISSION),
    blocked("url_s3", "SELECT * FROM 's3://bucket/x.parquet'", PERMISSION),
    blocked("url_metadata", "SELECT * FROM 'http://169.254.169.254/latest/meta-data/'", CATALOG),
    blocked("other_temp_dir", "SELECT * FROM read_text('{tmp_other}/spill.csv')", PERMISSION),
    blocked("copy_to", "COPY (SELECT * FROM registry) TO '{out}/leak.csv'", PERMISSION),
    blocked("copy_from", "COPY registry FROM '/etc/passwd'", PERMISSION),
    blocked("export", "EXPORT DATABASE '{out}/export'", PERMISSION),
    blocked("import", "IMPORT DATABASE '{out}/export'", PERMISSION),
    # ATTACH and other workspaces
    blocked("attach_other", "ATTACH '{other}' AS other", PERMISSION),
    blocked("attach_other_read_only", "ATTACH '{other}' AS other (READ_ONLY)", PERMISSION),
    blocked("attach_new_file", "ATTACH '{out}/new.duckdb' AS n", PERMISSION),
    blocked("attach_memory", "ATTACH ':memory:' AS m", CATALOG),
    blocked("detach", "DETACH v1", "BinderException"),
    blocked("use_system", "USE system", CATALOG),
    # extensions and secrets
    blocked("install", "INSTALL httpfs", PERMISSION),
    blocked("force_install", "FORCE INSTALL httpfs", PERMISSION),
    blocked("load", "LOAD httpfs", PERMISSION),
    blocked("load_path", "LOAD '{out}/evil.duckdb_extension'", PERMISSION),
    blocked("update_extensions", "UPDATE EXTENSIONS", PERMISSION),
    blocked("create_secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", PERMISSION),
    # configuration
    blocked("set_memory_limit", "SET memory_limit = '100GB'", LOCKED),
    blocked("set_external_access", "SET GLOBAL enable_external_access = true", LOCKED),
    blocked("unlock", "SET lock_configuration = false", LOCKED),
    blocked("set_temp_directory", "SET temp_directory = '/tmp'", LOCKED),
    blocked("set_threads", "SET threads = 64", LOCKED),
    blocked("no_deadline", "SET max_execution_time = 0", LOCKED),
    blocked("reset_lock", "RESET lock_configuration", LOCKED),
    blocked("pragma_profiling", "PRAGMA enable_profiling", LOCKED),
    blocked("pragma_memory_limit", "PRAGMA memory_limit = '100GB'", LOCKED),
    # dynamic SQL cannot leave the lockdown either
    blocked(
        "query_reader", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", PERMISSION
    ),
    blocked("query_attach", "SELECT * FROM query('ATTACH ''{other}'' AS o')", "ParserException"),
    blocked(
        "query_table_reader", "SELECT * FROM query_table('read_text(''/etc/passwd'')')", CATALOG
    ),
    # writes to the read-only workspace
    blocked("create_table", "CREATE TABLE t AS SELECT * FROM registry", LOCKED),
    blocked("create_macro", "CREATE MACRO m(x) AS x", LOCKED),
    blocked("insert", "INSERT INTO registry (credit_code) VALUES ('x')", LOCKED),
    blocked("delete", "DELETE FROM registry", LOCKED),
    blocked("drop", "DROP TABLE registry", LOCKED),
    # resource bombs the engine's own deadline stops
    blocked("range_table", "SELECT count(*) FROM range(0, 1000000000000)", DEADLINE),
    blocked(
        "recursive_cte",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        DEADLINE,
    ),
    blocked("cross_join", "SELECT count(*) FROM tax a, tax b, tax c", DEADLINE),
]


def gate_only(name: str, sql: str, gate_rule: str, executor_refuses: bool) -> Any:
    return pytest.param(sql, gate_rule, executor_refuses, id=name)


GATE_ONLY = [
    gate_only(
        "temp_dir_copy", "COPY (SELECT * FROM registry) TO '{tmp}/leak.csv'", "not_select", True
    ),
    gate_only("temp_dir_export", "EXPORT DATABASE '{tmp}/export'", "syntax_error", True),
    gate_only(
        "temp_dir_read",
        "SELECT count(*) FROM read_csv('{tmp}/mine.csv')",
        "unsupported_function",
        False,
    ),
    gate_only(
        "own_file_bytes", "SELECT count(*) FROM read_blob('{ws}')", "unsupported_function", False
    ),
    gate_only("pragma_database_list", "PRAGMA database_list", "not_select", True),
    gate_only("call", "CALL pragma_version()", "not_select", True),
    gate_only("checkpoint", "CHECKPOINT", "not_select", True),
    gate_only("set_variable", "SET VARIABLE v = 42", "not_select", True),
    gate_only("prepare", "PREPARE p AS SELECT count(*) FROM registry", "not_select", True),
    gate_only("temp_table", "CREATE TEMP TABLE t AS SELECT * FROM registry", "not_select", True),
    gate_only("summarize", "SUMMARIZE registry", "not_select", False),
    gate_only("describe", "DESCRIBE registry", "not_select", False),
    gate_only("show_tables", "SHOW TABLES", "not_select", False),
    gate_only(
        "duckdb_settings",
        "SELECT value FROM duckdb_settings() WHERE name = 'temp_directory'",
        "unsupported_function",
        False,
    ),
    gate_only(
        "duckdb_databases", "SELECT path FROM duckdb_databases()", "unsupported_function", False
    ),
    gate_only(
        "current_setting",
        "SELECT current_setting('temp_directory') FROM registry",
        "unsupported_function",
        False,
    ),
    gate_only(
        "pragma_storage_info",
        "SELECT count(*) FROM pragma_storage_info('registry')",
        "unsupported_function",
        False,
    ),
    gate_only(
        "query_table", "SELECT count(*) FROM query_table('registry')", "unsupported_function", False
    ),
    gate_only(
        "query",
        "SELECT count(*) FROM query('SELECT name FROM registry')",
        "unsupported_function",
        False,
    ),
    gate_only("max", "SELECT max(registered_capital) FROM registry", "unsupported_function", False),
]

# Values the engine would echo in its message; the executor reports the error class only.
ECHOES = [
    pytest.param("SELECT error(name) FROM registry", id="error"),
    pytest.param("SELECT CAST(name AS INTEGER) FROM registry", id="cast"),
    pytest.param("SELECT strptime(name, '%Y') FROM registry", id="strptime"),
    pytest.param("SELECT CAST(name AS ENUM('x')) FROM registry", id="enum_cast"),
    pytest.param("SELECT CAST(registered_capital AS TINYINT) FROM registry", id="narrowing"),
    pytest.param(
        "SELECT 9223372036854775807 + CAST(registered_capital AS BIGINT) FROM registry",
        id="overflow",
    ),
]

# (sql, outcome): "deadline" (the engine interrupts, the worker stays), "killed" (the watchdog's
# SIGKILL, the worker is replaced), "contained" (the address-space cap or the deadline; either).
BOMBS = [
    pytest.param("SELECT length(repeat('x', 3000000000))", "contained", id="repeat"),
    pytest.param("SELECT len(range(0, 300000000))", "contained", id="range_list"),
    pytest.param("SELECT len(list_resize([1], 300000000))", "contained", id="list_resize"),
    pytest.param("SELECT length(lpad('x', 500000000, 'y'))", "killed", id="lpad"),
    pytest.param("SELECT count(*) FROM range(0, 1000000000000)", "deadline", id="range_table"),
    pytest.param(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "deadline",
        id="recursive_cte",
    ),
    pytest.param("SELECT count(*) FROM tax a, tax b, tax c", "deadline", id="cross_join"),
    pytest.param(
        "SELECT count(*) FROM registry "
        "WHERE CASE WHEN industry = 'finance' THEN length(repeat(name, 20000000)) > 0 END",
        "contained",
        id="timing_oracle_repeat",
    ),
]


@dataclass(frozen=True)
class Locked:
    """A locked workspace connection and the paths its cases aim at."""

    con: duckdb.DuckDBPyConnection
    paths: dict[str, str]
    out: Path

    def sql(self, template: str) -> str:
        return template.format(**self.paths)


def gate_rule(sql: str) -> str:
    with pytest.raises(QueryRejected) as info:
        plan(check(parse(sql), POLICY), POLICY)
    return info.value.rule


@pytest.fixture(scope="module")
def locked(
    hostile_workspaces: HostileWorkspaces, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Locked]:
    ws, other = hostile_workspaces.enterprise, hostile_workspaces.other
    root = tmp_path_factory.mktemp("hostile-locked").resolve()
    temp, temp_other = workspace_temp_dir(root, ws), workspace_temp_dir(root, other)
    for directory, name in ((temp, "mine.csv"), (temp_other, "spill.csv")):
        directory.mkdir(parents=True)
        (directory / name).write_text("a\n1\n")
    out = root / "out"
    out.mkdir()
    con = open_locked(ws, memory_limit="256MB", threads=1, temp_dir=temp, max_execution_ms=1000)
    paths = {
        "ws": str(ws),
        "other": str(other),
        "root": str(hostile_workspaces.root),
        "tmp": str(temp),
        "tmp_other": str(temp_other),
        "out": str(out),
    }
    try:
        yield Locked(con, paths, out)
    finally:
        con.close()


@pytest.fixture(scope="module")
def executor_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-exec").resolve()


@pytest.fixture(scope="module")
def executor(executor_root: Path) -> Iterator[Executor]:
    with Executor(LIMITS, executor_root) as pool:
        yield pool


def registry_rows(truth: HostileTruth) -> list[tuple[object, ...]]:
    return [(truth.tables["registry"].num_rows,)]


def assert_coded(exc: VeilError, truth: HostileTruth, *paths: str) -> None:
    """Only a stable code and a fixed sentence: no engine text, path or data value."""
    assert exc.error_code in ("execution_failed", "query_timeout")
    assert exc.__cause__ is None
    text = f"{exc} {exc!r} {exc.problem()!r}"
    for word in (*HOSTILE_ENGINE_WORDS, *truth.secrets(), *paths, "/etc/passwd"):
        assert word not in text, f"{word!r} in {text}"


def test_inventory() -> None:
    counts = {
        "lockdown_blocks": len(LOCKDOWN_BLOCKS),
        "gate_only": len(GATE_ONLY),
        "echoes": len(ECHOES),
        "bombs": len(BOMBS),
    }
    print("\nhostile SQL sent past the gate, per group:", counts)
    assert sum(counts.values()) >= 60


# --- (1) a locked workspace connection ---------------------------------------------------------


@pytest.mark.parametrize(("template", "errors"), LOCKDOWN_BLOCKS)
def test_lockdown_refuses(
    locked: Locked, hostile_truth: HostileTruth, template: str, errors: frozenset[str]
) -> None:
    sql = locked.sql(template)
    assert gate_rule(sql)  # the first line refuses it
    cursor = locked.con.cursor()
    try:
        with pytest.raises(duckdb.Error) as info:
            cursor.execute(sql).fetchall()
        assert type(info.value).__name__ in errors, f"{type(info.value).__name__}: {info.value}"
        assert cursor.execute("SELECT count(*) FROM registry").fetchall() == registry_rows(
            hostile_truth
        )
    finally:
        cursor.close()
    assert list(locked.out.iterdir()) == []  # nothing was written outside the temp directory


@pytest.mark.parametrize(("template", "rule", "executor_refuses"), GATE_ONLY)
def test_what_only_the_gate_stops(
    locked: Locked, template: str, rule: str, executor_refuses: bool
) -> None:
    """The locked engine runs these; the gate is what refuses them (and, for non-SELECT
    statements, the executor's one-SELECT rule as well: see the executor test below)."""
    sql = locked.sql(template)
    assert gate_rule(sql) == rule
    cursor = locked.con.cursor()
    try:
        cursor.execute(sql).fetchall()  # no lockdown error: this is not the lockdown's job
    finally:
        cursor.close()


# --- (2) through the executor, as generated SQL would go ---------------------------------------


def executor_temp_dir(root: Path, workspace: Path) -> str:
    """A temp directory an executor worker really uses for ``workspace``."""
    temps = sorted(root.glob(f"*/worker-*/{workspace_temp_dir(root, workspace).name}"))
    return str(temps[0] if temps else root)


@pytest.mark.parametrize(("template", "errors"), LOCKDOWN_BLOCKS)
def test_executor_returns_a_code_and_keeps_serving(
    executor: Executor,
    locked: Locked,
    hostile_workspaces: HostileWorkspaces,
    hostile_truth: HostileTruth,
    template: str,
    errors: frozenset[str],
) -> None:
    ws = hostile_workspaces.enterprise
    sql = locked.sql(template)
    with pytest.raises((ExecutionFailed, ExecutionTimeout)) as info:
        executor.run(ws, sql)
    if errors == {DEADLINE}:
        assert isinstance(info.value, ExecutionTimeout)
    assert_coded(info.value, hostile_truth, str(ws), str(hostile_workspaces.other))
    assert executor.run(ws, "SELECT count(*) FROM registry") == registry_rows(hostile_truth)
    assert executor.healthy()
    assert list(locked.out.iterdir()) == []


@pytest.mark.parametrize(("template", "rule", "executor_refuses"), GATE_ONLY)
def test_executor_one_select_rule(
    executor: Executor,
    locked: Locked,
    hostile_workspaces: HostileWorkspaces,
    hostile_truth: HostileTruth,
    executor_root: Path,
    template: str,
    rule: str,
    executor_refuses: bool,
) -> None:
    ws = hostile_workspaces.enterprise
    sql = template.format(**{**locked.paths, "tmp": executor_temp_dir(executor_root, ws)})
    if executor_refuses:
        with pytest.raises(ExecutionFailed) as info:
            executor.run(ws, sql)
        assert_coded(info.value, hostile_truth, str(ws))
    else:
        try:
            executor.run(ws, sql)  # a SELECT: the executor runs it, only the gate stops it
        except (ExecutionFailed, ExecutionTimeout) as exc:
            assert_coded(exc, hostile_truth, str(ws))
    assert executor.run(ws, "SELECT count(*) FROM registry") == registry_rows(hostile_truth)


@pytest.mark.parametrize("sql", ECHOES)
def test_engine_messages_never_come_back(
    executor: Executor,
    hostile_workspaces: HostileWorkspaces,
    hostile_truth: HostileTruth,
    sql: str,
) -> None:
    assert gate_rule(sql)
    with pytest.raises(ExecutionFailed) as info:
        executor.run(hostile_workspaces.enterprise, sql)
    assert info.value.detail == "the query failed in the engine"
    assert_coded(info.value, hostile_truth, str(hostile_workspaces.enterprise))


def test_error_oracle_is_an_error_only_when_the_secret_holds(
    executor: Executor, hostile_workspaces: HostileWorkspaces, hostile_truth: HostileTruth
) -> None:
    """Past the gate, an error under a secret condition would leak that condition (one bit per
    query): the engine cannot stop this, only the gate, which refuses both shapes."""
    ws = hostile_workspaces.enterprise
    oracle = "SELECT sum(CASE WHEN {cond} THEN 1//0 ELSE 0 END) FROM registry"
    holds, never = oracle.format(cond="industry = 'finance'"), oracle.format(cond="false")
    assert gate_rule(holds) == gate_rule(never) == "aggregate_argument"
    with pytest.raises(ExecutionFailed) as info:
        executor.run(ws, holds)
    assert_coded(info.value, hostile_truth, str(ws))
    assert executor.run(ws, never) == [(0,)]


# --- (3) resource bombs ------------------------------------------------------------------------


@pytest.mark.parametrize(("sql", "outcome"), BOMBS)
def test_bombs_are_contained_and_the_pool_recovers(
    executor: Executor,
    hostile_workspaces: HostileWorkspaces,
    hostile_truth: HostileTruth,
    sql: str,
    outcome: str,
) -> None:
    ws = hostile_workspaces.enterprise
    assert gate_rule(sql)
    pids = set(executor.worker_pids())
    started = time.monotonic()
    with pytest.raises((ExecutionFailed, ExecutionTimeout)) as info:
        executor.run(ws, sql)
    elapsed = time.monotonic() - started
    assert_coded(info.value, hostile_truth, str(ws))
    assert elapsed < 10, f"the bomb ran {elapsed:.1f} s"
    if outcome == "deadline":
        assert isinstance(info.value, ExecutionTimeout)
        assert set(executor.worker_pids()) == pids  # interrupted cleanly, the worker stays warm
    if outcome == "killed":
        assert isinstance(info.value, ExecutionTimeout)
        assert set(executor.worker_pids()) != pids  # SIGKILLed and replaced
    assert executor.healthy()
    assert len(executor.worker_pids()) == LIMITS.workers
    assert executor.run(ws, "SELECT count(*) FROM registry") == registry_rows(hostile_truth)


def test_pool_is_healthy_after_everything(
    executor: Executor, hostile_workspaces: HostileWorkspaces, hostile_truth: HostileTruth
) -> None:
    assert executor.healthy()
    ws = hostile_workspaces.enterprise
    for _ in range(2 * LIMITS.workers):  # every worker answers
        assert executor.run(ws, "SELECT count(*) FROM registry") == registry_rows(hostile_truth)


def test_nothing_was_left_behind(locked: Locked) -> None:
    assert list(locked.out.iterdir()) == []
    shutil.rmtree(Path(locked.paths["tmp"]) / "export", ignore_errors=True)
