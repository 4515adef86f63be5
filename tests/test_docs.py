"""The reference docs against the code they describe, so that neither can change alone.

* docs/settings.md lists every field of :class:`sandbox.config.Settings`, with its environment
  variable and default, and no field that is gone.
* docs/errors.md lists every stable error code — the ``code`` of every ``VeilError`` class, the
  gate's rules, the verification refusals and the problem codes written by hand (the HTTP error
  handler's own, a load's) — with the status of each error class; every code has one meaning.
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from policies.errors import QueryRejected, Refusal, VeilError
from sandbox.config import Settings
from sandbox.errors import HttpError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policies", "connectors", "sandbox")
CODE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


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


# -- error codes -----------------------------------------------------------------------------------

ERRORS_MD = ROOT / "docs" / "errors.md"

# Error classes whose status is the HTTP layer's own, per instance: documented as "other".
STATUS_OF_THE_INSTANCE = {HttpError}


def sources() -> list[Path]:
    return [
        *(p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))),
        ROOT / "server.py",
    ]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def error_classes() -> list[type[VeilError]]:
    """Every ``VeilError`` class of the three packages (all their modules imported first)."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(info.name)
    found: list[type[VeilError]] = []
    todo: list[type[VeilError]] = [VeilError]
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] in PACKAGES and cls not in found:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def own_code(cls: type[VeilError]) -> str | None:
    """The code a class defines itself: its ``code``, or a refusal's ``reason``; ``None`` when
    it inherits its code or reports another one (the gate's rule, a server's code)."""
    if "code" in cls.__dict__:
        return str(cls.__dict__["code"])
    if "reason" in cls.__dict__:
        return str(cls.__dict__["reason"].value)
    return None


def _strings(node: ast.AST) -> list[str]:
    return [
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _assigned(scope: ast.AST, name: str) -> list[str]:
    """The string literals assigned to ``name`` in ``scope`` (both arms of ``a if c else b``)."""
    return [
        text
        for node in ast.walk(scope)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        for text in _strings(node.value)
    ]


def _scopes(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(node, the innermost function around it, or the module) for every node."""
    todo: list[tuple[ast.AST, ast.AST]] = [(tree, tree)]
    while todo:
        node, scope = todo.pop()
        inner = node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else scope
        for child in ast.iter_child_nodes(node):
            yield child, inner
            todo.append((child, inner))


@functools.cache
def parsed() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in sources()]


def _code_values(value: ast.expr, scope: ast.AST, where: str) -> list[str]:
    """The codes an expression may be: a literal, or a local name's literal assignments."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return [value.value]
    if isinstance(value, ast.Name) and (found := _assigned(scope, value.id)):
        return [text for text in found if CODE.match(text)]
    raise AssertionError(f"{where}: cannot tell which code {ast.unparse(value)} is")


def gate_rules() -> dict[str, set[str]]:
    """Each rule of ``QueryRejected(rule, ...)`` -> where it is raised."""
    found: dict[str, set[str]] = defaultdict(set)
    for path, tree in parsed():
        for node, scope in _scopes(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != QueryRejected.__name__:
                continue
            where = f"{rel(path)}:{node.lineno}"
            rule = (
                node.args[0]
                if node.args
                else next(k.value for k in node.keywords if k.arg == "rule")
            )
            for code in _code_values(rule, scope, where):
                found[code].add(where)
    return found


def written_codes(trees: list[tuple[Path, ast.Module]] | None = None) -> dict[str, set[str]]:
    """Codes of problem documents written by hand as ``{"code": ...}`` -> where."""
    found: dict[str, set[str]] = defaultdict(set)
    for path, tree in parsed() if trees is None else trees:
        for node, scope in _scopes(tree):
            if not isinstance(node, ast.Dict):
                continue
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(value, ast.Attribute):
                    continue  # a code carried from elsewhere (an error's, an audit entry's)
                if isinstance(key, ast.Constant) and key.value == "code":
                    for code in _code_values(value, scope, f"{rel(path)}:{node.lineno}"):
                        found[code].add(f"{rel(path)}:{node.lineno}")
    return found


@functools.cache
def stable_codes() -> dict[str, set[str]]:
    """Every stable code -> what defines it. One meaning per code: an error class (whose
    subclasses share it), the gate (one rule, raised in many places), a refusal, or a problem
    written by hand (there should be none: see test_no_problem_is_written_by_hand)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for cls in error_classes():
        if (code := own_code(cls)) is not None:
            owners[code].add(f"class {cls.__module__}.{cls.__qualname__}")
    for code in gate_rules():
        owners[code].add("a gate rule (QueryRejected)")
    for refusal in Refusal:
        if refusal.value not in owners:  # else: its VerificationRefused class, one meaning
            owners[refusal.value].add(f"policies.errors.Refusal.{refusal.name}")
    for code, where in written_codes().items():
        owners[code].add(f"a problem written in {', '.join(sorted(where))}")
    return owners


@dataclass(frozen=True)
class DocumentedCodes:
    codes: set[str]  # the first column of every `code` or `rule` table
    statuses: dict[str, set[str]]  # code -> its status cells, in tables with a status column


def documented_codes() -> DocumentedCodes:
    codes: set[str] = set()
    statuses: dict[str, set[str]] = defaultdict(set)
    for table in tables(ERRORS_MD.read_text(encoding="utf-8")):
        if table.header[0] not in ("code", "rule"):
            continue
        status = table.header.index("status") if "status" in table.header else None
        for row in table.rows:
            for code in ticked(row[0]):
                codes.add(code)
                if status is not None:
                    statuses[code].add(row[status])
    return DocumentedCodes(codes, statuses)


def test_the_code_scan_finds_what_it_should() -> None:
    """The scans above are not vacuous: known codes of each kind are found."""
    codes = stable_codes()
    assert {"invalid_source", "consent_refused", "invalid_policy"} <= codes.keys()  # classes
    assert {"raw_rows", "unit_not_allowed", "column_not_allowed"} <= gate_rules().keys()
    assert {r.value for r in Refusal} <= codes.keys()
    handler = {"invalid_request", "not_found", "method_not_allowed", "http_error", "internal_error"}
    assert handler | {"load_interrupted", "sql_too_long", "sql_too_deep"} <= codes.keys()
    snippet = ast.parse('problem = {"title": "Oops", "status": 500, "code": "oops"}\n')
    assert written_codes([(ROOT / "snippet.py", snippet)]).keys() == {"oops"}


def test_no_problem_is_written_by_hand() -> None:
    """Every problem document is a ``VeilError``'s (``problem()``): one renderer, one place
    where a code gets its status and title."""
    assert written_codes() == {}


def test_every_code_has_one_meaning() -> None:
    shared = {code: owners for code, owners in stable_codes().items() if len(owners) > 1}
    assert not shared, "codes defined twice:\n" + "\n".join(
        f"{code}: {', '.join(sorted(owners))}" for code, owners in sorted(shared.items())
    )
    assert all(CODE.match(code) for code in stable_codes()), "codes are snake_case"


def test_every_code_is_in_the_errors_doc_with_its_status() -> None:
    documented = documented_codes()
    problems = [
        f"{code} ({', '.join(sorted(owners))}): not in a code or rule table of docs/errors.md"
        for code, owners in sorted(stable_codes().items())
        if code not in documented.codes
    ]
    for cls in error_classes():
        code = own_code(cls)
        status = "other" if cls in STATUS_OF_THE_INSTANCE else str(cls.status)
        if code is not None and status not in documented.statuses.get(code, set()):
            problems.append(
                f"{code}: status {cls.status} ({cls.__qualname__}) not documented in a table "
                f"with a status column (found {sorted(documented.statuses.get(code, set()))})"
            )
    assert not problems, "\n".join(problems)


def test_the_errors_doc_has_no_code_that_is_gone() -> None:
    stale = documented_codes().codes - stable_codes().keys()
    assert not stale, f"docs/errors.md documents codes nothing defines: {sorted(stale)}"
