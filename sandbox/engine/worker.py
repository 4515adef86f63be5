"""The worker side of the executor: what runs in each spawned, locked-down process.

A worker opens workspaces only through :func:`sandbox.engine.workspace.open_locked`, proves its
lockdown before it reports ready, runs one statement at a time under the engine's own deadline
and a cap on its address space, and reports an engine error by its class name only (messages
can echo data values).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import shutil
import signal
import threading
import time
from collections import OrderedDict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Final

import duckdb

from sandbox.engine.limits import ExecutorLimits
from sandbox.engine.workspace import open_locked, workspace_temp_dir
from sandbox.errors import (
    LockdownError,
)

_READY: Final = "ready"
_LOCKDOWN_FAILED: Final = "lockdown_failed"
_OK: Final = "ok"
_ERROR: Final = "error"
# Parsed statements kept per workspace instance in a worker (the SQL texts seen most recently).
_STATEMENT_CACHE_SIZE: Final = 256
_MAX_CACHED_SQL_CHARS: Final = 64 * 1024


class _Refused(Exception):
    """The worker refused a request before or after running it; the worker itself is fine."""


class _StatementNotAllowed(_Refused):
    """The SQL is not exactly one SELECT (the executor runs generated aggregates only)."""


class _ResultTooLarge(_Refused):
    """The result exceeds the row or byte cap; results are meant to be small aggregates."""


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone, even in the middle of a query.

    A polling thread rather than PR_SET_PDEATHSIG: that signal fires when the parent *thread* that
    spawned us exits, and replacements are spawned from short-lived server threads.
    """
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(3)


class _Instance:
    """One locked workspace instance and the statements already parsed and checked on it.

    A template or a repeated query arrives as the same SQL text many times: keeping its parsed
    statement saves the parse and the one-SELECT check on every later request (the plan is still
    made per request, on a fresh cursor). The cache is bounded and dies with the instance.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, capacity: int) -> None:
        self.con = con
        self._capacity = capacity
        self._statements: OrderedDict[str, duckdb.Statement] = OrderedDict()

    def statement(self, sql: str) -> duckdb.Statement:
        """The parsed statement of ``sql``, which must be exactly one SELECT."""
        found = self._statements.get(sql)
        if found is not None:
            self._statements.move_to_end(sql)
            return found
        parsed = self.con.extract_statements(sql)
        if len(parsed) != 1 or parsed[0].type != duckdb.StatementType.SELECT:
            raise _StatementNotAllowed
        if len(sql) <= _MAX_CACHED_SQL_CHARS:
            self._statements[sql] = parsed[0]
            while len(self._statements) > self._capacity:
                self._statements.popitem(last=False)
        return parsed[0]


class _Connections:
    """Locked instances per workspace, least recently used evicted (each holds a buffer pool)."""

    def __init__(self, limits: ExecutorLimits, temp_dir: Path) -> None:
        self._limits = limits
        self._temp_dir = temp_dir
        self._open: OrderedDict[str, _Instance] = OrderedDict()

    def get(self, workspace: str) -> _Instance:
        found = self._open.get(workspace)
        if found is not None:
            self._open.move_to_end(workspace)
            return found
        while len(self._open) >= self._limits.connection_cache_size:
            old_path, old = self._open.popitem(last=False)
            self._close(old_path, old.con)
        con = open_locked(
            Path(workspace),
            memory_limit=self._limits.memory_limit,
            threads=self._limits.threads,
            temp_dir=workspace_temp_dir(self._temp_dir, Path(workspace)),
            max_execution_ms=self._limits.max_execution_ms,
            max_temp_bytes=self._limits.max_temp_bytes,
        )
        found = self._open[workspace] = _Instance(con, _STATEMENT_CACHE_SIZE)
        return found

    def _close(self, workspace: str, con: duckdb.DuckDBPyConnection) -> None:
        with contextlib.suppress(duckdb.Error):
            con.close()
        shutil.rmtree(workspace_temp_dir(self._temp_dir, Path(workspace)), ignore_errors=True)


def _execute(
    cons: _Connections, limits: ExecutorLimits, workspace: str, sql: str, params: list[object]
) -> bytes:
    """Run one request on a fresh cursor and return the pickled rows.

    The fresh cursor is what keeps requests apart: temp objects, variables, prepared statements
    and the random seed are connection-local in DuckDB. The parsed statement may come from the
    instance's cache; it is only a syntax tree, bound and planned anew on the fresh cursor.
    """
    instance = cons.get(workspace)
    statement = instance.statement(sql)
    cursor = instance.con.cursor()
    try:
        cursor.execute(statement, params)
        rows = cursor.fetchmany(limits.max_result_rows + 1)
    finally:
        cursor.close()
    if len(rows) > limits.max_result_rows:
        raise _ResultTooLarge
    payload = pickle.dumps((_OK, rows), protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > limits.max_result_bytes:
        raise _ResultTooLarge
    return payload


def _worker_main(conn: Connection, limits: ExecutorLimits, temp_dir: str, parent_pid: int) -> None:
    """Entry point of a worker: cap memory, prove the lockdown, then serve requests until EOF."""
    # Ctrl-C reaches the whole process group; shutdown is the parent's call, not the terminal's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    work_dir = Path(temp_dir)
    try:
        cap = limits.address_space_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        probe = open_locked(
            None,
            memory_limit=limits.memory_limit,
            threads=limits.threads,
            temp_dir=work_dir / "self-test",
            max_execution_ms=limits.max_execution_ms,
            max_temp_bytes=limits.max_temp_bytes,
        )
        probe.close()
    except LockdownError as exc:
        conn.send((_LOCKDOWN_FAILED, exc.detail))
        return
    except Exception as exc:
        conn.send((_LOCKDOWN_FAILED, f"the worker could not start ({type(exc).__name__})"))
        return
    conn.send((_READY, os.getpid()))

    cons = _Connections(limits, work_dir)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        workspace, sql, params = request
        recycle = False
        try:
            payload = _execute(cons, limits, workspace, sql, params)
        except LockdownError as exc:
            payload = pickle.dumps((_LOCKDOWN_FAILED, exc.detail))
            recycle = True
        except Exception as exc:
            # Reported by class name only. Fatal/internal engine errors, a MemoryError from the
            # address-space cap or anything unexpected leave this process in an unknown state:
            # answer, then exit so that the parent starts a clean replacement.
            recycle = not isinstance(exc, _Refused | duckdb.Error) or isinstance(
                exc, duckdb.FatalException | duckdb.InternalException
            )
            payload = pickle.dumps((_ERROR, type(exc).__name__, recycle))
        try:
            conn.send_bytes(payload)
        except (OSError, ValueError):
            return
        if recycle:
            return
