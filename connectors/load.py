"""Load a dataset version: sources -> Arrow -> a workspace file, with its quality report.

:func:`ingest` is the whole onboarding step for one version. It checks the size against the disk
quota before reading anything, streams every table through its connector into a new DuckDB file
(``connectors.sink.build_workspace``; local Parquet that needs no conversion is read by DuckDB
directly), profiles what was written, applies the quality rules and only then moves the file to
``workspace``. Every streamed table passes the load's guard, which makes the policy's
missing-value codes NULL (:mod:`connectors.missing`), counts them, and counts the bytes read
against the quota. On any failure — a bad source, a failed rule — nothing exists at
``workspace`` that was not there before, and the raised ``SourceError`` carries the quality
report of the failed load in its ``report`` attribute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.base import Connector, ProgressCallback, Scannable
from connectors.connect import connect
from connectors.errors import (
    InvalidSource,
    QualityRuleFailed,
    SourceError,
    SourceTooLarge,
    TypeConversion,
)
from connectors.missing import apply_missing, missing_codes
from connectors.quality.profile import profile_workspace
from connectors.quality.report import ColumnQuality, QualityReport, TableQuality
from connectors.quality.rules import QualityRules, evaluate_rules
from connectors.sink import ParquetScan, TableSource, build_workspace
from connectors.source import SourceSpec, parse_source
from policies.errors import VeilError
from policies.model import Policy, Table

__all__ = ["Source", "ingest", "sources_for"]

Source = str | SourceSpec | Connector


def sources_for(policy: Policy, source: Source | Mapping[str, Source]) -> dict[str, Connector]:
    """One connector per policy table.

    A single source serves a one-table policy; for several tables it must contain ``{table}``
    (``data/{table}.parquet``, ``postgresql://…?table=raw.{table}``), or be a PostgreSQL URL with
    neither ``table`` nor ``query`` (each table is read from the table of its own name). Or give a
    mapping from every table name to its source.
    """
    names = [t.name for t in policy.tables]
    if isinstance(source, Mapping):
        missing = [n for n in names if n not in source]
        if missing:
            raise InvalidSource(f"no source for table {missing[0]}")
        unknown = [n for n in source if n not in names]
        if unknown:
            raise InvalidSource(f"the policy has no table {str(unknown[0])[:64]}")
        return {n: _connector(source[n]) for n in names}
    if isinstance(source, str):
        source = parse_source(source)
    if isinstance(source, SourceSpec):
        spec = source
        if spec.has_placeholder:
            return {n: connect(spec.for_table(n)) for n in names}
        if len(names) == 1:
            return {names[0]: connect(spec)}
        if spec.kind == "postgresql" and not {"query", "table"} & set(spec.options):
            return {
                n: connect(SourceSpec(spec.kind, spec.location, {**spec.options, "table": n}))
                for n in names
            }
        raise InvalidSource(
            f"the dataset has {len(names)} tables: put {{table}} in the source, or give one "
            "source per table"
        )
    if len(names) != 1:
        raise InvalidSource(f"the dataset has {len(names)} tables: give one source per table")
    return {names[0]: source}


def _connector(source: Source) -> Connector:
    return source if isinstance(source, Connector) else connect(source)


@dataclass
class _Stream:
    """What passed through one table's reader, and the error that stopped it."""

    table: str
    rows: int = 0
    arrow_bytes: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)  # values made NULL by missing codes
    error: BaseException | None = None


def _guard(
    reader: pa.RecordBatchReader, stream: _Stream, quota: int | None, source: str, table: Table
) -> pa.RecordBatchReader:
    codes = missing_codes(table)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                if codes:
                    batch = apply_missing(batch, codes, stream.missing)
                stream.rows += batch.num_rows
                stream.arrow_bytes += batch.nbytes
                for name, column in zip(batch.schema.names, batch.columns, strict=True):
                    stream.nulls[name] = stream.nulls.get(name, 0) + column.null_count
                if quota is not None and stream.arrow_bytes > quota:
                    raise SourceTooLarge(
                        "the data read exceed the disk quota", source=source, quota_bytes=quota
                    )
                yield batch
        except BaseException as exc:
            if stream.error is None:
                stream.error = exc
            raise
        finally:
            with contextlib.suppress(Exception):
                reader.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _failed_report(
    policy: Policy,
    source: str,
    streams: Mapping[str, _Stream],
    error: VeilError,
    failed_table: str | None,
    now: datetime,
) -> QualityReport:
    failures: dict[str, int] = {}
    if isinstance(error, TypeConversion):
        failures = dict(error.extra.get("failures", {}))
    tables = []
    for table in policy.tables:
        stream = streams.get(table.name)
        if stream is None or (stream.rows == 0 and stream.error is None):
            continue
        own = failures if table.name == failed_table else {}
        columns = []
        for col in table.columns:
            nulls = max(0, stream.nulls.get(col.name, 0) - own.get(col.name, 0))
            columns.append(
                ColumnQuality(
                    name=col.name,
                    type=col.type.value,
                    role=col.role.value,
                    nulls=nulls,
                    null_rate=nulls / stream.rows if stream.rows else 0.0,
                    conversion_failures=own.get(col.name, 0),
                    missing_codes=stream.missing.get(col.name, 0),
                )
            )
        tables.append(TableQuality(name=table.name, rows=stream.rows, columns=tuple(columns)))
    problem = error.problem()
    problem.pop("type", None)
    return QualityReport(
        dataset=policy.dataset,
        source=source,
        created_at=now,
        tables=tuple(tables),
        error=problem,
    )


def ingest(
    policy: Policy,
    source: Source | Mapping[str, Source],
    workspace: Path,
    *,
    rules: QualityRules | None = None,
    quota_bytes: int | None = None,
    previous_rows: Mapping[str, int] | None = None,
    on_progress: ProgressCallback | None = None,
    now: datetime | None = None,
    cluster_by: str | None = None,
) -> QualityReport:
    """Load ``source`` for ``policy`` into a new workspace file at ``workspace``; return its report.

    ``quota_bytes`` caps the source size (checked before reading when the source knows its size,
    and on the Arrow bytes read when it does not, e.g. a PostgreSQL query). ``previous_rows`` are
    the row counts of the version this one replaces (for the row-count change). ``cluster_by``
    (default: the policy's ``[storage] cluster_by``) stores every table that has that column
    sorted by it. Raises a ``SourceError`` (``QualityRuleFailed`` for a failed rule) with
    ``report`` set; ``workspace`` is then untouched.

    Local Parquet files whose columns need no value-by-value conversion are read by DuckDB
    itself, in parallel (:meth:`connectors.files.connector.FileConnector.scan`); everything
    else streams through Arrow with strict conversion. If DuckDB cannot read such files, the
    table is read again through Arrow, which names the file and row at fault (or loads it).
    """
    now = now or datetime.now(UTC)
    rules = rules or QualityRules()
    cluster_by = cluster_by or policy.cluster_by
    connectors = sources_for(policy, source)
    names = sorted({c.name for c in connectors.values()})
    source_name = names[0] if len(names) == 1 else ", ".join(names)
    streams: dict[str, _Stream] = {}
    failed_table: str | None = None
    try:
        sizes = _check_size(connectors, quota_bytes, workspace)
        staging = workspace.with_name(workspace.name + ".loading")
        # tables that may take the fast path: not those whose missing codes the stream maps
        direct = {t.name for t in policy.tables if not t.missing_codes}
        while True:
            streams.clear()
            tables: dict[str, TableSource] = {}
            try:
                for table in policy.tables:
                    failed_table = table.name
                    tables[table.name] = _open(
                        connectors[table.name],
                        table,
                        table.name in direct,
                        streams,
                        quota_bytes if sizes[table.name] is None else None,
                        on_progress,
                    )
            except BaseException:
                _close(tables)
                raise
            failed_table = None
            try:
                build_workspace(staging, tables, cluster_by=cluster_by)
                break
            except BaseException as exc:
                _close(tables)
                failed = next((s for s in streams.values() if isinstance(s.error, VeilError)), None)
                if failed is not None and failed.error is not None:
                    failed_table = failed.table
                    raise failed.error from None
                retry = exc.extra.get("table") if isinstance(exc, VeilError) else None
                if retry in direct and isinstance(tables.get(str(retry)), ParquetScan):
                    direct.discard(str(retry))
                    continue
                raise exc
        try:
            profiled = profile_workspace(
                staging,
                policy,
                previous_rows=previous_rows,
                missing_codes={name: s.missing for name, s in streams.items()},
                now=now,
            )
            results = evaluate_rules(policy, profiled, rules)
            report = QualityReport(
                dataset=policy.dataset,
                source=source_name,
                created_at=now,
                tables=profiled,
                rules=results,
            )
            if not report.passed:
                first = report.failed_rules[0]
                where = f"{first.table}.{first.column}" if first.column else first.table
                failure = QualityRuleFailed(
                    f"quality rule {first.rule} failed for {where}: {first.message}",
                    column=first.column,
                    rule=first.rule,
                    table=first.table,
                    failed_rules=[r.to_dict() for r in report.failed_rules],
                )
                failure.report = report
                raise failure
            os.replace(staging, workspace)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return report
    except SourceError as exc:
        if exc.report is None:
            exc.report = _failed_report(policy, source_name, streams, exc, failed_table, now)
        raise


def _open(
    conn: Connector,
    table: Table,
    fast: bool,
    streams: dict[str, _Stream],
    quota: int | None,
    on_progress: ProgressCallback | None,
) -> TableSource:
    """What the workspace build reads for one table: a direct scan when the connector offers
    one (and ``fast``), else its Arrow stream behind the quota guard."""
    if fast and isinstance(conn, Scannable):
        scan = conn.scan(table, on_progress=on_progress)
        if scan is not None:
            return scan
    reader = conn.open(table, on_progress=on_progress)
    stream = streams[table.name] = _Stream(table.name)
    return _guard(reader, stream, quota, conn.name, table)


def _close(tables: Mapping[str, TableSource]) -> None:
    for source in tables.values():
        if isinstance(source, pa.RecordBatchReader):
            with contextlib.suppress(Exception):
                source.close()


def _check_size(
    connectors: Mapping[str, Connector], quota_bytes: int | None, workspace: Path
) -> dict[str, int | None]:
    """Each table's source size; refuse a total above the quota or the free disk space."""
    sizes: dict[str, int | None] = {}
    total = 0
    largest: tuple[int, str] = (0, "")
    for name, conn in connectors.items():
        size = sizes[name] = conn.size_bytes()
        if size is not None:
            total += size
            largest = max(largest, (size, conn.name))
    extra: dict[str, Any] = {"size_bytes": total}
    if quota_bytes is not None and total > quota_bytes:
        raise SourceTooLarge(
            f"the source ({total} bytes) is larger than the disk quota ({quota_bytes} bytes)",
            file=largest[1] or None,
            quota_bytes=quota_bytes,
            **extra,
        )
    parent = workspace.parent
    parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if total > free:
        raise SourceTooLarge(
            f"the source ({total} bytes) is larger than the free disk space ({free} bytes)",
            file=largest[1] or None,
            free_bytes=free,
            **extra,
        )
    return sizes
