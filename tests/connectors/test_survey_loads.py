"""Loads of one-row-per-person data without an id (a generated row-number unit) and with
declared missing-value codes, through :func:`connectors.load.ingest`, for every source kind.

The same survey (4 people; ``age`` 98/99 and ``region`` "NA"/"-" mean "no answer") is written as
CSV, Parquet, JSON lines and Arrow IPC on disk, as CSV and Parquet on S3-compatible storage, and
as a PostgreSQL table; each load must number the rows 1..n as the unit, load the codes as NULL
and count them in the quality report.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from connectors.errors import SchemaMismatch
from connectors.load import ingest
from connectors.quality.html import render_html
from connectors.quality.report import QualityReport
from policies.loader import parse_policy
from policies.model import Policy
from tests.support.connectors import KEYS, execute, put, url

SURVEY = """
id = "survey"
title = "Household survey"
privacy_unit = "person"
max_groups_per_unit = 1
min_group_size = 0

[tables.survey]

[tables.survey.columns.person]
type = "integer"
role = "unit"
generated = "row_number"

[tables.survey.columns.region]
type = "string"
role = "dimension"
keys = ["north", "south"]
missing = ["NA", "-"]

[tables.survey.columns.age]
type = "integer"
role = "measure"
lower = 0
upper = 97
missing = [98, 99]

[tables.survey.columns.income]
type = "float"
role = "measure"
lower = 0
upper = 1000
missing = [-1]
"""

# region, age, income — people 2 and 4 did not give their age, 3 and 4 their region
DATA: dict[str, list[Any]] = {
    "region": ["north", "-", "NA", "south"],
    "age": [34, 98, 51, 99],
    "income": [10.5, -1.0, 300.0, None],
}
EXPECTED = [
    (1, "north", 34, 10.5),
    (2, None, None, None),
    (3, None, 51, 300.0),
    (4, "south", None, None),
]


@pytest.fixture()
def survey() -> Policy:
    return parse_policy(SURVEY, "survey.toml")


def arrow_data() -> pa.Table:
    return pa.table(
        {
            "region": pa.array(DATA["region"]),
            "age": pa.array(DATA["age"], pa.int32()),  # int32: Parquet's fast path would take it
            "income": pa.array(DATA["income"], pa.float64()),
        }
    )


def csv_text() -> str:
    lines = ["region,age,income"]
    for region, age, income in zip(*DATA.values(), strict=True):
        lines.append(f"{region},{age},{'' if income is None else income}")
    return "\n".join(lines) + "\n"


def jsonl_text() -> str:
    return "".join(
        json.dumps({"region": r, "age": a, "income": i}) + "\n"
        for r, a, i in zip(*DATA.values(), strict=True)
    )


def ipc_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, arrow_data().schema) as writer:
        writer.write_table(arrow_data())
    return bytes(sink.getvalue().to_pybytes())


def parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(arrow_data(), sink)
    return bytes(sink.getvalue().to_pybytes())


WRITERS: dict[str, Callable[[], bytes]] = {
    "csv": lambda: csv_text().encode(),
    "parquet": parquet_bytes,
    "jsonl": lambda: jsonl_text().encode(),
    "arrow": ipc_bytes,
}


def loaded(workspace: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(workspace), read_only=True) as con:
        return con.execute(
            "SELECT person, region, age, income FROM survey ORDER BY person"
        ).fetchall()


def check(report: QualityReport, workspace: Path) -> None:
    assert loaded(workspace) == EXPECTED
    (table,) = report.tables
    counts = {c.name: c.missing_codes for c in table.columns}
    assert counts == {"person": 0, "region": 2, "age": 2, "income": 1}
    nulls = {c.name: c.nulls for c in table.columns}
    assert nulls == {"person": 0, "region": 2, "age": 2, "income": 2}  # one income was empty
    # every row its own unit: the contribution bound (1 row per unit) holds
    assert (table.units, table.duplicate_units, table.units_over_bound) == (4, 0, 0)
    assert QualityReport.from_dict(report.to_dict()) == report
    assert "missing codes" in render_html(report)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_file_format(kind: str, survey: Policy, tmp_path: Path) -> None:
    src = tmp_path / f"survey.{kind}"
    src.write_bytes(WRITERS[kind]())
    workspace = tmp_path / "ws.duckdb"
    check(ingest(survey, str(src), workspace), workspace)


def test_row_numbers_run_on_across_files_and_batches(survey: Policy, tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(3):
        (folder / f"part-{i}.csv").write_text(csv_text())
    workspace = tmp_path / "ws.duckdb"
    ingest(survey, f"file://{folder}/*.csv?batch_size=3", workspace)
    persons = [row[0] for row in loaded(workspace)]
    assert persons == list(range(1, 13))


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_source_with_the_generated_column_is_refused(
    kind: str, survey: Policy, tmp_path: Path
) -> None:
    """Even with ``extra_columns=ignore``: numbers of the source's own would silently lose."""
    with_person = arrow_data().append_column("person", pa.array([7, 8, 9, 10]))
    data = {
        "csv": lambda: b"person,region,age,income\n7,north,30,1\n",
        "jsonl": lambda: b'{"person": 7, "region": "north", "age": 30, "income": 1}\n',
        "parquet": lambda: _parquet(with_person),
        "arrow": lambda: _ipc(with_person),
    }[kind]
    src = tmp_path / f"survey.{kind}"
    src.write_bytes(data())
    with pytest.raises(SchemaMismatch) as info:
        ingest(survey, f"file://{src}?extra_columns=ignore", tmp_path / "ws.duckdb")
    assert info.value.extra["column"] == "person"
    assert "generated" in info.value.detail
    assert not (tmp_path / "ws.duckdb").exists()


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_object_storage(kind: str, s3_endpoint: str, survey: Policy, tmp_path: Path) -> None:
    fs = pafs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        endpoint_override=s3_endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
    )
    bucket = f"veil-{uuid.uuid4().hex[:12]}"
    fs.create_dir(bucket)
    put(fs, f"{bucket}/survey.{kind}", WRITERS[kind]())
    workspace = tmp_path / "ws.duckdb"
    report = ingest(survey, url(s3_endpoint, f"{bucket}/survey.{kind}", **KEYS), workspace)
    check(report, workspace)


def test_postgresql(postgres_url: str, survey: Policy, tmp_path: Path) -> None:
    values = ", ".join(
        f"('{r}', {a}, {'NULL' if i is None else i})"
        for r, a, i in zip(*DATA.values(), strict=True)
    )
    execute(
        postgres_url,
        "DROP SCHEMA IF EXISTS survey_src CASCADE",
        "CREATE SCHEMA survey_src",
        "CREATE TABLE survey_src.survey (region text, age int4, income float8)",
        f"INSERT INTO survey_src.survey VALUES {values}",
    )
    workspace = tmp_path / "ws.duckdb"
    check(ingest(survey, f"{postgres_url}?table=survey_src.survey", workspace), workspace)
