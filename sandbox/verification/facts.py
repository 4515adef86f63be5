"""The facts index: every subject's template facts on one dataset version, computed ahead.

A single verification needs one subject's facts (a count, a sum) from a handful of rows, but a
template query costs 1.5–2.5 ms of engine binding and planning plus a worker round trip, most of
a single answer's time. A dataset version never changes once loaded, so the facts of every
subject on it can be computed once, in bulk, and an answer becomes a lookup.

How an index is built (on one background thread, through the locked-down executor like any
other template query):

1. the subjects that have a record in any of the dataset's tables, a page at a time
   (:func:`~policies.templates.batch.subjects_sql`), once per dataset version; more than
   ``max_subjects`` and the version is not indexed (its questions keep running one query each);
2. their facts with the template's own batch query
   (:func:`~policies.templates.batch.template_batch_sql`, the query a batch runs), a chunk of
   subjects at a time: the same SQL, so the same facts;
3. the facts of a subject with no record (the batch query for the decoy subject), which every
   subject not in the index gets.

A template whose SQL reads the claim (years of age, months of continuity) is indexed once per
allowed claim; a numeric claim that the SQL reads cannot be, so such a template is not indexed.

Facts are held as Arrow columns (integers in the narrowest type that holds them, sums as
16-byte decimals) beside one subject → position map per dataset version. An index is looked up
without a lock; until it is built, :meth:`FactsIndex.get` says so (``None``) and asks for the
build, and the caller runs the query. Indexing a version drops the indexes of the dataset's older
versions, and an older version is not indexed after a newer one. A build that fails (no worker
free in time, too many subjects) is tried again a minute later at the earliest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import pyarrow as pa

from policies.templates.batch import bind_batch, subjects_sql, template_batch_sql
from policies.templates.claims import Claim
from policies.templates.model import ClaimType, Template
from policies.templates.sql import Slot
from sandbox.catalog import DatasetVersion
from sandbox.engine.executor import Executor
from sandbox.errors import VeilError
from sandbox.vault.decrypted import Vault, leased

log = logging.getLogger(__name__)

ABSENT_SUBJECT: Final = "0" * 18  # never a subject: stands for "no record at all"
_PAGE: Final = 50_000  # subjects per page and per batch query (under the executor's row cap)
_RETRY_S: Final = 60.0  # a build that failed (or found too many subjects) is tried again after

Facts = tuple[object, ...]
IndexKey = tuple[str, int, str, int, Claim]  # template id, version, dataset, version, claim
_Universe = tuple[str, int]  # dataset, version


@dataclass(frozen=True)
class _Table:
    """One built index: facts by subject position, and the facts of a subject with none."""

    positions: Mapping[str, int]
    columns: tuple[pa.Array, ...]
    absent: Facts

    def get(self, subject: str) -> Facts:
        at = self.positions.get(subject)
        if at is None:
            return self.absent
        return tuple(column[at].as_py() for column in self.columns)


def claim_in_sql(template: Template, version: DatasetVersion) -> bool:
    """Whether ``template``'s query reads the claim (then the facts depend on it)."""
    return Slot.CLAIMS in template_batch_sql(template, version.policy)[1]


def index_claims(template: Template, version: DatasetVersion) -> list[Claim] | None:
    """The claims ``template`` is indexed under: ``[None]`` when its facts do not depend on the
    claim, each allowed claim when they do, or ``None``: not indexable."""
    if not claim_in_sql(template, version):
        return [None]
    if template.claim.type == ClaimType.CHOICE:
        return list(template.claim.choices)
    return None


class FactsIndex:
    """Facts indexes of one server process (see the module docstring). ``max_subjects`` 0
    turns indexing off."""

    def __init__(self, executor: Executor, vault: Vault | None, max_subjects: int) -> None:
        self.executor = executor
        self.vault = vault
        self.max_subjects = max_subjects
        self._tables: dict[IndexKey, _Table] = {}
        self._universes: dict[_Universe, dict[str, int]] = {}
        self._wanted: set[IndexKey] = set()  # queued or being built
        self._failed: dict[IndexKey, float] = {}  # not built: when (tried again _RETRY_S later)
        self._never: set[tuple[str, int, str, int]] = set()  # templates not indexable
        self._newest: dict[str, int] = {}  # dataset -> its newest version indexed
        self._too_big: set[_Universe] = set()
        self._claim_read: dict[tuple[str, int, str, int], bool] = {}  # see index_key
        self._lock = threading.Lock()
        self._todo: queue.SimpleQueue[tuple[Template, DatasetVersion, Claim] | None] = (
            queue.SimpleQueue()
        )
        self._builder: threading.Thread | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.max_subjects > 0

    def index_key(self, template: Template, version: DatasetVersion, claim: Claim) -> IndexKey:
        """The key of the index that answers ``template`` with ``claim`` on ``version``."""
        at = (template.id, template.version, version.dataset, version.version)
        reads = self._claim_read.get(at)
        if reads is None:
            reads = self._claim_read[at] = claim_in_sql(template, version)
        return (*at, claim if reads else None)

    def get(
        self, template: Template, version: DatasetVersion, subject: str, claim: Claim
    ) -> Facts | None:
        """``subject``'s facts, or ``None`` when the index is not built (its build is then
        queued, and the caller runs the template query)."""
        if not self.enabled:
            return None
        key = self.index_key(template, version, claim)
        table = self._tables.get(key)
        if table is not None:
            return table.get(subject)
        if key not in self._wanted and key[:4] not in self._never and not self._failing(key):
            self.want(template, version)
        return None

    def _failing(self, key: IndexKey) -> bool:
        failed = self._failed.get(key)
        return failed is not None and time.monotonic() - failed < _RETRY_S

    def state(self) -> Literal["off", "building", "ready"]:
        """``building`` while a build is queued or running."""
        if not self.enabled:
            return "off"
        return "building" if self._wanted else "ready"

    def sizes(self) -> tuple[int, int, int]:
        """Indexes built, queued or building, and failed (retried later): for metrics."""
        with self._lock:
            return len(self._tables), len(self._wanted), len(self._failed)

    def ready(self, template: Template, version: DatasetVersion) -> bool:
        """Whether every index of ``template`` on ``version`` is built."""
        claims = index_claims(template, version)
        return claims is not None and all(
            self.index_key(template, version, c) in self._tables for c in claims
        )

    def want(self, template: Template, version: DatasetVersion) -> None:
        """Queue the builds of ``template``'s indexes on ``version`` (those not built or
        queued yet)."""
        if not self.enabled or self._closed:
            return
        claims = index_claims(template, version)
        with self._lock:
            if claims is None:
                self._never.add((template.id, template.version, version.dataset, version.version))
                return
            if version.version < self._newest.get(version.dataset, 0):
                return  # an older version, asked for while the current one took over
            for claim in claims:
                key = self.index_key(template, version, claim)
                if key in self._tables or key in self._wanted or self._failing(key):
                    continue
                self._wanted.add(key)
                self._todo.put((template, version, claim))
            if self._builder is None:
                self._builder = threading.Thread(
                    target=self._build_all, name="veil-facts-index", daemon=True
                )
                self._builder.start()

    def warm(
        self, templates: Iterable[Template], current: Callable[[str], DatasetVersion | None]
    ) -> None:
        """Queue the builds of every template's indexes on its dataset's current version
        (``current`` finds it; ``None``: no version yet). They run in the background."""
        for template in templates:
            version = current(template.dataset)
            if version is not None:
                self.want(template, version)

    def close(self) -> None:
        """Stop building (the build in progress finishes first) and drop every index."""
        with self._lock:
            self._closed = True
            builder = self._builder
        self._todo.put(None)
        if builder is not None:
            builder.join(timeout=60)
        with self._lock:
            self._tables.clear()
            self._universes.clear()

    # -- building ----------------------------------------------------------------------------

    def _build_all(self) -> None:
        while True:
            job = self._todo.get()
            if job is None or self._closed:
                return
            template, version, claim = job
            key = self.index_key(template, version, claim)
            try:
                table = self._build(template, version, claim)
            except VeilError as exc:  # the executor's own typed errors: no engine message
                log.warning(
                    "facts index not built template=%s dataset=%s version=%s code=%s",
                    template.id,
                    version.dataset,
                    version.version,
                    exc.error_code,
                )
                table = None
            except Exception as exc:
                log.warning(
                    "facts index not built template=%s: %s", template.id, type(exc).__name__
                )
                table = None
            with self._lock:
                self._wanted.discard(key)
                if table is None:
                    self._failed[key] = time.monotonic()
                    continue
                self._failed.pop(key, None)
                dataset, number = key[2], key[3]
                self._newest[dataset] = max(number, self._newest.get(dataset, 0))
                for old in [k for k in self._tables if k[2] == dataset and k[3] < number]:
                    del self._tables[old]  # an older version of the dataset
                for gone in [u for u in self._universes if u[0] == dataset and u[1] < number]:
                    del self._universes[gone]
                self._tables[key] = table

    def _build(self, template: Template, version: DatasetVersion, claim: Claim) -> _Table | None:
        positions = self._universe(version)
        if positions is None:
            return None
        sql, params = template_batch_sql(template, version.policy)
        subjects = list(positions)
        columns: list[list[object]] | None = None
        with leased(self.vault, version) as workspace:
            for start in range(0, len(subjects), _PAGE):
                if self._closed:  # shutting down: not worth the rest of a large build
                    return None
                chunk = subjects[start : start + _PAGE]
                rows = self.executor.run(
                    workspace, sql, bind_batch(params, chunk, [claim] * len(chunk))
                )
                if len(rows) != len(chunk):
                    raise RuntimeError("the batch query returned the wrong number of rows")
                if columns is None:
                    columns = [[] for _ in rows[0][1:]] if rows else []
                for row in rows:
                    for values, value in zip(columns, row[1:], strict=True):
                        values.append(value)
            (absent,) = self.executor.run(
                workspace, sql, bind_batch(params, [ABSENT_SUBJECT], [claim])
            )
        arrays = tuple(_compact(values) for values in columns or [])
        return _Table(positions=positions, columns=arrays, absent=tuple(absent[1:]))

    def _universe(self, version: DatasetVersion) -> dict[str, int] | None:
        """Subject → position on ``version`` (shared by its templates); ``None`` past
        ``max_subjects``."""
        key: _Universe = (version.dataset, version.version)
        found = self._universes.get(key)
        if found is not None or key in self._too_big:
            return found
        sql = subjects_sql(version.policy)
        subjects: list[str] = []
        after = ""
        with leased(self.vault, version) as workspace:
            while True:
                page = self.executor.run(workspace, sql, [after, _PAGE])
                subjects += [str(row[0]) for row in page]
                if len(subjects) > self.max_subjects:
                    self._too_big.add(key)
                    log.info(
                        "facts index skipped dataset=%s version=%s: more than %d subjects",
                        version.dataset,
                        version.version,
                        self.max_subjects,
                    )
                    return None
                if len(page) < _PAGE:
                    break
                after = subjects[-1]
        if ABSENT_SUBJECT in subjects:
            raise RuntimeError("the absent-subject id is a real subject")
        positions = {subject: i for i, subject in enumerate(subjects)}
        with self._lock:
            self._universes[key] = positions
        return positions


def _compact(values: list[object]) -> pa.Array:
    """One fact column: integers in the narrowest signed type that holds them (counts of
    months or records take one or two bytes), anything else as Arrow infers it."""
    column = pa.array(values)
    if pa.types.is_integer(column.type) and len(column):
        low, high = min(values), max(values)  # type: ignore[type-var]
        for narrow in (pa.int8(), pa.int16(), pa.int32()):
            bits = narrow.bit_width - 1
            if -(2**bits) <= low and high < 2**bits:
                return column.cast(narrow)
    return column
