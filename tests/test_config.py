"""The settings are the one reader of ``VEIL_*`` variables, secrets included.

``VEIL_MASTER_KEY`` and ``VEIL_AUDIT_HMAC_KEY`` are ``Settings`` fields (``SecretStr``): they
reach the key rings only because the server and the CLI hand them over, they never print, and
no other module reads the environment for a ``VEIL_*`` name.
"""

from __future__ import annotations

import ast
import base64
import os
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from sandbox.cli.main import app as cli
from sandbox.config import Settings
from sandbox.errors import MasterKeyError
from sandbox.keys import directory as keystore
from tests.support.app import running_app

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("policies", "sandbox", "connectors")
SETTINGS_MODULE = "sandbox/config.py"

MASTER = base64.b64encode(os.urandom(32)).decode()
OLD_MASTER = base64.b64encode(os.urandom(32)).decode()
HMAC = base64.b64encode(os.urandom(32)).decode()
MASTER_VALUE = f"mk-new:{MASTER},mk-old:{OLD_MASTER}"
HMAC_VALUE = f"hk-env:{HMAC}"


@pytest.fixture()
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_MASTER_KEY", MASTER_VALUE)
    monkeypatch.setenv("VEIL_AUDIT_HMAC_KEY", HMAC_VALUE)


# -- the secrets -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("key_env")
def test_the_key_variables_are_settings_that_never_print() -> None:
    settings = Settings()
    assert settings.master_key is not None and settings.audit_hmac_key is not None
    assert settings.master_key.get_secret_value() == MASTER_VALUE
    assert settings.audit_hmac_key.get_secret_value() == HMAC_VALUE
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert MASTER not in shown and HMAC not in shown
    assert Settings(master_key=None).master_key is None  # an explicit value wins, as for any field


@pytest.mark.usefixtures("key_env")
def test_the_rings_come_from_the_settings_and_nothing_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    ring = keystore.master_keys(settings.keys_path, master_key=settings.master_key)
    assert ring.current_id == "mk-new" and set(ring.keys) == {"mk-new", "mk-old"}
    keys = keystore.audit_keys(
        settings.keys_path, master_key=settings.master_key, hmac_key=settings.audit_hmac_key
    )
    assert keys.master.current_id == "mk-new" and keys.hmac.current_id == "hk-env"
    assert not (settings.keys_path / "master").exists()
    assert not (settings.keys_path / "audit-hmac").exists()


def test_an_empty_or_malformed_key_variable(tmp_path: Path) -> None:
    """Empty is unset (the directory's ring); malformed is an error naming the variable."""
    ring = keystore.master_keys(tmp_path, master_key=SecretStr(""))
    assert (tmp_path / "master" / f"{ring.current_id}.key").exists()
    with pytest.raises(MasterKeyError, match="VEIL_MASTER_KEY"):
        keystore.master_keys(tmp_path, master_key=SecretStr("no-colon"))
    with pytest.raises(MasterKeyError, match="VEIL_AUDIT_HMAC_KEY"):
        keystore.audit_keys(tmp_path, master_key=None, hmac_key=SecretStr("hk:not base64!"))


@pytest.mark.usefixtures("key_env")
def test_the_server_uses_the_key_variables(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, workers=1, worker_threads=1)
    with running_app(settings) as client:
        assert client.app.state.services.vault.keys.ring().current_id == "mk-new"  # type: ignore[attr-defined]
    assert (settings.keys_path / "receipt-signing.pem").exists()  # the directory is in use…
    assert not (settings.keys_path / "master").exists()  # …but not for the injected rings
    assert not (settings.keys_path / "audit-hmac").exists()


def test_the_cli_uses_the_key_variables(tmp_path: Path) -> None:
    runner = CliRunner()
    seal = ["workspaces", "seal", "--data-dir", str(tmp_path)]
    result = runner.invoke(cli, seal, env={"VEIL_MASTER_KEY": MASTER_VALUE})
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "keys" / "master").exists()
    result = runner.invoke(cli, seal, env={"VEIL_MASTER_KEY": ""})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "keys" / "master" / "current").exists()  # unset: the directory's ring


# -- no other reader -------------------------------------------------------------------------------


def _is_environ(node: ast.AST) -> bool:
    """``os.environ`` / ``os.environb``, or ``environ`` imported from ``os``."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("environ", "environb") and isinstance(node.value, ast.Name)
    return isinstance(node, ast.Name) and node.id in ("environ", "environb")


def _is_getenv(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "getenv") or (
        isinstance(node, ast.Name) and node.id == "getenv"
    )


def veil_reads(source: str) -> list[int]:
    """Lines that read a ``VEIL_*`` variable from the environment. A key is a literal, an
    f-string or a module constant; a key the scan cannot resolve counts as ``VEIL_*``, and so
    does any other use of ``os.environ`` (an alias, a copy) in a module that names a ``VEIL_*``
    string: ``env = os.environ; env.get(NAME)`` must not slip through."""
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    names_veil = any(
        isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("VEIL_")
        for n in ast.walk(tree)
    )

    def is_veil(key: ast.AST) -> bool:
        if isinstance(key, ast.Constant):
            return isinstance(key.value, str) and key.value.startswith("VEIL_")
        if isinstance(key, ast.Name) and key.id in constants:
            return constants[key.id].startswith("VEIL_")
        return True  # cannot tell: treat as a VEIL_ name

    found: list[int] = []
    keyed: set[int] = set()  # ids of environ nodes used with a key, checked above
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environ(node.value):
            keyed.add(id(node.value))
            if is_veil(node.slice):
                found.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if _is_environ(owner) and node.func.attr in ("get", "pop", "setdefault"):
                keyed.add(id(owner))
                if not node.args or is_veil(node.args[0]):
                    found.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and _is_getenv(node.func)
            and (not node.args or is_veil(node.args[0]))
        ):
            found.append(node.lineno)
    if names_veil:
        found += [n.lineno for n in ast.walk(tree) if _is_environ(n) and id(n) not in keyed]
    return sorted(set(found))


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ('import os\nos.environ["VEIL_X"]', True),
        ('import os\nos.environ.get("VEIL_X", "")', True),
        ('import os\nos.getenv(f"VEIL_{name}")', True),
        ('from os import environ\nNAME = "VEIL_X"\nenviron.get(NAME)', True),
        ('import os\nNAME = "VEIL_X"\nenv = os.environ\nenv.get(NAME)', True),  # the old keys
        ("import os\nos.environ.get(name)", True),
        ('import os\nos.environ.get("HOME")', False),
        ("import os, subprocess\nsubprocess.run(['x'], env={**os.environ})", False),
        ('ENV_VAR = "VEIL_MASTER_KEY"  # named in messages only', False),
    ],
)
def test_the_scan_finds_reads(source: str, reads: bool) -> None:
    assert bool(veil_reads(source)) is reads


def test_no_module_but_the_settings_reads_a_veil_variable() -> None:
    paths = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    found = [
        f"{path.relative_to(ROOT).as_posix()}:{line}"
        for path in [*paths, ROOT / "server.py"]
        if path.relative_to(ROOT).as_posix() != SETTINGS_MODULE
        for line in veil_reads(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"VEIL_* read outside {SETTINGS_MODULE} (make it a Settings field): {found}"
