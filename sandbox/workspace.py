"""Workspaces: building the DuckDB file of one dataset version, and opening it locked down.

This module and :mod:`sandbox.executor` are the only runtime modules that import ``duckdb``.
Building runs in a trusted, unlocked connection (it must read Parquet files); serving goes only
through :func:`open_locked`, which applies the lockdown recipe of ``notes/duckdb-lockdown.md`` in
its required order and then proves it with :func:`verify_lockdown` (fail closed).
"""

from __future__ import annotations

import contextlib
import hashlib
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
from sandbox.errors import LockdownError

__all__ = [
    "LOCKDOWN_CONFIG",
    "SCAN_TYPES",
    "TABLE_NAME",
    "ParquetScan",
    "TableSource",
    "build_workspace",
    "fsync_dir",
    "open_locked",
    "parse_size",
    "table_schemas",
    "verify_lockdown",
    "workspace_temp_dir",
]

TABLE_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Rows per row group of a workspace table (DuckDB's default: 122,880). A verification reads one
# subject's rows, and DuckDB scans every row of each row group its min/max statistics keep.
ROW_GROUP_SIZE: Final = 8192

LOCKDOWN_CONFIG: Final[Mapping[str, bool]] = {
    # No extension may be fetched or loaded behind our back.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    # Otherwise `FROM some_name` can read a Python variable of the calling frame.
    "python_enable_replacements": False,
}
"""Fixed connect-time settings of every locked instance; resource limits are added per call."""

# Settings that must read back exactly like this on a locked instance (values of current_setting).
_REQUIRED: Final[Mapping[str, object]] = {
    **LOCKDOWN_CONFIG,
    "allow_extension_repositories": "forbidden",
    "enable_external_access": False,
    "lock_configuration": True,
    "allowed_configs": [],
}

# Each must fail with a PermissionException. Requiring that class (not just "some error") keeps the
# probe honest on hosts where the file is missing: an unlocked engine would raise IOException.
_FORBIDDEN_PROBES: Final = (
    "SELECT count(*) FROM read_csv('/etc/passwd')",
    "SELECT count(*) FROM read_text('/etc/passwd')",
    "SELECT count(*) FROM glob('/*')",
)

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(text: str) -> int:
    """Bytes in a DuckDB size string ("2GB", "953.6 MiB", "0 bytes"); GB is 10**9 as in DuckDB."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r}")
    return round(float(match.group(1)) * _UNITS[unit])


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


def workspace_temp_dir(temp_root: Path, workspace: Path) -> Path:
    """A temp (spill) directory of its own per workspace: DuckDB names spill files identically in
    every instance, so instances sharing one directory could clobber each other's files."""
    digest = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return temp_root / f"ws-{digest}"


def open_locked(
    path: Path | None,
    *,
    memory_limit: str,
    threads: int,
    temp_dir: Path,
    max_execution_ms: int,
    max_temp_bytes: int = 4 * 2**30,
) -> duckdb.DuckDBPyConnection:
    """Open a workspace read-only (or an empty ``:memory:`` instance) with the lockdown applied.

    The order matters (see the lockdown note): resource and extension settings, then the deadline
    and repository ban, then ``enable_external_access = false`` (one-way), then the lock. The result
    is verified before it is returned; if a lockdown step or the verification fails, the instance
    is closed and ``LockdownError`` raised, so an unproven instance is never handed out. A file
    that cannot be opened at all raises the engine's error (``duckdb.Error``) unchanged.
    """
    if threads < 1 or max_execution_ms < 1:
        raise ValueError("threads and max_execution_ms must be positive")
    config: dict[str, str | bool | int | float | list[str]] = {
        **LOCKDOWN_CONFIG,
        "memory_limit": memory_limit,
        "threads": threads,
        "temp_directory": str(temp_dir),
        "max_temp_directory_size": f"{max_temp_bytes}B",
    }
    # A file that cannot be opened (missing, not a database, newer storage version) raises the
    # engine's own error: that is a bad workspace, not a lockdown failure.
    if path is None:
        con = duckdb.connect(":memory:", config=config)
    else:
        con = duckdb.connect(str(path), read_only=True, config=config)
    try:
        # GLOBAL on purpose: in DuckDB 2.0.0 a plain SET of this option is connection-local and
        # the per-request cursors would run with no deadline at all.
        con.execute(f"SET GLOBAL max_execution_time = {int(max_execution_ms)}")
        con.execute("SET allow_extension_repositories = 'forbidden'")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        verify_lockdown(
            con,
            expected={
                "memory_limit": parse_size(memory_limit),
                "max_temp_directory_size": max_temp_bytes,
                "threads": threads,
                "temp_directory": str(temp_dir),
                "max_execution_time": int(max_execution_ms),
            },
        )
    except BaseException as exc:
        con.close()
        if isinstance(exc, duckdb.Error):
            raise LockdownError(f"a lockdown step failed ({type(exc).__name__})") from None
        raise
    return con


def _size_matches(printed: str, want: int) -> bool:
    """DuckDB prints sizes with one decimal in the largest unit ("1.8 GiB"); allow that rounding."""
    match = _SIZE.match(printed)
    if match is None:
        return False
    unit = _UNITS.get(match.group(2).lower())
    return unit is not None and abs(parse_size(printed) - want) <= unit // 10 + 1


def _settings(con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> dict[str, object]:
    wanted = sorted(set(names))
    # The names are our own constants, never caller input; current_setting() needs literals.
    columns = ", ".join(f"current_setting('{name}')" for name in wanted)
    (row,) = con.execute(f"SELECT {columns}").fetchall()
    return dict(zip(wanted, row, strict=True))


def verify_lockdown(
    con: duckdb.DuckDBPyConnection, expected: Mapping[str, object] | None = None
) -> None:
    """Prove that ``con`` is locked down, or raise ``LockdownError`` (the fail-closed self-test).

    First the probes: forbidden reads and a configuration change must each be refused by the
    engine. Then every security setting is read back; ``expected`` adds per-instance values (sizes
    in bytes, compared with the rounding DuckDB applies when it prints them). Probes run on their
    own cursor so that nothing they do can linger on ``con``.
    """
    probe = con.cursor()
    try:
        for sql in _FORBIDDEN_PROBES:
            try:
                probe.execute(sql).fetchall()
            except duckdb.PermissionException:
                continue
            except duckdb.Error as exc:
                raise LockdownError(
                    f"a forbidden read was not refused by the lockdown ({type(exc).__name__})"
                ) from None
            raise LockdownError("a forbidden read succeeded: external access is not disabled")
        try:
            probe.execute("SET lock_configuration = false")
        except duckdb.InvalidInputException:
            pass
        else:
            raise LockdownError("the configuration is not locked")
        replacement_probe = pa.table({"x": [1]})  # must stay invisible to SQL
        try:
            probe.execute("SELECT x FROM replacement_probe").fetchall()
        except duckdb.CatalogException:
            pass
        else:
            raise LockdownError("python replacement scans are enabled")
        del replacement_probe
    finally:
        probe.close()

    expected = dict(expected or {})
    names = [*_REQUIRED, *expected, "max_execution_time", "temp_directory"]
    names += ["allowed_directories", "allowed_paths"]
    # Read back through a fresh cursor: that is what a request runs on, and connection-local
    # values set on ``con`` itself would not show there.
    view = con.cursor()
    try:
        actual = _settings(view, names)
        db_rows = view.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchall()
    except duckdb.Error as exc:
        raise LockdownError(f"the settings could not be read back ({type(exc).__name__})") from None
    finally:
        view.close()
    for name, want in _REQUIRED.items():
        if actual[name] != want:
            raise LockdownError(f"setting {name} is not locked down")
    if not isinstance(actual.get("max_execution_time"), int) or not actual["max_execution_time"]:
        raise LockdownError("setting max_execution_time is not set")
    for name, want in expected.items():
        got = actual[name]
        if name in ("memory_limit", "max_temp_directory_size"):
            ok = isinstance(want, int) and _size_matches(str(got), want)
        else:
            ok = got == want
        if not ok:
            raise LockdownError(f"setting {name} does not have its configured value")
    # The engine itself allows the temp directory and the database's own files; nothing else.
    temp = str(actual["temp_directory"]).rstrip("/")
    allowed_dirs = actual["allowed_directories"]
    if not isinstance(allowed_dirs, list) or any(str(d).rstrip("/") != temp for d in allowed_dirs):
        raise LockdownError("setting allowed_directories allows more than the temp directory")
    db_path = str(db_rows[0][0]) if db_rows and db_rows[0][0] else None
    allowed_paths = actual["allowed_paths"]
    if not isinstance(allowed_paths, list) or any(
        db_path is None or not (p == db_path or str(p).startswith(db_path + ".wal"))
        for p in allowed_paths
    ):
        raise LockdownError("setting allowed_paths allows more than the database files")
