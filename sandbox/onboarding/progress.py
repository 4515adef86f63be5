"""A running load's progress, written to its version row for ``GET …/versions/N`` to show.

:class:`ProgressWriter` sums the per-table progress the connectors report (rows, source bytes
read and in all, the table being read) and writes it at most every :data:`PROGRESS_EVERY_S`, on
its own short transactions; a write that fails is logged and dropped, never failing the load.
:func:`load_row` is the ``UPDATE`` of one load's row, which the outcome of the load uses too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

from sqlalchemy import Engine, Update, update

from connectors.base import Progress
from sandbox.clock import now
from sandbox.onboarding.model import PendingLoad
from sandbox.store.schema import version_loads

__all__ = ["PROGRESS_EVERY_S", "ProgressHook", "ProgressWriter", "load_row"]

log = logging.getLogger("veil.onboarding")

PROGRESS_EVERY_S: Final = 0.5

ProgressHook = Callable[[Progress], None]


def load_row(pending: PendingLoad) -> Update:
    """``UPDATE version_loads`` of this load's row (add ``.values(...)``)."""
    return update(version_loads).where(version_loads.c.id == pending.load)


class ProgressWriter:
    """Sums the per-table progress of a load and writes it to its version row, at most every
    PROGRESS_EVERY_S (and passes each update on to ``hook``, e.g. a progress bar)."""

    def __init__(self, engine: Engine, pending: PendingLoad, hook: ProgressHook | None) -> None:
        self.engine = engine
        self.pending = pending
        self.hook = hook
        self.tables: dict[str, Progress] = {}
        self.lock = threading.Lock()
        self.last = 0.0

    @property
    def rows(self) -> int:
        with self.lock:
            return sum(p.rows for p in self.tables.values())

    def __call__(self, progress: Progress) -> None:
        with self.lock:
            self.tables[progress.table] = progress
            moment = time.monotonic()
            due = moment - self.last >= PROGRESS_EVERY_S
            if due:
                self.last = moment
            rows = sum(p.rows for p in self.tables.values())
            read = [p.bytes_read for p in self.tables.values()]
            total = [p.bytes_total for p in self.tables.values()]
        if self.hook is not None:
            self.hook(progress)
        if not due:
            return
        try:
            with self.engine.begin() as con:
                con.execute(
                    load_row(self.pending).values(
                        rows_loaded=rows,
                        bytes_read=None if None in read else sum(r for r in read if r),
                        bytes_total=None if None in total else sum(t for t in total if t),
                        current_table=progress.table,
                        updated_at=now(),
                    )
                )
        except Exception as exc:  # progress is best effort: never fail a load over it
            log.warning("progress not recorded dataset=%s error=%s", self.pending.dataset,
                        type(exc).__name__)  # fmt: skip
