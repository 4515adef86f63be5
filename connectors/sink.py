"""The workspace sink: Arrow tables, record batch streams and Parquet scans written into the DuckDB
file of one dataset version.

Building runs in a trusted, unlocked connection (it must read Parquet files), in the build area,
and never on a file a server has open; the result is sealed by the caller (docs/security.md).
Serving never comes here: it opens workspaces only through :mod:`sandbox.engine.workspace`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

import duckdb
import pyarrow as pa

from policies.errors import InvalidRequest
from policies.gate.plan import row_cap_sql
from policies.model import Policy

LOCKDOWN_CONFIG: Final[Mapping[str, bool]] = {
    # No extension may be fetched or loaded behind our back.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    # Otherwise `FROM some_name` can read a Python variable of the calling frame.
    "python_enable_replacements": False,
}
"""Connect-time settings of every DuckDB instance Veil opens, building or serving; a served one
is locked down further (:mod:`sandbox.engine.workspace`), resource limits are added per call."""
TABLE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Rows per row group of a workspace table (DuckDB's default: 122,880). A verification reads one
# subject's rows, and DuckDB scans every row of each row group its min/max statistics keep.
ROW_GROUP_SIZE: Final = 8192


def _quote(name: str) -> str:
    """Quote a table name that already passed :data:`TABLE_NAME` (so it holds no quote)."""
    return f'"{name}"'


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; not every platform lets a directory be opened, hence best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


SCAN_TYPES: Final = frozenset({"VARCHAR", "BIGINT", "DOUBLE", "DATE", "BOOLEAN"})
_PROGRESS_EVERY_S: Final = 0.25


@dataclass(frozen=True)
class ParquetScan:
    """Local Parquet files that the build connection reads itself, in parallel: a load's fast path.

    ``columns`` are (name, DuckDB type) in the table's order; each is read from the source column
    of that name and cast to that type. The caller has checked every file's schema and vouches
    that each cast is exact (it cannot fail or change a value), so the table holds exactly what
    the Arrow path would have written. ``on_progress`` gets the share done (0 to 1) while DuckDB
    reads, from another thread.
    """

    files: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    on_progress: Callable[[float], None] | None = field(default=None, compare=False)


TableSource: TypeAlias = pa.Table | pa.RecordBatchReader | Path | ParquetScan


def _remove_db_files(db: Path) -> None:
    for stale in (db, db.with_name(db.name + ".wal")):
        stale.unlink(missing_ok=True)


def build_workspace(
    path: Path,
    tables: Mapping[str, TableSource],
    *,
    cluster_by: str | None = None,
) -> dict[str, int]:
    """Write a new DuckDB file holding ``tables`` and return the row count of each.

    A ``Path`` value is a Parquet file or glob that DuckDB streams itself, so a 10M-row input never
    passes through Python memory; a :class:`ParquetScan` is the same with the projection and
    casts a policy needs. Arrow tables and readers are registered and scanned. The file is
    written next to ``path`` and renamed into place only once complete and checkpointed, so readers
    never see a half-built workspace. Replacing an existing file is atomic, but open instances keep
    reading the old one: give each dataset version its own path.

    ``cluster_by`` (the privacy unit) stores each table that has that column sorted by it, so a
    verification template's single-subject read (``unit = ?``) skips all but one row group by
    its min/max statistics instead of scanning the table: ~5x faster at 1M rows. Row groups
    hold :data:`ROW_GROUP_SIZE` rows rather than DuckDB's 122,880, so that row group is small:
    a one-subject read scans 8,192 rows (ENT_STATUS 2.4 → 1.3 ms at 1M rows) while full-table
    aggregates and batch queries run as fast as before (bench notes in docs/benchmarks.md).
    """
    if not tables:
        raise InvalidRequest("a workspace needs at least one table")
    for name in tables:
        if not TABLE_NAME.fullmatch(name):
            raise InvalidRequest(
                "table names must match ^[a-z][a-z0-9_]{0,62}$", table=name[:80] if name else ""
            )
    if cluster_by is not None and not TABLE_NAME.fullmatch(cluster_by):
        raise InvalidRequest("cluster_by must be a plain column name")
    tmp = path.with_suffix(".tmp")
    if tmp == path:
        raise InvalidRequest("a workspace path must not end in .tmp")
    spill = path.parent / f".{path.name}.build-spill"
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_db_files(tmp)
    counts: dict[str, int] = {}
    try:
        con = duckdb.connect(
            ":memory:",
            config={**LOCKDOWN_CONFIG, "temp_directory": str(spill)},
        )
        try:
            con.execute("SET enable_progress_bar = false")
            # ATTACH, not connect(file): only ATTACH takes the row-group size.
            literal = "'" + str(tmp).replace("'", "''") + "'"
            con.execute(f"ATTACH {literal} AS ws (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
            con.execute("USE ws")
            for name, source in tables.items():
                counts[name] = _load_table(con, name, source, cluster_by)
            con.execute("CHECKPOINT ws")
            con.execute("USE memory")
            con.execute("DETACH ws")
        finally:
            con.close()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        _remove_db_files(tmp)
        raise
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    return counts


def _load_table(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: TableSource,
    cluster_by: str | None = None,
) -> int:
    """Create one table from its source; a source that cannot be read is the caller's bad input."""
    target = _quote(name)

    def order(columns: Iterable[str]) -> str:
        return f" ORDER BY {_quote(cluster_by)}" if cluster_by in set(columns) else ""

    try:
        if isinstance(source, Path):
            columns = [
                r[0]
                for r in con.execute(
                    "DESCRIBE SELECT * FROM read_parquet(?)", [str(source)]
                ).fetchall()
            ]
            con.execute(
                f"CREATE TABLE {target} AS SELECT * FROM read_parquet(?){order(columns)}",
                [str(source)],
            )
        elif isinstance(source, ParquetScan):
            _scan_parquet(con, target, source, order([c for c, _ in source.columns]))
        elif isinstance(source, pa.Table | pa.RecordBatchReader):
            view = f"__veil_source_{name}"
            con.register(view, source)
            try:
                con.execute(
                    f"CREATE TABLE {target} AS SELECT * FROM {_quote(view)}"
                    f"{order(source.schema.names)}"
                )
            finally:
                con.unregister(view)
        else:
            raise InvalidRequest(
                "a table source must be a pyarrow Table, a RecordBatchReader, a Parquet path or "
                "a ParquetScan",
                table=name,
            )
        # fetchall, not fetchone: DuckDB 2.0 refuses the next statement on a connection whose
        # previous result was not read to the end (ResourceInUseException).
        ((count,),) = con.execute(f"SELECT count(*) FROM {target}").fetchall()
    except duckdb.Error as exc:
        # The engine message may quote file contents; name only the table and the error class.
        raise InvalidRequest(
            f"table {name}: the source could not be loaded ({type(exc).__name__})", table=name
        ) from None
    return int(count)


def _scan_parquet(
    con: duckdb.DuckDBPyConnection, target: str, scan: ParquetScan, order: str
) -> None:
    """``CREATE TABLE … AS SELECT CAST(…) … FROM read_parquet([files])``, reporting progress."""
    if not scan.files or not scan.columns:
        raise InvalidRequest("a Parquet scan needs files and columns")
    for column, duck_type in scan.columns:
        if not TABLE_NAME.fullmatch(column) or duck_type not in SCAN_TYPES:
            raise InvalidRequest("a Parquet scan column is a plain name and a plain type")
    select = ", ".join(f"CAST({_quote(c)} AS {t}) AS {_quote(c)}" for c, t in scan.columns)
    sql = f"CREATE TABLE {target} AS SELECT {select} FROM read_parquet(?){order}"
    if scan.on_progress is None:
        con.execute(sql, [list(scan.files)])
        return
    report = scan.on_progress
    con.execute("SET enable_progress_bar = true")  # progress is tracked only with the bar on
    con.execute("SET enable_progress_bar_print = false")
    done = threading.Event()

    def watch() -> None:
        while not done.wait(_PROGRESS_EVERY_S):
            with contextlib.suppress(Exception):  # progress is best effort
                share = con.query_progress()  # percent, or -1 when DuckDB has no estimate
                if share >= 0:
                    report(min(1.0, share / 100))

    watcher = threading.Thread(target=watch, name="veil-build-progress", daemon=True)
    watcher.start()
    try:
        con.execute(sql, [list(scan.files)])
    finally:
        done.set()
        watcher.join()
        with contextlib.suppress(duckdb.Error):
            con.execute("SET enable_progress_bar = false")
    with contextlib.suppress(Exception):
        report(1.0)


def within_row_caps(path: Path, policy: Policy) -> frozenset[str]:
    """The tables of a built workspace none of whose privacy units has more rows than the
    table's ``max_rows_per_unit``: what the gate may then leave its row-cap window out of."""
    con = duckdb.connect(
        str(path),
        read_only=True,
        config={**LOCKDOWN_CONFIG, "enable_external_access": False},
    )
    try:
        rows = con.execute(row_cap_sql(policy)).fetchall()
    finally:
        con.close()
    caps = {t.name: t.max_rows_per_unit for t in policy.tables}
    return frozenset(str(name) for name, most in rows if int(most) <= caps[str(name)])


def table_schemas(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Column names and DuckDB types of each table, for validating a policy against the data."""
    if not path.is_file():
        raise InvalidRequest("the workspace file does not exist")
    con = duckdb.connect(
        str(path),
        read_only=True,
        config={**LOCKDOWN_CONFIG, "enable_external_access": False},
    )
    try:
        rows = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' "
            "ORDER BY table_name, column_index"
        ).fetchall()
    finally:
        con.close()
    schemas: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in rows:
        schemas.setdefault(str(table), []).append((str(column), str(dtype)))
    return schemas
