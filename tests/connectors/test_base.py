"""Source strings, the connector protocol, and strict conversion to the declared types."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from connectors.base import Connector
from connectors.connect import connect
from connectors.convert import Conformer, convert
from connectors.errors import SourceError
from connectors.source import SourceSpec, parse_source, redact_url
from policies.model import ColumnType, Table


@pytest.mark.parametrize(
    ("text", "kind", "location", "options"),
    [
        ("data/x.csv", "csv", "data/x.csv", {}),
        ("data/x?.TSV", "csv", "data/x?.TSV", {"delimiter": "\t"}),
        ("data/*.parquet", "parquet", "data/*.parquet", {}),
        ("x.ndjson", "jsonl", "x.ndjson", {}),
        ("x.feather", "ipc", "x.feather", {}),
        (
            "file:///srv/in/*.csv?delimiter=;&encoding=gbk&header=true",
            "csv",
            "/srv/in/*.csv",
            {"delimiter": ";", "encoding": "gbk", "header": "true"},
        ),
        ("file:///srv/dump?format=parquet", "parquet", "/srv/dump", {}),
        (
            "postgres://u:pw@db:5432/reg?query=SELECT%201",
            "postgresql",
            "postgres://u:pw@db:5432/reg",
            {"query": "SELECT 1"},
        ),
        (
            "s3://bucket/a/{table}.csv?endpoint_url=http://127.0.0.1:9000",
            "csv",
            "s3://bucket/a/{table}.csv",
            {"endpoint_url": "http://127.0.0.1:9000"},
        ),
    ],
)
def test_parse_source(text: str, kind: str, location: str, options: dict[str, str]) -> None:
    spec = parse_source(text)
    assert (spec.kind, spec.location, dict(spec.options)) == (kind, location, options)


def test_placeholders_and_redaction() -> None:
    spec = parse_source("postgresql://u:secret@db/reg?table=raw.{table}")
    assert spec.has_placeholder
    assert spec.for_table("tax").options["table"] == "raw.tax"
    assert spec.name == "postgresql://u@db/reg"
    assert redact_url("/plain/path.csv") == "/plain/path.csv"
    assert SourceSpec("csv", "d/{table}.csv").for_table("tax").location == "d/tax.csv"


@pytest.mark.parametrize("text", ["", "ftp://x/y.csv", "file://host/x.csv", "s3:///x.csv", "x.xls"])
def test_bad_source_strings(text: str) -> None:
    with pytest.raises(SourceError) as info:
        parse_source(text)
    assert info.value.code == "invalid_source"


def test_connectors_satisfy_the_protocol(tmp_path: object) -> None:
    for source in ("x.csv", "x.parquet", "postgresql://h/db?table=t", "s3://b/x.jsonl"):
        assert isinstance(connect(source), Connector)


def conv(values: list[object], ctype: ColumnType, arrow: pa.DataType | None = None) -> list[object]:
    out, bad = convert(pa.array(values, type=arrow), ctype)
    flags = bad.to_pylist() if bad is not None else [False] * len(values)
    return ["BAD" if f else v for v, f in zip(out.to_pylist(), flags, strict=True)]


BAD = "BAD"
TEXT_CASES: list[tuple[ColumnType, str | None, object]] = [
    (ColumnType.INTEGER, "1", 1),
    (ColumnType.INTEGER, "-2", -2),
    (ColumnType.INTEGER, None, None),
    *((ColumnType.INTEGER, v, BAD) for v in ("+3", "0x10", "1e3", " 4", "3.5", "9" * 30, "")),
    (ColumnType.FLOAT, "1.5", 1.5),
    (ColumnType.FLOAT, "-2", -2.0),
    (ColumnType.FLOAT, ".5", 0.5),
    (ColumnType.FLOAT, "1e3", 1000.0),
    *((ColumnType.FLOAT, v, BAD) for v in ("nan", "inf", "1,5", "", "1.5.1")),
    (ColumnType.DATE, "2024-01-31", date(2024, 1, 31)),
    *((ColumnType.DATE, v, BAD) for v in ("2024-02-30", "2024-1-1", "20240101")),
    (ColumnType.BOOLEAN, "true", True),
    (ColumnType.BOOLEAN, "FALSE", False),
    (ColumnType.BOOLEAN, "1", True),
    (ColumnType.BOOLEAN, "0", False),
    *((ColumnType.BOOLEAN, v, BAD) for v in ("yes", "t", "2")),
    (ColumnType.STRING, "  any text ", "  any text "),
]


@pytest.mark.parametrize(("ctype", "text", "expected"), TEXT_CASES)
def test_text_conversion_is_strict(ctype: ColumnType, text: str | None, expected: object) -> None:
    assert conv([text, "0" if ctype != ColumnType.DATE else "2000-01-01"], ctype)[0] == expected


def test_typed_conversion_is_strict() -> None:
    assert conv([1.0, 2.5, float("nan"), 2.0**70, None], ColumnType.INTEGER) == [
        1,
        "BAD",
        "BAD",
        "BAD",
        None,
    ]
    assert conv([2**63 - 1, 2**64 - 1], ColumnType.INTEGER, pa.uint64()) == [2**63 - 1, "BAD"]
    assert conv([Decimal("1.50"), Decimal("2")], ColumnType.FLOAT) == [1.5, 2.0]
    assert conv([Decimal("1.50"), Decimal("2")], ColumnType.INTEGER) == ["BAD", 2]
    midnight, noon = datetime(2024, 1, 1), datetime(2024, 1, 1, 12)
    assert conv([midnight, noon], ColumnType.DATE, pa.timestamp("ms")) == [date(2024, 1, 1), "BAD"]
    assert conv([None, None], ColumnType.STRING, pa.null()) == [None, None]


def test_conformer_schema_checks(table: Table) -> None:
    names = [c.name for c in table.columns]
    conformer = Conformer(table)
    conformer.check_names(names, file="f")
    with pytest.raises(SourceError) as info:
        conformer.check_names([*names, "credit_code"], file="f")
    assert (info.value.code, info.value.column) == ("schema_mismatch", "credit_code")
    schema = pa.schema([(n, pa.string()) for n in names]).set(
        names.index("active"), pa.field("active", pa.date32())
    )
    with pytest.raises(SourceError) as info:
        conformer.check_schema(schema, file="f")
    assert (info.value.code, info.value.column) == ("schema_mismatch", "active")
    assert "date32" in info.value.detail
