"""The connector tests' small ``firms`` policy, its CSV (good and bad rows together) and the rows
and errors the tests read back from a source."""

from __future__ import annotations

from datetime import date
from typing import Any

import adbc_driver_postgresql.dbapi as pg_dbapi  # type: ignore[import-untyped]
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from connectors.connect import connect
from connectors.errors import SourceError
from policies.model import Table
from tests.support.data import data_text

POLICY = data_text("firms_typed.toml")
HEADER = "credit_code,district,founded,revenue,staff,active"
GOOD_CSV = f"""{HEADER}
A1,east,2010-05-01,10.5,3,true
A2,west,2020-01-31,200,60,false
A3,north,,50,,true
A4,east,1999-12-31,-1,5,false
"""
GOOD_ROWS = [
    ("A1", "east", "2010-05-01", 10.5, 3, True),
    ("A2", "west", "2020-01-31", 200.0, 60, False),
    ("A3", "north", None, 50.0, None, True),
    ("A4", "east", "1999-12-31", -1.0, 5, False),
]


def rows(reader: pa.RecordBatchReader) -> list[tuple[Any, ...]]:
    out = []
    for r in reader.read_all().to_pylist():
        founded = r["founded"]
        out.append(
            (
                r["credit_code"],
                r["district"],
                founded.isoformat() if founded else None,
                r["revenue"],
                r["staff"],
                r["active"],
            )
        )
    return out


def read_error(source: str, table: Table, **options: str) -> SourceError:
    """Open and drain ``source``; it must fail (at open or while streaming) with a SourceError."""
    got: list[pa.RecordBatch] = []
    with pytest.raises(SourceError) as info:
        reader = connect(source, **options).open(table)
        for batch in reader:
            got.append(batch)
    err = info.value
    assert err.status in (422, 502)
    return err


def arrow_table(
    data: dict[str, list[Any]], types: dict[str, pa.DataType] | None = None
) -> pa.Table:
    types = types or {}
    return pa.table({k: pa.array(v, type=types.get(k)) for k, v in data.items()})


def good_arrow() -> pa.Table:
    cols = list(zip(*GOOD_ROWS, strict=True))
    return arrow_table(
        {
            "credit_code": list(cols[0]),
            "district": list(cols[1]),
            "founded": [date.fromisoformat(d) if d else None for d in cols[2]],
            "revenue": list(cols[3]),
            "staff": list(cols[4]),
            "active": list(cols[5]),
        }
    )


# S3-compatible storage (moto's server in the tests)
KEYS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


def put(fs: pafs.S3FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def url(endpoint: str, key: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"endpoint_url": endpoint, **options}.items())
    return f"s3://{key}?{query}"


# PostgreSQL
def execute(url: str, *statements: str) -> None:
    with pg_dbapi.connect(url) as conn:
        cur = conn.cursor()
        for sql in statements:
            cur.execute(sql)
        conn.commit()
