"""The package boundaries of ARCHITECTURE.md, and the no-noise-outside-OpenDP rule, enforced."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policies", "sandbox", "connectors")


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return [*files, ROOT / "server.py"]


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# module (top-level import name) -> predicate on the importing file's path
ALLOWED = {
    "opendp": lambda p: p.startswith("sandbox/noise"),
    "fastapi": lambda p: p == "server.py" or p.startswith("sandbox/api/"),
    "starlette": lambda p: p == "server.py" or p.startswith("sandbox/api/"),
    "sqlglot": lambda p: p.startswith("policies/"),
    "duckdb": lambda p: p.startswith(("sandbox/engine/", "connectors/")),
}


@pytest.mark.parametrize("path", sources(), ids=rel)
def test_import_rules(path: Path) -> None:
    name = rel(path)
    found = imports(path)
    for module, allowed in ALLOWED.items():
        assert module not in found or allowed(name), f"{name} imports {module}"
    if name.startswith("policies/"):
        assert not found & {"sandbox", "connectors", "server"}, f"{name} imports the runtime"


NOISE = re.compile(
    r"numpy\.random|np\.random|\brandom\.(gauss|random|uniform|normalvariate|choice|sample)\("
    r"|\bimport random\b|\bfrom random import\b|\bsecrets\.randbelow\(|\bsetseed\b"
    r"|\brandom\(\)"
)


@pytest.mark.parametrize("path", sources(), ids=rel)
def test_no_noise_outside_opendp(path: Path) -> None:
    """Noise comes from OpenDP samplers only. The synthetic demo data generator is not noise."""
    name = rel(path)
    if name == "sandbox/demo/synthetic.py":
        assert "noise" not in " ".join(imports(path))
        return
    text = path.read_text(encoding="utf-8")
    for line_no, line in enumerate(text.splitlines(), 1):
        assert not NOISE.search(line), (
            f"{name}:{line_no}: randomness outside OpenDP: {line.strip()}"
        )


def test_no_http_exception_in_logic_code() -> None:
    for path in sources():
        assert "HTTPException(" not in path.read_text(encoding="utf-8"), rel(path)


def test_queries_run_on_leased_workspaces_not_stored_files() -> None:
    """Stored workspaces are sealed (docs/security.md): runtime code runs SQL on the decrypted
    copy that ``sandbox.vault.leased`` hands out, never on a version's stored ``path``."""
    stored_path = re.compile(r"executor\.run\(\s*[\w.]*\.path\b")
    for path in sources():
        assert not stored_path.search(path.read_text(encoding="utf-8")), rel(path)
