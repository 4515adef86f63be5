"""Loading a version end to end: the workspace, the quality report, rules, quota, failures."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors.base import Progress
from connectors.errors import SourceError
from connectors.load import ingest
from connectors.quality.html import render_html
from connectors.quality.report import ColumnQuality, QualityReport, RuleResult, TableQuality
from connectors.quality.rules import load_rules, read_rules
from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import Policy
from tests.support.connectors import GOOD_CSV, HEADER, POLICY, good_arrow

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


def ws_rows(path: Path) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT * FROM firms ORDER BY credit_code").fetchall()
    finally:
        con.close()


def assert_nothing_written(workspace: Path) -> None:
    assert not workspace.exists()
    assert [p.name for p in workspace.parent.iterdir() if p.name.startswith(workspace.name)] == []


def test_quality_report_numbers(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(GOOD_CSV)
    workspace = tmp_path / "data" / "firms-v2.duckdb"
    report = ingest(policy, str(src), workspace, previous_rows={"firms": 5}, now=NOW)
    assert report.passed and report.status == "passed"
    assert len(ws_rows(workspace)) == 4
    (t,) = report.tables
    assert (t.name, t.rows, t.previous_rows, t.row_change, t.row_change_rate) == (
        "firms",
        4,
        5,
        -1,
        -0.2,
    )
    assert (t.units, t.duplicate_units, t.duplicate_unit_rows, t.units_over_bound) == (4, 0, 0, 0)
    cols = {c.name: c for c in t.columns}
    assert cols["credit_code"] == ColumnQuality(
        name="credit_code", type="string", role="unit", nulls=0, null_rate=0.0
    )
    assert cols["district"].keys_outside == 1 and cols["district"].distinct_keys_outside == 1
    founded = cols["founded"]
    assert (founded.nulls, founded.null_rate) == (1, 0.25)
    assert (founded.date_min, founded.date_max) == (date(1999, 12, 31), date(2020, 1, 31))
    assert founded.freshness_days == (date(2025, 1, 31) - date(2020, 1, 31)).days
    assert founded.outside_public_range == 1
    assert (cols["revenue"].out_of_bounds, cols["revenue"].out_of_bounds_share) == (2, 0.5)
    staff = cols["staff"]
    assert (staff.nulls, staff.out_of_bounds, staff.out_of_bounds_share) == (1, 1, 1 / 3)
    assert (cols["active"].keys_outside, cols["active"].nulls) == (0, 0)
    assert all(c.conversion_failures == 0 for c in t.columns)
    # the unit column is implicitly required
    assert [(r.rule, r.column, r.passed) for r in report.rules] == [
        ("required", "credit_code", True)
    ]
    # the report round-trips through JSON-able dicts
    assert QualityReport.from_dict(report.to_dict()) == report


def test_duplicates_and_units_over_bound(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(
        f"{HEADER}\nA1,east,,1,1,true\nA1,east,,1,1,true\nA1,east,,1,1,true\n"
        "A2,east,,1,1,true\nA2,east,,1,1,true\nA3,east,,1,1,true\n"
    )
    report = ingest(policy, str(src), tmp_path / "ws.duckdb", now=NOW)
    t = report.tables[0]
    assert (t.units, t.duplicate_units, t.duplicate_unit_rows, t.units_over_bound) == (3, 2, 3, 2)
    assert t.previous_rows is None and t.row_change is None


RULES = """
[tables.firms]
unique_unit = true

[tables.firms.columns.founded]
max_null_rate = 0.1

[tables.firms.columns.staff]
required = true
"""


def test_rules_fail_the_load_and_say_which(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(GOOD_CSV + "A4,east,2010-01-01,1,1,true\n")
    rules = read_rules(tomllib.loads(RULES), "firms.toml")
    workspace = tmp_path / "ws.duckdb"
    with pytest.raises(SourceError) as info:
        ingest(policy, str(src), workspace, rules=rules, now=NOW)
    err = info.value
    assert err.code == "quality_rule_failed" and err.status == 422
    assert_nothing_written(workspace)
    assert err.report is not None and err.report.status == "failed"
    failed = {(r.rule, r.column): r for r in err.report.failed_rules}
    assert set(failed) == {
        ("max_null_rate", "founded"),
        ("required", "staff"),
        ("unique_unit", "credit_code"),
    }
    null_rate = failed[("max_null_rate", "founded")]
    assert (null_rate.limit, null_rate.actual) == (0.1, 1 / 5)
    assert failed[("required", "staff")].actual == 1
    assert failed[("unique_unit", "credit_code")].actual == 1
    assert [r["rule"] for r in err.extra["failed_rules"]] == [
        r.rule for r in err.report.failed_rules
    ]
    assert err.report.tables[0].rows == 5  # the report still describes what was read


def test_rules_pass(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(f"{HEADER}\nA1,east,2010-01-01,1,1,true\nA2,west,,1,2,false\n")
    rules = read_rules(tomllib.loads(RULES.replace("0.1", "0.5")))
    report = ingest(policy, str(src), tmp_path / "ws.duckdb", rules=rules, now=NOW)
    assert report.passed
    assert {(r.rule, r.column) for r in report.rules} == {
        ("required", "credit_code"),
        ("required", "staff"),
        ("max_null_rate", "founded"),
        ("unique_unit", "credit_code"),
    }


def test_null_unit_fails_unless_allowed(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(f"{HEADER}\n,east,2010-01-01,1,1,true\nA2,west,,1,2,false\n")
    with pytest.raises(SourceError) as info:
        ingest(policy, str(src), tmp_path / "ws.duckdb", now=NOW)
    assert (info.value.code, info.value.column) == ("quality_rule_failed", "credit_code")
    doc = tomllib.loads("[tables.firms.columns.credit_code]\nrequired = false\n")
    report = ingest(policy, str(src), tmp_path / "ws.duckdb", rules=read_rules(doc), now=NOW)
    assert report.passed and report.rules == ()


def test_read_rules_validates(tmp_path: Path) -> None:
    for text, key in [
        ("[tables.t]\nunique_unit = 1\n", "tables.t.unique_unit"),
        ("[tables.t.columns.c]\nmax_null_rate = 1.5\n", "tables.t.columns.c.max_null_rate"),
        ("[tables.t.columns.c]\nmax_null_rate = true\n", "tables.t.columns.c.max_null_rate"),
        ("[tables.t.columns.c]\nrequired = 'yes'\n", "tables.t.columns.c.required"),
    ]:
        with pytest.raises(PolicyError) as info:
            read_rules(tomllib.loads(text), "p.toml")
        assert (info.value.file, info.value.key) == ("p.toml", key)
    path = tmp_path / "p.toml"
    text = POLICY.replace("[tables.firms]\n", "[tables.firms]\nunique_unit = true\n")
    text = text.replace(
        "[tables.firms.columns.staff]\n", "[tables.firms.columns.staff]\nrequired = true\n"
    )
    path.write_text(text)
    rules = load_rules(path).table("firms")
    assert rules.unique_unit is True
    assert rules.columns["staff"].required is True
    assert rules.columns["staff"].max_null_rate is None
    assert load_rules(path).table("other").unique_unit is False


def test_bad_source_writes_nothing_and_reports(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    body = "".join(f"U{i},east,2010-05-01,1,2,true\n" for i in range(3000))
    src.write_text(f"{HEADER}\n{body}U,east,2010-05-01,1,x,true\n{body}")
    workspace = tmp_path / "ws.duckdb"
    workspace.write_bytes(b"the previous version")  # must survive a failed load
    with pytest.raises(SourceError) as info:
        ingest(policy, str(src), workspace, now=NOW)
    err = info.value
    assert (err.code, err.file, err.line, err.row, err.column) == (
        "type_conversion",
        str(src),
        3002,
        3001,
        "staff",
    )
    assert workspace.read_bytes() == b"the previous version"
    assert not workspace.with_name(workspace.name + ".loading").exists()
    assert err.report is not None and err.report.error is not None
    assert err.report.error["code"] == "type_conversion"
    (t,) = err.report.tables
    assert t.rows == 6001
    assert t.column("staff") is not None
    staff = t.column("staff")
    assert staff is not None and (staff.conversion_failures, staff.nulls) == (1, 0)


def test_malformed_source_in_ingest(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(f"{HEADER}\nA1,east,2010-05-01,1,2,true\nA2,east\n")
    workspace = tmp_path / "ws.duckdb"
    with pytest.raises(SourceError) as info:
        ingest(policy, str(src), workspace)
    assert (info.value.code, info.value.line) == ("malformed_csv", 3)
    assert_nothing_written(workspace)
    assert info.value.report is not None and info.value.report.error is not None


def test_source_larger_than_quota(tmp_path: Path, policy: Policy) -> None:
    src = tmp_path / "firms.csv"
    src.write_text(GOOD_CSV)
    workspace = tmp_path / "ws.duckdb"
    with pytest.raises(SourceError) as info:
        ingest(policy, str(src), workspace, quota_bytes=100)
    err = info.value
    assert (err.code, err.file) == ("source_too_large", str(src))
    assert err.extra["quota_bytes"] == 100 and err.extra["size_bytes"] == len(GOOD_CSV)
    assert_nothing_written(workspace)


def test_multi_table_placeholder_and_progress(tmp_path: Path) -> None:
    head, _, body = POLICY.partition("[tables.firms]")
    sections = [
        f"[tables.{n}]" + body.replace("tables.firms", f"tables.{n}") for n in ("north", "south")
    ]
    two = parse_policy(head + "\n".join(sections), "two.toml")
    data = good_arrow()
    pq.write_table(data, tmp_path / "north.parquet")
    pq.write_table(data.slice(0, 2), tmp_path / "south.parquet")
    seen: list[Progress] = []
    report = ingest(
        two, str(tmp_path / "{table}.parquet"), tmp_path / "ws.duckdb", on_progress=seen.append
    )
    assert [(t.name, t.rows) for t in report.tables] == [("north", 4), ("south", 2)]
    assert {p.table for p in seen} == {"north", "south"}
    assert [p.rows for p in seen if p.table == "north"][-1] == 4
    with pytest.raises(SourceError) as info:
        ingest(two, str(tmp_path / "north.parquet"), tmp_path / "ws2.duckdb")
    assert info.value.code == "invalid_source"


def test_render_html_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    report = QualityReport(
        dataset="firms",
        source=f"/data/{evil}.csv",
        created_at=NOW,
        tables=(
            TableQuality(
                name="firms",
                rows=2,
                columns=(
                    ColumnQuality(
                        name=evil, type="string", role="dimension", nulls=1, null_rate=0.5
                    ),
                ),
            ),
        ),
        rules=(RuleResult("required", "firms", evil, False, 0, 1, evil),),
        error={"code": "malformed_csv", "detail": evil, "file": evil, "line": 3},
    )
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "failed" in page and "50.00%" in page
