"""The architecture rules of ARCHITECTURE.md, enforced.

Import rules are import-linter contracts in pyproject.toml ([tool.importlinter]), checked here on
grimp's import graph of the source tree; import cycles are found on the same graph. The rules that
are not about imports (no randomness outside OpenDP, no HTTPException in logic code, queries run
on leased workspaces) are checks on each file's syntax tree. Each rule also has a test that feeds
it a violation and shows that it fails.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import grimp
import pytest
from grimp.application.config import settings as grimp_settings
from grimp.application.ports.filesystem import AbstractFileSystem
from grimp.application.ports.packagefinder import AbstractPackageFinder
from importlinter import configuration
from importlinter.application import use_cases
from importlinter.application.app_config import settings as linter_settings
from importlinter.application.ports.building import GraphBuilder
from importlinter.application.ports.reporting import Report
from importlinter.application.rendering import render_report
from importlinter.application.user_options import UserOptions
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.layers import LayersContract
from importlinter.contracts.protected import ProtectedContract
from importlinter.domain.contract import registry

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
PACKAGES = ("policies", "sandbox", "connectors")

# Modules at the top of the tree escape grimp, which takes only packages as roots
# (python-grimp/grimp#300): the graph builder below adds their imports from their syntax trees, and
# test_graph_covers_every_module keeps the list exact. (Directories of modules without an
# __init__.py would escape it too: that test requires one in each.)
TOP_MODULES = ("server",)
# Not modules: alembic runs the migration scripts by path.
SCRIPT_DIRS = ("sandbox/store/migrations",)


# The graph --------------------------------------------------------------------------------------


class _TreePackageFinder(AbstractPackageFinder):
    """Finds each root package in one directory tree, whatever is on sys.path or imported."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def determine_package_directories(
        self, package_name: str, file_system: AbstractFileSystem
    ) -> set[str]:
        directory = self.root / package_name
        if not (directory / "__init__.py").is_file():
            raise ValueError(f"{directory} is not a package")
        return {str(directory)}


def _add_top_module(graph: grimp.ImportGraph, root: Path, name: str, packages: set[str]) -> None:
    """Add a module at the top of the tree, and its imports, to ``graph``.

    Imports of the root packages resolve to the deepest module of the graph they name, the others
    to their top-level package, as grimp does with include_external_packages.
    """
    if name in graph.modules:  # imported by a package module: grimp took it for an external one
        importers = graph.find_modules_that_directly_import(name)
        incoming = [
            detail
            for importer in importers
            for detail in graph.get_import_details(importer=importer, imported=name)
        ]
        graph.remove_module(name)
    else:
        incoming = []
    graph.add_module(name)
    for detail in incoming:
        graph.add_import(
            importer=detail["importer"],
            imported=name,
            line_number=detail["line_number"],
            line_contents=detail["line_contents"],
            is_lazy=detail["is_lazy"],
        )
    source = (root / f"{name}.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    statements = (
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)
    )
    for node in statements:
        for imported in _imported_names(node):
            top = imported.split(".")[0]
            if top in packages:
                while imported not in graph.modules and "." in imported:
                    imported = imported.rsplit(".", 1)[0]
            else:
                imported = top
                if imported not in graph.modules:
                    graph.add_module(imported, is_squashed=True)
            graph.add_import(
                importer=name,
                imported=imported,
                line_number=node.lineno,
                line_contents=lines[node.lineno - 1].strip(),
            )


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement names: ``from a import b`` names ``a.b``, which
    resolves to ``a`` when ``b`` is not a module of the graph."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0 and node.module, "a top-level module has no relative imports"
    return [f"{node.module}.{alias.name}" for alias in node.names]


class TreeGraphBuilder(GraphBuilder):
    """import-linter's graph builder for one source tree: grimp's graph of its packages, plus the
    top-level modules that grimp does not see."""

    def __init__(self, root: Path, top_modules: Iterable[str] = ()) -> None:
        self.root = root
        self.top_modules = tuple(top_modules)

    def build(
        self,
        root_package_names: list[str],
        cache_dir: str | None,
        include_external_packages: bool = False,
        exclude_type_checking_imports: bool = False,
    ) -> grimp.ImportGraph:
        finders = {"PACKAGE_FINDER": grimp_settings.PACKAGE_FINDER}
        grimp_settings.configure(PACKAGE_FINDER=_TreePackageFinder(self.root))
        try:
            graph = grimp.build_graph(
                *root_package_names,
                include_external_packages=include_external_packages,
                exclude_type_checking_imports=exclude_type_checking_imports,
                cache_dir=None,
            )
        finally:
            grimp_settings.configure(**finders)
        for name in self.top_modules:
            _add_top_module(graph, self.root, name, set(root_package_names))
        return graph


def lint(builder: TreeGraphBuilder, config: Path = CONFIG) -> Report:
    """Check the contracts of ``config`` on the graph that ``builder`` builds."""
    options = read_options(config)
    default = linter_settings.GRAPH_BUILDER
    linter_settings.configure(GRAPH_BUILDER=builder)
    try:
        return use_cases.create_report(options, cache_dir=None)
    finally:
        linter_settings.configure(GRAPH_BUILDER=default)


def read_options(config: Path = CONFIG) -> UserOptions:
    """The options of ``config``, read as `lint-imports` does, which first sets up import-linter
    (its readers and default graph builder) and registers the built-in contract types."""
    configuration.configure()
    registry.register(ForbiddenContract, "forbidden")
    registry.register(LayersContract, "layers")
    registry.register(ProtectedContract, "protected")
    return use_cases.read_user_options(str(config))


def broken_contracts(report: Report) -> set[str]:
    """The ids of the contracts that ``report`` found broken (or could not check)."""
    broken = {
        contract.contract_options["id"]
        for contract, check in report.get_contracts_and_checks()
        if not check.kept
    }
    return broken | set(report.invalid_contract_options)


def tree_graph(builder: TreeGraphBuilder) -> grimp.ImportGraph:
    options = read_options().session_options
    return builder.build(options["root_packages"], cache_dir=None, include_external_packages=True)


def import_cycles(graph: grimp.ImportGraph, packages: Iterable[str]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module among ``packages``' modules."""
    modules = {
        module
        for package in packages
        if package in graph.modules
        for module in {package} | graph.find_descendants(package)
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return cycles


PROJECT = TreeGraphBuilder(ROOT, TOP_MODULES)


@pytest.fixture(scope="module")
def project_graph() -> grimp.ImportGraph:
    return tree_graph(PROJECT)


def test_import_contracts() -> None:
    report = lint(PROJECT)
    if report.contains_failures:
        render_report(report)  # import-linter's own account, in the captured output
    assert report.kept_count > 0
    assert not broken_contracts(report), "broken import contracts: see the report above"


def test_no_import_cycles(project_graph: grimp.ImportGraph) -> None:
    assert import_cycles(project_graph, (*PACKAGES, *TOP_MODULES)) == set()


def test_graph_covers_every_module(project_graph: grimp.ImportGraph) -> None:
    """Every module of the tree is in the graph the contracts are checked on, and the lists of
    what grimp cannot see alone are exact."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in sources()
        if not path.relative_to(ROOT).as_posix().startswith(SCRIPT_DIRS)
    }
    assert modules - project_graph.modules == set(), "modules missing from the import graph"
    unseen = {
        path.parent.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if not (path.parent / "__init__.py").exists()
    }
    unseen = {d for d in unseen if not d.startswith(SCRIPT_DIRS)}
    assert unseen == set(), "directories of modules without an __init__.py"
    assert {path.stem for path in ROOT.glob("*.py")} == set(TOP_MODULES), "TOP_MODULES"


# Each contract and the cycle check, shown to catch a violation ----------------------------------

# A small tree with every name the contracts mention: it keeps every contract. Its sandbox has the
# edges and, as empty modules, the services that the "edges" contract lists.
SKELETON: dict[str, str] = {
    "server.py": "import fastapi\nimport starlette\nimport policies\nfrom sandbox import api\n",
    "policies/__init__.py": "import sqlglot\n",
    "connectors/__init__.py": "import duckdb\nimport policies\n",
    "sandbox/__init__.py": "",
    "sandbox/api/__init__.py": "import fastapi\nimport starlette\nfrom sandbox import ledger\n",
    "sandbox/cli/__init__.py": "import server\nfrom sandbox.demo import synthetic\n",
    "sandbox/demo/__init__.py": "",
    "sandbox/demo/synthetic.py": "",
    "sandbox/engine/__init__.py": "import duckdb\nimport connectors\n",
    "sandbox/noise.py": "import opendp\nimport policies\n",
}


def make_tree(root: Path, changes: dict[str, str] | None = None) -> TreeGraphBuilder:
    files = {**SKELETON, **(changes or {})}
    (edges,) = (c for c in read_options().contracts_options if c["id"] == "edges")
    for name in (name.strip() for name in edges["layers"][-1].split(":")):
        if not any(path.startswith(f"sandbox/{name}/") for path in files):
            files.setdefault(f"sandbox/{name}.py", "")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return TreeGraphBuilder(root, TOP_MODULES)


VIOLATIONS = {
    # contract id: (module, import that breaks it and no other contract)
    "edges": ("sandbox/ledger.py", "from sandbox.cli import main"),
    "app": ("sandbox/api/__init__.py", "from server import create_app"),
    "policies": ("policies/__init__.py", "from connectors import load"),
    "connectors": ("connectors/__init__.py", "from sandbox.errors import NotFound"),
    "opendp": ("sandbox/queries.py", "import opendp.prelude as dp"),
    "duckdb": ("sandbox/store.py", "import duckdb"),
    "http": ("sandbox/queries.py", "from fastapi import HTTPException"),
    "sqlglot": ("connectors/__init__.py", "import sqlglot.expressions"),
    "synthetic": ("sandbox/noise.py", "from sandbox.demo.synthetic import generate"),
}


def test_skeleton_keeps_every_contract(tmp_path: Path) -> None:
    report = lint(make_tree(tmp_path))
    assert report.kept_count == len(VIOLATIONS)
    assert broken_contracts(report) == set()


def test_every_contract_has_a_violation_test() -> None:
    contracts = read_options().contracts_options
    assert {contract["id"] for contract in contracts} == set(VIOLATIONS)


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_contract_catches_its_violation(contract: str, tmp_path: Path) -> None:
    module, line = VIOLATIONS[contract]
    builder = make_tree(tmp_path, {module: f"{SKELETON.get(module, '')}{line}\n"})
    assert broken_contracts(lint(builder)) == {contract}


def test_indirect_import_breaks_a_forbidden_contract(tmp_path: Path) -> None:
    builder = make_tree(
        tmp_path,
        {
            "sandbox/noise.py": SKELETON["sandbox/noise.py"] + "from sandbox import queries\n",
            "sandbox/queries.py": "from sandbox.demo import synthetic\n",
        },
    )
    assert broken_contracts(lint(builder)) == {"synthetic"}


def test_new_sandbox_module_needs_a_layer(tmp_path: Path) -> None:
    builder = make_tree(tmp_path, {"sandbox/reports.py": ""})
    assert broken_contracts(lint(builder)) == {"edges"}


def test_top_module_is_in_the_graph(tmp_path: Path) -> None:
    builder = make_tree(tmp_path, {"server.py": SKELETON["server.py"] + "import duckdb\n"})
    assert broken_contracts(lint(builder)) == {"duckdb"}
    graph = tree_graph(builder)
    assert {"sandbox.api", "policies", "fastapi"} <= graph.find_modules_directly_imported_by(
        "server"
    )
    assert graph.find_modules_that_directly_import("server") == {"sandbox.cli"}


def test_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    builder = make_tree(
        tmp_path,
        {
            "sandbox/ledger.py": "from sandbox import store\n",
            "sandbox/store.py": "from sandbox.audit import append\n",
            "sandbox/audit.py": "from sandbox import ledger\n",
        },
    )
    cycles = import_cycles(tree_graph(builder), (*PACKAGES, *TOP_MODULES))
    assert cycles == {frozenset({"sandbox.ledger", "sandbox.store", "sandbox.audit"})}
    assert import_cycles(tree_graph(make_tree(tmp_path / "clean")), PACKAGES) == set()


# Rules that are not about imports: checks on each file's syntax tree ----------------------------


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    return [*files, *(ROOT / f"{name}.py" for name in TOP_MODULES)]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


class Parsed:
    """One module's syntax tree, walked once: its nodes, what the names bound by its imports stand
    for (``np`` -> ``numpy``), and the dotted name each name chain refers to through them
    (``np.random.default_rng`` -> ``numpy.random.default_rng``). Scopes are ignored: an import
    anywhere binds its name for the whole module."""

    def __init__(self, source: str, filename: str = "<snippet>") -> None:
        self.nodes = list(ast.walk(ast.parse(source, filename=filename)))
        self.bound: dict[str, str] = {}
        self.imported: list[tuple[ast.stmt, str]] = []  # every name an import statement names
        for node in self.nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imported.append((node, alias.name))
                    top = alias.name.split(".")[0]  # `import a.b` binds `a`
                    self.bound[alias.asname or top] = alias.name if alias.asname else top
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    self.imported.append((node, name))
                    self.bound[alias.asname or alias.name] = name
        # every outermost name chain whose first name was imported (`a.b.c` once, not `a.b`)
        inner = {id(node.value) for node in self.nodes if isinstance(node, ast.Attribute)}
        self.references = [
            (node, dotted)
            for node in self.nodes
            if isinstance(node, ast.Name | ast.Attribute) and id(node) not in inner
            for dotted in [self.dotted(node, imported_only=True)]
            if dotted
        ]

    def dotted(self, node: ast.expr, imported_only: bool = False) -> str | None:
        """The dotted name of a ``Name`` or ``Attribute`` chain, its first name resolved through
        the imports; with ``imported_only``, None unless that first name was imported."""
        if isinstance(node, ast.Name):
            if node.id in self.bound:
                return self.bound[node.id]
            return None if imported_only else node.id
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value, imported_only)
            return f"{base}.{node.attr}" if base else None
        return None


@cache
def parsed(path: Path) -> Parsed:
    return Parsed(path.read_text(encoding="utf-8"), str(path))


Finding = tuple[int, str]


def _bare_name(node: ast.AST) -> str | None:
    """``x`` for the name ``x`` or an attribute ``<anything>.x``."""
    if isinstance(node, ast.Name):
        return node.id
    return node.attr if isinstance(node, ast.Attribute) else None


def _within(name: str, modules: Iterable[str]) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in modules)


# Randomness comes from OpenDP's samplers only: not numpy's or Python's generators, not
# secrets.randbelow, and not DuckDB's random() or setseed in generated SQL.
RANDOM_MODULES = ("random", "numpy.random", "secrets.randbelow")
SQL_RANDOM = re.compile(r"\bsetseed\b|\brandom\s*\(\s*\)", re.IGNORECASE)
# The synthetic demo data generator draws from numpy's generator; it is not noise, and the
# "synthetic" contract keeps the noise path from importing it.
RANDOMNESS_EXEMPT = ("sandbox/demo/synthetic.py",)


def randomness(module: Parsed) -> list[Finding]:
    found: list[Finding] = []
    for statement, name in module.imported:
        if _within(name, RANDOM_MODULES):
            found.append((statement.lineno, f"imports {name}"))
    for expr, name in module.references:
        if _within(name, RANDOM_MODULES):
            found.append((expr.lineno, f"uses {name}"))
    for node in module.nodes:
        if isinstance(node, ast.Name | ast.Attribute) and _bare_name(node) == "setseed":
            found.append((node.lineno, "uses setseed"))
        if (
            isinstance(node, ast.Call)
            and not (node.args or node.keywords)
            and _bare_name(node.func) == "random"
        ):
            found.append((node.lineno, "calls random()"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SQL_RANDOM.search(node.value)
            if match:
                found.append((node.lineno, f"SQL text with {match.group()}"))
    return sorted(set(found))


# Logic code never raises HTTPException: the one error handler renders the error tree (rule 4).
HTTP_EXCEPTION_ALLOWED = ("sandbox/api/", "server.py")


def http_exceptions(module: Parsed) -> list[Finding]:
    def is_http_exception(name: str) -> bool:
        return name.split(".")[0] in {"fastapi", "starlette"} and name.endswith(".HTTPException")

    found = [
        (node.lineno, f"imports {name}")
        for node, name in module.imported
        if is_http_exception(name)
    ]
    found += [
        (expr.lineno, f"refers to {name}")
        for expr, name in module.references
        if is_http_exception(name)
    ]
    return sorted(set(found))


def stored_workspace_runs(module: Parsed) -> list[Finding]:
    """Stored workspaces are sealed (docs/security.md): runtime code runs SQL on the decrypted copy
    that ``sandbox.vault.leased`` hands out, never on a version's stored ``path``. Finds
    ``<...>executor.run(<...>.path, ...)``, the workspace given by position or keyword."""
    found: list[Finding] = []
    for node in module.nodes:
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "run"
            and (module.dotted(node.func.value) or "").split(".")[-1] == "executor"
        ):
            continue
        workspace = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "workspace")]
        if any(isinstance(arg, ast.Attribute) and arg.attr == "path" for arg in workspace):
            found.append((node.lineno, "runs SQL on a stored workspace path"))
    return found


def findings(check: Callable[[Parsed], list[Finding]], exempt: Iterable[str] = ()) -> list[str]:
    return [
        f"{rel(path)}:{line}: {what}"
        for path in sources()
        if not rel(path).startswith(tuple(exempt))
        for line, what in check(parsed(path))
    ]


def test_no_randomness_outside_opendp() -> None:
    assert findings(randomness, RANDOMNESS_EXEMPT) == []


def test_no_http_exception_in_logic_code() -> None:
    assert findings(http_exceptions, HTTP_EXCEPTION_ALLOWED) == []


def test_queries_run_on_leased_workspaces_not_stored_files() -> None:
    assert findings(stored_workspace_runs) == []


def test_exempt_paths_exist() -> None:
    for path in (*RANDOMNESS_EXEMPT, *HTTP_EXCEPTION_ALLOWED, *SCRIPT_DIRS):
        assert (ROOT / path).exists(), path


# The syntax-tree checks, shown to catch a violation ---------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import random\n",
        "import random as r\n",
        "from random import gauss\n",
        "import numpy as np\nx = np.random.default_rng(1)\n",
        "import numpy\nnumpy.random.seed(0)\n",
        "from numpy import random\n",
        "from numpy.random import default_rng\n",
        "import secrets\nn = secrets.randbelow(10)\n",
        "from secrets import randbelow\n",
        "def f(g):\n    return g.random()\n",
        "x = make_rng().random()\n",
        "sql = 'SELECT setseed(0.5)'\n",
        'sql = f"SELECT x + RANDOM() FROM {t}"\n',
        "con.setseed(0.1)\n",
    ],
)
def test_randomness_check_catches(source: str) -> None:
    assert randomness(Parsed(source))


@pytest.mark.parametrize(
    "source",
    [
        "import os\nnonce = os.urandom(12)\n",
        "import secrets\nsalt = secrets.token_bytes(16)\n",
        "from opendp.prelude import make_laplace\n",
        "x = 'a random salt'\n",
        "import randomname\n",
    ],
)
def test_randomness_check_passes(source: str) -> None:
    assert randomness(Parsed(source)) == []


@pytest.mark.parametrize(
    "source",
    [
        "from fastapi import HTTPException\n",
        "from fastapi import HTTPException as Nope\nraise Nope(404)\n",
        "from starlette.exceptions import HTTPException as E\n",
        "import fastapi\nraise fastapi.HTTPException(status_code=400)\n",
        "import fastapi as fa\n\ndef f():\n    raise fa.HTTPException(400)\n",
        "from fastapi import exceptions as ex\nerror = ex.HTTPException\n",
        "import starlette.exceptions\nisinstance(e, starlette.exceptions.HTTPException)\n",
    ],
)
def test_http_exception_check_catches(source: str) -> None:
    assert http_exceptions(Parsed(source))


@pytest.mark.parametrize(
    "source",
    [
        "class HTTPException(Exception):\n    pass\n\nraise HTTPException()\n",
        "text = 'never raise HTTPException( in logic code'\n",
        "from sandbox.errors import NotFound\nraise NotFound('x')\n",
    ],
)
def test_http_exception_check_passes(source: str) -> None:
    assert http_exceptions(Parsed(source)) == []


@pytest.mark.parametrize(
    "source",
    [
        "rows = self.executor.run(version.path, sql)\n",
        "rows = executor.run(self.version.path, sql, params)\n",
        "rows = services.executor.run(workspace=v.path, sql=sql)\n",
        "rows = self.executor.run(\n    version.path,\n    sql,\n)\n",
    ],
)
def test_stored_workspace_check_catches(source: str) -> None:
    assert stored_workspace_runs(Parsed(source))


@pytest.mark.parametrize(
    "source",
    [
        "with vault.leased(version) as workspace:\n    rows = self.executor.run(workspace, sql)\n",
        "uvicorn.run(app.path)\n",
        "self.executor.run(lease.workspace, sql)\n",
    ],
)
def test_stored_workspace_check_passes(source: str) -> None:
    assert stored_workspace_runs(Parsed(source)) == []


# --- tests -----------------------------------------------------------------------------------


def test_modules_imported_by_the_tests(tmp_path: Path) -> None:
    """A test module imports no other test module: what several share lives in tests/support/
    (importing one runs its module-level set-up and ties the two files' fates together)."""

    def importers_of_test_modules(root: Path) -> list[str]:
        found = []
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                if any(n.split(".")[-1].startswith("test_") for n in names):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
        return found

    assert importers_of_test_modules(ROOT / "tests") == []
    fake = tmp_path / "tests"
    fake.mkdir()
    (fake / "test_b.py").write_text("from tests.test_a import X\n")
    assert importers_of_test_modules(fake) == ["tests/test_b.py:1"]
