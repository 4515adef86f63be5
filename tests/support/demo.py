"""The demo zone as the tests build it: its size, its keys, and a build on any state store."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from sandbox.demo.build import build_demo
from sandbox.store import db
from tests.support.store import local_audit

DEMO_TEST_ROWS = 36_000  # about 1,300 enterprises: enough for real answers, quick to build
LEDGER_DEMO_ROWS = 20_000
DEMO_DATA = Path(__file__).resolve().parents[2] / "sandbox" / "demo" / "data"  # the package data
DEMO_TEMPLATES = DEMO_DATA / "templates"
DEMO_POLICY = DEMO_DATA / "enterprise.toml"


def demo_keys(data_dir: Path) -> dict[str, str]:
    """The demo members' API keys (and ids) that the build wrote to ``demo-keys.json``."""
    keys: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    return keys


def build_ledger_demo(data_dir: Path, state_url: str, rows: int = LEDGER_DEMO_ROWS) -> Engine:
    """The demo zone in ``data_dir`` (workspaces) with its state in ``state_url``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.connect(state_url)
    build_demo(engine, data_dir, rows=rows, audit=local_audit(engine, data_dir / "keys"))
    return engine
