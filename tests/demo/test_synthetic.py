"""The synthetic demo data and the demo zone's package data (sandbox/demo/)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sandbox.demo import synthetic as demo_data

DEMO_DIR = Path(__file__).resolve().parents[2] / "sandbox" / "demo" / "data"
MONTHLY = ("tax", "social_insurance", "utilities")
ARROW_TYPES = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
}
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def load_toml(name: str) -> dict[str, Any]:
    with (DEMO_DIR / name).open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return demo_data.generate(3_000, seed=7)


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    return load_toml("enterprise.toml")


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_tables(tables: dict[str, pa.Table]) -> None:
    again = demo_data.generate(3_000, seed=7)
    assert set(again) == set(tables) == set(demo_data.TABLES)
    for name in demo_data.TABLES:
        assert again[name].equals(tables[name]), name


def test_other_seed_differs(tables: dict[str, pa.Table]) -> None:
    other = demo_data.generate(3_000, seed=8)
    for name in demo_data.TABLES:
        assert not other[name].equals(tables[name]), name


def test_prefix_is_stable(tables: dict[str, pa.Table]) -> None:
    small = demo_data.generate(1_234, seed=7)
    assert small["registry"].equals(tables["registry"].slice(0, 1_234))
    for name in MONTHLY:
        n = small[name].num_rows
        assert small[name].equals(tables[name].slice(0, n)), name


# --- schema vs policy ----------------------------------------------------------------------


def test_policy_declares_exactly_the_generated_columns(
    tables: dict[str, pa.Table], policy: dict[str, Any]
) -> None:
    assert set(policy["tables"]) == set(demo_data.TABLES)
    unit = policy["privacy_unit"]
    for name, spec in policy["tables"].items():
        schema = tables[name].schema
        assert schema == demo_data.SCHEMAS[name]
        declared = spec["columns"]
        assert list(declared) == schema.names, name
        for column, col in declared.items():
            assert schema.field(column).type == ARROW_TYPES[col["type"]], (name, column)
        assert declared[unit]["role"] == "unit"
        assert [c for c, col in declared.items() if col["role"] == "unit"] == [unit]


def test_policy_values_cover_the_data(tables: dict[str, pa.Table], policy: dict[str, Any]) -> None:
    for name, spec in policy["tables"].items():
        table = tables[name]
        for column, col in spec["columns"].items():
            values = table.column(column)
            if "keys" in col:
                assert set(values.unique().to_pylist()) <= set(col["keys"]), (name, column)
            if "public_range" in col:
                lo, hi = (dt.date.fromisoformat(d) for d in col["public_range"])
                assert lo <= pc.min(values).as_py() and pc.max(values).as_py() <= hi
            if col["role"] == "measure":
                assert col["lower"] < col["upper"]
                candidates = col.get("candidates")
                if candidates is not None:
                    assert candidates == sorted(candidates)
                    assert col["lower"] <= candidates[0] and candidates[-1] <= col["upper"]
                x = values.to_numpy()
                inside = ((x >= col["lower"]) & (x <= col["upper"])).mean()
                assert inside > 0.97, (name, column, inside)  # clamping trims only a tail


def test_enterprise_policy_header(policy: dict[str, Any]) -> None:
    assert policy["id"] == "enterprise"
    assert policy["privacy_unit"] == "credit_code"
    assert policy["max_groups_per_unit"] == 36
    assert policy["tables"]["registry"]["max_rows_per_unit"] == 1
    for name in MONTHLY:
        assert policy["tables"][name]["max_rows_per_unit"] == 36
        assert policy["tables"][name]["columns"]["month"]["public_range"] == [
            "2022-01-01",
            "2024-12-01",
        ]


def test_zone_file() -> None:
    zone = load_toml("zone.toml")
    assert zone["id"] == "beijing-finance"
    assert zone["kind"] == "domain"
    assert set(zone) == {"id", "kind", "title", "operator", "description", "datasets"}
    sources = {d["id"]: d["source"] for d in zone["datasets"]}
    assert sources == {"enterprise": "synthetic:enterprise", "cps1988": "cps1988.parquet"}
    for dataset in zone["datasets"]:
        assert set(dataset) == {"id", "policy", "source"}
        assert load_toml(dataset["policy"])["id"] == dataset["id"]
    assert (DEMO_DIR / "cps1988.parquet").is_file()
    assert (DEMO_DIR / "ATTRIBUTION.md").is_file()


# --- contribution bounds and credit codes --------------------------------------------------


def test_rows_per_unit_bounded(tables: dict[str, pa.Table]) -> None:
    codes = tables["registry"].column("credit_code")
    assert pc.count_distinct(codes).as_py() == len(codes)
    for name in MONTHLY:
        table = tables[name]
        counts = table.group_by("credit_code").aggregate([("month", "count_distinct")])
        per_unit = table.group_by("credit_code").aggregate([("month", "count")])
        assert pc.max(per_unit.column("month_count")).as_py() <= 36
        assert counts.num_rows == per_unit.num_rows
        assert pc.all(pc.equal(counts.column(1), per_unit.column(1))).as_py()  # no duplicates
        assert pc.all(pc.is_in(table.column("credit_code"), value_set=codes)).as_py()


def test_credit_codes_are_valid(tables: dict[str, pa.Table]) -> None:
    weights = [pow(3, i, 31) for i in range(17)]
    org_weights = [3, 7, 9, 10, 5, 8, 4, 2]
    for code in tables["registry"].column("credit_code").to_pylist():
        assert len(code) == 18 and set(code) <= set(USCC_CHARSET)
        assert code[:2] == "91" and code[2:4] == "11"
        total = sum(USCC_CHARSET.index(c) * w for c, w in zip(code[:17], weights, strict=True))
        assert USCC_CHARSET[(31 - total % 31) % 31] == code[17]
        org = sum(
            (int(c) if c.isdigit() else ord(c) - 55) * w
            for c, w in zip(code[8:16], org_weights, strict=True)
        )
        check = 11 - org % 11
        assert code[16] == {10: "X", 11: "0"}.get(check, str(check))
    assert demo_data.credit_code_check_char("91350100M000100Y4") == "3"  # a published example


# --- plausibility --------------------------------------------------------------------------


def test_distributions_are_plausible(tables: dict[str, pa.Table]) -> None:
    registry, tax = tables["registry"], tables["tax"]
    revenue = tax.column("revenue").to_numpy()
    positive = revenue[revenue > 0]
    assert positive.mean() / np.median(positive) > 2.5  # log-normal long tail
    assert 0.02 < (revenue == 0).mean() < 0.3  # zero declarations
    assert 0.005 < pc.mean(tax.column("arrears").cast(pa.int8())).as_py() < 0.1
    assert pc.mean(tables["social_insurance"].column("arrears").cast(pa.int8())).as_py() > 0.005

    per_unit = tax.group_by("credit_code").aggregate([("month", "count")])
    months = per_unit.column("month_count").to_numpy()
    assert (months == 36).mean() > 0.4  # most file every month ...
    assert (months < 36).mean() > 0.2  # ... but gaps, late starts and exits exist
    assert tax.num_rows / registry.num_rows > 20

    status = pc.value_counts(registry.column("status")).to_pylist()
    shares = {s["values"]: s["counts"] / registry.num_rows for s in status}
    assert shares["in_business"] > 0.75 and set(shares) == set(demo_data.STATUSES)
    founded = registry.column("founded").to_numpy().astype("datetime64[D]")
    assert (founded >= np.datetime64("2022-01-01")).mean() > 0.05  # some start late

    elec = tables["utilities"].column("electricity_kwh").to_numpy()
    assert 0.02 < (elec == 0).mean() < 0.4  # dormant firms
    headcount = tables["social_insurance"].column("headcount").to_numpy()
    assert headcount.min() >= 0 and headcount.mean() > np.median(headcount)
    assert set(registry.column("district").unique().to_pylist()) == set(demo_data.DISTRICTS)
    assert set(registry.column("industry").unique().to_pylist()) == set(demo_data.INDUSTRIES)


# --- streaming writer ----------------------------------------------------------------------


def test_write_parquet_hits_the_row_target(tmp_path: Path) -> None:
    seen: list[int] = []
    paths = demo_data.write_parquet(
        tmp_path / "out", 50_000, seed=11, progress=seen.append, chunk_enterprises=700
    )
    assert paths == {t: tmp_path / "out" / f"{t}.parquet" for t in demo_data.TABLES}
    tax_rows = pq.ParquetFile(paths["tax"]).metadata.num_rows
    assert abs(tax_rows - 50_000) <= 0.05 * 50_000
    assert 50_000 <= tax_rows < 50_000 + 36
    assert seen and seen[-1] == tax_rows and seen == sorted(seen)

    written = {t: pq.read_table(p) for t, p in paths.items()}
    in_memory = demo_data.generate(written["registry"].num_rows, seed=11)
    for name in demo_data.TABLES:
        assert written[name].schema == demo_data.SCHEMAS[name]
        assert written[name].equals(in_memory[name]), name


def test_write_parquet_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        demo_data.write_parquet(tmp_path, 0)
    with pytest.raises(ValueError):
        demo_data.generate(0)


# --- cps1988 -------------------------------------------------------------------------------


def test_cps1988_policy_covers_the_file() -> None:
    policy = load_toml("cps1988.toml")
    assert policy["privacy_unit"] == "person_id"
    table = pq.read_table(DEMO_DIR / "cps1988.parquet")
    (name,) = policy["tables"]
    columns = policy["tables"][name]["columns"]
    assert (columns["person_id"]["type"], columns["person_id"]["role"]) == ("integer", "unit")
    assert set(columns) == {"person_id", *table.column_names}
    for column in table.column_names:
        col = columns[column]
        assert table.schema.field(column).type == ARROW_TYPES[col["type"]], column
        if "keys" in col:
            assert col["role"] == "dimension"
            assert set(table.column(column).unique().to_pylist()) <= set(col["keys"]), column
        if col["role"] == "measure":
            x = table.column(column).to_numpy()
            assert ((x >= col["lower"]) & (x <= col["upper"])).mean() > 0.99, column
    for column in ("education", "experience"):
        x = table.column(column).to_numpy()
        assert columns[column]["lower"] <= x.min() and x.max() <= columns[column]["upper"]
