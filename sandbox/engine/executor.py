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
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sandbox.engine.limits import ExecutorLimits, Row
from sandbox.engine.worker import _LOCKDOWN_FAILED, _OK, _READY, _worker_main
from sandbox.errors import (
    ExecutionFailed,
    ExecutionTimeout,
    LockdownError,
    ServiceUnavailable,
    WorkspaceMissing,
)

log = logging.getLogger(__name__)
# What ``Executor.run`` raises only before a worker received the request: nothing ran, no data
# was read (the query flow gives such a query's reservation back).
NOT_DISPATCHED: Final = (WorkspaceMissing, ServiceUnavailable)
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


@dataclass(frozen=True)
class PoolState:
    """The worker pool at one moment (``Executor.pool``)."""

    size: int  # workers configured
    alive: int
    busy: int  # running a request (or being replaced)
    waiting: int  # requests waiting for a free worker


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
        self._waiting = 0  # threads waiting for a free worker (for metrics)

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

    def pool(self) -> PoolState:
        """The pool as it is now: workers configured, alive, busy, and requests waiting."""
        with self._lock:
            workers = list(self._workers.values())
            waiting = self._waiting
        alive = sum(1 for w in workers if w.process.is_alive())
        busy = max(0, len(workers) - self._idle.qsize())
        return PoolState(self._limits.workers, alive, min(busy, len(workers)), waiting)

    # -- running --------------------------------------------------------------------------------

    def run(self, workspace: Path, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one generated SELECT on ``workspace`` in a locked worker and return its rows.

        Raises ``ExecutionTimeout`` past the deadline, ``ExecutionFailed`` for an engine error or a
        dead worker, ``ServiceUnavailable`` when no worker frees up in time, ``LockdownError``
        once the pool can no longer prove its lockdown. None of them carries an engine message.
        ``WorkspaceMissing`` and ``ServiceUnavailable`` are raised only before the request
        reached a worker: nothing ran (the query flow gives such a query's reservation back).
        """
        if not workspace.is_file():
            raise WorkspaceMissing("the workspace to run on does not exist")
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
        with self._lock:
            self._waiting += 1
        try:
            worker = self._idle.get(timeout=self._limits.queue_timeout_s)
        except queue.Empty:
            raise ServiceUnavailable("no executor worker became free in time") from None
        finally:
            with self._lock:
                self._waiting -= 1
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
