"""The load-time column options of a policy: a generated row-number unit and missing-value codes,
and the rules that validate them (each failure names its key and rule)."""

from __future__ import annotations

from datetime import date

import pytest

from policies.errors import PolicyError
from policies.loader import parse_policy
from policies.model import ROW_NUMBER, PublicPolicy

SOURCE = "survey.toml"

SURVEY = """\
id = "survey"
title = "Survey"
privacy_unit = "person"
max_groups_per_unit = 1
min_group_size = 0

[tables.s]

[tables.s.columns.person]
type = "integer"
role = "unit"
generated = "row_number"

[tables.s.columns.region]
type = "string"
role = "dimension"
missing = ["NA", "-"]

[tables.s.columns.age]
type = "integer"
role = "measure"
lower = 0
upper = 97
missing = [98, 99]

[tables.s.columns.score]
type = "float"
role = "measure"
lower = 0
upper = 1
missing = [-1, 9.5]

[tables.s.columns.day]
type = "date"
role = "filter"
missing = [1900-01-01, "1901-01-01"]
"""
UNIT = 'type = "integer"\nrole = "unit"\ngenerated = "row_number"\n'
OTHER_TABLE = """
[tables.u]
max_rows_per_unit = 1
[tables.u.columns.person]
type = "integer"
role = "unit"
"""


def variant(old: str, new: str) -> str:
    assert SURVEY.count(old) == 1, old
    return SURVEY.replace(old, new)


def test_a_generated_unit_and_missing_codes() -> None:
    policy = parse_policy(SURVEY, SOURCE)
    (table,) = policy.tables
    assert table.max_rows_per_unit == 1  # left out: one row per unit
    assert table.generated is not None and table.generated.name == "person"
    assert table.generated.generated == ROW_NUMBER
    assert [c.name for c in table.source_columns] == ["region", "age", "score", "day"]
    assert table.missing_codes == {
        "region": ("NA", "-"),
        "age": (98, 99),
        "score": (-1.0, 9.5),
        "day": (date(1900, 1, 1), date(1901, 1, 1)),
    }
    # still the unit, with its bounds, in what the public sees
    public = PublicPolicy.of(policy)
    assert public.tables[0].max_rows_per_unit == 1
    assert public.tables[0].columns[0].role == "unit"


def test_max_rows_per_unit_one_may_be_written() -> None:
    text = variant("[tables.s]\n", "[tables.s]\nmax_rows_per_unit = 1\n")
    assert parse_policy(text, SOURCE).tables[0].max_rows_per_unit == 1


BAD = [
    pytest.param(
        variant("[tables.s]\n", "[tables.s]\nmax_rows_per_unit = 2\n"),
        "tables.s.max_rows_per_unit",
        "generated_unit",
        id="generated_unit_more_rows",
    ),
    pytest.param(
        variant(UNIT, UNIT.replace('"integer"', '"string"')),
        "tables.s.columns.person.type",
        "generated_unit",
        id="generated_unit_not_integer",
    ),
    pytest.param(
        variant('generated = "row_number"', 'generated = "uuid"'),
        "tables.s.columns.person.generated",
        "enum",
        id="generated_unknown",
    ),
    pytest.param(
        variant('generated = "row_number"', "generated = true"),
        "tables.s.columns.person.generated",
        "type",
        id="generated_not_a_string",
    ),
    pytest.param(
        variant('missing = ["NA", "-"]', 'missing = ["NA"]\ngenerated = "row_number"'),
        "tables.s.columns.region.generated",
        "generated_unit",
        id="generated_not_the_unit",
    ),
    pytest.param(
        SURVEY + OTHER_TABLE,
        "tables.s.columns.person.generated",
        "generated_unit",
        id="generated_unit_two_tables",
    ),
    pytest.param(
        variant(UNIT, UNIT + "missing = [0]\n"),
        "tables.s.columns.person.missing",
        "missing_generated",
        id="missing_on_generated",
    ),
    pytest.param(
        variant("missing = [98, 99]", 'missing = [98, "99"]'),
        "tables.s.columns.age.missing",
        "missing_type",
        id="missing_text_for_integer",
    ),
    pytest.param(
        variant("missing = [98, 99]", "missing = [98, 99.5]"),
        "tables.s.columns.age.missing",
        "missing_type",
        id="missing_float_for_integer",
    ),
    pytest.param(
        variant('missing = ["NA", "-"]', 'missing = ["NA", 99]'),
        "tables.s.columns.region.missing",
        "missing_type",
        id="missing_number_for_string",
    ),
    pytest.param(
        variant("missing = [-1, 9.5]", "missing = [true]"),
        "tables.s.columns.score.missing",
        "missing_type",
        id="missing_boolean_for_float",
    ),
    pytest.param(
        variant('missing = [1900-01-01, "1901-01-01"]', 'missing = ["01/01/1900"]'),
        "tables.s.columns.day.missing",
        "missing_type",
        id="missing_not_a_date",
    ),
    pytest.param(
        variant('missing = [1900-01-01, "1901-01-01"]', "missing = [1900-01-01T00:00:00]"),
        "tables.s.columns.day.missing",
        "missing_type",
        id="missing_datetime",
    ),
    pytest.param(
        variant("missing = [-1, 9.5]", "missing = [-1, -1.0]"),
        "tables.s.columns.score.missing",
        "duplicate_code",
        id="missing_twice",
    ),
    pytest.param(
        variant("missing = [98, 99]", "missing = []"),
        "tables.s.columns.age.missing",
        "type",
        id="missing_empty",
    ),
    pytest.param(
        variant("missing = [98, 99]", "missing = 98"),
        "tables.s.columns.age.missing",
        "type",
        id="missing_not_a_list",
    ),
]


@pytest.mark.parametrize(("text", "key", "rule"), BAD)
def test_bad_load_options(text: str, key: str, rule: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, SOURCE)
    assert (info.value.file, info.value.key, info.value.rule) == (SOURCE, key, rule)
