"""Opening a workspace locked down: the lockdown recipe of ``notes/duckdb-lockdown.md`` applied in
its required order, then proved by :func:`verify_lockdown` (fail closed).

This package and :mod:`connectors.sink` are the only places that import ``duckdb``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from connectors.sink import LOCKDOWN_CONFIG
from sandbox.errors import LockdownError

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
