"""The fast path of Parquet loads (DuckDB reads the files itself) against the Arrow path, and
``cluster_by``: same tables, same reports, same errors naming the file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from connectors.base import Connector, Progress, ProgressCallback
from connectors.connect import connect
from connectors.convert import exact_type
from connectors.errors import SourceError
from connectors.files.connector import FileConnector
from connectors.load import ingest
from connectors.sink import ParquetScan
from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import ColumnType, Policy, Table
from tests.support.connectors import POLICY, good_arrow

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


class ArrowOnly:
    """A file connector without ``scan``: every table streams through Arrow (the slow path)."""

    def __init__(self, inner: FileConnector) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def size_bytes(self) -> int | None:
        return self.inner.size_bytes()

    def open(
        self, table: Table, *, on_progress: ProgressCallback | None = None
    ) -> pa.RecordBatchReader:
        return self.inner.open(table, on_progress=on_progress)


def stored(
    path: Path, table: str = "firms"
) -> tuple[list[tuple[str, str]], list[tuple[object, ...]]]:
    """Column types and rows in storage order (no ORDER BY: the order the build wrote)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        types = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
        return types, con.execute(f"SELECT * FROM {table}").fetchall()
    finally:
        con.close()


def source_connector(path: str) -> FileConnector:
    conn = connect(path)
    assert isinstance(conn, FileConnector)
    return conn


def test_exact_parquet_is_scanned_and_loads_what_arrow_would(
    tmp_path: Path, policy: Policy, table: Table
) -> None:
    data = good_arrow()
    (tmp_path / "src").mkdir()
    pq.write_table(data.slice(0, 2), tmp_path / "src" / "a.parquet")
    pq.write_table(data.slice(2), tmp_path / "src" / "b.parquet")
    glob = str(tmp_path / "src" / "*.parquet")

    scan = source_connector(glob).scan(table)
    assert isinstance(scan, ParquetScan)
    assert len(scan.files) == 2
    assert scan.columns == (
        ("credit_code", "VARCHAR"),
        ("district", "VARCHAR"),
        ("founded", "DATE"),
        ("revenue", "DOUBLE"),
        ("staff", "BIGINT"),
        ("active", "BOOLEAN"),
    )

    seen: list[Progress] = []
    fast = ingest(policy, glob, tmp_path / "fast.duckdb", now=NOW, on_progress=seen.append)
    slow = ingest(policy, ArrowOnly(source_connector(glob)), tmp_path / "slow.duckdb", now=NOW)
    assert stored(tmp_path / "fast.duckdb") == stored(tmp_path / "slow.duckdb")
    assert fast.to_dict() == slow.to_dict()  # the quality report does not depend on the path
    assert seen[-1].rows == 4 and seen[-1].bytes_read == seen[-1].bytes_total


@pytest.mark.parametrize(
    ("arrow", "declared", "exact"),
    [
        (pa.int32(), ColumnType.INTEGER, True),
        (pa.uint32(), ColumnType.INTEGER, True),
        (pa.uint64(), ColumnType.INTEGER, False),  # may not fit
        (pa.float64(), ColumnType.INTEGER, False),  # 1.5 must fail
        (pa.float32(), ColumnType.FLOAT, True),
        (pa.int32(), ColumnType.FLOAT, True),
        (pa.int64(), ColumnType.FLOAT, False),  # above 2**53 a double rounds
        (pa.string(), ColumnType.INTEGER, False),  # "12a" must fail
        (pa.large_string(), ColumnType.STRING, True),
        (pa.dictionary(pa.int32(), pa.string()), ColumnType.STRING, True),
        (pa.timestamp("s"), ColumnType.DATE, False),  # midnight only
        (pa.date32(), ColumnType.DATE, True),
        (pa.bool_(), ColumnType.BOOLEAN, True),
        (pa.decimal128(10, 2), ColumnType.FLOAT, False),
    ],
)
def test_exact_types(arrow: pa.DataType, declared: ColumnType, exact: bool) -> None:
    assert exact_type(arrow, declared) is exact


def test_widening_types_take_the_fast_path(tmp_path: Path, policy: Policy, table: Table) -> None:
    data = good_arrow()
    narrow = data.set_column(
        data.schema.get_field_index("staff"), "staff", pc.cast(data["staff"], pa.int32())
    )
    narrow = narrow.set_column(
        narrow.schema.get_field_index("revenue"), "revenue", pc.cast(data["revenue"], pa.float32())
    )
    narrow = narrow.set_column(
        narrow.schema.get_field_index("district"),
        "district",
        pc.dictionary_encode(data["district"]),
    )
    pq.write_table(narrow, tmp_path / "narrow.parquet")
    pq.write_table(data, tmp_path / "plain.parquet")
    assert isinstance(source_connector(str(tmp_path / "narrow.parquet")).scan(table), ParquetScan)
    ingest(policy, str(tmp_path / "narrow.parquet"), tmp_path / "narrow.duckdb", now=NOW)
    ingest(policy, str(tmp_path / "plain.parquet"), tmp_path / "plain.duckdb", now=NOW)
    assert stored(tmp_path / "narrow.duckdb") == stored(tmp_path / "plain.duckdb")


def test_parquet_that_needs_conversion_streams_strictly(
    tmp_path: Path, policy: Policy, table: Table
) -> None:
    data = good_arrow()
    text = data.set_column(
        data.schema.get_field_index("staff"), "staff", pa.array(["3", "x", None, "5"])
    )
    pq.write_table(text, tmp_path / "text.parquet")
    assert source_connector(str(tmp_path / "text.parquet")).scan(table) is None
    with pytest.raises(SourceError) as info:
        ingest(policy, str(tmp_path / "text.parquet"), tmp_path / "ws.duckdb", now=NOW)
    err = info.value
    assert (err.code, err.file, err.row, err.column) == (
        "type_conversion",
        str(tmp_path / "text.parquet"),
        2,
        "staff",
    )
    assert not (tmp_path / "ws.duckdb").exists()


def test_schema_errors_are_found_before_reading(tmp_path: Path, policy: Policy) -> None:
    data = good_arrow().drop_columns(["credit_code"])
    pq.write_table(data, tmp_path / "no-unit.parquet")
    with pytest.raises(SourceError) as info:
        ingest(policy, str(tmp_path / "no-unit.parquet"), tmp_path / "ws.duckdb")
    assert (info.value.code, info.value.column) == ("missing_unit_column", "credit_code")
    pq.write_table(good_arrow().slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(SourceError) as info:
        ingest(policy, str(tmp_path / "empty.parquet"), tmp_path / "ws.duckdb")
    assert info.value.code == "empty_source"
    pq.write_table(good_arrow(), tmp_path / "big.parquet")
    with pytest.raises(SourceError) as info:
        ingest(policy, str(tmp_path / "big.parquet"), tmp_path / "ws.duckdb", quota_bytes=10)
    assert info.value.code == "source_too_large"
    assert not (tmp_path / "ws.duckdb").exists()


def test_a_file_duckdb_cannot_read_is_named_through_the_arrow_path(
    tmp_path: Path, policy: Policy, table: Table
) -> None:
    (tmp_path / "src").mkdir()
    pq.write_table(good_arrow(), tmp_path / "src" / "a.parquet")
    broken = tmp_path / "src" / "b.parquet"
    pq.write_table(good_arrow(), broken, compression="NONE")
    raw = bytearray(broken.read_bytes())
    raw[4:64] = b"\xff" * 60  # the first page header: the footer (schema) still reads
    broken.write_bytes(bytes(raw))
    glob = str(tmp_path / "src" / "*.parquet")
    assert isinstance(source_connector(glob).scan(table), ParquetScan)
    workspace = tmp_path / "ws.duckdb"
    with pytest.raises(SourceError) as info:
        ingest(policy, glob, workspace, now=NOW)
    assert (info.value.code, info.value.file) == ("malformed_file", str(broken))
    assert info.value.report is not None
    assert not workspace.exists()
    assert not workspace.with_name(workspace.name + ".loading").exists()


def test_columns_that_differ_only_in_case_stream(tmp_path: Path, table: Table) -> None:
    """DuckDB binds names without case: ``Staff`` could shadow ``staff``. Arrow does not."""
    data = good_arrow()
    shadow = pa.table(
        {"Staff": pa.array([90, 91, 92, 93]), **{n: data[n] for n in data.schema.names}}
    )
    pq.write_table(shadow, tmp_path / "shadow.parquet")
    conn = source_connector(f"file://{tmp_path / 'shadow.parquet'}?extra_columns=ignore")
    assert conn.scan(table) is None
    policy = parse_policy(POLICY)
    ingest(policy, conn, tmp_path / "ws.duckdb", now=NOW)
    _, rows = stored(tmp_path / "ws.duckdb")
    assert [r[4] for r in rows] == [3, 60, None, 5]


def clustered_policy(column: str = "credit_code") -> str:
    return POLICY.replace(
        "min_group_size = 0\n", f'min_group_size = 0\n\n[storage]\ncluster_by = "{column}"\n', 1
    )


@pytest.mark.parametrize("fast", [True, False])
def test_cluster_by_stores_tables_sorted(tmp_path: Path, fast: bool) -> None:
    policy = parse_policy(clustered_policy())
    assert policy.cluster_by == "credit_code"
    data = good_arrow()
    shuffled = data.take(pa.array([3, 1, 0, 2]))
    pq.write_table(shuffled, tmp_path / "firms.parquet")
    conn: Connector = source_connector(str(tmp_path / "firms.parquet"))
    if not fast:
        conn = ArrowOnly(source_connector(str(tmp_path / "firms.parquet")))
    ingest(policy, conn, tmp_path / "ws.duckdb", now=NOW)
    _, rows = stored(tmp_path / "ws.duckdb")
    assert [r[0] for r in rows] == ["A1", "A2", "A3", "A4"]
    # the load's own cluster_by wins over the policy's
    ingest(policy, str(tmp_path / "firms.parquet"), tmp_path / "ws2.duckdb", cluster_by="staff")
    _, rows = stored(tmp_path / "ws2.duckdb")
    assert [r[4] for r in rows] == [3, 5, 60, None]


def test_cluster_by_is_validated() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(clustered_policy("nope"), "p.toml")
    assert (info.value.key, info.value.rule) == ("storage.cluster_by", "unknown_column")
    bad_key = POLICY.replace("min_group_size = 0\n", 'min_group_size = 0\n[storage]\nsort = "a"\n')
    with pytest.raises(PolicyError) as info:
        parse_policy(bad_key, "p.toml")
    assert (info.value.key, info.value.rule) == ("storage.sort", "unknown_key")
    not_text = POLICY.replace(
        "min_group_size = 0\n", "min_group_size = 0\n[storage]\ncluster_by = 1\n"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(not_text, "p.toml")
    assert (info.value.key, info.value.rule) == ("storage.cluster_by", "type")
    assert parse_policy(POLICY).cluster_by is None
