"""The reference docs against the code they describe, so that neither can change alone.

* docs/settings.md lists every field of :class:`sandbox.config.Settings`, with its environment
  variable and default, and no field that is gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from sandbox.config import Settings

ROOT = Path(__file__).resolve().parent.parent


# -- markdown tables -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


def cells(line: str) -> list[str]:
    """The cells of a table row (``\\|`` inside a cell is text, not a separator)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def tables(markdown: str) -> Iterator[Table]:
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or i + 1 >= len(lines):
            continue
        if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            continue  # not a header (a body row, or a row of a table already read)
        rows = []
        for body in lines[i + 2 :]:
            if not body.startswith("|"):
                break
            rows.append(cells(body))
        yield Table(cells(line), rows)


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def section(markdown: str, title: str) -> str:
    """The text under ``## title``, up to the next second-level heading."""
    _, found, rest = markdown.partition(f"\n## {title}\n")
    assert found, f"no section '## {title}'"
    return rest.split("\n## ", 1)[0]


# -- settings --------------------------------------------------------------------------------------

SETTINGS_MD = ROOT / "docs" / "settings.md"


@dataclass(frozen=True)
class DocumentedSetting:
    env_var: str
    default: str | None  # None: documented as unset


def documented_settings() -> dict[str, DocumentedSetting]:
    """The table of docs/settings.md#fields: setting -> env var and default as written."""
    (table,) = tables(section(SETTINGS_MD.read_text(encoding="utf-8"), "Fields"))
    assert table.header[:4] == ["setting", "env var", "type", "default"], table.header
    found: dict[str, DocumentedSetting] = {}
    for row in table.rows:
        (name,), (env_var,) = ticked(row[0]), ticked(row[1])
        default = None if row[3].startswith("unset") else ticked(row[3])[0]
        assert name not in found, f"{name} is documented twice"
        found[name] = DocumentedSetting(env_var, default)
    return found


def env_var(name: str) -> str:
    """The variable pydantic-settings reads the field from (no field has an alias)."""
    field = Settings.model_fields[name]
    assert field.alias is None and field.validation_alias is None, f"{name}: alias not handled"
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def same_default(written: str | None, default: object) -> bool:
    """``written`` (the doc's text, ``None`` for unset) means ``default`` (the code's value):
    ``2`` and ``2.0`` are one number, a path or string is compared as text."""
    if written is None or default is None:
        return written is None and default is None
    if isinstance(default, bool):
        return written == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(written) == float(default)
        except ValueError:
            return False
    return written == str(default)


def test_every_setting_is_documented_with_its_env_var_and_default() -> None:
    documented = documented_settings()
    problems = []
    for name, field in Settings.model_fields.items():
        doc = documented.get(name)
        if doc is None:
            problems.append(f"{name}: not in the table of docs/settings.md")
            continue
        if doc.env_var != env_var(name):
            problems.append(f"{name}: documented as {doc.env_var}, read from {env_var(name)}")
        assert field.default is not PydanticUndefined, f"{name} has no default"
        if not same_default(doc.default, field.default):
            problems.append(f"{name}: default documented as {doc.default}, is {field.default!r}")
    problems += [
        f"{name}: documented, but Settings has no such field"
        for name in documented.keys() - Settings.model_fields.keys()
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("written", "default", "same"),
    [
        ("2", 2, True),
        ("2", 2.0, True),
        ("1e-7", 1e-7, True),
        ("2GB", "2GB", True),
        ("veil-data", Path("veil-data"), True),
        (None, None, True),
        ("8.0", 6.0, False),
        (None, 0, False),
        ("0", None, False),
        ("2GiB", "2GB", False),
    ],
)
def test_defaults_compare_by_meaning(written: str | None, default: object, same: bool) -> None:
    assert same_default(written, default) is same
