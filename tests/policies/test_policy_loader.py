"""Policy loading: the demo policies validate, and every bad policy names its file, key and rule."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.loader import load_policy, parse_policy
from policies.model import ColumnType, PublicPolicy, Role
from tests.support.data import data_path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "bad.toml"

BASE = """\
id = "bad-policy_1"
title = "A policy"
privacy_unit = "uid"
max_groups_per_unit = 2
min_group_size = 0

[tables.t]
max_rows_per_unit = 3

[tables.t.columns.uid]
type = "string"
role = "unit"

[tables.t.columns.kind]
type = "string"
role = "dimension"
keys = ["a", "b"]

[tables.t.columns.day]
type = "date"
role = "dimension"
public_range = ["2020-01-01", "2020-12-31"]

[tables.t.columns.amount]
type = "float"
role = "measure"
lower = 0
upper = 10
candidates = [0, 5, 10]
"""

UNIT = '[tables.t.columns.uid]\ntype = "string"\nrole = "unit"\n'
KIND = '[tables.t.columns.kind]\ntype = "string"\nrole = "dimension"\nkeys = ["a", "b"]\n'
RANGE = 'public_range = ["2020-01-01", "2020-12-31"]'
AMOUNT_BOUNDS = "lower = 0\nupper = 10\n"
CANDIDATES = "candidates = [0, 5, 10]"


def variant(old: str, new: str) -> str:
    """BASE with exactly one occurrence of ``old`` replaced by ``new``."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


# --- good policies ---------------------------------------------------------------------------


def test_base_policy_is_valid() -> None:
    policy = parse_policy(BASE, SOURCE)
    assert policy.dataset == "bad-policy_1"
    assert policy.privacy_unit == "uid"
    (table,) = policy.tables
    assert [c.name for c in table.columns] == ["uid", "kind", "day", "amount"]
    amount = table.column("amount")
    assert amount is not None
    assert (amount.lower, amount.upper, amount.candidates) == (0.0, 10.0, (0.0, 5.0, 10.0))
    day = table.column("day")
    assert day is not None and day.public_range == (date(2020, 1, 1), date(2020, 12, 31))


def test_enterprise_policy_loads() -> None:
    policy = load_policy(ROOT / "sandbox" / "demo" / "data" / "enterprise.toml")
    assert policy.dataset == "enterprise"
    assert policy.privacy_unit == "credit_code"
    assert (policy.max_groups_per_unit, policy.min_group_size) == (36, 10)
    assert [t.name for t in policy.tables] == ["registry", "tax", "social_insurance", "utilities"]
    for table in policy.tables:
        units = [c for c in table.columns if c.role == Role.UNIT]
        assert [c.name for c in units] == ["credit_code"]
    registry = policy.table("registry")
    assert registry is not None and registry.max_rows_per_unit == 1
    name = registry.column("name")
    assert name is not None and name.role == Role.HIDDEN
    tax = policy.table("tax")
    assert tax is not None and tax.max_rows_per_unit == 36
    revenue = tax.column("revenue")
    assert revenue is not None and revenue.type == ColumnType.FLOAT
    assert (revenue.lower, revenue.upper) == (0.0, 5_000_000.0)
    arrears = tax.column("arrears")
    assert arrears is not None and arrears.keys == (True, False)
    # The public view never lists hidden columns.
    registry_view = next(t for t in PublicPolicy.of(policy).tables if t.name == "registry")
    assert "name" not in [c.name for c in registry_view.columns]
    assert "credit_code" in [c.name for c in registry_view.columns]


def test_cps1988_policy_loads() -> None:
    policy = load_policy(ROOT / "sandbox" / "demo" / "data" / "cps1988.toml")
    assert policy.dataset == "cps1988"
    assert policy.privacy_unit == "person_id"
    assert [t.name for t in policy.tables] == ["cps1988"]


def test_small_test_policy_loads() -> None:
    policy = load_policy(data_path("policy_small.toml"))
    assert policy.dataset == "firms"
    assert [t.name for t in policy.tables] == ["firms", "sales"]
    firms = policy.table("firms")
    assert firms is not None
    rating = firms.column("rating")
    assert rating is not None and rating.role == Role.FILTER
    capital = firms.column("capital")
    assert capital is not None and len(capital.quantile_candidates()) == 65


def test_error_message_names_file_key_and_rule() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(variant("max_rows_per_unit = 3", "max_rows_per_unit = 0"), SOURCE)
    err = info.value
    assert str(err).startswith("bad.toml: tables.t.max_rows_per_unit: range: ")
    assert err.code == "invalid_policy" and err.status == 422
    problem = err.problem()
    assert (problem["file"], problem["key"], problem["rule"]) == (
        SOURCE,
        "tables.t.max_rows_per_unit",
        "range",
    )


def test_load_policy_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BASE.replace('id = "bad-policy_1"', 'id = "Bad Id"'), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert (info.value.file, info.value.key, info.value.rule) == (str(path), "id", "identifier")


# --- bad policies ----------------------------------------------------------------------------
# (policy text, expected key, expected rule or None)

BAD = [
    pytest.param(BASE + "oops = \n", "(document)", "toml_syntax", id="toml_syntax"),
    pytest.param(
        BASE + '[tables.t.columns.kind]\ntype = "string"\n',
        "(document)",
        "toml_syntax",
        id="toml_duplicate_table",
    ),
    pytest.param('colour = "red"\n' + BASE, "colour", "unknown_key", id="unknown_top_key"),
    pytest.param(
        variant("max_rows_per_unit = 3", "max_rows_per_unit = 3\nrows = 1"),
        "tables.t.rows",
        "unknown_key",
        id="unknown_table_key",
    ),
    pytest.param(
        variant(CANDIDATES, CANDIDATES + "\nunit = 'CNY'"),
        "tables.t.columns.amount.unit",
        "unknown_key",
        id="unknown_column_key",
    ),
    pytest.param(
        variant(UNIT, UNIT.replace('role = "unit"', 'role = "unit"\nhidden = true')),
        "tables.t.columns.uid.hidden",
        "unknown_key",
        id="unknown_unit_column_key",
    ),
    pytest.param(
        variant(KIND, KIND.replace('role = "dimension"', 'role = "secret"')),
        "tables.t.columns.kind.role",
        "enum",
        id="bad_role",
    ),
    pytest.param(
        variant(KIND, KIND.replace('type = "string"', 'type = "text"')),
        "tables.t.columns.kind.type",
        "enum",
        id="bad_type",
    ),
    pytest.param(
        variant(KIND, KIND.replace('type = "string"\n', "")),
        "tables.t.columns.kind.type",
        "required",
        id="missing_type",
    ),
    pytest.param(
        variant(KIND, KIND.replace('role = "dimension"', "role = 1")),
        "tables.t.columns.kind.role",
        "type",
        id="role_not_a_string",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "upper = 10\n"),
        "tables.t.columns.amount",
        "clamp_bounds",
        id="measure_without_lower",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS + CANDIDATES, ""),
        "tables.t.columns.amount",
        "clamp_bounds",
        id="measure_without_bounds",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = 10\nupper = 10\n"),
        "tables.t.columns.amount.upper",
        "clamp_bounds",
        id="lower_equals_upper",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = 11\nupper = 10\n"),
        "tables.t.columns.amount.upper",
        "clamp_bounds",
        id="lower_above_upper",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = -0.0\nupper = 0.0\n"),
        "tables.t.columns.amount.upper",
        "clamp_bounds",
        id="signed_zero_bounds",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = nan\nupper = 10\n"),
        "tables.t.columns.amount.lower",
        "type",
        id="nan_bound",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = 0\nupper = inf\n"),
        "tables.t.columns.amount.upper",
        "type",
        id="infinite_bound",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, "lower = 0\nupper = true\n"),
        "tables.t.columns.amount.upper",
        "type",
        id="boolean_bound",
    ),
    pytest.param(
        variant(AMOUNT_BOUNDS, 'lower = 0\nupper = "10"\n'),
        "tables.t.columns.amount.upper",
        "type",
        id="string_bound",
    ),
    pytest.param(
        variant('type = "float"\nrole = "measure"', 'type = "string"\nrole = "measure"'),
        "tables.t.columns.amount.type",
        "measure_type",
        id="string_measure",
    ),
    pytest.param(
        variant(KIND, KIND + "lower = 0\nupper = 1\n"),
        "tables.t.columns.kind",
        "clamp_bounds",
        id="bounds_on_dimension",
    ),
    pytest.param(
        variant(CANDIDATES, "keys = [1.0, 2.0]\n" + CANDIDATES),
        "tables.t.columns.amount.keys",
        "keys_role",
        id="keys_on_measure",
    ),
    pytest.param(
        variant(UNIT, UNIT + 'keys = ["x"]\n'),
        "tables.t.columns.uid.keys",
        "keys_role",
        id="keys_on_unit",
    ),
    pytest.param(
        variant('keys = ["a", "b"]', 'keys = ["a", "a"]'),
        "tables.t.columns.kind.keys",
        "duplicate_key",
        id="duplicate_keys",
    ),
    pytest.param(
        variant('keys = ["a", "b"]', 'keys = ["a", 1]'),
        "tables.t.columns.kind.keys",
        "key_type",
        id="key_type",
    ),
    pytest.param(
        variant('keys = ["a", "b"]', "keys = []"),
        "tables.t.columns.kind.keys",
        "type",
        id="empty_keys",
    ),
    pytest.param(
        variant(
            'keys = ["a", "b"]', "keys = [" + ", ".join(f'"k{i}"' for i in range(10_001)) + "]"
        ),
        "tables.t.columns.kind.keys",
        "too_many_keys",
        id="too_many_keys",
    ),
    pytest.param(
        variant(KIND, KIND + 'public_range = ["2020-01-01", "2020-12-31"]\n'),
        "tables.t.columns.kind.public_range",
        "public_range_type",
        id="public_range_on_string",
    ),
    pytest.param(
        variant(CANDIDATES, CANDIDATES + '\npublic_range = ["2020-01-01", "2020-12-31"]'),
        "tables.t.columns.amount.public_range",
        "public_range_type",
        id="public_range_on_measure",
    ),
    pytest.param(
        variant(RANGE, 'public_range = ["2021-01-01", "2020-12-31"]'),
        "tables.t.columns.day.public_range",
        "range",
        id="public_range_reversed",
    ),
    pytest.param(
        variant(RANGE, 'public_range = ["2020-01-01"]'),
        "tables.t.columns.day.public_range",
        "type",
        id="public_range_one_date",
    ),
    pytest.param(
        variant(RANGE, 'public_range = ["2020-01-01", "2020-13-01"]'),
        "tables.t.columns.day.public_range",
        "date",
        id="public_range_bad_date",
    ),
    pytest.param(
        variant(RANGE, "public_range = [10:00:00, 2020-12-31]"),
        "tables.t.columns.day.public_range",
        "date",
        id="public_range_time_of_day",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [0, 6, 5]"),
        "tables.t.columns.amount.candidates",
        "sorted",
        id="candidates_unsorted",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [0, 5, 5]"),
        "tables.t.columns.amount.candidates",
        "sorted",
        id="candidates_repeated",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [0, 5, 11]"),
        "tables.t.columns.amount.candidates",
        "clamp_bounds",
        id="candidates_above_upper",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [-1, 5]"),
        "tables.t.columns.amount.candidates",
        "clamp_bounds",
        id="candidates_below_lower",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [5]"),
        "tables.t.columns.amount.candidates",
        "type",
        id="one_candidate",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [0, true]"),
        "tables.t.columns.amount.candidates",
        "type",
        id="boolean_candidate",
    ),
    pytest.param(
        variant(KIND, KIND + "candidates = [0, 1]\n"),
        "tables.t.columns.kind.candidates",
        "candidates_role",
        id="candidates_on_dimension",
    ),
    pytest.param(
        variant(UNIT, ""),
        "tables.t.columns",
        "privacy_unit",
        id="no_unit_column",
    ),
    pytest.param(
        variant('privacy_unit = "uid"', 'privacy_unit = "firm"'),
        "tables.t.columns",
        "privacy_unit",
        id="unit_name_mismatch",
    ),
    pytest.param(
        variant(KIND, KIND.replace('role = "dimension"\nkeys = ["a", "b"]', 'role = "unit"')),
        "tables.t.columns",
        "privacy_unit",
        id="two_unit_columns",
    ),
    pytest.param(
        variant("max_rows_per_unit = 3", "max_rows_per_unit = 0"),
        "tables.t.max_rows_per_unit",
        "range",
        id="max_rows_zero",
    ),
    pytest.param(
        variant("max_rows_per_unit = 3", 'max_rows_per_unit = "3"'),
        "tables.t.max_rows_per_unit",
        "type",
        id="max_rows_string",
    ),
    pytest.param(
        variant("max_rows_per_unit = 3", "max_rows_per_unit = true"),
        "tables.t.max_rows_per_unit",
        "type",
        id="max_rows_boolean",
    ),
    pytest.param(
        variant("max_rows_per_unit = 3\n", ""),
        "tables.t.max_rows_per_unit",
        "required",
        id="max_rows_missing",
    ),
    pytest.param(
        variant("max_groups_per_unit = 2", "max_groups_per_unit = 0"),
        "max_groups_per_unit",
        "range",
        id="max_groups_zero",
    ),
    pytest.param(
        variant("min_group_size = 0", "min_group_size = -1"),
        "min_group_size",
        "range",
        id="min_group_size_negative",
    ),
    pytest.param(
        variant('id = "bad-policy_1"', 'id = "Bad Id"'), "id", "identifier", id="bad_dataset_id"
    ),
    pytest.param(
        variant('id = "bad-policy_1"', 'id = "1abc"'), "id", "identifier", id="id_starts_digit"
    ),
    pytest.param(
        variant('id = "bad-policy_1"', 'id = "' + "a" * 64 + '"'),
        "id",
        "identifier",
        id="id_too_long",
    ),
    pytest.param(variant('id = "bad-policy_1"\n', ""), "id", "required", id="id_missing"),
    pytest.param(variant('id = "bad-policy_1"', "id = 7"), "id", "type", id="id_not_string"),
    pytest.param(variant('title = "A policy"\n', ""), "title", "required", id="title_missing"),
    pytest.param(
        variant('title = "A policy"', 'title = "A policy"\ndescription = 5'),
        "description",
        "type",
        id="description_not_string",
    ),
    pytest.param(
        variant('privacy_unit = "uid"\n', ""), "privacy_unit", "required", id="unit_missing"
    ),
    pytest.param(BASE.split("[tables.t]")[0], "tables", "required", id="no_tables"),
    pytest.param(
        BASE.split("[tables.t]")[0] + "tables = { t = 1 }\n", "tables.t", "type", id="table_scalar"
    ),
    pytest.param(
        BASE.replace("[tables.t]", "[tables.T]").replace("[tables.t.", "[tables.T."),
        "tables.T",
        "identifier",
        id="table_name_uppercase",
    ),
    pytest.param(
        variant("[tables.t.columns.kind]", '[tables.t.columns."Kind Name"]'),
        "tables.t.columns.Kind Name",
        "identifier",
        id="column_name_not_identifier",
    ),
    pytest.param(
        BASE.split("[tables.t.columns.uid]")[0],
        "tables.t.columns",
        "required",
        id="table_without_columns",
    ),
    pytest.param(
        variant(UNIT, "[tables.t.columns]\nuid = 1\n"),
        "tables.t.columns.uid",
        "type",
        id="column_scalar",
    ),
    # --- date-times, NaN ------------------------------------------------------------------------
    pytest.param(
        variant(RANGE, "public_range = [2020-01-01T00:00:00, 2020-12-31]"),
        "tables.t.columns.day.public_range",
        None,
        id="public_range_datetime_and_date",
    ),
    pytest.param(
        variant(RANGE, "public_range = [2020-01-01T00:00:00, 2020-12-31T00:00:00]"),
        "tables.t.columns.day.public_range",
        None,
        id="public_range_datetimes",
    ),
    pytest.param(
        variant(CANDIDATES, "candidates = [0, nan, 10]"),
        "tables.t.columns.amount.candidates",
        None,
        id="nan_candidate",
    ),
    pytest.param(
        variant(
            'type = "string"\nrole = "dimension"\nkeys = ["a", "b"]',
            'type = "float"\nrole = "dimension"\nkeys = [nan, nan]',
        ),
        "tables.t.columns.kind.keys",
        None,
        id="nan_keys",
    ),
]


@pytest.mark.parametrize(("text", "key", "rule"), BAD)
def test_bad_policy(text: str, key: str, rule: str | None) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SOURCE)
    err = info.value
    assert (err.file, err.key) == (SOURCE, key)
    if rule is not None:  # None: a defect whose fix may pick any rule code
        assert err.rule == rule
    assert err.extra == {"file": SOURCE, "key": key, "rule": err.rule}


def test_bad_policy_count() -> None:
    assert len([p for p in BAD if not p.marks]) >= 12
