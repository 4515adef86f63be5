"""Fixtures of the security suite.

The hostile-query suite (``test_hostile_*.py``) shares one running app on a copy of the demo zone
(``hostile_service``), the demo's enterprise data generated again as ground truth
(``hostile_truth``), and plain locked-down workspaces of that data for the second line of
defence (``hostile_workspaces``). Every fixture and helper of that suite starts with ``hostile``
so that other security modules in this directory can add their own without clashes; the helpers
(the ground truth's type, the service with its checks, the literals) are in
``tests/support/hostile.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.sink import build_workspace
from sandbox.demo import synthetic
from tests.support.app import running_app
from tests.support.demo import DEMO_TEST_ROWS
from tests.support.hostile import HostileService, HostileTruth, HostileWorkspaces, hostile_settings


@pytest.fixture(scope="session")
def hostile_truth(tmp_path_factory: pytest.TempPathFactory) -> HostileTruth:
    """The demo zone's enterprise data, written again with the demo's seed and size."""
    out = tmp_path_factory.mktemp("hostile-truth")
    sources = synthetic.write_parquet(out, DEMO_TEST_ROWS, seed=synthetic.DEFAULT_SEED)
    tables = {name: pq.read_table(path) for name, path in sources.items()}
    return HostileTruth(tables=tables, sources=sources)


@pytest.fixture(scope="session")
def hostile_workspaces(
    hostile_truth: HostileTruth, tmp_path_factory: pytest.TempPathFactory
) -> HostileWorkspaces:
    root = tmp_path_factory.mktemp("hostile-ws")
    enterprise = root / "enterprise" / "v1.duckdb"
    build_workspace(enterprise, dict(hostile_truth.sources), cluster_by="credit_code")
    other = root / "other" / "v1.duckdb"
    build_workspace(other, {"payroll": pa.table({"person_id": [1, 2], "wage": [10.0, 20.0]})})
    return HostileWorkspaces(enterprise=enterprise.resolve(), other=other.resolve(), root=root)


@pytest.fixture(scope="package")
def hostile_service(
    demo_dir: Path, hostile_truth: HostileTruth, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileService]:
    """One app for every hostile HTTP case; once they are done it must still serve."""
    data_dir = tmp_path_factory.mktemp("hostile-app") / "data"
    shutil.copytree(demo_dir, data_dir)
    keys: dict[str, str] = json.loads((data_dir / "demo-keys.json").read_text())
    settings = hostile_settings(data_dir)
    forbidden = (str(data_dir), str(data_dir.resolve()), *hostile_truth.secrets())
    with running_app(settings, raise_server_exceptions=False) as client:
        service = HostileService(client, keys, data_dir, hostile_truth, forbidden)
        yield service
        service.assert_up()
