"""S3-compatible object storage, against moto's server mode on a local port."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from connectors.connect import connect
from connectors.load import ingest
from policies.model import Policy, Table
from tests.support.connectors import (
    GOOD_CSV,
    GOOD_ROWS,
    HEADER,
    KEYS,
    good_arrow,
    put,
    read_error,
    rows,
    url,
)
from tests.support.servers import free_port


@pytest.fixture()
def bucket(s3_endpoint: str) -> Iterator[tuple[str, pafs.S3FileSystem]]:
    fs = pafs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        endpoint_override=s3_endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
    )
    name = f"veil-{uuid.uuid4().hex[:12]}"
    fs.create_dir(name)
    yield name, fs


def test_parquet_glob(
    s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], table: Table
) -> None:
    name, fs = bucket
    data = good_arrow()
    for i, part in enumerate((data.slice(0, 1), data.slice(1, 3))):
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink)
        put(fs, f"{name}/firms/part-{i}.parquet", sink.getvalue().to_pybytes())
    put(fs, f"{name}/firms/readme.txt", b"not data")
    connector = connect(url(s3_endpoint, f"{name}/firms/*.parquet"), **KEYS)
    assert (connector.size_bytes() or 0) > 0
    assert rows(connector.open(table)) == GOOD_ROWS


def test_gbk_csv(s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], table: Table) -> None:
    name, fs = bucket
    put(fs, f"{name}/firms.csv", f"{HEADER}\n统一码,东城,2010-05-01,1,2,true\n".encode("gbk"))
    reader = connect(url(s3_endpoint, f"{name}/firms.csv", encoding="gbk"), **KEYS).open(table)
    assert rows(reader) == [("统一码", "东城", "2010-05-01", 1.0, 2, True)]


def test_jsonl_and_ipc(
    s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], table: Table
) -> None:
    name, fs = bucket
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, good_arrow().schema) as writer:
        writer.write_table(good_arrow())
    put(fs, f"{name}/firms.arrow", sink.getvalue().to_pybytes())
    assert rows(connect(url(s3_endpoint, f"{name}/firms.arrow"), **KEYS).open(table)) == GOOD_ROWS
    put(
        fs,
        f"{name}/firms.jsonl",
        b'{"credit_code": "A1", "district": "east", "founded": "2010-05-01", '
        b'"revenue": 1, "staff": 2, "active": true}\n',
    )
    got = rows(connect(url(s3_endpoint, f"{name}/firms.jsonl"), **KEYS).open(table))
    assert got == [("A1", "east", "2010-05-01", 1.0, 2, True)]


def test_bad_csv_names_the_object(
    s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], table: Table
) -> None:
    name, fs = bucket
    put(fs, f"{name}/bad.csv", f"{HEADER}\nA1,east,2010-05-01,1,2\n".encode())
    err = read_error(url(s3_endpoint, f"{name}/bad.csv"), table, **KEYS)
    assert (err.code, err.file, err.line) == ("malformed_csv", f"s3://{name}/bad.csv", 2)


def test_ingest_from_s3(
    s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], policy: Policy, tmp_path: Path
) -> None:
    name, fs = bucket
    put(fs, f"{name}/firms.csv", GOOD_CSV.encode())
    source = url(s3_endpoint, f"{name}/firms.csv", **KEYS)
    report = ingest(policy, source, tmp_path / "ws.duckdb")
    assert report.tables[0].rows == 4
    assert "secret" not in report.source and "testing" not in report.source


def test_missing_object(
    s3_endpoint: str, bucket: tuple[str, pafs.S3FileSystem], table: Table
) -> None:
    name, _ = bucket
    err = read_error(url(s3_endpoint, f"{name}/nope.csv"), table, **KEYS)
    assert (err.code, err.file) == ("source_not_found", f"s3://{name}/nope.csv")
    err = read_error(url(s3_endpoint, f"{name}/nope/*.csv"), table, **KEYS)
    assert err.code == "source_not_found"


def test_unreachable_endpoint(table: Table) -> None:
    started = time.monotonic()
    err = read_error(url(f"http://127.0.0.1:{free_port()}", "bucket/x.csv"), table, **KEYS)
    assert (err.code, err.status) == ("source_unreachable", 502)
    assert time.monotonic() - started < 30
