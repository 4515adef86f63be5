"""File sources: every format, options, globs, and each kind of bad input with its location."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.base import Progress
from connectors.connect import connect
from connectors.convert import policy_schema
from connectors.errors import SourceError
from policies.model import Table
from tests.support.connectors import (
    GOOD_CSV,
    GOOD_ROWS,
    HEADER,
    good_arrow,
    read_error,
    rows,
)

# --- CSV -------------------------------------------------------------------------------------


def test_csv_reads_declared_types_in_policy_order(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.csv"
    # columns in another order than the policy's
    text = "active,staff,revenue,founded,district,credit_code\ntrue,3,10.5,2010-05-01,east,A1\n"
    path.write_text(text)
    reader = connect(str(path)).open(table)
    assert reader.schema == policy_schema(table)
    assert rows(reader) == [("A1", "east", "2010-05-01", 10.5, 3, True)]


def test_csv_good_file(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.csv"
    path.write_text(GOOD_CSV)
    connector = connect(str(path))
    assert connector.size_bytes() == len(GOOD_CSV.encode())
    assert rows(connector.open(table)) == GOOD_ROWS


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_csv_chinese_encodings(tmp_path: Path, table: Table, encoding: str) -> None:
    path = tmp_path / "firms.csv"
    text = f"{HEADER.replace(',', ';')}\n统一码1;东城;2010-05-01;1.5;2;true\n"
    path.write_bytes(text.encode(encoding))
    source = f"file://{path}?delimiter=;&encoding={encoding}"
    assert rows(connect(source).open(table)) == [("统一码1", "东城", "2010-05-01", 1.5, 2, True)]


def test_csv_options_header_skip_quote_nulls(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.txt"
    path.write_text("exported by system X\n'A,1'|east|2010-05-01|NA|3|TRUE\nA2|west|NA|2.5|NA|0\n")
    reader = connect(
        str(path),
        format="csv",
        delimiter="pipe",
        quote="'",
        header="false",
        skip_rows="1",
        null_values="NA",
        columns="credit_code,district,founded,revenue,staff,active",
    ).open(table)
    assert rows(reader) == [
        ("A,1", "east", "2010-05-01", None, 3, True),
        ("A2", "west", None, 2.5, None, False),
    ]


def test_tsv_defaults_to_tab(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.tsv"
    path.write_text(GOOD_CSV.replace(",", "\t"))
    assert rows(connect(str(path)).open(table)) == GOOD_ROWS


def test_csv_bom_and_quoted_newline(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.csv"
    path.write_bytes(("\ufeff" + HEADER + '\n"A\n1",east,2010-05-01,1,2,false\n').encode())
    assert rows(connect(str(path)).open(table)) == [("A\n1", "east", "2010-05-01", 1.0, 2, False)]


def test_csv_glob_concatenates_in_name_order(tmp_path: Path, table: Table) -> None:
    lines = GOOD_CSV.splitlines()
    (tmp_path / "part-2.csv").write_text("\n".join([lines[0], *lines[3:]]) + "\n")
    (tmp_path / "part-1.csv").write_text("\n".join(lines[:3]) + "\n")
    (tmp_path / "other.txt").write_text("not part of it")
    connector = connect(str(tmp_path / "part-*.csv"))
    assert rows(connector.open(table)) == GOOD_ROWS
    assert connector.size_bytes() == sum(
        (tmp_path / f"part-{i}.csv").stat().st_size for i in (1, 2)
    )


def test_csv_progress(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "firms.csv"
    body = "".join(f"U{i},east,2010-05-01,1,2,true\n" for i in range(5000))
    path.write_text(HEADER + "\n" + body)
    seen: list[Progress] = []
    reader = connect(str(path), batch_size="1000").open(table, on_progress=seen.append)
    assert reader.read_all().num_rows == 5000
    assert seen[-1].rows == 5000
    assert seen[-1].bytes_read == seen[-1].bytes_total == path.stat().st_size
    assert seen[-1].fraction == 1.0
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)
    assert len(seen) > 2


# --- CSV: bad input ---------------------------------------------------------------------------


def test_csv_wrong_number_of_fields(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\nA1,east,2010-05-01,1,2,true\nA2,west,2010-05-01,1,2\n")
    err = read_error(str(path), table)
    assert err.code == "malformed_csv"
    assert err.extra["file"] == str(path)
    assert err.extra["line"] == 3
    assert err.extra["expected_fields"] == 6 and err.extra["found_fields"] == 5
    assert "A2" not in err.detail and "west" not in err.detail


def test_csv_too_many_fields(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\nA1,east,2010-05-01,1,2,true,SECRET\n")
    err = read_error(str(path), table)
    assert (err.code, err.line) == ("malformed_csv", 2)
    assert "SECRET" not in str(err.problem())


def test_csv_bad_quoting(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f'{HEADER}\nA1,east,2010-05-01,1,2,true\nA2,"we"st,2010-05-01,1,2,true\n')
    err = read_error(str(path), table)
    assert err.code == "malformed_csv"
    assert (err.file, err.line, err.column) == (str(path), 3, "district")
    assert "quot" in err.detail


def test_csv_unterminated_quote(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f'{HEADER}\nA1,east,2010-05-01,1,2,true\nA2,"west,2010-05-01,1,2,true\n')
    err = read_error(str(path), table)
    assert (err.code, err.line) == ("malformed_csv", 3)


def test_csv_invalid_utf8(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        f"{HEADER}\nA1,east,2010-05-01,1,2,true\nA2,w\xffst,,1,2,true\n".encode("latin-1")
    )
    err = read_error(str(path), table)
    assert err.code == "invalid_encoding"
    assert (err.file, err.line, err.column) == (str(path), 3, "district")


def test_csv_invalid_gbk(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    good = f"{HEADER}\nA1,东城,2010-05-01,1,2,true\n".encode("gbk")
    path.write_bytes(good + b"A2,west,2010-05-01,\xff\xff,2,true\n")
    err = read_error(str(path), table, encoding="gbk")
    assert err.code == "invalid_encoding"
    assert (err.file, err.line, err.column) == (str(path), 3, "revenue")
    assert "gbk" in err.detail


def test_csv_wrong_types_counted_and_located(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        f"{HEADER}\n"
        "A1,east,2010-05-01,1,2,true\n"
        "A2,east,2010-05-01,1,two,true\n"
        "A3,east,2010-02-30,1,2,true\n"
        "A4,east,2010-05-01,1,3.5,maybe\n"
    )
    err = read_error(str(path), table)
    assert err.code == "type_conversion"
    assert (err.file, err.line, err.column) == (str(path), 3, "staff")
    assert err.extra["failures"] == {"staff": 2, "founded": 1, "active": 1}
    assert "two" not in err.detail


def test_csv_missing_unit_column(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("district,founded,revenue,staff,active\neast,2010-05-01,1,2,true\n")
    err = read_error(str(path), table)
    assert err.code == "missing_unit_column"
    assert (err.file, err.line, err.column) == (str(path), 1, "credit_code")


def test_csv_missing_declared_column(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("credit_code,district,founded,revenue,active\nA1,east,2010-05-01,1,true\n")
    err = read_error(str(path), table)
    assert (err.code, err.column) == ("schema_mismatch", "staff")


def test_csv_undeclared_column(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER},phone\nA1,east,2010-05-01,1,2,true,555\n")
    err = read_error(str(path), table)
    assert (err.code, err.line, err.column) == ("schema_mismatch", 1, "phone")
    # …unless told to drop undeclared columns
    reader = connect(str(path), extra_columns="ignore").open(table)
    assert rows(reader) == [("A1", "east", "2010-05-01", 1.0, 2, True)]


@pytest.mark.parametrize("content", ["", "\n\n", HEADER + "\n"])
def test_csv_empty(tmp_path: Path, table: Table, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    err = read_error(str(path), table)
    assert err.code == "empty_source"
    assert err.file == str(path)


def test_csv_glob_with_different_headers(tmp_path: Path, table: Table) -> None:
    (tmp_path / "a.csv").write_text(GOOD_CSV)
    reordered = "district,credit_code,founded,revenue,staff,active\neast,A9,2010-05-01,1,2,true\n"
    (tmp_path / "b.csv").write_text(reordered)
    err = read_error(str(tmp_path / "*.csv"), table)
    assert (err.code, err.file, err.line) == ("schema_mismatch", str(tmp_path / "b.csv"), 1)


def test_csv_error_in_second_file_names_it(tmp_path: Path, table: Table) -> None:
    (tmp_path / "a.csv").write_text(GOOD_CSV)
    (tmp_path / "b.csv").write_text(f"{HEADER}\nB1,east,2010-05-01,1,2,true\nB2,east\n")
    err = read_error(str(tmp_path / "*.csv"), table)
    assert (err.code, err.file, err.line) == ("malformed_csv", str(tmp_path / "b.csv"), 3)


def test_missing_files(tmp_path: Path, table: Table) -> None:
    err = read_error(str(tmp_path / "nope.csv"), table)
    assert (err.code, err.file) == ("source_not_found", str(tmp_path / "nope.csv"))
    err = read_error(str(tmp_path / "nope-*.csv"), table)
    assert err.code == "source_not_found"


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_and_directory_of_parts(tmp_path: Path, table: Table) -> None:
    data = good_arrow()
    pq.write_table(data.slice(0, 2), tmp_path / "part-0.parquet")
    pq.write_table(data.slice(2), tmp_path / "part-1.parquet")
    assert rows(connect(str(tmp_path / "part-0.parquet")).open(table)) == GOOD_ROWS[:2]
    assert rows(connect(str(tmp_path / "*.parquet")).open(table)) == GOOD_ROWS
    assert rows(connect(str(tmp_path), format="parquet").open(table)) == GOOD_ROWS


def test_parquet_converts_compatible_types(tmp_path: Path, table: Table) -> None:
    data = good_arrow()
    data = data.set_column(4, "staff", pa.array([3, 60, None, 5], pa.int16()))
    data = data.set_column(3, "revenue", pa.array([10, 200, 50, -1], pa.int32()))
    data = data.set_column(
        2,
        "founded",
        pa.array(["2010-05-01", "2020-01-31", None, "1999-12-31"], pa.large_string()),
    )
    data = data.set_column(1, "district", data.column(1).dictionary_encode())
    pq.write_table(data, tmp_path / "x.parquet")
    got = rows(connect(str(tmp_path / "x.parquet")).open(table))
    assert [r[3] for r in got] == [10.0, 200.0, 50.0, -1.0]
    assert [r[:3] + r[4:] for r in got] == [r[:3] + r[4:] for r in GOOD_ROWS]


def test_parquet_wrong_values_located_by_row(tmp_path: Path, table: Table) -> None:
    data = good_arrow().set_column(4, "staff", pa.array(["3", "0x10", None, "5.5"], pa.string()))
    path = tmp_path / "x.parquet"
    pq.write_table(data, path, row_group_size=2)
    err = read_error(str(path), table, batch_size="1")
    assert err.code == "type_conversion"
    assert (err.file, err.row, err.column) == (str(path), 2, "staff")
    assert err.extra["failures"] == {"staff": 2}


def test_parquet_incompatible_type(tmp_path: Path, table: Table) -> None:
    data = good_arrow().set_column(4, "staff", pa.array([True, False, None, True]))
    path = tmp_path / "x.parquet"
    pq.write_table(data, path)
    err = read_error(str(path), table)
    assert (err.code, err.file, err.column) == ("schema_mismatch", str(path), "staff")
    assert "bool" in err.detail


def test_parquet_fractional_integer_and_timestamp_dates(tmp_path: Path, table: Table) -> None:
    from datetime import datetime

    data = good_arrow()
    data = data.set_column(4, "staff", pa.array([3.0, 60.0, None, 5.25]))
    data = data.set_column(
        2,
        "founded",
        pa.array(
            [datetime(2010, 5, 1), datetime(2020, 1, 31, 12, 0), None, datetime(1999, 12, 31)],
            pa.timestamp("us"),
        ),
    )
    path = tmp_path / "x.parquet"
    pq.write_table(data, path)
    err = read_error(str(path), table)
    assert err.code == "type_conversion"
    assert (err.row, err.column) == (2, "founded")
    assert err.extra["failures"] == {"founded": 1, "staff": 1}


def test_parquet_missing_unit_and_schema_drift(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(good_arrow().drop_columns(["credit_code"]), path)
    err = read_error(str(path), table)
    assert (err.code, err.file, err.column) == ("missing_unit_column", str(path), "credit_code")
    pq.write_table(good_arrow(), tmp_path / "a.parquet")
    drifted = good_arrow().set_column(4, "staff", pa.array([1, 2, 3, 4], pa.int32()))
    pq.write_table(drifted, tmp_path / "b.parquet")
    err = read_error(str(tmp_path / "[ab].parquet"), table)
    assert (err.code, err.file, err.column) == (
        "schema_mismatch",
        str(tmp_path / "b.parquet"),
        "staff",
    )


def test_parquet_corrupt_and_empty(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"this is not parquet at all")
    err = read_error(str(path), table)
    assert (err.code, err.file) == ("malformed_file", str(path))
    path.write_bytes(b"")
    assert read_error(str(path), table).code == "empty_source"
    pq.write_table(good_arrow().slice(0, 0), path)
    assert read_error(str(path), table).code == "empty_source"


# --- Arrow IPC --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_arrow_ipc(tmp_path: Path, table: Table, fmt: str) -> None:
    data = good_arrow()
    path = tmp_path / ("x.arrow" if fmt == "file" else "x.arrows")
    writer_cls = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
    with pa.OSFile(str(path), "wb") as sink, writer_cls(sink, data.schema) as writer:
        writer.write_table(data, max_chunksize=3)
    assert rows(connect(str(path)).open(table)) == GOOD_ROWS


def test_arrow_ipc_corrupt(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "x.arrow"
    path.write_bytes(b"ARROW1 but then garbage")
    err = read_error(str(path), table)
    assert (err.code, err.file) == ("malformed_file", str(path))


# --- JSON lines -------------------------------------------------------------------------------


def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def good_records() -> list[dict[str, Any]]:
    keys = HEADER.split(",")
    return [dict(zip(keys, r, strict=True)) for r in GOOD_ROWS]


def test_jsonl(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "x.jsonl"
    records = good_records()
    records[2].pop("founded")  # an absent key is a null
    path.write_text(jsonl(records[:2]) + "\n" + jsonl(records[2:]))
    assert rows(connect(str(path)).open(table)) == GOOD_ROWS


def test_jsonl_malformed_line(tmp_path: Path, table: Table) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(jsonl(good_records()[:2]) + '{"credit_code": "A3", \n')
    err = read_error(str(path), table)
    assert (err.code, err.file, err.line) == ("malformed_json", str(path), 3)


def test_jsonl_wrong_type(tmp_path: Path, table: Table) -> None:
    records = good_records()
    records[1]["staff"] = "sixty"
    records[3]["staff"] = 5.5
    path = tmp_path / "x.jsonl"
    path.write_text(jsonl(records))
    err = read_error(str(path), table)
    assert err.code == "type_conversion"
    assert (err.file, err.line, err.row, err.column) == (str(path), 2, 2, "staff")
    assert err.extra["failures"] == {"staff": 2}


def test_jsonl_bad_date_located_by_line(tmp_path: Path, table: Table) -> None:
    records = good_records()
    records[2]["founded"] = "31/12/1999"
    path = tmp_path / "x.jsonl"
    path.write_text("\n" + jsonl(records))  # a blank first line: row 3 is line 4
    err = read_error(str(path), table)
    assert (err.code, err.line, err.row, err.column) == ("type_conversion", 4, 3, "founded")


def test_jsonl_missing_unit_and_extra_field(tmp_path: Path, table: Table) -> None:
    records = [{k: v for k, v in r.items() if k != "credit_code"} for r in good_records()]
    path = tmp_path / "x.jsonl"
    path.write_text(jsonl(records))
    err = read_error(str(path), table)
    assert (err.code, err.column) == ("missing_unit_column", "credit_code")
    records = good_records()
    records[1]["phone"] = "555"
    path.write_text(jsonl(records))
    err = read_error(str(path), table)
    assert (err.code, err.line, err.column) == ("schema_mismatch", 2, "phone")


# --- source strings ---------------------------------------------------------------------------


def test_unknown_extension_and_options(tmp_path: Path, table: Table) -> None:
    with pytest.raises(SourceError) as info:
        connect(str(tmp_path / "x.xlsx"))
    assert info.value.code == "invalid_source"
    with pytest.raises(SourceError) as info:
        connect(str(tmp_path / "x.csv"), delimiter="ab")
    assert info.value.code == "invalid_source"
    with pytest.raises(SourceError) as info:
        connect(str(tmp_path / "x.csv"), sheet="1")
    assert info.value.code == "invalid_source"
    with pytest.raises(SourceError) as info:
        connect(str(tmp_path / "x.csv"), encoding="klingon")
    assert info.value.code == "invalid_source"
