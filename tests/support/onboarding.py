"""A small zone for onboarding tests: its name, the ``firms`` policy, and CSV sources written
where loads over HTTP may read them (``<data_dir>/sources``)."""

from __future__ import annotations

from pathlib import Path

ZONE = "beijing-finance"


POLICY = """
id = "firms"
title = "Firms"
privacy_unit = "credit_code"
max_groups_per_unit = 3
min_group_size = 0

[tables.firms]
max_rows_per_unit = 1
unique_unit = true

[tables.firms.columns.credit_code]
type = "string"
role = "unit"

[tables.firms.columns.district]
type = "string"
role = "dimension"
keys = ["东城", "西城"]

[tables.firms.columns.revenue]
type = "float"
role = "measure"
lower = 0
upper = 100
max_null_rate = 0.5

[tables.firms.columns.founded]
type = "date"
role = "dimension"
public_range = ["2000-01-01", "2024-12-31"]
"""


HEADER = "credit_code,district,revenue,founded"


ROWS = [
    "A1,东城,10.5,2010-05-01",
    "A2,西城,20,2020-01-31",
    "A3,东城,,2015-03-01",
    "A4,西城,99,2001-12-31",
]


def sources(data_dir: Path) -> Path:
    path = data_dir / "sources"
    path.mkdir(exist_ok=True)
    return path


def write_csv(data_dir: Path, name: str, rows: list[str], encoding: str = "utf-8") -> str:
    (sources(data_dir) / name).write_text("\n".join([HEADER, *rows]) + "\n", encoding=encoding)
    return name
