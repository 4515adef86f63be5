"""The locked-down executor: a pool of warm worker processes that run generated SQL on workspaces.

Why processes: DuckDB's ``memory_limit`` and ``max_execution_time`` do not bound a single scalar
call (``repeat``, ``lpad``, ``range`` …), so only an OS limit on the worker's address space plus a
SIGKILL watchdog in the parent contains every case. Why warm: a start with its self-test costs
~0.3-0.5 s.
Why ``spawn``: the parent is a threaded web server, and forking a threaded process is unsafe.

Nothing that comes back from a worker carries an engine message: an engine error is reported by
its exception class name only (messages can echo data values).
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import pickle
import queue
import resource
import shutil
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import duckdb

from sandbox.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    LockdownError,
    NotFound,
    ServiceUnavailable,
)
from sandbox.workspace import open_locked, parse_size, workspace_temp_dir

__all__ = ["Executor", "ExecutorLimits"]

log = logging.getLogger(__name__)

Row = tuple[object, ...]

# Address space (RLIMIT_AS), measured on this host (Linux x86_64, DuckDB 2.0.0, Python 3.11, the
# worker imports duckdb + pyarrow), threads=2:
# - an idle worker with one open instance has ~0.8-1.1 GiB of virtual memory (thread stacks,
#   allocator arenas); DuckDB itself runs even under a 0.5 GiB cap for trivial queries;
# - memory_limit=2GB, 20M-row workspace, window + group-by that spills: peak 3.2-3.7 GiB virtual;
#   it fails with OutOfMemoryException under a 3 GiB cap and passes at 4 GiB. A 100M-row sort
#   peaks at 3.6 GiB under a 4 GiB cap. 8 threads need ~1.5 GiB more. So the floor is roughly
#   memory_limit + 1.5 GiB + 0.25 GiB per thread; each cached idle instance adds a little more.
# - bombs: under a 4 GiB cap repeat('x', 3e9), range(0, 3e8) and list_resize fail at once (they
#   ask for one 4 GiB block); under 6-8 GiB they succeed after 5-40 s. lpad('x', 2e9, 'y') ran
#   20-87 s at every cap, ignoring max_execution_time: only the watchdog stops it.
# The default below (memory_limit 2GB, 6 GiB cap) leaves room for legitimate spilling queries and
# bounds a bomb to 6 GiB per worker; size workers x address_space_bytes to fit the host's RAM.
_MIN_HEADROOM: Final = 2**30  # a sanity floor only; heavy queries need the margin measured above

_READY: Final = "ready"
_LOCKDOWN_FAILED: Final = "lockdown_failed"
_OK: Final = "ok"
_ERROR: Final = "error"
# Parsed statements kept per workspace instance in a worker (the SQL texts seen most recently).
_STATEMENT_CACHE_SIZE: Final = 256
_MAX_CACHED_SQL_CHARS: Final = 64 * 1024


@dataclass(frozen=True)
class ExecutorLimits:
    """Resource limits of the pool and of each worker (see the RLIMIT_AS finding above)."""

    workers: int = 2
    threads: int = 2
    memory_limit: str = "2GB"
    address_space_bytes: int = 6 * 2**30
    timeout_s: float = 30.0
    # The engine gets ``timeout_s`` as its own deadline (a clean InterruptException, worker stays
    # warm); the parent kills the worker only if it is still silent ``kill_grace_s`` later.
    kill_grace_s: float = 1.0
    max_temp_bytes: int = 8 * 2**30
    queue_timeout_s: float = 10.0
    start_timeout_s: float = 60.0
    connection_cache_size: int = 8
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads < 1 or self.connection_cache_size < 1:
            raise ValueError("workers, threads and connection_cache_size must be at least 1")
        if min(self.timeout_s, self.kill_grace_s, self.queue_timeout_s, self.start_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_result_rows < 1 or self.max_result_bytes < 1 or self.max_temp_bytes < 0:
            raise ValueError("result and temp limits must be positive")
        if self.address_space_bytes < parse_size(self.memory_limit) + _MIN_HEADROOM:
            raise ValueError("address_space_bytes must exceed memory_limit by at least 1 GiB")

    @property
    def max_execution_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))


# --------------------------------------------------------------------------------------------
# Worker side (runs in the spawned process)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

# The only classes a worker's reply may contain besides builtins (what DuckDB's fetchall yields).
# A worker runs the engine; if it were ever subverted, an open unpickler would let it run code in
# the parent.
_REPLY_CLASSES: Final = frozenset(
    {
        ("decimal", "Decimal"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("uuid", "UUID"),
        ("uuid", "SafeUUID"),
    }
)


class _ReplyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _REPLY_CLASSES:
            raise pickle.UnpicklingError("a worker reply holds a class that is not allowed")
        return super().find_class(module, name)


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    conn: Connection


class Executor:
    """A fixed pool of warm, locked-down worker processes; ``run`` is safe from many threads.

    Each worker is owned by exactly one thread between taking it from the idle queue and putting
    it (or its replacement) back, so a worker never sees two requests at once.
    """

    def __init__(self, limits: ExecutorLimits, temp_root: Path) -> None:
        self._limits = limits
        # Several server processes may share one data directory: each executor works in its own
        # subdirectory, so one never wipes another's spill files. Absolute, since DuckDB's
        # allowed_directories is checked against it.
        self._temp_root = temp_root.resolve() / f"executor-{os.getpid()}-{id(self):x}"
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._workers: dict[int, _Worker] = {}
        self._started = False
        self._closed = False
        self._failure: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn all workers and wait for each self-test; any failure means Veil must not serve."""
        with self._lock:
            if self._started:
                raise RuntimeError("the executor was already started")
            self._started = True
        self._temp_root.mkdir(parents=True, exist_ok=True)
        pending: list[_Worker] = []
        try:
            for slot in range(self._limits.workers):
                pending.append(self._spawn(slot))
            deadline = time.monotonic() + self._limits.start_timeout_s
            for worker in pending:
                self._await_ready(worker, deadline)
        except BaseException as exc:
            with self._lock:
                self._closed = True
                if isinstance(exc, LockdownError):
                    self._failure = exc.detail
            for worker in pending:
                self._stop(worker)
            raise
        with self._lock:
            for worker in pending:
                self._workers[worker.slot] = worker
                self._idle.put(worker)
        log.info("executor started with %d workers", len(pending))

    def close(self) -> None:
        """Stop every worker (a request still in flight fails with ``ExecutionFailed``).

        Idempotent. Workers get a shutdown message and a short grace before SIGKILL.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers.values())
            self._workers.clear()
        self._idle.put(None)  # wakes threads waiting for a worker; each passes it on
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in workers:
            self._stop(worker, grace_s=1.0)
        shutil.rmtree(self._temp_root, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def healthy(self) -> bool:
        """True when started, not closed, every self-test passed and every worker is alive."""
        with self._lock:
            return (
                self._started
                and not self._closed
                and self._failure is None
                and len(self._workers) == self._limits.workers
                and all(w.process.is_alive() for w in self._workers.values())
            )

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for metrics and operational tooling)."""
        with self._lock:
            return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    # -- running --------------------------------------------------------------------------------

    def run(self, workspace: Path, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one generated SELECT on ``workspace`` in a locked worker and return its rows.

        Raises ``ExecutionTimeout`` past the deadline, ``ExecutionFailed`` for an engine error or a
        dead worker, ``ServiceUnavailable`` when no worker frees up in time, ``LockdownError``
        once the pool can no longer prove its lockdown. None of them carries an engine message.
        """
        if not workspace.is_file():
            raise NotFound("the workspace does not exist")
        request = pickle.dumps(
            (str(workspace.resolve()), sql, list(params)), protocol=pickle.HIGHEST_PROTOCOL
        )
        worker = self._acquire()
        if not worker.process.is_alive():
            # Died while idle (killed from outside): nothing ran, so a fresh worker may serve.
            replacement = self._replace(worker, reason="found dead while idle")
            if replacement is None:
                self._check_serving()
                raise ServiceUnavailable("no executor worker is available")
            worker = replacement
        return self._dispatch(worker, request)

    def _acquire(self) -> _Worker:
        self._check_serving()
        try:
            worker = self._idle.get(timeout=self._limits.queue_timeout_s)
        except queue.Empty:
            raise ServiceUnavailable("no executor worker became free in time") from None
        if worker is None:
            self._idle.put(None)
            raise ServiceUnavailable("the executor is closed")
        return worker

    def _check_serving(self) -> None:
        with self._lock:
            if self._failure is not None:
                raise LockdownError(self._failure)
            if not self._started or self._closed:
                raise ServiceUnavailable("the executor is not running")

    def _dispatch(self, worker: _Worker, request: bytes) -> list[Row]:
        """Send one request and wait for the reply; this thread owns ``worker`` throughout."""
        try:
            worker.conn.send_bytes(request)
            if not worker.conn.poll(self._limits.timeout_s + self._limits.kill_grace_s):
                self._recover(worker, reason="timed out")
                raise ExecutionTimeout("the query ran past its deadline and was stopped")
            reply = _ReplyUnpickler(io.BytesIO(worker.conn.recv_bytes())).load()
        except (EOFError, OSError):
            self._recover(worker, reason="died during a query")
            raise ExecutionFailed("the executor worker died while running the query") from None
        except pickle.UnpicklingError:
            self._recover(worker, reason="sent a reply that is not allowed")
            raise ExecutionFailed("the query result has a type that is not supported") from None

        if reply[0] == _OK:
            self._release(worker)
            rows: list[Row] = reply[1]
            return rows
        if reply[0] == _LOCKDOWN_FAILED:
            self._fail(str(reply[1]))
            self._stop(worker)
            raise LockdownError(str(reply[1]))
        error_class, recycle = str(reply[1]), bool(reply[2])
        log.warning("query failed in the executor worker: %s", error_class)
        if recycle:
            self._recover(worker, reason=f"recycled after {error_class}")
        else:
            self._release(worker)
        if error_class == "InterruptException":  # the engine's own max_execution_time
            raise ExecutionTimeout("the query ran past its deadline and was interrupted")
        raise ExecutionFailed("the query failed in the engine")

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            closed = self._closed
        if closed:
            self._stop(worker)
        else:
            self._idle.put(worker)

    def _recover(self, worker: _Worker, *, reason: str) -> None:
        """Replace a worker that failed a request and put the replacement into service."""
        replacement = self._replace(worker, reason=reason)
        if replacement is not None:
            self._idle.put(replacement)

    # -- worker management ----------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_end, self._limits, str(self._temp_root / f"worker-{slot}"), os.getpid()),
            name=f"veil-executor-{slot}",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Worker(slot=slot, process=process, conn=parent_end)

    def _await_ready(self, worker: _Worker, deadline: float) -> None:
        """Wait for the worker's self-test verdict; anything but "ready" is a lockdown failure."""
        remaining = max(0.0, deadline - time.monotonic())
        try:
            if not worker.conn.poll(remaining):
                raise LockdownError("an executor worker did not finish its self-test in time")
            message = _ReplyUnpickler(io.BytesIO(worker.conn.recv_bytes())).load()
        except (EOFError, OSError, pickle.UnpicklingError):
            raise LockdownError("an executor worker died during its self-test") from None
        if message[0] != _READY:
            raise LockdownError(str(message[1]))

    def _replace(self, old: _Worker, *, reason: str) -> _Worker | None:
        """SIGKILL ``old`` and start a self-tested worker in its slot; None if that fails.

        Runs in the calling request thread, which keeps the pool at its size without a manager
        thread. A replacement that fails its self-test stops the whole pool (fail closed).
        """
        log.warning("replacing executor worker %d: %s", old.slot, reason)
        self._stop(old)
        with self._lock:
            if self._closed:
                return None
            self._workers.pop(old.slot, None)
        new = self._spawn(old.slot)
        try:
            self._await_ready(new, time.monotonic() + self._limits.start_timeout_s)
        except LockdownError as exc:
            self._stop(new)
            self._fail(exc.detail)
            return None
        with self._lock:
            if not self._closed:
                self._workers[new.slot] = new
                return new
        self._stop(new)
        return None

    def _fail(self, detail: str) -> None:
        log.error("executor lockdown failure, refusing to serve: %s", detail)
        with self._lock:
            if self._failure is None:
                self._failure = detail

    @staticmethod
    def _stop(worker: _Worker, grace_s: float = 0.0) -> None:
        """Make sure the process is gone (SIGKILL after ``grace_s``) and its pipe is closed."""
        process = worker.process
        if grace_s > 0:
            process.join(timeout=grace_s)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        with contextlib.suppress(OSError):
            worker.conn.close()
