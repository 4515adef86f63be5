"""A small zone for onboarding tests: its name, the ``firms`` policy, and CSV sources written
where loads over HTTP may read them (``<data_dir>/sources``)."""

from __future__ import annotations

from pathlib import Path

from tests.support.data import data_text

ZONE = "beijing-finance"
POLICY = data_text("firms.toml")
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
