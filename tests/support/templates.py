"""Verification templates on real synthetic data: its size, a subject not in it, and the data as
plain DuckDB tables (what a workspace holds)."""

from __future__ import annotations

import duckdb
import pyarrow as pa

ENTERPRISES = 500
UNKNOWN = "91110000MA00000000"  # well-formed but not in the data


def database(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(f"src_{name}", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM src_{name}")
        con.unregister(f"src_{name}")
    return con
